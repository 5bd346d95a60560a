//! `portico probe cgi PATH`: runs a CGI program directly, as a web server would (an
//! environment of RFC 3875 §4.1 meta-variables, the request body on standard input, the
//! script's directory as working directory), and checks what it prints against the
//! response rules of RFC 3875 §6 (`shared/specs/cgi.md`): a GET without and with
//! PATH_INFO and QUERY_STRING, a POST with a body, and a HEAD. The output head is parsed
//! with `proto::cgi::response::parse_head` and classified with `kind()`; each run has its
//! own time limit (`--check-timeout`) after which the script is killed. A program whose
//! file name starts with `nph-` is checked as an NPH script (CGI-RW-11, RFC 3875 §5).
//!
//! [`response_findings`] and [`head_error`] also judge the CGI-style reply of an SCGI
//! server (see `probe::scgi`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use proto::Status;
use proto::cgi::response::{self as cgi_response, ResponseHead, ResponseKind};

use super::ProbeArgs;
use super::report::{Finding, Level, Report, Side};

/// The level and side of each CGI clause the checks cite (`shared/specs/cgi.md`).
fn clause(id: &str) -> (Level, Side) {
    match id {
        "CGI-6.1-1" | "CGI-6.2-2" | "CGI-6.2.1-2" | "CGI-6.2.4-2" | "CGI-6.3-2" | "CGI-6.3-5"
        | "CGI-6.3.1-1" | "CGI-5.2-2" => (Level::Must, Side::App),
        "CGI-6.2.2-2" | "CGI-6.2.3-2" | "CGI-6.3.4-3" | "CGI-5.2-6" | "CGI-4.3.3-1" => {
            (Level::MustNot, Side::App)
        }
        "CGI-6.3.1-4" | "CGI-3.4-4" => (Level::Should, Side::App),
        "CGI-8.1-1" | "CGI-7.2-5" => (Level::Should, Side::Ws),
        "CGI-6.1-3" => (Level::May, Side::Ws),
        id if id.contains("-RW-") => (Level::Rw, Side::App),
        id if id.contains("-AMB-") => (Level::Amb, Side::App),
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The finding for a response head that `parse_head` refused. A rule stated as MUST is
/// reported under its own clause; a broken grammar fact (a line without a colon, a bad
/// Status value …) means the output is none of the four response types, a FAIL of
/// CGI-6.2-2 naming the fact's clause.
pub fn head_error(check: &str, e: cgi_response::Error) -> Finding {
    use cgi_response::Error as E;
    match e {
        E::NoCgiField | E::DuplicateCgiField | E::ContinuationLine | E::InvalidStatusLine => {
            broken(check, e.clause(), e.to_string())
        }
        E::HeadTooLarge | E::TooManyHeaders => info(
            check,
            e.clause(),
            format!("{e}: beyond portico's documented limits"),
        ),
        E::UnexpectedEof => broken(
            check,
            "CGI-6.2-2",
            "the output ended before the blank line that ends the head (CGI-AMB-6)",
        ),
        _ => broken(check, "CGI-6.2-2", format!("malformed head: {e}")),
    }
}

/// Hop-by-hop fields a script must not send (CGI-6.3.4-3).
const HOP_BY_HOP: &[&str] = &[
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
];

/// The §6 findings for a parsed (non-NPH) response head and its body: a CGI field, the
/// Status syntax, the response type and the rules of that type, Content-Type with a
/// body and its charset, and no hop-by-hop fields. `head_request` adds CGI-4.3.3-1 (no
/// body for HEAD).
pub fn response_findings(
    check: &str,
    head: &ResponseHead<'_>,
    body: &[u8],
    head_request: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    if head.version.is_some() {
        fields.push("a status line");
    }
    if head.status.is_some() {
        fields.push("Status");
    }
    if head.location.is_some() {
        fields.push("Location");
    }
    if head.content_type.is_some() {
        fields.push("Content-Type");
    }
    out.push(pass(
        check,
        "CGI-6.3-2",
        format!("CGI fields: {}", fields.join(", ")),
    ));

    if head.version.is_none()
        && let Some(code) = head.status
    {
        out.push(match head.reason {
            Some(r) => pass(check, "CGI-6.3.3-1", format!("Status: {code} {}", text(r))),
            None => info(
                check,
                "CGI-6.3.3-1",
                format!("Status: {code} without a reason phrase (Apache accepts it, CGI-RW-8)"),
            ),
        });
    }

    let kind = match head.kind() {
        Ok(k) => k,
        Err(e) => {
            out.push(head_error(check, e));
            return out;
        }
    };
    let others: Vec<String> = head.headers.iter().map(|(n, _)| text(n)).collect();
    match kind {
        ResponseKind::Document => {
            out.push(pass(check, "CGI-6.2-2", "a document response"));
            match head.content_type {
                Some(_) => out.push(pass(check, "CGI-6.2.1-2", "Content-Type present")),
                None if !body.is_empty() => {}
                None => out.push(info(
                    check,
                    "CGI-6.2.1-2",
                    format!(
                        "a document without Content-Type and without body (status {})",
                        head.status_code()
                    ),
                )),
            }
        }
        ResponseKind::LocalRedirect => {
            out.push(pass(check, "CGI-6.2-2", "a local redirect response"));
            if !others.is_empty() || !body.is_empty() {
                out.push(broken(
                    check,
                    "CGI-6.2.2-2",
                    format!(
                        "a local redirect with other fields [{}] and {} body bytes",
                        others.join(", "),
                        body.len()
                    ),
                ));
            } else {
                out.push(pass(check, "CGI-6.2.2-2", "Location only, no body"));
            }
        }
        ResponseKind::ClientRedirect => {
            out.push(pass(check, "CGI-6.2-2", "a client redirect response"));
            let extra: Vec<&String> = others
                .iter()
                .filter(|n| !n.to_ascii_lowercase().starts_with("x-cgi-"))
                .collect();
            if extra.is_empty() {
                out.push(pass(check, "CGI-6.2.3-2", "Location only"));
            } else {
                out.push(broken(
                    check,
                    "CGI-6.2.3-2",
                    format!(
                        "a client redirect with other fields: {}",
                        extra
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        ResponseKind::ClientRedirectWithDocument => {
            out.push(pass(check, "CGI-6.2-2", "a client redirect with document"));
            match head.status {
                Some(code @ 300..=399) => {
                    out.push(pass(check, "CGI-6.2.4-2", format!("Status {code}")))
                }
                other => out.push(broken(
                    check,
                    "CGI-6.2.4-2",
                    format!(
                        "Location, Content-Type and a body, but {}",
                        other.map_or_else(|| "no Status".into(), |c| format!("Status {c}"))
                    ),
                )),
            }
        }
    }
    if let Some(loc) = head.location {
        let form = if kind == ResponseKind::LocalRedirect
            || (loc.starts_with(b"/") && !loc.starts_with(b"//"))
        {
            "a local path"
        } else {
            "an absolute URI"
        };
        out.push(info(
            check,
            "CGI-6.3.2-2",
            format!("Location {} is {form}", text(loc)),
        ));
    }

    if !body.is_empty() && kind != ResponseKind::LocalRedirect {
        out.push(match head.content_type {
            Some(ct) => pass(
                check,
                "CGI-6.3.1-1",
                format!("{} body bytes with Content-Type {}", body.len(), text(ct)),
            ),
            None => broken(
                check,
                "CGI-6.3.1-1",
                format!("{} body bytes without Content-Type", body.len()),
            ),
        });
    }
    if let Some(ct) = head.content_type {
        let lower = text(ct).to_ascii_lowercase();
        if lower.starts_with("text/") {
            out.push(if lower.contains("charset=") {
                pass(check, "CGI-6.3.1-4", format!("charset given: {}", text(ct)))
            } else {
                broken(
                    check,
                    "CGI-6.3.1-4",
                    format!("text type without a charset parameter: {}", text(ct)),
                )
            });
        }
    }
    let hop: Vec<String> = others
        .iter()
        .filter(|n| HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    if !hop.is_empty() {
        out.push(broken(
            check,
            "CGI-6.3.4-3",
            format!("hop-by-hop fields sent: {}", hop.join(", ")),
        ));
    }
    if head_request {
        out.push(if body.is_empty() {
            pass(check, "CGI-4.3.3-1", "no body for HEAD")
        } else {
            broken(
                check,
                "CGI-4.3.3-1",
                format!(
                    "{} body bytes for HEAD (the server must discard them)",
                    body.len()
                ),
            )
        });
    }
    out
}

/// One way of running the script.
struct Run {
    slug: &'static str,
    method: &'static str,
    path_info: Option<&'static str>,
    query: &'static str,
    body: &'static [u8],
}

const RUNS: &[Run] = &[
    Run {
        slug: "get",
        method: "GET",
        path_info: None,
        query: "",
        body: b"",
    },
    Run {
        slug: "get-path-info-query",
        method: "GET",
        path_info: Some("/extra/path"),
        query: "a=1&b=two%20words",
        body: b"",
    },
    Run {
        slug: "post",
        method: "POST",
        path_info: None,
        query: "",
        body: b"name=portico&lang=rust&n=42",
    },
    Run {
        slug: "head",
        method: "HEAD",
        path_info: None,
        query: "",
        body: b"",
    },
];

/// The slugs of the runs, in order.
pub fn run_names() -> Vec<&'static str> {
    RUNS.iter().map(|r| r.slug).collect()
}

/// What a run of the script produced.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The exit status, or `None` when the script was killed at the time limit.
    status: Option<std::process::ExitStatus>,
    elapsed: Duration,
}

/// At most this much output is kept.
const MAX_OUTPUT: usize = 8 << 20;

fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.len() < cap {
                    out.extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
            }
        }
    }
    out
}

/// The RFC 3875 §4.1 environment of a run (plus the usual extensions, CGI-RW-1, and
/// REDIRECT_STATUS for php-cgi, CGI-RW-3), then every `--param`.
fn environment(script: &Path, run: &Run, args: &ProbeArgs) -> Vec<(String, String)> {
    let dir = script.parent().unwrap_or(Path::new("/"));
    let name = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let script_name = if args.path.is_empty() || args.path == "/" {
        format!("/cgi-bin/{name}")
    } else {
        args.path.split('?').next().unwrap_or_default().to_string()
    };
    let mut uri = format!("{script_name}{}", run.path_info.unwrap_or(""));
    if !run.query.is_empty() {
        uri.push('?');
        uri.push_str(run.query);
    }
    let mut env: Vec<(String, String)> = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        (
            "SERVER_SOFTWARE",
            concat!("portico-probe/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("SERVER_NAME", "localhost".into()),
        ("SERVER_PORT", "80".into()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("SERVER_ADDR", "127.0.0.1".into()),
        ("REQUEST_METHOD", run.method.into()),
        ("REQUEST_SCHEME", "http".into()),
        ("REQUEST_URI", uri),
        ("SCRIPT_NAME", script_name),
        ("SCRIPT_FILENAME", script.display().to_string()),
        ("DOCUMENT_ROOT", dir.display().to_string()),
        ("QUERY_STRING", run.query.into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REMOTE_PORT", "40000".into()),
        ("REDIRECT_STATUS", "200".into()),
        ("HTTP_HOST", "localhost".into()),
        ("HTTP_USER_AGENT", "portico-probe".into()),
        ("HTTP_ACCEPT", "*/*".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(pi) = run.path_info {
        env.push(("PATH_INFO".into(), pi.into()));
        env.push(("PATH_TRANSLATED".into(), format!("{}{pi}", dir.display())));
    }
    if run.method == "POST" {
        env.push(("CONTENT_LENGTH".into(), run.body.len().to_string()));
        env.push((
            "CONTENT_TYPE".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    for p in &args.params {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        env.retain(|(k, _)| k != n);
        env.push((n.into(), v.into()));
    }
    env
}

/// Runs the script once; kills it at `limit`.
fn execute(script: &Path, run: &Run, args: &ProbeArgs) -> std::io::Result<Output> {
    let start = Instant::now();
    let dir = script.parent().unwrap_or(Path::new("/"));
    let mut child = Command::new(script)
        .env_clear()
        .envs(environment(script, run, args))
        .current_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let body = run.body;
    if let Some(mut stdin) = child.stdin.take() {
        thread::spawn(move || {
            let _ = stdin.write_all(body);
        });
    }
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((1, read_capped(out, MAX_OUTPUT)));
        });
    }
    if let Some(err) = child.stderr.take() {
        thread::spawn(move || {
            let _ = tx.send((2, read_capped(err, 64 * 1024)));
        });
    }
    let deadline = start + args.check_timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // A grandchild may hold the pipes open: give up on them shortly after.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok((1, v)) => stdout = v,
            Ok((_, v)) => stderr = v,
            Err(_) => break,
        }
    }
    Ok(Output {
        stdout,
        stderr,
        status,
        elapsed: start.elapsed(),
    })
}

/// The findings of one run.
fn judge_run(check: &str, run: &Run, nph: bool, out: &Output, limit: Duration) -> Vec<Finding> {
    let mut f = Vec::new();
    match out.status {
        None => f.push(info(
            check,
            "CGI-6.1-3",
            format!(
                "still running after {limit:?}: killed ({} bytes of output so far)",
                out.stdout.len()
            ),
        )),
        Some(st) if st.success() => f.push(pass(
            check,
            "CGI-3.4-4",
            format!("exit status 0 after {} ms", out.elapsed.as_millis()),
        )),
        Some(st) => f.push(info(
            check,
            "CGI-3.4-4",
            format!(
                "{st} after {} ms{}",
                out.elapsed.as_millis(),
                if out.stderr.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; stderr: {}",
                        text(out.stderr.get(..200).unwrap_or(&out.stderr)).trim_end()
                    )
                }
            ),
        )),
    }
    if out.stdout.is_empty() {
        f.push(broken(check, "CGI-6.1-1", "no output at all"));
        return f;
    }
    f.push(pass(
        check,
        "CGI-6.1-1",
        format!("{} bytes of output", out.stdout.len()),
    ));
    let limits = cgi_response::Limits::default();
    let (head, n) = match cgi_response::parse_head(&out.stdout, nph, &limits) {
        Ok(Status::Complete(v)) => v,
        Ok(Status::Partial) => {
            f.push(head_error(check, cgi_response::Error::UnexpectedEof));
            return f;
        }
        Err(e) => {
            f.push(head_error(check, e));
            return f;
        }
    };
    let head_bytes = out.stdout.get(..n).unwrap_or_default();
    let lines = head_bytes.iter().filter(|&&b| b == b'\n').count();
    let crlf = head_bytes.windows(2).filter(|w| w == b"\r\n").count();
    f.push(info(
        check,
        "CGI-7.2-5",
        if crlf == 0 {
            "LF line ends (the UNIX newline)".to_string()
        } else if crlf == lines {
            "CR LF line ends".to_string()
        } else {
            format!("mixed line ends: {crlf} of {lines} are CR LF")
        },
    ));
    let body = out.stdout.get(n..).unwrap_or_default();
    if nph {
        f.push(info(
            check,
            "CGI-RW-11",
            "an nph- name: checked as an NPH script (output relayed unmodified)",
        ));
        f.push(pass(
            check,
            "CGI-5.2-2",
            format!(
                "a complete HTTP response: {} {}",
                text(head.version.unwrap_or_default()),
                head.status.unwrap_or_default()
            ),
        ));
        let conn = head
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"Connection"))
            .map(|(_, v)| text(v).to_ascii_lowercase());
        let v11 = head.version == Some(b"HTTP/1.1");
        f.push(match conn.as_deref() {
            Some(v) if v.contains("keep-alive") => broken(
                check,
                "CGI-5.2-6",
                "Connection: keep-alive offers a persistent connection",
            ),
            Some(v) if v.contains("close") => pass(check, "CGI-5.2-6", "Connection: close"),
            _ if v11 => info(
                check,
                "CGI-5.2-6",
                "HTTP/1.1 without Connection: close (persistence implied)",
            ),
            _ => pass(check, "CGI-5.2-6", "HTTP/1.0 without keep-alive"),
        });
        if run.method == "HEAD" && !body.is_empty() {
            f.push(broken(
                check,
                "CGI-4.3.3-1",
                format!("{} body bytes for HEAD", body.len()),
            ));
        }
        return f;
    }
    f.extend(response_findings(check, &head, body, run.method == "HEAD"));
    f
}

/// Runs the CGI program at `path` once per request form and checks each response.
pub fn probe(path: &Path, args: &ProbeArgs) -> Report {
    let start = Instant::now();
    let script: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let nph = script
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("nph-"));
    let mut findings = Vec::new();
    for run in RUNS {
        match execute(&script, run, args) {
            Ok(out) => findings.extend(judge_run(run.slug, run, nph, &out, args.check_timeout)),
            Err(e) => {
                findings.push(Finding::error(
                    run.slug,
                    "CGI-6.1-1",
                    Level::Must,
                    Side::App,
                    format!("cannot run {}: {e}", script.display()),
                ));
                break;
            }
        }
    }
    Report {
        target: format!("cgi {}", path.display()),
        findings,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(out: &[u8], method: &str) -> Vec<Finding> {
        let run = RUNS.iter().find(|r| r.method == method).unwrap();
        let output = Output {
            stdout: out.to_vec(),
            stderr: Vec::new(),
            status: None,
            elapsed: Duration::ZERO,
        };
        judge_run("t", run, false, &output, Duration::from_secs(1))
    }

    fn failed(f: &[Finding]) -> Vec<&str> {
        f.iter()
            .filter(|f| f.verdict == super::super::report::Verdict::Fail)
            .map(|f| f.clause.as_str())
            .collect()
    }

    #[test]
    fn cgi_6_3_2_no_cgi_field_fails() {
        assert_eq!(failed(&judge(b"X-A: b\n\nbody", "GET")), ["CGI-6.3-2"]);
    }

    #[test]
    fn cgi_6_2_2_missing_colon_is_not_a_response_type() {
        assert_eq!(failed(&judge(b"junk\n\nbody", "GET")), ["CGI-6.2-2"]);
    }

    #[test]
    fn cgi_6_2_2_2_local_redirect_with_body() {
        assert_eq!(
            failed(&judge(b"Location: /x\n\nignored\n", "GET")),
            ["CGI-6.2.2-2"]
        );
    }

    #[test]
    fn cgi_6_2_4_2_redirect_document_needs_3xx() {
        let f = judge(
            b"Location: http://e/\r\nContent-Type: text/html; charset=utf-8\r\n\r\nx",
            "GET",
        );
        assert_eq!(failed(&f), ["CGI-6.2.4-2"]);
    }

    #[test]
    fn cgi_6_3_4_3_hop_by_hop_and_head_body() {
        let f = judge(
            b"Content-Type: text/plain; charset=utf-8\nConnection: close\n\nbody",
            "HEAD",
        );
        assert_eq!(failed(&f), ["CGI-6.3.4-3", "CGI-4.3.3-1"]);
    }

    #[test]
    fn cgi_6_1_1_empty_output() {
        assert_eq!(failed(&judge(b"", "GET")), ["CGI-6.1-1"]);
    }

    #[test]
    fn a_good_document_passes() {
        let f = judge(
            b"Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi",
            "GET",
        );
        assert!(failed(&f).is_empty(), "{f:?}");
    }
}
