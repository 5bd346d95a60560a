//! The HTTP/1.1 listener: hyper 1.x over the runtime seam. Keep-alive, pipelining,
//! chunked bodies, `Expect: 100-continue` and HEAD are hyper's; this file adds the limits
//! (431 header size and count, 413 body size), the header-read and idle timeouts, the
//! connection limit and graceful shutdown, and converts between hyper's types and the
//! model.
//!
//! Must not import backend or route.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;

use super::{Conn, Listener};
use crate::config::Http;
use crate::dispatch::{Dispatcher, error_page};
use crate::model::{Body, Endpoint, Request, Response, split_target};
use crate::rt;

/// Accepts HTTP connections on `listener` until `shutdown`; each connection holds a
/// clone of `tracker` until it has finished.
pub async fn serve(
    listener: Listener,
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Http>,
    shutdown: rt::Shutdown,
    tracker: rt::Tracker,
) {
    let max = settings.max_connections;
    let stop = shutdown.clone();
    super::accept_loop(listener, max, stop, tracker, move |conn, local, peer| {
        let dispatcher = dispatcher.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        Some(async move { connection(conn, local, peer, dispatcher, settings, shutdown).await })
    })
    .await;
}

async fn connection(
    conn: Conn,
    local: Endpoint,
    peer: Endpoint,
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Http>,
    shutdown: rt::Shutdown,
) {
    let activity = Arc::new(Activity::new());
    let io = rt::HyperIo::new(Watched {
        inner: conn,
        activity: activity.clone(),
    });
    let peer_text = peer.addr.clone();
    let svc_activity = activity.clone();
    let svc_settings = settings.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let activity = svc_activity.clone();
        activity.in_flight.fetch_add(1, Relaxed);
        // The request is turned into ours here, outside the future, so the future holds
        // only the dispatch (not hyper's request and ours besides); boxed, as hyper moves
        // the future into its own box.
        let answer = match to_request(req, local.clone(), peer.clone(), &svc_settings) {
            Ok(req) => Ok(dispatcher.dispatch(req)),
            Err(resp) => Err(resp),
        };
        Box::pin(async move {
            let resp = match answer {
                Ok(dispatch) => dispatch.await,
                Err(resp) => *resp,
            };
            activity.in_flight.fetch_sub(1, Relaxed);
            activity.touch();
            Ok::<_, std::convert::Infallible>(to_hyper(resp))
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(rt::HyperTimer)
        .keep_alive(true)
        // Not `pipeline_flush`: with it hyper treats its write buffer as never full and
        // keeps pulling the response body while the client is slow — a streamed CGI
        // response then piles up in memory (seen: 150 MB for a 1 GiB response).
        .half_close(false)
        .header_read_timeout(settings.header_timeout)
        // Header bytes: hyper's limit is twice ours and `handle` answers 431 (with a
        // page and a log line) in between; past twice the limit hyper answers a bare
        // 431 and closes. Header count: hyper's limit is ours, as hyper answers 431 for
        // it too, and up to 100 its field arrays stay on the stack (above, it allocates
        // and fills two arrays of that many entries per request: 9% of the CPU of a
        // keep-alive GET under `benches/cgi.sh`'s echo run with a limit of 200).
        .max_header_size(settings.max_header_bytes.saturating_mul(2));
    // Left unset at hyper's own default (the same 100 fields, the same 431): set, hyper
    // fills its two field arrays element by element on every request (2.4% of the CPU of
    // the echo run of `benches/cgi.sh`, perf); unset, it takes them uninitialised.
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(settings.max_headers);
    }
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        let tick = if shutting_down {
            Duration::from_secs(3600)
        } else {
            settings.idle_timeout.min(Duration::from_secs(1))
        };
        let step = rt::race(async { Some(conn.as_mut().await) }, async {
            if shutting_down {
                rt::coarse::sleep(tick).await;
            } else {
                rt::race(rt::coarse::sleep(tick), shutdown.wait()).await;
            }
            None
        })
        .await;
        match step {
            Some(Ok(())) => break,
            Some(Err(e)) => {
                if e.is_parse() || e.is_parse_too_large() {
                    // hyper has answered 400/431 and closes.
                    log::info!(target: "portico::listen::http", "connection from {peer_text}: {e}");
                } else {
                    log::debug!(target: "portico::listen::http", "connection from {peer_text}: {e}");
                }
                break;
            }
            None => {
                if !shutting_down && shutdown.is_triggered() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                } else if !shutting_down && activity.idle_for() >= settings.idle_timeout {
                    log::debug!(target: "portico::listen::http", "closing idle connection from {peer_text}");
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// hyper's request header field limit when none is set (`DEFAULT_MAX_HEADERS` in
/// hyper's h1 role); `[http] max_headers`'s default is the same.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Our request for hyper's, or the error response (boxed: the rare path) when its head or
/// declared body is over a limit or its target cannot be routed.
fn to_request(
    req: hyper::Request<Incoming>,
    local: Endpoint,
    peer: Endpoint,
    settings: &Http,
) -> Result<Request, Box<Response>> {
    let (parts, incoming) = req.into_parts();
    let head_bytes: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target_len(&parts.uri)
        + parts.method.as_str().len()
        + 12;
    // The field count needs no check here: hyper's own limit is `max_headers` (431).
    if head_bytes > settings.max_header_bytes {
        log::info!(target: "portico::listen::http", "{} {}: request head over the limit ({} fields, {head_bytes} bytes)", parts.method, parts.uri, parts.headers.len());
        let mut r = error_page(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        r.headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Err(Box::new(r));
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| Bytes::copy_from_slice(pq.as_str().as_bytes()))
        .unwrap_or_else(|| Bytes::from_static(b"/"));
    // An absolute-form or authority-form target has no path to route.
    if !target.starts_with(b"/") && target.as_ref() != b"*" {
        return Err(Box::new(error_page(http::StatusCode::BAD_REQUEST)));
    }
    let declared = incoming.size_hint().exact();
    let chunked = parts.headers.contains_key(http::header::TRANSFER_ENCODING);
    if let Some(n) = declared
        && n > settings.max_body_bytes
        && !chunked
    {
        log::info!(target: "portico::listen::http", "{} {}: body of {n} bytes over the limit", parts.method, String::from_utf8_lossy(&target));
        return Err(Box::new(error_page(http::StatusCode::PAYLOAD_TOO_LARGE)));
    }
    // CGI-AMB-4: a body is present when the client framed one (Content-Length, even 0, or
    // chunked); `len` is known only for Content-Length.
    let framed = chunked || parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let body = if !framed {
        Body::empty_unframed()
    } else {
        let len = if chunked { None } else { declared };
        Body::from_stream(
            len,
            Limited {
                inner: incoming,
                seen: 0,
                limit: settings.max_body_bytes,
            },
        )
    };
    let (path, query) = split_target(&target);
    Ok(Request {
        method: parts.method,
        target,
        path,
        query,
        version: parts.version,
        headers: parts.headers,
        local,
        peer,
        tls: false,
        params: Vec::new(),
        redirected: None,
        stderr: None,
        body,
    })
}

/// The request target's length as sent (origin or absolute form), without formatting it.
fn target_len(uri: &http::Uri) -> usize {
    let mut n = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if let Some(a) = uri.authority() {
        n += a.as_str().len();
    }
    if let Some(s) = uri.scheme_str() {
        n += s.len() + 3;
    }
    n
}

fn to_hyper(resp: Response) -> hyper::Response<Body> {
    let mut out = hyper::Response::new(resp.body);
    *out.status_mut() = resp.status;
    *out.headers_mut() = resp.headers;
    out
}

/// The request body stream with the size limit applied (chunked bodies are only known
/// to be too large once read).
struct Limited {
    inner: Incoming,
    seen: u64,
    limit: u64,
}

impl futures_lite::Stream for Limited {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
                Poll::Ready(Some(Ok(f))) => f,
            };
            // Trailers are dropped: CGI has no place for them.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    "request body over the limit",
                ))));
            }
            return Poll::Ready(Some(Ok(data)));
        }
    }
}

/// Last activity on a connection and its requests in flight (the idle timeout), on the
/// coarse clock ([`rt::coarse_millis`]): touched on every read and every answer, so a
/// fine clock read here was two per request.
struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            last_ms: AtomicU64::new(rt::coarse_millis()),
            in_flight: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms.store(rt::coarse_millis(), Relaxed);
    }

    /// How long nothing has moved (to the coarse clock's step); zero while a request is
    /// in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Relaxed) > 0 {
            return Duration::ZERO;
        }
        rt::coarse_elapsed(self.last_ms.load(Relaxed))
    }
}

/// A connection that records when bytes move.
struct Watched {
    inner: Conn,
    activity: Arc<Activity>,
}

impl rt::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.activity.touch();
        }
        r
    }
}

impl rt::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
