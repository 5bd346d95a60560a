//! `portico probe --serve scgi://…` and `portico probe --serve cgi`: the web-server side of
//! the checker for SCGI (SCGI-T-13, SCGI-T-16) and CGI (CGI-T-1 to CGI-T-10, CGI-T-16,
//! CGI-T-23). Driven here by clients built with `proto::scgi::encode_request` (correct) or
//! by hand (faulty), by crafted CGI environments, and (ignored unless asked for with
//! `cargo test -- --ignored`) by nginx `scgi_pass` and lighttpd mod_cgi.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Peer, free_port, http_at, render, wait_port};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

/// Clauses of the report lines (`VERDICT CLAUSE …`) in `text` with verdict `verdict`.
fn clauses(text: &str, verdict: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(verdict)).then(|| w.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Clauses flagged FAIL or WARN.
fn flagged(text: &str) -> BTreeSet<String> {
    let mut s = clauses(text, "FAIL");
    s.extend(clauses(text, "WARN"));
    s
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// --serve scgi

struct Served {
    child: std::process::Child,
    addr: String,
}

fn start_serve_scgi(requests: usize) -> Served {
    let mut child = Command::new(BIN)
        .args([
            "probe",
            "--serve",
            "scgi://127.0.0.1:0",
            "--requests",
            &requests.to_string(),
            "--check-timeout",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("portico probe: listening on scgi://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    Served { child, addr }
}

struct Finished {
    text: String,
    code: Option<i32>,
}

impl Served {
    /// Sends one request on a new connection (then shuts down writing if `half_close`)
    /// and reads the reply until portico closes.
    fn request(&self, wire: &[u8], half_close: bool) -> String {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(wire).unwrap();
        if half_close {
            s.shutdown(Shutdown::Write).unwrap();
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn finish(mut self) -> Finished {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let out = self.child.wait_with_output().unwrap();
        Finished {
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            code: out.status.code(),
        }
    }
}

/// What nginx's scgi_params sends plus what it lacks (SCRIPT_NAME, PATH_INFO).
fn meta(method: &str) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b"REQUEST_METHOD", method.as_bytes().to_vec()),
        (b"REQUEST_URI", b"/app/x%20y?q=1%202".to_vec()),
        (b"QUERY_STRING", b"q=1%202".to_vec()),
        (b"SCRIPT_NAME", b"/app".to_vec()),
        (b"PATH_INFO", b"/x y".to_vec()),
        (b"PATH_TRANSLATED", b"/srv/www/x y".to_vec()),
        (b"SERVER_NAME", b"localhost".to_vec()),
        (b"SERVER_PORT", b"80".to_vec()),
        (b"SERVER_PROTOCOL", b"HTTP/1.1".to_vec()),
        (b"SERVER_SOFTWARE", b"test/1".to_vec()),
        (b"GATEWAY_INTERFACE", b"CGI/1.1".to_vec()),
        (b"REMOTE_ADDR", b"127.0.0.1".to_vec()),
        (b"CONTENT_TYPE", b"text/plain".to_vec()),
        (b"HTTP_HOST", b"localhost".to_vec()),
    ]
}

/// A correct request built with `proto::scgi::encode_request`.
fn encoded(extra: &[(&'static [u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let m = meta(if body.is_empty() { "GET" } else { "POST" });
    let mut headers: Vec<(&[u8], &[u8])> = m.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    headers.extend(extra.iter().copied());
    let mut out = Vec::new();
    proto::scgi::encode_request(headers, body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A request written by hand: exactly these pairs, as a netstring, then `body`.
fn by_hand(pairs: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (n, v) in pairs {
        block.extend_from_slice(n);
        block.push(0);
        block.extend_from_slice(v);
        block.push(0);
    }
    let mut out = format!("{}:", block.len()).into_bytes();
    out.extend(block);
    out.push(b',');
    out.extend_from_slice(body);
    out
}

/// The pairs of a correct GET, for hand-made variations.
fn get_pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut p = vec![
        (b"CONTENT_LENGTH".to_vec(), b"0".to_vec()),
        (b"SCGI".to_vec(), b"1".to_vec()),
    ];
    p.extend(meta("GET").into_iter().map(|(n, v)| (n.to_vec(), v)));
    p
}

fn refs(p: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    p.iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect()
}

/// The reply is a valid CGI response whose body lists the request's violations.
fn reply_body(reply: &str) -> &str {
    assert!(
        reply.starts_with("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
        "{reply:?}"
    );
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// SCGI-T-13, SCGI-T-16: a correct client (GET without a body, POST with one): no FAIL,
/// no WARN, exit status 0. Also covers SCGI-3-4 to 3-7, 3-9, 3-10, 4-2, 3-8, RW-7.
#[test]
fn scgi_t_13_serve_correct_client_no_fail() {
    let srv = start_serve_scgi(2);
    let body = reply_body(&srv.request(&encoded(&[], b""), false)).to_owned();
    assert!(body.contains("no violations"), "{body}");
    let body =
        reply_body(&srv.request(&encoded(&[], b"What is the answer to life?"), false)).to_owned();
    assert!(body.contains("no violations"), "{body}");
    let p = srv.finish();
    println!("{}", p.text);
    assert!(flagged(&p.text).is_empty(), "{}", p.text);
    let pass = clauses(&p.text, "PASS");
    for c in [
        "SCGI-3-3",
        "SCGI-3-4",
        "SCGI-3-5",
        "SCGI-3-6",
        "SCGI-3-7",
        "SCGI-3-9",
        "SCGI-3-10",
        "SCGI-4-2",
        "SCGI-3-8",
        "SCGI-RW-7",
        "CGI-4.1.5-2",
        "CGI-4.1.7-1",
    ] {
        assert!(pass.contains(c), "no PASS {c}\n{}", p.text);
    }
    assert!(
        p.text
            .contains("CONTENT_LENGTH=0 sent for a request without a body")
    );
    assert!(p.text.contains(" 0 FAIL, 0 ERROR"), "{}", p.text);
    assert_eq!(p.code, Some(0), "{}", p.text);
}

/// SCGI-3-4: faulty clients, each broken in one way, are flagged on exactly that clause:
/// CONTENT_LENGTH not first (SCGI-3-4), a leading zero in the netstring length (SCGI-4-2),
/// a body shorter and one longer than CONTENT_LENGTH (SCGI-3-10), a duplicate name
/// (SCGI-3-3), no SCGI header (SCGI-3-7), a wrong netstring length (SCGI-3-9); HTTP_PROXY
/// is reported (SCGI-RW-7, an RW observation: INFO). Exit status 1.
#[test]
fn scgi_3_4_serve_faulty_clients_flagged_exactly() {
    let srv = start_serve_scgi(8);
    let mut cases: Vec<(&str, Vec<u8>, bool, &[&str])> = Vec::new();

    let mut p = get_pairs();
    p.swap(0, 1);
    cases.push((
        "CONTENT_LENGTH second",
        by_hand(&refs(&p), b""),
        false,
        &["SCGI-3-4"],
    ));

    let mut wire = b"0".to_vec();
    wire.extend(encoded(&[], b""));
    cases.push(("leading zero", wire, false, &["SCGI-4-2"]));

    let mut p = get_pairs();
    p[0].1 = b"10".to_vec();
    cases.push((
        "short body",
        by_hand(&refs(&p), b"abcd"),
        true,
        &["SCGI-3-10"],
    ));

    let mut p = get_pairs();
    p[0].1 = b"3".to_vec();
    cases.push((
        "long body",
        by_hand(&refs(&p), b"abcEXTRA"),
        false,
        &["SCGI-3-10"],
    ));

    let mut p = get_pairs();
    p.push((b"REQUEST_METHOD".to_vec(), b"POST".to_vec()));
    cases.push(("duplicate", by_hand(&refs(&p), b""), false, &["SCGI-3-3"]));

    let mut p = get_pairs();
    p.remove(1);
    cases.push(("no SCGI", by_hand(&refs(&p), b""), false, &["SCGI-3-7"]));

    let wire = encoded(&[], b"");
    let colon = wire.iter().position(|&b| b == b':').unwrap();
    let n: usize = std::str::from_utf8(&wire[..colon])
        .unwrap()
        .parse()
        .unwrap();
    let mut bad = (n - 2).to_string().into_bytes();
    bad.extend_from_slice(&wire[colon..]);
    cases.push(("wrong length", bad, false, &["SCGI-3-9"]));

    cases.push((
        "HTTP_PROXY",
        encoded(&[(b"HTTP_PROXY", b"http://evil/")], b""),
        false,
        &[],
    ));

    for (name, wire, half_close, want) in &cases {
        let reply = srv.request(wire, *half_close);
        let body = reply_body(&reply);
        assert_eq!(flagged(body), set(want), "{name}: {body}");
    }
    let p = srv.finish();
    println!("{}", p.text);
    assert!(
        p.text
            .lines()
            .any(|l| l.starts_with("INFO SCGI-RW-7 RW ws: HTTP_PROXY=http://evil/ sent")),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("only 4 body bytes of CONTENT_LENGTH 10, then the web server closed")
    );
    assert!(
        p.text
            .contains("5 bytes after the body of CONTENT_LENGTH 3")
    );
    assert_eq!(p.code, Some(1), "{}", p.text);
}

/// SCGI-T-16 behind nginx `scgi_pass` (examples/nginx/nginx.conf, location /scgi/ with
/// the stock scgi_params): a POST with a body and a `Proxy:` header, and a GET. nginx
/// frames SCGI correctly (SCGI-T-13 clauses all PASS) but sends no SCRIPT_NAME (SCGI-3-8,
/// SCGI-RW-2), passes Content-Length/Content-Type again as HTTP_* (CGI-4.1.18-10) and
/// forwards `Proxy:` as HTTP_PROXY (SCGI-RW-7).
#[test]
#[ignore = "needs nginx"]
fn scgi_t_16_nginx_scgi_pass() {
    let srv = start_serve_scgi(2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = render(
        "examples/nginx/nginx.conf",
        dir.path(),
        "nginx.conf",
        &[
            ("PREFIX", dir.path().display().to_string()),
            ("HTTP_PORT", port.to_string()),
            ("PORTICO_FASTCGI", "127.0.0.1:9".to_string()),
            ("PORTICO_SCGI", srv.addr.clone()),
        ],
    );
    let nginx = Peer::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log")),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_port(&addr, Duration::from_secs(10)),
        "nginx did not start"
    );
    let r = http_at(
        &addr,
        b"POST /scgi/form?x=1%202&y=%26 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 12\r\nProxy: http://evil/\r\nX-Foo-Bar: v\r\nConnection: close\r\n\r\nname=portico",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("portico probe --serve: request 1 (connection 1, CONTENT_LENGTH 12"),
        "{}",
        r.text()
    );
    let r = http_at(
        &addr,
        b"GET /scgi/page HTTP/1.1\r\nHost: localhost\r\nProxy: http://evil/\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(nginx);
    let p = srv.finish();
    println!("{}", p.text);
    assert!(clauses(&p.text, "FAIL").is_empty(), "{}", p.text);
    let pass = clauses(&p.text, "PASS");
    for c in [
        "SCGI-3-3",
        "SCGI-3-4",
        "SCGI-3-5",
        "SCGI-3-6",
        "SCGI-3-7",
        "SCGI-3-9",
        "SCGI-3-10",
        "SCGI-4-2",
    ] {
        assert!(pass.contains(c), "no PASS {c}\n{}", p.text);
    }
    assert!(
        p.text
            .contains("CONTENT_LENGTH=0 sent for a request without a body")
    );
    assert_eq!(
        flagged(&p.text),
        set(&["SCGI-3-8", "CGI-4.1.18-10"]),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("WARN SCGI-3-8 SHOULD ws: CGI meta-variables not sent: SCRIPT_NAME"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("INFO SCGI-RW-7 RW ws: HTTP_PROXY=http://evil/ sent"),
        "{}",
        p.text
    );
    assert!(
        p.text
            .contains("QUERY_STRING=x=1%202&y=%26 is REQUEST_URI's query"),
        "{}",
        p.text
    );
    assert_eq!(p.code, Some(0), "{}", p.text);
}

// ---------------------------------------------------------------------------------------------
// --serve cgi

/// A correct CGI/1.1 environment for `POST /cgi-bin/probe/a%20b/C?a=1%202&b=%26`.
fn cgi_env(script: &str, body: usize) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", if body > 0 { "POST" } else { "GET" }),
        ("REQUEST_URI", "/cgi-bin/probe/a%20b/C?a=1%202&b=%26"),
        ("QUERY_STRING", "a=1%202&b=%26"),
        ("SCRIPT_NAME", "/cgi-bin/probe"),
        ("PATH_INFO", "/a b/C"),
        ("PATH_TRANSLATED", "/srv/htdocs/a b/C"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "test/1.0"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_HOST", "localhost"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_X_FOO_BAR", "v"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    e.push(("SCRIPT_FILENAME".into(), script.into()));
    if body > 0 {
        e.push(("CONTENT_LENGTH".into(), body.to_string()));
        e.push((
            "CONTENT_TYPE".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    e
}

/// Runs `portico probe --serve cgi` with exactly `env`, `stdin`, in `cwd`; returns
/// (CGI output, exit code).
fn run_cgi(env: &[(String, String)], stdin: &[u8], cwd: &std::path::Path) -> (String, Option<i32>) {
    let mut child = Command::new(BIN)
        .args(["probe", "--serve", "cgi", "--check-timeout", "1s"])
        .env_clear()
        .envs(env.iter().map(|(n, v)| (n, v)))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

fn cgi_body(out: &str) -> &str {
    assert!(
        out.starts_with("Status: 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"),
        "{out:?}"
    );
    out.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// CGI-T-1, CGI-T-2, CGI-T-4, CGI-T-7, CGI-T-23: a correct environment (GET, and POST with
/// a matching body) passes: no FAIL, no WARN; the report ends with the summary line, exit 0.
/// Covers CGI-4.1.4-1, 4.1.5-2, 4.1.7-1, 4.1.13-4, 4.2-3, 7.2-3, 9.5-1.
#[test]
fn cgi_t_1_serve_cgi_correct_environment_passes() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("probe");
    let s = script.display().to_string();
    for body in [&b""[..], b"name=portico"] {
        let (out, code) = run_cgi(&cgi_env(&s, body.len()), body, dir.path());
        let report = cgi_body(&out);
        println!("{report}");
        assert!(flagged(report).is_empty(), "{report}");
        let pass = clauses(report, "PASS");
        for c in [
            "CGI-4.1.4-1",
            "CGI-4.1.5-2",
            "CGI-4.1.7-1",
            "CGI-4.1.13-4",
            "CGI-7.2-3",
            "CGI-4.2-1",
            "CGI-RW-6",
            "CGI-4.1.2-2",
        ] {
            assert!(pass.contains(c), "no PASS {c}\n{report}");
        }
        if !body.is_empty() {
            assert!(pass.contains("CGI-4.2-3"), "{report}");
        }
        let last = report.lines().last().unwrap_or("");
        assert!(
            last.starts_with("--serve cgi (test/1.0): ") && last.contains(" 0 FAIL, 0 ERROR"),
            "{last}"
        );
        assert_eq!(code, Some(0));
    }
}

/// CGI-4.2-3: CONTENT_LENGTH larger than the bytes on stdin is a FAIL; a body without
/// CONTENT_LENGTH breaks CGI-4.1.2-2; HTTP_PROXY is reported (CGI-RW-6, INFO); a missing
/// GATEWAY_INTERFACE and a PATH_INFO left encoded are FAILs (CGI-4.1.4-1, CGI-4.1.5-2).
/// The exit status stays 0 (the report is the CGI response).
#[test]
fn cgi_4_2_3_serve_cgi_wrong_request_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("probe").display().to_string();

    let mut env = cgi_env(&s, 12);
    for (n, v) in &mut env {
        if n == "CONTENT_LENGTH" {
            *v = "20".into();
        }
    }
    let (out, code) = run_cgi(&env, b"name=portico", dir.path());
    let report = cgi_body(&out);
    assert_eq!(flagged(report), set(&["CGI-4.2-3"]), "{report}");
    assert!(
        report.contains("CONTENT_LENGTH=20 but only 12 bytes readable on stdin, then end of file"),
        "{report}"
    );
    assert_eq!(code, Some(0));

    let env: Vec<(String, String)> = cgi_env(&s, 12)
        .into_iter()
        .filter(|(n, _)| n != "CONTENT_LENGTH")
        .collect();
    let (out, _) = run_cgi(&env, b"name=portico", dir.path());
    assert_eq!(flagged(cgi_body(&out)), set(&["CGI-4.1.2-2"]), "{out}");

    let mut env = cgi_env(&s, 0);
    env.push(("HTTP_PROXY".into(), "http://evil/".into()));
    let (out, _) = run_cgi(&env, b"", dir.path());
    let report = cgi_body(&out);
    assert!(flagged(report).is_empty(), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("INFO CGI-RW-6 RW ws: HTTP_PROXY=http://evil/ sent")),
        "{report}"
    );

    let env: Vec<(String, String)> = cgi_env(&s, 0)
        .into_iter()
        .filter(|(n, _)| n != "GATEWAY_INTERFACE")
        .map(|(n, v)| {
            if n == "PATH_INFO" {
                (n, "/a%20b/C".to_string())
            } else {
                (n, v)
            }
        })
        .collect();
    let (out, _) = run_cgi(&env, b"", dir.path());
    assert_eq!(
        flagged(cgi_body(&out)),
        set(&["CGI-4.1.4-1", "CGI-4.1.5-2"]),
        "{out}"
    );
}

/// CGI-T-9 through lighttpd mod_cgi running portico itself with PORTICO_PROBE=serve-cgi
/// (examples/lighttpd/lighttpd.conf's alias.url + cgi.assign + setenv): a POST with a body,
/// a query, extra path and a `Proxy:` header, a bare GET, and a HEAD. lighttpd breaks no
/// MUST; the report is asserted clause by clause. Covers CGI-4.1.4-1, 4.1.5-2, 4.1.7-1,
/// 4.2-3, 4.3.3-2, 7.2-3, RW-6.
#[test]
#[ignore = "needs lighttpd"]
fn cgi_rw_6_lighttpd_mod_cgi_runs_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("lighttpd.conf");
    std::fs::write(
        &conf,
        format!(
            r#"server.document-root = "{d}"
server.port = {port}
server.bind = "127.0.0.1"
server.pid-file = "{d}/lighttpd.pid"
server.errorlog = "{d}/error.log"
server.modules = ("mod_cgi", "mod_setenv", "mod_alias")
alias.url = ( "/probe" => "{bin}" )
$HTTP["url"] =~ "^/probe" {{
    cgi.assign = ( "" => "" )
    setenv.add-environment = ( "PORTICO_PROBE" => "serve-cgi" )
}}
"#,
            d = dir.path().display(),
            bin = BIN
        ),
    )
    .unwrap();
    let _l = Peer::spawn(
        "lighttpd",
        Command::new("lighttpd").arg("-D").arg("-f").arg(&conf),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_port(&addr, Duration::from_secs(10)),
        "lighttpd did not start: {:?}",
        std::fs::read_to_string(dir.path().join("error.log"))
    );
    let r = http_at(
        &addr,
        b"POST /probe/a%20b/C?x=1%202&y=%26 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 12\r\nProxy: http://evil/\r\nX-Foo-Bar: v\r\nConnection: close\r\n\r\nname=portico",
    );
    let report = r.text();
    println!("{report}");
    assert!(
        report.contains("--serve cgi (lighttpd"),
        "portico did not run as the probe: is cli::run calling probe::cgi_probe_requested()?\n{report}"
    );
    assert_eq!(r.status, 200, "{report}");
    assert!(clauses(&report, "FAIL").is_empty(), "{report}");
    let pass = clauses(&report, "PASS");
    for c in [
        "CGI-4.1.4-1",
        "CGI-4.1.5-2",
        "CGI-4.1.7-1",
        "CGI-4.1.13-4",
        "CGI-4.2-3",
        "CGI-4.1.3-4",
        "CGI-RW-6",
        "CGI-7.2-3",
    ] {
        assert!(pass.contains(c), "no PASS {c}\n{report}");
    }
    assert!(
        report.contains("PASS CGI-4.1.5-2 MUST ws: PATH_INFO=/a b/C"),
        "{report}"
    );
    assert!(
        report.contains("exactly CONTENT_LENGTH=12 bytes on stdin"),
        "{report}"
    );

    let r = http_at(
        &addr,
        b"GET /probe HTTP/1.1\r\nHost: localhost\r\nProxy: http://evil/\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.text();
    println!("{report}");
    assert!(clauses(&report, "FAIL").is_empty(), "{report}");
    assert!(
        report.contains("PASS CGI-4.2-3 MUST ws: no bytes on stdin (then end of file)"),
        "{report}"
    );
    // lighttpd sets CONTENT_LENGTH=0 for a GET without a body (strictly, CGI-4.1.2-2 sets
    // it only with a body; from inside it looks like a client's `Content-Length: 0`).
    assert!(
        report.contains("INFO CGI-AMB-4 AMB both: CONTENT_LENGTH=0 with GET"),
        "{report}"
    );

    // CGI-4.3.3-2: the probe sends its report for HEAD too; lighttpd must drop it.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(rest, "", "a body after the head of a HEAD response: {raw}");
}
