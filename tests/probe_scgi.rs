//! The SCGI and CGI checkers checked: `portico probe scgi://…` against a small,
//! deliberately faulty SCGI server (std threads + `proto::scgi`) with each fault switched
//! on alone must flag exactly the clauses that fault breaks, and nothing (no FAIL, WARN or
//! ERROR) with every fault off; portico's own SCGI listener gets no FAIL; and
//! `portico probe cgi …` on fixtures/cgi scripts.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proto::Status;
use proto::scgi;
use support::Portico;

/// What the faulty server gets wrong; all off is a correct server.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Accepts `070:` (leading zeros in the netstring length): breaks SCGI-4-5.
    leading_zero: bool,
    /// Answers 200 right after the header, before the body is complete: SCGI-3-11.
    early_answer: bool,
    /// Keeps the connection open after the reply: SCGI-2-3.
    no_close: bool,
    /// Replies without Status, Location or Content-Type: CGI-6.3-2.
    no_cgi_field: bool,
    /// Takes bytes after the body as a second request: SCGI-3-11.
    extra_as_second: bool,
    /// Stops serving altogether on a netstring length of 10 digits or more: SCGI-2-3.
    crash_on_huge_length: bool,
    /// Hangs (neither replies nor closes) on a non-numeric CONTENT_LENGTH: SCGI-2-3.
    hang_on_bad_length: bool,
}

/// Starts the faulty server on a free port; it runs until the test process ends (or,
/// with `crash_on_huge_length`, until it "crashes").
fn faulty(faults: Faults) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let crashed = Arc::new(AtomicBool::new(false));
    thread::spawn(move || {
        for conn in listener.incoming() {
            if crashed.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let crashed = crashed.clone();
            thread::spawn(move || serve(conn, faults, &crashed));
        }
        // The listener is dropped here: later connects are refused.
    });
    addr
}

fn reply_ok(faults: Faults) -> &'static [u8] {
    if faults.no_cgi_field {
        b"X-Probe: faulty\r\n\r\nok\n"
    } else {
        b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok\n"
    }
}

const REPLY_400: &[u8] =
    b"Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad request\n";

/// Reads more into `buf`; false on end of file, error or timeout.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Ends a connection after a reply: closes it (FIN, then drains what the client still
/// sends for a moment), or with `no_close` waits for the client to give up.
fn finish(mut s: TcpStream, faults: Faults) {
    if faults.no_close {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = s.read_to_end(&mut Vec::new());
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.read_to_end(&mut Vec::new());
}

fn serve(mut s: TcpStream, faults: Faults, crashed: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let limits = scgi::Limits::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The header netstring.
        let (content_length, used) = loop {
            if faults.leading_zero {
                while buf.len() > 1 && buf[0] == b'0' && buf[1].is_ascii_digit() {
                    buf.remove(0);
                }
            }
            if faults.crash_on_huge_length
                && buf.iter().take_while(|b| b.is_ascii_digit()).count() >= 10
            {
                crashed.store(true, Ordering::SeqCst);
                return;
            }
            match scgi::parse_request(&buf, &limits) {
                Ok(Status::Complete((req, n))) => break (req.content_length as usize, n),
                Ok(Status::Partial) => {
                    if !fill(&mut s, &mut buf) {
                        return;
                    }
                }
                Err(scgi::Error::InvalidContentLength) if faults.hang_on_bad_length => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = s.read_to_end(&mut Vec::new());
                    return;
                }
                Err(_) => {
                    let _ = s.write_all(REPLY_400);
                    finish(s, faults);
                    return;
                }
            }
        };
        // The body: exactly CONTENT_LENGTH bytes after the comma (unless answering early).
        if faults.early_answer {
            let _ = s.write_all(reply_ok(faults));
            let _ = s.shutdown(Shutdown::Write);
            while buf.len() < used + content_length && fill(&mut s, &mut buf) {}
            return;
        }
        while buf.len() < used + content_length {
            if !fill(&mut s, &mut buf) {
                return;
            }
        }
        if s.write_all(reply_ok(faults)).is_err() {
            return;
        }
        if faults.extra_as_second {
            let mut rest = buf.split_off(used + content_length);
            if rest.is_empty() {
                let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                fill(&mut s, &mut rest);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            }
            if !rest.is_empty() {
                buf = rest;
                continue;
            }
        }
        finish(s, faults);
        return;
    }
}

/// One report line: (verdict, clause, check).
type Line = (String, String, String);

/// Runs `portico probe ARGS…` and returns the report lines and the exit code.
fn probe(args: &[&str]) -> (Vec<Line>, i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run portico probe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let verdict = words.next()?;
            if !["PASS", "INFO", "WARN", "FAIL", "ERROR"].contains(&verdict) {
                return None;
            }
            let clause = words.next()?;
            let check = l.rsplit_once(" [")?.1.strip_suffix(']')?;
            Some((verdict.to_string(), clause.to_string(), check.to_string()))
        })
        .collect();
    (lines, out.status.code().unwrap_or(-1), text)
}

fn probe_scgi(addr: &str) -> (Vec<Line>, i32, String) {
    probe(&[&format!("scgi://{addr}"), "--check-timeout", "1s"])
}

/// The (clause, check) pairs with a FAIL or WARN verdict.
fn flagged(lines: &[Line]) -> BTreeSet<(String, String)> {
    lines
        .iter()
        .filter(|(v, _, _)| v == "FAIL" || v == "WARN")
        .map(|(_, c, k)| (c.clone(), k.clone()))
        .collect()
}

fn clauses(lines: &[Line]) -> BTreeSet<String> {
    flagged(lines).into_iter().map(|(c, _)| c).collect()
}

fn errors(lines: &[Line]) -> Vec<&Line> {
    lines.iter().filter(|(v, _, _)| v == "ERROR").collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Asserts that `faults` are flagged on exactly `expect` (clauses), at least on `check`.
fn assert_flags(faults: Faults, expect: &[&str], check: &str) {
    let addr = faulty(faults);
    let (lines, code, text) = probe_scgi(&addr);
    assert_eq!(clauses(&lines), set(expect), "{faults:?}\n{text}");
    assert!(
        flagged(&lines).iter().any(|(_, k)| k == check),
        "{faults:?}: nothing flagged on {check}\n{text}"
    );
    assert_eq!(code, 1, "{text}");
}

/// With every fault off: nothing flagged, no errors, at least 15 checks, exit 0.
/// Covers SCGI-T-1 to SCGI-T-12 on the probe side.
#[test]
fn scgi_2_3_correct_server_passes() {
    let addr = faulty(Faults::default());
    let started = Instant::now();
    let (lines, code, text) = probe_scgi(&addr);
    assert!(flagged(&lines).is_empty(), "{text}");
    assert!(errors(&lines).is_empty(), "{text}");
    let checks: BTreeSet<&str> = lines.iter().map(|(_, _, k)| k.as_str()).collect();
    assert!(checks.len() >= 15, "{checks:?}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().last().is_some_and(|l| l.contains(" 0 FAIL")),
        "{text}"
    );
    // Each check has its own time limit: the whole probe is bounded.
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Fault: leading zeros accepted. Also covers SCGI-4-2, SCGI-T-3.
#[test]
fn scgi_4_5_leading_zero_accepted() {
    assert_flags(
        Faults {
            leading_zero: true,
            ..Faults::default()
        },
        &["SCGI-4-5"],
        "leading-zero",
    );
}

/// Fault: a reply before the body is complete. Also covers SCGI-AMB-5, SCGI-T-11.
#[test]
fn scgi_3_11_early_answer() {
    assert_flags(
        Faults {
            early_answer: true,
            ..Faults::default()
        },
        &["SCGI-3-11"],
        "short-body",
    );
}

/// Fault: no close after the reply. Also covers SCGI-2-4, SCGI-T-12.
#[test]
fn scgi_2_3_no_close() {
    assert_flags(
        Faults {
            no_close: true,
            ..Faults::default()
        },
        &["SCGI-2-3"],
        "close-after-response",
    );
}

/// Fault: a reply without any CGI field. Also covers SCGI-2-6, SCGI-AMB-1.
#[test]
fn cgi_6_3_2_reply_without_cgi_field() {
    assert_flags(
        Faults {
            no_cgi_field: true,
            ..Faults::default()
        },
        &["CGI-6.3-2"],
        "reply-form",
    );
}

/// Fault: extra bytes after the body taken as a second request. Also covers SCGI-2-4,
/// SCGI-T-10.
#[test]
fn scgi_3_11_extra_bytes_as_second_request() {
    assert_flags(
        Faults {
            extra_as_second: true,
            ..Faults::default()
        },
        &["SCGI-3-11"],
        "extra-bytes",
    );
}

/// Fault: the server dies on a 20-digit length; the probe reports it and stops instead
/// of erroring on every later check. Also covers SCGI-AMB-4, SCGI-T-5.
#[test]
fn scgi_2_3_crash_on_huge_length() {
    let addr = faulty(Faults {
        crash_on_huge_length: true,
        ..Faults::default()
    });
    let (lines, code, text) = probe_scgi(&addr);
    assert_eq!(clauses(&lines), set(&["SCGI-2-3"]), "{text}");
    assert!(
        flagged(&lines).contains(&("SCGI-2-3".into(), "huge-length".into())),
        "{text}"
    );
    let errs = errors(&lines);
    assert_eq!(errs.len(), 1, "{text}");
    assert_eq!(errs[0].2, "probe", "{text}");
    assert_eq!(code, 1);
}

/// Fault: a hang on a non-numeric CONTENT_LENGTH (SCGI-T-6: a hang is a failure). Also
/// covers SCGI-3-5.
#[test]
fn scgi_2_3_hang_on_non_numeric_content_length() {
    assert_flags(
        Faults {
            hang_on_bad_length: true,
            ..Faults::default()
        },
        &["SCGI-2-3"],
        "content-length-non-numeric",
    );
}

const PORTICO_SCGI: &str = r#"
[server]
access_log = "off"
[[listen]]
protocol = "scgi"
address = "127.0.0.1:0"
[[route]]
prefix = "/"
handler = "echo"
"#;

/// portico's own SCGI listener: no FAIL, no ERROR.
#[test]
fn scgi_2_3_portico_listener_passes() {
    let p = Portico::start(PORTICO_SCGI);
    let (lines, code, text) = probe(&[
        &format!("scgi://{}", p.addr),
        "--check-timeout",
        "2s",
        "--path",
        "/probe?x=1",
    ]);
    eprintln!("{text}");
    let fails: Vec<&Line> = lines.iter().filter(|(v, _, _)| v == "FAIL").collect();
    assert!(fails.is_empty(), "{text}");
    assert!(errors(&lines).is_empty(), "{text}");
    assert_eq!(code, 0, "{text}");
}

/// Also over a Unix socket (`scgi+unix:`), JSON output.
#[test]
fn scgi_2_1_portico_listener_unix_json() {
    let p = Portico::start(&PORTICO_SCGI.replace(
        "address = \"127.0.0.1:0\"",
        "address = \"unix:{dir}/scgi.sock\"",
    ));
    let sock = p.dir().join("scgi.sock");
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["probe", &format!("scgi+unix:{}", sock.display())])
        .args(["--check-timeout", "2s", "--format", "json"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("{\"target\":\"scgi+unix:"), "{text}");
    assert!(text.contains("\"fail\":0,"), "{text}");
    assert!(text.contains("\"error\":0}"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// `probe cgi`: env.cgi answers every request form correctly (RFC 3875 §6); it prints
/// its body for HEAD too, which CGI-4.3.3-1 forbids, and its text/plain has no charset.
/// Also covers CGI-6.2.1-2, CGI-6.3.1-1.
#[test]
fn cgi_6_3_2_env_cgi_response_forms() {
    let script = support::repo().join("fixtures/cgi/env.cgi");
    let (lines, code, text) = probe(&["cgi", &script.display().to_string()]);
    let fails: BTreeSet<(String, String)> = lines
        .iter()
        .filter(|(v, _, _)| v == "FAIL")
        .map(|(_, c, k)| (c.clone(), k.clone()))
        .collect();
    assert_eq!(
        fails,
        [("CGI-4.3.3-1".to_string(), "head".to_string())].into(),
        "{text}"
    );
    assert!(
        !lines
            .iter()
            .any(|(v, c, _)| c.starts_with("CGI-6.") && v == "FAIL"),
        "{text}"
    );
    for run in ["get", "get-path-info-query", "post", "head"] {
        assert!(
            lines
                .iter()
                .any(|(v, c, k)| v == "PASS" && c == "CGI-6.3-2" && k == run),
            "{run}\n{text}"
        );
    }
    assert!(
        text.contains("INFO CGI-7.2-5 SHOULD ws: LF line ends"),
        "{text}"
    );
    assert_eq!(code, 1);
}

/// `probe cgi`: malformed.cgi's header line without a colon makes its output none of
/// the four response types. Also covers CGI-6.3-3.
#[test]
fn cgi_6_2_2_malformed_cgi_flagged() {
    let script = support::repo().join("fixtures/cgi/malformed.cgi");
    let (lines, code, text) = probe(&["cgi", &script.display().to_string()]);
    assert_eq!(clauses(&lines), set(&["CGI-6.2-2"]), "{text}");
    assert!(text.contains("header line without a colon"), "{text}");
    assert_eq!(code, 1);
}

/// `probe cgi` on an NPH script (recognised by its nph- name) and a client redirect.
/// Also covers CGI-5.2-6, CGI-RW-11, CGI-6.2.3-2.
#[test]
fn cgi_5_2_2_nph_and_redirect_scripts() {
    let nph = support::repo().join("fixtures/cgi/nph-hello.cgi");
    let (lines, _, text) = probe(&["cgi", &nph.display().to_string()]);
    assert!(
        lines
            .iter()
            .any(|(v, c, k)| v == "PASS" && c == "CGI-5.2-2" && k == "get"),
        "{text}"
    );
    assert!(text.contains("INFO CGI-RW-11"), "{text}");
    let redirect = support::repo().join("fixtures/cgi/client-redirect.cgi");
    let (lines, _, text) = probe(&["cgi", &redirect.display().to_string()]);
    assert!(
        lines
            .iter()
            .any(|(v, c, _)| v == "PASS" && c == "CGI-6.2.3-2"),
        "{text}"
    );
    assert!(
        !clauses(&lines).iter().any(|c| c.starts_with("CGI-6.")),
        "{text}"
    );
}
