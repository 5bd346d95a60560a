//! The FastCGI backend: external upstreams (php-fpm or any FastCGI server) reached
//! through the fastcgi-client crate with pooled keep-alive connections, or managed
//! children (`children.rs`). The reply goes through the one CGI response parser.
//!
//! fastcgi-client's limits, known and handled here: one request per connection (no
//! multiplexing: a pooled connection serves one request at a time), params held as
//! UTF-8 strings (a request whose params are not UTF-8 gets a clear 400), the whole
//! request body is sent before the reply is read (fine for PHP, which reads its body
//! first), and its defaults GATEWAY_INTERFACE=FastCGI/1.0 and
//! SERVER_SOFTWARE=fastcgi-client-rs are overridden by ours. The crate is built from
//! `vendor/fastcgi-client/` with one patch (its record buffer starts at 4 KiB and grows
//! to 64 KiB only on a full read; see its `PORTICO.md`).
//!
//! Must not import listen or dispatch.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastcgi_client::conn::KeepAlive;
use fastcgi_client::response::Content;
use fastcgi_client::{Client, Params, StreamExt};

use super::children::ChildPool;
use super::gateway::{self, BodyReader, Chunk, PreparedBody, Upstream};
use super::{BackendError, Reply, RouteMatch};
use crate::config::Gateway;
use crate::meta::ServerInfo;
use crate::model::Request;
use crate::rt;
use crate::stats::{PoolStats, Stats};

/// A kept connection to a FastCGI application, as the upstream pool holds it (public
/// for `benches/src/fcgi_client_floor.rs`, which measures the crate alone).
pub type FcgiClient = Client<OneStdinEnd<rt::Buffered<rt::Connection>>, KeepAlive>;

/// A kept connection for fastcgi-client to a FastCGI application at `conn`.
pub fn new_client(conn: rt::Connection) -> FcgiClient {
    Client::new_keep_alive(OneStdinEnd {
        inner: rt::Buffered::new(conn),
        last_was_stdin_end: false,
    })
}

/// Works around fastcgi-client sending the empty STDIN record twice for a request
/// without a body (its batch writer emits one for an empty body, then the terminator),
/// which breaks FCGI-3.3-16 and makes a strict application close the connection
/// (`portico probe --serve` found it). The crate writes each record header on its own,
/// so a second empty STDIN header right after the first is dropped here.
pub struct OneStdinEnd<W> {
    inner: W,
    last_was_stdin_end: bool,
}

impl<W: rt::AsyncRead + Unpin> rt::AsyncRead for OneStdinEnd<W> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: rt::AsyncWrite + Unpin> rt::AsyncWrite for OneStdinEnd<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // version 1, type STDIN (5), any id, content length 0, padding 0.
        let stdin_end = buf.len() == 8 && buf[0] == 1 && buf[1] == 5 && buf[4..7] == [0, 0, 0];
        if stdin_end && self.last_was_stdin_end {
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.last_was_stdin_end = stdin_end;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A FastCGI route's backend.
pub struct FastcgiBackend {
    settings: Arc<Gateway>,
    suffix: Option<String>,
    server: Arc<ServerInfo>,
    target: Target,
    stats: Arc<PoolStats>,
}

enum Target {
    Upstreams(Arc<Vec<Arc<FcgiUpstream>>>),
    Children(Arc<ChildPool>),
}

/// An upstream with its idle kept connections.
pub(crate) struct FcgiUpstream {
    up: Upstream,
    idle: Mutex<Vec<FcgiClient>>,
}

impl FastcgiBackend {
    /// A backend for `settings`; `suffix` is the route's suffix matcher (the PHP way of
    /// splitting PATH_INFO), `name` the route's name for logs and status.
    pub fn new(
        name: &str,
        settings: Arc<Gateway>,
        suffix: Option<String>,
        server: Arc<ServerInfo>,
        stats: &Arc<Stats>,
    ) -> FastcgiBackend {
        let target = match &settings.children {
            Some(_) => {
                let pool_stats = stats.add_pool(name, "fastcgi-children");
                let pool =
                    ChildPool::start(name, settings.clone(), pool_stats.clone(), stats.clone());
                return FastcgiBackend {
                    settings,
                    suffix,
                    server,
                    target: Target::Children(pool),
                    stats: pool_stats,
                };
            }
            None => Target::Upstreams(Arc::new(
                settings
                    .upstreams
                    .iter()
                    .map(|a| {
                        Arc::new(FcgiUpstream {
                            up: Upstream::new(a.clone(), settings.max_conns),
                            idle: Mutex::new(Vec::new()),
                        })
                    })
                    .collect(),
            )),
        };
        FastcgiBackend {
            stats: stats.add_pool(name, "fastcgi"),
            settings,
            suffix,
            server,
            target,
        }
    }

    /// Stops managed children (graceful: they finish their request first).
    pub async fn shutdown(&self) {
        if let Target::Children(pool) = &self.target {
            pool.shutdown().await;
        }
    }

    /// Serves one request.
    pub async fn call(&self, req: Request, m: &RouteMatch) -> Result<Reply, BackendError> {
        let started = Instant::now();
        let gateway::Prepared {
            vars,
            body,
            content_length,
            head_only,
            script_name,
        } = gateway::prepare(&self.settings, self.suffix.as_deref(), &self.server, req, m).await?;
        let vars = into_utf8(vars)?;
        let what = format!("FastCGI {script_name}");
        self.stats.accepted.fetch_add(1, Relaxed);
        let (tx, rx) = rt::channel::bounded::<Chunk>(4);
        let body = BodyReader::new(body);
        let retry_ok = content_length == 0;
        // The exchange, run by the task that reads its reply (see `gateway::respond`).
        let mut driver: Option<gateway::Driver> = None;
        match &self.target {
            Target::Upstreams(ups) => {
                let (up, client, permit) = self.checkout(ups).await?;
                let settings = self.settings.clone();
                let in_flight = InFlight::new(self.stats.clone(), up.clone());
                driver = Some(Box::pin(async move {
                    // Borrowed from `vars`, which this future owns: no copy of any value.
                    let mut params = Some(to_params(&vars));
                    let mut client = Some(client);
                    let mut body = Some(body);
                    let mut result = None;
                    for attempt in 0..2 {
                        let c = match client.take() {
                            Some(c) => c,
                            None => match up.up.connect(settings.connect_timeout).await {
                                Ok(c) => new_client(c),
                                Err(e) => {
                                    up.up.mark_down(settings.down_backoff, &e.to_string());
                                    let _ = tx.send(Chunk::Failed(e)).await;
                                    break;
                                }
                            },
                        };
                        let b = match body.take() {
                            Some(b) => b,
                            None => {
                                BodyReader::new(PreparedBody::Stream(crate::model::Body::empty()))
                            }
                        };
                        let p = params.take().unwrap_or_else(|| to_params(&vars));
                        match exchange(c, p, b, &tx, settings.send_timeout).await {
                            Outcome::Done(c) => {
                                up.up.mark_up();
                                result = Some(c);
                                break;
                            }
                            // A kept connection the server had closed: retry once on a
                            // fresh one if nothing was sent that cannot be sent again.
                            Outcome::Stale if attempt == 0 && retry_ok => continue,
                            Outcome::Stale => {
                                let e = BackendError::BadGateway(format!(
                                    "{} closed the connection without a reply",
                                    up.up.addr
                                ));
                                up.up.mark_down(settings.down_backoff, &e.to_string());
                                let _ = tx.send(Chunk::Failed(e)).await;
                                break;
                            }
                            Outcome::Failed | Outcome::Dropped => break,
                        }
                    }
                    if let Some(c) = result
                        && let Ok(mut idle) = up.idle.lock()
                    {
                        idle.push(c);
                    }
                    drop(in_flight);
                    drop(permit);
                }));
            }
            Target::Children(pool) => {
                let lease = pool.checkout(self.settings.queue_timeout).await?;
                let send_timeout = self.settings.send_timeout;
                // With a terminate timeout the exchange runs on its own task, so the
                // timer runs even while a slow client holds the response back.
                let own_task = lease.terminate_timeout().is_some();
                let exchange_fut: gateway::Driver = Box::pin(async move {
                    let mut params = Some(to_params(&vars));
                    let mut lease = lease;
                    let mut body = Some(body);
                    let mut outcome = Outcome::Failed;
                    for attempt in 0..2 {
                        let client = if attempt == 0 {
                            lease.client().await
                        } else {
                            lease.connect().await
                        };
                        let c = match client {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = tx.send(Chunk::Failed(e)).await;
                                outcome = Outcome::Failed;
                                break;
                            }
                        };
                        let b = body.take().unwrap_or_else(|| {
                            BodyReader::new(PreparedBody::Stream(crate::model::Body::empty()))
                        });
                        let p = params.take().unwrap_or_else(|| to_params(&vars));
                        let fut = exchange(c, p, b, &tx, send_timeout);
                        outcome = match lease.terminate_timeout() {
                            Some(limit) => match rt::timeout(limit, fut).await {
                                Ok(o) => o,
                                Err(rt::Elapsed) => {
                                    lease.kill(&format!(
                                        "request ran past request_terminate_timeout ({limit:?})"
                                    ));
                                    let _ = tx
                                        .send(Chunk::Failed(BackendError::Timeout(format!(
                                            "request_terminate_timeout ({limit:?}) passed"
                                        ))))
                                        .await;
                                    Outcome::Failed
                                }
                            },
                            None => fut.await,
                        };
                        // A kept connection the child closed (php-cgi closes one that stays
                        // quiet too long): once more on a fresh connection when nothing
                        // was sent that cannot be sent again.
                        if !(matches!(outcome, Outcome::Stale) && attempt == 0 && retry_ok) {
                            break;
                        }
                    }
                    match outcome {
                        Outcome::Done(c) => lease.release(Some(c)),
                        Outcome::Stale => {
                            let _ = tx
                                .send(Chunk::Failed(BackendError::BadGateway(
                                    "the child closed the connection without a reply".into(),
                                )))
                                .await;
                            lease.release(None)
                        }
                        Outcome::Failed | Outcome::Dropped => lease.release(None),
                    }
                });
                if own_task {
                    drop(rt::spawn(exchange_fut));
                } else {
                    driver = Some(exchange_fut);
                }
            }
        }
        let reply = gateway::respond(
            rx,
            driver,
            head_only,
            self.settings.max_header_bytes,
            self.settings.read_timeout,
            &what,
        )
        .await;
        if gateway::account(&reply, started, &self.settings, &self.stats) {
            log::warn!(target: "portico::backend::fastcgi", "{what}: slow request ({:?})", started.elapsed());
        }
        reply
    }

    /// The least busy upstream with a free connection slot, waiting at most
    /// `queue_timeout` for one (503 past it); a connect failure moves on to the next.
    async fn checkout(
        &self,
        ups: &Arc<Vec<Arc<FcgiUpstream>>>,
    ) -> Result<(Arc<FcgiUpstream>, FcgiClient, super::queue::Slot), BackendError> {
        let plain: Vec<&Upstream> = ups.iter().map(|u| &u.up).collect();
        let order = gateway::order(&plain);
        let mut last_err = None;
        for i in order {
            let Some(u) = ups.get(i) else { continue };
            let permit =
                u.up.acquire(self.settings.queue_timeout, &self.stats)
                    .await?;
            let idle = u.idle.lock().ok().and_then(|mut v| v.pop());
            if let Some(c) = idle {
                return Ok((u.clone(), c, permit));
            }
            match u.up.connect(self.settings.connect_timeout).await {
                Ok(c) => {
                    return Ok((u.clone(), new_client(c), permit));
                }
                Err(e) => {
                    u.up.mark_down(self.settings.down_backoff, &e.to_string());
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| BackendError::BadGateway("no upstream configured".into())))
    }
}

/// Counts a request in flight on the route's pool and on its upstream until dropped
/// (also when the exchange is dropped midway because the client went away).
struct InFlight {
    stats: Arc<PoolStats>,
    up: Arc<FcgiUpstream>,
}

impl InFlight {
    fn new(stats: Arc<PoolStats>, up: Arc<FcgiUpstream>) -> InFlight {
        stats.in_flight.fetch_add(1, Relaxed);
        up.up.in_flight.fetch_add(1, Relaxed);
        InFlight { stats, up }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.up.up.in_flight.fetch_sub(1, Relaxed);
        self.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

/// How one exchange on one connection ended.
pub(crate) enum Outcome {
    /// The reply is complete; the connection can serve again.
    Done(FcgiClient),
    /// The connection failed before any reply byte (a kept connection closed by the
    /// server): nothing was sent to the responder yet.
    Stale,
    /// The exchange failed; the responder was told.
    Failed,
    /// The responder went away (client gone); the connection is dropped, which aborts
    /// the request (FCGI-5.4-5).
    Dropped,
}

/// Sends one request on `client` and forwards the reply to `tx`.
pub(crate) async fn exchange(
    mut client: FcgiClient,
    params: Params<'_>,
    body: BodyReader,
    tx: &rt::channel::Sender<Chunk>,
    send_timeout: Duration,
) -> Outcome {
    let request = fastcgi_client::Request::new(params, body);
    let mut stream = match rt::timeout(send_timeout, client.execute_stream(request)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log::debug!(target: "portico::backend::fastcgi", "send failed: {e}");
            return Outcome::Stale;
        }
        Err(rt::Elapsed) => {
            let _ = tx
                .send(Chunk::Failed(BackendError::Timeout(format!(
                    "sending the request took over {send_timeout:?}"
                ))))
                .await;
            return Outcome::Failed;
        }
    };
    let mut got_any = false;
    loop {
        match stream.next().await {
            None => break,
            Some(Ok(Content::Stdout(b))) => {
                got_any = true;
                if tx.send(Chunk::Data(b)).await.is_err() {
                    return Outcome::Dropped;
                }
            }
            Some(Ok(Content::Stderr(b))) => {
                got_any = true;
                for line in b.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                    log::warn!(target: "portico::backend::fastcgi", "stderr: {}", String::from_utf8_lossy(line));
                }
            }
            Some(Err(e)) => {
                if !got_any {
                    log::debug!(target: "portico::backend::fastcgi", "reply failed before any byte: {e}");
                    return Outcome::Stale;
                }
                let _ = tx
                    .send(Chunk::Failed(BackendError::BadGateway(format!(
                        "FastCGI reply: {e}"
                    ))))
                    .await;
                return Outcome::Failed;
            }
        }
    }
    drop(stream);
    let _ = tx.send(Chunk::Done).await;
    Outcome::Done(client)
}

/// The variables as strings, or 400 for params fastcgi-client cannot hold: it keeps them
/// as UTF-8 strings (a documented limit of the crate). Each value is checked once here
/// and not copied.
fn into_utf8(vars: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, String)>, BackendError> {
    vars.into_iter()
        .map(|(name, value)| match String::from_utf8(value) {
            Ok(value) => Ok((name, value)),
            Err(_) => Err(BackendError::BadRequest(format!(
                "{name} is not UTF-8, which the FastCGI client (fastcgi-client) cannot send"
            ))),
        })
        .collect()
}

/// The params as fastcgi-client holds them, borrowed from `vars`.
fn to_params(vars: &[(String, String)]) -> Params<'_> {
    let mut p = Params::default();
    p.clear();
    // One allocation: growing the map from its defaults' size rehashed it three times
    // per request (2.5% of portico's CPU under benches/php.sh, perf).
    p.reserve(vars.len());
    for (name, value) in vars {
        p.insert(Cow::Borrowed(name.as_str()), Cow::Borrowed(value.as_str()));
    }
    p
}
