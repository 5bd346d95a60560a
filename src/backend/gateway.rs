//! What the FastCGI and SCGI backends share: deciding the script (the PHP way for
//! `suffix` routes, with the `try_files` defence against CVE-2019-11043; a front
//! controller; or the route prefix), building the params, preparing the body (a body of
//! unknown length is spooled so CONTENT_LENGTH can be sent — php-fpm drops bodies
//! without it), choosing the least busy upstream and keeping failed ones out for a
//! while, and reading a CGI-form reply from a stream of chunks.
//!
//! Must not import listen or dispatch.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use proto::Status;
use proto::cgi::meta::{self as cgi_meta, HeaderNamePolicy, HeaderOptions, Lookup};
use proto::cgi::response::{self, Limits};

use super::head::{BodyMode, Head, HeadOptions, build_head};
use super::queue::{Slot, Slots};
use super::spool::{self, SpoolError, Spooled};
use super::{BackendError, Reply, RouteMatch};
use crate::addr::Address;
use crate::config::{Gateway, HeaderPolicy};
use crate::meta::{self, ServerInfo};
use crate::model::{Body, Request, Response};
use crate::rt::{self, AsyncRead};

/// A request ready to be sent to an application.
pub(crate) struct Prepared {
    /// The params, in order (later entries win on repeated names).
    pub(crate) vars: Vec<(String, Vec<u8>)>,
    /// The body, with its exact length.
    pub(crate) body: PreparedBody,
    /// CONTENT_LENGTH as sent.
    pub(crate) content_length: u64,
    /// The request was HEAD.
    pub(crate) head_only: bool,
    /// SCRIPT_NAME, for logs.
    pub(crate) script_name: String,
}

/// A body whose length is known.
pub(crate) enum PreparedBody {
    /// Streamed from the client (Content-Length framing).
    Stream(Body),
    /// Read to its end first (chunked framing).
    Spooled(Spooled),
}

/// Decides the script and builds the params for `req`.
pub(crate) async fn prepare(
    settings: &Gateway,
    suffix: Option<&str>,
    server: &ServerInfo,
    mut req: Request,
    m: &RouteMatch,
) -> Result<Prepared, BackendError> {
    let raw_rest = req.path.get(m.base.len()..).unwrap_or_default().to_vec();
    let (script_name, path_info) = match (&settings.script, suffix) {
        // A front controller serves everything; the request path is PATH_INFO.
        (Some(script), _) => (script.as_bytes().to_vec(), decode(&req.path)?),
        (None, Some(suffix)) => split_by_suffix(settings, suffix, &req.path).await?,
        (None, None) => {
            let base = decode(&m.base)?;
            (base, decode(&raw_rest)?)
        }
    };
    let path_info = (!path_info.is_empty()).then_some(path_info);
    let document_root = settings
        .document_root
        .as_ref()
        .map(|d| d.as_os_str().as_encoded_bytes().to_vec());
    let script_filename = document_root.as_ref().map(|root| {
        let mut f = root.clone();
        f.extend_from_slice(&script_name);
        f
    });
    let path_translated = match (&document_root, &path_info) {
        (Some(root), Some(pi)) => cgi_meta::path_translated(root, pi),
        _ => None,
    };
    // php-fpm ignores a body without CONTENT_LENGTH: spool one of unknown length.
    let framed = req.body.is_framed();
    let body = std::mem::replace(&mut req.body, Body::empty_unframed());
    let (body, content_length) = match body.len() {
        Some(n) if framed => (PreparedBody::Stream(body), Some(n)),
        Some(_) => (PreparedBody::Stream(body), None),
        None => {
            let mut body = body;
            let spooled = spool::spool(&mut body, settings.spool_memory, u64::MAX)
                .await
                .map_err(|e| match e {
                    SpoolError::TooLarge { .. } => BackendError::BodyTooLarge,
                    SpoolError::Read(e) => BackendError::BadRequest(format!("request body: {e}")),
                    SpoolError::Write(e) => BackendError::Internal(e.to_string()),
                })?;
            let n = spooled.len();
            (PreparedBody::Spooled(spooled), Some(n))
        }
    };
    let opts = HeaderOptions {
        policy: match settings.header_policy {
            HeaderPolicy::Strict => HeaderNamePolicy::Strict,
            HeaderPolicy::Map => HeaderNamePolicy::MapAndRejectCollisions,
        },
        pass_authorization: settings.pass_authorization,
    };
    let script = meta::Script {
        script_name: &script_name,
        path_info: path_info.as_deref(),
        path_translated: path_translated.as_deref(),
        document_root: document_root.as_deref(),
        script_filename: script_filename.as_deref(),
    };
    let mut vars = meta::variables(&req, &script, server, content_length, &opts)
        .map_err(|e| BackendError::BadRequest(format!("{e} ({})", e.clause())))?;
    for (name, value) in &settings.params {
        vars.retain(|(n, _)| n != name);
        vars.push((name.clone(), value.as_bytes().to_vec()));
    }
    Ok(Prepared {
        vars,
        body,
        content_length: content_length.unwrap_or(0),
        head_only: req.method == Method::HEAD,
        script_name: String::from_utf8_lossy(&script_name).into_owned(),
    })
}

fn decode(raw: &[u8]) -> Result<Vec<u8>, BackendError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    // Reuse the CGI split's decoding and vetting: every segment a "directory".
    cgi_meta::split_script(raw, |_| Lookup::Directory)
        .map(|s| {
            let mut p = s.script;
            p.extend_from_slice(&s.path_info);
            p
        })
        .map_err(|e| BackendError::NotFound(format!("{e} ({})", e.clause())))
}

/// `/app/info.php/extra` → (`/app/info.php`, `/extra`), as nginx's
/// `fastcgi_split_path_info`, but only when the script exists under `document_root`
/// (nginx's `try_files $fastcgi_script_name =404`): a path with `%0a` or a script that
/// does not exist never reaches the application (CVE-2019-11043).
async fn split_by_suffix(
    settings: &Gateway,
    suffix: &str,
    raw_path: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), BackendError> {
    let root: Option<PathBuf> = settings.document_root.clone();
    let suffix = suffix.as_bytes().to_vec();
    let raw = raw_path.to_vec();
    // A stat per candidate prefix takes microseconds: done inline rather than paying a
    // thread hand-off per request.
    let split = cgi_meta::split_script(&raw, |prefix| {
        if prefix.ends_with(&suffix) {
            let exists = match &root {
                Some(r) => {
                    use std::os::unix::ffi::OsStrExt;
                    let mut p = r.as_os_str().as_bytes().to_vec();
                    p.extend_from_slice(prefix);
                    std::path::Path::new(std::ffi::OsStr::from_bytes(&p)).is_file()
                }
                // Without a document root nothing can be checked; split lexically.
                None => true,
            };
            if exists {
                Lookup::Script
            } else {
                Lookup::NotFound
            }
        } else {
            Lookup::Directory
        }
    })
    .map_err(|e| BackendError::NotFound(e.to_string()))?;
    if split.kind != cgi_meta::SplitKind::Script {
        return Err(BackendError::NotFound("no script in the path".into()));
    }
    Ok((split.script, split.path_info))
}

/// The body as an `AsyncRead`, for clients that pull the body (fastcgi-client).
pub(crate) struct BodyReader {
    source: Source,
    pending: Bytes,
}

enum Source {
    Body(Body),
    Chunks(std::vec::IntoIter<Bytes>),
    File(rt::fs::File),
}

impl BodyReader {
    pub(crate) fn new(body: PreparedBody) -> BodyReader {
        let source = match body {
            PreparedBody::Stream(b) => Source::Body(b),
            PreparedBody::Spooled(Spooled::Memory { chunks, .. }) => {
                Source::Chunks(chunks.into_iter())
            }
            PreparedBody::Spooled(Spooled::File { file, .. }) => Source::File(rt::fs::file(file)),
        };
        BodyReader {
            source,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                let _ = self.pending.split_to(n);
                return Poll::Ready(Ok(n));
            }
            let this = &mut *self;
            match &mut this.source {
                Source::File(f) => return Pin::new(f).poll_read(cx, buf),
                Source::Chunks(it) => match it.next() {
                    Some(c) => this.pending = c,
                    None => return Poll::Ready(Ok(0)),
                },
                Source::Body(b) => match b.poll_chunk(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(Ok(0)),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(Some(Ok(c))) => this.pending = c,
                },
            }
        }
    }
}

/// What a connection task sends to the responding side: stdout chunks, or why the
/// exchange failed. The channel closing after `Done` is the normal end.
pub(crate) enum Chunk {
    /// Response bytes (FastCGI stdout, SCGI reply).
    Data(Bytes),
    /// The response is complete.
    Done,
    /// The exchange failed.
    Failed(BackendError),
}

/// The exchange that feeds a reply channel, polled by the side that reads the channel
/// (see [`respond`]).
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads the CGI-form reply from `rx`: the head within `read_timeout`, then a body that
/// streams the rest (each chunk within `read_timeout`; 504-style cut past it).
///
/// `driver`, when given, is the exchange that sends on `rx`'s channel, run in the
/// reading task instead of a task of its own: it is polled whenever the channel is, so a
/// reply costs no task spawn and no cross-thread wake-up per chunk. Whenever the reading
/// side stops before the exchange has ended (a reply without a body, a local redirect,
/// a 204/304 whose body hyper never polls, a client gone), the exchange goes on on its
/// own task with the channel closed: it hands its connection back if only END_REQUEST
/// was left, and drops it (aborting the request, FCGI-5.4-5) at the next output.
pub(crate) async fn respond(
    rx: rt::channel::Receiver<Chunk>,
    mut driver: Option<Driver>,
    head_only: bool,
    max_header_bytes: usize,
    read_timeout: Duration,
    what: &str,
) -> Result<Reply, BackendError> {
    let opts = HeadOptions {
        nph: false,
        head_only,
        limits: Limits {
            max_header_bytes,
            ..Limits::default()
        },
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut rx = Box::pin(rx);
    let (head, rest) = loop {
        let chunk = match rt::timeout(read_timeout, next_chunk(&mut rx, &mut driver)).await {
            Err(rt::Elapsed) => {
                return Err(BackendError::Timeout(format!(
                    "{what}: no response head within {read_timeout:?}"
                )));
            }
            Ok(None) | Ok(Some(Chunk::Done)) => {
                return Err(BackendError::BadGateway(if buf.is_empty() {
                    format!("{what}: empty response")
                } else {
                    format!(
                        "{what}: response ended inside its head ({})",
                        response::Error::UnexpectedEof
                    )
                }));
            }
            Ok(Some(Chunk::Failed(e))) => return Err(e),
            Ok(Some(Chunk::Data(d))) => d,
        };
        buf.extend_from_slice(&chunk);
        match response::parse_head(&buf, false, &opts.limits) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete((h, used))) => {
                let head = build_head(&h, &opts)
                    .map_err(|e| BackendError::BadGateway(format!("{what}: {e}")))?;
                break (
                    head,
                    Bytes::copy_from_slice(buf.get(used..).unwrap_or_default()),
                );
            }
            Err(e) => {
                return Err(BackendError::BadGateway(format!(
                    "{what}: malformed response head: {e} ({})",
                    e.clause()
                )));
            }
        }
    };
    // No body to stream (a local redirect, an empty or discarded body): the reply is read
    // no further, so the exchange finishes on its own task, with the channel closed once
    // `rx` is dropped below.
    if !matches!(
        head,
        Head::Response {
            body: BodyMode::Stream,
            ..
        }
    ) {
        detach(driver.take());
    }
    match head {
        Head::LocalRedirect(location) => Ok(Reply::LocalRedirect(location)),
        Head::Response {
            status,
            headers,
            body,
        } => {
            let body = match body {
                BodyMode::Stream => Body::from_stream(
                    None,
                    ChunkStream {
                        first: Some(rest).filter(|r| !r.is_empty()),
                        rx,
                        driver,
                        read_timeout,
                        timer: None,
                        done: false,
                    },
                ),
                BodyMode::Empty | BodyMode::Discard => Body::empty(),
            };
            Ok(Reply::Response(Response {
                status,
                headers,
                body,
            }))
        }
    }
}

/// The next message of `rx`, polling `driver` (the exchange feeding it) first; `None`
/// when the channel is closed.
fn next_chunk<'a>(
    rx: &'a mut Pin<Box<rt::channel::Receiver<Chunk>>>,
    driver: &'a mut Option<Driver>,
) -> impl Future<Output = Option<Chunk>> + 'a {
    std::future::poll_fn(move |cx| poll_chunk(rx, driver, cx))
}

fn poll_chunk(
    rx: &mut Pin<Box<rt::channel::Receiver<Chunk>>>,
    driver: &mut Option<Driver>,
    cx: &mut Context<'_>,
) -> Poll<Option<Chunk>> {
    if let Some(d) = driver
        && d.as_mut().poll(cx).is_ready()
    {
        *driver = None;
    }
    futures_lite::Stream::poll_next(rx.as_mut(), cx)
}

/// Lets an exchange that the reading side no longer polls finish on its own task: it
/// hands its connection back if only END_REQUEST was left, and drops it (aborting the
/// request, FCGI-5.4-5) at its next output once the channel is closed.
fn detach(driver: Option<Driver>) {
    if let Some(d) = driver {
        drop(rt::spawn(d));
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.rx.close();
            detach(self.driver.take());
        }
    }
}

/// The response body: the chunks after the head, each within the read timeout.
struct ChunkStream {
    first: Option<Bytes>,
    rx: Pin<Box<rt::channel::Receiver<Chunk>>>,
    driver: Option<Driver>,
    read_timeout: Duration,
    timer: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    done: bool,
}

impl futures_lite::Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match poll_chunk(&mut this.rx, &mut this.driver, cx) {
            Poll::Ready(Some(Chunk::Data(d))) => {
                self.timer = None;
                Poll::Ready(Some(Ok(d)))
            }
            Poll::Ready(Some(Chunk::Done)) => {
                self.done = true;
                // The exchange hands its connection back after sending `Done`: let it
                // finish (at once, or on its own task if it still waits on something).
                if let Some(mut d) = self.driver.take()
                    && d.as_mut().poll(cx).is_pending()
                {
                    detach(Some(d));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Chunk::Failed(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream response cut short",
                ))))
            }
            Poll::Pending => {
                let d = self.read_timeout;
                let timer = self.timer.get_or_insert_with(|| Box::pin(rt::sleep(d)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.done = true;
                        Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "upstream response stalled",
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Counts a finished call in the pool's figures: a 502/504-style failure, and a request
/// slower than `slow_request`. Returns whether it was slow.
pub(crate) fn account(
    reply: &Result<Reply, BackendError>,
    started: Instant,
    settings: &Gateway,
    stats: &crate::stats::PoolStats,
) -> bool {
    if matches!(
        reply,
        Err(BackendError::BadGateway(_) | BackendError::Timeout(_))
    ) {
        stats.failed.fetch_add(1, Relaxed);
    }
    let slow = started.elapsed() > settings.slow_request;
    if slow {
        stats.slow_requests.fetch_add(1, Relaxed);
    }
    slow
}

/// Counts a request waiting in line (`queued` in the pool's figures) until dropped, also
/// when the request is dropped while it waits (its client went away).
pub(crate) struct Queued<'a>(&'a crate::stats::PoolStats);

impl<'a> Queued<'a> {
    pub(crate) fn new(stats: &'a crate::stats::PoolStats) -> Queued<'a> {
        let q = stats.queued.fetch_add(1, Relaxed) + 1;
        stats.max_queued.fetch_max(q, Relaxed);
        Queued(stats)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Relaxed);
    }
}

/// One upstream address with its in-flight count and health.
pub(crate) struct Upstream {
    /// Where it is.
    pub(crate) addr: Address,
    /// Requests in flight to it now.
    pub(crate) in_flight: AtomicUsize,
    /// Connections at once (`max_conns`), handed out first-come first-served.
    pub(crate) permits: Slots,
    down_until: Mutex<Option<Instant>>,
    failures: AtomicU32,
}

impl Upstream {
    pub(crate) fn new(addr: Address, max_conns: usize) -> Upstream {
        Upstream {
            addr,
            in_flight: AtomicUsize::new(0),
            permits: Slots::new(max_conns),
            down_until: Mutex::new(None),
            failures: AtomicU32::new(0),
        }
    }

    /// Whether it is marked down now.
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|until| until > now)
    }

    /// Marks it down for the backoff (doubling with consecutive failures, up to 30 s).
    pub(crate) fn mark_down(&self, backoff: Duration, why: &str) {
        let n = self.failures.fetch_add(1, Relaxed).min(5);
        let wait = backoff.saturating_mul(1 << n).min(Duration::from_secs(30));
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(Instant::now() + wait);
        }
        log::warn!(target: "portico::backend", "upstream {} marked down for {wait:?}: {why}", self.addr);
    }

    /// Clears the failure count after a success.
    pub(crate) fn mark_up(&self) {
        if self.failures.swap(0, Relaxed) > 0 {
            if let Ok(mut d) = self.down_until.lock() {
                *d = None;
            }
            log::info!(target: "portico::backend", "upstream {} is up again", self.addr);
        }
    }

    /// A connection slot, waiting at most `queue_timeout` while every slot is busy (503
    /// past it: a long-standing php-fpm complaint is requests that hang instead).
    pub(crate) async fn acquire(
        &self,
        queue_timeout: Duration,
        stats: &crate::stats::PoolStats,
    ) -> Result<Slot, BackendError> {
        if let Some(p) = self.permits.try_take() {
            return Ok(p);
        }
        let queued = Queued::new(stats);
        let waited = self.permits.take(queue_timeout).await;
        drop(queued);
        waited.map_err(|rt::Elapsed| {
            stats.rejected.fetch_add(1, Relaxed);
            BackendError::Busy(format!(
                "every connection to {} stayed busy for {queue_timeout:?} (queue_timeout)",
                self.addr
            ))
        })
    }

    /// Connects within `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<rt::Connection, BackendError> {
        let fut = async {
            match &self.addr {
                Address::Tcp(a) => rt::Connection::tcp(a).await,
                Address::Unix(p) => rt::Connection::unix(p).await,
                Address::Inherited(_) => Err(io::Error::other("inherited socket as upstream")),
            }
        };
        match rt::timeout(timeout, fut).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(BackendError::BadGateway(format!(
                "connect to {}: {e}",
                self.addr
            ))),
            Err(rt::Elapsed) => Err(BackendError::BadGateway(format!(
                "connect to {}: no answer within {timeout:?}",
                self.addr
            ))),
        }
    }
}

/// The upstreams to try for one request, least in-flight first, those marked down last
/// (so that a request still goes somewhere when every upstream is down: that is how
/// an upstream comes back).
pub(crate) fn order(upstreams: &[&Upstream]) -> Vec<usize> {
    let now = Instant::now();
    let mut idx: Vec<usize> = (0..upstreams.len()).collect();
    idx.sort_by_key(|&i| {
        (
            upstreams[i].is_down(now),
            upstreams[i].in_flight.load(Relaxed),
        )
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_in_flight_first_and_down_last() {
        let ups: Vec<Upstream> = (0..3)
            .map(|i| Upstream::new(Address::Tcp(format!("127.0.0.1:{}", 9000 + i)), 4))
            .collect();
        ups[0].in_flight.store(2, Relaxed);
        ups[1].in_flight.store(1, Relaxed);
        ups[2].in_flight.store(0, Relaxed);
        let refs: Vec<&Upstream> = ups.iter().collect();
        assert_eq!(order(&refs), vec![2, 1, 0]);
        ups[2].mark_down(Duration::from_secs(5), "test");
        assert_eq!(order(&refs), vec![1, 0, 2]);
        ups[2].mark_up();
        assert_eq!(order(&refs), vec![2, 1, 0]);
    }
}
