//! Test support: start the real `portico` binary on a free port with a config written to
//! a temp dir, talk to it over real sockets, and kill it (and check for leftovers) on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running portico with its captured stderr.
pub struct Portico {
    pub child: Child,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Portico {
    /// Starts `portico serve --config <dir>/portico.toml` with `toml` (which may use
    /// `{dir}` for the temp dir and `{repo}` for the checkout), listening on a free port.
    pub fn start(toml: &str) -> Portico {
        Self::start_with(toml, &[])
    }

    pub fn start_with(toml: &str, extra_args: &[&str]) -> Portico {
        Self::start_full(toml, extra_args, &[])
    }

    pub fn start_full(toml: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Portico {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = toml
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{repo}", &repo().display().to_string());
        let cfg = dir.path().join("portico.toml");
        std::fs::write(&cfg, text).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .args(extra_args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn portico");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("portico: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(a.to_string());
                    }
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("portico did not start: {}", stderr.lock().unwrap());
            }
        };
        Portico {
            child,
            addr,
            stderr,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    /// Sends a raw request on a fresh connection and reads one response.
    pub fn raw(&self, request: &[u8]) -> HttpResponse {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        read_response(&mut BufReader::new(s), false).expect("response")
    }

    /// `GET path` with `Connection: close`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.pid(), libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (head parsed by httparse; body by Content-Length, chunked, or to
/// EOF). `head_only` for responses to HEAD.
pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> std::io::Result<HttpResponse> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("eof in head: {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut hs);
    resp.parse(&head)
        .map_err(|e| std::io::Error::other(format!("{e}: {:?}", String::from_utf8_lossy(&head))))?;
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| std::io::Error::other(format!("chunk size {line:?}: {e}")))?;
            if size == 0 {
                // trailers until the blank line
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t)?;
                    if t == "\r\n" || t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = find("content-length") {
        let n: usize = n.trim().parse().map_err(std::io::Error::other)?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Zombie children of `pid` (state Z in /proc).
pub fn zombies_of(pid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == pid && p.state == 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Processes whose command line contains `needle` (to find leftover scripts).
pub fn processes_with(needle: &str) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(needle))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub state: char,
    pub cmdline: String,
}

pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if rest.len() < 3 {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid: rest[1].parse().unwrap_or(0),
            pgid: rest[2].parse().unwrap_or(0),
            state: rest[0].chars().next().unwrap_or('?'),
            cmdline,
        });
    }
    out
}

/// What one FastCGI request produced.
#[derive(Debug, Default, Clone)]
pub struct FcgiResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_ended: bool,
    pub end: Option<(u32, u8)>,
}

impl FcgiResult {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads FastCGI records from `s` until every id in `ids` has ended (or EOF/timeout).
pub fn fcgi_collect<R: Read>(
    s: &mut R,
    ids: &[u16],
) -> (
    std::collections::HashMap<u16, FcgiResult>,
    Vec<proto::fastcgi::client::ClientEvent>,
) {
    use proto::fastcgi::client::{ClientEvent, Config, Conn};
    let mut conn = Conn::new(Config::default());
    let mut out: std::collections::HashMap<u16, FcgiResult> = std::collections::HashMap::new();
    let mut others = Vec::new();
    let mut buf = vec![0u8; 65536];
    let done = |out: &std::collections::HashMap<u16, FcgiResult>| {
        ids.iter()
            .all(|id| out.get(id).is_some_and(|r| r.end.is_some()))
    };
    while !done(&out) {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        conn.handle_read(&buf[..n])
            .expect("valid records from portico");
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientEvent::Stdout { id, data } => out.entry(id).or_default().stdout.extend(data),
                ClientEvent::Stderr { id, data } => out.entry(id).or_default().stderr.extend(data),
                ClientEvent::StdoutEnd { id } => out.entry(id).or_default().stdout_ended = true,
                ClientEvent::EndRequest {
                    id,
                    app_status,
                    protocol_status,
                } => out.entry(id).or_default().end = Some((app_status, protocol_status.0)),
                other => others.push(other),
            }
        }
    }
    (out, others)
}

/// nginx-like params for `uri` (path?query).
pub fn fcgi_params(
    method: &str,
    uri: &str,
    content_length: Option<usize>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let p: Vec<(Vec<u8>, Vec<u8>)> = vec![
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("CONTENT_TYPE".into(), "".into()),
        (
            "CONTENT_LENGTH".into(),
            content_length
                .map(|n| n.to_string())
                .unwrap_or_default()
                .into(),
        ),
        ("SCRIPT_NAME".into(), path.into()),
        ("REQUEST_URI".into(), uri.into()),
        ("DOCUMENT_URI".into(), path.into()),
        ("DOCUMENT_ROOT".into(), "/srv/www".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_SCHEME".into(), "http".into()),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "nginx/1.22.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "40000".into()),
        ("SERVER_ADDR".into(), "127.0.0.1".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("HTTP_HOST".into(), "localhost".into()),
        ("HTTP_USER_AGENT".into(), "test".into()),
    ];
    p
}

/// Encodes a whole request.
pub fn fcgi_request(
    id: u16,
    keep_conn: bool,
    params: &[(Vec<u8>, Vec<u8>)],
    stdin: &[u8],
    out: &mut Vec<u8>,
) {
    let pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    proto::fastcgi::client::Request {
        id,
        role: proto::fastcgi::Role::RESPONDER,
        keep_conn,
        params: &pairs,
        stdin: Some(stdin),
        data: None,
    }
    .encode(out);
}

/// A free TCP port on 127.0.0.1 (bound and released).
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`), where no `bind` to
/// port 0 lands: a port taken from that range and let go could be handed straight to a
/// concurrent test's server on `127.0.0.1:0` (a portico probe, say) before the peer
/// meant for it binds, and the test would then talk to the wrong server (seen once:
/// lighttpd's request reset by an SCGI listener). Each call in this process takes the
/// next candidate, so two tests never get the same port either.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = ephemeral_low.saturating_sub(12000).max(10000);
    let span = ephemeral_low.saturating_sub(low).max(1);
    // Test binaries run one after another, but a developer may run several at once:
    // each process starts at its own place in the span.
    let start = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_port(addr: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A peer server (nginx, httpd, lighttpd, php-fpm …) started by a test; killed by PID
/// (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Peer {
    pub child: Child,
    pub name: String,
}

impl Peer {
    pub fn spawn(name: &str, cmd: &mut Command) -> Peer {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Peer {
            child,
            name: name.to_string(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Renders a template from `examples/`, replacing `@KEY@` placeholders, into `dir`.
pub fn render(template: &str, dir: &Path, name: &str, vars: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join(template)).expect("template");
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(
        !text.contains("@PREFIX@"),
        "unreplaced placeholder in {template}"
    );
    let out = dir.join(name);
    std::fs::write(&out, text).unwrap();
    out
}

/// The md5 of `data` as lower-case hex, via md5sum.
pub fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Sends `request` to `addr` and reads one response.
pub fn http_at(addr: &str, request: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut BufReader::new(s), false).expect("response")
}

/// `GET path` to `addr` with `Connection: close`.
pub fn get_at(addr: &str, path: &str) -> HttpResponse {
    http_at(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// The addresses portico printed ("portico: listening on …"), in config order; waits
/// for `n` of them.
pub fn addresses(p: &Portico, n: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(10);
    while p.log().matches("portico: listening on ").count() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    p.log()
        .lines()
        .filter_map(|l| l.strip_prefix("portico: listening on "))
        .map(String::from)
        .collect()
}
