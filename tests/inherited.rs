//! Listening sockets handed to portico: the FastCGI convention of a socket on fd 0
//! (spawn-fcgi, mod_fcgid, lighttpd), systemd socket activation (LISTEN_FDS), and Unix
//! socket permissions.

mod support;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Peer, fcgi_collect, fcgi_params, fcgi_request, wait_port};

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[server]\naccess_log = \"off\"\n[[listen]]\nprotocol = \"fastcgi\"\naddress = \"systemd:fcgi\"\n[[route]]\nprefix = \"/\"\nhandler = \"echo\"\n",
    )
    .unwrap();
    cfg
}

fn fcgi_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    fcgi_request(1, false, &fcgi_params("GET", path, None), b"", &mut out);
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[1]);
    res[&1].text()
}

#[test]
fn fcgi_2_2_2_socket_on_fd_0_is_served_as_fastcgi() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cfg = dir.path().join("c.toml");
    // Its configured listener is replaced by the inherited one.
    std::fs::write(&cfg, "[server]\naccess_log = \"off\"\n[[listen]]\naddress = \"127.0.0.1:1\"\n[[route]]\nprefix = \"/\"\nhandler = \"echo\"\n").unwrap();
    // Not Peer::spawn: that gives the child a null stdin.
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _p = Peer {
        child,
        name: "portico".into(),
    };
    let text = fcgi_get(&addr, "/via/fd0");
    assert!(text.contains("GET /via/fd0\n"), "{text}");
}

#[test]
fn systemd_socket_activation_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the pid of portico itself: `exec` keeps the shell's.
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=other:fcgi exec \"$0\" serve --config \"$1\"",
    ])
    .arg(env!("CARGO_BIN_EXE_portico"))
    .arg(&cfg)
    .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            // fd 3: a placeholder ("other"); fd 4: our socket ("fcgi").
            if libc::dup2(fd, 4) < 0 || libc::dup2(0, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself (the listener may already be fd 4) keeps FD_CLOEXEC.
            if libc::fcntl(4, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _p = Peer::spawn("portico", &mut cmd);
    drop(listener);
    assert!(wait_port(&addr, Duration::from_secs(5)));
    let text = fcgi_get(&addr, "/via/systemd");
    assert!(text.contains("GET /via/systemd\n"), "{text}");
}

#[test]
fn systemd_address_without_sockets_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on systemd:fcgi") && err.contains("LISTEN_FDS"),
        "{err}"
    );
}

#[test]
fn unix_socket_mode_is_applied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = support::Portico::start(&format!(
        "[[listen]]\nprotocol = \"scgi\"\naddress = \"unix:{}\"\nsocket_mode = \"0600\"\n[[route]]\nprefix = \"/\"\nhandler = \"echo\"\n",
        sock.display()
    ));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(p);
}
