//! portico as the backend of real web servers (issue: FastCGI and SCGI listeners):
//! nginx (`fastcgi_pass` with and without kept connections, `scgi_pass`), Apache
//! mod_proxy_fcgi, lighttpd mod_fastcgi, `cgi-fcgi` as a client, and portico run as a
//! CGI program by lighttpd's mod_cgi. Each web server's config is the example under
//! `examples/`, rendered with free ports. The peers are installed by `.ci/run`.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    Peer, Portico, addresses, free_port, get_at, http_at, md5_hex, render, repo, wait_port,
};

/// portico with FastCGI and SCGI listeners serving the fixture scripts under the
/// routes the examples use.
fn portico() -> (Portico, String, String) {
    let p = Portico::start(
        r#"
[server]
access_log = "off"
[[listen]]
protocol = "fastcgi"
address = "127.0.0.1:0"
[[listen]]
protocol = "scgi"
address = "127.0.0.1:0"
[[route]]
prefix = "/cgi-bin/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "3s" }
[[route]]
prefix = "/once/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "3s" }
[[route]]
prefix = "/scgi/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "3s" }
[[route]]
prefix = "/echo"
handler = "echo"
"#,
    );
    let a = addresses(&p, 2);
    (p, a[0].clone(), a[1].clone())
}

struct Nginx {
    _peer: Peer,
    addr: String,
    _dir: tempfile::TempDir,
}

fn nginx(fastcgi: &str, scgi: &str) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = render(
        "examples/nginx/nginx.conf",
        dir.path(),
        "nginx.conf",
        &[
            ("PREFIX", dir.path().display().to_string()),
            ("HTTP_PORT", port.to_string()),
            ("PORTICO_FASTCGI", fastcgi.to_string()),
            ("PORTICO_SCGI", scgi.to_string()),
        ],
    );
    let peer = Peer::spawn(
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
    Nginx {
        _peer: peer,
        addr,
        _dir: dir,
    }
}

fn env_lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

#[test]
#[ignore = "needs nginx"]
fn nginx_fastcgi_pass_runs_cgi_scripts() {
    let (p, fa, sa) = portico();
    let n = nginx(&fa, &sa);
    for prefix in ["/cgi-bin", "/once"] {
        let r = http_at(
            &n.addr,
            format!("GET {prefix}/env.cgi/extra/path?x=1&y=2 HTTP/1.1\r\nHost: localhost\r\nProxy: http://evil/\r\nX-Custom: v\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{prefix}: {}", r.text());
        let body = r.text();
        let lines = env_lines(&body);
        for want in [
            format!("SCRIPT_NAME={prefix}/env.cgi"),
            "PATH_INFO=/extra/path".into(),
            "QUERY_STRING=x=1&y=2".into(),
            "REQUEST_METHOD=GET".into(),
            "GATEWAY_INTERFACE=CGI/1.1".into(),
            "SERVER_PROTOCOL=HTTP/1.1".into(),
            "HTTP_X_CUSTOM=v".into(),
            format!("REQUEST_URI={prefix}/env.cgi/extra/path?x=1&y=2"),
        ] {
            assert!(
                lines.contains(&want.as_str()),
                "{prefix}: missing {want} in\n{body}"
            );
        }
        assert!(!body.contains("HTTP_PROXY="), "httpoxy: {body}");
        assert!(
            lines.iter().any(|l| l.starts_with("PATH_TRANSLATED=")),
            "{body}"
        );
    }
    drop(p);
}

#[test]
#[ignore = "needs nginx"]
fn nginx_post_bodies_with_length_and_chunked() {
    let (_p, fa, sa) = portico();
    let n = nginx(&fa, &sa);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = md5_hex(&body);
    let mut req = format!("POST /cgi-bin/md5.cgi HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    let r = http_at(&n.addr, &req);
    assert_eq!(r.text().trim(), format!("{want} {}", body.len()));
    // Chunked: nginx buffers and sends CONTENT_LENGTH.
    let mut req = b"POST /cgi-bin/md5.cgi HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for c in body.chunks(100_000) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = http_at(&n.addr, &req);
    assert_eq!(r.text().trim(), format!("{want} {}", body.len()));
}

#[test]
#[ignore = "needs nginx"]
fn nginx_redirects_status_cookies_nph_and_big_responses() {
    let (_p, fa, sa) = portico();
    let n = nginx(&fa, &sa);
    // Local redirect: re-dispatched inside portico, nginx sees the target's output.
    let r = get_at(&n.addr, "/cgi-bin/local-redirect.cgi");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("QUERY_STRING=from=redirect"),
        "{}",
        r.text()
    );
    let r = get_at(&n.addr, "/cgi-bin/client-redirect.cgi");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.org/elsewhere"));
    let r = get_at(&n.addr, "/cgi-bin/status.cgi");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-extra"), Some("kept"));
    let r = get_at(&n.addr, "/cgi-bin/cookies.cgi");
    assert_eq!(r.all("set-cookie"), vec!["a=1", "b=2", "c=3"]);
    // NPH over FastCGI: the status line and headers are passed on as a CGI response.
    let r = get_at(&n.addr, "/cgi-bin/nph-hello.cgi");
    assert_eq!(r.status, 299);
    assert_eq!(r.header("x-nph"), Some("yes"));
    // A large response streams through.
    let r = get_at(&n.addr, "/cgi-bin/big.cgi?20000000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 20_000_000);
}

#[test]
#[ignore = "needs nginx"]
fn nginx_timeouts_and_refusals() {
    let (p, fa, sa) = portico();
    let n = nginx(&fa, &sa);
    let pidfile = p.dir().join("sleep.pids");
    // sleep.cgi reads PIDFILE from the environment: pass it through a header is not
    // possible, so only the status is checked here (the process checks are in cgi tests).
    let _ = pidfile;
    let r = get_at(&n.addr, "/cgi-bin/sleep.cgi");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(get_at(&n.addr, "/cgi-bin/missing.cgi").status, 404);
    assert_eq!(get_at(&n.addr, "/cgi-bin/noexec.cgi").status, 403);
    let r = get_at(&n.addr, "/cgi-bin/die.cgi");
    assert_eq!(r.status, 502);
}

#[test]
#[ignore = "needs nginx"]
fn nginx_scgi_pass() {
    let (_p, fa, sa) = portico();
    let n = nginx(&fa, &sa);
    let r = get_at(&n.addr, "/scgi/env.cgi/more?q=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(
        body.contains("PATH_INFO=/more") && body.contains("QUERY_STRING=q=1"),
        "{body}"
    );
    let data = vec![b'z'; 100_000];
    let mut req = format!("POST /scgi/md5.cgi HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()).into_bytes();
    req.extend_from_slice(&data);
    let r = http_at(&n.addr, &req);
    assert_eq!(r.text().trim(), format!("{} 100000", md5_hex(&data)));
}

#[test]
#[ignore = "needs apache2"]
fn apache_mod_proxy_fcgi() {
    let (_p, fa, _) = portico();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (host, pport) = fa.rsplit_once(':').unwrap();
    let conf = render(
        "examples/apache/httpd.conf",
        dir.path(),
        "httpd.conf",
        &[
            ("PREFIX", dir.path().display().to_string()),
            ("HTTP_PORT", port.to_string()),
            ("PORTICO_HOST", host.to_string()),
            ("PORTICO_PORT", pport.to_string()),
        ],
    );
    let _httpd = Peer::spawn(
        "apache2",
        Command::new("apache2").arg("-X").arg("-f").arg(&conf),
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_port(&addr, Duration::from_secs(10)),
        "httpd did not start: {:?}",
        std::fs::read_to_string(dir.path().join("error.log"))
    );
    let r = get_at(&addr, "/cgi-bin/env.cgi/x/y?a=b");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.text();
    assert!(body.contains("SCRIPT_NAME=/cgi-bin/env.cgi"), "{body}");
    assert!(
        body.contains("PATH_INFO=/x/y") && body.contains("QUERY_STRING=a=b"),
        "{body}"
    );
    let data = vec![b'q'; 300_000];
    let mut req = format!("POST /cgi-bin/md5.cgi HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()).into_bytes();
    req.extend_from_slice(&data);
    let r = http_at(&addr, &req);
    assert_eq!(r.text().trim(), format!("{} 300000", md5_hex(&data)));
}

#[test]
#[ignore = "needs lighttpd"]
fn lighttpd_mod_fastcgi_and_portico_as_cgi_program() {
    let (_p, fa, _) = portico();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (host, pport) = fa.rsplit_once(':').unwrap();
    let bridge_cfg = dir.path().join("bridge.toml");
    std::fs::write(&bridge_cfg, "[server]\naccess_log = \"off\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\nprefix = \"/echo\"\nhandler = \"echo\"\n").unwrap();
    let conf = render(
        "examples/lighttpd/lighttpd.conf",
        dir.path(),
        "lighttpd.conf",
        &[
            ("PREFIX", dir.path().display().to_string()),
            ("HTTP_PORT", port.to_string()),
            ("PORTICO_HOST", host.to_string()),
            ("PORTICO_PORT", pport.to_string()),
            ("PORTICO_BIN", env!("CARGO_BIN_EXE_portico").to_string()),
            ("PORTICO_CONFIG", bridge_cfg.display().to_string()),
        ],
    );
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
    let r = get_at(&addr, "/cgi-bin/env.cgi/p?z=9");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("PATH_INFO=/p") && r.text().contains("QUERY_STRING=z=9"),
        "{}",
        r.text()
    );
    // lighttpd's mod_cgi runs portico itself; portico routes PATH_INFO to its echo handler.
    let r = http_at(&addr, b"POST /bridge/echo/via-cgi?k=v HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().starts_with("POST /echo/via-cgi?k=v\n"),
        "{}",
        r.text()
    );
    assert!(r.text().ends_with("\n\nbody"), "{}", r.text());
}

#[test]
#[ignore = "needs libfcgi-bin (cgi-fcgi)"]
fn cgi_fcgi_as_client() {
    let (_p, fa, _) = portico();
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect", &fa])
        .env_clear()
        .env("REQUEST_METHOD", "GET")
        .env("SCRIPT_NAME", "/cgi-bin/env.cgi")
        .env("PATH_INFO", "/from/cgi-fcgi")
        .env("QUERY_STRING", "a=1")
        .env("SERVER_NAME", "localhost")
        .env("SERVER_PORT", "80")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .output()
        .expect("cgi-fcgi");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Status: 200 OK\r\n"), "{text}");
    assert!(
        text.contains("PATH_INFO=/from/cgi-fcgi") && text.contains("SCRIPT_NAME=/cgi-bin/env.cgi"),
        "{text}"
    );
    let _ = repo();
}
