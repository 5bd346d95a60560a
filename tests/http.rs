//! The HTTP/1.1 listener, over real sockets against the real binary: keep-alive,
//! pipelining, chunked bodies, 100-continue, HEAD, limits (431/413), timeouts, Unix
//! listeners, several listeners, the built-in handlers, the access log, and graceful
//! shutdown.

mod support;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use support::{Portico, read_response};

const HANDLERS: &str = r#"
[server]
name = "test.local"
grace = "5s"
[http]
max_header_bytes = "8KiB"
max_body_bytes = "1MiB"
header_timeout = "1s"
idle_timeout = "1s"
[[listen]]
address = "127.0.0.1:0"
[[listen]]
address = "unix:{dir}/portico.sock"
[[route]]
exact = "/"
handler = "landing"
[[route]]
prefix = "/status"
handler = "status"
[[route]]
prefix = "/echo"
handler = "echo"
"#;

#[test]
fn landing_page_lists_routes_and_unknown_path_is_404() {
    let p = Portico::start(HANDLERS);
    let r = p.get("/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let t = r.text();
    assert!(
        t.contains("prefix /echo") && t.contains("handler echo"),
        "{t}"
    );
    assert_eq!(p.get("/nothing-here").status, 404);
}

#[test]
fn echo_post_with_content_length() {
    let p = Portico::start(HANDLERS);
    let r = p.raw(b"POST /echo/x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.starts_with("POST /echo/x?a=1\n"), "{t}");
    assert!(t.ends_with("\n\nhello"), "{t}");
}

#[test]
fn chunked_request_body_and_chunked_response() {
    let p = Portico::start(HANDLERS);
    let r = p.raw(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(r.status, 200);
    // A body of unknown length goes back chunked.
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.text().ends_with("\n\nhello world"), "{}", r.text());
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..5 {
        write!(w, "GET /echo/{i} HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.text().starts_with(&format!("GET /echo/{i}\n")));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend_from_slice(format!("GET /echo/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    w.write_all(&all).unwrap();
    let mut r = BufReader::new(s);
    for i in 0..10 {
        let resp = read_response(&mut r, false).unwrap();
        assert!(
            resp.text().starts_with(&format!("GET /echo/{i}\n")),
            "{}",
            resp.text()
        );
    }
}

#[test]
fn expect_100_continue() {
    let p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let interim = read_response(&mut r, true).unwrap();
    assert_eq!(interim.status, 100);
    w.write_all(b"abc").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.text().ends_with("abc"));
}

#[test]
fn head_has_length_but_no_body() {
    let p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());
    // The next response follows at once: the HEAD response carried no body.
    let next = read_response(&mut r, false).unwrap();
    assert!(next.text().starts_with("GET /echo\n"));
}

#[test]
fn oversized_header_is_431() {
    let p = Portico::start(HANDLERS);
    let big = "a".repeat(9 * 1024);
    let r = p.raw(format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 431);
}

#[test]
fn too_many_headers_is_431() {
    let p = Portico::start(HANDLERS);
    let mut req = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert_eq!(p.raw(req.as_bytes()).status, 431);
}

/// A request of `fields` header fields (Host included) on a fresh connection.
fn fields_request(fields: usize) -> String {
    let mut req = String::from("GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n");
    for i in 2..fields {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// `[http] max_headers` at the boundary: its default (100, hyper's own default, which
/// portico then leaves unset) and a configured 20. Exactly the limit is served; one more
/// field is 431.
#[test]
fn max_headers_boundary_default_and_configured() {
    let p = Portico::start(HANDLERS);
    assert_eq!(p.raw(fields_request(100).as_bytes()).status, 200);
    assert_eq!(p.raw(fields_request(101).as_bytes()).status, 431);
    let p = Portico::start(&HANDLERS.replace("[http]\n", "[http]\nmax_headers = 20\n"));
    assert_eq!(p.raw(fields_request(20).as_bytes()).status, 200);
    assert_eq!(p.raw(fields_request(21).as_bytes()).status, 431);
}

#[test]
fn oversized_body_is_413() {
    let p = Portico::start(HANDLERS);
    let r = p.raw(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 413);
}

#[test]
fn header_read_timeout_closes_a_slow_client() {
    let p = Portico::start(HANDLERS);
    let mut s = p.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        start.elapsed()
    );
    // hyper answers 408 or just closes; either way no 200.
    assert!(!String::from_utf8_lossy(&buf).contains(" 200 "));
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    let start = Instant::now();
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn unix_listener_serves_too() {
    let p = Portico::start(HANDLERS);
    let path = p.dir().join("portico.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(b"GET /echo/unix HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("GET /echo/unix\n"));
}

#[test]
fn status_as_json_and_prometheus() {
    let p = Portico::start(HANDLERS);
    p.get("/echo/1");
    let j = p.get("/status");
    assert_eq!(j.header("content-type"), Some("application/json"));
    assert!(
        j.text().contains("\"name\":\"/echo\",\"requests\":1"),
        "{}",
        j.text()
    );
    let t = p.get("/status?format=prometheus");
    assert!(t.header("content-type").unwrap().starts_with("text/plain"));
    assert!(
        t.text()
            .contains("portico_route_requests_total{route=\"/echo\",status=\"2xx\"} 1"),
        "{}",
        t.text()
    );
}

#[test]
fn access_log_is_combined_log_format() {
    let p = Portico::start(HANDLERS);
    p.raw(b"GET /echo/log HTTP/1.1\r\nHost: h\r\nUser-Agent: tester/1\r\nReferer: http://r/\r\nConnection: close\r\n\r\n");
    assert!(
        p.wait_log("\"GET /echo/log HTTP/1.1\" 200 ", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    let log = p.log();
    let line = log.lines().find(|l| l.contains("/echo/log")).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("\"http://r/\" \"tester/1\""), "{line}");
}

#[test]
fn sigterm_lets_in_flight_request_finish_then_exits_zero() {
    let mut p = Portico::start(HANDLERS);
    let s = p.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    unsafe {
        libc::kill(p.pid(), libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused once shutdown began.
    assert!(std::net::TcpStream::connect(&p.addr).is_err() || p.log().contains("shutting down"));
    w.write_all(b"world").unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("helloworld"));
    let st = p.terminate(Duration::from_secs(10)).expect("exited");
    assert!(st.success(), "{st:?}");
}

/// Threads that cannot be made (here: a default thread stack larger than the address
/// space, whatever the overcommit policy; the system's thread limit fails the same way)
/// are an error at startup, exit 1 with the reason, before anything listens: not a
/// server that accepts and never answers, nor async-io's panic and abort.
#[test]
fn a_runtime_whose_threads_cannot_start_is_an_error_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("portico.toml");
    std::fs::write(
        &cfg,
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\nprefix = \"/\"\nhandler = \"echo\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&cfg)
        // 2^60 bytes: std's default stack for new threads, past any user address space.
        .env("RUST_MIN_STACK", "1152921504606846976")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("portico without threads still runs after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("portico: cannot start the runtime: no worker thread could start"),
        "{err}"
    );
    assert!(
        !err.contains("listening on") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn check_names_key_and_line_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[server]\nname = \"x\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\n\n[[route]]\nprefix = \"/cgi-bin/\"\ncgi = { root = \"/tmp\", timeout = \"soon\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:9: key `route[0].cgi.timeout`"),
        "{err}"
    );

    std::fs::write(&cfg, "[server]\nnmae = \"x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nmae") && err.contains(":2"), "{err}");

    std::fs::write(
        &cfg,
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\nprefix = \"/\"\nhandler = \"nope\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route[0].handler") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn sighup_reloads_routes_without_dropping_listeners() {
    let p = Portico::start(HANDLERS);
    assert_eq!(p.get("/later").status, 404);
    let cfg = p.dir().join("portico.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[[route]]\nprefix = \"/later\"\nhandler = \"echo\"\n"),
    )
    .unwrap();
    unsafe {
        libc::kill(p.pid(), libc::SIGHUP);
    }
    assert!(
        p.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    assert_eq!(p.get("/later/x").status, 200);
    // A broken file is refused and the running routes stay.
    std::fs::write(&cfg, "[[route]]\nprefix = \"nope\"\n").unwrap();
    unsafe {
        libc::kill(p.pid(), libc::SIGHUP);
    }
    assert!(
        p.wait_log("configuration not reloaded", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    assert_eq!(p.get("/later/x").status, 200);
}

/// Threads of `pid` whose name starts with `prefix` (names are cut at 15 bytes).
fn threads_named(pid: i32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn server_threads_sets_the_executor_threads() {
    let p = Portico::start(&HANDLERS.replace("grace = \"5s\"", "grace = \"5s\"\nthreads = 3"));
    assert_eq!(p.get("/echo").status, 200);
    assert_eq!(threads_named(p.pid(), "portico-worker"), 3);
    // No other executor's threads beside them (async-std's pool once started there too,
    // out of the setting's reach).
    assert_eq!(threads_named(p.pid(), "async-std"), 0);
    // The default: one per CPU less one, at least 1.
    let p = Portico::start(HANDLERS);
    assert_eq!(p.get("/echo").status, 200);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        threads_named(p.pid(), "portico-worker"),
        cpus.saturating_sub(1).max(1)
    );
    // The environment wins (the variable async-std read, still honoured).
    let p = Portico::start_full(HANDLERS, &[], &[("ASYNC_STD_THREAD_COUNT", "2")]);
    assert_eq!(p.get("/echo").status, 200);
    assert_eq!(threads_named(p.pid(), "portico-worker"), 2);
}
