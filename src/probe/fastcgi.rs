//! `portico probe fastcgi://HOST:PORT` (or `fastcgi+unix:/path`, or `--spawn CMD`): checks a
//! FastCGI application clause by clause, acting as a web server that is sometimes correct and
//! sometimes deliberately wrong. Every check runs on its own connection(s) with its own time
//! limit (`--check-timeout`, plus the pauses the scenario itself makes), so a broken peer costs
//! at most that much time; independent checks run a few at a time.
//!
//! Each check is a named scenario (a slug) covering a list of clause IDs of
//! `shared/specs/fastcgi.md`. It reports `PASS` for what held and, following the clause's level,
//! `FAIL`/`WARN`/`INFO` for what did not. On top of its own clauses every check audits every
//! record the application sent ([`Conv::audit`]): version, alignment (FCGI-3.3-7), direction and
//! request IDs (FCGI-A-1, FCGI-A-2), stream termination (FCGI-3.3-16, FCGI-6.1-7), nothing after
//! END_REQUEST (FCGI-6.1-3) and the END_REQUEST layout (FCGI-5.5-1, FCGI-5.5-2); the audit
//! reports breaks only, once per clause and check.
//!
//! Covered test ideas: FCGI-T-1 to T-17, the application-side parts of T-23 (the Authorizer
//! role, `authorizer-*`) and T-24 (a version-2 request, an oversize PARAMS length). Not covered,
//! because they check portico's own FastCGI client or its managed children rather than an
//! application: T-18 to T-22 (they are tests of portico itself, in `tests/`).
//!
//! Wire-format facts (FACT level) that an application breaks are INFO by the report rules;
//! where such a break also means a MUST was not met — an END_REQUEST whose body is not 8 bytes,
//! or whose version is not 1, is not an END_REQUEST a FastCGI 1.0 web server accepts — the MUST
//! (FCGI-5.5-1) is reported as well.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::Status;
use proto::fastcgi::client::{self, RawRecord};
use proto::fastcgi::nv::{MAX_CONNS, MAX_REQS, MPXS_CONNS, NameValues, encode_pair};
use proto::fastcgi::{RecordBuf, RecordType, Records, Role, encode_record, parse_record};

use super::ProbeArgs;
use super::report::{Finding, Level, Report, Side};

// ---------------------------------------------------------------------------------------------
// Targets and streams

pub use super::Target;

/// A connected byte stream, TCP or Unix-domain.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain.
    Unix(UnixStream),
}

impl Stream {
    /// Sets the read timeout (`None`: block).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    /// Sets the write timeout (`None`: block).
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Shuts down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Clauses and findings

/// The level and side of a FastCGI clause the checks cite (from `shared/specs/fastcgi.md`).
pub(crate) fn clause(id: &str) -> (Level, Side) {
    use Level::{Amb, Fact, May, Must, MustNot, Rw, Should};
    use Side::{App, Both, Ws};
    match id {
        "FCGI-3.3-9" | "FCGI-3.3-10" | "FCGI-4.1-3" | "FCGI-4.1-4" | "FCGI-4.1-6"
        | "FCGI-4.2-1" | "FCGI-5.1-5" | "FCGI-5.2-2" | "FCGI-5.2-3" | "FCGI-5.4-2"
        | "FCGI-5.4-3" | "FCGI-5.5-1" | "FCGI-6.1-3" | "FCGI-6.2-5" | "FCGI-6.2-6"
        | "FCGI-6.2-7" | "FCGI-6.4-6" | "FCGI-6.4-7" | "FCGI-3.2-2" => (Must, App),
        "FCGI-5.1-6" | "FCGI-6.1-8" => (MustNot, App),
        "FCGI-3.3-6" | "FCGI-3.3-16" | "FCGI-3.4-3" | "FCGI-3.4-4" | "FCGI-6.1-7" | "FCGI-A-1"
        | "FCGI-A-2" => (Must, Both),
        "FCGI-3.3-7" => (Should, Both),
        "FCGI-4.1-7" | "FCGI-5.5-5" | "FCGI-5.5-6" | "FCGI-5.5-7" | "FCGI-6.2-8" | "FCGI-6.4-8"
        | "FCGI-7-3" | "FCGI-7-5" => (Should, App),
        "FCGI-3.3-11" | "FCGI-5.4-4" => (Should, Ws),
        "FCGI-5.1-1" | "FCGI-6.1-2" | "FCGI-6.1-9" | "FCGI-6.2-2" | "FCGI-6.2-3" | "FCGI-6.3-2"
        | "FCGI-6.3-5" | "FCGI-6.3-8" | "FCGI-6.3-9" | "FCGI-6.3-10" | "FCGI-6.4-2"
        | "FCGI-6.4-3" | "FCGI-2.2-1" | "FCGI-2.2-3" => (Must, Ws),
        "FCGI-6.2-4" | "FCGI-6.3-3" | "FCGI-6.4-4" => (MustNot, Ws),
        "FCGI-3.3-5" => (May, Both),
        "FCGI-3.2-4" | "FCGI-3.3-12" | "FCGI-6.1-6" | "FCGI-6.3-7" | "FCGI-6.4-5" => (May, App),
        "FCGI-3.5-2" | "FCGI-3.5-3" | "FCGI-4.1-1" | "FCGI-5.4-5" | "FCGI-6.3-6" => (May, Ws),
        "FCGI-3.2-1" | "FCGI-3.5-5" | "FCGI-6.1-5" | "FCGI-6.1-10" | "FCGI-6.3-4" | "FCGI-7-1"
        | "FCGI-7-4" | "FCGI-2.2-4" => (Fact, App),
        "FCGI-4.1-2" | "FCGI-5.4-1" | "FCGI-3.2-3" => (Fact, Ws),
        "FCGI-RW-1" | "FCGI-RW-2" | "FCGI-RW-3" | "FCGI-RW-4" | "FCGI-RW-5" | "FCGI-RW-6"
        | "FCGI-RW-10" | "FCGI-RW-11" | "FCGI-RW-13" | "FCGI-RW-14" => (Rw, Ws),
        s if s.starts_with("FCGI-RW-") => (Rw, App),
        s if s.starts_with("FCGI-AMB-") => (Amb, Both),
        _ => (Fact, Both),
    }
}

/// The findings of one check: at most one break per clause, and no PASS for a clause that
/// broke in the same check.
#[derive(Debug)]
pub(crate) struct Out {
    check: String,
    findings: Vec<Finding>,
    /// Findings of the record audit, which the report keeps once per clause.
    audit: Vec<Finding>,
    broken: BTreeSet<String>,
}

impl Out {
    /// An empty result for the check `check`.
    pub(crate) fn new(check: &str) -> Out {
        Out {
            check: check.to_owned(),
            findings: Vec::new(),
            audit: Vec::new(),
            broken: BTreeSet::new(),
        }
    }

    /// The clause held.
    pub(crate) fn pass(&mut self, id: &str, obs: impl Into<String>) {
        if self.broken.contains(id) {
            return;
        }
        let (level, side) = clause(id);
        let f = Finding::pass(&self.check, id, level, side, obs);
        self.push_unique(f);
    }

    /// The clause was broken (the verdict follows its level).
    pub(crate) fn broken(&mut self, id: &str, obs: impl Into<String>) {
        if !self.broken.insert(id.to_owned()) {
            return;
        }
        self.findings
            .retain(|f| !(f.clause == id && f.verdict == super::report::Verdict::Pass));
        let (level, side) = clause(id);
        self.findings
            .push(Finding::broken(&self.check, id, level, side, obs));
    }

    /// A break found by the record audit ([`Conv::audit`]): as [`Out::broken`], but kept
    /// apart so that the report shows it once per clause.
    fn flag(&mut self, id: &str, obs: impl Into<String>) {
        if !self.broken.insert(id.to_owned()) {
            return;
        }
        self.findings
            .retain(|f| !(f.clause == id && f.verdict == super::report::Verdict::Pass));
        let (level, side) = clause(id);
        self.audit
            .push(Finding::broken(&self.check, id, level, side, obs));
    }

    /// An observation of the record audit, kept once per clause like [`Out::flag`].
    fn note(&mut self, id: &str, obs: impl Into<String>) {
        if self.audit.iter().any(|f| f.clause == id) {
            return;
        }
        let (level, side) = clause(id);
        self.audit
            .push(Finding::info(&self.check, id, level, side, obs));
    }

    /// An observation.
    pub(crate) fn info(&mut self, id: &str, obs: impl Into<String>) {
        let (level, side) = clause(id);
        let f = Finding::info(&self.check, id, level, side, obs);
        self.push_unique(f);
    }

    /// The check could not run.
    pub(crate) fn error(&mut self, id: &str, obs: impl Into<String>) {
        let (level, side) = clause(id);
        let f = Finding::error(&self.check, id, level, side, obs);
        self.push_unique(f);
    }

    fn push_unique(&mut self, f: Finding) {
        if !self.findings.iter().any(|g| {
            g.clause == f.clause && g.verdict == f.verdict && g.observation == f.observation
        }) {
            self.findings.push(f);
        }
    }

    /// The findings, in the order they were made, then the audit's.
    pub(crate) fn into_findings(self) -> Vec<Finding> {
        let mut f = self.findings;
        f.extend(self.audit);
        f
    }

    /// The check's own findings and the audit's, apart.
    fn into_parts(self) -> (Vec<Finding>, Vec<Finding>) {
        (self.findings, self.audit)
    }
}

// ---------------------------------------------------------------------------------------------
// One conversation with the application

/// Sends larger than this go through a writer thread, so the check can read meanwhile.
const ASYNC_SEND: usize = 48 * 1024;

/// Padding bytes that look like a BEGIN_REQUEST header: an application that does not skip
/// padding (FCGI-3.3-6) loses its framing.
const JUNK: &[u8] = b"\x01\x01\x00\x01\x00\x08\x00\x00";

fn junk(n: usize) -> Vec<u8> {
    JUNK.iter().copied().cycle().take(n).collect()
}

/// A record the application sent, with the number of the last send before it arrived.
#[derive(Debug)]
struct Rec {
    rec: RecordBuf,
    mark: u32,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// What was waited for arrived.
    Done,
    /// The application closed the connection.
    Eof,
    /// The time limit passed.
    Timeout,
}

/// One connection: what was sent (numbered), every record received, EOF.
struct Conv {
    stream: Stream,
    inbuf: Vec<u8>,
    readbuf: Vec<u8>,
    recs: Vec<Rec>,
    eof: bool,
    read_error: Option<String>,
    mark: u32,
    begins: Vec<(u32, u16)>,
    deadline: Instant,
    limit: Duration,
    writer: Option<JoinHandle<io::Result<()>>>,
    send_error: Option<String>,
}

impl Drop for Conv {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The output of one request as received.
#[derive(Debug, Default)]
struct Resp {
    stdout: Vec<u8>,
    stdout_end: bool,
    stderr: Vec<u8>,
    stderr_end: bool,
    end: Option<End>,
    records: usize,
}

#[derive(Debug, Clone, Copy)]
struct End {
    app_status: Option<u32>,
    status: Option<u8>,
}

impl Resp {
    /// The CGI status of the response head (Status, Location → 302, else 200).
    fn status(&self) -> Option<u16> {
        cgi_status(&self.stdout)
    }

    fn protocol_status(&self) -> Option<u8> {
        self.end.and_then(|e| e.status)
    }
}

/// The CGI status of a response head: `Status: NNN`, 302 for `Location`, else 200; `None`
/// without a complete head.
pub(crate) fn cgi_status(stdout: &[u8]) -> Option<u16> {
    let end = find(stdout, b"\r\n\r\n").or_else(|| find(stdout, b"\n\n"))?;
    let head = stdout.get(..end)?;
    let mut location = false;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"status") {
            let digits = value.get(..3)?;
            return std::str::from_utf8(digits).ok()?.parse().ok();
        }
        if name.eq_ignore_ascii_case(b"location") {
            location = true;
        }
    }
    Some(if location { 302 } else { 200 })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conv {
    fn open(target: &Target, limit: Duration) -> io::Result<Conv> {
        let deadline = Instant::now() + limit;
        let stream = target.connect(limit)?;
        Ok(Conv {
            stream,
            inbuf: Vec::new(),
            readbuf: vec![0; 64 * 1024],
            recs: Vec::new(),
            eof: false,
            read_error: None,
            mark: 0,
            begins: Vec::new(),
            deadline,
            limit,
            writer: None,
            send_error: None,
        })
    }

    fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    /// Sends `bytes`; returns the send's number, which records arriving afterwards carry.
    fn send(&mut self, bytes: &[u8]) -> u32 {
        self.finish_writer();
        self.mark += 1;
        self.register_begins(bytes, self.mark);
        self.write_now(bytes);
        self.mark
    }

    /// Notes the BEGIN_REQUESTs in `bytes` as sent with send number `mark`.
    fn register_begins(&mut self, bytes: &[u8], mark: u32) {
        for r in Records::new(bytes) {
            if r.header.record_type == RecordType::BEGIN_REQUEST && r.header.request_id != 0 {
                self.begins.push((mark, r.header.request_id));
            }
        }
    }

    fn write_now(&mut self, bytes: &[u8]) {
        if self.send_error.is_some() {
            return;
        }
        let remaining = self.remaining();
        if bytes.len() > ASYNC_SEND {
            match self.stream.try_clone() {
                Ok(mut s) => {
                    let data = bytes.to_vec();
                    let _ = s.set_write_timeout(Some(remaining));
                    self.writer = Some(thread::spawn(move || s.write_all(&data)));
                }
                Err(e) => self.send_error = Some(e.to_string()),
            }
        } else {
            let _ = self.stream.set_write_timeout(Some(remaining));
            if let Err(e) = self.stream.write_all(bytes) {
                self.send_error = Some(e.to_string());
            }
        }
    }

    /// Sends `bytes` in pieces of `piece` bytes with a pause after every `every` pieces.
    fn send_trickle(&mut self, bytes: &[u8], piece: usize, every: usize, pause: Duration) -> u32 {
        self.finish_writer();
        self.mark += 1;
        let from = self.mark;
        self.register_begins(bytes, from);
        for (n, chunk) in bytes.chunks(piece.max(1)).enumerate() {
            self.write_now(chunk);
            if self.send_error.is_some() {
                break;
            }
            if n % every.max(1) == every.max(1) - 1 {
                thread::sleep(pause);
            }
        }
        // The application cannot answer a request it has not had whole.
        self.restart_clock();
        from
    }

    /// Gives the peer its whole time again from now, after the probe's own deliberate
    /// pacing (a trickled request, a stalled and bytewise read): on a busy machine the
    /// pauses alone (each a sleep and a wait for the CPU) have taken longer than the
    /// check's time, which is the peer's to answer in.
    fn restart_clock(&mut self) {
        self.deadline = self.deadline.max(Instant::now() + self.limit);
    }

    fn finish_writer(&mut self) {
        if let Some(h) = self.writer.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.send_error = Some(e.to_string()),
                Err(_) => self.send_error = Some("writer thread failed".into()),
            }
        }
    }

    /// Reads once, waiting at most `wait`, at most `max` bytes.
    fn read_once(&mut self, wait: Duration, max: usize) {
        let _ = self
            .stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let n = self.readbuf.len().min(max.max(1));
        let Some(buf) = self.readbuf.get_mut(..n) else {
            return;
        };
        match self.stream.read(buf) {
            Ok(0) => self.eof = true,
            Ok(k) => {
                if let Some(data) = self.readbuf.get(..k) {
                    self.inbuf.extend_from_slice(data);
                }
                self.frame();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                self.eof = true;
                self.read_error = Some(e.to_string());
            }
        }
    }

    fn frame(&mut self) {
        let mut used = 0;
        while let Ok(Status::Complete((r, n))) =
            parse_record(self.inbuf.get(used..).unwrap_or_default())
        {
            self.recs.push(Rec {
                rec: r.to_owned_record(),
                mark: self.mark,
            });
            used += n;
        }
        self.inbuf.drain(..used.min(self.inbuf.len()));
    }

    /// Reads until `done`, EOF or `until`.
    fn pump(&mut self, until: Instant, done: &dyn Fn(&Conv) -> bool) -> Outcome {
        loop {
            if done(self) {
                return Outcome::Done;
            }
            if self.eof {
                return Outcome::Eof;
            }
            let now = Instant::now();
            if now >= until {
                return Outcome::Timeout;
            }
            self.read_once(until - now, usize::MAX);
        }
    }

    /// Reads whatever comes for `d` (bounded by the deadline); `true` if the peer closed.
    fn linger(&mut self, d: Duration) -> bool {
        let until = (Instant::now() + d).min(self.deadline);
        self.pump(until, &|_| false);
        self.eof
    }

    /// Waits for END_REQUEST of `id` among records after send `from`.
    fn wait_end(&mut self, id: u16, from: u32) -> Outcome {
        let d = self.deadline;
        self.pump(d, &move |c: &Conv| c.end_rec(id, from).is_some())
    }

    fn wait_ends(&mut self, ids: &[u16], from: u32) -> Outcome {
        let d = self.deadline;
        let ids = ids.to_vec();
        self.pump(d, &move |c: &Conv| {
            ids.iter().all(|&id| c.end_rec(id, from).is_some())
        })
    }

    fn wait_type(&mut self, t: RecordType, from: u32) -> Outcome {
        let d = self.deadline;
        self.pump(d, &move |c: &Conv| c.first(t, from).is_some())
    }

    /// Waits for the peer to close; `Eof` or `Timeout`.
    fn wait_eof(&mut self) -> Outcome {
        let d = self.deadline;
        self.pump(d, &|_| false)
    }

    fn first(&self, t: RecordType, from: u32) -> Option<&RecordBuf> {
        self.recs
            .iter()
            .find(|r| r.mark >= from && r.rec.header.record_type == t)
            .map(|r| &r.rec)
    }

    fn end_rec(&self, id: u16, from: u32) -> Option<&RecordBuf> {
        self.recs
            .iter()
            .find(|r| {
                r.mark >= from
                    && r.rec.header.record_type == RecordType::END_REQUEST
                    && r.rec.header.request_id == id
            })
            .map(|r| &r.rec)
    }

    /// Records for `id` after send `from` (any type).
    fn count_for(&self, id: u16, from: u32) -> usize {
        self.recs
            .iter()
            .filter(|r| r.mark >= from && r.rec.header.request_id == id)
            .count()
    }

    /// The response of `id` from records after send `from`, up to its first END_REQUEST.
    fn resp(&self, id: u16, from: u32) -> Resp {
        let mut r = Resp::default();
        for rec in self
            .recs
            .iter()
            .filter(|r| r.mark >= from && r.rec.header.request_id == id)
        {
            let c = &rec.rec.content;
            r.records += 1;
            match rec.rec.header.record_type {
                RecordType::STDOUT if c.is_empty() => r.stdout_end = true,
                RecordType::STDOUT => r.stdout.extend_from_slice(c),
                RecordType::STDERR if c.is_empty() => r.stderr_end = true,
                RecordType::STDERR => r.stderr.extend_from_slice(c),
                RecordType::END_REQUEST => {
                    r.end = Some(End {
                        app_status: c
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes),
                        status: c.get(4).copied(),
                    });
                    break;
                }
                _ => {}
            }
        }
        r
    }

    /// Why a wait ended without its answer, for observations.
    fn why(&self, o: Outcome) -> String {
        match o {
            Outcome::Eof => match &self.read_error {
                Some(e) => format!("the connection failed ({e})"),
                None => "the application closed the connection".into(),
            },
            Outcome::Timeout => format!("nothing within {}", secs(self.limit)),
            Outcome::Done => "answered".into(),
        }
    }

    /// Reports breaks of the rules every application record follows (see the module docs).
    fn audit(&self, o: &mut Out) {
        #[derive(Default)]
        struct S {
            active: bool,
            stdout_data: bool,
            stdout_end: bool,
            stderr_data: bool,
            stderr_end: bool,
            ended: bool,
        }
        let mut begins = self.begins.iter().peekable();
        let mut st: BTreeMap<u16, S> = BTreeMap::new();
        for r in &self.recs {
            while let Some(&&(m, id)) = begins.peek() {
                if m > r.mark {
                    break;
                }
                st.insert(
                    id,
                    S {
                        active: true,
                        ..S::default()
                    },
                );
                begins.next();
            }
            let h = r.rec.header;
            let (t, id, cl) = (h.record_type, h.request_id, r.rec.content.len());
            if h.version != 1 {
                o.flag(
                    "FCGI-3.3-3",
                    format!(
                        "{t} record with version {} (FastCGI 1.0 is version 1)",
                        h.version
                    ),
                );
            }
            if h.reserved != 0 {
                o.note(
                    "FCGI-AMB-1",
                    format!("reserved header byte 0x{:02x} in {t}", h.reserved),
                );
            }
            let total = 8 + cl + usize::from(h.padding_length);
            if total % 8 != 0 {
                o.flag(
                    "FCGI-3.3-7",
                    format!(
                        "{t} record of {total} bytes (content {cl}, padding {}) is not a multiple of 8",
                        h.padding_length
                    ),
                );
            }
            if t.is_from_web_server() {
                o.flag(
                    "FCGI-A-1",
                    format!("the application sent {t}, a web-server type"),
                );
                continue;
            }
            if !t.is_known() {
                o.note("FCGI-8-1", format!("{t} (request ID {id}) is not defined"));
                continue;
            }
            if t.is_management() {
                if id != 0 {
                    o.flag("FCGI-A-2", format!("{t} with request ID {id}"));
                }
                if t == RecordType::UNKNOWN_TYPE && cl != 8 {
                    o.flag(
                        "FCGI-4.2-2",
                        format!("UNKNOWN_TYPE content is {cl} bytes, not 8"),
                    );
                }
                if t == RecordType::GET_VALUES_RESULT
                    && NameValues::new(&r.rec.content).any(|p| p.is_err())
                {
                    o.flag(
                        "FCGI-3.4-1",
                        "GET_VALUES_RESULT holds a truncated name-value pair",
                    );
                }
                continue;
            }
            if id == 0 {
                o.flag("FCGI-A-2", format!("{t} with request ID 0"));
                continue;
            }
            let s = st.entry(id).or_default();
            if !s.active && !s.ended {
                o.flag(
                    "FCGI-3.3-9",
                    format!("{t} for request {id}, which was never begun"),
                );
                continue;
            }
            if s.ended {
                o.flag(
                    "FCGI-6.1-3",
                    format!("{t} for request {id} after its END_REQUEST"),
                );
                continue;
            }
            match t {
                RecordType::STDOUT => {
                    if s.stdout_end {
                        o.flag(
                            "FCGI-3.3-16",
                            format!("STDOUT record for request {id} after its empty STDOUT"),
                        );
                    } else if cl == 0 {
                        s.stdout_end = true;
                    } else {
                        s.stdout_data = true;
                    }
                }
                RecordType::STDERR => {
                    if s.stderr_end {
                        o.flag(
                            "FCGI-3.3-16",
                            format!("STDERR record for request {id} after its empty STDERR"),
                        );
                    } else if cl == 0 {
                        s.stderr_end = true;
                    } else {
                        s.stderr_data = true;
                    }
                }
                _ => {
                    let c = &r.rec.content;
                    if h.version != 1 {
                        o.flag(
                            "FCGI-5.5-1",
                            format!(
                                "END_REQUEST for request {id} has version {}: not a FastCGI 1.0 END_REQUEST",
                                h.version
                            ),
                        );
                    }
                    if cl != 8 {
                        o.flag(
                            "FCGI-5.5-2",
                            format!("END_REQUEST content is {cl} bytes, not 8"),
                        );
                        o.flag(
                            "FCGI-5.5-1",
                            format!("END_REQUEST for request {id} is malformed ({cl}-byte body)"),
                        );
                    } else if c.get(5..8).is_some_and(|b| b != [0, 0, 0]) {
                        o.note(
                            "FCGI-AMB-1",
                            format!("END_REQUEST reserved bytes {:02x?}", c.get(5..8)),
                        );
                    }
                    let status = c.get(4).copied();
                    if status == Some(0) && !s.stdout_end {
                        o.flag(
                            "FCGI-6.1-7",
                            format!("request {id} completed without the empty STDOUT record"),
                        );
                    }
                    if s.stdout_data && !s.stdout_end {
                        o.flag(
                            "FCGI-3.3-16",
                            format!("STDOUT of request {id} not terminated before END_REQUEST"),
                        );
                    }
                    if s.stderr_data && !s.stderr_end {
                        o.flag(
                            "FCGI-3.3-16",
                            format!("STDERR of request {id} not terminated before END_REQUEST"),
                        );
                        o.note(
                            "FCGI-6.1-6",
                            "STDERR data was sent, so its stream needs the empty record",
                        );
                    }
                    if status.is_some_and(|s| s > 3) {
                        o.note(
                            "FCGI-5.5-4",
                            format!("undefined protocolStatus {} for request {id}", opt(status)),
                        );
                    }
                    s.ended = true;
                    s.active = false;
                }
            }
        }
        if self.eof && !self.inbuf.is_empty() {
            o.note(
                "FCGI-3.3-2",
                format!(
                    "the connection closed inside a record ({} bytes of it)",
                    self.inbuf.len()
                ),
            );
        }
    }
}

/// An optional value for an observation: the value, or `none`.
fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Requests

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What the GET_VALUES answer declared.
#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    answered: bool,
    max_conns: Option<u32>,
    max_reqs: Option<u32>,
    mpxs: Option<bool>,
}

/// Options of a FastCGI probe.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time limit of each check.
    pub timeout: Duration,
    /// The request path (SCRIPT_NAME, REQUEST_URI), optionally with `?query`.
    pub path: String,
    /// Extra params, sent with every request (replacing defaults of the same name).
    pub params: Vec<(String, String)>,
    /// How many checks run at once; `None`: from FCGI_MAX_CONNS, at most 8.
    pub concurrency: Option<usize>,
}

impl Options {
    /// From the command line; an error for a `--param` without `=`.
    pub fn from_args(args: &ProbeArgs) -> Result<Options, String> {
        let mut params = Vec::new();
        for p in &args.params {
            let (n, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--param {p:?} is not NAME=VALUE"))?;
            if n.is_empty() {
                return Err(format!("--param {p:?} has an empty name"));
            }
            params.push((n.to_owned(), v.to_owned()));
        }
        Ok(Options {
            timeout: args.check_timeout,
            path: args.path.clone(),
            params,
            concurrency: None,
        })
    }
}

/// What every check knows: where, how long, what to send, and what the first checks learnt.
struct Ctx {
    target: Target,
    timeout: Duration,
    path: String,
    query: String,
    extra: Pairs,
    caps: Caps,
    base_get: Option<u16>,
    base_post: Option<u16>,
}

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) portico-probe/0.1 \
    (FastCGI conformance checker; this header is longer than 127 bytes so that every \
    request carries a four-byte length)";

impl Ctx {
    fn new(target: Target, opts: &Options) -> Ctx {
        let (path, query) = match opts.path.split_once('?') {
            Some((p, q)) => (p.to_owned(), q.to_owned()),
            None => (opts.path.clone(), String::new()),
        };
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Ctx {
            target,
            timeout: opts.timeout,
            path,
            query,
            extra: opts
                .params
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            caps: Caps::default(),
            base_get: None,
            base_post: None,
        }
    }

    /// The nginx `fastcgi_params` set (FCGI-RW-3) for this request, plus `--param`s.
    fn params(&self, method: &str, body: Option<usize>) -> Pairs {
        let uri = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let content_type = if body.is_some() {
            "application/x-www-form-urlencoded"
        } else {
            ""
        };
        let content_length = body.map(|n| n.to_string()).unwrap_or_default();
        let base: [(&str, &str); 21] = [
            ("QUERY_STRING", &self.query),
            ("REQUEST_METHOD", method),
            ("CONTENT_TYPE", content_type),
            ("CONTENT_LENGTH", &content_length),
            ("SCRIPT_NAME", &self.path),
            ("REQUEST_URI", &uri),
            ("DOCUMENT_URI", &self.path),
            ("DOCUMENT_ROOT", "/var/www/html"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_SCHEME", "http"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "portico-probe"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "54321"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "80"),
            ("SERVER_NAME", "localhost"),
            ("REDIRECT_STATUS", "200"),
            ("HTTP_HOST", "localhost"),
            ("HTTP_USER_AGENT", USER_AGENT),
            ("HTTP_ACCEPT", "*/*"),
        ];
        let mut p: Pairs = base
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        for (n, v) in &self.extra {
            match p.iter_mut().find(|(m, _)| m == n) {
                Some(slot) => slot.1.clone_from(v),
                None => p.push((n.clone(), v.clone())),
            }
        }
        p
    }

    fn request(
        &self,
        id: u16,
        role: Role,
        keep: bool,
        pairs: &Pairs,
        stdin: Option<&[u8]>,
        data: Option<&[u8]>,
    ) -> Vec<u8> {
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let mut out = Vec::new();
        client::Request {
            id,
            role,
            keep_conn: keep,
            params: &refs,
            stdin,
            data,
        }
        .encode(&mut out);
        out
    }

    /// Appends a GET request's PARAMS stream for `id`, terminator included.
    fn get_params(&self, id: u16, out: &mut Vec<u8>) {
        stream(
            RecordType::PARAMS,
            id,
            &pairs_bytes(&self.params("GET", None)),
            out,
        );
    }

    fn get(&self, id: u16, keep: bool) -> Vec<u8> {
        let p = self.params("GET", None);
        self.request(id, Role::RESPONDER, keep, &p, Some(b""), None)
    }

    fn post(&self, id: u16, keep: bool, body: &[u8]) -> Vec<u8> {
        let p = self.params("POST", Some(body.len()));
        self.request(id, Role::RESPONDER, keep, &p, Some(body), None)
    }

    fn open(&self, o: &mut Out, extra: Duration) -> Option<Conv> {
        match Conv::open(&self.target, self.timeout + extra) {
            Ok(c) => Some(c),
            Err(e) => {
                o.error(
                    "FCGI-3.2-1",
                    format!("cannot connect to {}: {e}", self.target.shown("fastcgi")),
                );
                None
            }
        }
    }
}

fn pairs_bytes(p: &Pairs) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in p {
        encode_pair(n, v, &mut out);
    }
    out
}

/// The encoded pairs and the offset of each pair.
fn pairs_offsets(p: &Pairs) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for (n, v) in p {
        offsets.push(out.len());
        encode_pair(n, v, &mut out);
    }
    (out, offsets)
}

/// One length in the one- or four-byte form (FCGI-3.4-2).
fn encode_len(n: usize, long: bool, out: &mut Vec<u8>) {
    if long || n > 127 {
        let n = u32::try_from(n).unwrap_or(0x7FFF_FFFF) | 0x8000_0000;
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(u8::try_from(n).unwrap_or(127));
    }
}

fn pair_forms(name: &[u8], value: &[u8], long_name: bool, long_value: bool, out: &mut Vec<u8>) {
    encode_len(name.len(), long_name, out);
    encode_len(value.len(), long_value, out);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

fn begin(id: u16, role: u16, flags: u8, out: &mut Vec<u8>) {
    let [r1, r0] = role.to_be_bytes();
    encode_record(
        RecordType::BEGIN_REQUEST,
        id,
        &[r1, r0, flags, 0, 0, 0, 0, 0],
        out,
    );
}

/// A record with `pad` bytes of junk padding.
fn raw(t: RecordType, id: u16, content: &[u8], pad: u8, out: &mut Vec<u8>) {
    let j = junk(usize::from(pad));
    RawRecord {
        padding_length: pad,
        padding: &j,
        ..RawRecord::new(t, id, content)
    }
    .encode(out);
}

/// A whole stream (data records, then the terminator), records of at most 65535 bytes.
fn stream(t: RecordType, id: u16, data: &[u8], out: &mut Vec<u8>) {
    if !data.is_empty() {
        proto::fastcgi::encode_stream(t, id, data, out);
    }
    proto::fastcgi::encode_stream(t, id, &[], out);
}

/// A stream cut at the given offsets (each record non-empty), then the terminator.
fn stream_cut(t: RecordType, id: u16, data: &[u8], cuts: &[usize], out: &mut Vec<u8>) {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < data.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut at = 0;
    for c in cuts.into_iter().chain(std::iter::once(data.len())) {
        if let Some(piece) = data.get(at..c)
            && !piece.is_empty()
        {
            for chunk in piece.chunks(0xFFFF) {
                encode_record(t, id, chunk, out);
            }
        }
        at = c;
    }
    encode_record(t, id, &[], out);
}

/// A PARAMS stream packed into records of at most 65535 bytes, cut only between pairs
/// (a pair longer than a record is cut where it must be), then the terminator.
fn stream_pairs(id: u16, pairs: &Pairs, out: &mut Vec<u8>) {
    let mut record = Vec::new();
    for (n, v) in pairs {
        let mut pair = Vec::new();
        encode_pair(n, v, &mut pair);
        if !record.is_empty() && record.len() + pair.len() > 0xFFFF {
            encode_record(RecordType::PARAMS, id, &record, out);
            record.clear();
        }
        record.extend_from_slice(&pair);
        while record.len() > 0xFFFF {
            let rest = record.split_off(0xFFFF);
            encode_record(RecordType::PARAMS, id, &record, out);
            record = rest;
        }
    }
    if !record.is_empty() {
        encode_record(RecordType::PARAMS, id, &record, out);
    }
    encode_record(RecordType::PARAMS, id, &[], out);
}

/// `data` cut into exactly `pieces` non-empty parts (`pieces` ≤ `data.len()`).
fn split_exact(data: &[u8], pieces: usize) -> Vec<&[u8]> {
    let n = pieces.clamp(1, data.len().max(1));
    (0..n)
        .filter_map(|i| data.get(i * data.len() / n..(i + 1) * data.len() / n))
        .collect()
}

/// Every record of a well-formed byte string, with its version byte replaced.
fn with_version(bytes: &[u8], version: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0;
    while let Some(h) = out.get(at..at + 8) {
        let len = 8 + usize::from(u16::from_be_bytes([h[4], h[5]])) + usize::from(h[6]);
        if let Some(v) = out.get_mut(at) {
            *v = version;
        }
        at += len;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Evaluation helpers

/// Whether request `id` was answered normally; if not, `clause` is broken with what happened.
fn answered(
    o: &mut Out,
    c: &Conv,
    id: u16,
    from: u32,
    outcome: Outcome,
    clause: &str,
    what: &str,
) -> Option<Resp> {
    let r = c.resp(id, from);
    match r.end.map(|e| e.status) {
        None => {
            o.broken(
                clause,
                format!("{what}: no END_REQUEST ({})", c.why(outcome)),
            );
            None
        }
        Some(None | Some(0)) => Some(r),
        Some(Some(2)) => {
            o.info("FCGI-5.5-6", format!("{what}: rejected with OVERLOADED"));
            None
        }
        Some(Some(s)) => {
            // A plain request rejected: the clause under test, unless that is the plain
            // request itself, whose rejection breaks FCGI-6.2-7.
            let clause = if clause == "FCGI-5.5-1" {
                "FCGI-6.2-7"
            } else {
                clause
            };
            let name = match s {
                1 => " (CANT_MPX_CONN)",
                3 => " (UNKNOWN_ROLE)",
                _ => "",
            };
            o.broken(
                clause,
                format!("{what}: END_REQUEST protocolStatus {s}{name} instead of REQUEST_COMPLETE"),
            );
            None
        }
    }
}

/// As [`answered`], for a request sent on a connection kept open by an earlier KEEP_CONN
/// request: a close before any answer is a break of FCGI-5.1-6.
#[allow(clippy::too_many_arguments)]
fn answered_again(
    o: &mut Out,
    c: &Conv,
    id: u16,
    from: u32,
    outcome: Outcome,
    clause: &str,
    what: &str,
) -> Option<Resp> {
    if outcome == Outcome::Eof && c.count_for(id, from) == 0 {
        o.broken(
            "FCGI-5.1-6",
            format!(
                "the connection was closed after a request with KEEP_CONN set; {what} got no answer"
            ),
        );
        return None;
    }
    answered(o, c, id, from, outcome, clause, what)
}

/// The response matches the plain request's status (the same behaviour as FCGI-T-1).
fn same_status(o: &mut Out, clause: &str, r: &Resp, base: Option<u16>, what: &str) {
    let got = r.status();
    let shown = got.map_or_else(|| "no CGI head".to_owned(), |s| format!("status {s}"));
    match base {
        Some(b) if got == Some(b) => {
            o.pass(
                clause,
                format!("{what}: answered as the plain request ({shown})"),
            );
        }
        Some(b) => o.broken(
            clause,
            format!("{what}: {shown} where the plain request got status {b}"),
        ),
        None => o.pass(clause, format!("{what}: answered ({shown})")),
    }
}

/// Reads the response slowly: a stall, then `bytes` one-byte reads.
fn slow_read(c: &mut Conv, stall: Duration, bytes: usize) {
    thread::sleep(stall.min(c.remaining()));
    for n in 0..bytes {
        if c.eof || Instant::now() >= c.deadline {
            break;
        }
        c.read_once(c.remaining(), 1);
        if n % 16 == 15 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    c.restart_clock();
}

// ---------------------------------------------------------------------------------------------
// The checks

/// One scenario.
#[derive(Clone, Copy)]
struct Check {
    /// Short name, printed with every finding.
    slug: &'static str,
    /// The clauses it covers (documentation; the findings carry their own).
    covers: &'static str,
    /// Deliberate pauses of the scenario, added to its time limit.
    extra: Duration,
    /// Runs alone (it opens several connections at once).
    solo: bool,
    run: fn(&Ctx, &mut Out),
}

const fn chk(slug: &'static str, covers: &'static str, run: fn(&Ctx, &mut Out)) -> Check {
    Check {
        slug,
        covers,
        extra: Duration::ZERO,
        solo: false,
        run,
    }
}

const fn slow(
    slug: &'static str,
    covers: &'static str,
    extra_ms: u64,
    run: fn(&Ctx, &mut Out),
) -> Check {
    Check {
        slug,
        covers,
        extra: Duration::from_millis(extra_ms),
        solo: false,
        run,
    }
}

const fn solo(slug: &'static str, covers: &'static str, run: fn(&Ctx, &mut Out)) -> Check {
    Check {
        slug,
        covers,
        extra: Duration::ZERO,
        solo: true,
        run,
    }
}

/// The checks after the three the others depend on (get-values, responder-get, responder-post).
const CHECKS: &[Check] = &[
    chk("get-values-empty", "FCGI-4.1-3", get_values_empty),
    chk(
        "get-values-unknown-only",
        "FCGI-4.1-3, 4.1-4",
        get_values_unknown_only,
    ),
    chk(
        "get-values-four-byte",
        "FCGI-3.4-4, 4.1-3",
        get_values_four_byte,
    ),
    chk(
        "get-values-mid-request",
        "FCGI-4.1-6 (T-7)",
        get_values_mid_request,
    ),
    chk(
        "get-values-then-request",
        "FCGI-4.1-6, 3.5-1, RW-7",
        get_values_then_request,
    ),
    chk(
        "unknown-type-0",
        "FCGI-4.2-1, 4.2-2, 8-2 (T-8)",
        unknown_type_0,
    ),
    chk(
        "unknown-type-12",
        "FCGI-4.2-1, 4.2-2, 8-2 (T-8)",
        unknown_type_12,
    ),
    chk(
        "unknown-type-200",
        "FCGI-4.2-1, 4.2-2, 4.2-3, 8-2 (T-8)",
        unknown_type_200,
    ),
    chk(
        "unknown-type-255",
        "FCGI-4.2-1, 4.2-2, 8-2 (T-8)",
        unknown_type_255,
    ),
    chk(
        "unknown-type-content",
        "FCGI-4.2-1, 3.3-6",
        unknown_type_content,
    ),
    chk(
        "unknown-type-request-id",
        "FCGI-AMB-3",
        unknown_type_request_id,
    ),
    chk("alignment", "FCGI-3.3-7 (T-3)", alignment),
    chk(
        "app-record-types",
        "FCGI-A-1, A-2, 6.1-3, 6.1-6 (T-15)",
        app_record_types,
    ),
    chk(
        "end-request-fields",
        "FCGI-5.5-2, 5.5-3, 6.2-7, 8-2, AMB-1",
        end_request_fields,
    ),
    chk(
        "stream-termination",
        "FCGI-3.3-16, 6.1-6, 6.1-7",
        stream_termination,
    ),
    chk("request-id-256", "FCGI-3.1-2, 3.3-8, 3.3-9", request_id_256),
    chk("request-id-65535", "FCGI-3.3-8, 3.3-9", request_id_65535),
    chk("random-padding", "FCGI-3.3-5, 3.3-6 (T-2)", random_padding),
    chk("padding-0-63", "FCGI-3.3-6", padding_0),
    chk("padding-64-127", "FCGI-3.3-6", padding_64),
    chk("padding-128-191", "FCGI-3.3-6", padding_128),
    chk("padding-192-255", "FCGI-3.3-6", padding_192),
    chk(
        "padding-terminators",
        "FCGI-3.3-6, 3.3-16",
        padding_terminators,
    ),
    chk(
        "params-split-1",
        "FCGI-3.3-15, 5.2-3, B-2 (T-4)",
        params_split_1,
    ),
    chk("params-split-3", "FCGI-3.3-15, 5.2-3", params_split_3),
    chk(
        "params-split-in-length",
        "FCGI-5.2-3, 3.4-2",
        params_split_in_length,
    ),
    chk(
        "params-split-in-name",
        "FCGI-5.2-3, B-2",
        params_split_in_name,
    ),
    chk("stdin-split-1", "FCGI-3.3-15", stdin_split_1),
    chk("stdin-split-uneven", "FCGI-3.3-15", stdin_split_uneven),
    chk(
        "stdin-max-records",
        "FCGI-3.3-4, 3.3-6 (T-17)",
        stdin_max_records,
    ),
    chk(
        "params-lengths",
        "FCGI-3.4-2, 3.4-3, 5.2-3 (T-5)",
        params_lengths,
    ),
    chk(
        "params-value-65536",
        "FCGI-3.4-3, 5.2-3, AMB-5 (T-5)",
        params_value_65536,
    ),
    chk(
        "params-four-byte-name",
        "FCGI-3.4-4, AMB-4 (T-5)",
        params_four_byte_name,
    ),
    chk(
        "params-four-byte-value",
        "FCGI-3.4-4, AMB-4",
        params_four_byte_value,
    ),
    chk(
        "params-four-byte-all",
        "FCGI-3.4-4, AMB-4",
        params_four_byte_all,
    ),
    chk("params-empty", "FCGI-5.5-1, 6.1-7", params_empty),
    chk("params-large", "FCGI-5.2-3, AMB-5", params_large),
    chk("params-many", "FCGI-5.2-3, AMB-5", params_many),
    chk("params-binary", "FCGI-3.4-5", params_binary),
    chk("params-reordered", "FCGI-5.2-2", params_reordered),
    chk(
        "params-oversize-length",
        "FCGI-3.4-1, AMB-5 (T-24)",
        params_oversize_length,
    ),
    chk("keep-conn-clear", "FCGI-5.1-5 (T-10)", keep_conn_clear),
    slow(
        "keep-conn-set",
        "FCGI-5.1-6, 3.3-8 (T-10)",
        150,
        keep_conn_set,
    ),
    chk(
        "keep-conn-sequence",
        "FCGI-3.3-8, 5.1-5, 5.1-6",
        keep_conn_sequence,
    ),
    chk(
        "keep-conn-other-flags",
        "FCGI-5.1-4, 5.1-5",
        keep_conn_other_flags,
    ),
    slow(
        "keep-conn-all-flags",
        "FCGI-5.1-4, 5.1-6",
        150,
        keep_conn_all_flags,
    ),
    chk(
        "mpx-interleaved",
        "FCGI-5.5-5, 4.1-3, 4.1-5, 6.1-4, B-4 (T-11)",
        mpx_interleaved,
    ),
    chk("mpx-many", "FCGI-6.1-4, 4.1-3, 4.1-5", mpx_many),
    chk(
        "mpx-reject-then-reuse",
        "FCGI-5.5-5, 3.3-8",
        mpx_reject_then_reuse,
    ),
    chk(
        "unknown-role-99",
        "FCGI-5.5-7, RW-7, RW-12 (T-9)",
        unknown_role_99,
    ),
    chk("unknown-role-0", "FCGI-5.5-7", unknown_role_0),
    chk("unknown-role-65535", "FCGI-5.5-7", unknown_role_65535),
    chk(
        "authorizer",
        "FCGI-6.3-4, 6.3-7, 5.5-7, AMB-8 (T-23)",
        authorizer,
    ),
    chk(
        "authorizer-empty-stdin",
        "FCGI-6.3-4, 5.5-7, AMB-8",
        authorizer_empty_stdin,
    ),
    chk("filter", "FCGI-6.4-6, 6.4-7, 5.5-7", filter),
    chk(
        "filter-data-split",
        "FCGI-3.3-6, 3.3-15, 6.4-7",
        filter_data_split,
    ),
    chk("abort-before-params", "FCGI-5.4-2", abort_before_params),
    slow(
        "abort-during-stdin",
        "FCGI-5.4-2, 5.4-3 (T-13)",
        100,
        abort_during_stdin,
    ),
    chk("abort-after-input", "FCGI-5.5-1, AMB-12", abort_after_input),
    slow(
        "abort-then-reuse",
        "FCGI-5.4-2, 5.1-6, 3.3-8",
        100,
        abort_then_reuse,
    ),
    chk(
        "abort-with-content",
        "FCGI-5.4-2, AMB-12",
        abort_with_content,
    ),
    chk(
        "inactive-id-before",
        "FCGI-3.3-10, AMB-3, AMB-12 (T-14)",
        inactive_id_before,
    ),
    chk("inactive-id-during", "FCGI-3.3-10", inactive_id_during),
    chk(
        "inactive-id-after-end",
        "FCGI-3.3-10, AMB-16",
        inactive_id_after_end,
    ),
    chk(
        "bad-version-2",
        "FCGI-3.3-3, AMB-2, RW-7 (T-24)",
        bad_version_2,
    ),
    chk("bad-version-0", "FCGI-3.3-3, AMB-2", bad_version_0),
    chk(
        "bad-version-mid-request",
        "FCGI-3.3-3, AMB-2",
        bad_version_mid_request,
    ),
    chk("begin-body-short", "FCGI-5.1-2", begin_body_short),
    chk("begin-duplicate", "FCGI-AMB-14", begin_duplicate),
    chk("ws-sends-app-type", "FCGI-A-1", ws_sends_app_type),
    chk("ws-stream-id-0", "FCGI-A-2", ws_stream_id_0),
    chk("reserved-nonzero", "FCGI-AMB-1", reserved_nonzero),
    slow(
        "hold-params-end",
        "FCGI-6.1-8, 6.2-6 (T-12)",
        1000,
        hold_params_end,
    ),
    slow("slow-stdin", "FCGI-6.2-6, 6.1-8 (T-12)", 600, slow_stdin),
    slow("slow-reader", "FCGI-5.5-1, 6.1-7, 3.3-16", 600, slow_reader),
    slow(
        "slow-reader-large",
        "FCGI-5.5-1, 6.1-7, 3.3-16",
        600,
        slow_reader_large,
    ),
    slow("slow-writer", "FCGI-5.5-1, 3.3-15", 400, slow_writer),
    chk("stdin-short", "FCGI-6.2-8, 6.2-4 (T-16)", stdin_short),
    chk("stdin-long", "FCGI-6.2-4", stdin_long),
    solo("concurrent-conns", "FCGI-3.2-4, 4.1-5", concurrent_conns),
];

/// The slugs and covered clauses of every check, in report order.
pub fn check_list() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("get-values", "FCGI-4.1-3, 4.1-4, 4.1-5, A-2 (T-6)"),
        (
            "responder-get",
            "FCGI-3.3-2, 3.3-3, 3.3-16, 5.5-1, 5.5-2, 6.1-7, 6.2-7, B-1 (T-1)",
        ),
        ("responder-post", "FCGI-6.2-5, 5.5-1, 6.2-7"),
    ];
    v.extend(CHECKS.iter().map(|c| (c.slug, c.covers)));
    v
}

// --- management records -----------------------------------------------------------------------

fn get_values(ctx: &Ctx, o: &mut Out) -> Caps {
    let mut caps = Caps::default();
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return caps;
    };
    let mut q = Vec::new();
    client::encode_get_values(&[MAX_CONNS, MAX_REQS, MPXS_CONNS, b"PORTICO_NOPE"], &mut q);
    let from = c.send(&q);
    let out = c.wait_type(RecordType::GET_VALUES_RESULT, from);
    match c.first(RecordType::GET_VALUES_RESULT, from) {
        None => o.broken(
            "FCGI-4.1-3",
            format!("no GET_VALUES_RESULT ({})", c.why(out)),
        ),
        Some(r) => {
            caps.answered = true;
            let pairs: Vec<_> = NameValues::new(&r.content).collect();
            if pairs.iter().any(Result::is_err) {
                o.broken("FCGI-4.1-3", "GET_VALUES_RESULT holds a truncated pair");
            }
            let pairs: Vec<(&[u8], &[u8])> = pairs.into_iter().filter_map(Result::ok).collect();
            let shown: Vec<String> = pairs
                .iter()
                .map(|(n, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            o.pass(
                "FCGI-4.1-3",
                format!("GET_VALUES_RESULT: {}", shown.join(" ")),
            );
            if pairs.iter().any(|(n, _)| *n == b"PORTICO_NOPE") {
                o.broken(
                    "FCGI-4.1-4",
                    "the unknown name PORTICO_NOPE is in the answer",
                );
            } else {
                o.pass("FCGI-4.1-4", "the unknown name PORTICO_NOPE is left out");
            }
            let decimal = |v: &[u8]| -> Option<u32> { std::str::from_utf8(v).ok()?.parse().ok() };
            let mut bad = Vec::new();
            for (n, v) in &pairs {
                match *n {
                    MAX_CONNS => caps.max_conns = decimal(v),
                    MAX_REQS => caps.max_reqs = decimal(v),
                    MPXS_CONNS => {
                        caps.mpxs = match *v {
                            b"0" => Some(false),
                            b"1" => Some(true),
                            _ => None,
                        }
                    }
                    _ => continue,
                }
                let ok = if *n == MPXS_CONNS {
                    matches!(*v, b"0" | b"1")
                } else {
                    decimal(v).is_some()
                };
                if !ok {
                    bad.push(format!(
                        "{}={:?}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    ));
                }
            }
            if bad.is_empty() {
                o.pass("FCGI-4.1-5", "values are decimal (FCGI_MPXS_CONNS 0 or 1)");
            } else {
                o.broken(
                    "FCGI-4.1-5",
                    format!("values not as defined: {}", bad.join(", ")),
                );
            }
            let missing: Vec<&str> = [MAX_CONNS, MAX_REQS, MPXS_CONNS]
                .iter()
                .filter(|n| !pairs.iter().any(|(m, _)| m == *n))
                .filter_map(|n| std::str::from_utf8(n).ok())
                .collect();
            if !missing.is_empty() {
                o.info(
                    "FCGI-4.1-5",
                    format!("not reported: {}", missing.join(", ")),
                );
            }
            if r.header.request_id == 0 {
                o.pass("FCGI-A-2", "GET_VALUES_RESULT with request ID 0");
            }
        }
    }
    if c.linger(Duration::from_millis(20)) {
        o.info(
            "FCGI-RW-7",
            "the application closed the connection after GET_VALUES_RESULT (as PHP does)",
        );
    }
    c.audit(o);
    caps
}

fn get_values_query(ctx: &Ctx, o: &mut Out, content: &[u8]) -> Option<(Conv, Option<Vec<u8>>)> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let mut q = Vec::new();
    encode_record(RecordType::GET_VALUES, 0, content, &mut q);
    let from = c.send(&q);
    let out = c.wait_type(RecordType::GET_VALUES_RESULT, from);
    let answer = c
        .first(RecordType::GET_VALUES_RESULT, from)
        .map(|r| r.content.clone());
    if answer.is_none() {
        o.broken(
            "FCGI-4.1-3",
            format!("no GET_VALUES_RESULT ({})", c.why(out)),
        );
    }
    Some((c, answer))
}

fn get_values_empty(ctx: &Ctx, o: &mut Out) {
    let Some((c, answer)) = get_values_query(ctx, o, b"") else {
        return;
    };
    if let Some(a) = answer {
        if a.is_empty() {
            o.pass(
                "FCGI-4.1-3",
                "an empty query got an empty GET_VALUES_RESULT",
            );
        } else {
            o.info(
                "FCGI-4.1-3",
                format!("an empty query got {} bytes of values", a.len()),
            );
        }
    }
    c.audit(o);
}

fn get_values_unknown_only(ctx: &Ctx, o: &mut Out) {
    let mut q = Vec::new();
    encode_pair(b"PORTICO_NOPE", b"", &mut q);
    encode_pair(b"FCGI_NOT_A_VARIABLE", b"", &mut q);
    let Some((c, answer)) = get_values_query(ctx, o, &q) else {
        return;
    };
    if let Some(a) = answer {
        o.pass("FCGI-4.1-3", "answered a query of unknown names only");
        if a.is_empty() {
            o.pass("FCGI-4.1-4", "both unknown names left out");
        } else {
            o.broken(
                "FCGI-4.1-4",
                format!("answered unknown names: {:?}", String::from_utf8_lossy(&a)),
            );
        }
    }
    c.audit(o);
}

fn get_values_four_byte(ctx: &Ctx, o: &mut Out) {
    let mut q = Vec::new();
    for n in [MAX_CONNS, MAX_REQS, MPXS_CONNS] {
        pair_forms(n, b"", true, true, &mut q);
    }
    let Some((c, answer)) = get_values_query(ctx, o, &q) else {
        return;
    };
    if let Some(a) = answer {
        let names: Vec<&[u8]> = NameValues::new(&a)
            .filter_map(Result::ok)
            .map(|(n, _)| n)
            .collect();
        if names.contains(&MPXS_CONNS) || names.contains(&MAX_CONNS) {
            o.pass(
                "FCGI-3.4-4",
                "names with four-byte lengths of 14/13/15 were understood",
            );
        } else {
            o.broken(
                "FCGI-3.4-4",
                "a query with four-byte name lengths was answered without the names",
            );
        }
    }
    c.audit(o);
}

fn get_values_mid_request(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 1, &mut b);
    ctx.get_params(1, &mut b);
    client::encode_get_values(&[MPXS_CONNS], &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let d = c.deadline;
    let out = c.pump(d, &move |c: &Conv| {
        c.first(RecordType::GET_VALUES_RESULT, from).is_some() && c.end_rec(1, from).is_some()
    });
    let gv = c.first(RecordType::GET_VALUES_RESULT, from).is_some();
    let ended = c.end_rec(1, from).is_some();
    match (gv, ended) {
        (true, true) => {
            o.pass(
                "FCGI-4.1-6",
                "GET_VALUES answered while request 1 was active; the request completed",
            );
        }
        (false, _) => o.broken(
            "FCGI-4.1-6",
            format!(
                "no GET_VALUES_RESULT for a GET_VALUES sent while request 1 was active ({})",
                c.why(out)
            ),
        ),
        (true, false) => o.broken(
            "FCGI-4.1-6",
            format!(
                "request 1 did not complete after a GET_VALUES in its middle ({})",
                c.why(out)
            ),
        ),
    }
    c.audit(o);
}

fn get_values_then_request(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut q = Vec::new();
    client::encode_get_values(&[MPXS_CONNS], &mut q);
    let from = c.send(&q);
    let out = c.wait_type(RecordType::GET_VALUES_RESULT, from);
    if out != Outcome::Done {
        o.broken(
            "FCGI-4.1-3",
            format!("no GET_VALUES_RESULT ({})", c.why(out)),
        );
        c.audit(o);
        return;
    }
    let from = c.send(&ctx.get(1, false));
    let out = c.wait_end(1, from);
    if out == Outcome::Eof && c.count_for(1, from) == 0 {
        o.info(
            "FCGI-3.5-1",
            "closed the connection after GET_VALUES_RESULT, so a request cannot follow on it (RW-7)",
        );
    } else if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-4.1-6",
        "request after GET_VALUES",
    ) {
        same_status(
            o,
            "FCGI-4.1-6",
            &r,
            ctx.base_get,
            "request after GET_VALUES",
        );
    }
    c.audit(o);
}

fn unknown_type(ctx: &Ctx, o: &mut Out, t: u8, content: &[u8], pad: u8, then_request: bool) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    raw(RecordType(t), 0, content, pad, &mut b);
    let from = c.send(&b);
    let out = c.wait_type(RecordType::UNKNOWN_TYPE, from);
    match c.first(RecordType::UNKNOWN_TYPE, from) {
        None => o.broken(
            "FCGI-4.2-1",
            format!("no FCGI_UNKNOWN_TYPE reply to type {t} ({})", c.why(out)),
        ),
        Some(r) => {
            let echoed = r.content.first().copied();
            if echoed == Some(t) {
                o.pass(
                    "FCGI-4.2-1",
                    format!("UNKNOWN_TYPE {{{t}}} for management type {t}"),
                );
            } else {
                o.broken(
                    "FCGI-4.2-1",
                    format!("UNKNOWN_TYPE names type {}, not {t}", opt(echoed)),
                );
            }
            if r.content.len() == 8 {
                o.pass("FCGI-4.2-2", "UNKNOWN_TYPE body is 8 bytes");
                if r.content
                    .get(1..)
                    .is_some_and(|b| b.iter().any(|&x| x != 0))
                {
                    o.info("FCGI-AMB-1", "UNKNOWN_TYPE reserved bytes are not zero");
                }
            }
            let len = 8 + r.content.len();
            if len == 16 {
                o.pass(
                    "FCGI-8-2",
                    "UNKNOWN_TYPE record is 16 bytes without padding",
                );
            } else {
                o.broken("FCGI-8-2", format!("UNKNOWN_TYPE record is {len} bytes"));
            }
        }
    }
    if then_request && out == Outcome::Done {
        let from = c.send(&ctx.get(1, false));
        let out = c.wait_end(1, from);
        if c.resp(1, from).end.is_some() {
            o.pass(
                "FCGI-4.2-3",
                "the connection served a request after the unknown type",
            );
        } else {
            o.info(
                "FCGI-4.2-3",
                format!("no request served after the unknown type ({})", c.why(out)),
            );
        }
    }
    c.audit(o);
}

fn unknown_type_0(ctx: &Ctx, o: &mut Out) {
    unknown_type(ctx, o, 0, b"", 0, false);
}

fn unknown_type_12(ctx: &Ctx, o: &mut Out) {
    unknown_type(ctx, o, 12, b"", 0, false);
}

fn unknown_type_200(ctx: &Ctx, o: &mut Out) {
    unknown_type(ctx, o, 200, b"", 0, true);
}

fn unknown_type_255(ctx: &Ctx, o: &mut Out) {
    unknown_type(ctx, o, 255, b"", 0, false);
}

fn unknown_type_content(ctx: &Ctx, o: &mut Out) {
    unknown_type(ctx, o, 100, b"twenty bytes of data", 13, false);
}

fn unknown_type_request_id(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    ctx.get_params(1, &mut b);
    raw(RecordType(200), 1, b"x", 7, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let replied = c.first(RecordType::UNKNOWN_TYPE, from).is_some();
    let served = c.resp(1, from).end.is_some();
    o.info(
        "FCGI-AMB-3",
        format!(
            "type 200 with request ID 1 inside a request: {}{}",
            if served {
                "the request completed"
            } else {
                "the request did not complete"
            },
            if replied {
                ", and UNKNOWN_TYPE was sent"
            } else if served {
                ", the record was ignored"
            } else {
                ""
            }
        ),
    );
    if !served {
        o.info("FCGI-AMB-3", c.why(out));
    }
    c.audit(o);
}

// --- the plain request and the response format -----------------------------------------------

fn responder_get(ctx: &Ctx, o: &mut Out) -> Option<u16> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let from = c.send(&ctx.get(1, false));
    let out = c.wait_end(1, from);
    let r = answered(o, &c, 1, from, out, "FCGI-5.5-1", "plain GET request");
    let status = r.as_ref().and_then(Resp::status);
    if let Some(r) = &r {
        o.pass("FCGI-5.5-1", "END_REQUEST received");
        o.pass("FCGI-6.2-7", "protocolStatus REQUEST_COMPLETE");
        if !r.stdout.is_empty() {
            o.pass("FCGI-6.2-5", format!("{} bytes of STDOUT", r.stdout.len()));
        } else {
            o.info("FCGI-6.2-5", "no STDOUT data (an empty response)");
        }
        if r.stdout_end {
            o.pass("FCGI-6.1-7", "STDOUT ended by an empty record");
            o.pass("FCGI-3.3-16", "streams terminated");
        }
        o.pass("FCGI-3.3-2", "records framed as header + content + padding");
        o.pass("FCGI-3.3-3", "version 1");
        o.pass("FCGI-5.5-2", "8-byte END_REQUEST body");
        match status {
            Some(s) => o.pass(
                "FCGI-B-1",
                format!("STDOUT, empty STDOUT, END_REQUEST; CGI status {s}"),
            ),
            None => o.info("FCGI-B-1", "STDOUT holds no complete CGI response head"),
        }
        if !r.stderr.is_empty() {
            o.info(
                "FCGI-6.1-5",
                format!(
                    "STDERR: {:?}",
                    String::from_utf8_lossy(r.stderr.get(..200).unwrap_or(&r.stderr))
                ),
            );
        }
    }
    c.audit(o);
    status
}

fn responder_post(ctx: &Ctx, o: &mut Out) -> Option<u16> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let from = c.send(&ctx.post(1, false, b"name=portico&lang=rust&n=42"));
    let out = c.wait_end(1, from);
    let r = answered(o, &c, 1, from, out, "FCGI-5.5-1", "POST request");
    let status = r.as_ref().and_then(Resp::status);
    if let Some(r) = &r {
        o.pass("FCGI-5.5-1", "END_REQUEST received");
        o.pass(
            "FCGI-6.2-5",
            format!(
                "{} bytes of STDOUT, CGI status {}",
                r.stdout.len(),
                status.map_or_else(|| "none".into(), |s| s.to_string())
            ),
        );
        o.pass("FCGI-6.2-7", "protocolStatus REQUEST_COMPLETE");
    }
    c.audit(o);
    status
}

fn alignment(ctx: &Ctx, o: &mut Out) {
    let mut n = 0;
    for body in [None, Some(&b"name=portico"[..])] {
        let Some(mut c) = ctx.open(o, Duration::ZERO) else {
            return;
        };
        let b = match body {
            None => ctx.get(1, false),
            Some(body) => ctx.post(1, false, body),
        };
        let from = c.send(&b);
        c.wait_end(1, from);
        n += c.recs.len();
        c.audit(o);
    }
    if n == 0 {
        o.info("FCGI-3.3-7", "no records received to check");
    } else {
        o.pass(
            "FCGI-3.3-7",
            format!("all {n} records are multiples of 8 bytes long"),
        );
    }
}

fn app_record_types(ctx: &Ctx, o: &mut Out) {
    let mut seen = BTreeSet::new();
    let mut stderr = false;
    for kind in 0..2 {
        let Some(mut c) = ctx.open(o, Duration::ZERO) else {
            return;
        };
        if kind == 0 {
            let from = c.send(&ctx.post(1, false, b"x=1"));
            c.wait_end(1, from);
            stderr |= !c.resp(1, from).stderr.is_empty();
        } else {
            let mut b = Vec::new();
            client::encode_get_values(&[MPXS_CONNS], &mut b);
            raw(RecordType(200), 0, b"", 0, &mut b);
            let from = c.send(&b);
            let d = c.deadline;
            c.pump(d, &move |c: &Conv| {
                c.first(RecordType::GET_VALUES_RESULT, from).is_some()
                    && c.first(RecordType::UNKNOWN_TYPE, from).is_some()
            });
        }
        seen.extend(c.recs.iter().map(|r| r.rec.header.record_type.0));
        c.audit(o);
    }
    o.pass(
        "FCGI-A-1",
        format!("record types received: {seen:?} (application types only)"),
    );
    o.pass(
        "FCGI-A-2",
        "management types with request ID 0, application types with nonzero IDs",
    );
    o.pass("FCGI-6.1-3", "nothing after END_REQUEST");
    if stderr {
        o.pass("FCGI-6.1-6", "STDERR used and terminated");
    } else {
        o.pass("FCGI-6.1-6", "no STDERR data");
    }
}

fn end_request_fields(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&ctx.get(1, false));
    let out = c.wait_end(1, from);
    match c.end_rec(1, from) {
        None => o.broken("FCGI-5.5-1", format!("no END_REQUEST ({})", c.why(out))),
        Some(r) => {
            let b = r.content.clone();
            let h = r.header;
            if b.len() == 8 {
                o.pass("FCGI-5.5-2", "END_REQUEST body is 8 bytes");
            }
            if usize::from(h.padding_length) + b.len() == 8 {
                o.pass("FCGI-8-2", "END_REQUEST record is 16 bytes");
            } else {
                o.info(
                    "FCGI-8-2",
                    format!(
                        "END_REQUEST record is {} bytes with padding",
                        8 + b.len() + usize::from(h.padding_length)
                    ),
                );
            }
            if let Some(app) = b.get(..4).and_then(|x| x.try_into().ok()) {
                o.info(
                    "FCGI-5.5-3",
                    format!("appStatus {}", u32::from_be_bytes(app)),
                );
            }
            match b.get(4) {
                Some(0) => o.pass("FCGI-6.2-7", "protocolStatus 0 (REQUEST_COMPLETE)"),
                Some(s) => o.broken("FCGI-6.2-7", format!("protocolStatus {s}")),
                None => {}
            }
            if h.reserved == 0 && b.get(5..).is_none_or(|x| x.iter().all(|&y| y == 0)) {
                o.pass("FCGI-AMB-1", "reserved bytes are zero");
            }
        }
    }
    c.audit(o);
}

fn stream_termination(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&ctx.post(1, false, b"q=stream"));
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    if r.end.is_none() {
        o.broken("FCGI-5.5-1", format!("no END_REQUEST ({})", c.why(out)));
    } else {
        let empties = c
            .recs
            .iter()
            .filter(|x| {
                x.rec.header.request_id == 1
                    && x.rec.header.record_type == RecordType::STDOUT
                    && x.rec.content.is_empty()
            })
            .count();
        if r.stdout_end && empties == 1 {
            o.pass(
                "FCGI-6.1-7",
                "STDOUT ended by one empty record before END_REQUEST",
            );
            o.pass(
                "FCGI-3.3-16",
                "one terminator per stream, before END_REQUEST",
            );
        }
        match (r.stderr.is_empty(), r.stderr_end) {
            (true, false) => o.pass("FCGI-6.1-6", "no STDERR records"),
            (true, true) => o.pass("FCGI-6.1-6", "a single empty STDERR record"),
            (false, true) => o.pass("FCGI-6.1-6", "STDERR data, then its empty record"),
            (false, false) => {}
        }
    }
    c.audit(o);
}

fn request_with_id(ctx: &Ctx, o: &mut Out, id: u16) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&ctx.get(id, false));
    let out = c.wait_end(id, from);
    if let Some(r) = answered(o, &c, id, from, out, "FCGI-3.3-9", &format!("request {id}")) {
        o.pass(
            "FCGI-3.3-9",
            format!("request {id} answered under its own ID"),
        );
        same_status(o, "FCGI-3.3-8", &r, ctx.base_get, &format!("request {id}"));
    }
    c.audit(o);
}

fn request_id_256(ctx: &Ctx, o: &mut Out) {
    request_with_id(ctx, o, 256);
}

fn request_id_65535(ctx: &Ctx, o: &mut Out) {
    request_with_id(ctx, o, 65535);
}

// --- padding and record boundaries ------------------------------------------------------------

/// A POST whose records carry the given paddings, in order: BEGIN gets none; PARAMS is cut
/// into at most `params_pieces` records at pair boundaries (so that only padding is tested,
/// not pairs split across records), then its terminator; STDIN takes the rest of the paddings
/// (data records, then the terminator).
fn padded_post(ctx: &Ctx, pads: &[u8], params_pieces: usize) -> Vec<u8> {
    let body = b"padding=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV";
    let (params, offsets) = pairs_offsets(&ctx.params("POST", Some(body.len())));
    let inner: Vec<usize> = offsets.into_iter().filter(|&o| o > 0).collect();
    let pieces = params_pieces.clamp(1, inner.len() + 1);
    let cuts: Vec<usize> = (1..pieces)
        .filter_map(|i| inner.get(i * inner.len() / pieces))
        .copied()
        .collect();
    let mut pads = pads.iter().copied();
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    let mut at = 0;
    for c in cuts.into_iter().chain(std::iter::once(params.len())) {
        if let Some(piece) = params.get(at..c)
            && !piece.is_empty()
        {
            raw(
                RecordType::PARAMS,
                1,
                piece,
                pads.next().unwrap_or(0),
                &mut b,
            );
        }
        at = c;
    }
    raw(RecordType::PARAMS, 1, b"", pads.next().unwrap_or(0), &mut b);
    let rest: Vec<u8> = pads.collect();
    let data_records = rest.len().saturating_sub(1).max(1);
    let mut it = rest.into_iter();
    for piece in split_exact(body, data_records) {
        raw(RecordType::STDIN, 1, piece, it.next().unwrap_or(0), &mut b);
    }
    raw(RecordType::STDIN, 1, b"", it.next().unwrap_or(0), &mut b);
    b
}

fn padded_check(ctx: &Ctx, o: &mut Out, pads: &[u8], what: &str) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&padded_post(ctx, pads, 16));
    let out = c.wait_end(1, from);
    if let Some(r) = answered(o, &c, 1, from, out, "FCGI-3.3-6", what) {
        same_status(o, "FCGI-3.3-6", &r, ctx.base_post, what);
    }
    c.audit(o);
}

fn padding_batch(ctx: &Ctx, o: &mut Out, base: u8) {
    let pads: Vec<u8> = (0..64).map(|i| base.wrapping_add(i)).collect();
    padded_check(
        ctx,
        o,
        &pads,
        &format!(
            "PARAMS and STDIN records padded with {base}..={} junk bytes",
            base.wrapping_add(63)
        ),
    );
}

fn padding_0(ctx: &Ctx, o: &mut Out) {
    padding_batch(ctx, o, 0);
}

fn padding_64(ctx: &Ctx, o: &mut Out) {
    padding_batch(ctx, o, 64);
}

fn padding_128(ctx: &Ctx, o: &mut Out) {
    padding_batch(ctx, o, 128);
}

fn padding_192(ctx: &Ctx, o: &mut Out) {
    padding_batch(ctx, o, 192);
}

fn random_padding(ctx: &Ctx, o: &mut Out) {
    let mut x: u32 = 0x2545_F491;
    let pads: Vec<u8> = (0..24)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_be_bytes()[0]
        })
        .collect();
    o.pass(
        "FCGI-3.3-5",
        "the probe padded every record (0-255 junk bytes)",
    );
    padded_check(ctx, o, &pads, "records with random junk padding");
}

fn padding_terminators(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let body = b"terminators=padded";
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    raw(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(body.len()))),
        0,
        &mut b,
    );
    raw(RecordType::PARAMS, 1, b"", 7, &mut b);
    raw(RecordType::STDIN, 1, body, 0, &mut b);
    raw(RecordType::STDIN, 1, b"", 255, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let what = "empty PARAMS/STDIN records padded with 7 and 255 bytes";
    if let Some(r) = answered(o, &c, 1, from, out, "FCGI-3.3-6", what) {
        same_status(o, "FCGI-3.3-6", &r, ctx.base_post, what);
        o.pass("FCGI-3.3-16", "padded empty records ended their streams");
    }
    c.audit(o);
}

/// Where to cut a PARAMS stream, given its bytes and the offset of each pair.
type Cuts<'a> = &'a dyn Fn(&[u8], &[usize]) -> Vec<usize>;

/// A GET whose PARAMS stream is cut as `cut` says.
fn params_cut_check(ctx: &Ctx, o: &mut Out, clause: &str, what: &str, cut: Cuts<'_>) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let (params, offsets) = pairs_offsets(&ctx.params("GET", None));
    let cuts = cut(&params, &offsets);
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream_cut(RecordType::PARAMS, 1, &params, &cuts, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(o, &c, 1, from, out, clause, what) {
        same_status(o, clause, &r, ctx.base_get, what);
    }
    c.audit(o);
}

fn params_split_1(ctx: &Ctx, o: &mut Out) {
    params_cut_check(
        ctx,
        o,
        "FCGI-5.2-3",
        "PARAMS in one-byte records",
        &|p, _| (1..p.len()).collect(),
    );
    o.pass("FCGI-3.3-15", "record boundaries carried no meaning");
}

fn params_split_3(ctx: &Ctx, o: &mut Out) {
    params_cut_check(
        ctx,
        o,
        "FCGI-5.2-3",
        "PARAMS in three-byte records",
        &|p, _| (1..p.len()).filter(|i| i % 3 == 0).collect(),
    );
}

fn params_split_in_length(ctx: &Ctx, o: &mut Out) {
    params_cut_check(
        ctx,
        o,
        "FCGI-5.2-3",
        "PARAMS records cut inside one- and four-byte length fields",
        &|p, offsets| {
            let mut cuts = Vec::new();
            for &off in offsets {
                // Between name and value length, and inside a four-byte length.
                cuts.push(off + 1);
                if p.get(off + 1).is_some_and(|&b| b & 0x80 != 0) {
                    cuts.extend([off + 2, off + 3, off + 4]);
                }
            }
            cuts
        },
    );
}

fn params_split_in_name(ctx: &Ctx, o: &mut Out) {
    params_cut_check(
        ctx,
        o,
        "FCGI-5.2-3",
        "PARAMS records cut in the middle of every name",
        &|p, offsets| {
            offsets
                .iter()
                .filter_map(|&off| {
                    let n = *p.get(off)?;
                    let len_bytes = if n & 0x80 != 0 { 4 } else { 1 };
                    let v = *p.get(off + len_bytes)?;
                    let vlen_bytes = if v & 0x80 != 0 { 4 } else { 1 };
                    Some(off + len_bytes + vlen_bytes + usize::from(n & 0x7F) / 2)
                })
                .collect()
        },
    );
    o.pass(
        "FCGI-B-2",
        "a name split across PARAMS records was reassembled",
    );
}

fn stdin_cut_check(ctx: &Ctx, o: &mut Out, what: &str, sizes: &dyn Fn(usize) -> usize) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let body: Vec<u8> = b"field="
        .iter()
        .copied()
        .chain((0..250).map(|i| b'a' + (i % 26) as u8))
        .collect();
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(body.len()))),
        &mut b,
    );
    let mut cuts = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < body.len() {
        at += sizes(i).max(1);
        i += 1;
        cuts.push(at);
    }
    stream_cut(RecordType::STDIN, 1, &body, &cuts, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(o, &c, 1, from, out, "FCGI-3.3-15", what) {
        same_status(o, "FCGI-3.3-15", &r, ctx.base_post, what);
    }
    c.audit(o);
}

fn stdin_split_1(ctx: &Ctx, o: &mut Out) {
    stdin_cut_check(ctx, o, "STDIN in one-byte records", &|_| 1);
}

fn stdin_split_uneven(ctx: &Ctx, o: &mut Out) {
    stdin_cut_check(
        ctx,
        o,
        "STDIN in records of 1, 2, 3, 5, 8, 13 … bytes",
        &|i| [1, 2, 3, 5, 8, 13, 21, 34, 55, 89][i % 10],
    );
}

fn stdin_max_records(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut body = b"big=".to_vec();
    body.resize(2 * 65535 + 1000, b'x');
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(body.len()))),
        &mut b,
    );
    for chunk in body.chunks(65535) {
        raw(RecordType::STDIN, 1, chunk, 255, &mut b);
    }
    raw(RecordType::STDIN, 1, b"", 0, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let what = "STDIN records of 65535 bytes with 255 bytes of padding";
    if let Some(r) = answered(o, &c, 1, from, out, "FCGI-3.3-6", what) {
        same_status(o, "FCGI-3.3-6", &r, ctx.base_post, what);
        o.pass(
            "FCGI-3.3-4",
            "records of the maximum length (65798 bytes) accepted",
        );
    }
    c.audit(o);
}

// --- name-value pairs -------------------------------------------------------------------------

/// A GET whose PARAMS content is `content`.
fn params_content_check(
    ctx: &Ctx,
    o: &mut Out,
    content: &[u8],
    clause: &str,
    what: &str,
) -> Option<Resp> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(RecordType::PARAMS, 1, content, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let r = answered(o, &c, 1, from, out, clause, what);
    if let Some(r) = &r {
        same_status(o, clause, r, ctx.base_get, what);
    }
    c.audit(o);
    r
}

/// The GET params with `first` in front.
fn params_with(ctx: &Ctx, first: Pairs) -> Pairs {
    let mut p = first;
    p.extend(ctx.params("GET", None));
    p
}

fn params_lengths(ctx: &Ctx, o: &mut Out) {
    let p = params_with(
        ctx,
        vec![
            (b"HTTP_X_PROBE_EMPTY".to_vec(), Vec::new()),
            (b"HTTP_X_PROBE_127".to_vec(), vec![b'a'; 127]),
            (b"HTTP_X_PROBE_128".to_vec(), vec![b'b'; 128]),
        ],
    );
    if params_content_check(
        ctx,
        o,
        &pairs_bytes(&p),
        "FCGI-5.2-3",
        "values of 0, 127 and 128 bytes",
    )
    .is_some()
    {
        o.pass(
            "FCGI-3.4-2",
            "one-byte lengths 0 and 127, four-byte length 128",
        );
        o.pass(
            "FCGI-3.4-3",
            "a 128-byte value in the four-byte form was read",
        );
    }
}

/// A case the application may refuse for its own limits (FCGI-AMB-5): INFO when it does.
fn params_limit_check(ctx: &Ctx, o: &mut Out, p: &Pairs, what: &str) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream_pairs(1, p, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    match (r.protocol_status(), r.status()) {
        (Some(0), s) if s == ctx.base_get || ctx.base_get.is_none() => o.pass(
            "FCGI-5.2-3",
            format!("{what}: answered as the plain request"),
        ),
        (Some(0), s) => o.info(
            "FCGI-AMB-5",
            format!(
                "{what}: answered with status {} (a limit of the application?)",
                opt(s)
            ),
        ),
        (Some(p), _) => o.info(
            "FCGI-AMB-5",
            format!("{what}: rejected with protocolStatus {p}"),
        ),
        (None, _) => o.info("FCGI-AMB-5", format!("{what}: not served ({})", c.why(out))),
    }
    c.audit(o);
}

fn params_value_65536(ctx: &Ctx, o: &mut Out) {
    let p = params_with(ctx, vec![(b"HTTP_X_PROBE_BIG".to_vec(), vec![b'c'; 65536])]);
    params_limit_check(ctx, o, &p, "a 65536-byte value spanning two PARAMS records");
    o.pass(
        "FCGI-3.4-3",
        "the probe sent the 65536-byte length in the four-byte form",
    );
}

fn params_large(ctx: &Ctx, o: &mut Out) {
    let big: Pairs = (0..100)
        .map(|i| {
            (
                format!("HTTP_X_PROBE_{i:03}").into_bytes(),
                vec![b'v'; 1024],
            )
        })
        .collect();
    let p = params_with(ctx, big);
    params_limit_check(ctx, o, &p, "a 100 KiB PARAMS block in two records");
}

fn params_many(ctx: &Ctx, o: &mut Out) {
    let many: Pairs = (0..2000)
        .map(|i| (format!("HTTP_X_P{i}").into_bytes(), b"1".to_vec()))
        .collect();
    let p = params_with(ctx, many);
    params_limit_check(ctx, o, &p, "2000 small params");
}

fn params_four_byte(ctx: &Ctx, o: &mut Out, long_name: bool, long_value: bool, what: &str) {
    let mut content = Vec::new();
    let mut p = ctx.params("GET", None);
    // FCGI-T-5: the four-byte length of a five-byte name, first, so a misreading shifts all.
    p.insert(0, (b"HTTPS".to_vec(), Vec::new()));
    for (n, v) in &p {
        pair_forms(n, v, long_name, long_value, &mut content);
    }
    if params_content_check(ctx, o, &content, "FCGI-3.4-4", what).is_some() {
        o.info(
            "FCGI-AMB-4",
            "the four-byte form of short lengths is accepted",
        );
    }
}

fn params_four_byte_name(ctx: &Ctx, o: &mut Out) {
    params_four_byte(
        ctx,
        o,
        true,
        false,
        "four-byte name lengths (a 5-byte name first)",
    );
}

fn params_four_byte_value(ctx: &Ctx, o: &mut Out) {
    params_four_byte(
        ctx,
        o,
        false,
        true,
        "four-byte value lengths for short values",
    );
}

fn params_four_byte_all(ctx: &Ctx, o: &mut Out) {
    params_four_byte(ctx, o, true, true, "every length in the four-byte form");
}

fn params_empty(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(RecordType::PARAMS, 1, b"", &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    match r.end {
        Some(_) => o.pass(
            "FCGI-5.5-1",
            format!(
                "a request with no params ended (protocolStatus {}, status {})",
                opt(r.protocol_status()),
                opt(r.status())
            ),
        ),
        None => o.broken(
            "FCGI-5.5-1",
            format!(
                "a request with an empty PARAMS stream got no END_REQUEST ({})",
                c.why(out)
            ),
        ),
    }
    c.audit(o);
}

fn params_binary(ctx: &Ctx, o: &mut Out) {
    let value: Vec<u8> = (1..=255u8).collect();
    let p = params_with(ctx, vec![(b"HTTP_X_PROBE_BYTES".to_vec(), value)]);
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(RecordType::PARAMS, 1, &pairs_bytes(&p), &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    if r.protocol_status() == Some(0) {
        o.pass("FCGI-3.4-5", "a value holding bytes 1-255 was accepted");
    } else {
        o.info(
            "FCGI-3.4-5",
            format!("a value holding bytes 1-255: not served ({})", c.why(out)),
        );
    }
    c.audit(o);
}

fn params_reordered(ctx: &Ctx, o: &mut Out) {
    let mut p = ctx.params("GET", None);
    p.reverse();
    params_content_check(
        ctx,
        o,
        &pairs_bytes(&p),
        "FCGI-5.2-2",
        "params in reverse order",
    );
}

fn params_oversize_length(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut content = pairs_bytes(&ctx.params("GET", None));
    // A pair announcing a 2 GiB value, cut short by the end of the stream.
    content.extend_from_slice(b"\x05\xff\xff\xff\xffHTTPSabc");
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(RecordType::PARAMS, 1, &content, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    let what = match (r.protocol_status(), out) {
        (Some(s), _) => format!(
            "ended the request (protocolStatus {s}, status {})",
            opt(r.status())
        ),
        (None, Outcome::Eof) => "closed the connection".into(),
        (None, _) => format!("gave no answer within {}", secs(c.limit)),
    };
    o.info(
        "FCGI-AMB-5",
        format!("a pair announcing a 2147483647-byte value, truncated: {what}"),
    );
    c.audit(o);
}

// --- connection lifetime ----------------------------------------------------------------------

fn keep_conn_clear(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&ctx.get(1, false));
    let out = c.wait_end(1, from);
    if answered(o, &c, 1, from, out, "FCGI-5.5-1", "GET without KEEP_CONN").is_some() {
        match c.wait_eof() {
            Outcome::Eof => o.pass(
                "FCGI-5.1-5",
                "closed the connection after the request without KEEP_CONN",
            ),
            _ => o.broken(
                "FCGI-5.1-5",
                format!(
                    "KEEP_CONN clear, but the connection was still open {} after END_REQUEST",
                    secs(c.limit)
                ),
            ),
        }
    }
    c.audit(o);
}

fn keep_conn_set(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(150)) else {
        return;
    };
    let from = c.send(&ctx.get(1, true));
    let out = c.wait_end(1, from);
    if answered(o, &c, 1, from, out, "FCGI-5.5-1", "GET with KEEP_CONN").is_some() {
        if c.linger(Duration::from_millis(100)) {
            o.broken(
                "FCGI-5.1-6",
                "closed the connection after a request with KEEP_CONN set",
            );
        } else {
            let from = c.send(&ctx.get(1, true));
            let out = c.wait_end(1, from);
            if let Some(r) = answered_again(o, &c, 1, from, out, "FCGI-5.5-1", "second request") {
                o.pass(
                    "FCGI-5.1-6",
                    "the connection stayed open and served a second request",
                );
                same_status(o, "FCGI-3.3-8", &r, ctx.base_get, "request ID 1 reused");
            }
        }
    }
    c.audit(o);
}

fn keep_conn_sequence(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let plan: [(u16, bool); 4] = [(1, true), (2, true), (1, true), (3, false)];
    for (n, &(id, keep)) in plan.iter().enumerate() {
        let from = c.send(&ctx.get(id, keep));
        let out = c.wait_end(id, from);
        let what = format!("request {} (ID {id})", n + 1);
        let r = if n == 0 {
            answered(o, &c, id, from, out, "FCGI-5.5-1", &what)
        } else {
            answered_again(o, &c, id, from, out, "FCGI-5.5-1", &what)
        };
        if r.is_none() {
            c.audit(o);
            return;
        }
    }
    o.pass(
        "FCGI-3.3-8",
        "IDs 1, 2, 1, 3 served one after another on one connection",
    );
    o.pass(
        "FCGI-5.1-6",
        "the connection stayed open across three KEEP_CONN requests",
    );
    match c.wait_eof() {
        Outcome::Eof => o.pass(
            "FCGI-5.1-5",
            "closed after the last request, which had KEEP_CONN clear",
        ),
        _ => o.broken(
            "FCGI-5.1-5",
            "the last request had KEEP_CONN clear, but the connection stayed open",
        ),
    }
    c.audit(o);
}

fn get_with_flags(ctx: &Ctx, id: u16, flags: u8) -> Vec<u8> {
    let mut b = Vec::new();
    begin(id, 1, flags, &mut b);
    stream(
        RecordType::PARAMS,
        id,
        &pairs_bytes(&ctx.params("GET", None)),
        &mut b,
    );
    stream(RecordType::STDIN, id, b"", &mut b);
    b
}

fn keep_conn_other_flags(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&get_with_flags(ctx, 1, 0xFE));
    let out = c.wait_end(1, from);
    if answered(o, &c, 1, from, out, "FCGI-5.5-1", "GET with flags 0xFE").is_some() {
        o.pass(
            "FCGI-5.1-4",
            "undefined flag bits did not disturb the request",
        );
        match c.wait_eof() {
            Outcome::Eof => o.pass(
                "FCGI-5.1-5",
                "flags 0xFE (KEEP_CONN bit clear): the connection was closed",
            ),
            _ => o.broken(
                "FCGI-5.1-5",
                "flags 0xFE has the KEEP_CONN bit clear, but the connection stayed open",
            ),
        }
    }
    c.audit(o);
}

fn keep_conn_all_flags(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(150)) else {
        return;
    };
    let from = c.send(&get_with_flags(ctx, 1, 0xFF));
    let out = c.wait_end(1, from);
    if answered(o, &c, 1, from, out, "FCGI-5.5-1", "GET with flags 0xFF").is_some() {
        if c.linger(Duration::from_millis(100)) {
            o.broken(
                "FCGI-5.1-6",
                "flags 0xFF (KEEP_CONN set): the connection was closed",
            );
        } else {
            o.pass("FCGI-5.1-6", "flags 0xFF: the connection stayed open");
            o.pass("FCGI-5.1-4", "only the KEEP_CONN bit was interpreted");
        }
    }
    c.audit(o);
}

// --- multiplexing -----------------------------------------------------------------------------

/// BEGIN for every ID, then PARAMS records interleaved, then STDIN ends (FCGI-B-4 style).
fn interleaved(ctx: &Ctx, ids: &[u16]) -> Vec<u8> {
    let params = pairs_bytes(&ctx.params("GET", None));
    let pieces = split_exact(&params, 3);
    let mut b = Vec::new();
    for &id in ids {
        begin(id, 1, 1, &mut b);
    }
    for piece in &pieces {
        for &id in ids {
            encode_record(RecordType::PARAMS, id, piece, &mut b);
        }
    }
    for &id in ids {
        encode_record(RecordType::PARAMS, id, b"", &mut b);
    }
    for &id in ids.iter().rev() {
        encode_record(RecordType::STDIN, id, b"", &mut b);
    }
    b
}

fn mpx_interleaved(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&interleaved(ctx, &[1, 2]));
    let out = c.wait_ends(&[1, 2], from);
    let (r1, r2) = (c.resp(1, from), c.resp(2, from));
    let declared = ctx.caps.mpxs;
    let done = |r: &Resp| r.protocol_status() == Some(0);
    match (r1.protocol_status(), r2.protocol_status()) {
        (Some(0), Some(0)) => {
            o.info(
                "FCGI-6.1-4",
                "two interleaved requests on one connection both completed",
            );
            if declared == Some(false) {
                o.info(
                    "FCGI-4.1-5",
                    "multiplexes although GET_VALUES said FCGI_MPXS_CONNS=0",
                );
            } else {
                o.pass("FCGI-4.1-3", "behaviour matches FCGI_MPXS_CONNS");
            }
            o.pass("FCGI-B-4", "requests 1 and 2 answered on one connection");
        }
        (_, Some(1)) => {
            o.pass("FCGI-5.5-5", "request 2 rejected with CANT_MPX_CONN");
            if declared == Some(true) {
                o.broken(
                    "FCGI-4.1-3",
                    "GET_VALUES said FCGI_MPXS_CONNS=1, but a second concurrent request was rejected with CANT_MPX_CONN",
                );
            } else {
                o.pass("FCGI-4.1-3", "rejection matches FCGI_MPXS_CONNS=0");
            }
            if done(&r1) {
                o.pass("FCGI-5.5-1", "request 1 completed after the rejection");
            } else {
                o.broken(
                    "FCGI-5.5-1",
                    format!("request 1 did not complete ({})", c.why(out)),
                );
            }
        }
        (s1, s2) => {
            let seen = format!(
                "request 1: {}, request 2: {} ({})",
                s1.map_or_else(
                    || "no END_REQUEST".into(),
                    |s| format!("protocolStatus {s}")
                ),
                s2.map_or_else(
                    || "no END_REQUEST".into(),
                    |s| format!("protocolStatus {s}")
                ),
                c.why(out)
            );
            if declared == Some(true) {
                o.broken(
                    "FCGI-4.1-3",
                    format!(
                        "GET_VALUES said FCGI_MPXS_CONNS=1, but interleaved requests failed: {seen}"
                    ),
                );
            } else if out == Outcome::Eof {
                o.broken(
                    "FCGI-5.5-5",
                    format!(
                        "closed the connection instead of END_REQUEST{{CANT_MPX_CONN}}: {seen}"
                    ),
                );
            } else {
                o.broken(
                    "FCGI-5.5-5",
                    format!(
                        "no END_REQUEST{{CANT_MPX_CONN}} for a second concurrent request: {seen}"
                    ),
                );
            }
        }
    }
    c.audit(o);
}

fn mpx_many(ctx: &Ctx, o: &mut Out) {
    if ctx.caps.mpxs != Some(true) {
        o.info(
            "FCGI-6.1-4",
            "not run: the application does not declare FCGI_MPXS_CONNS=1",
        );
        return;
    }
    let n = ctx.caps.max_reqs.map_or(8, |m| m.clamp(2, 8));
    let ids: Vec<u16> = (1..=u16::try_from(n).unwrap_or(8)).map(|i| i * 3).collect();
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&interleaved(ctx, &ids));
    let out = c.wait_ends(&ids, from);
    let mut failed = Vec::new();
    for &id in &ids {
        match c.resp(id, from).protocol_status() {
            Some(0) => {}
            Some(s) => failed.push(format!("{id}: protocolStatus {s}")),
            None => failed.push(format!("{id}: no END_REQUEST")),
        }
    }
    if failed.is_empty() {
        o.pass(
            "FCGI-4.1-3",
            format!(
                "{} interleaved requests all completed, as FCGI_MPXS_CONNS=1 says",
                ids.len()
            ),
        );
        o.info("FCGI-6.1-4", "records of different requests interleaved");
    } else {
        o.broken(
            "FCGI-4.1-3",
            format!(
                "FCGI_MPXS_CONNS=1, but of {} interleaved requests: {} ({})",
                ids.len(),
                failed.join(", "),
                c.why(out)
            ),
        );
    }
    c.audit(o);
}

fn mpx_reject_then_reuse(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&interleaved(ctx, &[1, 2]));
    let out = c.wait_ends(&[1, 2], from);
    let s2 = c.resp(2, from).protocol_status();
    if out != Outcome::Done {
        o.info(
            "FCGI-5.5-5",
            format!(
                "not run: the interleaved pair did not both end ({})",
                c.why(out)
            ),
        );
        c.audit(o);
        return;
    }
    let from = c.send(&ctx.get(2, true));
    let out = c.wait_end(2, from);
    let what = if s2 == Some(1) {
        "ID 2 again after its CANT_MPX_CONN"
    } else {
        "ID 2 again after the interleaved pair"
    };
    if let Some(r) = answered_again(o, &c, 2, from, out, "FCGI-5.5-1", what) {
        same_status(o, "FCGI-3.3-8", &r, ctx.base_get, what);
    }
    c.audit(o);
}

// --- roles ------------------------------------------------------------------------------------

fn unknown_role(ctx: &Ctx, o: &mut Out, role: u16) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, role, 0, &mut b);
    ctx.get_params(1, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    match c.resp(1, from).end.map(|e| e.status) {
        Some(Some(3)) => o.pass(
            "FCGI-5.5-7",
            format!("role {role}: END_REQUEST{{UNKNOWN_ROLE}}"),
        ),
        Some(s) => o.broken(
            "FCGI-5.5-7",
            format!(
                "role {role}: END_REQUEST protocolStatus {} instead of UNKNOWN_ROLE",
                opt(s)
            ),
        ),
        None => {
            o.broken(
                "FCGI-5.5-7",
                format!(
                    "role {role}: {} instead of END_REQUEST{{UNKNOWN_ROLE}}",
                    c.why(out)
                ),
            );
            if out == Outcome::Eof {
                o.info(
                    "FCGI-RW-12",
                    "closing the connection on an unknown role is what libfcgi and PHP do (RW-7)",
                );
            }
        }
    }
    c.audit(o);
}

fn unknown_role_99(ctx: &Ctx, o: &mut Out) {
    unknown_role(ctx, o, 99);
}

fn unknown_role_0(ctx: &Ctx, o: &mut Out) {
    unknown_role(ctx, o, 0);
}

fn unknown_role_65535(ctx: &Ctx, o: &mut Out) {
    unknown_role(ctx, o, 65535);
}

/// A request in another role; a clean UNKNOWN_ROLE is fine, a close is a SHOULD break.
fn role_request(ctx: &Ctx, o: &mut Out, b: &[u8], role: &str, on_timeout: &str) -> Option<Resp> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let from = c.send(b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    let result = match r.protocol_status() {
        Some(3) => {
            o.pass(
                "FCGI-5.5-7",
                format!("{role} not implemented: END_REQUEST{{UNKNOWN_ROLE}}"),
            );
            None
        }
        Some(0) => Some(r),
        Some(s) => {
            o.info(
                "FCGI-5.5-4",
                format!("{role}: END_REQUEST protocolStatus {s}"),
            );
            None
        }
        None if out == Outcome::Eof => {
            o.broken(
                "FCGI-5.5-7",
                format!(
                    "{role}: the connection was closed without END_REQUEST (UNKNOWN_ROLE if the role is not implemented)"
                ),
            );
            None
        }
        None => {
            o.info(on_timeout, format!("{role}: {}", c.why(out)));
            None
        }
    };
    c.audit(o);
    result
}

fn authorizer_params(ctx: &Ctx) -> Pairs {
    ctx.params("GET", None)
        .into_iter()
        .filter(|(n, _)| !client::AUTHORIZER_WITHHELD.contains(&n.as_slice()))
        .collect()
}

fn authorizer_with(ctx: &Ctx, o: &mut Out, stdin: Option<&[u8]>) {
    let p = authorizer_params(ctx);
    let b = ctx.request(1, Role::AUTHORIZER, false, &p, stdin, None);
    let label = if stdin.is_some() {
        "Authorizer (with an empty STDIN)"
    } else {
        "Authorizer (no STDIN, as Apache sends)"
    };
    let timeout_clause = if stdin.is_some() {
        "FCGI-6.3-4"
    } else {
        "FCGI-AMB-8"
    };
    if let Some(r) = role_request(ctx, o, &b, label, timeout_clause) {
        let head = r
            .stdout
            .split(|&b| b == b'\n')
            .take_while(|l| !l.is_empty() && *l != b"\r")
            .filter(|l| {
                l.len() > 9
                    && l.get(..9)
                        .is_some_and(|p| p.eq_ignore_ascii_case(b"variable-"))
            })
            .count();
        o.info(
            "FCGI-6.3-4",
            format!(
                "{label}: status {}, {head} Variable- header(s)",
                opt(r.status())
            ),
        );
        if head > 0 {
            o.info("FCGI-6.3-7", "the Authorizer passes Variable- headers");
        }
    }
}

fn authorizer(ctx: &Ctx, o: &mut Out) {
    authorizer_with(ctx, o, None);
}

fn authorizer_empty_stdin(ctx: &Ctx, o: &mut Out) {
    authorizer_with(ctx, o, Some(b""));
}

fn filter_request(ctx: &Ctx, data: &[u8], split: bool) -> Vec<u8> {
    let mut p = ctx.params("GET", None);
    p.push((b"FCGI_DATA_LAST_MOD".to_vec(), b"1700000000".to_vec()));
    p.push((
        b"FCGI_DATA_LENGTH".to_vec(),
        data.len().to_string().into_bytes(),
    ));
    if !split {
        return ctx.request(1, Role::FILTER, false, &p, Some(b""), Some(data));
    }
    let mut b = Vec::new();
    begin(1, 3, 0, &mut b);
    stream(RecordType::PARAMS, 1, &pairs_bytes(&p), &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    for (i, byte) in data.iter().enumerate() {
        raw(
            RecordType::DATA,
            1,
            std::slice::from_ref(byte),
            u8::try_from(i * 17 % 256).unwrap_or(0),
            &mut b,
        );
    }
    raw(RecordType::DATA, 1, b"", 3, &mut b);
    b
}

fn filter(ctx: &Ctx, o: &mut Out) {
    let b = filter_request(ctx, b"<p>a file to filter</p>\n", false);
    if let Some(r) = role_request(ctx, o, &b, "Filter", "FCGI-6.4-7") {
        o.pass(
            "FCGI-6.4-7",
            format!("Filter request completed (status {})", opt(r.status())),
        );
    }
}

fn filter_data_split(ctx: &Ctx, o: &mut Out) {
    let b = filter_request(ctx, b"<p>a file in one-byte records</p>\n", true);
    if let Some(r) = role_request(
        ctx,
        o,
        &b,
        "Filter, DATA in padded one-byte records",
        "FCGI-6.4-7",
    ) {
        o.pass(
            "FCGI-3.3-15",
            format!(
                "DATA split into one-byte records accepted (status {})",
                opt(r.status())
            ),
        );
    }
}

// --- aborts -----------------------------------------------------------------------------------

fn abort_before_params(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    client::encode_abort(1, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    match c.resp(1, from).end {
        Some(e) => o.pass(
            "FCGI-5.4-2",
            format!(
                "ABORT_REQUEST right after BEGIN_REQUEST: END_REQUEST (protocolStatus {})",
                opt(e.status)
            ),
        ),
        None => o.broken(
            "FCGI-5.4-2",
            format!(
                "no END_REQUEST for ABORT_REQUEST sent right after BEGIN_REQUEST ({})",
                c.why(out)
            ),
        ),
    }
    c.audit(o);
}

/// Starts a POST announcing 1 MiB, sends 40 KiB of it; returns the send mark.
fn start_upload(ctx: &Ctx, c: &mut Conv, keep: bool) -> u32 {
    let mut b = Vec::new();
    begin(1, 1, u8::from(keep), &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(1 << 20))),
        &mut b,
    );
    let part = vec![b'u'; 20 * 1024];
    encode_record(RecordType::STDIN, 1, &part, &mut b);
    encode_record(RecordType::STDIN, 1, &part, &mut b);
    c.send(&b)
}

/// Aborts request 1 mid-upload; `Some(true)` if END_REQUEST came, `None` if it ended before.
fn abort_upload(ctx: &Ctx, o: &mut Out, c: &mut Conv, keep: bool) -> Option<bool> {
    let from = start_upload(ctx, c, keep);
    c.linger(Duration::from_millis(100));
    if c.resp(1, from).end.is_some() {
        o.info(
            "FCGI-5.4-2",
            "the request ended before the abort was sent (the application did not wait for STDIN)",
        );
        return None;
    }
    if c.eof {
        o.broken(
            "FCGI-5.4-2",
            "the connection was closed during the upload, before the abort",
        );
        return Some(false);
    }
    let mut b = Vec::new();
    client::encode_abort(1, &mut b);
    let t0 = Instant::now();
    c.send(&b);
    let out = c.wait_end(1, from);
    match c.resp(1, from).end {
        Some(e) => {
            let ms = t0.elapsed().as_millis();
            if e.status.is_none_or(|s| s == 0) {
                o.pass(
                    "FCGI-5.4-2",
                    format!("END_REQUEST{{REQUEST_COMPLETE}} {ms} ms after ABORT_REQUEST"),
                );
            } else {
                o.broken(
                    "FCGI-5.4-2",
                    format!(
                        "END_REQUEST with protocolStatus {} after ABORT_REQUEST",
                        opt(e.status)
                    ),
                );
            }
            o.info(
                "FCGI-5.4-3",
                format!(
                    "appStatus {}; whether work stopped cannot be seen from outside",
                    opt(e.app_status)
                ),
            );
            Some(true)
        }
        None => {
            o.broken(
                "FCGI-5.4-2",
                format!(
                    "no END_REQUEST after ABORT_REQUEST during STDIN ({})",
                    c.why(out)
                ),
            );
            Some(false)
        }
    }
}

fn abort_during_stdin(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(100)) else {
        return;
    };
    abort_upload(ctx, o, &mut c, false);
    c.audit(o);
}

fn abort_then_reuse(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(100)) else {
        return;
    };
    if abort_upload(ctx, o, &mut c, true) == Some(true) {
        let from = c.send(&ctx.get(1, false));
        let out = c.wait_end(1, from);
        if let Some(r) = answered_again(o, &c, 1, from, out, "FCGI-5.5-1", "request after an abort")
        {
            same_status(
                o,
                "FCGI-3.3-8",
                &r,
                ctx.base_get,
                "ID 1 reused after its abort",
            );
        }
    }
    c.audit(o);
}

fn abort_after_input(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = ctx.get(1, true);
    client::encode_abort(1, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    if c.resp(1, from).end.is_some() {
        o.pass(
            "FCGI-5.5-1",
            "a request aborted right after its input ended got one END_REQUEST",
        );
        c.linger(Duration::from_millis(30));
        let ends = c
            .recs
            .iter()
            .filter(|r| r.rec.header.record_type == RecordType::END_REQUEST)
            .count();
        o.info(
            "FCGI-AMB-12",
            format!("{ends} END_REQUEST record(s) for a request aborted as it completed"),
        );
    } else {
        o.broken(
            "FCGI-5.5-1",
            format!(
                "no END_REQUEST for a request aborted after its input ({})",
                c.why(out)
            ),
        );
    }
    c.audit(o);
}

fn abort_with_content(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(1 << 20))),
        &mut b,
    );
    encode_record(RecordType::STDIN, 1, b"partial=", &mut b);
    raw(RecordType::ABORT_REQUEST, 1, b"ignored!", 0, &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    match c.resp(1, from).end {
        Some(_) => {
            o.pass(
                "FCGI-5.4-2",
                "END_REQUEST after an ABORT_REQUEST with 8 content bytes",
            );
            o.info("FCGI-AMB-12", "ABORT_REQUEST content was ignored");
        }
        None => o.broken(
            "FCGI-5.4-2",
            format!(
                "no END_REQUEST after an ABORT_REQUEST carrying content ({})",
                c.why(out)
            ),
        ),
    }
    c.audit(o);
}

// --- inactive request IDs ---------------------------------------------------------------------

fn others_answered(c: &Conv, ids: &[u16]) -> bool {
    c.recs
        .iter()
        .any(|r| ids.contains(&r.rec.header.request_id) && r.rec.header.request_id != 0)
}

fn inactive_id_before(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let mut b = Vec::new();
    encode_record(RecordType::STDIN, 7, b"JUNK", &mut b);
    encode_record(RecordType::STDIN, 7, b"", &mut b);
    client::encode_abort(7, &mut b);
    encode_record(RecordType::PARAMS, 9, b"\x04\x01JUNKx", &mut b);
    b.extend_from_slice(&ctx.get(1, false));
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    if others_answered(&c, &[7, 9]) {
        o.broken("FCGI-3.3-10", "answered records for inactive IDs 7 and 9");
    }
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-3.3-10",
        "request 1 after records for inactive IDs 7 and 9",
    ) {
        same_status(
            o,
            "FCGI-3.3-10",
            &r,
            ctx.base_get,
            "request 1 after STDIN, ABORT and PARAMS for inactive IDs",
        );
        o.info(
            "FCGI-AMB-12",
            "ABORT_REQUEST for an inactive ID was ignored",
        );
    }
    c.audit(o);
}

fn inactive_id_during(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let body = b"name=portico";
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(body.len()))),
        &mut b,
    );
    encode_record(RecordType::STDIN, 7, b"JUNK", &mut b);
    encode_record(RecordType::STDIN, 7, b"", &mut b);
    encode_record(RecordType::STDIN, 1, body, &mut b);
    client::encode_abort(7, &mut b);
    encode_record(RecordType::STDIN, 1, b"", &mut b);
    let from = c.send(&b);
    let out = c.wait_end(1, from);
    if others_answered(&c, &[7]) {
        o.broken("FCGI-3.3-10", "answered records for the inactive ID 7");
    }
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-3.3-10",
        "POST with STDIN and ABORT for inactive ID 7 in its middle",
    ) {
        if find(&r.stdout, b"JUNK").is_some() {
            o.broken(
                "FCGI-3.3-10",
                "STDIN of the inactive ID 7 showed up in request 1's response",
            );
        }
        same_status(
            o,
            "FCGI-3.3-10",
            &r,
            ctx.base_post,
            "POST with records for inactive ID 7 in its middle",
        );
    }
    c.audit(o);
}

fn inactive_id_after_end(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::ZERO) else {
        return;
    };
    let from = c.send(&ctx.get(1, true));
    let out = c.wait_end(1, from);
    if answered(o, &c, 1, from, out, "FCGI-5.5-1", "request 1").is_none() {
        c.audit(o);
        return;
    }
    // A second KEEP_CONN request first, so that a close below is about the late records.
    let from = c.send(&ctx.get(2, true));
    let out = c.wait_end(2, from);
    if answered_again(o, &c, 2, from, out, "FCGI-5.5-1", "request 2").is_none() {
        c.audit(o);
        return;
    }
    let mut b = Vec::new();
    encode_record(RecordType::STDIN, 1, b"late", &mut b);
    encode_record(RecordType::STDIN, 1, b"", &mut b);
    client::encode_abort(1, &mut b);
    b.extend_from_slice(&ctx.get(3, false));
    let from = c.send(&b);
    let out = c.wait_end(3, from);
    if c.count_for(1, from) > 0 {
        o.broken(
            "FCGI-3.3-10",
            "answered STDIN/ABORT for request 1 after its END_REQUEST",
        );
    }
    if let Some(r) = answered(
        o,
        &c,
        3,
        from,
        out,
        "FCGI-3.3-10",
        "request 3 after late STDIN and ABORT for ended request 1",
    ) {
        same_status(
            o,
            "FCGI-3.3-10",
            &r,
            ctx.base_get,
            "request 3 after late STDIN and ABORT for request 1",
        );
        o.info("FCGI-AMB-16", "late STDIN for an ended request was ignored");
    }
    c.audit(o);
}

// --- malformed input from the web server --------------------------------------------------------

/// Sends `b` and describes what the application did with request 1.
fn reaction(ctx: &Ctx, o: &mut Out, b: &[u8]) -> Option<String> {
    let mut c = ctx.open(o, Duration::ZERO)?;
    let from = c.send(b);
    let out = c.wait_end(1, from);
    let r = c.resp(1, from);
    let s = match (r.protocol_status(), out) {
        (Some(p), _) => format!(
            "request answered (protocolStatus {p}, CGI status {})",
            opt(r.status())
        ),
        (None, Outcome::Eof) => "the connection was closed".into(),
        (None, _) => format!("no answer within {}, connection open", secs(c.limit)),
    };
    c.audit(o);
    Some(s)
}

fn bad_version(ctx: &Ctx, o: &mut Out, v: u8) {
    let b = with_version(&ctx.get(1, false), v);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-AMB-2",
            format!("a request in version-{v} records: {s}"),
        );
        if s.starts_with("request answered") && v > 1 {
            o.info(
                "FCGI-RW-7",
                "accepts versions other than 1 (PHP accepts any version ≥ 1)",
            );
        }
    }
}

fn bad_version_2(ctx: &Ctx, o: &mut Out) {
    bad_version(ctx, o, 2);
}

fn bad_version_0(ctx: &Ctx, o: &mut Out) {
    bad_version(ctx, o, 0);
}

fn bad_version_mid_request(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    let params = pairs_bytes(&ctx.params("GET", None));
    let pieces = split_exact(&params, 2);
    if let Some(p) = pieces.first() {
        encode_record(RecordType::PARAMS, 1, p, &mut b);
    }
    if let Some(p) = pieces.get(1) {
        RawRecord {
            version: 2,
            ..RawRecord::new(RecordType::PARAMS, 1, p)
        }
        .encode(&mut b);
    }
    stream(RecordType::PARAMS, 1, b"", &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-AMB-2",
            format!("a version-2 PARAMS record inside a request: {s}"),
        );
    }
}

fn begin_body_short(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    encode_record(
        RecordType::BEGIN_REQUEST,
        1,
        b"\x00\x01\x00\x00\x00",
        &mut b,
    );
    ctx.get_params(1, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-5.1-2",
            format!("a BEGIN_REQUEST with a 5-byte body: {s}"),
        );
    }
}

fn begin_duplicate(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    begin(1, 1, 0, &mut b);
    ctx.get_params(1, &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-AMB-14",
            format!("BEGIN_REQUEST for the active ID 1: {s}"),
        );
    }
}

fn ws_sends_app_type(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    ctx.get_params(1, &mut b);
    encode_record(RecordType::STDOUT, 1, b"from the web server", &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-A-1",
            format!("a STDOUT record sent to the application: {s}"),
        );
    }
}

fn ws_stream_id_0(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    encode_record(RecordType::STDIN, 0, b"zero", &mut b);
    b.extend_from_slice(&ctx.get(1, false));
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-A-2",
            format!("a STDIN record with request ID 0 before a request: {s}"),
        );
    }
}

fn reserved_nonzero(ctx: &Ctx, o: &mut Out) {
    let mut b = Vec::new();
    for rec in Records::new(&ctx.get(1, false)) {
        let mut content = rec.content.to_vec();
        if rec.header.record_type == RecordType::BEGIN_REQUEST {
            for x in content.iter_mut().skip(3) {
                *x = 0xFF;
            }
        }
        RawRecord {
            reserved: 0xFF,
            ..RawRecord::new(rec.header.record_type, rec.header.request_id, &content)
        }
        .encode(&mut b);
    }
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-AMB-1",
            format!("reserved header and BEGIN_REQUEST bytes set to 0xFF: {s}"),
        );
    }
}

// --- timing: early output, slow peers ---------------------------------------------------------

fn output_for(c: &Conv, id: u16, from: u32) -> bool {
    c.recs.iter().any(|r| {
        r.mark >= from
            && r.rec.header.request_id == id
            && matches!(
                r.rec.header.record_type,
                RecordType::STDOUT | RecordType::STDERR | RecordType::END_REQUEST
            )
    })
}

fn hold_params_end(ctx: &Ctx, o: &mut Out) {
    let hold = Duration::from_secs(1).min(ctx.timeout / 2);
    let Some(mut c) = ctx.open(o, Duration::from_secs(1)) else {
        return;
    };
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    proto::fastcgi::encode_stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("GET", None)),
        &mut b,
    );
    let from = c.send(&b);
    let closed = c.linger(hold);
    if output_for(&c, 1, from) {
        let what = "output for request 1 while its PARAMS stream was still open";
        o.broken("FCGI-6.1-8", what);
        o.broken("FCGI-6.2-6", what);
    } else if closed {
        o.broken(
            "FCGI-5.5-1",
            "the connection was closed while PARAMS was incomplete",
        );
        c.audit(o);
        return;
    } else {
        let what = format!("no output during {} with PARAMS incomplete", secs(hold));
        o.pass("FCGI-6.1-8", &what);
        o.pass("FCGI-6.2-6", what);
    }
    let mut b = Vec::new();
    encode_record(RecordType::PARAMS, 1, b"", &mut b);
    stream(RecordType::STDIN, 1, b"", &mut b);
    c.send(&b);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-5.5-1",
        "request with a late PARAMS end",
    ) {
        same_status(
            o,
            "FCGI-5.5-1",
            &r,
            ctx.base_get,
            "request with a late PARAMS end",
        );
    }
    c.audit(o);
}

fn slow_stdin(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(600)) else {
        return;
    };
    let body = b"name=portico&lang=rust";
    let mut b = Vec::new();
    begin(1, 1, 0, &mut b);
    stream(
        RecordType::PARAMS,
        1,
        &pairs_bytes(&ctx.params("POST", Some(body.len()))),
        &mut b,
    );
    let (first, rest) = body.split_at(5);
    encode_record(RecordType::STDIN, 1, first, &mut b);
    let from = c.send(&b);
    c.linger(Duration::from_millis(300));
    let early = output_for(&c, 1, from);
    let mut b = Vec::new();
    stream(RecordType::STDIN, 1, rest, &mut b);
    c.send(&b);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-5.5-1",
        "POST with STDIN sent slowly",
    ) {
        same_status(
            o,
            "FCGI-5.5-1",
            &r,
            ctx.base_post,
            "POST with STDIN sent slowly",
        );
        o.info(
            "FCGI-6.2-6",
            if early {
                "wrote output before STDIN ended (allowed once PARAMS ended)"
            } else {
                "waited for the end of STDIN before writing"
            },
        );
    }
    c.audit(o);
}

fn slow_reader(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(600)) else {
        return;
    };
    let from = c.send(&ctx.get(1, false));
    slow_read(&mut c, Duration::from_millis(500), 256);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-5.5-1",
        "GET read after a 0.5 s stall, bytewise",
    ) {
        same_status(o, "FCGI-5.5-1", &r, ctx.base_get, "GET read slowly");
        if r.stdout_end {
            o.pass("FCGI-6.1-7", "complete STDOUT stream under a slow reader");
        }
    }
    c.audit(o);
}

fn slow_reader_large(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(600)) else {
        return;
    };
    let mut body = b"blob=".to_vec();
    body.resize(1 << 20, b'z');
    let from = c.send(&ctx.post(1, false, &body));
    slow_read(&mut c, Duration::from_millis(500), 256);
    let out = c.wait_end(1, from);
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-5.5-1",
        "1 MiB POST, response read after a 0.5 s stall",
    ) {
        same_status(o, "FCGI-5.5-1", &r, ctx.base_post, "1 MiB POST read slowly");
        if r.stdout_end {
            o.pass(
                "FCGI-6.1-7",
                format!(
                    "complete STDOUT stream ({} bytes) under a slow reader",
                    r.stdout.len()
                ),
            );
        }
    }
    c.audit(o);
}

fn slow_writer(ctx: &Ctx, o: &mut Out) {
    let Some(mut c) = ctx.open(o, Duration::from_millis(400)) else {
        return;
    };
    let b = ctx.get(1, false);
    let from = c.send_trickle(&b, 1, 8, Duration::from_millis(2));
    let out = c.wait_end(1, from);
    if let Some(r) = answered(
        o,
        &c,
        1,
        from,
        out,
        "FCGI-5.5-1",
        "request written one byte at a time",
    ) {
        same_status(
            o,
            "FCGI-5.5-1",
            &r,
            ctx.base_get,
            "request written one byte at a time",
        );
        o.pass(
            "FCGI-3.3-15",
            "records arriving byte by byte were reassembled",
        );
    }
    c.audit(o);
}

fn stdin_short(ctx: &Ctx, o: &mut Out) {
    let p = ctx.params("POST", Some(10));
    let b = ctx.request(1, Role::RESPONDER, false, &p, Some(b"abcde"), None);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-6.2-8",
            format!("CONTENT_LENGTH 10 with 5 STDIN bytes: {s} (an update must be abandoned)"),
        );
        o.info(
            "FCGI-6.2-4",
            "the probe sent fewer STDIN bytes than CONTENT_LENGTH on purpose",
        );
    }
}

fn stdin_long(ctx: &Ctx, o: &mut Out) {
    let p = ctx.params("POST", Some(5));
    let b = ctx.request(1, Role::RESPONDER, false, &p, Some(b"abcdefghij"), None);
    if let Some(s) = reaction(ctx, o, &b) {
        o.info(
            "FCGI-6.2-4",
            format!("CONTENT_LENGTH 5 with 10 STDIN bytes (a web-server fault): {s}"),
        );
    }
}

fn concurrent_conns(ctx: &Ctx, o: &mut Out) {
    let k = ctx.caps.max_conns.map_or(2, |m| m.clamp(1, 4));
    let mut convs = Vec::new();
    for _ in 0..k {
        let Some(c) = ctx.open(o, Duration::ZERO) else {
            return;
        };
        convs.push(c);
    }
    let froms: Vec<u32> = convs
        .iter_mut()
        .map(|c| c.send(&ctx.get(1, false)))
        .collect();
    let mut ok = 0;
    for (c, from) in convs.iter_mut().zip(froms) {
        c.wait_end(1, from);
        if c.resp(1, from).protocol_status() == Some(0) {
            ok += 1;
        }
        c.audit(o);
    }
    o.info(
        "FCGI-3.2-4",
        format!(
            "{ok} of {k} concurrent connections served (FCGI_MAX_CONNS {})",
            opt(ctx.caps.max_conns)
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// Running

/// Runs every check against `target` and returns the report (`label` names the target).
pub fn probe(target: &Target, label: &str, opts: &Options) -> Report {
    let start = Instant::now();
    let mut ctx = Ctx::new(target.clone(), opts);
    if let Err(e) = target.connect(opts.timeout) {
        let mut o = Out::new("connect");
        o.error(
            "FCGI-3.2-1",
            format!("cannot connect to {}: {e}", target.shown("fastcgi")),
        );
        return Report {
            target: label.to_owned(),
            findings: o.into_findings(),
            elapsed: start.elapsed(),
        };
    }
    let mut merged = Merged::default();
    let mut o = Out::new("get-values");
    ctx.caps = get_values(&ctx, &mut o);
    merged.add(o.into_parts());
    let mut o = Out::new("responder-get");
    ctx.base_get = responder_get(&ctx, &mut o);
    merged.add(o.into_parts());
    let mut o = Out::new("responder-post");
    ctx.base_post = responder_post(&ctx, &mut o);
    merged.add(o.into_parts());

    let workers = opts
        .concurrency
        .unwrap_or_else(|| {
            ctx.caps
                .max_conns
                .map_or(4, |n| usize::try_from(n).unwrap_or(8))
        })
        .clamp(1, 8);
    let ctx = Arc::new(ctx);
    let (parallel, alone): (Vec<Check>, Vec<Check>) = CHECKS.iter().partition(|c| !c.solo);
    let mut results = run_parallel(&ctx, &parallel, workers);
    results.extend(run_parallel(&ctx, &alone, 1));
    let mut by_slug: BTreeMap<&str, (Vec<Finding>, Vec<Finding>)> = results.into_iter().collect();
    for check in CHECKS {
        match by_slug.remove(check.slug) {
            Some(parts) => merged.add(parts),
            None => {
                let mut o = Out::new(check.slug);
                o.error(
                    "FCGI-3.2-1",
                    "the check did not finish within its time limit",
                );
                merged.add(o.into_parts());
            }
        }
    }
    Report {
        target: label.to_owned(),
        findings: merged.finish(),
        elapsed: start.elapsed(),
    }
}

/// The report's findings: each check's own, and the record audit's once per clause and
/// verdict (the first check that saw it, with a count of the others).
#[derive(Default)]
struct Merged {
    findings: Vec<Finding>,
    seen: BTreeMap<(String, &'static str), (usize, usize)>,
}

impl Merged {
    fn add(&mut self, (own, audit): (Vec<Finding>, Vec<Finding>)) {
        self.findings.extend(own);
        for f in audit {
            let key = (f.clause.clone(), f.verdict.as_str());
            match self.seen.get_mut(&key) {
                Some((_, n)) => *n += 1,
                None => {
                    self.seen.insert(key, (self.findings.len(), 0));
                    self.findings.push(f);
                }
            }
        }
    }

    fn finish(mut self) -> Vec<Finding> {
        for (at, n) in self.seen.into_values() {
            if let Some(f) = self.findings.get_mut(at)
                && n > 0
            {
                f.observation.push_str(&format!(
                    " (and in {n} more check{})",
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
        self.findings
    }
}

/// Findings of one check: its own and the audit's.
type Parts = (Vec<Finding>, Vec<Finding>);

/// Runs `checks` on `workers` threads; returns what finished, by slug.
fn run_parallel(ctx: &Arc<Ctx>, checks: &[Check], workers: usize) -> Vec<(&'static str, Parts)> {
    let list: Arc<Vec<Check>> = Arc::new(checks.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..workers.min(list.len()).max(1) {
        let (list, next, tx, ctx) = (list.clone(), next.clone(), tx.clone(), ctx.clone());
        thread::spawn(move || {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(check) = list.get(i) else {
                    break;
                };
                let mut o = Out::new(check.slug);
                (check.run)(&ctx, &mut o);
                if o.findings.is_empty() && o.audit.is_empty() {
                    o.info("FCGI-3.2-1", "the check made no observation");
                }
                if tx.send((check.slug, o.into_parts())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let longest = checks.iter().map(|c| c.extra).max().unwrap_or_default();
    // Every wait inside a check is bounded; this is a backstop against a stuck thread.
    let patience = ctx.timeout * 4 + longest * 2 + Duration::from_secs(2);
    let mut out = Vec::new();
    while let Ok(r) = rx.recv_timeout(patience) {
        out.push(r);
    }
    out
}

/// `portico probe fastcgi://…` / `fastcgi+unix:…` / `--spawn CMD…`: prints the report and
/// returns exit status 1 on any FAIL or ERROR, 2 on bad arguments.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let opts = match Options::from_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("portico probe: {e}");
            return ExitCode::from(2);
        }
    };
    let first = args.target.first().map(String::as_str).unwrap_or_default();
    let (target, label, spawned) = match &args.spawn {
        Some(cmd) => match super::spawn::Spawned::start(cmd) {
            Ok(s) => (
                Target::Unix(s.socket.clone()),
                format!("spawn:{}", cmd.join(" ")),
                Some(s),
            ),
            Err(e) => {
                eprintln!("portico probe: cannot start {cmd:?}: {e}");
                return ExitCode::from(2);
            }
        },
        None => match Target::parse(first, "fastcgi") {
            Some(t) => (t, first.to_owned(), None),
            None => {
                eprintln!(
                    "portico probe: expected fastcgi://HOST:PORT or fastcgi+unix:/path, got {first:?}"
                );
                return ExitCode::from(2);
            }
        },
    };
    let report = probe(&target, &label, &opts);
    drop(spawned);
    print!("{}", report.render(args.format));
    if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcgi_t_checks_at_least_sixty_unique() {
        let list = check_list();
        assert!(list.len() >= 60, "{}", list.len());
        let slugs: BTreeSet<_> = list.iter().map(|(s, _)| *s).collect();
        assert_eq!(slugs.len(), list.len());
    }

    #[test]
    fn fcgi_3_4_2_target_parse() {
        assert_eq!(
            Target::parse("fastcgi://127.0.0.1:9000", "fastcgi"),
            Some(Target::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            Target::parse("fastcgi+unix:/run/x.sock", "fastcgi"),
            Some(Target::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            Target::parse("fastcgi+unix:///run/x.sock", "fastcgi"),
            Some(Target::Unix("/run/x.sock".into()))
        );
        assert_eq!(Target::parse("fastcgi://nohost", "fastcgi"), None);
        assert_eq!(Target::parse("scgi://a:1", "fastcgi"), None);
    }

    #[test]
    fn cgi_status_forms() {
        assert_eq!(cgi_status(b"Status: 404 Nope\r\n\r\nx"), Some(404));
        assert_eq!(cgi_status(b"Location: /x\n\n"), Some(302));
        assert_eq!(cgi_status(b"Content-Type: text/plain\r\n\r\n"), Some(200));
        assert_eq!(cgi_status(b"Content-Type: text/plain\r\n"), None);
    }

    #[test]
    fn fcgi_3_3_6_padded_post_uses_every_padding() {
        let ctx = Ctx::new(
            Target::Tcp("127.0.0.1:1".into()),
            &Options {
                timeout: Duration::from_secs(1),
                path: "/x.php?a=1".into(),
                params: vec![],
                concurrency: None,
            },
        );
        let pads: Vec<u8> = (0..64).collect();
        let b = padded_post(&ctx, &pads, 16);
        let seen: Vec<u8> = Records::new(&b)
            .skip(1)
            .map(|r| r.header.padding_length)
            .collect();
        assert_eq!(seen, pads);
    }

    #[test]
    fn split_exact_pieces() {
        let parts = split_exact(b"abcdefg", 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), b"abcdefg");
        assert!(parts.iter().all(|p| !p.is_empty()));
    }
}
