//! The FastCGI listener (portico as the application behind `fastcgi_pass`,
//! `mod_proxy_fcgi`, `mod_fastcgi`): one task reads the socket and drives the sans-IO
//! `proto::fastcgi::server` machine, one task writes, and each request runs in its own
//! task that feeds its output to the writer in bounded pieces, so output from many
//! multiplexed requests interleaves and no request can starve the others.
//!
//! Roles: Responder; Authorizer (the backend's answer goes back as is: 200 with
//! `Variable-*` headers allows, anything else denies); Filter (STDIN is the body, DATA is
//! spooled to a temporary file whose path is the `FCGI_DATA_FILE` param). ABORT_REQUEST
//! cancels the request's work (a CGI script is killed) and ends it (FCGI-5.4-2). A
//! malformed record ends the connection with a log line naming the clause.
//!
//! Must not import backend or route.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::fastcgi::server::{self, Event};
use proto::fastcgi::{ProtocolStatus, Role};

use super::params::request_from_params;
use super::{Conn, Listener, cgi_head};
use crate::config::Fastcgi;
use crate::dispatch::{Dispatcher, error_page};
use crate::model::{Body, Endpoint};
use crate::rt::{self, AsyncReadExt, AsyncWriteExt};

/// Largest piece of output one request hands the writer at a time (fairness).
const OUTPUT_PIECE: usize = 32 * 1024;

/// Accepts FastCGI connections until `shutdown`.
pub async fn serve(
    listener: Listener,
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Fastcgi>,
    shutdown: rt::Shutdown,
    tracker: rt::Tracker,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let name = listener.local_text();
    // FCGI-3.2-2: a web server that starts us may list the addresses allowed to connect.
    let allowed = std::env::var("FCGI_WEB_SERVER_ADDRS").ok().map(|v| {
        let parsed = server::WebServerAddrs::parse(&v);
        if parsed.is_none() {
            log::warn!(target: "portico::listen::fastcgi", "FCGI_WEB_SERVER_ADDRS={v:?} is not a list of IP addresses: refusing every connection");
        }
        parsed
    });
    let max = settings.max_conns as usize;
    let stop = shutdown.clone();
    super::accept_loop(listener, max, stop, tracker, move |conn, local, peer| {
        if let Some(allowed) = &allowed {
            let ip = peer.addr.parse::<std::net::IpAddr>().ok().filter(|_| peer.port.is_some());
            if !allowed.as_ref().is_some_and(|a| a.allows(ip)) {
                log::warn!(target: "portico::listen::fastcgi", "{name}: connection from {} refused: not in FCGI_WEB_SERVER_ADDRS (FCGI-3.2-2)", peer.addr);
                return None;
            }
        }
        let ctx = ConnCtx {
            dispatcher: dispatcher.clone(),
            settings: settings.clone(),
            in_flight: in_flight.clone(),
            local,
            peer,
        };
        let shutdown = shutdown.clone();
        Some(async move { connection(conn, ctx, shutdown).await })
    })
    .await;
}

/// Serves one FastCGI connection inherited from somewhere else (a socket on fd 0 that
/// was already accepted is not a case FastCGI has; this is for tests and embedding).
pub async fn serve_connection(
    conn: Conn,
    local: Endpoint,
    peer: Endpoint,
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Fastcgi>,
) {
    let ctx = ConnCtx {
        dispatcher,
        settings,
        in_flight: Arc::new(AtomicUsize::new(0)),
        local,
        peer,
    };
    let (_trigger, shutdown) = rt::shutdown_pair();
    connection(conn, ctx, shutdown).await;
}

#[derive(Clone)]
struct ConnCtx {
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Fastcgi>,
    in_flight: Arc<AtomicUsize>,
    local: Endpoint,
    peer: Endpoint,
}

/// What request tasks (and the reader) ask the writer to do.
enum Cmd {
    /// STDOUT bytes.
    Stdout(u16, Bytes),
    /// STDERR bytes.
    Stderr(u16, Bytes),
    /// END_REQUEST with this app status (REQUEST_COMPLETE).
    End(u16, u32),
    /// The machine has bytes of its own to send (management answers, rejections).
    Flush,
}

/// The reader's view of one active request.
struct Slot {
    role: Role,
    /// Body bytes on their way to the request task; `None` once STDIN ended.
    stdin: Option<rt::channel::Sender<io::Result<Bytes>>>,
    /// Params kept until the request can start (Filter waits for DATA).
    pending: Option<Vec<(Bytes, Bytes)>>,
    /// A Filter's DATA file.
    data: Option<tempfile::NamedTempFile>,
    /// A Filter's body, held until DATA ends and the request starts.
    body_rx: Option<rt::channel::Receiver<io::Result<Bytes>>>,
    /// Dropping it aborts the request task.
    abort: Option<rt::ShutdownTrigger>,
    /// Counts toward the listener's in-flight limit while held.
    /// Counts toward the listener's in-flight limit; moves into the request task when
    /// the request starts, so it is released the moment the request ends.
    in_flight: Option<InFlight>,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

async fn connection(conn: Conn, ctx: ConnCtx, shutdown: rt::Shutdown) {
    let settings = ctx.settings.clone();
    let machine = Arc::new(Mutex::new(server::Conn::new(server::Config {
        max_conns: settings.max_conns,
        max_reqs: settings.max_reqs,
        mpxs_conns: settings.mpxs_conns,
        max_params_len: settings.max_params_bytes,
        max_requests: settings.max_requests_per_conn,
        reject_unknown_roles: true,
    })));
    let (cmd_tx, cmd_rx) = rt::channel::bounded::<Cmd>(64);
    let writer = rt::spawn(writer(conn.clone(), machine.clone(), cmd_rx));
    let peer = ctx.peer.addr.clone();
    let result = reader(conn, &ctx, &machine, &cmd_tx, &shutdown).await;
    match result {
        Ok(()) => {}
        Err(ReadEnd::Io(e)) => {
            log::debug!(target: "portico::listen::fastcgi", "{peer}: {e}");
        }
        Err(ReadEnd::Protocol(e)) => {
            log::warn!(target: "portico::listen::fastcgi", "{peer}: closing connection: {e} ({})", e.clause());
        }
    }
    drop(cmd_tx);
    // The writer ends once every request task has dropped its sender (they were aborted
    // when the reader's slots were dropped, or finished).
    writer.await;
}

enum ReadEnd {
    Io(io::Error),
    Protocol(proto::fastcgi::Error),
}

async fn reader(
    mut conn: Conn,
    ctx: &ConnCtx,
    machine: &Mutex<server::Conn>,
    cmd_tx: &rt::channel::Sender<Cmd>,
    shutdown: &rt::Shutdown,
) -> Result<(), ReadEnd> {
    let mut slots: HashMap<u16, Slot> = HashMap::new();
    // Small while the connection is idle or trickling (1,000 kept connections must stay
    // cheap); grown once a read fills it, for bodies arriving in bulk.
    let mut buf = vec![0u8; 4 * 1024];
    let mut last_read = std::time::Instant::now();
    loop {
        // Idle: no active request. Shutdown or the idle timeout close such a connection;
        // with requests active, reading goes on (aborts must still arrive). Reads are
        // re-armed every tick (cancel-safe), so a connection whose last request just
        // ended is seen idle without waiting for more input.
        let tick = ctx
            .settings
            .idle_timeout
            .min(std::time::Duration::from_secs(1));
        let read = rt::race(async { Some(conn.read(&mut buf).await) }, async {
            rt::race(rt::sleep(tick), shutdown.wait()).await;
            None
        })
        .await;
        let n = match read {
            Some(r) => r.map_err(ReadEnd::Io)?,
            None => {
                let idle = machine
                    .lock()
                    .map(|m| m.active_requests() == 0)
                    .unwrap_or(true);
                if idle
                    && (shutdown.is_triggered() || last_read.elapsed() >= ctx.settings.idle_timeout)
                {
                    return Ok(());
                }
                if shutdown.is_triggered() {
                    // Requests still running: let them finish, then close.
                    rt::sleep(std::time::Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        last_read = std::time::Instant::now();
        if n == 0 {
            // The web server closed: abort whatever is still running (FCGI-5.4-5).
            return Ok(());
        }
        let filled = n == buf.len();
        let (events, pending) = {
            let Ok(mut m) = machine.lock() else {
                return Ok(());
            };
            m.handle_read(&buf[..n]).map_err(ReadEnd::Protocol)?;
            let mut events = Vec::new();
            while let Some(e) = m.poll_event() {
                events.push(e);
            }
            (events, m.pending_transmit() > 0)
        };
        if pending {
            let _ = cmd_tx.send(Cmd::Flush).await;
        }
        for event in events {
            on_event(event, ctx, machine, cmd_tx, &mut slots).await;
        }
        // Ended requests leave the table once the machine has forgotten them.
        if let Ok(m) = machine.lock() {
            slots.retain(|id, _| m.is_active(*id));
        }
        if filled && buf.len() < 64 * 1024 {
            buf.resize(64 * 1024, 0);
        } else if slots.is_empty() && buf.len() > 4 * 1024 {
            buf.truncate(4 * 1024);
            buf.shrink_to_fit();
        }
    }
}

async fn on_event(
    event: Event,
    ctx: &ConnCtx,
    machine: &Mutex<server::Conn>,
    cmd_tx: &rt::channel::Sender<Cmd>,
    slots: &mut HashMap<u16, Slot>,
) {
    match event {
        Event::BeginRequest { id, role, .. } => {
            // A listener-wide limit on requests in flight: past it, OVERLOADED
            // (FCGI-5.5-6) rather than a hang.
            let now = ctx.in_flight.fetch_add(1, Relaxed) + 1;
            let slot = InFlight(ctx.in_flight.clone());
            if now > ctx.settings.max_reqs as usize {
                drop(slot);
                log::warn!(target: "portico::listen::fastcgi", "{}: request {id} refused: {} requests in flight (max_reqs)", ctx.peer.addr, now - 1);
                reject(machine, cmd_tx, id, ProtocolStatus::OVERLOADED).await;
                return;
            }
            slots.insert(
                id,
                Slot {
                    role,
                    stdin: None,
                    pending: None,
                    data: None,
                    body_rx: None,
                    abort: None,
                    in_flight: Some(slot),
                },
            );
        }
        Event::Params { id, params } => {
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            // One buffer for the whole block; each name and value is a slice of it.
            let block = Bytes::from(params.into_bytes());
            let params: Vec<(Bytes, Bytes)> = proto::fastcgi::NameValues::new(&block)
                .filter_map(Result::ok)
                .map(|(n, v)| (block.slice_ref(n), block.slice_ref(v)))
                .collect();
            if slot.role == Role::FILTER {
                // The filter starts once its DATA file is complete.
                slot.pending = Some(params);
                match tempfile::NamedTempFile::new() {
                    Ok(f) => slot.data = Some(f),
                    Err(e) => {
                        log::warn!(target: "portico::listen::fastcgi", "request {id}: cannot spool FCGI_DATA: {e}");
                        end_now(cmd_tx, id, 1).await;
                    }
                }
                // STDIN still becomes the body, buffered in the channel meanwhile.
                let (tx, rx) = rt::channel::bounded(channel_slots(&ctx.settings));
                slot.stdin = Some(tx);
                slot.body_rx = Some(rx);
                return;
            }
            let (tx, rx) = rt::channel::bounded(channel_slots(&ctx.settings));
            slot.stdin = Some(tx);
            start(id, params, rx, ctx, cmd_tx, slot);
        }
        Event::Stdin { id, data } => {
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            if let Some(tx) = &slot.stdin {
                // A full channel stops this reader: the backend is not keeping up. A
                // closed one means the request no longer reads its body: drop the bytes.
                let _ = tx.send(Ok(Bytes::from(data))).await;
            }
        }
        Event::StdinEnd { id } => {
            if let Some(slot) = slots.get_mut(&id) {
                slot.stdin = None;
            }
        }
        Event::Data { id, data } => {
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            if let Some(f) = slot.data.as_mut()
                && let Err(e) = f.write_all(&data)
            {
                log::warn!(target: "portico::listen::fastcgi", "request {id}: cannot spool FCGI_DATA: {e}");
                slot.data = None;
                end_now(cmd_tx, id, 1).await;
            }
        }
        Event::DataEnd { id } => {
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            if let (Some(mut params), Some(file)) = (slot.pending.take(), slot.data.as_ref()) {
                params.push((
                    Bytes::from_static(b"FCGI_DATA_FILE"),
                    Bytes::from(file.path().display().to_string()),
                ));
                if let Some(rx) = slot.body_rx.take() {
                    start(id, params, rx, ctx, cmd_tx, slot);
                }
            }
        }
        Event::Abort { id } => {
            if let Some(slot) = slots.get_mut(&id) {
                log::info!(target: "portico::listen::fastcgi", "{}: request {id} aborted by the web server", ctx.peer.addr);
                let stdin = slot.stdin.take();
                let aborted = slot.abort.take();
                drop(stdin);
                match aborted {
                    // The task stops its work and sends END_REQUEST itself (FCGI-5.4-3).
                    Some(trigger) => trigger.trigger(),
                    // Nothing started yet: end it here.
                    None => end_now(cmd_tx, id, 1).await,
                }
            }
        }
    }
}

/// A request body arriving as STDIN records. The channel closing is the end of STDIN;
/// if CONTENT_LENGTH promised more, the body is cut short and that is an error for the
/// backend (the web server aborted or closed), not a short body.
struct Stdin {
    rx: std::pin::Pin<Box<rt::channel::Receiver<io::Result<Bytes>>>>,
    declared: Option<u64>,
    seen: u64,
}

impl futures_lite::Stream for Stdin {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match self.rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => match self.declared {
                Some(n) if self.seen < n => Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("FCGI_STDIN ended after {} of {n} bytes", self.seen),
                )))),
                _ => Poll::Ready(None),
            },
            other => other,
        }
    }
}

/// How many STDIN records a request's channel holds: `stdin_buffer` in records of up to
/// 64 KiB (at least 4).
fn channel_slots(settings: &Fastcgi) -> usize {
    (settings.stdin_buffer / 65_535).max(4)
}

/// Starts the request task for `id`.
fn start(
    id: u16,
    params: Vec<(Bytes, Bytes)>,
    body_rx: rt::channel::Receiver<io::Result<Bytes>>,
    ctx: &ConnCtx,
    cmd_tx: &rt::channel::Sender<Cmd>,
    slot: &mut Slot,
) {
    let content_length = params
        .iter()
        .find(|(n, _)| n.as_ref() == b"CONTENT_LENGTH")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    // An empty or absent CONTENT_LENGTH: a body of unknown length, spooled by backends
    // that need a length (as the HTTP listener's chunked bodies are).
    let body = match content_length {
        // FCGI-AMB-8: an Authorizer may get no STDIN stream at all; it has no body.
        _ if slot.role == Role::AUTHORIZER => {
            slot.stdin = None;
            Body::empty_unframed()
        }
        Some(0) => {
            slot.stdin = None;
            Body::empty()
        }
        len => Body::from_stream(
            len,
            Stdin {
                rx: Box::pin(body_rx),
                declared: len,
                seen: 0,
            },
        ),
    };
    let mut req = request_from_params(params, ctx.local.clone(), ctx.peer.clone(), body);
    if ctx.settings.stderr
        && let Ok(r) = req.as_mut()
    {
        // Scripts' stderr also goes to the web server as FCGI_STDERR (FCGI-6.2-5); a
        // full queue drops it rather than stall the script (the log has it).
        let tx = cmd_tx.clone();
        r.stderr = Some(crate::model::StderrSink::new(move |b| {
            let _ = tx.try_send(Cmd::Stderr(id, b));
        }));
    }
    let (trigger, abort) = rt::shutdown_pair();
    slot.abort = Some(trigger);
    let in_flight = slot.in_flight.take();
    let dispatcher = ctx.dispatcher.clone();
    let tx = cmd_tx.clone();
    let peer = ctx.peer.addr.clone();
    drop(rt::spawn(async move {
        let work = async {
            let resp = match req {
                Ok(req) => dispatcher.dispatch(req).await,
                Err(e) => {
                    log::warn!(target: "portico::listen::fastcgi", "{peer}: request {id}: {e}");
                    error_page(http::StatusCode::BAD_REQUEST)
                }
            };
            if tx
                .send(Cmd::Stdout(id, Bytes::from(cgi_head(&resp))))
                .await
                .is_err()
            {
                return Some(1);
            }
            let mut body = resp.body;
            while let Some(chunk) = body.chunk().await {
                match chunk {
                    Ok(mut b) => {
                        while !b.is_empty() {
                            let piece = b.split_to(b.len().min(OUTPUT_PIECE));
                            if tx.send(Cmd::Stdout(id, piece)).await.is_err() {
                                return Some(1);
                            }
                        }
                    }
                    Err(e) => {
                        // The response cannot be completed; the web server learns it from
                        // the app status and a line on FCGI_STDERR.
                        log::warn!(target: "portico::listen::fastcgi", "{peer}: request {id}: response body failed: {e}");
                        let _ = tx
                            .send(Cmd::Stderr(
                                id,
                                Bytes::from(format!("portico: response body failed: {e}\n")),
                            ))
                            .await;
                        return Some(1);
                    }
                }
            }
            Some(0)
        };
        let status = rt::race(
            async {
                abort.wait().await;
                None
            },
            work,
        )
        .await;
        // Aborted: the work future is dropped above (a CGI script is killed by that),
        // then END_REQUEST says the request is over (FCGI-5.4-2).
        let _ = tx.send(Cmd::End(id, status.unwrap_or(1))).await;
        drop(in_flight);
    }));
}

async fn end_now(cmd_tx: &rt::channel::Sender<Cmd>, id: u16, app_status: u32) {
    let _ = cmd_tx.send(Cmd::End(id, app_status)).await;
}

async fn reject(
    machine: &Mutex<server::Conn>,
    cmd_tx: &rt::channel::Sender<Cmd>,
    id: u16,
    status: ProtocolStatus,
) {
    if let Ok(mut m) = machine.lock() {
        let _ = m.reject(id, status);
    }
    let _ = cmd_tx.send(Cmd::Flush).await;
}

/// Applies commands to the machine and writes what it produces; closes the socket when
/// the machine says so (a request without KEEP_CONN ended, FCGI-5.1-5).
async fn writer(
    mut conn: Conn,
    machine: Arc<Mutex<server::Conn>>,
    cmds: rt::channel::Receiver<Cmd>,
) {
    let mut out = Vec::new();
    while let Ok(cmd) = cmds.recv().await {
        let close = {
            let Ok(mut m) = machine.lock() else { break };
            let apply = |cmd: Cmd, m: &mut server::Conn| {
                let r = match cmd {
                    Cmd::Stdout(id, b) => m.write_stdout(id, &b),
                    Cmd::Stderr(id, b) => m.write_stderr(id, &b),
                    Cmd::End(id, st) => m.end_request(id, st, ProtocolStatus::REQUEST_COMPLETE),
                    Cmd::Flush => Ok(()),
                };
                if let Err(e) = r {
                    // Output for a request already ended (an abort crossed it): nothing
                    // to send (FCGI-AMB-16).
                    log::debug!(target: "portico::listen::fastcgi", "output dropped: {e}");
                }
            };
            apply(cmd, &mut m);
            // Batch whatever else is queued into the same write.
            while out.len() + m.pending_transmit() < 256 * 1024 {
                match cmds.try_recv() {
                    Ok(c) => apply(c, &mut m),
                    Err(_) => break,
                }
            }
            m.poll_transmit(&mut out);
            m.wants_close()
        };
        if !out.is_empty() {
            if let Err(e) = conn.write_all(&out).await {
                log::debug!(target: "portico::listen::fastcgi", "write failed: {e}");
                break;
            }
            out.clear();
            if out.capacity() > 256 * 1024 {
                out.shrink_to(16 * 1024);
            }
        }
        if close {
            break;
        }
    }
    let _ = conn.flush().await;
    let _ = conn.close().await;
    // Closing the write side alone leaves the reader blocked on a web server that keeps
    // the connection: shut down both directions.
    conn.shutdown_both();
}
