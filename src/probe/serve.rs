//! `portico probe --serve fastcgi://HOST:PORT` (or `fastcgi+unix:/path`): the checker turned
//! around. portico listens as a strict FastCGI application (the `proto::fastcgi::server`
//! machine answers every request with a small valid response — `Status: 200` and a text body
//! listing what was observed — so the web server keeps talking) while an observer of its own
//! reads the same bytes record by record and reports, per request, every clause the web server
//! breaks: the BEGIN_REQUEST body (FCGI-5.1-1, FCGI-5.1-2), name-value encoding (FCGI-3.4-1,
//! FCGI-AMB-4), NUL bytes in params (FCGI-6.1-9), withheld params for Authorizers (FCGI-6.3-3),
//! Filter params (FCGI-6.4-3), stream order (FCGI-6.1-2), stream termination (FCGI-3.3-16), the
//! empty STDIN even without a body (FCGI-6.1-7), STDIN against CONTENT_LENGTH (FCGI-6.2-4),
//! record alignment (FCGI-3.3-7), reserved bytes (FCGI-AMB-1), record directions and IDs
//! (FCGI-A-1, FCGI-A-2), management records, aborts and the use of KEEP_CONN.
//!
//! Findings are printed as each request is answered (text format) and summed up at the end:
//! after `--requests N` requests, or on SIGINT/SIGTERM. The exit status is 1 if any FAIL.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use proto::Status;
use proto::fastcgi::server::{self, Event};
use proto::fastcgi::{Header, ProtocolStatus, RecordType, Role, parse_record};

use super::ProbeArgs;
use super::fastcgi::{Out, Stream, Target};
use super::report::{Finding, Format, Report, Verdict};

/// How long an Authorizer request waits for a STDIN stream before it is answered
/// (FCGI-AMB-8: the web server may send none).
const AUTHORIZER_GRACE: Duration = Duration::from_millis(100);

/// Request IDs above this are reported against FCGI-3.3-11 ("keep request IDs small").
const SMALL_ID: u16 = 1024;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds; the text shown is `SCHEME://HOST:PORT` or `SCHEME+unix:/path`.
    fn bind(target: &Target, scheme: &str) -> io::Result<(Listener, String)> {
        match target {
            Target::Tcp(addr) => {
                let l = TcpListener::bind(addr)?;
                let shown = format!("{scheme}://{}", l.local_addr()?);
                l.set_nonblocking(true)?;
                Ok((Listener::Tcp(l), shown))
            }
            Target::Unix(path) => {
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                Ok((
                    Listener::Unix(l, path.clone()),
                    format!("{scheme}+unix:{}", path.display()),
                ))
            }
        }
    }

    fn accept(&self) -> io::Result<Option<Stream>> {
        let r = match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s.set_nonblocking(false).map(|()| Stream::Tcp(s))
            }),
            Listener::Unix(l, _) => l
                .accept()
                .map(|(s, _)| s.set_nonblocking(false).map(|()| Stream::Unix(s))),
        };
        match r {
            Ok(s) => s.map(Some),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What every connection thread of a `--serve` checker shares.
pub(crate) struct Shared {
    format: Format,
    /// Set when the checker is to stop (request limit reached, or a signal).
    pub(crate) stop: AtomicBool,
    served: AtomicUsize,
    /// The number the next request is reported under.
    pub(crate) next_request: AtomicUsize,
    limit: Option<usize>,
    /// The per-check time limit.
    pub(crate) timeout: Duration,
    findings: Mutex<Vec<Finding>>,
}

impl Shared {
    /// Prints (text format) and keeps the findings of one request or connection.
    pub(crate) fn publish(&self, title: &str, findings: Vec<Finding>) {
        if findings.is_empty() {
            return;
        }
        if let Ok(mut all) = self.findings.lock() {
            if self.format == Format::Text {
                let stdout = io::stdout();
                let mut out = stdout.lock();
                let _ = writeln!(out, "== {title}");
                for f in &findings {
                    let _ = writeln!(out, "{}", f.line());
                }
                let _ = out.flush();
            }
            all.extend(findings);
        }
    }

    /// Counts an answered request; stops the server at the limit.
    pub(crate) fn served_one(&self) {
        let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        if self.limit.is_some_and(|l| n >= l) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// `portico probe --serve fastcgi://…`: listens until `--requests` or a signal, then
/// prints the summary.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let first = args.target.first().map(String::as_str).unwrap_or_default();
    let Some(target) = Target::parse(first, "fastcgi") else {
        eprintln!(
            "portico probe --serve: expected fastcgi://HOST:PORT or fastcgi+unix:/path, got {first:?}"
        );
        return ExitCode::from(2);
    };
    run_server(args, &target, "fastcgi", serve_conn)
}

/// Runs a `--serve` checker on `bind`: one thread per connection running `serve_conn`,
/// until `--requests` or SIGINT/SIGTERM; then the summary (or the whole report in JSON
/// or JUnit). The exit status is 1 if any FAIL.
pub(crate) fn run_server(
    args: &ProbeArgs,
    bind: &Target,
    scheme: &str,
    serve_conn: fn(Stream, usize, &Shared),
) -> ExitCode {
    let (listener, shown) = match Listener::bind(bind, scheme) {
        Ok(l) => l,
        Err(e) => {
            let at = bind.shown(scheme);
            eprintln!("portico probe --serve: cannot listen on {at}: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("portico probe: listening on {shown}");
    let shared = Arc::new(Shared {
        format: args.format,
        stop: AtomicBool::new(false),
        served: AtomicUsize::new(0),
        next_request: AtomicUsize::new(1),
        limit: args.requests,
        timeout: args.check_timeout,
        findings: Mutex::new(Vec::new()),
    });
    watch_signals(&shared);
    let start = Instant::now();
    let mut conns = 0usize;
    let mut threads = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok(Some(stream)) => {
                conns += 1;
                let sh = shared.clone();
                let n = conns;
                threads.push(thread::spawn(move || serve_conn(stream, n, &sh)));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                eprintln!("portico probe --serve: accept: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Connection threads see the stop flag within one read timeout.
    let until = Instant::now() + Duration::from_millis(500);
    for t in threads {
        while !t.is_finished() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    drop(listener);
    let findings = shared
        .findings
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    let report = Report {
        target: format!("--serve {shown}"),
        findings,
        elapsed: start.elapsed(),
    };
    match args.format {
        Format::Text => println!("{}", report.summary_line()),
        f => print!("{}", report.render(f)),
    }
    if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn watch_signals(shared: &Arc<Shared>) {
    use futures_lite::StreamExt;
    let sh = shared.clone();
    match crate::rt::signals() {
        Ok(mut signals) => {
            thread::spawn(move || {
                if futures_lite::future::block_on(signals.next()).is_some() {
                    sh.stop.store(true, Ordering::SeqCst);
                }
            });
        }
        Err(e) => eprintln!("portico probe --serve: cannot watch signals: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// One connection

fn serve_conn(mut s: Stream, conn_no: usize, sh: &Shared) {
    let mut app = server::Conn::new(server::Config::default());
    let mut obs = Observer::new(conn_no);
    let mut buf = vec![0u8; 64 * 1024];
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_write_timeout(Some(sh.timeout.max(Duration::from_secs(1))));
    let mut peer_closed = false;
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                peer_closed = true;
                break;
            }
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default();
                obs.feed(data, sh);
                if let Err(e) = app.handle_read(data) {
                    obs.protocol_error(e);
                    flush(&mut s, &mut app);
                    break;
                }
                while let Some(ev) = app.poll_event() {
                    obs.event(ev, &mut app, sh);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                peer_closed = true;
                break;
            }
        }
        obs.timers(&mut app, sh);
        if !flush(&mut s, &mut app) {
            peer_closed = true;
            break;
        }
        obs.publish_done(sh);
        if app.wants_close() {
            break;
        }
    }
    obs.publish_done(sh);
    obs.close(peer_closed, sh);
}

/// Writes what the machine has to send; `false` if the peer is gone.
fn flush(s: &mut Stream, app: &mut server::Conn) -> bool {
    let mut out = Vec::new();
    app.poll_transmit(&mut out);
    out.is_empty() || s.write_all(&out).is_ok()
}

/// What is known about one request of the web server.
struct Req {
    no: usize,
    id: u16,
    role: Role,
    keep: bool,
    out: Out,
    params: Vec<u8>,
    params_end: Option<Instant>,
    pairs: usize,
    content_length: Option<u64>,
    stdin_seen: bool,
    stdin_bytes: u64,
    stdin_end: bool,
    data_end: bool,
    records: usize,
    answered: bool,
}

impl Req {
    fn title(&self, conn: usize) -> String {
        format!(
            "request {} (connection {conn}, ID {}, role {}, KEEP_CONN {})",
            self.no,
            self.id,
            self.role,
            if self.keep { "set" } else { "clear" }
        )
    }

    /// PASS for the clauses that held in this request.
    fn conclude(&mut self) {
        let o = &mut self.out;
        o.pass(
            "FCGI-5.1-1",
            "BEGIN_REQUEST with a nonzero ID and an 8-byte body",
        );
        o.pass("FCGI-3.3-16", "every stream ended once, by an empty record");
        o.pass(
            "FCGI-3.3-7",
            format!("{} records, each a multiple of 8 bytes", self.records),
        );
        if self.params_end.is_some() {
            o.pass("FCGI-6.1-9", format!("{} params, no NUL byte", self.pairs));
            if self.role == Role::AUTHORIZER {
                o.pass("FCGI-6.3-2", "params in the Responder format");
                o.pass(
                    "FCGI-6.3-3",
                    "no CONTENT_LENGTH, PATH_INFO, PATH_TRANSLATED or SCRIPT_NAME",
                );
            } else {
                o.pass("FCGI-6.2-2", "the CGI environment as PARAMS");
            }
            if self.role == Role::FILTER {
                o.pass("FCGI-6.4-3", "FCGI_DATA_LAST_MOD and FCGI_DATA_LENGTH sent");
            }
        }
        if self.stdin_seen {
            o.pass("FCGI-6.1-2", "PARAMS ended before STDIN began");
        }
        if self.stdin_end && self.role != Role::AUTHORIZER {
            o.pass(
                "FCGI-6.1-7",
                if self.stdin_bytes == 0 {
                    "an empty STDIN record even without a body".to_owned()
                } else {
                    format!("STDIN of {} bytes, then its empty record", self.stdin_bytes)
                },
            );
        }
        if self.role == Role::AUTHORIZER {
            self.out.info(
                "FCGI-AMB-8",
                if self.stdin_seen {
                    "the Authorizer got a STDIN stream"
                } else {
                    "the Authorizer got no STDIN stream (as Apache sends)"
                },
            );
        }
    }
}

/// Reads the web server's records beside the server machine and judges them.
struct Observer {
    conn: usize,
    out: Out,
    inbuf: Vec<u8>,
    reqs: BTreeMap<u16, Req>,
    done: Vec<(String, Vec<Finding>)>,
    requests: usize,
    keep_seen: usize,
    closed_by_us: bool,
}

impl Observer {
    fn new(conn: usize) -> Observer {
        Observer {
            conn,
            out: Out::new(&format!("connection-{conn}")),
            inbuf: Vec::new(),
            reqs: BTreeMap::new(),
            done: Vec::new(),
            requests: 0,
            keep_seen: 0,
            closed_by_us: false,
        }
    }

    fn feed(&mut self, data: &[u8], sh: &Shared) {
        self.inbuf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.inbuf);
        let mut used = 0;
        while let Ok(Status::Complete((r, n))) = parse_record(buf.get(used..).unwrap_or_default()) {
            self.on_record(r.header, r.content, sh);
            used += n;
        }
        self.inbuf = buf.get(used..).unwrap_or_default().to_vec();
    }

    /// The findings sink for a record of `id`: its request, or the connection.
    fn sink(&mut self, id: u16) -> &mut Out {
        match self.reqs.get_mut(&id) {
            Some(r) if !r.answered => &mut r.out,
            _ => &mut self.out,
        }
    }

    fn on_record(&mut self, h: Header, content: &[u8], sh: &Shared) {
        let (t, id) = (h.record_type, h.request_id);
        if t == RecordType::BEGIN_REQUEST && id != 0 {
            self.begin(id, content, sh);
        }
        if let Some(r) = self.reqs.get_mut(&id) {
            r.records += 1;
        }
        let o = self.sink(id);
        if h.version != 1 {
            o.broken(
                "FCGI-3.3-3",
                format!("{t} record with version {}", h.version),
            );
            o.info(
                "FCGI-AMB-2",
                "portico (a strict application) closes the connection on a version other than 1",
            );
        }
        if h.reserved != 0 {
            o.info(
                "FCGI-AMB-1",
                format!("reserved header byte 0x{:02x} in {t}", h.reserved),
            );
        }
        let total = 8 + content.len() + usize::from(h.padding_length);
        if total % 8 != 0 {
            o.broken(
                "FCGI-3.3-7",
                format!(
                    "{t} record of {total} bytes (content {}, padding {}) is not a multiple of 8",
                    content.len(),
                    h.padding_length
                ),
            );
        }
        if t.is_from_application() {
            o.broken(
                "FCGI-A-1",
                format!("the web server sent {t}, an application type"),
            );
            return;
        }
        if id == 0 {
            self.management(t, content);
            return;
        }
        if t == RecordType::GET_VALUES {
            self.out
                .broken("FCGI-A-2", format!("GET_VALUES with request ID {id}"));
            return;
        }
        if t == RecordType::BEGIN_REQUEST {
            return;
        }
        let conn = self.conn;
        let Some(r) = self.reqs.get_mut(&id).filter(|r| !r.answered) else {
            if t.is_known() {
                self.out.info(
                    "FCGI-3.3-10",
                    format!("{t} for request {id}, which is not active (ignored; FCGI-AMB-16)"),
                );
            }
            return;
        };
        match t {
            RecordType::ABORT_REQUEST => {
                r.out
                    .info("FCGI-5.4-1", "the web server aborted the request");
                if !content.is_empty() {
                    r.out.info(
                        "FCGI-AMB-12",
                        format!("ABORT_REQUEST with {} content bytes", content.len()),
                    );
                }
            }
            RecordType::PARAMS => {
                if r.params_end.is_some() {
                    r.out
                        .broken("FCGI-3.3-16", "PARAMS record after the PARAMS terminator");
                } else if content.is_empty() {
                    r.params_end = Some(Instant::now());
                    judge_params(r);
                } else {
                    r.params.extend_from_slice(content);
                }
            }
            RecordType::STDIN => {
                if r.params_end.is_none() {
                    r.out
                        .broken("FCGI-6.1-2", "STDIN before the PARAMS stream ended");
                }
                if r.stdin_end {
                    r.out
                        .broken("FCGI-3.3-16", "STDIN record after the STDIN terminator");
                    return;
                }
                r.stdin_seen = true;
                if content.is_empty() {
                    r.stdin_end = true;
                    judge_stdin(r);
                } else {
                    r.stdin_bytes += u64::try_from(content.len()).unwrap_or(u64::MAX);
                }
            }
            RecordType::DATA => {
                if r.role != Role::FILTER {
                    r.out
                        .info("FCGI-5.3-2", format!("DATA sent to a {} request", r.role));
                } else if !r.stdin_end {
                    r.out
                        .broken("FCGI-6.1-2", "DATA before the STDIN stream ended");
                    r.out
                        .broken("FCGI-6.4-2", "DATA before the STDIN stream ended");
                }
                if r.data_end {
                    r.out
                        .broken("FCGI-3.3-16", "DATA record after the DATA terminator");
                } else if content.is_empty() {
                    r.data_end = true;
                }
            }
            _ => {
                r.out.info(
                    "FCGI-AMB-3",
                    format!("{t} with request ID {id} in connection {conn} (ignored)"),
                );
            }
        }
    }

    fn begin(&mut self, id: u16, content: &[u8], sh: &Shared) {
        if self.reqs.get(&id).is_some_and(|r| !r.answered) {
            self.out.info(
                "FCGI-AMB-14",
                format!("BEGIN_REQUEST for the active request {id}: portico closes the connection"),
            );
            return;
        }
        let active: Vec<u16> = self
            .reqs
            .values()
            .filter(|r| !r.answered)
            .map(|r| r.id)
            .collect();
        if !active.is_empty() {
            self.out.info(
                "FCGI-6.1-4",
                format!("multiplexes: BEGIN_REQUEST {id} while {active:?} active"),
            );
        }
        let no = sh.next_request.fetch_add(1, Ordering::SeqCst);
        self.requests += 1;
        let mut out = Out::new(&format!("request-{no}"));
        let (role, flags) = match (content.first(), content.get(1), content.get(2)) {
            (Some(&a), Some(&b), Some(&f)) => (Role(u16::from_be_bytes([a, b])), f),
            _ => (Role(0), 0),
        };
        if content.len() != 8 {
            out.info(
                "FCGI-5.1-2",
                format!("BEGIN_REQUEST content is {} bytes, not 8", content.len()),
            );
            out.broken(
                "FCGI-5.1-1",
                format!("malformed BEGIN_REQUEST ({}-byte body)", content.len()),
            );
        } else if content.get(3..).is_some_and(|b| b.iter().any(|&x| x != 0)) {
            out.info(
                "FCGI-AMB-1",
                format!("BEGIN_REQUEST reserved bytes {:02x?}", content.get(3..)),
            );
        }
        if !role.is_known() {
            out.info(
                "FCGI-5.1-3",
                format!("role {} (answered with UNKNOWN_ROLE)", role.0),
            );
        }
        if flags & !1 != 0 {
            out.info("FCGI-5.1-4", format!("undefined flag bits 0x{flags:02x}"));
        }
        if id > SMALL_ID {
            out.broken(
                "FCGI-3.3-11",
                format!("request ID {id}: IDs should stay small"),
            );
        }
        let keep = flags & 1 != 0;
        if keep {
            self.keep_seen += 1;
        }
        self.reqs.insert(
            id,
            Req {
                no,
                id,
                role,
                keep,
                out,
                params: Vec::new(),
                params_end: None,
                pairs: 0,
                content_length: None,
                stdin_seen: false,
                stdin_bytes: 0,
                stdin_end: false,
                data_end: false,
                records: 0,
                answered: false,
            },
        );
        if !role.is_known() {
            // The server machine rejects it on its own (FCGI-5.5-7); nothing more will come.
            if let Some(r) = self.reqs.get_mut(&id) {
                r.answered = true;
                r.out.pass("FCGI-5.1-1", "BEGIN_REQUEST with a nonzero ID");
                let title = r.title(self.conn);
                let f = std::mem::replace(&mut r.out, Out::new("done")).into_findings();
                self.done.push((title, f));
                sh.served_one();
            }
        }
    }

    fn management(&mut self, t: RecordType, content: &[u8]) {
        match t {
            RecordType::GET_VALUES => {
                let mut names = Vec::new();
                let mut values = false;
                for (n, v) in proto::fastcgi::NameValues::new(content).filter_map(Result::ok) {
                    names.push(String::from_utf8_lossy(n).into_owned());
                    values |= !v.is_empty();
                }
                self.out.info(
                    "FCGI-4.1-1",
                    format!("GET_VALUES for {} (answered)", names.join(", ")),
                );
                if values {
                    self.out
                        .info("FCGI-4.1-2", "GET_VALUES carried non-empty values");
                }
            }
            RecordType::BEGIN_REQUEST => {
                self.out
                    .broken("FCGI-5.1-1", "BEGIN_REQUEST with request ID 0");
                self.out
                    .broken("FCGI-A-2", "BEGIN_REQUEST with request ID 0");
            }
            _ if t.is_known() => {
                self.out
                    .broken("FCGI-A-2", format!("{t} with request ID 0"));
            }
            _ => self.out.info(
                "FCGI-4.2-1",
                format!("management type {} sent (answered with UNKNOWN_TYPE)", t.0),
            ),
        }
    }

    /// Reacts to the server machine's events: answers requests when their input is in.
    fn event(&mut self, ev: Event, app: &mut server::Conn, sh: &Shared) {
        match ev {
            Event::StdinEnd { id } => {
                let role = self.reqs.get(&id).map(|r| r.role);
                if role != Some(Role::FILTER) {
                    self.respond(id, app, sh);
                }
            }
            Event::DataEnd { id } | Event::Abort { id } => self.respond(id, app, sh),
            _ => {}
        }
    }

    /// Answers Authorizers that got no STDIN and Responders whose STDIN never began.
    fn timers(&mut self, app: &mut server::Conn, sh: &Shared) {
        let now = Instant::now();
        let mut due = Vec::new();
        for r in self.reqs.values_mut().filter(|r| !r.answered) {
            let Some(at) = r.params_end else { continue };
            if r.stdin_seen {
                continue;
            }
            let waited = now.saturating_duration_since(at);
            if r.role == Role::AUTHORIZER && waited >= AUTHORIZER_GRACE {
                due.push(r.id);
            } else if r.role != Role::AUTHORIZER && waited >= sh.timeout {
                r.out.broken(
                    "FCGI-6.1-7",
                    format!(
                        "no STDIN stream (not even its empty record) within {:.1} s after PARAMS",
                        sh.timeout.as_secs_f64()
                    ),
                );
                due.push(r.id);
            }
        }
        for id in due {
            self.respond(id, app, sh);
        }
    }

    fn respond(&mut self, id: u16, app: &mut server::Conn, sh: &Shared) {
        let conn = self.conn;
        let Some(r) = self.reqs.get_mut(&id).filter(|r| !r.answered) else {
            return;
        };
        r.answered = true;
        r.conclude();
        let title = r.title(conn);
        let findings = std::mem::replace(&mut r.out, Out::new("done")).into_findings();
        if app.is_active(id) {
            let mut body = format!(
                "Status: 200\r\nContent-Type: text/plain\r\n\r\nportico probe --serve: {title}\n\
                 {} params, {} STDIN bytes\n",
                r.pairs, r.stdin_bytes
            );
            let broken: Vec<&Finding> = findings
                .iter()
                .filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::Warn))
                .collect();
            if broken.is_empty() {
                body.push_str("no violations\n");
            }
            for f in broken {
                body.push_str(&f.line());
                body.push('\n');
            }
            // Output is refused before PARAMS ended (an abort that early): END_REQUEST only.
            let _ = app.write_stdout(id, body.as_bytes());
            let _ = app.end_request(id, 0, ProtocolStatus::REQUEST_COMPLETE);
        }
        self.done.push((title, findings));
        sh.served_one();
    }

    fn publish_done(&mut self, sh: &Shared) {
        for (title, f) in self.done.drain(..) {
            sh.publish(&title, f);
        }
    }

    fn protocol_error(&mut self, e: proto::fastcgi::Error) {
        self.closed_by_us = true;
        self.out.info(
            e.clause(),
            format!("protocol error ({e}): portico, a strict application, closed the connection"),
        );
    }

    fn close(&mut self, peer_closed: bool, sh: &Shared) {
        let conn = self.conn;
        for r in self.reqs.values_mut().filter(|r| !r.answered) {
            r.answered = true;
            if peer_closed {
                r.out.info(
                    "FCGI-5.4-5",
                    "the web server closed the connection while the request was active (abort by close)",
                );
            } else {
                r.out.info(
                    "FCGI-3.5-1",
                    "the request was cut short when portico stopped or closed",
                );
            }
            let title = r.title(conn);
            let f = std::mem::replace(&mut r.out, Out::new("done")).into_findings();
            self.done.push((title, f));
            // A request cut short counts towards --requests as well.
            sh.served_one();
        }
        self.publish_done(sh);
        let how = if peer_closed && !self.closed_by_us {
            "the web server closed it"
        } else {
            "portico closed it"
        };
        self.out.info(
            "FCGI-3.5-1",
            format!(
                "connection carried {} request(s), {} with KEEP_CONN; {how}",
                self.requests, self.keep_seen
            ),
        );
        if !self.inbuf.is_empty() {
            self.out.info(
                "FCGI-3.3-2",
                format!(
                    "{} bytes of an incomplete record at the end",
                    self.inbuf.len()
                ),
            );
        }
        let f = std::mem::replace(&mut self.out, Out::new("done")).into_findings();
        sh.publish(&format!("connection {conn}"), f);
    }
}

/// Judges a complete PARAMS stream.
fn judge_params(r: &mut Req) {
    let p = std::mem::take(&mut r.params);
    let mut at = 0;
    let mut nul = Vec::new();
    let mut long_short = false;
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut values: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut malformed = false;
    while at < p.len() {
        let Some((nl, a)) = read_len(&p, at) else {
            malformed = true;
            break;
        };
        let Some((vl, b)) = read_len(&p, at + a) else {
            malformed = true;
            break;
        };
        long_short |= (a == 4 && nl <= 127) || (b == 4 && vl <= 127);
        let start = at + a + b;
        let (Some(name), Some(value)) = (
            p.get(start..start.saturating_add(nl)),
            p.get(start.saturating_add(nl)..start.saturating_add(nl).saturating_add(vl)),
        ) else {
            malformed = true;
            break;
        };
        if name.contains(&0) || value.contains(&0) {
            nul.push(String::from_utf8_lossy(name).replace('\0', "\\0"));
        }
        names.push(name.to_vec());
        values
            .entry(name.to_vec())
            .or_insert_with(|| value.to_vec());
        at = start + nl + vl;
    }
    r.pairs = names.len();
    let o = &mut r.out;
    if malformed {
        o.info(
            "FCGI-3.4-1",
            format!(
                "PARAMS ends inside a name-value pair (at byte {at} of {})",
                p.len()
            ),
        );
        o.broken(
            "FCGI-6.2-2",
            "PARAMS is not a sequence of whole name-value pairs",
        );
    }
    if long_short {
        o.info(
            "FCGI-AMB-4",
            "four-byte length form used for a length of 127 or less",
        );
    }
    if !nul.is_empty() {
        o.broken(
            "FCGI-6.1-9",
            format!("NUL byte in param(s): {}", nul.join(", ")),
        );
    }
    let has = |n: &[u8]| values.contains_key(n);
    if r.role == Role::AUTHORIZER {
        let sent: Vec<&str> = proto::fastcgi::client::AUTHORIZER_WITHHELD
            .iter()
            .filter(|n| has(n))
            .filter_map(|n| std::str::from_utf8(n).ok())
            .collect();
        if !sent.is_empty() {
            o.broken(
                "FCGI-6.3-3",
                format!("sent to an Authorizer: {}", sent.join(", ")),
            );
        }
    }
    if r.role == Role::FILTER && !(has(b"FCGI_DATA_LAST_MOD") && has(b"FCGI_DATA_LENGTH")) {
        o.broken(
            "FCGI-6.4-3",
            "a Filter request without FCGI_DATA_LAST_MOD and FCGI_DATA_LENGTH",
        );
    }
    if !has(b"REQUEST_METHOD") {
        let clause = if r.role == Role::AUTHORIZER {
            "FCGI-6.3-2"
        } else {
            "FCGI-6.2-2"
        };
        o.broken(clause, "no REQUEST_METHOD: not a CGI/1.1 environment");
    }
    let missing: Vec<&str> = [
        "SERVER_PROTOCOL",
        "GATEWAY_INTERFACE",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_SOFTWARE",
        "QUERY_STRING",
        "REMOTE_ADDR",
    ]
    .into_iter()
    .filter(|n| !has(n.as_bytes()))
    .collect();
    if !missing.is_empty() {
        o.info(
            "FCGI-6.2-2",
            format!("CGI meta-variables not sent: {}", missing.join(", ")),
        );
    }
    let dups = names.len() - values.len();
    if dups > 0 {
        o.info("FCGI-5.2-2", format!("{dups} repeated param name(s)"));
    }
    r.content_length = match values.get(&b"CONTENT_LENGTH"[..]) {
        Some(v) if !v.is_empty() => {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if n.is_none() {
                o.info(
                    "FCGI-6.2-4",
                    format!(
                        "CONTENT_LENGTH {:?} is not a number",
                        String::from_utf8_lossy(v)
                    ),
                );
            }
            n
        }
        _ => None,
    };
}

/// Judges STDIN against CONTENT_LENGTH once STDIN ended.
fn judge_stdin(r: &mut Req) {
    let got = r.stdin_bytes;
    match r.content_length {
        Some(cl) if got > cl => r.out.broken(
            "FCGI-6.2-4",
            format!("{got} STDIN bytes, more than CONTENT_LENGTH {cl}"),
        ),
        Some(cl) if got < cl => r.out.info(
            "FCGI-6.2-4",
            format!("{got} STDIN bytes, fewer than CONTENT_LENGTH {cl} (the client failed?)"),
        ),
        Some(cl) => r
            .out
            .pass("FCGI-6.2-4", format!("STDIN matches CONTENT_LENGTH {cl}")),
        None if got > 0 => r.out.info(
            "FCGI-6.2-4",
            format!("{got} STDIN bytes without a CONTENT_LENGTH (a streamed body, RW-5/RW-6)"),
        ),
        None => {}
    }
    if r.role == Role::AUTHORIZER && got > 0 {
        r.out.info(
            "FCGI-AMB-8",
            format!("{got} STDIN bytes sent to an Authorizer"),
        );
    }
}

/// One name-value length at `at`: (length, bytes used) (FCGI-3.4-2).
fn read_len(p: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *p.get(at)?;
    if first & 0x80 == 0 {
        return Some((usize::from(first), 1));
    }
    let b = p.get(at..at + 4)?;
    let n = u32::from_be_bytes([b[0] & 0x7F, b[1], b[2], b[3]]);
    Some((usize::try_from(n).ok()?, 4))
}
