//! The FastCGI listener (portico as the application behind `fastcgi_pass`,
//! `mod_proxy_fcgi`, `mod_fastcgi`): one task reads the socket and drives the sans-IO
//! `proto::fastcgi::server` machine, one task writes, and each request runs in its own
//! task that feeds its output to the writer in bounded pieces, so output from many
//! multiplexed requests interleaves and no request can starve the others.
//!
//! Two shortcuts keep the common case (a web server sending one request at a time, an
//! answer that is ready at once) to one task and one write: a request is first polled
//! by the reader itself and gets a task of its own only if it has to wait; and output
//! goes straight into the machine and onto the socket while the writer task is idle
//! with nothing queued, the writer's queue taking over (in order, with its backpressure)
//! as soon as a write would block.
//!
//! Roles: Responder; Authorizer (the backend's answer goes back as is: 200 with
//! `Variable-*` headers allows, anything else denies); Filter (STDIN is the body, DATA is
//! spooled to a temporary file whose path is the `FCGI_DATA_FILE` param). ABORT_REQUEST
//! cancels the request's work (a CGI script is killed) and ends it (FCGI-5.4-2). A
//! malformed record ends the connection with a log line naming the clause.
//!
//! Must not import backend or route.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;

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

/// The connection's output side, shared by the reader, the request tasks and the writer.
struct Output {
    machine: server::Conn,
    /// The socket, for writes that do not wait (see [`emit`]).
    conn: Conn,
    /// Commands sent to the writer and not yet applied. Output may bypass the queue only
    /// when this is 0, so a request's output never overtakes what it queued before.
    queued: usize,
    /// The writer task waits for commands and has nothing of its own left to write.
    writer_idle: bool,
    /// Bytes a direct write could not send; the writer sends them before anything else.
    leftover: Vec<u8>,
}

type Shared = Arc<Mutex<Output>>;

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
    abort: Option<AbortTrigger>,
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
    let shared = Arc::new(Mutex::new(Output {
        machine: server::Conn::new(server::Config {
            max_conns: settings.max_conns,
            max_reqs: settings.max_reqs,
            mpxs_conns: settings.mpxs_conns,
            max_params_len: settings.max_params_bytes,
            max_requests: settings.max_requests_per_conn,
            reject_unknown_roles: true,
        }),
        conn: conn.clone(),
        queued: 0,
        writer_idle: true,
        leftover: Vec::new(),
    }));
    let (cmd_tx, cmd_rx) = rt::channel::bounded::<Cmd>(64);
    let writer = rt::spawn(writer(conn.clone(), shared.clone(), cmd_rx));
    let peer = ctx.peer.addr.clone();
    let result = reader(conn, &ctx, &shared, &cmd_tx, &shutdown).await;
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
    shared: &Shared,
    cmd_tx: &rt::channel::Sender<Cmd>,
    shutdown: &rt::Shutdown,
) -> Result<(), ReadEnd> {
    let mut slots: HashMap<u16, Slot> = HashMap::new();
    // Small while the connection is idle or trickling (1,000 kept connections must stay
    // cheap); grown once a read fills it, for bodies arriving in bulk.
    let mut buf = vec![0u8; 4 * 1024];
    // On the coarse clock: set on every read.
    let mut last_read = rt::coarse_millis();
    let tick = ctx
        .settings
        .idle_timeout
        .min(std::time::Duration::from_secs(1));
    // The tick outlives the reads it races: made anew for every read, its timer and the
    // shutdown listener were registered and removed once per request.
    let new_tick = || {
        Box::pin(async move {
            rt::race(rt::coarse::sleep(tick), shutdown.wait()).await;
        })
    };
    let mut ticker = new_tick();
    // Kept across reads, so a read costs no allocation for them.
    let mut events = Vec::new();
    let mut ready = Vec::new();
    loop {
        // Idle: no active request. Shutdown or the idle timeout close such a connection;
        // with requests active, reading goes on (aborts must still arrive). Reads are
        // re-armed every tick (cancel-safe), so a connection whose last request just
        // ended is seen idle without waiting for more input.
        let read = rt::race(async { Some(conn.read(&mut buf).await) }, async {
            (&mut ticker).await;
            None
        })
        .await;
        let n = match read {
            Some(r) => r.map_err(ReadEnd::Io)?,
            None => {
                ticker = new_tick();
                let idle = shared
                    .lock()
                    .map(|s| s.machine.active_requests() == 0)
                    .unwrap_or(true);
                if idle
                    && (shutdown.is_triggered()
                        || rt::coarse_elapsed(last_read) >= ctx.settings.idle_timeout)
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
        last_read = rt::coarse_millis();
        if n == 0 {
            // The web server closed: abort whatever is still running (FCGI-5.4-5).
            return Ok(());
        }
        let filled = n == buf.len();
        let pending = {
            let Ok(mut s) = shared.lock() else {
                return Ok(());
            };
            let m = &mut s.machine;
            m.handle_read(&buf[..n]).map_err(ReadEnd::Protocol)?;
            while let Some(e) = m.poll_event() {
                events.push(e);
            }
            m.pending_transmit() > 0
        };
        if pending {
            let _ = emit(shared, cmd_tx, &mut Vec::new()).await;
        }
        // Requests start once every record of this read has been handled: a GET's
        // empty STDIN (its end is usually in the same read) has then closed the body,
        // and an answer that needs nothing else is ready on the first poll.
        let mut drain = events.drain(..);
        while let Some(event) = drain.next() {
            let rest = drain.as_slice();
            on_event(event, rest, ctx, shared, cmd_tx, &mut slots, &mut ready).await;
        }
        drop(drain);
        for work in ready.drain(..) {
            run(work).await;
        }
        // Ended requests leave the table once the machine has forgotten them.
        if let Ok(s) = shared.lock() {
            slots.retain(|id, _| s.machine.is_active(*id));
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
    rest: &[Event],
    ctx: &ConnCtx,
    shared: &Shared,
    cmd_tx: &rt::channel::Sender<Cmd>,
    slots: &mut HashMap<u16, Slot>,
    ready: &mut Vec<Work>,
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
                reject(shared, cmd_tx, id, ProtocolStatus::OVERLOADED).await;
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
            // Sized once: a web server sends a few dozen (nginx's fastcgi_params: 18
            // plus the HTTP_ headers), and growing from nothing copied them four times.
            let mut params: Vec<(Bytes, Bytes)> = Vec::with_capacity(32);
            params.extend(
                proto::fastcgi::NameValues::new(&block)
                    .filter_map(Result::ok)
                    .map(|(n, v)| (slice_of(&block, n), slice_of(&block, v))),
            );
            if slot.role == Role::FILTER {
                // The filter starts once its DATA file is complete.
                slot.pending = Some(params);
                match tempfile::NamedTempFile::new() {
                    Ok(f) => slot.data = Some(f),
                    Err(e) => {
                        log::warn!(target: "portico::listen::fastcgi", "request {id}: cannot spool FCGI_DATA: {e}");
                        end_now(shared, cmd_tx, id, 1).await;
                    }
                }
                // STDIN still becomes the body, buffered in the channel meanwhile.
                let (tx, rx) = rt::channel::bounded(channel_slots(&ctx.settings));
                slot.stdin = Some(tx);
                slot.body_rx = Some(rx);
                return;
            }
            // STDIN that ends, empty, in this same read (a GET through nginx) needs no
            // channel to carry it.
            let stdin_ended = rest
                .iter()
                .find_map(|e| match e {
                    Event::Stdin { id: i, .. } if *i == id => Some(false),
                    Event::StdinEnd { id: i } if *i == id => Some(true),
                    _ => None,
                })
                .unwrap_or(false);
            let body_rx = (!stdin_ended).then(|| {
                let (tx, rx) = rt::channel::bounded(channel_slots(&ctx.settings));
                slot.stdin = Some(tx);
                rx
            });
            ready.push(start(id, params, body_rx, ctx, shared, cmd_tx, slot));
        }
        Event::Stdin { id, data } => {
            let Some(slot) = slots.get_mut(&id) else {
                return;
            };
            if let Some(tx) = &slot.stdin {
                // A full channel stops this reader: the backend is not keeping up. A
                // closed one means the request no longer reads its body: drop the bytes.
                match tx.try_send(Ok(Bytes::from(data))) {
                    Err(rt::channel::TrySendError::Full(item)) => {
                        // The request that would drain it may not have started yet.
                        for work in ready.drain(..) {
                            run(work).await;
                        }
                        let _ = tx.send(item).await;
                    }
                    Ok(()) | Err(rt::channel::TrySendError::Closed(_)) => {}
                }
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
                end_now(shared, cmd_tx, id, 1).await;
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
                    ready.push(start(id, params, Some(rx), ctx, shared, cmd_tx, slot));
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
                    None => end_now(shared, cmd_tx, id, 1).await,
                }
            }
        }
    }
}

/// A request body arriving as STDIN records. The channel closing is the end of STDIN;
/// if CONTENT_LENGTH promised more, the body is cut short and that is an error for the
/// backend (the web server aborted or closed), not a short body.
struct Stdin {
    /// `None`: STDIN ended before the request started, with nothing in it.
    rx: Option<std::pin::Pin<Box<rt::channel::Receiver<io::Result<Bytes>>>>>,
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
        let next = match self.rx.as_mut() {
            Some(rx) => rx.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        };
        match next {
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

/// `name` or `value`, a slice of `block`, as a `Bytes` sharing it; an empty one shares
/// nothing (nginx sends several empty params, and each share is two atomic operations).
fn slice_of(block: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        block.slice_ref(part)
    }
}

/// How many STDIN records a request's channel holds: `stdin_buffer` in records of up to
/// 64 KiB (at least 4).
fn channel_slots(settings: &Fastcgi) -> usize {
    (settings.stdin_buffer / 65_535).max(4)
}

/// The work of request `id`, from its params to its END_REQUEST, as a future for [`run`].
fn start(
    id: u16,
    params: Vec<(Bytes, Bytes)>,
    // `None`: STDIN already ended, empty.
    body_rx: Option<rt::channel::Receiver<io::Result<Bytes>>>,
    ctx: &ConnCtx,
    shared: &Shared,
    cmd_tx: &rt::channel::Sender<Cmd>,
    slot: &mut Slot,
) -> Work {
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
                rx: body_rx.map(Box::pin),
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
        let shared = shared.clone();
        r.stderr = Some(crate::model::StderrSink::new(move |b| {
            emit_or_drop(&shared, &tx, Cmd::Stderr(id, b));
        }));
    }
    let (trigger, abort) = abort_pair();
    slot.abort = Some(trigger);
    let in_flight = slot.in_flight.take();
    let dispatcher = ctx.dispatcher.clone();
    let tx = cmd_tx.clone();
    let shared = shared.clone();
    let peer = ctx.peer.addr.clone();
    Box::pin(async move {
        // Output gathered while the response is ready without waiting, so a small answer
        // leaves in one write; handed on whenever the response would wait or a piece is
        // full.
        let mut batch = Batch::default();
        let work = async {
            let resp = match req {
                Ok(req) => dispatcher.dispatch(req).await,
                Err(e) => {
                    log::warn!(target: "portico::listen::fastcgi", "{peer}: request {id}: {e}");
                    error_page(http::StatusCode::BAD_REQUEST)
                }
            };
            batch.push(Cmd::Stdout(id, Bytes::from(cgi_head(&resp))));
            let mut body = resp.body;
            loop {
                let chunk = match std::future::poll_fn(|cx| Poll::Ready(body.poll_chunk(cx))).await
                {
                    Poll::Ready(c) => c,
                    Poll::Pending => {
                        if batch.flush(&shared, &tx).await.is_err() {
                            return Some(1);
                        }
                        body.chunk().await
                    }
                };
                match chunk {
                    None => break,
                    Some(Ok(mut b)) => {
                        while !b.is_empty() {
                            let piece = b.split_to(b.len().min(OUTPUT_PIECE));
                            batch.push(Cmd::Stdout(id, piece));
                            if batch.bytes >= OUTPUT_PIECE
                                && batch.flush(&shared, &tx).await.is_err()
                            {
                                return Some(1);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        // The response cannot be completed; the web server learns it from
                        // the app status and a line on FCGI_STDERR.
                        log::warn!(target: "portico::listen::fastcgi", "{peer}: request {id}: response body failed: {e}");
                        batch.push(Cmd::Stderr(
                            id,
                            Bytes::from(format!("portico: response body failed: {e}\n")),
                        ));
                        return Some(1);
                    }
                }
            }
            Some(0)
        };
        let status = rt::race(
            async {
                abort.await;
                None
            },
            work,
        )
        .await;
        if status.is_none() {
            // Aborted: the work future is dropped above (a CGI script is killed by that)
            // and what it had not yet handed on is not wanted any more.
            batch.cmds.clear();
        }
        // END_REQUEST says the request is over (FCGI-5.4-2).
        batch.push(Cmd::End(id, status.unwrap_or(1)));
        let _ = batch.flush(&shared, &tx).await;
        drop(in_flight);
    })
}

/// Stops a request's work when dropped or triggered (ABORT_REQUEST, or the reader gone).
/// One allocation and no listener list per request, where a channel pair
/// (`rt::shutdown_pair`) cost a channel, an event and a listener.
struct AbortTrigger(Arc<AbortState>);

/// Completes once the request's [`AbortTrigger`] is gone.
struct Aborted(Arc<AbortState>);

struct AbortState {
    aborted: std::sync::atomic::AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

fn abort_pair() -> (AbortTrigger, Aborted) {
    let state = Arc::new(AbortState {
        aborted: std::sync::atomic::AtomicBool::new(false),
        waker: Mutex::new(None),
    });
    (AbortTrigger(state.clone()), Aborted(state))
}

impl AbortTrigger {
    fn trigger(self) {
        drop(self);
    }
}

impl Drop for AbortTrigger {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.0.aborted.store(true, SeqCst);
        // Taken under the lock the waiter stores under: either it sees the flag, or its
        // waker is here.
        let waker = self.0.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Future for Aborted {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.0.aborted.load(SeqCst) {
            return Poll::Ready(());
        }
        if let Ok(mut w) = self.0.waker.lock()
            && !w.as_ref().is_some_and(|old| old.will_wake(cx.waker()))
        {
            *w = Some(cx.waker().clone());
        }
        if self.0.aborted.load(SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Aborted {
    fn drop(&mut self) {
        // The request is over: a trigger dropped later has nobody to wake.
        if let Ok(mut w) = self.0.waker.lock() {
            w.take();
        }
    }
}

/// A request's work, from its params to its END_REQUEST.
type Work = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs a request: polled once right here, by the reader, which is all an answer ready
/// at once needs (no task, no wake-up of another thread); only a request that has to
/// wait gets a task of its own.
async fn run(mut request: Work) {
    if futures_lite::future::poll_once(&mut request)
        .await
        .is_none()
    {
        drop(rt::spawn(request));
    }
}

/// Output of one request not yet handed on.
#[derive(Default)]
struct Batch {
    cmds: Vec<Cmd>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, cmd: Cmd) {
        if let Cmd::Stdout(_, b) | Cmd::Stderr(_, b) = &cmd {
            self.bytes += b.len();
        }
        self.cmds.push(cmd);
    }

    /// Hands the batch on; an error means the connection's writer is gone.
    async fn flush(&mut self, shared: &Shared, tx: &rt::channel::Sender<Cmd>) -> Result<(), ()> {
        self.bytes = 0;
        if self.cmds.is_empty() {
            return Ok(());
        }
        emit(shared, tx, &mut self.cmds).await
    }
}

/// Hands `cmds` (in order; none: the machine's own pending output) to the connection.
/// While the writer is idle and nothing is queued they are applied and written at once,
/// without waiting: one system call and no task hop. Otherwise, or when the socket
/// takes only part of the bytes, the writer's bounded queue carries them (and its
/// backpressure holds the caller). An error means the writer is gone.
async fn emit(
    shared: &Shared,
    tx: &rt::channel::Sender<Cmd>,
    cmds: &mut Vec<Cmd>,
) -> Result<(), ()> {
    match emit_direct(shared, cmds) {
        Direct::Written => Ok(()),
        Direct::HandedOff => tx.try_send(Cmd::Flush).map_err(|_| ()),
        Direct::Queue => {
            // Commands counted but never sent (the writer is gone, or the request was
            // aborted while it waited for room) are taken off the count, or the writer
            // would wait for them and never be idle again.
            let mut unsent = Unsent {
                shared,
                n: cmds.len().max(1),
            };
            if cmds.is_empty() {
                tx.send(Cmd::Flush).await.map_err(|_| ())?;
                unsent.n = 0;
                return Ok(());
            }
            for cmd in cmds.drain(..) {
                tx.send(cmd).await.map_err(|_| ())?;
                unsent.n -= 1;
            }
            Ok(())
        }
    }
}

struct Unsent<'a> {
    shared: &'a Shared,
    n: usize,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if self.n > 0
            && let Ok(mut s) = self.shared.lock()
        {
            s.queued = s.queued.saturating_sub(self.n);
        }
    }
}

/// [`emit`] for a caller that cannot wait (a script's stderr): a full queue drops the
/// bytes.
fn emit_or_drop(shared: &Shared, tx: &rt::channel::Sender<Cmd>, cmd: Cmd) {
    let mut cmds = vec![cmd];
    match emit_direct(shared, &mut cmds) {
        Direct::Written => {}
        Direct::HandedOff => {
            let _ = tx.try_send(Cmd::Flush);
        }
        Direct::Queue => {
            for cmd in cmds {
                if tx.try_send(cmd).is_err()
                    && let Ok(mut s) = shared.lock()
                {
                    s.queued = s.queued.saturating_sub(1);
                }
            }
        }
    }
}

enum Direct {
    /// Applied and written.
    Written,
    /// Applied, but bytes are left (or the connection is to close): the writer was
    /// marked busy and counted one command, which the caller must send (`Cmd::Flush`).
    HandedOff,
    /// Not applied: the writer was counted one command per entry of `cmds` (one for
    /// none), which the caller must send.
    Queue,
}

fn emit_direct(shared: &Shared, cmds: &mut Vec<Cmd>) -> Direct {
    let Ok(mut guard) = shared.lock() else {
        return Direct::Queue;
    };
    let s = &mut *guard;
    if !s.writer_idle || s.queued > 0 {
        s.queued += cmds.len().max(1);
        return Direct::Queue;
    }
    for cmd in cmds.drain(..) {
        apply(cmd, &mut s.machine);
    }
    let mut out = std::mem::take(&mut s.leftover);
    s.machine.poll_transmit(&mut out);
    let sent = write_now(&mut s.conn, &out);
    if sent == out.len() && !s.machine.wants_close() {
        // Keep the buffer's allocation for the next direct write.
        out.clear();
        s.leftover = out;
        return Direct::Written;
    }
    // The socket is full (or failing, or to be closed): the writer takes over from here
    // and nobody writes directly until it is idle again.
    out.drain(..sent);
    s.leftover = out;
    s.writer_idle = false;
    s.queued += 1;
    Direct::HandedOff
}

/// Writes as much of `buf` as the socket takes without waiting.
fn write_now(conn: &mut Conn, buf: &[u8]) -> usize {
    use rt::AsyncWrite;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut sent = 0;
    while let Some(rest) = buf.get(sent..).filter(|r| !r.is_empty()) {
        match std::pin::Pin::new(&mut *conn).poll_write(&mut cx, rest) {
            Poll::Ready(Ok(n)) if n > 0 => sent += n,
            // Full (the writer waits for it), failed or closed (the writer meets the
            // same error and ends the connection).
            _ => break,
        }
    }
    sent
}

/// Applies one command to the machine.
fn apply(cmd: Cmd, m: &mut server::Conn) {
    let r = match cmd {
        Cmd::Stdout(id, b) => m.write_stdout(id, &b),
        Cmd::Stderr(id, b) => m.write_stderr(id, &b),
        Cmd::End(id, st) => m.end_request(id, st, ProtocolStatus::REQUEST_COMPLETE),
        Cmd::Flush => Ok(()),
    };
    if let Err(e) = r {
        // Output for a request already ended (an abort crossed it): nothing to send
        // (FCGI-AMB-16).
        log::debug!(target: "portico::listen::fastcgi", "output dropped: {e}");
    }
}

async fn end_now(shared: &Shared, cmd_tx: &rt::channel::Sender<Cmd>, id: u16, app_status: u32) {
    let _ = emit(shared, cmd_tx, &mut vec![Cmd::End(id, app_status)]).await;
}

async fn reject(
    shared: &Shared,
    cmd_tx: &rt::channel::Sender<Cmd>,
    id: u16,
    status: ProtocolStatus,
) {
    if let Ok(mut s) = shared.lock() {
        let _ = s.machine.reject(id, status);
    }
    let _ = emit(shared, cmd_tx, &mut Vec::new()).await;
}

/// Applies commands to the machine and writes what it produces; closes the socket when
/// the machine says so (a request without KEEP_CONN ended, FCGI-5.1-5). Idle (see
/// [`emit`]) whenever nothing is queued for it.
async fn writer(mut conn: Conn, shared: Shared, cmds: rt::channel::Receiver<Cmd>) {
    let mut out = Vec::new();
    'recv: while let Ok(cmd) = cmds.recv().await {
        let mut cmd = Some(cmd);
        loop {
            let close = {
                let Ok(mut guard) = shared.lock() else {
                    break 'recv;
                };
                let s = &mut *guard;
                s.writer_idle = false;
                // What a direct write left goes first: it was taken from the machine
                // before anything the machine holds now.
                out.append(&mut s.leftover);
                if let Some(cmd) = cmd.take() {
                    s.queued = s.queued.saturating_sub(1);
                    apply(cmd, &mut s.machine);
                }
                // Batch whatever else is queued into the same write.
                while out.len() + s.machine.pending_transmit() < 256 * 1024 {
                    match cmds.try_recv() {
                        Ok(c) => {
                            s.queued = s.queued.saturating_sub(1);
                            apply(c, &mut s.machine);
                        }
                        Err(_) => break,
                    }
                }
                s.machine.poll_transmit(&mut out);
                s.machine.wants_close()
            };
            if !out.is_empty() {
                if let Err(e) = conn.write_all(&out).await {
                    log::debug!(target: "portico::listen::fastcgi", "write failed: {e}");
                    break 'recv;
                }
                out.clear();
                if out.capacity() > 256 * 1024 {
                    out.shrink_to(16 * 1024);
                }
            }
            if close {
                break 'recv;
            }
            let Ok(mut s) = shared.lock() else {
                break 'recv;
            };
            if s.queued > 0 {
                // Commands on their way: wait for them.
                continue 'recv;
            }
            if s.machine.pending_transmit() == 0 && s.leftover.is_empty() {
                // From here on output is written directly, until a write would block.
                s.writer_idle = true;
                continue 'recv;
            }
            // Output applied while this task wrote, with no command behind it
            // (the reader's management answers): write it too.
        }
    }
    let _ = conn.flush().await;
    let _ = conn.close().await;
    // Closing the write side alone leaves the reader blocked on a web server that keeps
    // the connection: shut down both directions.
    conn.shutdown_both();
}
