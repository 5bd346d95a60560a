//! Listeners: accept loops that turn a wire protocol into the common model and back.
//! Each protocol has one file; this file binds addresses.
//!
//! Must not import backend or route.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::addr::Address;
use crate::model::Endpoint;
use crate::rt;

pub mod fastcgi;
pub mod http;
pub mod params;
pub mod scgi;

/// A bound listening socket.
pub enum Listener {
    /// TCP.
    Tcp(rt::TcpListener),
    /// Unix-domain; the path is removed when the listener is dropped.
    Unix(rt::UnixListener, PathBuf),
}

/// An accepted connection; clones share the socket (one reads while another writes).
#[derive(Clone)]
pub enum Conn {
    /// TCP.
    Tcp(rt::TcpStream),
    /// Unix-domain.
    Unix(rt::UnixStream),
}

impl Listener {
    /// Binds `addr`; a Unix socket gets `mode` when given. A stale socket file left by a
    /// previous run is replaced; any other existing file is an error.
    pub async fn bind(addr: &Address, mode: Option<u32>) -> io::Result<Listener> {
        match addr {
            Address::Tcp(a) => Ok(Listener::Tcp(rt::TcpListener::bind(a.as_str()).await?)),
            Address::Unix(p) => {
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(p)?;
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", p.display()),
                        ));
                    }
                }
                let l = rt::UnixListener::bind(p).await?;
                if let Some(mode) = mode {
                    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
                }
                Ok(Listener::Unix(l, p.clone()))
            }
        }
    }

    /// The bound address as text (the real port when 0 was asked for).
    pub fn local_text(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Accepts one connection with both ends as CGI sees them.
    pub async fn accept(&self) -> io::Result<(Conn, Endpoint, Endpoint)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let local = s.local_addr()?;
                Ok((
                    Conn::Tcp(s),
                    Endpoint {
                        addr: local.ip().to_string(),
                        port: Some(local.port()),
                    },
                    Endpoint {
                        addr: peer.ip().to_string(),
                        port: Some(peer.port()),
                    },
                ))
            }
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((
                    Conn::Unix(s),
                    Endpoint {
                        addr: p.display().to_string(),
                        port: None,
                    },
                    // A Unix peer has no address; CGI-4.1.8 still wants one.
                    Endpoint {
                        addr: "127.0.0.1".into(),
                        port: None,
                    },
                ))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Conn {
    /// Shuts down both directions of the socket (wakes a reader blocked on it).
    pub fn shutdown_both(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

/// A response's head in CGI form (`Status:` line, header fields, blank line): what the
/// FastCGI and SCGI listeners send back to the web server (RFC 3875 §6; CGI-6.3.3).
pub fn cgi_head(resp: &crate::model::Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"Status: ");
    out.extend_from_slice(resp.status.as_str().as_bytes());
    if let Some(reason) = resp.status.canonical_reason() {
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = resp.body.len()
        && !resp.headers.contains_key(::http::header::CONTENT_LENGTH)
    {
        out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl rt::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl rt::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_close(cx),
            Conn::Unix(s) => std::pin::Pin::new(s).poll_close(cx),
        }
    }
}
