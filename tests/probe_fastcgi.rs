//! `portico probe` for FastCGI, itself tested: a small deliberately faulty FastCGI application
//! (built on `proto::fastcgi::server`, each fault switchable) must be flagged FAIL/WARN on
//! exactly the clauses its fault breaks and on nothing when no fault is on; portico's own
//! FastCGI listener must pass every MUST; `--serve` must report what a connecting web server
//! (driven here with the `proto::fastcgi::client` encoders) breaks. php-fpm tests are ignored
//! unless asked for (`cargo test -- --ignored`).

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proto::fastcgi::client::{self, RawRecord};
use proto::fastcgi::nv::{MPXS_CONNS, NameValues, encode_pair};
use proto::fastcgi::server::{self, Event};
use proto::fastcgi::{ProtocolStatus, RecordType, Records, Role, encode_record};
use support::{Peer, Portico, free_port, wait_port};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

// ---------------------------------------------------------------------------------------------
// The faulty application

/// What the test application gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: a correct application.
    None,
    /// No UNKNOWN_TYPE reply to unknown management types (FCGI-4.2-1).
    NoUnknownType,
    /// END_REQUEST written with version 2 (FCGI-5.5-1; FCGI-3.3-3 is a FACT, so INFO).
    WrongVersionOut,
    /// No empty STDOUT record before END_REQUEST (FCGI-6.1-7, FCGI-3.3-16).
    NoStdoutEnd,
    /// END_REQUEST with a 5-byte body (FCGI-5.5-1; FCGI-5.5-2 is a FACT).
    EndRequestBodyShort,
    /// Closes the connection after every request, KEEP_CONN or not (FCGI-5.1-6).
    IgnoresKeepConn,
    /// Never closes the connection, even with KEEP_CONN clear (FCGI-5.1-5).
    KeepsConnOpen,
    /// Does not answer ABORT_REQUEST (FCGI-5.4-2).
    NoAbortAnswer,
    /// Records without padding, so not multiples of 8 bytes (FCGI-3.3-7, a SHOULD).
    BadPadding,
    /// Says FCGI_MPXS_CONNS=1 but rejects a second request with CANT_MPX_CONN (FCGI-4.1-3).
    MpxsLie,
    /// Writes STDOUT as soon as BEGIN_REQUEST arrives (FCGI-6.1-8, FCGI-6.2-6).
    EarlyOutput,
    /// A STDOUT record after END_REQUEST (FCGI-6.1-3).
    OutputAfterEnd,
    /// STDERR data without its empty record (FCGI-3.3-16).
    StderrUnterminated,
    /// Serves unknown roles as Responder instead of UNKNOWN_ROLE (FCGI-5.5-7, a SHOULD).
    NoUnknownRole,
}

/// Starts the application on a free port; threads end with the test process.
fn start_app(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || serve(s, fault));
        }
    });
    addr
}

fn serve(mut s: TcpStream, fault: Fault) {
    let config = server::Config {
        mpxs_conns: fault != Fault::MpxsLie,
        reject_unknown_roles: fault != Fault::NoUnknownRole,
        ..server::Config::default()
    };
    let mut conn = server::Conn::new(config);
    let mut roles: HashMap<u16, Role> = HashMap::new();
    let mut answered: HashSet<u16> = HashSet::new();
    let mut ended_any = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let failed = conn.handle_read(&buf[..n]).is_err();
        let mut out = Vec::new();
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::BeginRequest { id, role, .. } => {
                    roles.insert(id, role);
                    answered.remove(&id);
                    if fault == Fault::EarlyOutput {
                        drain(&mut conn, fault, &mut out);
                        encode_record(RecordType::STDOUT, id, b"X-Early: 1\r\n", &mut out);
                    }
                }
                Event::Params { id, .. } if roles.get(&id) == Some(&Role::AUTHORIZER) => {
                    respond(&mut conn, id, fault, &mut answered);
                }
                Event::StdinEnd { id } if roles.get(&id) != Some(&Role::FILTER) => {
                    respond(&mut conn, id, fault, &mut answered);
                }
                Event::DataEnd { id } => respond(&mut conn, id, fault, &mut answered),
                Event::Abort { id } if fault != Fault::NoAbortAnswer && answered.insert(id) => {
                    let _ = conn.end_request(id, 1, ProtocolStatus::REQUEST_COMPLETE);
                }
                _ => {}
            }
        }
        let before = out.len();
        drain(&mut conn, fault, &mut out);
        ended_any |=
            Records::new(&out[before..]).any(|r| r.header.record_type == RecordType::END_REQUEST);
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
        let close = match fault {
            Fault::KeepsConnOpen => false,
            Fault::IgnoresKeepConn => ended_any && conn.active_requests() == 0,
            _ => conn.wants_close(),
        };
        if failed || close {
            return;
        }
    }
}

fn respond(conn: &mut server::Conn, id: u16, fault: Fault, answered: &mut HashSet<u16>) {
    if !answered.insert(id) {
        return;
    }
    let _ = conn.write_stdout(id, b"Status: 200\r\nContent-Type: text/plain\r\n\r\nok\n");
    if fault == Fault::StderrUnterminated {
        let _ = conn.write_stderr(id, b"warn\n");
    }
    let _ = conn.end_request(id, 0, ProtocolStatus::REQUEST_COMPLETE);
}

/// Moves the machine's output to `out`, damaged as the fault says.
fn drain(conn: &mut server::Conn, fault: Fault, out: &mut Vec<u8>) {
    let mut tx = Vec::new();
    conn.poll_transmit(&mut tx);
    for r in Records::new(&tx) {
        let (t, id, c) = (r.header.record_type, r.header.request_id, r.content);
        match (fault, t) {
            (Fault::NoUnknownType, RecordType::UNKNOWN_TYPE) => {}
            (Fault::NoStdoutEnd, RecordType::STDOUT) if c.is_empty() => {}
            (Fault::StderrUnterminated, RecordType::STDERR) if c.is_empty() => {}
            (Fault::WrongVersionOut, RecordType::END_REQUEST) => RawRecord {
                version: 2,
                ..RawRecord::new(t, id, c)
            }
            .encode(out),
            (Fault::EndRequestBodyShort, RecordType::END_REQUEST) => {
                RawRecord::new(t, id, &c[..5]).encode(out)
            }
            (Fault::BadPadding, _) => RawRecord {
                padding_length: 0,
                padding: b"",
                ..RawRecord::new(t, id, c)
            }
            .encode(out),
            (Fault::MpxsLie, RecordType::GET_VALUES_RESULT) => {
                let mut content = Vec::new();
                for (n, v) in NameValues::new(c).filter_map(Result::ok) {
                    encode_pair(n, if n == MPXS_CONNS { b"1" } else { v }, &mut content);
                }
                encode_record(t, 0, &content, out);
            }
            (Fault::OutputAfterEnd, RecordType::END_REQUEST) => {
                encode_record(t, id, c, out);
                encode_record(RecordType::STDOUT, id, b"late", out);
            }
            _ => encode_record(t, id, c, out),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the probe

struct Probe {
    text: String,
    code: Option<i32>,
    elapsed: Duration,
}

impl Probe {
    /// Clauses with the verdict `verdict` (FAIL, WARN, …).
    fn clauses(&self, verdict: &str) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(verdict)).then(|| w.next().unwrap_or("").to_string())
            })
            .collect()
    }

    /// Clauses flagged FAIL or WARN.
    fn flagged(&self) -> BTreeSet<String> {
        let mut s = self.clauses("FAIL");
        s.extend(self.clauses("WARN"));
        s
    }
}

fn probe(args: &[&str]) -> Probe {
    let start = Instant::now();
    let out: Output = Command::new(BIN)
        .arg("probe")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portico probe");
    Probe {
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
        code: out.status.code(),
        elapsed: start.elapsed(),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Probes the faulty application and checks the flagged clauses are exactly `expected`.
fn flagged_exactly(fault: Fault, expected: &[&str]) {
    let addr = start_app(fault);
    // 2 s, not 1: these tests run two at a time beside php-fpm's, and on a busy
    // 2-CPU machine a check's own pacing (sleeps waiting for a CPU) has run past 1 s.
    let p = probe(&[&format!("fastcgi://{addr}"), "--check-timeout", "2s"]);
    assert!(
        p.clauses("ERROR").is_empty(),
        "{fault:?}: errors\n{}",
        p.text
    );
    assert_eq!(
        p.flagged(),
        set(expected),
        "{fault:?}: flagged clauses differ\n{}",
        p.text
    );
    let fails = !p.clauses("FAIL").is_empty();
    assert_eq!(p.code, Some(if fails { 1 } else { 0 }), "{}", p.text);
    let summary = p.text.lines().last().unwrap_or("");
    let checks: usize = summary
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(checks >= 60, "{summary}");
}

/// A correct application: no FAIL, no WARN, at least 60 checks, exit status 0.
#[test]
fn fcgi_t_1_correct_app_nothing_flagged() {
    flagged_exactly(Fault::None, &[]);
}

/// FCGI-4.2-1: unknown management types must get UNKNOWN_TYPE.
#[test]
fn fcgi_4_2_1_no_unknown_type_flagged() {
    flagged_exactly(Fault::NoUnknownType, &["FCGI-4.2-1"]);
}

/// FCGI-5.5-1 (with INFO FCGI-3.3-3): an END_REQUEST of version 2 is not a FastCGI 1.0 one.
#[test]
fn fcgi_5_5_1_wrong_version_out_flagged() {
    flagged_exactly(Fault::WrongVersionOut, &["FCGI-5.5-1"]);
}

/// FCGI-6.1-7, FCGI-3.3-16: STDOUT must be ended by an empty record.
#[test]
fn fcgi_6_1_7_no_stdout_end_flagged() {
    flagged_exactly(Fault::NoStdoutEnd, &["FCGI-6.1-7", "FCGI-3.3-16"]);
}

/// FCGI-5.5-1 (with INFO FCGI-5.5-2): END_REQUEST bodies are 8 bytes.
#[test]
fn fcgi_5_5_2_end_request_body_short_flagged() {
    flagged_exactly(Fault::EndRequestBodyShort, &["FCGI-5.5-1"]);
}

/// FCGI-5.1-6: KEEP_CONN set means the application does not close.
#[test]
fn fcgi_5_1_6_ignores_keep_conn_flagged() {
    flagged_exactly(Fault::IgnoresKeepConn, &["FCGI-5.1-6"]);
}

/// FCGI-5.1-5: KEEP_CONN clear means the application closes.
#[test]
fn fcgi_5_1_5_keeps_conn_open_flagged() {
    flagged_exactly(Fault::KeepsConnOpen, &["FCGI-5.1-5"]);
}

/// FCGI-5.4-2: ABORT_REQUEST is answered with END_REQUEST.
#[test]
fn fcgi_5_4_2_no_abort_answer_flagged() {
    flagged_exactly(Fault::NoAbortAnswer, &["FCGI-5.4-2"]);
}

/// FCGI-3.3-7: records should be multiples of 8 bytes (WARN).
#[test]
fn fcgi_3_3_7_bad_padding_warned() {
    flagged_exactly(Fault::BadPadding, &["FCGI-3.3-7"]);
}

/// FCGI-4.1-3, FCGI-5.5-5: GET_VALUES says FCGI_MPXS_CONNS=1, behaviour says 0.
#[test]
fn fcgi_4_1_3_mpxs_lie_flagged() {
    flagged_exactly(Fault::MpxsLie, &["FCGI-4.1-3"]);
}

/// FCGI-6.1-8, FCGI-6.2-6: no output before PARAMS ended.
#[test]
fn fcgi_6_1_8_early_output_flagged() {
    flagged_exactly(Fault::EarlyOutput, &["FCGI-6.1-8", "FCGI-6.2-6"]);
}

/// FCGI-6.1-3: nothing after END_REQUEST.
#[test]
fn fcgi_6_1_3_output_after_end_flagged() {
    flagged_exactly(Fault::OutputAfterEnd, &["FCGI-6.1-3"]);
}

/// FCGI-3.3-16 (INFO FCGI-6.1-6): STDERR data needs its empty record.
#[test]
fn fcgi_3_3_16_stderr_unterminated_flagged() {
    flagged_exactly(Fault::StderrUnterminated, &["FCGI-3.3-16"]);
}

/// FCGI-5.5-7: an unknown role should get UNKNOWN_ROLE (WARN).
#[test]
fn fcgi_5_5_7_no_unknown_role_warned() {
    flagged_exactly(Fault::NoUnknownRole, &["FCGI-5.5-7"]);
}

/// `--format json` and `junit` render the same probe; exit status follows FAIL.
#[test]
fn fcgi_4_2_1_json_and_junit_formats() {
    let addr = start_app(Fault::NoUnknownType);
    let target = format!("fastcgi://{addr}");
    let j = probe(&[&target, "--check-timeout", "1s", "--format", "json"]);
    assert!(j.text.starts_with("{\"target\":"), "{}", j.text);
    assert!(
        j.text
            .contains("\"verdict\":\"FAIL\",\"clause\":\"FCGI-4.2-1\""),
        "{}",
        j.text
    );
    assert_eq!(j.code, Some(1));
    let x = probe(&[&target, "--check-timeout", "1s", "--format", "junit"]);
    assert!(x.text.contains("<testsuite "), "{}", x.text);
    assert!(
        x.text.contains("name=\"FCGI-4.2-1 MUST\"><failure"),
        "{}",
        x.text
    );
}

/// Nothing listening: an ERROR, exit status 1, quickly.
#[test]
fn fcgi_3_2_1_unreachable_is_error() {
    let port = free_port();
    let p = probe(&[&format!("fastcgi://127.0.0.1:{port}")]);
    assert_eq!(p.clauses("ERROR"), set(&["FCGI-3.2-1"]), "{}", p.text);
    assert_eq!(p.code, Some(1));
    assert!(p.elapsed < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// portico's own listener

const PORTICO_FASTCGI: &str = r#"
[server]
access_log = "off"
[[listen]]
protocol = "fastcgi"
address = "127.0.0.1:0"
[[route]]
prefix = "/"
handler = "echo"
"#;

/// portico's FastCGI listener passes every MUST (no FAIL, no ERROR).
#[test]
fn fcgi_t_1_portico_listener_no_fail() {
    let p = Portico::start(PORTICO_FASTCGI);
    let r = probe(&[&format!("fastcgi://{}", p.addr)]);
    println!("{}", r.text);
    assert!(r.clauses("FAIL").is_empty(), "{}", r.text);
    assert!(r.clauses("ERROR").is_empty(), "{}", r.text);
    assert_eq!(r.code, Some(0));
}

/// `--spawn`: portico itself started with the listening socket on fd 0 (`address = "fd:0"`),
/// probed, and its process group killed at the end.
#[test]
fn fcgi_2_2_1_spawn_portico_on_fd_0() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fd0.toml");
    std::fs::write(&cfg, PORTICO_FASTCGI.replace("127.0.0.1:0", "fd:0")).unwrap();
    let cfg = cfg.display().to_string();
    let r = probe(&["fastcgi", "--spawn", BIN, "serve", "--config", &cfg]);
    assert!(r.text.contains("spawn:"), "{}", r.text);
    assert!(r.clauses("FAIL").is_empty(), "{}", r.text);
    assert!(r.clauses("ERROR").is_empty(), "{}", r.text);
    assert!(
        support::processes_with(&cfg).is_empty(),
        "the spawned application is still running"
    );
}

// ---------------------------------------------------------------------------------------------
// --serve

struct Served {
    child: std::process::Child,
    addr: String,
}

fn start_serve(requests: usize) -> Served {
    let mut child = Command::new(BIN)
        .args([
            "probe",
            "--serve",
            "fastcgi://127.0.0.1:0",
            "--requests",
            &requests.to_string(),
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
        .strip_prefix("portico probe: listening on fastcgi://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    Served { child, addr }
}

impl Served {
    /// Sends one request on a new connection and reads until the application closes.
    fn request(&self, wire: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(wire).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    fn finish(mut self) -> Probe {
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
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
        Probe {
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            code: out.status.code(),
            elapsed: start.elapsed(),
        }
    }
}

fn nginx_params(method: &str, body: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cl = if body > 0 {
        body.to_string()
    } else {
        String::new()
    };
    [
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", &cl),
        ("SCRIPT_NAME", "/index.php"),
        ("REQUEST_URI", "/index.php"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "test"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn request_bytes(params: &[(Vec<u8>, Vec<u8>)], body: &[u8], keep: bool, id: u16) -> Vec<u8> {
    let refs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let mut out = Vec::new();
    client::Request {
        id,
        role: Role::RESPONDER,
        keep_conn: keep,
        params: &refs,
        stdin: Some(body),
        data: None,
    }
    .encode(&mut out);
    out
}

/// The END_REQUEST and STDOUT of a reply, decoded by the strict client machine.
fn reply_ok(reply: &[u8], id: u16) -> String {
    let mut c = client::Conn::new(client::Config {
        strict_ids: true,
        ..client::Config::default()
    });
    c.begin_request(id);
    c.handle_read(reply).expect("a strict, valid reply");
    let mut stdout = Vec::new();
    let mut ended = false;
    while let Some(e) = c.poll_event() {
        match e {
            client::ClientEvent::Stdout { data, .. } => stdout.extend(data),
            client::ClientEvent::EndRequest {
                protocol_status, ..
            } => ended = protocol_status == ProtocolStatus::REQUEST_COMPLETE,
            _ => {}
        }
    }
    assert!(ended, "{reply:?}");
    String::from_utf8_lossy(&stdout).into_owned()
}

/// A correct web server (GET with the empty STDIN, POST with a matching CONTENT_LENGTH,
/// GET_VALUES): no FAIL, exit status 0, and valid responses.
#[test]
fn fcgi_6_1_7_serve_correct_client_no_fail() {
    let srv = start_serve(2);
    let mut get = Vec::new();
    client::encode_get_values(&[MPXS_CONNS], &mut get);
    get.extend(request_bytes(&nginx_params("GET", 0), b"", false, 1));
    let reply = srv.request(&get);
    let body = reply_ok(&reply, 1);
    assert!(body.starts_with("Status: 200\r\n"), "{body}");
    assert!(body.contains("no violations"), "{body}");
    let post = request_bytes(&nginx_params("POST", 11), b"hello=world", true, 1);
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&post).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    let p = srv.finish();
    println!("{}", p.text);
    assert!(p.clauses("FAIL").is_empty(), "{}", p.text);
    assert!(p.clauses("PASS").contains("FCGI-6.1-7"), "{}", p.text);
    assert!(p.clauses("PASS").contains("FCGI-6.2-4"), "{}", p.text);
    assert!(p.clauses("INFO").contains("FCGI-4.1-1"), "{}", p.text);
    assert!(p.text.contains(" FAIL, 0 ERROR"), "{}", p.text);
    assert_eq!(p.code, Some(0), "{}", p.text);
}

/// FCGI-6.1-9: a NUL byte in a param value is a FAIL; so is STDIN past CONTENT_LENGTH
/// (FCGI-6.2-4) and STDIN before the end of PARAMS (FCGI-6.1-2).
#[test]
fn fcgi_6_1_9_serve_nul_in_param_fails() {
    let srv = start_serve(2);
    let mut params = nginx_params("GET", 0);
    params.push((b"HTTP_X_EVIL".to_vec(), b"a\0b".to_vec()));
    let reply = srv.request(&request_bytes(&params, b"", false, 1));
    let body = reply_ok(&reply, 1);
    assert!(body.contains("FAIL FCGI-6.1-9"), "{body}");
    // STDIN before the PARAMS terminator, and more STDIN than CONTENT_LENGTH.
    let mut wire = Vec::new();
    client::encode_begin_request(2, Role::RESPONDER, 0, &mut wire);
    let mut content = Vec::new();
    for (n, v) in nginx_params("POST", 3) {
        encode_pair(&n, &v, &mut content);
    }
    encode_record(RecordType::PARAMS, 2, &content, &mut wire);
    encode_record(RecordType::STDIN, 2, b"abcdef", &mut wire);
    encode_record(RecordType::PARAMS, 2, b"", &mut wire);
    encode_record(RecordType::STDIN, 2, b"", &mut wire);
    let _ = srv.request(&wire);
    let p = srv.finish();
    println!("{}", p.text);
    assert!(p.clauses("FAIL").contains("FCGI-6.1-9"), "{}", p.text);
    assert!(p.clauses("FAIL").contains("FCGI-6.1-2"), "{}", p.text);
    assert_eq!(p.code, Some(1), "{}", p.text);
}

// ---------------------------------------------------------------------------------------------
// php-fpm

/// php-fpm in a temp dir with a hello script, listening on a free port.
fn start_php_fpm(dir: &std::path::Path) -> (Peer, String) {
    let port = free_port();
    let root = unsafe { libc::geteuid() } == 0;
    std::fs::write(
        dir.join("hello.php"),
        "<?php\nheader('Content-Type: text/plain');\necho \"hello from php-fpm\\n\";\n",
    )
    .unwrap();
    let user = if root {
        "user = nobody\ngroup = nogroup\n"
    } else {
        ""
    };
    let conf = format!(
        "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n\
         [probe]\n{user}listen = 127.0.0.1:{port}\npm = static\npm.max_children = 8\n",
        d = dir.display()
    );
    std::fs::write(dir.join("php-fpm.conf"), conf).unwrap();
    let mut perms = std::fs::metadata(dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir, perms).unwrap();
    let mut cmd = Command::new("/usr/sbin/php-fpm8.2");
    cmd.args(["-F", "-n", "-y"]).arg(dir.join("php-fpm.conf"));
    if root {
        cmd.arg("-R");
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let peer = Peer::spawn("php-fpm", &mut cmd);
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_port(&addr, Duration::from_secs(10)),
        "php-fpm did not start"
    );
    (peer, addr)
}

/// A full probe of php-fpm finishes in under 10 seconds; its report is printed.
#[test]
#[ignore = "needs php-fpm"]
fn fcgi_t_1_php_fpm_probe_under_10s() {
    let dir = tempfile::tempdir().unwrap();
    let (_fpm, addr) = start_php_fpm(dir.path());
    let script = dir.path().join("hello.php").display().to_string();
    let p = probe(&[
        &format!("fastcgi://{addr}"),
        "--path",
        "/hello.php",
        "--param",
        &format!("SCRIPT_FILENAME={script}"),
    ]);
    println!("{}", p.text);
    println!("elapsed: {:?}", p.elapsed);
    assert!(p.elapsed < Duration::from_secs(10), "{:?}", p.elapsed);
    assert!(p.clauses("ERROR").is_empty(), "{}", p.text);
    assert!(p.text.contains("hello") || p.clauses("PASS").contains("FCGI-5.5-1"));
    // What php-fpm 8.2 is known to do (FCGI-RW-7): no UNKNOWN_TYPE, close on unknown roles.
    assert!(p.clauses("FAIL").contains("FCGI-4.2-1"), "{}", p.text);
    assert!(p.clauses("WARN").contains("FCGI-5.5-7"), "{}", p.text);
}
