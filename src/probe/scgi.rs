//! `portico probe scgi://HOST:PORT` (or `scgi+unix:/path`): checks an SCGI server clause
//! by clause (`shared/specs/scgi.md`, test ideas SCGI-T-1 to SCGI-T-12). Every check opens
//! its own connection, sends one request — well-formed, or broken on purpose in exactly
//! one way — and judges the server's reaction within `--check-timeout`: a reply (parsed
//! as a CGI response head with `proto::cgi::response::parse_head`), a close, or nothing.
//! After each deliberately malformed request a valid one follows on a fresh connection, so
//! a server that crashed or stopped accepting is reported (SCGI-2-3) and the probe stops
//! instead of piling up errors. The requests are built with `proto::scgi`'s encoder and,
//! for the broken ones, by hand; the request carries a realistic set of CGI variables
//! (REQUEST_URI from `--path`, plus every `--param`).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use proto::Status;
use proto::cgi::response::{self as cgi_response, ResponseHead};
use proto::scgi;

use super::ProbeArgs;
use super::cgi::{head_error, response_findings};
use super::report::{Finding, Level, Report, Side};

pub use super::Target;

/// The port SERVER_PORT names (80 for a Unix socket).
fn port(target: &Target) -> &str {
    match target {
        Target::Tcp(a) => a.rsplit_once(':').map_or("80", |(_, p)| p),
        Target::Unix(_) => "80",
    }
}

/// The level and side of each SCGI clause the checks cite (`shared/specs/scgi.md`).
fn clause(id: &str) -> (Level, Side) {
    match id {
        "SCGI-2-1" => (Level::Must, Side::Both),
        "SCGI-2-3" | "SCGI-3-11" | "SCGI-4-5" => (Level::Must, Side::App),
        "SCGI-3-3" | "SCGI-4-2" => (Level::MustNot, Side::Ws),
        "SCGI-3-4" | "SCGI-3-5" | "SCGI-3-6" | "SCGI-3-7" | "SCGI-3-10" => (Level::Must, Side::Ws),
        id if id.starts_with("SCGI-AMB-") => (Level::Amb, Side::App),
        _ => (Level::Fact, Side::Both),
    }
}

fn pass(check: &str, id: &str, obs: impl Into<String>) -> Finding {
    let (level, side) = clause(id);
    Finding::pass(check, id, level, side, obs)
}

fn broken(check: &str, id: &str, obs: impl Into<String>) -> Finding {
    let (level, side) = clause(id);
    Finding::broken(check, id, level, side, obs)
}

fn info(check: &str, id: &str, obs: impl Into<String>) -> Finding {
    let (level, side) = clause(id);
    Finding::info(check, id, level, side, obs)
}

// ---- transport ----------------------------------------------------------------------

/// How the connection stood when a check stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it (end of file).
    Eof,
    /// The server reset it.
    Reset,
    /// Still open when the time limit ran out (or when reading stopped at the first byte).
    Open,
}

impl End {
    fn closed(self) -> bool {
        self != End::Open
    }
}

/// What one connection carried back.
struct Exchange {
    data: Vec<u8>,
    end: End,
    /// From connect to the end of reading.
    elapsed: Duration,
}

impl Exchange {
    fn how_closed(&self) -> &'static str {
        match self.end {
            End::Eof => "closed",
            End::Reset => "reset",
            End::Open => "left open",
        }
    }
}

/// At most this much of a reply is kept.
const MAX_REPLY: usize = 4 << 20;

/// Connects, writes `bytes` (whole, or one byte per write with `per_byte` between) from
/// a second thread while reading the reply until end of file, a reset or `limit`; the
/// write side is never shut (SCGI-AMB-6). With `first_byte`, stops at the first bytes.
fn exchange(
    target: &Target,
    bytes: Vec<u8>,
    per_byte: Option<Duration>,
    limit: Duration,
    first_byte: bool,
) -> io::Result<Exchange> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut reader = target.connect(limit)?;
    let mut writer = reader.try_clone()?;
    writer.set_write_timeout(Some(limit))?;
    let handle = thread::spawn(move || match per_byte {
        None => writer.write_all(&bytes).is_ok(),
        Some(pause) => {
            for b in bytes.chunks(1) {
                if writer.write_all(b).is_err() {
                    return false;
                }
                thread::sleep(pause);
            }
            true
        }
    });
    let mut data = Vec::new();
    let mut end = End::Open;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline || (first_byte && !data.is_empty()) {
            break;
        }
        reader.set_read_timeout(Some(deadline - now))?;
        match reader.read(&mut chunk) {
            Ok(0) => {
                end = End::Eof;
                break;
            }
            Ok(n) => {
                if data.len() < MAX_REPLY {
                    data.extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                end = End::Reset;
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = reader.shutdown(Shutdown::Both);
    let _ = handle.join();
    Ok(Exchange { data, end, elapsed })
}

// ---- replies --------------------------------------------------------------------------

/// A reply, as far as it could be read as a CGI response head.
enum Reply<'a> {
    /// Not a byte.
    Nothing,
    /// A head, its length and the status the client would get.
    Head(ResponseHead<'a>, usize),
    /// Bytes that cannot be a CGI head.
    Bad(cgi_response::Error),
    /// Bytes without the blank line that ends a head.
    Partial,
}

fn reply(data: &[u8]) -> Reply<'_> {
    if data.is_empty() {
        return Reply::Nothing;
    }
    match cgi_response::parse_head(data, false, &cgi_response::Limits::default()) {
        Ok(Status::Complete((head, n))) => Reply::Head(head, n),
        Ok(Status::Partial) => Reply::Partial,
        Err(e) => Reply::Bad(e),
    }
}

/// The status a reply gives, `None` if it has no readable head.
fn status_of(data: &[u8]) -> Option<u16> {
    match reply(data) {
        Reply::Head(head, _) => Some(head.status_code()),
        _ => None,
    }
}

/// How a server met a request.
enum Reaction {
    /// It closed without a reply, or answered 4xx/5xx.
    Refused(String),
    /// It answered with a status below 400, or with something that is not a CGI head.
    Accepted(String),
    /// Neither a byte nor a close within the limit.
    Hang,
}

fn reaction(ex: &Exchange) -> Reaction {
    match reply(&ex.data) {
        Reply::Nothing if ex.end.closed() => Reaction::Refused(format!(
            "{} without a reply after {} ms",
            ex.how_closed(),
            ex.elapsed.as_millis()
        )),
        Reply::Nothing => Reaction::Hang,
        Reply::Head(head, _) => {
            let code = head.status_code();
            if code >= 400 {
                Reaction::Refused(format!("answered {code}"))
            } else {
                Reaction::Accepted(format!("answered {code}"))
            }
        }
        Reply::Partial => Reaction::Refused("sent an incomplete reply".into()),
        Reply::Bad(e) => Reaction::Accepted(format!("answered with a non-CGI reply ({e})")),
    }
}

/// SCGI-2-3: a server that replied must then close.
fn close_finding(check: &str, ex: &Exchange, limit: Duration) -> Option<Finding> {
    (!ex.data.is_empty() && !ex.end.closed()).then(|| {
        broken(
            check,
            "SCGI-2-3",
            format!("replied but did not close the connection within {limit:?}"),
        )
    })
}

/// Non-overlapping occurrences of `needle` in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    let mut n = 0;
    let mut i = 0;
    while let Some(w) = hay.get(i..i + needle.len()) {
        if w == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

// ---- requests -------------------------------------------------------------------------

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The probe's state: where, how long, and what a realistic request carries.
struct Ctx<'a> {
    target: &'a Target,
    limit: Duration,
    path: String,
    extra: Pairs,
}

impl Ctx<'_> {
    /// A realistic CGI request (SCGI-3-8) without CONTENT_LENGTH and SCGI.
    fn params(&self, method: &str, body: bool) -> Pairs {
        let (script, query) = self.path.split_once('?').unwrap_or((&self.path, ""));
        let mut p: Vec<(&str, String)> = vec![
            ("REQUEST_METHOD", method.into()),
            ("REQUEST_URI", self.path.clone()),
            ("DOCUMENT_URI", script.into()),
            ("SCRIPT_NAME", script.into()),
            ("PATH_INFO", String::new()),
            ("QUERY_STRING", query.into()),
            ("SERVER_NAME", "localhost".into()),
            ("SERVER_PORT", port(self.target).into()),
            ("SERVER_PROTOCOL", "HTTP/1.1".into()),
            (
                "SERVER_SOFTWARE",
                concat!("portico-probe/", env!("CARGO_PKG_VERSION")).into(),
            ),
            ("GATEWAY_INTERFACE", "CGI/1.1".into()),
            ("REQUEST_SCHEME", "http".into()),
            ("REMOTE_ADDR", "127.0.0.1".into()),
            ("REMOTE_PORT", "40000".into()),
            ("HTTP_HOST", "localhost".into()),
            ("HTTP_USER_AGENT", "portico-probe".into()),
        ];
        if body {
            p.insert(
                1,
                ("CONTENT_TYPE", "application/x-www-form-urlencoded".into()),
            );
        }
        let mut out: Pairs = p
            .into_iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.into_bytes()))
            .collect();
        for (name, value) in &self.extra {
            if let Some(slot) = out.iter_mut().find(|(n, _)| n == name) {
                slot.1.clone_from(value);
            } else {
                out.push((name.clone(), value.clone()));
            }
        }
        out
    }

    /// A well-formed request: the encoder's netstring, then the body.
    fn request(&self, method: &str, body: &[u8]) -> Vec<u8> {
        let params = self.params(method, !body.is_empty() || method == "POST");
        let mut out = Vec::new();
        scgi::encode_request(
            params.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
            body.len() as u64,
            &mut out,
        );
        out.extend_from_slice(body);
        out
    }

    /// The header block of a GET with `CONTENT_LENGTH` = `length` and `SCGI` = `1` first,
    /// then the realistic params; `edit` may change the pairs before they are joined.
    fn block(&self, length: &str, edit: impl FnOnce(&mut Pairs)) -> Vec<u8> {
        let mut pairs: Pairs = vec![
            (b"CONTENT_LENGTH".to_vec(), length.as_bytes().to_vec()),
            (b"SCGI".to_vec(), b"1".to_vec()),
        ];
        pairs.extend(self.params("GET", false));
        edit(&mut pairs);
        join(&pairs)
    }

    fn run(&self, bytes: Vec<u8>) -> io::Result<Exchange> {
        exchange(self.target, bytes, None, self.limit, false)
    }

    /// A valid request still gets an answer (used after every malformed one).
    fn alive(&self) -> bool {
        exchange(
            self.target,
            self.request("GET", b""),
            None,
            self.limit,
            true,
        )
        .is_ok_and(|ex| !ex.data.is_empty())
    }
}

fn join(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (n, v) in pairs {
        block.extend_from_slice(n);
        block.push(0);
        block.extend_from_slice(v);
        block.push(0);
    }
    block
}

/// `len ":" block end`, with `len` written as given.
fn netstring(len: &str, block: &[u8], end: &[u8]) -> Vec<u8> {
    let mut out = len.as_bytes().to_vec();
    out.push(b':');
    out.extend_from_slice(block);
    out.extend_from_slice(end);
    out
}

fn netstring_ok(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    scgi::encode_netstring(block, &mut out);
    out
}

// ---- checks ---------------------------------------------------------------------------

/// One check: a slug, whether its request is malformed (a liveness check follows), and
/// the function that runs it.
struct Check {
    slug: &'static str,
    malformed: bool,
    run: fn(&Ctx<'_>, &str) -> io::Result<Vec<Finding>>,
}

/// SCGI-5-1 example, byte for byte.
const EXAMPLE: &[u8] = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00\
    REQUEST_URI\x00/deepthought\x00,What is the answer to life?";

/// Every check, in the order they run: valid requests first, malformed ones after, the
/// oversized lengths (which may crash a server) last.
const CHECKS: &[Check] = &[
    Check {
        slug: "spec-example",
        malformed: false,
        run: spec_example,
    },
    Check {
        slug: "reply-form",
        malformed: false,
        run: reply_form,
    },
    Check {
        slug: "close-after-response",
        malformed: false,
        run: close_after_response,
    },
    Check {
        slug: "body-0",
        malformed: false,
        run: body_0,
    },
    Check {
        slug: "body-1",
        malformed: false,
        run: body_1,
    },
    Check {
        slug: "body-64k",
        malformed: false,
        run: body_64k,
    },
    Check {
        slug: "byte-per-write",
        malformed: false,
        run: byte_per_write,
    },
    Check {
        slug: "extra-bytes",
        malformed: false,
        run: extra_bytes,
    },
    Check {
        slug: "short-body",
        malformed: false,
        run: short_body,
    },
    Check {
        slug: "empty-value",
        malformed: false,
        run: empty_value,
    },
    Check {
        slug: "content-length-leading-zeros",
        malformed: true,
        run: content_length_zeros,
    },
    Check {
        slug: "scgi-missing",
        malformed: true,
        run: scgi_missing,
    },
    Check {
        slug: "scgi-2",
        malformed: true,
        run: scgi_2,
    },
    Check {
        slug: "duplicate-name",
        malformed: true,
        run: duplicate_name,
    },
    Check {
        slug: "content-length-not-first",
        malformed: true,
        run: content_length_not_first,
    },
    Check {
        slug: "content-length-missing",
        malformed: true,
        run: content_length_missing,
    },
    Check {
        slug: "content-length-non-numeric",
        malformed: true,
        run: content_length_non_numeric,
    },
    Check {
        slug: "truncated-block",
        malformed: true,
        run: truncated_block,
    },
    Check {
        slug: "leading-zero",
        malformed: true,
        run: leading_zero,
    },
    Check {
        slug: "missing-comma",
        malformed: true,
        run: missing_comma,
    },
    Check {
        slug: "length-non-digit",
        malformed: true,
        run: length_non_digit,
    },
    Check {
        slug: "length-empty",
        malformed: true,
        run: length_empty,
    },
    Check {
        slug: "huge-length",
        malformed: true,
        run: huge_length,
    },
    Check {
        slug: "huge-length-1g",
        malformed: true,
        run: huge_length_1g,
    },
];

/// The slugs of every SCGI check, in the order they run.
pub fn check_names() -> Vec<&'static str> {
    CHECKS.iter().map(|c| c.slug).collect()
}

/// Probes the SCGI server at `target` with every check; never waits longer than
/// `--check-timeout` per check (plus as much for the liveness request after a malformed
/// one).
pub fn probe(target: &Target, args: &ProbeArgs) -> Report {
    let start = Instant::now();
    let ctx = Ctx {
        target,
        limit: args.check_timeout,
        path: if args.path.is_empty() {
            "/".into()
        } else {
            args.path.clone()
        },
        extra: args
            .params
            .iter()
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                (n.as_bytes().to_vec(), v.as_bytes().to_vec())
            })
            .collect(),
    };
    let mut findings = Vec::new();
    if let Err(e) = target.connect(ctx.limit) {
        findings.push(Finding::error(
            "connect",
            "SCGI-2-1",
            Level::Must,
            Side::Both,
            format!("cannot connect: {e}"),
        ));
    } else {
        for (i, check) in CHECKS.iter().enumerate() {
            match (check.run)(&ctx, check.slug) {
                Ok(f) => findings.extend(f),
                Err(e) => findings.push(Finding::error(
                    check.slug,
                    "SCGI-2-1",
                    Level::Must,
                    Side::Both,
                    format!("connection failed: {e}"),
                )),
            }
            if check.malformed && !ctx.alive() {
                findings.push(broken(
                    check.slug,
                    "SCGI-2-3",
                    "the server stopped answering valid requests after this one (crashed or hung)",
                ));
                let left = CHECKS.len() - i - 1;
                if left > 0 {
                    findings.push(Finding::error(
                        "probe",
                        "SCGI-2-3",
                        Level::Must,
                        Side::App,
                        format!("server unreachable: {left} remaining checks skipped"),
                    ));
                }
                break;
            }
        }
    }
    Report {
        target: target.shown("scgi"),
        findings,
        elapsed: start.elapsed(),
    }
}

/// Findings for a well-formed request: PASS `id` with `what` when it was answered and the
/// connection closed; FAIL SCGI-2-3 when no reply came or the connection stayed open.
fn answered(check: &str, ctx: &Ctx<'_>, ex: &Exchange, id: &str, what: &str) -> Vec<Finding> {
    if ex.data.is_empty() {
        let how = if ex.end.closed() {
            format!("{} without a reply", ex.how_closed())
        } else {
            format!("no reply within {:?}", ctx.limit)
        };
        return vec![broken(check, "SCGI-2-3", format!("{what}: {how}"))];
    }
    let status = status_of(&ex.data).map_or_else(|| "a reply".into(), |s| format!("{s}"));
    let mut out = vec![pass(check, id, format!("{what}: answered {status}"))];
    out.extend(close_finding(check, ex, ctx.limit));
    out
}

/// T-1: the §5 example byte for byte.
fn spec_example(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let ex = ctx.run(EXAMPLE.to_vec())?;
    let mut out = answered(check, ctx, &ex, "SCGI-2-3", "the §5 example request");
    if let Reply::Head(head, _) = reply(&ex.data) {
        out.push(info(
            check,
            "SCGI-5-2",
            format!(
                "reply: status {}{}, then {}",
                head.status_code(),
                head.content_type
                    .map(|c| format!(", Content-Type {}", String::from_utf8_lossy(c)))
                    .unwrap_or_default(),
                ex.how_closed()
            ),
        ));
    }
    Ok(out)
}

/// T-12: the reply's CGI form.
fn reply_form(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let ex = ctx.run(ctx.request("GET", b""))?;
    let mut out = Vec::new();
    match reply(&ex.data) {
        Reply::Nothing => out.push(broken(
            check,
            "SCGI-2-3",
            format!("no reply to a GET ({})", ex.how_closed()),
        )),
        Reply::Partial => out.push(head_error(check, cgi_response::Error::UnexpectedEof)),
        Reply::Bad(e) => {
            out.push(info(check, "SCGI-2-6", "the reply is not a CGI response"));
            out.push(head_error(check, e));
        }
        Reply::Head(head, n) => {
            out.push(pass(
                check,
                "SCGI-2-6",
                format!(
                    "a CGI response head of {n} bytes, status {}",
                    head.status_code()
                ),
            ));
            out.push(info(
                check,
                "SCGI-AMB-1",
                match (head.version, head.status) {
                    (Some(v), _) => format!(
                        "an HTTP status line ({} {}): nginx accepts it, Apache mod_proxy_scgi does not",
                        String::from_utf8_lossy(v),
                        head.status_code()
                    ),
                    (None, Some(s)) => format!("a Status header ({s})"),
                    (None, None) => "no Status header (200 implied, CGI-6.2.1-3)".into(),
                },
            ));
            let head_bytes = ex.data.get(..n).unwrap_or_default();
            let lf = occurrences(head_bytes, b"\n");
            let crlf = occurrences(head_bytes, b"\r\n");
            out.push(info(
                check,
                "SCGI-AMB-1",
                if crlf == lf {
                    "CR LF line ends (as the §5 example)"
                } else if crlf == 0 {
                    "LF-only line ends"
                } else {
                    "mixed CR LF and LF line ends"
                },
            ));
            let body = ex.data.get(n..).unwrap_or_default();
            out.extend(response_findings(check, &head, body, false));
        }
    }
    out.extend(close_finding(check, &ex, ctx.limit));
    Ok(out)
}

/// T-12: close after the response.
fn close_after_response(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let ex = ctx.run(ctx.request("GET", b""))?;
    Ok(vec![match (ex.data.is_empty(), ex.end.closed()) {
        (false, true) => pass(
            check,
            "SCGI-2-3",
            format!(
                "replied and {} the connection after {} ms",
                ex.how_closed(),
                ex.elapsed.as_millis()
            ),
        ),
        (false, false) => broken(
            check,
            "SCGI-2-3",
            format!(
                "replied but did not close the connection within {:?}",
                ctx.limit
            ),
        ),
        (true, true) => broken(
            check,
            "SCGI-2-3",
            format!("{} without a reply", ex.how_closed()),
        ),
        (true, false) => broken(
            check,
            "SCGI-2-3",
            format!("no reply within {:?}", ctx.limit),
        ),
    }])
}

fn body_n(ctx: &Ctx<'_>, check: &str, n: usize) -> io::Result<Vec<Finding>> {
    let body: Vec<u8> = (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
        .collect();
    let ex = ctx.run(ctx.request("POST", &body))?;
    Ok(answered(
        check,
        ctx,
        &ex,
        "SCGI-3-11",
        &format!("POST with CONTENT_LENGTH {n} and exactly {n} body bytes"),
    ))
}

/// T-13 seen from the server: an empty body, CONTENT_LENGTH 0.
fn body_0(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    body_n(ctx, check, 0)
}

fn body_1(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    body_n(ctx, check, 1)
}

fn body_64k(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    body_n(ctx, check, 70_000)
}

/// T-2: the same request one byte per write.
fn byte_per_write(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let request = ctx.request("POST", b"hello");
    let whole = ctx.run(request.clone())?;
    // One write per byte (TCP_NODELAY: one segment each); the time limit starts to count
    // once they are all written.
    let writing = Duration::from_micros(200) * request.len() as u32;
    let split = exchange(
        ctx.target,
        request,
        Some(Duration::from_micros(100)),
        ctx.limit + writing,
        false,
    )?;
    let mut out = Vec::new();
    if split.data.is_empty() {
        out.push(broken(
            check,
            "SCGI-2-1",
            format!(
                "no reply when the request came one byte per write ({})",
                split.how_closed()
            ),
        ));
        return Ok(out);
    }
    let (a, b) = (status_of(&whole.data), status_of(&split.data));
    let show = |s: Option<u16>| s.map_or_else(|| "no CGI status".into(), |s| s.to_string());
    if whole.data.is_empty() || a == b {
        out.push(pass(
            check,
            "SCGI-2-1",
            format!("same reply ({}) when sent one byte per write", show(b)),
        ));
    } else {
        out.push(broken(
            check,
            "SCGI-2-1",
            format!(
                "reply {} one byte per write, {} when sent whole",
                show(b),
                show(a)
            ),
        ));
    }
    out.extend(close_finding(check, &split, ctx.limit));
    Ok(out)
}

/// T-10: bytes after the body are not a second request.
fn extra_bytes(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let plain = ctx.request("POST", b"hello");
    let base = ctx.run(plain.clone())?;
    let mut second = Vec::new();
    scgi::encode_request(
        [
            (&b"REQUEST_METHOD"[..], &b"GET"[..]),
            (b"REQUEST_URI", b"/portico-probe-extra"),
        ],
        0,
        &mut second,
    );
    let mut bytes = plain;
    bytes.extend_from_slice(&second);
    let ex = ctx.run(bytes)?;
    if ex.data.is_empty() {
        return Ok(vec![broken(
            check,
            "SCGI-2-3",
            format!(
                "no reply when {} bytes followed the body ({})",
                second.len(),
                ex.how_closed()
            ),
        )]);
    }
    let sample = if base.data.is_empty() {
        &ex.data
    } else {
        &base.data
    };
    let first_line = sample
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|i| sample.get(..=i))
        .unwrap_or(sample);
    let (seen, expected) = (
        occurrences(&ex.data, first_line),
        occurrences(&base.data, first_line).max(1),
    );
    let mut out = vec![if seen > expected {
        broken(
            check,
            "SCGI-3-11",
            format!(
                "the {} bytes after the {}-byte body were answered as a second request ({} replies on one connection)",
                second.len(),
                5,
                seen
            ),
        )
    } else {
        pass(
            check,
            "SCGI-3-11",
            format!(
                "CONTENT_LENGTH 5 plus {} more bytes (a whole second request): one reply",
                second.len()
            ),
        )
    }];
    out.extend(close_finding(check, &ex, ctx.limit));
    Ok(out)
}

/// T-11: CONTENT_LENGTH 100, 10 bytes sent, the connection held open.
fn short_body(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let mut bytes = ctx.request("POST", &[b'x'; 100]);
    bytes.truncate(bytes.len() - 90);
    let ex = ctx.run(bytes)?;
    let ms = ex.elapsed.as_millis();
    Ok(vec![match (reply(&ex.data), ex.end.closed()) {
        (Reply::Nothing, false) => pass(
            check,
            "SCGI-3-11",
            format!(
                "waited for the 90 missing body bytes (no reply within {:?})",
                ctx.limit
            ),
        ),
        (Reply::Nothing, true) => pass(
            check,
            "SCGI-3-11",
            format!("{} without a reply after {ms} ms", ex.how_closed()),
        ),
        (Reply::Head(head, _), true) if head.status_code() >= 400 => info(
            check,
            "SCGI-AMB-5",
            format!(
                "answered {} before the body was complete and closed (an early refusal)",
                head.status_code()
            ),
        ),
        (Reply::Head(head, _), false) => info(
            check,
            "SCGI-AMB-5",
            format!(
                "answered {} before the body was complete and kept the connection open (streaming)",
                head.status_code()
            ),
        ),
        (r, false) => info(
            check,
            "SCGI-AMB-5",
            format!(
                "sent {} bytes before the body was complete and kept the connection open{}",
                ex.data.len(),
                if matches!(r, Reply::Bad(_)) {
                    " (not a CGI head)"
                } else {
                    ""
                }
            ),
        ),
        (r, true) => broken(
            check,
            "SCGI-3-11",
            format!(
                "answered {} and {} after {ms} ms with 90 of 100 body bytes missing: took the short body as complete",
                match r {
                    Reply::Head(head, _) => head.status_code().to_string(),
                    _ => "(no CGI status)".into(),
                },
                ex.how_closed()
            ),
        ),
    }])
}

/// Judges a request that the server may accept or refuse: `refused` / `accepted` give
/// the finding for each outcome; a hang is a FAIL of SCGI-2-3 (SCGI-T-6).
fn judge(
    check: &str,
    ctx: &Ctx<'_>,
    ex: &Exchange,
    what: &str,
    refused: impl FnOnce(String) -> Finding,
    accepted: impl FnOnce(String) -> Finding,
) -> Vec<Finding> {
    let mut out = vec![match reaction(ex) {
        Reaction::Refused(how) => refused(format!("{what}: {how}")),
        Reaction::Accepted(how) => accepted(format!("{what}: {how}")),
        Reaction::Hang => broken(
            check,
            "SCGI-2-3",
            format!("{what}: neither answered nor closed within {:?}", ctx.limit),
        ),
    }];
    out.extend(close_finding(check, ex, ctx.limit));
    out
}

/// T-9: an empty value is accepted (SCGI-AMB-2).
fn empty_value(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| p.push((b"HTTP_X_EMPTY".to_vec(), Vec::new())));
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "a header with an empty value",
        |o| {
            info(
                check,
                "SCGI-AMB-2",
                format!("{o} (refused, as the 2003 draft read it)"),
            )
        },
        |o| pass(check, "SCGI-AMB-2", o),
    ))
}

/// SCGI-AMB-7: leading zeros in CONTENT_LENGTH.
fn content_length_zeros(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let mut bytes = netstring_ok(&ctx.block("005", |_| {}));
    bytes.extend_from_slice(b"hello");
    let ex = ctx.run(bytes)?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "CONTENT_LENGTH 005",
        |o| info(check, "SCGI-AMB-7", o),
        |o| info(check, "SCGI-AMB-7", o),
    ))
}

/// T-7: no SCGI header.
fn scgi_missing(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| p.retain(|(n, _)| n != b"SCGI"));
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "no SCGI header",
        |o| info(check, "SCGI-AMB-8", o),
        |o| info(check, "SCGI-AMB-8", o),
    ))
}

/// T-7: SCGI = 2.
fn scgi_2(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| {
        if let Some(v) = p.iter_mut().find(|(n, _)| n == b"SCGI") {
            v.1 = b"2".to_vec();
        }
    });
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "SCGI header 2",
        |o| info(check, "SCGI-AMB-8", o),
        |o| info(check, "SCGI-AMB-8", o),
    ))
}

/// T-8: a duplicate name.
fn duplicate_name(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| {
        p.push((b"REQUEST_METHOD".to_vec(), b"POST".to_vec()));
    });
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "REQUEST_METHOD twice",
        |o| pass(check, "SCGI-AMB-3", o),
        |o| info(check, "SCGI-3-3", format!("{o} (lenient)")),
    ))
}

/// T-6: CONTENT_LENGTH second.
fn content_length_not_first(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| p.swap(0, 1));
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "CONTENT_LENGTH as the second header",
        |o| pass(check, "SCGI-3-4", o),
        |o| info(check, "SCGI-3-4", format!("{o} (lenient)")),
    ))
}

/// T-6: no CONTENT_LENGTH.
fn content_length_missing(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |p| {
        p.remove(0);
    });
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "no CONTENT_LENGTH",
        |o| pass(check, "SCGI-3-6", o),
        |o| info(check, "SCGI-3-6", format!("{o} (lenient)")),
    ))
}

/// T-6: CONTENT_LENGTH "abc".
fn content_length_non_numeric(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("abc", |_| {});
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "CONTENT_LENGTH abc",
        |o| pass(check, "SCGI-3-5", o),
        |o| info(check, "SCGI-3-5", format!("{o} (lenient)")),
    ))
}

/// T-9: a header block without its final NUL.
fn truncated_block(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let mut block = ctx.block("0", |_| {});
    block.pop();
    let ex = ctx.run(netstring_ok(&block))?;
    Ok(judge(
        check,
        ctx,
        &ex,
        "a header block without its final NUL",
        |o| pass(check, "SCGI-3-2", o),
        |o| info(check, "SCGI-3-2", format!("{o} (lenient)")),
    ))
}

/// T-3, T-4: a malformed netstring must be rejected (SCGI-4-5).
fn netstring_check(ctx: &Ctx<'_>, check: &str, bytes: Vec<u8>, what: &str) -> Vec<Finding> {
    match ctx.run(bytes) {
        Ok(ex) => {
            let mut out = vec![match reaction(&ex) {
                Reaction::Refused(how) => pass(check, "SCGI-4-5", format!("{what}: {how}")),
                Reaction::Accepted(how) => {
                    broken(check, "SCGI-4-5", format!("{what}: not rejected, {how}"))
                }
                Reaction::Hang => broken(
                    check,
                    "SCGI-4-5",
                    format!(
                        "{what}: neither rejected nor answered within {:?}",
                        ctx.limit
                    ),
                ),
            }];
            out.extend(close_finding(check, &ex, ctx.limit));
            out
        }
        Err(e) => vec![Finding::error(
            check,
            "SCGI-4-5",
            Level::Must,
            Side::App,
            format!("connection failed: {e}"),
        )],
    }
}

/// T-3: `0NN:` (SCGI-4-2).
fn leading_zero(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |_| {});
    let len = format!("0{}", block.len());
    let what = format!("netstring length {len}: (leading zero)");
    Ok(netstring_check(
        ctx,
        check,
        netstring(&len, &block, b","),
        &what,
    ))
}

/// T-4: `;` instead of the comma.
fn missing_comma(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |_| {});
    let bytes = netstring(&block.len().to_string(), &block, b";");
    Ok(netstring_check(
        ctx,
        check,
        bytes,
        "';' instead of the netstring's ','",
    ))
}

/// T-4: a non-digit in the length.
fn length_non_digit(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |_| {});
    let mut len = block.len().to_string();
    len.insert(1, 'x');
    let what = format!("netstring length {len}: (a non-digit)");
    Ok(netstring_check(
        ctx,
        check,
        netstring(&len, &block, b","),
        &what,
    ))
}

/// T-4: `:…` with no length.
fn length_empty(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    let block = ctx.block("0", |_| {});
    Ok(netstring_check(
        ctx,
        check,
        netstring("", &block, b","),
        "an empty netstring length",
    ))
}

/// T-5: a length far beyond any sane header block, with the connection held open.
fn huge(ctx: &Ctx<'_>, check: &str, len: &str) -> io::Result<Vec<Finding>> {
    let bytes = netstring(len, b"CONTENT_LENGTH\x000\x00SCGI\x001\x00", b"");
    let ex = ctx.run(bytes)?;
    let what = format!("netstring length {len} ({} digits)", len.len());
    let mut out = vec![match reaction(&ex) {
        Reaction::Refused(how) => pass(
            check,
            "SCGI-AMB-4",
            format!("{what}: {how}, without waiting for the block"),
        ),
        Reaction::Accepted(how) => info(check, "SCGI-AMB-4", format!("{what}: {how}")),
        Reaction::Hang => info(
            check,
            "SCGI-AMB-4",
            format!(
                "{what}: waited {:?} for the header block (no cap on the length)",
                ctx.limit
            ),
        ),
    }];
    out.extend(close_finding(check, &ex, ctx.limit));
    Ok(out)
}

fn huge_length(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    huge(ctx, check, "99999999999999999999")
}

fn huge_length_1g(ctx: &Ctx<'_>, check: &str) -> io::Result<Vec<Finding>> {
    huge(ctx, check, "1073741824")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("scgi://127.0.0.1:9000", "scgi"),
            Some(Target::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!(
            Target::parse("scgi+unix:/run/x.sock", "scgi"),
            Some(Target::Unix("/run/x.sock".into()))
        );
        assert_eq!(Target::parse("scgi://nohost", "scgi"), None);
        assert_eq!(Target::parse("fastcgi://127.0.0.1:9000", "scgi"), None);
    }

    #[test]
    fn at_least_fifteen_checks_with_unique_slugs() {
        let mut names = check_names();
        assert!(names.len() >= 15);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
    }

    #[test]
    fn scgi_5_1_example_is_the_spec_vector() {
        assert!(matches!(
            scgi::parse_request(EXAMPLE, &scgi::Limits::default()),
            Ok(Status::Complete((_, 74)))
        ));
    }

    #[test]
    fn occurrences_count_non_overlapping() {
        assert_eq!(occurrences(b"abab ab", b"ab"), 3);
        assert_eq!(occurrences(b"aaa", b"aa"), 1);
        assert_eq!(occurrences(b"x", b""), 0);
    }
}
