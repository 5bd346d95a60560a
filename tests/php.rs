//! FastCGI and SCGI backends against real applications (issue: FastCGI pools and SCGI
//! upstreams): php-fpm as an external upstream, php-cgi as managed children, and a
//! Python WSGI app under flup over FastCGI and SCGI. The peers are installed by
//! `.ci/run` (php-fpm, php-cgi from Debian; flup from PyPI).

mod support;

use std::io::{BufReader, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Peer, Portico, free_port, md5_hex, processes, read_response, repo, wait_port};

struct Fpm {
    peer: Option<Peer>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Fpm {
    fn start_on(port: u16, dir: tempfile::TempDir) -> Fpm {
        let conf = dir.path().join("fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n[www]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 4\nclear_env = no\nphp_admin_value[upload_max_filesize] = 64M\nphp_admin_value[post_max_size] = 64M\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let peer = Peer::spawn(
            "php-fpm",
            Command::new("php-fpm8.2")
                .args(["-F", "-R", "-y"])
                .arg(&conf),
        );
        assert!(
            wait_port(&format!("127.0.0.1:{port}"), Duration::from_secs(10)),
            "php-fpm did not start"
        );
        Fpm {
            peer: Some(peer),
            port,
            dir,
        }
    }

    fn start() -> Fpm {
        Fpm::start_on(free_port(), tempfile::tempdir().unwrap())
    }
}

fn fpm_config(port: u16) -> String {
    format!(
        r#"
[server]
access_log = "off"
[[listen]]
address = "127.0.0.1:0"
[[route]]
suffix = ".php"
fastcgi = {{ upstreams = ["127.0.0.1:{port}"], document_root = "{{repo}}/fixtures/php", read_timeout = "5s", queue_timeout = "2s", down_backoff = "200ms" }}
[[route]]
prefix = "/status"
handler = "status"
"#
    )
}

fn lines(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
#[ignore = "needs php-fpm"]
fn php_fpm_server_variables_forms_and_headers() {
    let fpm = Fpm::start();
    let p = Portico::start(&fpm_config(fpm.port));
    let r = p.raw(b"GET /server.php/extra/info?x=1&y=2 HTTP/1.1\r\nHost: php.test\r\nProxy: http://evil/\r\nX-Thing: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let s = lines(&r.text());
    let root = repo().join("fixtures/php");
    for (k, v) in [
        ("SCRIPT_NAME", "/server.php".to_string()),
        ("PATH_INFO", "/extra/info".into()),
        (
            "SCRIPT_FILENAME",
            root.join("server.php").display().to_string(),
        ),
        ("DOCUMENT_ROOT", root.display().to_string()),
        ("REQUEST_URI", "/server.php/extra/info?x=1&y=2".into()),
        ("QUERY_STRING", "x=1&y=2".into()),
        ("REQUEST_METHOD", "GET".into()),
        ("SERVER_NAME", "php.test".into()),
        ("GATEWAY_INTERFACE", "CGI/1.1".into()),
        ("HTTP_X_THING", "t".into()),
        ("REDIRECT_STATUS", "200".into()),
    ] {
        assert_eq!(s.get(k), Some(&v), "{k} in {s:?}");
    }
    assert!(s["SERVER_SOFTWARE"].starts_with("portico/"));
    assert!(!s.contains_key("HTTP_PROXY"));

    let r = p.raw(b"POST /form.php?q=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\nConnection: close\r\n\r\na=1&b=hello");
    assert!(
        r.text().contains("GET={\"q\":\"1\"}")
            && r.text().contains("POST={\"a\":\"1\",\"b\":\"hello\"}"),
        "{}",
        r.text()
    );
    // A chunked form body is spooled so CONTENT_LENGTH reaches php-fpm.
    let r = p.raw(b"POST /form.php HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n");
    assert!(
        r.text().contains("POST={\"a\":\"1\",\"b\":\"2\"}"),
        "{}",
        r.text()
    );

    let r = p.get("/headers.php");
    assert_eq!(r.all("set-cookie"), vec!["a=1", "b=2", "c=3"]);
    assert_eq!(r.header("x-custom"), Some("yes"));
    let r = p.get("/headers.php?code=418");
    assert_eq!(r.status, 418);
    let r = p.get("/headers.php?redirect=1");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
}

#[test]
#[ignore = "needs php-fpm"]
fn php_fpm_20mb_upload_and_download() {
    let fpm = Fpm::start();
    let p = Portico::start(&fpm_config(fpm.port));
    let file: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    let boundary = "----portico-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"up\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut s = p.connect();
    write!(s, "POST /form.php HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    let want = format!("FILE up 20000000 {} 0", md5_hex(&file));
    assert!(r.text().contains(&want), "{}", r.text());
    assert!(r.text().contains("\"note\":\"hi\""));

    let r = p.get("/download.php?n=20000000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 20_000_000);
    assert!(r.body.iter().all(|&b| b == b'p'));
}

#[test]
#[ignore = "needs php-fpm"]
fn php_fpm_early_flush_reaches_the_client() {
    let fpm = Fpm::start();
    let p = Portico::start(&fpm_config(fpm.port));
    let mut s = p.connect();
    s.write_all(b"GET /flush.php HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("early") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "first line took {:?}",
        start.elapsed()
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("late"));
}

#[test]
#[ignore = "needs php-fpm"]
fn php_fpm_restarted_while_portico_runs() {
    let mut fpm = Fpm::start();
    let port = fpm.port;
    let p = Portico::start(&fpm_config(port));
    assert_eq!(p.get("/pid.php").status, 200);
    drop(fpm.peer.take());
    std::thread::sleep(Duration::from_millis(300));
    let st = p.get("/pid.php").status;
    assert_eq!(st, 502, "php-fpm down");
    let fpm = Fpm::start_on(port, fpm.dir);
    let end = Instant::now() + Duration::from_secs(10);
    let mut st = 0;
    while Instant::now() < end {
        st = p.get("/pid.php").status;
        if st == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(st, 200, "no recovery after php-fpm came back");
    drop(fpm);
}

#[test]
#[ignore = "needs php-fpm"]
fn cve_2019_11043_paths_never_reach_php() {
    let fpm = Fpm::start();
    let p = Portico::start(&fpm_config(fpm.port));
    for path in [
        "/server.php%0a/x.php",
        "/server.php%0A",
        "/missing.php",
        "/missing.php/server.php",
        "/../server.php",
        "/server.php%00.php",
    ] {
        let st = p.get(path).status;
        assert!(st == 404 || st == 400, "{path}: {st}");
    }
    let st = p.get("/server.php/%0a").status;
    assert_eq!(st, 404);
}

fn children_config(extra: &str) -> String {
    format!(
        r#"
[server]
access_log = "off"
grace = "2s"
[[listen]]
address = "127.0.0.1:0"
[[route]]
suffix = ".php"
fastcgi = {{ command = ["php-cgi"], document_root = "{{repo}}/fixtures/php", read_timeout = "20s", {extra} }}
[[route]]
prefix = "/status"
handler = "status"
"#
    )
}

fn php_cgi_pids(portico: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == portico && p.cmdline.contains("php-cgi") && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_children_recycle_and_replace() {
    let p = Portico::start(&children_config("processes = 2, max_requests = 3"));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let r = p.get("/pid.php");
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.text().trim().to_string());
    }
    // 12 requests, 3 per child: at least 4 different children served.
    assert!(seen.len() >= 4, "pids: {seen:?}");
    // A child killed with SIGKILL is replaced.
    let end = Instant::now() + Duration::from_secs(10);
    let mut before = php_cgi_pids(p.pid());
    while before.len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        before = php_cgi_pids(p.pid());
    }
    assert!(!before.is_empty(), "no php-cgi children");
    unsafe {
        libc::kill(before[0], libc::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = php_cgi_pids(p.pid());
        if now.len() >= 2 && !now.contains(&before[0]) {
            break;
        }
        assert!(Instant::now() < end, "not replaced: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.get("/pid.php").status, 200);
    let status = p.get("/status").text();
    assert!(status.contains("\"kind\":\"fastcgi-children\""), "{status}");
}

/// The mask of ignored signals of process `pid` (`SigIgn` in /proc).
fn ignored_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn for {pid}: {status}"))
}

#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_children_start_with_signals_at_their_defaults() {
    // portico started with SIGWINCH ignored, as it would inherit SIGHUP from `nohup`.
    // SIGWINCH because neither portico nor php-cgi sets it themselves (php-cgi catches
    // SIGUSR2, SIGHUP and others, ignores SIGPIPE), and nothing else in this test binary
    // uses it.
    // SAFETY: SIG_IGN installs no handler.
    let old = unsafe { libc::signal(libc::SIGWINCH, libc::SIG_IGN) };
    let p = Portico::start(&children_config("processes = 1"));
    // SAFETY: as above, the disposition this process had.
    unsafe {
        libc::signal(libc::SIGWINCH, old);
    }
    let winch = 1u64 << (libc::SIGWINCH - 1);
    assert_ne!(
        ignored_signals(p.pid()) & winch,
        0,
        "portico should inherit it"
    );
    let r = p.get("/pid.php");
    assert_eq!(r.status, 200, "{}", r.text());
    let child: i32 = r.text().trim().parse().expect("a pid");
    assert_eq!(
        ignored_signals(child) & winch,
        0,
        "php-cgi {child} ignores SIGWINCH"
    );
}

#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_ondemand_children_come_and_go() {
    let p = Portico::start(&children_config(
        "mode = \"ondemand\", processes = 3, idle_timeout = \"1s\"",
    ));
    assert!(php_cgi_pids(p.pid()).is_empty(), "ondemand starts none");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let addr = p.addr.clone();
            std::thread::spawn(move || support::get_at(&addr, "/flush.php").status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let busy = php_cgi_pids(p.pid()).len();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(busy >= 2, "children under load: {busy}");
    let end = Instant::now() + Duration::from_secs(10);
    while !php_cgi_pids(p.pid()).is_empty() {
        assert!(Instant::now() < end, "idle children did not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_slow_request_killed_by_terminate_timeout() {
    let p = Portico::start(&children_config(
        "processes = 1, request_terminate_timeout = \"1s\"",
    ));
    let start = Instant::now();
    let r = p.get("/slow.php");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));
    // The pool recovers with a new child.
    let end = Instant::now() + Duration::from_secs(10);
    let mut st = 0;
    while Instant::now() < end {
        st = p.get("/pid.php").status;
        if st == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(st, 200);
}

fn flup(kind: &str) -> (Peer, u16) {
    let port = free_port();
    let peer = Peer::spawn(
        "flup",
        Command::new("python3")
            .arg(repo().join("fixtures/wsgi/app.py"))
            .args([kind, "127.0.0.1", &port.to_string()]),
    );
    assert!(
        wait_port(&format!("127.0.0.1:{port}"), Duration::from_secs(10)),
        "flup {kind} did not start"
    );
    (peer, port)
}

#[test]
#[ignore = "needs flup"]
fn wsgi_app_over_fastcgi_and_scgi() {
    let (_f, fport) = flup("fcgi");
    let (_s, sport) = flup("scgi");
    let p = Portico::start(&format!(
        r#"
[server]
access_log = "off"
[[listen]]
address = "127.0.0.1:0"
[[route]]
prefix = "/fcgi/"
fastcgi = {{ upstreams = ["127.0.0.1:{fport}"] }}
[[route]]
prefix = "/scgi/"
scgi = {{ upstreams = ["127.0.0.1:{sport}"] }}
"#
    ));
    for prefix in ["/fcgi", "/scgi"] {
        let r = p.raw(format!("POST {prefix}/a/b?c=d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").as_bytes());
        assert_eq!(r.status, 201, "{prefix}: {}", r.text());
        assert_eq!(r.header("x-wsgi"), Some("flup"));
        let t = r.text();
        for want in [
            "method=POST",
            &format!("script_name={prefix}"),
            "path_info=/a/b",
            "query=c=d",
            "body=hello",
        ] {
            assert!(t.contains(want), "{prefix}: {want} in {t}");
        }
        // A chunked body is spooled so the length is known.
        let r = p.raw(format!("POST {prefix}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes());
        assert!(r.text().contains("body=abc"), "{prefix}: {}", r.text());
    }
}

#[test]
fn unreachable_upstream_is_502_and_non_utf8_path_is_400() {
    let dead = free_port();
    let p = Portico::start(&format!(
        r#"
[server]
access_log = "off"
[[listen]]
address = "127.0.0.1:0"
[[route]]
prefix = "/app/"
fastcgi = {{ upstreams = ["127.0.0.1:{dead}"], connect_timeout = "1s" }}
"#
    ));
    assert_eq!(p.get("/app/x").status, 502);
    // fastcgi-client holds params as UTF-8: a non-UTF-8 path gets a clear 400.
    assert_eq!(p.get("/app/%ff").status, 400);
}

#[test]
#[ignore = "needs php-cgi"]
fn busy_pool_answers_503_after_queue_timeout_instead_of_hanging() {
    let p = Portico::start(&children_config("processes = 1, queue_timeout = \"1s\""));
    let addr = p.addr.clone();
    let slow = std::thread::spawn(move || support::get_at(&addr, "/flush.php").status);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let st = p.get("/pid.php").status;
    let waited = start.elapsed();
    assert_eq!(st, 503);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(slow.join().unwrap(), 200);
    let status = p.get("/status").text();
    assert!(status.contains("\"rejected\":1"), "{status}");
}

#[test]
#[ignore = "needs php-cgi"]
fn shutdown_and_reload_leave_no_php_cgi_behind() {
    let mut p = Portico::start(&children_config("processes = 2"));
    let end = Instant::now() + Duration::from_secs(10);
    while php_cgi_pids(p.pid()).len() < 2 {
        assert!(Instant::now() < end, "children did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = php_cgi_pids(p.pid());
    // Reload: the old children are drained and replaced.
    unsafe {
        libc::kill(p.pid(), libc::SIGHUP);
    }
    assert!(p.wait_log("configuration reloaded", Duration::from_secs(5)));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = php_cgi_pids(p.pid());
        if now.len() >= 2 && first.iter().all(|pid| !now.contains(pid)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "old children not replaced: {first:?} -> {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.get("/pid.php").status, 200);
    let last = php_cgi_pids(p.pid());
    let st = p.terminate(Duration::from_secs(15)).expect("exited");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<_> = processes()
        .into_iter()
        .filter(|q| last.contains(&q.pid) || first.contains(&q.pid))
        .filter(|q| q.state != 'Z' || q.ppid == 1)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_child_idle_past_its_accept_timeout_still_serves() {
    // php-cgi closes an accepted connection that stays quiet for 5 s; a child that sat
    // idle that long must still serve its next request.
    let p = Portico::start(&children_config("processes = 1"));
    assert_eq!(p.get("/pid.php").status, 200);
    std::thread::sleep(Duration::from_millis(6500));
    let r = p.get("/pid.php");
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = Portico::start(&children_config("processes = 1"));
    std::thread::sleep(Duration::from_millis(6500));
    assert_eq!(fresh.get("/pid.php").status, 200);
}

/// The exchange runs in the task that answers the client: a client that leaves in the
/// middle of a streamed reply, or a HEAD request (no body read), must still free the
/// pooled connection and the in-flight count, or the next requests would queue forever.
#[test]
#[ignore = "needs php-fpm"]
fn php_fpm_client_gone_midway_and_head_free_the_connection() {
    let fpm = Fpm::start();
    let config = fpm_config(fpm.port).replace("down_backoff", "max_conns = 1, down_backoff");
    let p = Portico::start(&config);
    for _ in 0..3 {
        let mut s = p.connect();
        s.write_all(b"GET /download.php?n=20000000 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 65536];
        let mut got = 0;
        while got < 200_000 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "reply ended early");
            got += n;
        }
        drop(s);
        let mut s = p.connect();
        s.write_all(b"HEAD /download.php?n=1000 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .unwrap();
        let r = read_response(&mut BufReader::new(s), true).unwrap();
        assert_eq!(r.status, 200);
    }
    // One connection slot: each of these would wait for it (and fail with 503 after the
    // 2 s queue_timeout) if an abandoned exchange had kept it.
    for _ in 0..5 {
        let r = p.get("/pid.php");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = p.get("/status").text();
        if status.contains("\"in_flight\":0") && !status.contains("\"rejected\":1") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reply whose body is never read (204, here with output the script flushed before
/// ending) must still let the exchange read END_REQUEST and give the child back: the
/// same php-cgi serves before and after, not a replacement for one retired as abandoned.
#[test]
#[ignore = "needs php-cgi"]
fn php_cgi_child_kept_when_the_reply_body_is_never_read() {
    let p = Portico::start(&children_config(
        "mode = \"static\", processes = 1, env = { PHP_FCGI_MAX_REQUESTS = \"0\" }",
    ));
    let before = p.get("/pid.php").text();
    for _ in 0..3 {
        assert_eq!(p.get("/nocontent.php").status, 204);
    }
    let after = p.get("/pid.php").text();
    assert_eq!(before, after, "the child was replaced");
}
