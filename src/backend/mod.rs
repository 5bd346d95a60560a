//! Backends: turn a [`Request`] into a [`Reply`]. One file per kind; the enum is the only
//! thing `dispatch` sees.
//!
//! A backend never knows which protocol a request came in by. Must not import listen or
//! dispatch.

use std::sync::Arc;

use bytes::Bytes;

use crate::model::{Request, Response};

pub mod cgi;
pub(crate) mod children;
pub mod fastcgi;
pub(crate) mod gateway;
pub mod handler;
pub(crate) mod head;
pub(crate) mod queue;
pub mod scgi;
pub mod spool;

pub use handler::{Handler, HandlerFuture, Registry};

/// What a route matched, handed to the backend with the request.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The route's name (logs, status).
    pub name: Arc<str>,
    /// The raw path prefix the route claimed (for a prefix route, the prefix without its
    /// trailing `/`; empty for suffix and exact routes). The rest of the path is the
    /// backend's to interpret.
    pub base: Bytes,
}

/// What a backend answers.
#[derive(Debug)]
pub enum Reply {
    /// A response for the client.
    Response(Response),
    /// A CGI local redirect (RFC 3875 §6.2.2): re-enter the router with this target
    /// (a path and optional query), as a GET without body.
    LocalRedirect(Bytes),
}

/// Why a backend could not answer; says who is at fault. `dispatch` turns each into a
/// status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The client asked for something that is not there (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The client asked for something it may not have (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request itself is unacceptable (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request body is over a limit (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// The method is not served here (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A concurrency limit is reached (503).
    #[error("busy: {0}")]
    Busy(String),
    /// The script or upstream answered with something malformed or nothing (502).
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// The script or upstream took too long (504).
    #[error("timed out: {0}")]
    Timeout(String),
    /// portico itself failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A configured backend.
pub enum Backend {
    /// Spawns CGI scripts.
    Cgi(cgi::CgiBackend),
    /// An in-process handler.
    Handler(Arc<dyn Handler>),
    /// FastCGI upstreams or managed children.
    Fastcgi(fastcgi::FastcgiBackend),
    /// SCGI upstreams.
    Scgi(scgi::ScgiBackend),
}

impl Backend {
    /// Serves one request (boxed: see [`crate::dispatch::Dispatcher::dispatch`]).
    pub async fn call(&self, req: Box<Request>, m: &RouteMatch) -> Result<Reply, BackendError> {
        // The script and upstream futures are large (the CGI one over 10 KiB) and are
        // boxed here, where their own cost (a process, a connection) dwarfs an
        // allocation: inline, they made every request's future as large, and the
        // listeners move that future several times per request, handler requests too.
        match self {
            Backend::Cgi(b) => Box::pin(b.call(*req, m)).await,
            Backend::Handler(h) => h.call(*req, m.clone()).await.map(Reply::Response),
            Backend::Fastcgi(b) => Box::pin(b.call(*req, m)).await,
            Backend::Scgi(b) => Box::pin(b.call(*req, m)).await,
        }
    }

    /// Whether the backend can answer with a local redirect (CGI-form replies).
    pub fn may_redirect(&self) -> bool {
        !matches!(self, Backend::Handler(_))
    }

    /// Stops what the backend runs (managed children), gracefully.
    pub async fn shutdown(&self) {
        if let Backend::Fastcgi(b) = self {
            b.shutdown().await;
        }
    }
}
