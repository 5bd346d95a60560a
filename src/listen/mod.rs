//! Listeners: accept loops that turn a wire protocol into the common model and back.
//! Each protocol has one file; this file binds addresses.
//!
//! Must not import backend or route.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use std::os::fd::{FromRawFd, RawFd};

use crate::addr::{Address, Inherited};
use crate::model::Endpoint;
use crate::rt;

pub mod cgi;
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
    /// An inherited Unix-domain socket (its path is not ours to remove).
    Inherited(rt::UnixListener, PathBuf),
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
    pub async fn bind(
        addr: &Address,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> io::Result<Listener> {
        match addr {
            Address::Inherited(which) => {
                let fd = inherited_fd(which)?;
                from_listening_fd(fd)
            }
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
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
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
            Listener::Unix(_, p) | Listener::Inherited(_, p) => format!("unix:{}", p.display()),
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
                        addr: local.ip().to_string().into(),
                        port: Some(local.port()),
                    },
                    Endpoint {
                        addr: peer.ip().to_string().into(),
                        port: Some(peer.port()),
                    },
                ))
            }
            Listener::Unix(l, p) | Listener::Inherited(l, p) => {
                let s = l.accept().await?;
                Ok((
                    Conn::Unix(s),
                    Endpoint {
                        addr: p.display().to_string().into(),
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

/// Accepts connections on `listener` until `shutdown`, at most `max` open at once (more
/// wait in the kernel's accept queue), and runs `serve` for each in its own task; each
/// task holds a clone of `tracker` until it has finished. `serve` may refuse a
/// connection by returning `None` (it is then closed at once).
pub async fn accept_loop<F, Fut>(
    listener: Listener,
    max: usize,
    shutdown: rt::Shutdown,
    tracker: rt::Tracker,
    mut serve: F,
) where
    F: FnMut(Conn, Endpoint, Endpoint) -> Option<Fut>,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = std::sync::Arc::new(rt::Semaphore::new(max));
    let name = listener.local_text();
    loop {
        let Some(permit) = rt::race(async { Some(limit.acquire_arc().await) }, async {
            shutdown.wait().await;
            None
        })
        .await
        else {
            break;
        };
        let accepted = rt::race(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        let (conn, local, peer) = match accepted {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // EMFILE and friends: log, back off briefly, keep serving.
                log::warn!(target: "portico::listen", "{name}: accept failed: {e}");
                rt::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(task) = serve(conn, local, peer) else {
            continue;
        };
        let tracker = tracker.clone();
        // `rt::map`, not an async block, which would hold `task` twice.
        drop(rt::spawn(rt::map(task, move |()| {
            drop(permit);
            drop(tracker);
        })));
    }
    log::debug!(target: "portico::listen", "{name}: no longer accepting");
}

/// Whether fd 0 is a listening socket (the FastCGI convention: a web server or
/// spawn-fcgi started us with the socket on standard input; FCGI-2.2-2).
pub fn fd0_is_listening_socket() -> bool {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `val`, a c_int we own.
    let r = unsafe {
        libc::getsockopt(
            0,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && val != 0
}

/// The descriptor of an inherited socket, checked to be a listening socket.
fn inherited_fd(which: &Inherited) -> io::Result<RawFd> {
    let fd = match which {
        Inherited::Fd(n) => *n,
        Inherited::SystemdIndex(_) | Inherited::SystemdName(_) => {
            let pid_ok = std::env::var("LISTEN_PID")
                .ok()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p == std::process::id());
            let count: usize = std::env::var("LISTEN_FDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if !pid_ok || count == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no sockets passed by systemd (LISTEN_PID/LISTEN_FDS not set for this process)",
                ));
            }
            let index = match which {
                Inherited::SystemdIndex(i) => *i,
                Inherited::SystemdName(name) => std::env::var("LISTEN_FDNAMES")
                    .unwrap_or_default()
                    .split(':')
                    .position(|n| n == name)
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("no socket named {name:?} in LISTEN_FDNAMES"),
                        )
                    })?,
                Inherited::Fd(_) => 0,
            };
            if index >= count {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("systemd passed {count} socket(s); index {index} is past them"),
                ));
            }
            // sd_listen_fds(3): the sockets start at fd 3.
            3 + index as RawFd
        }
    };
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in fd0_is_listening_socket.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || val == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a listening socket"),
        ));
    }
    Ok(fd)
}

/// Wraps an inherited listening descriptor, TCP or Unix by its address family.
fn from_listening_fd(fd: RawFd) -> io::Result<Listener> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes.
    let family = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        libc::c_int::from(storage.ss_family)
    };
    // SAFETY: the descriptor was checked to be a listening socket and is handed to us by
    // our parent; from here on the listener owns it (it is closed when dropped).
    match family {
        libc::AF_UNIX => {
            let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            let path = std_l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(format!("fd:{fd}")));
            // Not ours to remove on exit: mark it with an empty path.
            Ok(Listener::Inherited(
                rt::UnixListener::from_std(std_l)?,
                path,
            ))
        }
        libc::AF_INET | libc::AF_INET6 => {
            let std_l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            Ok(Listener::Tcp(rt::TcpListener::from_std(std_l)?))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd}: unsupported socket family {other}"),
        )),
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
        push_header_name(name.as_str(), &mut out);
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

/// Writes a header name in its usual capitalisation (`content-type` → `Content-Type`).
/// The model keeps names lower-case; an Authorizer's `Variable-NAME` fields name
/// variables, which are upper-case by convention and are written so (FCGI-6.3-7).
fn push_header_name(name: &str, out: &mut Vec<u8>) {
    if let Some(var) = name.strip_prefix("variable-") {
        out.extend_from_slice(b"Variable-");
        out.extend_from_slice(var.to_ascii_uppercase().as_bytes());
        return;
    }
    let mut upper = true;
    for b in name.bytes() {
        out.push(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
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
