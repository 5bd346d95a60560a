//! The library API an embedding program uses (examples/embed.rs): a handler of its own
//! registered by name, the server started in-process, served over a real socket.

use std::io::{Read, Write};

use portico::backend::{Handler, HandlerFuture, Registry, RouteMatch};
use portico::model::{Request, Response};

struct Shout;

impl Handler for Shout {
    fn call(&self, req: Request, _m: RouteMatch) -> HandlerFuture {
        Box::pin(async move {
            Ok(Response::text(
                http::StatusCode::OK,
                String::from_utf8_lossy(&req.query).to_uppercase(),
            ))
        })
    }
}

#[test]
fn embedded_server_serves_a_registered_handler() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[server]\naccess_log = \"off\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\nprefix = \"/shout\"\nhandler = \"shout\"\n",
    )
    .unwrap();
    let config = portico::config::load(&portico::config::Sources {
        file: Some(file),
        ..Default::default()
    })
    .unwrap();
    let mut registry = Registry::new();
    registry.register("shout", Shout);
    portico::rt::block_on(async {
        let running = portico::server::start(config, &registry).await.unwrap();
        let addr = running.addresses[0].clone();
        let text = portico::rt::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /shout?hey HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nHEY"), "{text}");
        running.shutdown().await;
    });
}

/// One request over a real socket; the response's status line.
fn status_line(addr: String, target: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_script_failing_after_another_server_shut_down_is_still_a_bad_gateway() {
    // The shutdown's mark ("killed when the grace period ended": 503) belongs to the
    // scripts it killed, not to every later failure in the process.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cgi");
    std::fs::write(
        &file,
        format!(
            "[server]\naccess_log = \"off\"\ngrace = \"1s\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[route]]\nprefix = \"/cgi-bin/\"\ncgi = {{ root = \"{}\" }}\n",
            root.display()
        ),
    )
    .unwrap();
    let sources = portico::config::Sources {
        file: Some(file),
        ..Default::default()
    };
    let registry = Registry::new();
    portico::rt::block_on(async {
        let first = portico::server::start(portico::config::load(&sources).unwrap(), &registry)
            .await
            .unwrap();
        first.shutdown().await;
        let second = portico::server::start(portico::config::load(&sources).unwrap(), &registry)
            .await
            .unwrap();
        let addr = second.addresses[0].clone();
        let line = portico::rt::spawn_blocking(move || status_line(addr, "/cgi-bin/die.cgi")).await;
        assert!(line.starts_with("HTTP/1.1 502"), "{line}");
        second.shutdown().await;
    });
}
