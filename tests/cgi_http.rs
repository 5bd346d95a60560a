//! CGI hosting over HTTP, end to end: the real binary on a free port, the fixture scripts
//! of `fixtures/cgi`, real sockets. Test names cite the RFC 3875 clause they prove.

mod support;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use support::{Portico, md5_hex, processes, read_response, zombies_of};

const CONFIG: &str = r#"
[server]
name = "gw.test"
grace = "3s"
[http]
max_body_bytes = "200MiB"
[[listen]]
address = "127.0.0.1:0"
[[route]]
prefix = "/cgi-bin/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "2s", env = { PIDFILE = "{dir}/pids" }, spool_memory = "64KiB" }
[[route]]
prefix = "/limited/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "5s", max_concurrent = 1, env = { PIDFILE = "{dir}/pids" } }
[[route]]
prefix = "/args/"
cgi = { root = "{repo}/fixtures/cgi", search_args = true }
[[route]]
prefix = "/mapped/"
cgi = { root = "{repo}/fixtures/cgi", header_policy = "map" }
"#;

fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_get(p: &Portico, target: &str, extra: &str) -> std::collections::BTreeMap<String, String> {
    let r = p.raw(
        format!("GET {target} HTTP/1.1\r\nHost: gw.test:8080\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    env_of(&r.text())
}

#[test]
fn cgi_4_1_meta_variables_over_http() {
    let p = Portico::start(CONFIG);
    let port = p.addr.rsplit_once(':').unwrap().1.to_string();
    let e = env_get(
        &p,
        "/cgi-bin/env.cgi/a%20b/c?x=1&y=%41",
        "User-Agent: t/1\r\nX-Forwarded-For: 9.9.9.9\r\n",
    );
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),    // CGI-4.1.4
        ("REQUEST_METHOD", "GET"),           // CGI-4.1.12
        ("SCRIPT_NAME", "/cgi-bin/env.cgi"), // CGI-4.1.13
        ("PATH_INFO", "/a b/c"),             // CGI-4.1.5 (decoded)
        ("QUERY_STRING", "x=1&y=%41"),       // CGI-4.1.7 (not decoded)
        ("SERVER_NAME", "gw.test"),          // CGI-4.1.14, AMB-11
        ("SERVER_PORT", port.as_str()),      // CGI-4.1.15
        ("SERVER_PROTOCOL", "HTTP/1.1"),     // CGI-4.1.16
        ("REMOTE_ADDR", "127.0.0.1"),        // CGI-4.1.8
        ("HTTP_USER_AGENT", "t/1"),          // CGI-4.1.18
        ("HTTP_X_FORWARDED_FOR", "9.9.9.9"),
        ("REQUEST_URI", "/cgi-bin/env.cgi/a%20b/c?x=1&y=%41"), // CGI-RW-1
        ("REQUEST_SCHEME", "http"),
        ("REDIRECT_STATUS", "200"), // CGI-RW-3
    ];
    for (k, v) in want {
        assert_eq!(e.get(k).map(String::as_str), Some(v), "{k}: {e:?}");
    }
    assert!(e["SERVER_SOFTWARE"].starts_with("portico/"));
    assert!(e["SCRIPT_FILENAME"].ends_with("/fixtures/cgi/env.cgi"));
    assert!(e["DOCUMENT_ROOT"].ends_with("/fixtures/cgi"));
    assert!(
        e["PATH_TRANSLATED"].ends_with("/fixtures/cgi/a b/c"),
        "{:?}",
        e.get("PATH_TRANSLATED")
    );
    assert!(e.contains_key("REMOTE_PORT"));
    // CGI-4.1.2 / AMB-4: no body framing, no CONTENT_LENGTH.
    assert!(!e.contains_key("CONTENT_LENGTH"));
    // A scrubbed environment: portico's own variables do not leak.
    assert!(
        !e.contains_key("RUST_LOG") && !e.contains_key("HOME"),
        "{e:?}"
    );
    assert!(e.contains_key("PATH"));
}

#[test]
fn cgi_4_1_5_path_info_cases() {
    let p = Portico::start(CONFIG);
    let e = env_get(&p, "/cgi-bin/env.cgi", "");
    assert!(
        !e.contains_key("PATH_INFO") && !e.contains_key("PATH_TRANSLATED"),
        "{e:?}"
    );
    let e = env_get(&p, "/cgi-bin/env.cgi/", "");
    assert_eq!(e.get("PATH_INFO").map(String::as_str), Some("/"));
    // The directory index script.
    let r = p.get("/cgi-bin/sub/");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("index of sub: /cgi-bin/sub/index.cgi|"),
        "{}",
        r.text()
    );
}

#[test]
fn cgi_rw_6_proxy_header_never_reaches_the_script() {
    let p = Portico::start(CONFIG);
    let e = env_get(
        &p,
        "/cgi-bin/env.cgi",
        "Proxy: http://evil.example/\r\nRedirect-Status: 1\r\n",
    );
    assert!(!e.contains_key("HTTP_PROXY"), "{e:?}");
    assert_eq!(e.get("REDIRECT_STATUS").map(String::as_str), Some("200"));
    assert!(!e.contains_key("HTTP_REDIRECT_STATUS"), "{e:?}");
}

#[test]
fn cgi_amb_7_colliding_header_names_by_policy() {
    let p = Portico::start(CONFIG);
    // Strict (default): a name with '_' is dropped, so it cannot overwrite X-User.
    let e = env_get(&p, "/cgi-bin/env.cgi", "X-User: real\r\nX_User: forged\r\n");
    assert_eq!(e.get("HTTP_X_USER").map(String::as_str), Some("real"));
    // Map: the collision refuses the request.
    let r = p.raw(b"GET /mapped/env.cgi HTTP/1.1\r\nHost: h\r\nX-User: real\r\nX_User: forged\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn cgi_4_2_post_50mb_with_length_and_chunked() {
    let p = Portico::start(CONFIG);
    let body: Vec<u8> = (0..50_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let want = format!("{} {}", md5_hex(&body), body.len());
    let mut s = p.connect();
    write!(s, "POST /cgi-bin/md5.cgi HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.text().trim(), want);
    // CGI-4.2-8: a chunked body is spooled (memory, then a file) so CONTENT_LENGTH is set.
    let mut s = p.connect();
    s.write_all(b"POST /cgi-bin/md5.cgi HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    for c in body.chunks(1 << 20) {
        write!(s, "{:x}\r\n", c.len()).unwrap();
        s.write_all(c).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.text().trim(), want);
}

#[test]
fn cgi_9_6_script_writing_before_reading_does_not_deadlock() {
    let p = Portico::start(CONFIG);
    let body = vec![b'k'; 4_000_000];
    let mut s = p.connect();
    write!(s, "POST /cgi-bin/write-first.cgi HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert!(
        r.text()
            .ends_with(&format!("md5 {} 4000000\n", md5_hex(&body)))
    );
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn cgi_6_4_one_gigabyte_streams_with_small_rss() {
    let p = Portico::start(
        CONFIG
            .replace("timeout = \"2s\"", "timeout = \"120s\"")
            .as_str(),
    );
    let mut s = p.connect();
    s.write_all(
        b"GET /cgi-bin/big.cgi?1073741824 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    // Skip the head, then count the (chunked) body as it comes, sampling RSS.
    let mut line = String::new();
    loop {
        line.clear();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut total = 0u64;
    let mut max_rss = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut n_reads = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        n_reads += 1;
        if n_reads % 64 == 0 {
            max_rss = max_rss.max(rss_kb(p.pid()));
        }
    }
    // Chunk framing adds a little; the payload is exactly 1 GiB.
    assert!(total >= 1_073_741_824, "{total}");
    assert!(max_rss < 64 * 1024, "gateway RSS reached {max_rss} kB");
}

#[test]
fn cgi_5_nph_script_passed_through() {
    let p = Portico::start(CONFIG);
    let r = p.get("/cgi-bin/nph-hello.cgi");
    assert_eq!(r.status, 299);
    assert_eq!(r.header("x-nph"), Some("yes"));
    assert_eq!(r.text(), "nph body\n");
}

#[test]
fn cgi_6_2_redirects_status_and_cookies() {
    let p = Portico::start(CONFIG);
    // CGI-6.2.2: local redirect re-dispatched as GET, REDIRECT_URL set.
    let r = p.get("/cgi-bin/local-redirect.cgi?orig=1");
    assert_eq!(r.status, 200);
    let e = env_of(&r.text());
    assert_eq!(
        e.get("QUERY_STRING").map(String::as_str),
        Some("from=redirect")
    );
    assert_eq!(
        e.get("REDIRECT_URL").map(String::as_str),
        Some("/cgi-bin/local-redirect.cgi?orig=1")
    );
    // CGI-6.2.3 and 6.2.4.
    let r = p.get("/cgi-bin/client-redirect.cgi");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("http://example.org/elsewhere"))
    );
    let r = p.get("/cgi-bin/redirect-doc.cgi");
    assert_eq!(r.status, 301);
    assert!(r.text().contains("moved"));
    // CGI-6.3.3: Status; CGI-RW-8: framing fields from the script dropped.
    let r = p.get("/cgi-bin/status.cgi");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-extra"), Some("kept"));
    assert_eq!(r.text(), "nope\n");
    // Several Set-Cookie, in order.
    let r = p.get("/cgi-bin/cookies.cgi");
    assert_eq!(r.all("set-cookie"), vec!["a=1", "b=2", "c=3"]);
}

#[test]
fn cgi_amb_6_bad_scripts_are_502_and_stderr_is_logged() {
    let p = Portico::start(CONFIG);
    assert_eq!(p.get("/cgi-bin/die.cgi").status, 502);
    assert_eq!(p.get("/cgi-bin/malformed.cgi").status, 502);
    assert_eq!(p.get("/cgi-bin/silent.cgi").status, 502);
    assert!(
        p.wait_log("/cgi-bin/die.cgi: about to die", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    let r = p.get("/cgi-bin/stderr.cgi?zq9");
    assert_eq!(r.status, 200);
    assert!(p.wait_log("/cgi-bin/stderr.cgi: last line zq9", Duration::from_secs(5)));
}

fn pids(p: &Portico) -> Vec<i32> {
    let path = p.dir().join("pids");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(t) = std::fs::read_to_string(&path) {
            return t
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no pidfile");
}

fn gone(pid: i32) -> bool {
    // Gone, or at least not a live process of ours (a zombie would be a failure below).
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || processes()
            .iter()
            .any(|p| p.pid == pid && p.state == 'Z' && p.ppid == 1)
}

fn wait_gone(pids: &[i32], within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if pids.iter().all(|&p| gone(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn cgi_rw_timeout_is_504_and_kills_the_process_group() {
    let p = Portico::start(CONFIG);
    let start = Instant::now();
    let r = p.get("/cgi-bin/sleep.cgi");
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < Duration::from_secs(6));
    let ids = pids(&p);
    assert!(
        wait_gone(&ids, Duration::from_secs(5)),
        "left running: {ids:?}"
    );
    assert!(
        zombies_of(p.pid()).is_empty(),
        "zombies: {:?}",
        zombies_of(p.pid())
    );
}

#[test]
fn cgi_client_disconnect_kills_the_script() {
    let p = Portico::start(
        CONFIG
            .replace("timeout = \"2s\"", "timeout = \"60s\"")
            .as_str(),
    );
    let mut s = p.connect();
    s.write_all(b"GET /cgi-bin/stream.cgi HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 100_000];
    let _ = s.read(&mut buf).unwrap();
    let ids = pids(&p);
    drop(s);
    assert!(
        wait_gone(&ids, Duration::from_secs(10)),
        "still running: {ids:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(zombies_of(p.pid()).is_empty());
}

/// A request whose client goes away before the script answers is no longer counted in
/// flight by `status`: the server's and the route's gauges come back down (they stayed
/// up for good when the dropped request never reached their decrement). It is counted
/// and logged with nginx's 499 (client closed request) on the route it reached.
#[test]
fn client_gone_before_the_head_leaves_no_request_in_flight_and_logs_499() {
    let config = CONFIG
        .replace("timeout = \"2s\"", "timeout = \"60s\"")
        .replace(
            "[server]\n",
            "[server]\naccess_log = \"{dir}/access.log\"\n",
        )
        + "[[route]]\nexact = \"/status\"\nhandler = \"status\"\n";
    let p = Portico::start(&config);
    let mut s = p.connect();
    s.write_all(b"GET /cgi-bin/sleep.cgi HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let ids = pids(&p);
    drop(s);
    assert!(
        wait_gone(&ids, Duration::from_secs(10)),
        "still running: {ids:?}"
    );
    // The status request itself is the one in flight, on its own route; the request
    // given up is counted once, as a 4xx (499), on the CGI route.
    let text = p.get("/status").text();
    assert!(text.starts_with("{\"uptime_seconds\":"), "{text}");
    assert!(
        text.contains("\"requests\":1,\"in_flight\":1,\"children\""),
        "{text}"
    );
    assert!(
        text.contains(
            "{\"name\":\"/cgi-bin/\",\"requests\":1,\"in_flight\":0,\"status\":{\"1xx\":0,\"2xx\":0,\"3xx\":0,\"4xx\":1,\"5xx\":0}"
        ),
        "{text}"
    );
    assert!(
        text.contains("{\"name\":\"/status\",\"requests\":0,\"in_flight\":1,"),
        "{text}"
    );
    let log = std::fs::read_to_string(p.dir().join("access.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("\"GET /cgi-bin/sleep.cgi HTTP/1.1\""))
        .unwrap_or_else(|| panic!("no line for the request given up:\n{log}"));
    assert!(line.contains("\" 499 - \""), "{line}");
}

#[test]
fn cgi_9_4_traversal_and_symlinks_refused() {
    let p = Portico::start(CONFIG);
    for (path, want) in [
        ("/cgi-bin/../Cargo.toml", [403, 404]),
        ("/cgi-bin/%2e%2e/Cargo.toml", [403, 404]),
        ("/cgi-bin/sub%2Findex.cgi", [403, 404]),
        ("/cgi-bin/env.cgi%00.txt", [400, 404]),
        ("/cgi-bin/noexec.cgi", [403, 403]),
        ("/cgi-bin/missing.cgi", [404, 404]),
    ] {
        let st = p.get(path).status;
        assert!(want.contains(&st), "{path}: {st}");
    }
    // A symlink leaving the root (made at run time in a temp root).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink("/bin/echo", root.join("out.cgi")).unwrap();
    std::os::unix::fs::symlink(
        support::repo().join("fixtures/cgi/env.cgi"),
        root.join("in.cgi"),
    )
    .unwrap();
    drop(p);
    let p = Portico::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\nprefix = \"/x/\"\ncgi = {{ root = \"{}\" }}\n",
        root.display()
    ));
    let st = p.get("/x/out.cgi").status;
    assert!(st == 403 || st == 404, "{st}");
    // A symlink that stays inside the checkout's fixtures is outside this root too.
    let st = p.get("/x/in.cgi").status;
    assert!(st == 403 || st == 404, "{st}");
}

#[test]
fn cgi_503_past_the_concurrency_limit() {
    let p = Portico::start(CONFIG);
    let mut s = p.connect();
    s.write_all(b"GET /limited/stream.cgi HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1000];
    let _ = s.read(&mut buf).unwrap();
    assert_eq!(p.get("/limited/env.cgi").status, 503);
    drop(s);
    let ids = pids(&p);
    assert!(wait_gone(&ids, Duration::from_secs(10)));
    // Once the first script is gone the route serves again.
    let end = Instant::now() + Duration::from_secs(5);
    let mut st = 0;
    while Instant::now() < end {
        st = p.get("/limited/env.cgi").status;
        if st == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(st, 200);
}

#[test]
fn cgi_slot_comes_back_at_exit_even_while_a_leftover_holds_stderr() {
    let p = Portico::start(CONFIG);
    let r = p.get("/limited/bg-stderr.cgi");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hi\n"[..]));
    // The script has exited; its background child holds stderr for a second more.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.get("/limited/env.cgi").status, 200);
    // Let the leftover end and be reaped (portico is its subreaper) before portico stops.
    let end = Instant::now() + Duration::from_secs(6);
    let adopted = || {
        processes()
            .into_iter()
            .filter(|q| q.ppid == p.pid())
            .count()
    };
    while adopted() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(adopted(), 0, "zombies: {:?}", zombies_of(p.pid()));
}

#[test]
fn cgi_4_4_search_args_only_where_enabled() {
    let p = Portico::start(CONFIG);
    let r = p.get("/args/args.cgi?one+two");
    assert_eq!(r.text(), "one\ntwo\n");
    let r = p.get("/args/args.cgi?-s+x");
    assert_eq!(r.text(), "", "no argument may start with '-'");
    let r = p.get("/cgi-bin/args.cgi?one+two");
    assert_eq!(r.text(), "");
}

#[test]
fn shutdown_waits_for_a_running_script_then_exits_zero() {
    let mut p = Portico::start(
        CONFIG
            .replace("timeout = \"2s\"", "timeout = \"60s\"")
            .as_str(),
    );
    let mut s = p.connect();
    s.write_all(b"GET /cgi-bin/stream.cgi HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1000];
    let _ = s.read(&mut buf).unwrap();
    let ids = pids(&p);
    // The script never ends: after the grace period (3 s) it is killed, and portico exits 0.
    let st = p.terminate(Duration::from_secs(15)).expect("exited");
    assert!(st.success(), "{st:?}");
    assert!(
        wait_gone(&ids, Duration::from_secs(5)),
        "orphan left: {ids:?}"
    );
}

#[test]
fn a_script_killed_when_the_grace_period_ends_answers_503_not_502() {
    let mut p = Portico::start(
        CONFIG
            .replace("timeout = \"2s\"", "timeout = \"60s\"")
            .replace("grace = \"3s\"", "grace = \"1s\"")
            .as_str(),
    );
    let mut s = p.connect();
    // sleep.cgi never writes its head.
    s.write_all(b"GET /cgi-bin/sleep.cgi HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let pidfile = p.dir().join("pids");
    let end = Instant::now() + Duration::from_secs(5);
    while !pidfile.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pidfile.exists(), "the script did not start");
    let st = p.terminate(Duration::from_secs(15)).expect("exited");
    assert!(st.success(), "{st:?}");
    let r = read_response(&mut BufReader::new(s), false).expect("an answer before the exit");
    assert_eq!(r.status, 503, "{}", r.text());
    let log = p.log();
    assert!(
        log.contains("stopped by the shutdown: the grace period ended before it answered"),
        "{log}"
    );
    assert!(!log.contains("bad gateway"), "{log}");
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    let p = Portico::start(CONFIG);
    for _ in 0..5 {
        assert_eq!(p.get("/cgi-bin/orphan.cgi").status, 200);
    }
    // The grandchildren exit after a second; portico adopted them and must reap them.
    std::thread::sleep(Duration::from_millis(3500));
    let z = zombies_of(p.pid());
    assert!(z.is_empty(), "zombies left: {z:?}");
    let adopted: Vec<_> = processes()
        .into_iter()
        .filter(|q| q.ppid == p.pid())
        .collect();
    assert!(adopted.is_empty(), "children left: {adopted:?}");
}

#[test]
fn cgi_9_6_slow_client_holds_back_the_script() {
    // Backpressure: a client that stops reading must stop the script, not fill the
    // gateway's memory (hyper's pipeline_flush once disabled this).
    let p = Portico::start(
        CONFIG
            .replace("timeout = \"2s\"", "timeout = \"60s\"")
            .as_str(),
    );
    let mut s = p.connect();
    s.write_all(b"GET /cgi-bin/big.cgi?300000000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let _ = s.read(&mut buf).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kb(p.pid());
    assert!(
        rss < 64 * 1024,
        "gateway RSS {rss} kB with a stalled client"
    );
}
