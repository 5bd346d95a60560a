//! `portico probe --serve scgi://HOST:PORT` (or `scgi+unix:/path`): the SCGI checker turned
//! around (`shared/specs/scgi.md`, test ideas SCGI-T-13 and SCGI-T-16). portico listens as a
//! strict SCGI server; for each connection (one request, SCGI-2-4) it reads the netstring
//! head byte by byte as sent — the length digits are judged before `proto::scgi::
//! parse_netstring` frames the block, and the pairs are walked by hand so that every
//! problem is reported rather than the first — then the body, and reports, per request,
//! every clause the web server breaks: no leading zeros in the netstring length
//! (SCGI-4-2), a length that matches the block and a closing comma (SCGI-3-9), NUL-
//! terminated pairs with non-empty names (SCGI-2-2 with SCGI-3-2), no name twice
//! (SCGI-3-3), CONTENT_LENGTH first (SCGI-3-4), a non-empty decimal value (SCGI-3-5,
//! SCGI-AMB-7) that is always there, `0` without a body (SCGI-3-6), `SCGI` = `1`
//! (SCGI-3-7, SCGI-AMB-8), and a body of exactly CONTENT_LENGTH bytes right after the
//! comma with nothing after it (SCGI-3-10). The CGI meta-variables are checked as for a
//! CGI program ([`super::serve_cgi`]): the set a request should carry (SCGI-3-8), their
//! values and consistency (RFC 3875 §4.1), and no HTTP_PROXY from a client `Proxy:` header
//! (SCGI-RW-7, CGI-RW-6).
//!
//! Each request is answered with a small valid CGI response (`Status: 200 OK`, a text body
//! listing what broke), then the connection is closed (SCGI-2-3). Findings are printed as
//! each request is answered (text format) and summed up at the end: after `--requests N`
//! requests, or on SIGINT/SIGTERM. The exit status is 1 if any FAIL.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proto::Status;
use proto::scgi::{Error as ScgiError, parse_netstring};

use super::ProbeArgs;
use super::Target;
use super::fastcgi::Stream;
use super::report::{Finding, Verdict};
use super::serve::{Shared, run_server};
use super::serve_cgi::{Env, Sink, Via, meta_findings};

/// The largest header block portico waits for (SCGI-AMB-4: the specification sets none).
const MAX_HEAD: usize = 1024 * 1024;

/// The largest body portico keeps reading.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// After the body, how long portico watches for bytes that should not be there.
const AFTER_BODY: Duration = Duration::from_millis(50);

/// More digits than this before the colon is not a length.
const MAX_DIGITS: usize = 20;

/// `portico probe --serve scgi://…`: listens until `--requests` or a signal, then prints
/// the summary; the exit status is 1 if any FAIL.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let first = args.target.first().map(String::as_str).unwrap_or_default();
    let Some(target) = Target::parse(first, "scgi") else {
        eprintln!(
            "portico probe --serve: expected scgi://HOST:PORT or scgi+unix:/path, got {first:?}"
        );
        return ExitCode::from(2);
    };
    run_server(args, &target, "scgi", serve_conn)
}

// ---------------------------------------------------------------------------------------------
// One connection, one request

/// Why portico stopped reading the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The head and CONTENT_LENGTH body bytes came (and then [`AFTER_BODY`] passed).
    Complete,
    /// The head is malformed beyond framing: portico stopped reading.
    Malformed,
    /// The web server closed (or shut down writing) first.
    Eof,
    /// Nothing more came within the time limit.
    Idle,
    /// portico was stopped.
    Stopped,
}

/// How many bytes the whole request takes, as far as `data` shows: `Ok(None)` while the
/// head is incomplete, `Ok(Some(n))` once it is framed, `Err(())` when it cannot be.
fn expected_total(data: &[u8]) -> Result<Option<usize>, ()> {
    let Some(head) = frame(data, false)? else {
        return Ok(None);
    };
    let cl = pairs(head.block)
        .pairs
        .iter()
        .find(|(n, _)| *n == b"CONTENT_LENGTH")
        .and_then(|(_, v)| decimal(v))
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    Ok(Some(head.body_start.saturating_add(cl)))
}

/// The framed head: the header block and where the body starts.
struct Head<'a> {
    /// The netstring length digits as sent.
    digits: &'a [u8],
    /// The declared length.
    declared: usize,
    block: &'a [u8],
    body_start: usize,
    /// The length does not match the block (found by walking the pairs to the comma).
    misframed: bool,
}

/// Frames the netstring head (SCGI-4-1): `Ok(None)` while incomplete, `Err(())` when the
/// bytes cannot be a netstring. With `last` (no more bytes will come), a block shorter than
/// its declared length is found by walking the pairs to the comma.
fn frame(data: &[u8], last: bool) -> Result<Option<Head<'_>>, ()> {
    let n = data.iter().take_while(|b| b.is_ascii_digit()).count();
    if n > MAX_DIGITS {
        return Err(());
    }
    if n == data.len() {
        return Ok(None);
    }
    if n == 0 || data.get(n) != Some(&b':') {
        return Err(());
    }
    let digits = &data[..n];
    let declared = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or(())?;
    if declared > MAX_HEAD {
        return Err(());
    }
    // Leading zeros are judged by the caller (SCGI-4-2); frame without them.
    let zeros = digits.iter().take_while(|&&b| b == b'0').count().min(n - 1);
    let block_start = n + 1;
    match parse_netstring(&data[zeros..], MAX_HEAD) {
        Ok(Status::Complete((block, used))) => Ok(Some(Head {
            digits,
            declared,
            block,
            body_start: zeros + used,
            misframed: false,
        })),
        Ok(Status::Partial) if !last => Ok(None),
        Ok(Status::Partial) | Err(ScgiError::MissingComma) => {
            let partial = data.len() <= block_start + declared;
            match block_end(data, block_start) {
                Some(end) => Ok(Some(Head {
                    digits,
                    declared,
                    block: &data[block_start..end],
                    body_start: end + 1,
                    misframed: true,
                })),
                None if partial => Ok(None),
                None => Err(()),
            }
        }
        Err(_) => Err(()),
    }
}

/// Where the header block really ends when its declared length is wrong: the first comma
/// right after a NUL that closes an even number of NUL-terminated strings.
fn block_end(data: &[u8], start: usize) -> Option<usize> {
    let mut nuls = 0usize;
    let mut prev = None;
    for (i, &b) in data.iter().enumerate().skip(start) {
        if b == b',' && prev == Some(0) && nuls > 0 && nuls % 2 == 0 {
            return Some(i);
        }
        if b == 0 {
            nuls += 1;
        }
        prev = Some(b);
    }
    None
}

/// A header block walked pair by pair (SCGI-3-2), keeping going past problems.
struct Pairs<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
    /// Bytes at the end that are not a whole name NUL value NUL.
    unterminated: usize,
    empty_names: usize,
}

fn pairs(block: &[u8]) -> Pairs<'_> {
    let mut out = Pairs {
        pairs: Vec::new(),
        unterminated: 0,
        empty_names: 0,
    };
    let mut rest = block;
    while !rest.is_empty() {
        let Some(a) = rest.iter().position(|&b| b == 0) else {
            out.unterminated = rest.len();
            break;
        };
        let Some(b) = rest[a + 1..].iter().position(|&b| b == 0) else {
            out.unterminated = rest.len();
            break;
        };
        let (name, value) = (&rest[..a], &rest[a + 1..a + 1 + b]);
        if name.is_empty() {
            out.empty_names += 1;
        }
        out.pairs.push((name, value));
        rest = &rest[a + b + 2..];
    }
    out
}

/// A non-empty run of ASCII digits (SCGI-3-5), as a number.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// What one request was, for its title and reply.
pub(crate) struct Judged {
    /// The findings.
    pub(crate) findings: Vec<Finding>,
    /// Headers sent.
    pub(crate) headers: usize,
    /// Body bytes received.
    pub(crate) body: usize,
    /// The CONTENT_LENGTH value, as sent.
    pub(crate) content_length: Option<String>,
}

/// Judges everything the web server sent on one connection (`data`), given how reading
/// ended. `waited` is the time limit that applied.
pub(crate) fn judge(data: &[u8], end: End, waited: Duration, check: &str) -> Judged {
    let mut o = Sink::new(check);
    let mut j = Judged {
        findings: Vec::new(),
        headers: 0,
        body: 0,
        content_length: None,
    };
    let how = match end {
        End::Eof => "then the web server closed the connection".to_owned(),
        End::Idle => format!("then nothing for {:.1} s", waited.as_secs_f64()),
        End::Stopped => "then portico stopped".to_owned(),
        End::Complete | End::Malformed => String::new(),
    };
    if data.is_empty() {
        match end {
            End::Idle => o.broken(
                "SCGI-2-2",
                format!(
                    "no request: nothing sent within {:.1} s of connecting",
                    waited.as_secs_f64()
                ),
            ),
            _ => o.info(
                "SCGI-2-2",
                format!("a connection without a request ({how})"),
            ),
        }
        j.findings = o.into_findings();
        return j;
    }
    let head = match frame(data, true) {
        Ok(Some(h)) => h,
        Ok(None) => {
            let n = data.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == data.len() {
                o.broken(
                    "SCGI-3-9",
                    format!(
                        "the netstring length {} never ended with `:`, {how}",
                        show(data)
                    ),
                );
            } else {
                let declared = std::str::from_utf8(&data[..n])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0);
                o.broken(
                    "SCGI-3-9",
                    format!(
                        "the netstring declares {declared} bytes but only {} came, {how}",
                        data.len() - n - 1
                    ),
                );
                if n > 1 && data.first() == Some(&b'0') {
                    o.broken(
                        "SCGI-4-2",
                        format!("netstring length {} has a leading zero", show(&data[..n])),
                    );
                }
            }
            j.findings = o.into_findings();
            return j;
        }
        Err(()) => {
            let n = data.iter().take_while(|b| b.is_ascii_digit()).count();
            let start: String = show(&data[..data.len().min(24)]);
            let why = if n > MAX_DIGITS || n > 0 && data.get(n) == Some(&b':') {
                format!(
                    "the netstring length {} is over portico's {MAX_HEAD}-byte cap (SCGI-AMB-4), \
                     or no comma ends the block",
                    show(&data[..n.min(MAX_DIGITS + 1)])
                )
            } else {
                format!("the request does not start with a netstring length: {start:?}")
            };
            o.broken("SCGI-3-9", why);
            j.findings = o.into_findings();
            return j;
        }
    };
    // SCGI-4-2: no leading zeros in the length.
    if head.digits.len() > 1 && head.digits.first() == Some(&b'0') {
        o.broken(
            "SCGI-4-2",
            format!("netstring length {} has a leading zero", show(head.digits)),
        );
    } else {
        o.pass(
            "SCGI-4-2",
            format!(
                "netstring length {} without leading zeros",
                show(head.digits)
            ),
        );
    }
    // SCGI-3-9: the length is the block's, and a comma closes it.
    if head.misframed {
        o.broken(
            "SCGI-3-9",
            format!(
                "the netstring length says {} bytes, but the header block runs {} bytes to its comma",
                head.declared,
                head.block.len()
            ),
        );
    } else {
        o.pass(
            "SCGI-3-9",
            format!(
                "a netstring of {} bytes closed by a comma",
                head.block.len()
            ),
        );
    }
    // SCGI-3-2 (judged under SCGI-2-2): whole NUL-terminated pairs, names non-empty.
    let p = pairs(head.block);
    j.headers = p.pairs.len();
    let mut malformed = Vec::new();
    if p.unterminated > 0 {
        malformed.push(format!(
            "the block ends with {} bytes that are not a NUL-terminated name and value",
            p.unterminated
        ));
    }
    if p.empty_names > 0 {
        malformed.push(format!("{} header(s) with an empty name", p.empty_names));
    }
    if malformed.is_empty() {
        o.pass(
            "SCGI-2-2",
            format!("{} NUL-terminated headers (SCGI-3-2)", p.pairs.len()),
        );
    } else {
        o.broken(
            "SCGI-2-2",
            format!("not a §3 header block (SCGI-3-2): {}", malformed.join("; ")),
        );
    }
    let empty: Vec<String> = p
        .pairs
        .iter()
        .filter(|(n, v)| v.is_empty() && !n.is_empty())
        .map(|(n, _)| show(n))
        .collect();
    if !empty.is_empty() {
        o.info(
            "SCGI-AMB-2",
            format!("empty values (allowed): {}", empty.join(", ")),
        );
    }
    // SCGI-3-3: no name twice.
    let mut seen: Vec<(&[u8], usize)> = Vec::new();
    for (n, _) in &p.pairs {
        match seen.iter_mut().find(|(m, _)| m == n) {
            Some((_, c)) => *c += 1,
            None => seen.push((n, 1)),
        }
    }
    let dups: Vec<String> = seen
        .iter()
        .filter(|(_, c)| *c > 1)
        .map(|(n, c)| format!("{} ({c} times)", show(n)))
        .collect();
    if dups.is_empty() {
        o.pass("SCGI-3-3", format!("{} distinct names", seen.len()));
    } else {
        o.broken("SCGI-3-3", format!("names sent twice: {}", dups.join(", ")));
    }
    // SCGI-3-4, SCGI-3-5, SCGI-3-6: CONTENT_LENGTH, first, decimal, always.
    let cl_at = p.pairs.iter().position(|(n, _)| *n == b"CONTENT_LENGTH");
    let cl_value = cl_at.and_then(|i| p.pairs.get(i)).map(|(_, v)| *v);
    j.content_length = cl_value.map(|v| String::from_utf8_lossy(v).into_owned());
    let cl = cl_value.and_then(decimal);
    match cl_at {
        Some(0) => o.pass("SCGI-3-4", "CONTENT_LENGTH is the first header"),
        Some(i) => o.broken(
            "SCGI-3-4",
            format!(
                "CONTENT_LENGTH is header {} of {}; the first is {}",
                i + 1,
                p.pairs.len(),
                p.pairs.first().map_or_else(String::new, |(n, _)| show(n))
            ),
        ),
        None => o.broken("SCGI-3-6", "no CONTENT_LENGTH header"),
    }
    if let Some(v) = cl_value {
        match cl {
            Some(n) => {
                o.pass("SCGI-3-5", format!("CONTENT_LENGTH={}", show(v)));
                if v.len() > 1 && v.first() == Some(&b'0') {
                    o.info(
                        "SCGI-AMB-7",
                        format!("CONTENT_LENGTH={} has leading zeros", show(v)),
                    );
                }
                o.pass(
                    "SCGI-3-6",
                    if n == 0 {
                        "CONTENT_LENGTH=0 sent for a request without a body".to_owned()
                    } else {
                        format!("CONTENT_LENGTH={n} sent")
                    },
                );
            }
            None => o.broken(
                "SCGI-3-5",
                format!(
                    "CONTENT_LENGTH={:?} is not a non-empty run of decimal digits",
                    show(v)
                ),
            ),
        }
    }
    // SCGI-3-7: SCGI=1.
    match p.pairs.iter().find(|(n, _)| *n == b"SCGI").map(|(_, v)| *v) {
        Some(b"1") => o.pass("SCGI-3-7", "SCGI=1"),
        Some(v) => {
            o.broken("SCGI-3-7", format!("SCGI={}, not 1", show(v)));
            o.info(
                "SCGI-AMB-8",
                "portico's SCGI listener refuses an SCGI value other than 1",
            );
        }
        None => {
            o.broken("SCGI-3-7", "no SCGI header");
            o.info(
                "SCGI-AMB-8",
                "portico's SCGI listener accepts a request without SCGI, with a warning",
            );
        }
    }
    // SCGI-3-10: exactly CONTENT_LENGTH body bytes after the comma, nothing after them.
    let got = data.len().saturating_sub(head.body_start);
    j.body = got;
    let want = cl.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let label = if cl.is_some() {
        format!("CONTENT_LENGTH {want}")
    } else {
        "an unreadable CONTENT_LENGTH (taken as 0)".to_owned()
    };
    if got < want {
        o.broken(
            "SCGI-3-10",
            format!("only {got} body bytes of {label}, {how}"),
        );
    } else if got > want {
        j.body = want;
        o.broken(
            "SCGI-3-10",
            format!(
                "{} bytes after the body of {label}: nothing may follow it (one request per \
                 connection, SCGI-2-4)",
                got - want
            ),
        );
    } else {
        o.pass(
            "SCGI-3-10",
            format!("a body of exactly {want} bytes right after the comma"),
        );
    }
    if end == End::Eof && got >= want {
        o.info(
            "SCGI-AMB-6",
            "the web server shut down its side after the request (before the response)",
        );
    }
    // SCGI-3-8, SCGI-RW-7 and RFC 3875 §4.1: the CGI meta-variables.
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (n, v) in &p.pairs {
        if !env.iter().any(|(m, _)| m == n) {
            env.push((n.to_vec(), v.to_vec()));
        }
    }
    meta_findings(&Env(&env), Via::Scgi, &mut o);
    j.findings = o.into_findings();
    j
}

fn serve_conn(mut s: Stream, conn_no: usize, sh: &Shared) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_write_timeout(Some(sh.timeout.max(Duration::from_secs(1))));
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    let mut complete_at: Option<Instant> = None;
    let end = loop {
        if sh.stop.load(Ordering::SeqCst) {
            break End::Stopped;
        }
        match s.read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => {
                data.extend_from_slice(buf.get(..n).unwrap_or_default());
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break End::Eof,
        }
        if let Some(at) = complete_at {
            if at.elapsed() >= AFTER_BODY {
                break End::Complete;
            }
            continue;
        }
        match expected_total(&data) {
            Err(()) => break End::Malformed,
            Ok(Some(total)) if data.len() >= total => complete_at = Some(Instant::now()),
            _ if data.len() > MAX_HEAD + MAX_BODY => break End::Malformed,
            _ if last.elapsed() >= sh.timeout => break End::Idle,
            _ => {}
        }
    };
    if data.is_empty() && matches!(end, End::Stopped | End::Eof) {
        // A port check, or a web server's spare connection: not a request (SCGI-2-4).
        if end == End::Eof {
            let j = judge(&data, end, sh.timeout, &format!("connection-{conn_no}"));
            sh.publish(&format!("connection {conn_no} (no request)"), j.findings);
        }
        return;
    }
    let no = sh.next_request.fetch_add(1, Ordering::SeqCst);
    let j = judge(&data, end, sh.timeout, &format!("request-{no}"));
    let title = format!(
        "request {no} (connection {conn_no}, CONTENT_LENGTH {}, {} headers, {} body bytes)",
        j.content_length.as_deref().unwrap_or("none"),
        j.headers,
        j.body
    );
    let mut body = format!(
        "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nportico probe --serve: {title}\n"
    );
    let broken: Vec<&Finding> = j
        .findings
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
    if end != End::Stopped {
        let _ = s.write_all(body.as_bytes());
        let _ = s.flush();
    }
    // SCGI-2-3: the response ends with the close. Read what is left first (SCGI-AMB-5), so
    // that unread bytes do not turn the close into a reset that destroys the response.
    let _ = s.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    sh.publish(&title, j.findings);
    sh.served_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(data: &[u8], end: End) -> Vec<String> {
        judge(data, end, Duration::from_secs(1), "t")
            .findings
            .into_iter()
            .filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::Warn))
            .map(|f| f.clause)
            .collect()
    }

    const META: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/deepthought"),
        (b"QUERY_STRING", b""),
        (b"SCRIPT_NAME", b"/deepthought"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"HTTP_HOST", b"localhost"),
    ];

    fn good(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        proto::scgi::encode_request(META.iter().copied(), body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn scgi_t_13_good_request_nothing_flagged() {
        let wire = good(b"What is the answer to life?");
        assert_eq!(expected_total(&wire), Ok(Some(wire.len())));
        assert!(flagged(&wire, End::Complete).is_empty());
    }

    #[test]
    fn scgi_4_2_leading_zero_framed_and_flagged() {
        let mut wire = b"0".to_vec();
        wire.extend(good(b"xy"));
        assert_eq!(expected_total(&wire), Ok(Some(wire.len())));
        assert_eq!(flagged(&wire, End::Complete), ["SCGI-4-2"]);
    }

    #[test]
    fn scgi_3_9_wrong_length_found_by_the_pair_walk() {
        let wire = good(b"");
        let colon = wire.iter().position(|&b| b == b':').unwrap_or(0);
        let declared: usize = std::str::from_utf8(&wire[..colon])
            .unwrap()
            .parse()
            .unwrap();
        let mut bad = format!("{}", declared - 3).into_bytes();
        bad.extend_from_slice(&wire[colon..]);
        assert_eq!(flagged(&bad, End::Complete), ["SCGI-3-9"]);
    }

    #[test]
    fn scgi_3_9_too_long_length_found_at_the_end() {
        let wire = good(b"");
        let colon = wire.iter().position(|&b| b == b':').unwrap_or(0);
        let declared: usize = std::str::from_utf8(&wire[..colon])
            .unwrap()
            .parse()
            .unwrap();
        let mut bad = format!("{}", declared + 30).into_bytes();
        bad.extend_from_slice(&wire[colon..]);
        assert_eq!(expected_total(&bad), Ok(None));
        assert_eq!(flagged(&bad, End::Idle), ["SCGI-3-9"]);
    }

    #[test]
    fn scgi_3_10_extra_and_missing_body_bytes() {
        let mut wire = good(b"abc");
        wire.extend_from_slice(b"zz");
        assert_eq!(flagged(&wire, End::Complete), ["SCGI-3-10"]);
        let wire = good(b"abc");
        assert_eq!(flagged(&wire[..wire.len() - 1], End::Eof), ["SCGI-3-10"]);
    }
}
