//! The common request model: what every listener produces and every backend consumes.
//!
//! A [`Request`] is HTTP-shaped (method, raw target, headers, addresses) plus the params a
//! web server sent when the request came in by FastCGI or SCGI, and a streamed [`Body`].
//! A [`Response`] is a status, headers (order and duplicates kept) and a [`Body`].
//!
//! Must not import rt, listen, backend or dispatch.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::Stream;
use http::{HeaderMap, Method, StatusCode, Version};

/// One end of a connection as CGI sees it (`REMOTE_ADDR`/`REMOTE_PORT`,
/// `SERVER_ADDR`/`SERVER_PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The IP address as text; for Unix sockets, the socket path or empty. Shared: every
    /// request of a connection carries its two endpoints.
    pub addr: std::sync::Arc<str>,
    /// The port, if the transport has one.
    pub port: Option<u16>,
}

/// Set on a request that a local redirect (RFC 3875 §6.2.2) re-entered the router with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirected {
    /// The original request target (for `REDIRECT_URL`).
    pub url: Bytes,
    /// The original query string (for `REDIRECT_QUERY_STRING`).
    pub query: Bytes,
    /// How many local redirects led here.
    pub hops: u8,
}

/// A request in the common model.
pub struct Request {
    /// The request method.
    pub method: Method,
    /// The raw request target as received (path and query, still encoded).
    pub target: Bytes,
    /// The raw (percent-encoded) path part of the target.
    pub path: Bytes,
    /// The raw query string, without the `?`; empty when absent.
    pub query: Bytes,
    /// The client's protocol version.
    pub version: Version,
    /// Request header fields.
    pub headers: HeaderMap,
    /// The listening socket's end.
    pub local: Endpoint,
    /// The client's (or the web server's) end.
    pub peer: Endpoint,
    /// Whether the client connection is TLS (a web server in front may say so by `HTTPS`).
    pub tls: bool,
    /// Params a web server sent (FastCGI/SCGI listeners): kept as bytes, in order.
    pub params: Vec<(Bytes, Bytes)>,
    /// Present when a local redirect produced this request.
    pub redirected: Option<Redirected>,
    /// Where a backend may copy what a script writes on stderr, besides the log (the
    /// FastCGI listener forwards it as FCGI_STDERR when configured).
    pub stderr: Option<StderrSink>,
    /// The request body.
    pub body: Body,
}

impl Request {
    /// A request for `target` with an empty body and default addresses (for tests and
    /// handlers that build requests).
    pub fn new(method: Method, target: &[u8]) -> Request {
        let target = Bytes::copy_from_slice(target);
        let (path, query) = split_target(&target);
        Request {
            method,
            path,
            query,
            target,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            local: Endpoint::default(),
            peer: Endpoint::default(),
            tls: false,
            params: Vec::new(),
            redirected: None,
            stderr: None,
            body: Body::empty_unframed(),
        }
    }

    /// The value of a param the web server sent, if any.
    pub fn param(&self, name: &[u8]) -> Option<&Bytes> {
        self.params
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A place to copy a script's stderr to (cheap to clone; never blocks: what cannot be
/// delivered at once is dropped, the log still has it).
#[derive(Clone)]
pub struct StderrSink(std::sync::Arc<dyn Fn(Bytes) + Send + Sync>);

impl StderrSink {
    /// A sink calling `f` with each piece of stderr output.
    pub fn new(f: impl Fn(Bytes) + Send + Sync + 'static) -> StderrSink {
        StderrSink(std::sync::Arc::new(f))
    }

    /// Hands `data` to the sink.
    pub fn send(&self, data: Bytes) {
        (self.0)(data)
    }
}

impl fmt::Debug for StderrSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StderrSink")
    }
}

/// Splits a raw request target into its path and query parts (both still encoded).
pub fn split_target(target: &Bytes) -> (Bytes, Bytes) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (target.slice(..i), target.slice(i + 1..)),
        None => (target.clone(), Bytes::new()),
    }
}

/// A response in the common model.
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// Header fields, duplicates (several `Set-Cookie`) kept in order.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Body,
}

impl Response {
    /// A response with `status`, no headers and `body`.
    pub fn new(status: StatusCode, body: Body) -> Response {
        Response {
            status,
            headers: HeaderMap::new(),
            body,
        }
    }

    /// A short `text/plain` response (error pages, handlers).
    pub fn text(status: StatusCode, text: impl Into<Bytes>) -> Response {
        let mut r = Response::new(status, Body::full(text));
        r.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A body: empty, one buffer, or a stream of chunks with a known length or not.
///
/// Bodies stream: a backend reads the request body chunk by chunk with
/// [`Body::chunk`], and a listener polls the response body as an `http_body::Body`.
pub struct Body {
    inner: Inner,
    len: Option<u64>,
    framed: bool,
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxStream),
}

impl Body {
    /// An empty body of length zero (a request that said `Content-Length: 0`).
    pub fn empty() -> Body {
        Body {
            inner: Inner::Empty,
            len: Some(0),
            framed: true,
        }
    }

    /// No body at all: the request had no body framing (no Content-Length, not chunked).
    /// CGI leaves CONTENT_LENGTH unset for it (CGI-AMB-4).
    pub fn empty_unframed() -> Body {
        Body {
            inner: Inner::Empty,
            len: Some(0),
            framed: false,
        }
    }

    /// Whether the request framed a body (even an empty one). `false` only for
    /// [`Body::empty_unframed`].
    pub fn is_framed(&self) -> bool {
        self.framed
    }

    /// A body held in one buffer.
    pub fn full(data: impl Into<Bytes>) -> Body {
        let data: Bytes = data.into();
        Body {
            len: Some(data.len() as u64),
            inner: Inner::Full(Some(data)),
            framed: true,
        }
    }

    /// A streamed body; `len` is its exact length when known (Content-Length framing).
    pub fn from_stream<S>(len: Option<u64>, stream: S) -> Body
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        Body {
            inner: Inner::Stream(Box::pin(stream)),
            len,
            framed: true,
        }
    }

    /// The exact length, when known before reading.
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// The next chunk, `None` at the end.
    pub async fn chunk(&mut self) -> Option<io::Result<Bytes>> {
        futures_lite::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Polls the next chunk, `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        match &mut self.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(data) => Poll::Ready(data.take().filter(|d| !d.is_empty()).map(Ok)),
            Inner::Stream(s) => loop {
                match s.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(b))) if b.is_empty() => continue,
                    other => return other,
                }
            },
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.len)
            .field("framed", &self.framed)
            .finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(d) => d.as_ref().is_none_or(|d| d.is_empty()),
            Inner::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.len {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}
