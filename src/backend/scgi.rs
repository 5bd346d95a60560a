//! The SCGI backend: upstream SCGI servers (a Python WSGI app under flup, …), balanced by
//! least requests in flight, failed ones kept out for a while. SCGI closes per request:
//! connect, send the netstring head and the body, read the CGI-form reply to EOF
//! (SCGI-2). A body of unknown length is spooled so CONTENT_LENGTH is exact (SCGI-3-5).
//!
//! Must not import listen or dispatch.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;

use super::gateway::{self, BodyReader, Chunk, Upstream};
use super::{BackendError, Reply, RouteMatch};
use crate::config::Gateway;
use crate::meta::ServerInfo;
use crate::model::Request;
use crate::rt::{self, AsyncReadExt, AsyncWriteExt};
use crate::stats::{PoolStats, Stats};

/// An SCGI route's backend.
pub struct ScgiBackend {
    settings: Arc<Gateway>,
    suffix: Option<String>,
    server: Arc<ServerInfo>,
    upstreams: Arc<Vec<Upstream>>,
    stats: Arc<PoolStats>,
}

impl ScgiBackend {
    /// A backend for `settings` (see [`super::fastcgi::FastcgiBackend::new`]).
    pub fn new(
        name: &str,
        settings: Arc<Gateway>,
        suffix: Option<String>,
        server: Arc<ServerInfo>,
        stats: &Arc<Stats>,
    ) -> ScgiBackend {
        ScgiBackend {
            upstreams: Arc::new(
                settings
                    .upstreams
                    .iter()
                    .map(|a| Upstream::new(a.clone(), settings.max_conns))
                    .collect(),
            ),
            stats: stats.add_pool(name, "scgi"),
            settings,
            suffix,
            server,
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
        let what = format!("SCGI {script_name}");
        self.stats.accepted.fetch_add(1, Relaxed);
        // Connect: least in flight first; a refusal moves on to the next upstream.
        let mut conn = None;
        let mut last_err = None;
        let plain: Vec<&Upstream> = self.upstreams.iter().collect();
        for i in gateway::order(&plain) {
            let Some(u) = self.upstreams.get(i) else {
                continue;
            };
            let permit = u.acquire(self.settings.queue_timeout, &self.stats).await?;
            match u.connect(self.settings.connect_timeout).await {
                Ok(c) => {
                    conn = Some((i, c, permit));
                    break;
                }
                Err(e) => {
                    u.mark_down(self.settings.down_backoff, &e.to_string());
                    last_err = Some(e);
                }
            }
        }
        let Some((index, mut c, permit)) = conn else {
            self.stats.failed.fetch_add(1, Relaxed);
            return Err(last_err
                .unwrap_or_else(|| BackendError::BadGateway("no upstream configured".into())));
        };
        let mut head = Vec::with_capacity(1024);
        // SCGI-3-4: CONTENT_LENGTH first, then SCGI=1, then the rest (the encoder orders
        // them and skips duplicates).
        proto::scgi::encode_request(
            vars.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())),
            content_length,
            &mut head,
        );
        let (tx, rx) = rt::channel::bounded::<Chunk>(4);
        let ups = self.upstreams.clone();
        let settings = self.settings.clone();
        let stats = self.stats.clone();
        stats.in_flight.fetch_add(1, Relaxed);
        if let Some(u) = ups.get(index) {
            u.in_flight.fetch_add(1, Relaxed);
        }
        drop(rt::spawn(async move {
            let send = async {
                c.write_all(&head).await?;
                let mut body = BodyReader::new(body);
                futures_lite::io::copy(&mut body, &mut c).await?;
                c.flush().await
            };
            match rt::timeout(settings.send_timeout, send).await {
                Ok(Ok(())) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match c.read(&mut buf).await {
                            Ok(0) => {
                                let _ = tx.send(Chunk::Done).await;
                                if let Some(u) = ups.get(index) {
                                    u.mark_up();
                                }
                                break;
                            }
                            Ok(n) => {
                                if tx
                                    .send(Chunk::Data(Bytes::copy_from_slice(&buf[..n])))
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Err(e) => {
                                let _ = tx
                                    .send(Chunk::Failed(BackendError::BadGateway(format!(
                                        "SCGI reply: {e}"
                                    ))))
                                    .await;
                                break;
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    let _ = tx
                        .send(Chunk::Failed(BackendError::BadGateway(format!(
                            "sending to SCGI server: {e}"
                        ))))
                        .await;
                }
                Err(rt::Elapsed) => {
                    let _ = tx
                        .send(Chunk::Failed(BackendError::Timeout(format!(
                            "sending took over {:?}",
                            settings.send_timeout
                        ))))
                        .await;
                }
            }
            if let Some(u) = ups.get(index) {
                u.in_flight.fetch_sub(1, Relaxed);
            }
            stats.in_flight.fetch_sub(1, Relaxed);
            drop(permit);
        }));
        let reply = gateway::respond(
            rx,
            None,
            head_only,
            self.settings.max_header_bytes,
            self.settings.read_timeout,
            &what,
        )
        .await;
        gateway::account(&reply, started, &self.settings, &self.stats);
        reply
    }
}
