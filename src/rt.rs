//! The runtime seam: the only file that names the async runtime: smol's parts (async-io,
//! async-task, blocking, async-process, async-signal), with tasks run on portico's own
//! worker threads ([`exec`]). It was async-std, which upstream has deprecated in favour
//! of those same parts.
//!
//! Everything else in portico imports sockets, tasks, timers, processes and signals from
//! here, so changing runtime is a one-file change (with its one submodule,
//! `rt/net/edge.rs`: accepted connections on an edge-triggered poller of their own). This
//! file also adapts futures-io streams to hyper's `rt::Read`/`rt::Write`, and gives
//! hyper an executor and a timer (without a timer hyper silently skips its header-read
//! timeout).
//!
//! Must not import any other portico module.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
pub use futures_lite::{Stream, StreamExt};
pub use net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Runs the executor on `n` threads (named `portico-worker`). Only before the runtime
/// first runs (a later call does nothing); `ASYNC_STD_THREAD_COUNT` in the environment
/// still wins, as it did when the executor was async-std's.
pub fn set_threads(n: usize) {
    exec::set_threads(n);
}

/// Starts the executor's threads and async-io's driver thread now (otherwise the first
/// task starts them); how many workers run. An error if not one worker could start (the
/// system's thread limit, say), or the driver's thread could not: then no task, or no
/// I/O, would ever run, so a server must not go on. Call it before the first
/// [`block_on`]: async-io panics in a `block_on` whose driver thread cannot start. Calling
/// it again returns the same.
pub fn start() -> io::Result<usize> {
    exec::start_now()
}

/// The threads that run portico's tasks (async-task's tasks on a queue of our own), each
/// sleeping in the edge poller's epoll ([`net::edge`]) when it has nothing to run, so
/// the connections and pipes on that poller wake it directly.
///
/// async-std's threads (portico's executor until this) slept in async-io's reactor
/// instead, and polled it (without sleeping) every time a task was woken from another
/// thread: each poll re-armed its timerfd and its notifier with an `epoll_ctl` apiece,
/// and the edge poller's own descriptor, which sat in that reactor, with another (about
/// 12 of a CGI request's 50-odd system calls, strace). What still uses async-io
/// (listening sockets, child pidfds, signals) is driven by whichever thread runs
/// [`block_on`] (the main thread) or by async-io's own thread, and wakes tasks here like
/// any other waker.
mod exec {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst, fence};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use async_task::Runnable;
    use concurrent_queue::ConcurrentQueue;

    /// Tasks ready to run, in the order they were woken.
    static QUEUE: OnceLock<ConcurrentQueue<Runnable>> = OnceLock::new();

    fn queue() -> &'static ConcurrentQueue<Runnable> {
        QUEUE.get_or_init(ConcurrentQueue::unbounded)
    }

    /// The configured thread count (0: not set).
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    /// How many workers started, or why the runtime could not start.
    static STARTED: OnceLock<Result<usize, String>> = OnceLock::new();

    pub(super) fn set_threads(n: usize) {
        THREADS.store(n.max(1), SeqCst);
    }

    /// Starts the threads, once.
    pub(super) fn ensure_started() {
        STARTED.get_or_init(start);
    }

    /// Starts the threads if they have not started; how many run, or an error if not
    /// one could start (then no task would ever run).
    pub(super) fn start_now() -> std::io::Result<usize> {
        match STARTED.get_or_init(start) {
            Ok(n) => Ok(*n),
            Err(why) => Err(std::io::Error::other(why.clone())),
        }
    }

    fn start() -> Result<usize, String> {
        let n = std::env::var("ASYNC_STD_THREAD_COUNT")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| Some(THREADS.load(SeqCst)).filter(|&n| n > 0))
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1);
        // Unit tests run at least two workers, so that the ways work moves between
        // workers are exercised on any machine.
        #[cfg(test)]
        let n = n.max(2);
        let name = "portico-worker";
        let mut started = 0;
        let mut first_error = None;
        for _ in 0..n {
            match std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(worker)
            {
                Ok(_) => started += 1,
                Err(e) => {
                    log::error!(target: "portico::rt", "starting a worker thread: {e}");
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if started == 0 {
            let why = format!(
                "no worker thread could start ({})",
                first_error.as_deref().unwrap_or("no reason given")
            );
            log::error!(target: "portico::rt", "{why}: tasks will not run");
            return Err(why);
        }
        // What still uses async-io (listening sockets, child pidfds, signals) is driven
        // by whichever thread is in `block_on`, or else by async-io's own thread, which
        // async-io starts at the end of a first `block_on`: started here, for a process
        // (a test) that never calls `block_on`. async-io panics if that thread cannot
        // start (the panic hook still prints it); caught here, where nothing else is
        // unwinding, it is an error to report. async-io keeps no record of the failure:
        // a later `block_on` would panic the same way, so callers stop on this error.
        if let Err(panic) = std::panic::catch_unwind(|| async_io::block_on(async {})) {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("async-io's thread did not start");
            let why = format!("the I/O driver could not start: {what}");
            log::error!(target: "portico::rt", "{why}");
            return Err(why);
        }
        Ok(started)
    }

    /// A worker as the others see it. One idle worker at a time sleeps in the edge
    /// poller's `epoll_wait` (the poller: [`POLLING`]), woken there by the poller's
    /// eventfd; the others park. A sleeping worker is woken at most once per sleep.
    struct Worker {
        /// [`RUNNING`], [`PARKED`], [`IN_POLLER`] or [`WOKEN`]: how it sleeps, set
        /// before it looks at the queue a last time, so a waker that sees it asleep
        /// also sees which way.
        state: AtomicU8,
        thread: std::thread::Thread,
    }

    /// Running tasks (or between sleeps): it will look at the queue before sleeping.
    const RUNNING: u8 = 0;
    /// Parked (or about to): woken by an unpark.
    const PARKED: u8 = 1;
    /// In the edge poller's `epoll_wait` (or about to): woken by its eventfd.
    const IN_POLLER: u8 = 2;
    /// A wake-up is on its way.
    const WOKEN: u8 = 3;

    /// Taken by the worker that sleeps in the edge poller.
    static POLLING: AtomicBool = AtomicBool::new(false);

    impl Worker {
        /// Wakes the worker if it sleeps the ways `how` accepts and no wake-up is on
        /// its way; whether this one was. One way, the way it sleeps: the state it is
        /// taken from says which (a state read a sleep behind fails the exchange, and
        /// is read again).
        fn wake_if(&self, how: impl Fn(u8) -> bool) -> bool {
            let mut s = self.state.load(SeqCst);
            loop {
                if !(s == PARKED || s == IN_POLLER) || !how(s) {
                    return false;
                }
                match self.state.compare_exchange(s, WOKEN, SeqCst, SeqCst) {
                    Ok(_) => {
                        if s == PARKED {
                            self.thread.unpark();
                        } else {
                            super::net::edge::wake_poller();
                        }
                        return true;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }

    static WORKERS: Mutex<Vec<Arc<Worker>>> = Mutex::new(Vec::new());

    fn workers() -> std::sync::MutexGuard<'static, Vec<Arc<Worker>>> {
        WORKERS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the first worker that sleeps a way `how` accepts; whether one was.
    fn wake_one(how: impl Fn(u8) -> bool) -> bool {
        // Against a worker's `state` store then queue (or timer) check: either it sees
        // what was just queued, or this sees it asleep.
        fence(SeqCst);
        workers().iter().any(|w| w.wake_if(&how))
    }

    /// Wakes one sleeping worker for a task just queued, if any sleeps (the others are
    /// running, and look at the queue before they sleep): a parked one first, so the
    /// one in the poller stays there, watching connections and timers.
    fn wake_for_task() {
        if !wake_one(|s| s == PARKED) {
            wake_one(|_| true);
        }
    }

    /// Wakes one parked worker, if any: the poller is being left with work to run, and
    /// needs another worker in it meanwhile.
    fn wake_parked() {
        wake_one(|s| s == PARKED);
    }

    /// A timer was set sooner than any other. Only the worker in the poller sleeps
    /// until the soonest timer (parked workers sleep until woken): it looks again. If
    /// none sleeps there, the one about to (or the one that will take the poller next)
    /// looks at the timers before it sleeps, having set its state before: either it
    /// sees this timer, or this sees it asleep. Without an edge poller every parked
    /// worker keeps the timers, and all are woken.
    pub(super) fn wake_for_timer() {
        if super::net::edge::available() {
            wake_one(|s| s == IN_POLLER);
        } else {
            fence(SeqCst);
            for w in workers().iter() {
                w.wake_if(|_| true);
            }
        }
    }

    fn schedule(runnable: Runnable) {
        // An unbounded queue is never full; a closed one is never made.
        if queue().push(runnable).is_ok() {
            wake_for_task();
        }
    }

    /// Spawns `fut` as a task on the workers.
    pub(super) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        ensure_started();
        // A task's panic is caught and handed to whoever awaits it (dropped if nobody
        // does), as async-std's tasks did; the worker goes on.
        let (runnable, task) = async_task::Builder::new()
            .propagate_panic(true)
            .spawn(move |_| fut, schedule);
        runnable.schedule();
        JoinHandle(Some(task))
    }

    /// Tasks run between two looks at the poller and the timers.
    const TICK: usize = 64;

    fn worker() {
        let mut waiter = super::net::edge::Waiter::new();
        let me = Arc::new(Worker {
            state: AtomicU8::new(RUNNING),
            thread: std::thread::current(),
        });
        workers().push(me.clone());
        let queue = queue();
        loop {
            let mut ran = 0;
            while let Ok(runnable) = queue.pop() {
                // A task's own panic is caught inside (propagate_panic); anything else
                // is logged, and the worker goes on.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run()))
                    .is_err()
                {
                    log::error!(target: "portico::rt", "a task panicked outside its future");
                }
                ran += 1;
                if ran % TICK == 0 {
                    // Connections, pipes and timers get their turn while tasks keep
                    // coming.
                    look_around(&mut waiter);
                }
            }
            look_around(&mut waiter);
            if !queue.is_empty() {
                continue;
            }
            // The poller if no other worker is (and there is an edge poller).
            let poller = waiter.is_some()
                && POLLING
                    .compare_exchange(false, true, SeqCst, SeqCst)
                    .is_ok();
            // A wake-up still in flight from the last sleep (a stray unpark, an
            // eventfd edge) may end this sleep early, harmlessly.
            me.state
                .store(if poller { IN_POLLER } else { PARKED }, SeqCst);
            fence(SeqCst);
            // A worker parks only while another keeps the poller: one that left it
            // after this worker's exchange failed either sees this worker parked (and
            // wakes it if it leaves to run tasks) or is seen gone here.
            let vacant = waiter.is_some() && !poller && !POLLING.load(SeqCst);
            if queue.is_empty() && !vacant {
                match waiter.as_mut() {
                    // In the poller: until the soonest timer, looked up once `state`
                    // is set (a timer set sooner after this sees it and wakes this
                    // worker).
                    Some(w) if poller => {
                        let wait = super::timers::next_deadline()
                            .map(|at| at.saturating_duration_since(Instant::now()));
                        w.wait(wait, true);
                    }
                    // Parked beside the poller, which keeps the timers.
                    Some(_) => std::thread::park(),
                    None => match super::timers::next_deadline() {
                        Some(at) => {
                            std::thread::park_timeout(at.saturating_duration_since(Instant::now()))
                        }
                        None => std::thread::park(),
                    },
                }
            }
            me.state.store(RUNNING, SeqCst);
            if poller {
                POLLING.store(false, SeqCst);
                // The tasks of what the poller brought are woken only now that it has
                // left the poller: waking them wakes a parked worker (if any), which
                // takes the poller over while this one runs them. Woken from inside, the
                // wake-ups would have come back to this worker, and the poller would
                // stay empty for as long as the tasks ran. Tasks queued meanwhile by
                // others (the wake-up that ended this sleep) call for the same.
                let woke = waiter.as_mut().is_some_and(|w| w.wake_collected());
                if !woke && !queue.is_empty() {
                    wake_parked();
                }
            }
        }
    }

    /// Without sleeping: wakes the tasks of ready connections and pipes, and of due
    /// timers.
    fn look_around(waiter: &mut Option<super::net::edge::Waiter>) {
        if let Some(w) = waiter.as_mut() {
            w.dispatch(Some(Duration::ZERO));
        }
        super::timers::fire_due();
    }

    /// A spawned task; dropping it lets the task run on (detached), as async-std's did.
    pub struct JoinHandle<T>(Option<async_task::Task<T>>);

    impl<T> Future for JoinHandle<T> {
        type Output = T;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
            match self.0.as_mut() {
                Some(task) => Pin::new(task).poll(cx),
                None => Poll::Pending,
            }
        }
    }

    impl<T> Drop for JoinHandle<T> {
        fn drop(&mut self) {
            if let Some(task) = self.0.take() {
                task.detach();
            }
        }
    }
}

pub use exec::JoinHandle;

/// Process handling (spawn, pipes, wait) on the runtime's reactor, for long-lived
/// children (managed FastCGI workers).
pub mod process {
    pub use async_process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
}

/// Short-lived children, one per request (CGI scripts): pipes on the reactor and the
/// exit awaited with no helper thread.
///
/// async-process, which [`process`] uses, gives every child a pidfd on the reactor and,
/// when the child is dropped, a hop to its own thread to reap it: per CGI request two
/// more `epoll_ctl`s, a `pidfd_open` and a cross-thread wake-up, a fifth of the
/// gateway's CPU under `benches/cgi.sh`. Here, a child whose output has closed has
/// nearly always exited too, so [`Child::status`] first asks `waitpid(WNOHANG)` and only
/// when the child still runs puts a pidfd on the reactor.
pub mod child {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::time::Duration;

    /// The parent's end of the child's stdin.
    pub type Stdin = super::net::Pipe;
    /// The parent's end of the child's stdout.
    pub type Stdout = super::net::Pipe;
    /// The parent's end of the child's stderr.
    pub type Stderr = super::net::Pipe;

    /// Makes the parent's end of a stdin pipe non-blocking and puts it on a poller.
    pub fn stdin(fd: OwnedFd) -> io::Result<Stdin> {
        super::net::Pipe::from_fd(fd)
    }

    /// Makes the parent's end of a stdout pipe non-blocking and puts it on a poller.
    pub fn stdout(fd: OwnedFd) -> io::Result<Stdout> {
        super::net::Pipe::from_fd(fd)
    }

    /// Makes the parent's end of a stderr pipe non-blocking and puts it on a poller.
    pub fn stderr(fd: OwnedFd) -> io::Result<Stderr> {
        super::net::Pipe::from_fd(fd)
    }

    /// A running child, known by its pid. Dropped before its exit was collected, it gets
    /// SIGKILL and is reaped by a task of its own, so it never stays a zombie.
    pub struct Child {
        pid: i32,
        /// The exit status was collected (the pid may belong to another process now).
        done: bool,
    }

    impl Child {
        /// Takes charge of the child `pid`, which this process spawned and nothing else
        /// waits for.
        pub fn adopt(pid: i32) -> Child {
            Child { pid, done: false }
        }

        /// The child's process id.
        pub fn id(&self) -> i32 {
            self.pid
        }

        /// Reaps the child if it has exited; `None` while it runs. No waiting.
        pub fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
            if self.done {
                return Err(io::Error::other("exit status already collected"));
            }
            let status = try_wait(self.pid)?;
            self.done = status.is_some();
            Ok(status)
        }

        /// Waits for the child to exit and reaps it.
        pub async fn status(&mut self) -> io::Result<ExitStatus> {
            if self.done {
                return Err(io::Error::other("exit status already collected"));
            }
            let status = wait(self.pid).await;
            if status.is_ok() {
                self.done = true;
            }
            status
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            if self.done {
                return;
            }
            let pid = self.pid;
            // SAFETY: kill(2) on our own unreaped child: the pid cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            if let Ok(None) = try_wait(pid) {
                // Not gone yet (SIGKILL takes a moment): reap it when it is.
                drop(super::spawn(async move {
                    let _ = wait(pid).await;
                }));
            }
        }
    }

    /// `waitpid(pid, WNOHANG)`: the status if the child has exited (and is now reaped).
    fn try_wait(pid: i32) -> io::Result<Option<ExitStatus>> {
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: waitpid on our own child with a status int we own.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return Ok(Some(ExitStatus::from_raw(status)));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `waitpid(WNOHANG)` first; then a pidfd on the reactor (Linux 5.3 and later), or
    /// polling with a growing pause where there is none.
    async fn wait(pid: i32) -> io::Result<ExitStatus> {
        if let Some(status) = try_wait(pid)? {
            return Ok(status);
        }
        match pidfd(pid) {
            Ok(fd) => {
                let fd = async_io::Async::new(fd)?;
                loop {
                    if let Some(status) = try_wait(pid)? {
                        return Ok(status);
                    }
                    fd.readable().await?;
                }
            }
            Err(_) => {
                let mut pause = Duration::from_millis(1);
                loop {
                    if let Some(status) = try_wait(pid)? {
                        return Ok(status);
                    }
                    super::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    fn pidfd(pid: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1;
        // no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Channels used between tasks.
pub mod channel {
    pub use async_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
}

/// Spawns a task on the runtime.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // A large future is boxed first: the executor's layers (task locals, call-on-drop,
    // the task allocation) each move it, which for the FastCGI listener's per-request
    // future (several KiB) was 10% of the CPU in memcpy; boxed, they move a pointer.
    if std::mem::size_of::<F>() > 512 {
        exec::spawn(Box::pin(fut))
    } else {
        exec::spawn(fut)
    }
}

/// Runs a future to completion on the current thread (the program's entry point),
/// driving async-io's reactor while it waits.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    async_io::block_on(fut)
}

/// Runs blocking code on the runtime's blocking pool.
pub async fn spawn_blocking<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The blocking crate's pool, awaited from the calling task (async-std's wrapper
    // spawned a task of its own to await it).
    blocking::unblock(f).await
}

/// Sleeps for `d`.
pub async fn sleep(d: Duration) {
    timers::Sleep::after(d).await;
}

/// The error of [`timeout`]: the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

// The combinators below are plain functions returning futures, not `async fn`s: an
// `async fn` (or an async block that awaits a future it captured) keeps its argument in
// its own state *and* the future it awaits beside it, so each layer doubled the size of
// what it wrapped and copied it once more on its first poll. Nested three deep around a
// CGI script's head phase that was a 96 KiB future, copied several times per request
// (`rustc -Zprint-type-sizes`; memmove was a tenth of portico's CPU under `benches/cgi.sh`).

/// Runs `fut` for at most `d` (its clock starts now).
pub fn timeout<F: Future>(d: Duration, fut: F) -> impl Future<Output = Result<F::Output, Elapsed>> {
    limited(fut, timers::Sleep::after(d))
}

/// `fut` unless `timer` ends first ([`timeout`] and [`coarse::timeout`]).
fn limited<F: Future, S: Future>(
    fut: F,
    timer: S,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    race(map(fut, Ok), map(timer, |_| Err(Elapsed)))
}

/// Runs two futures at once on the current task until both have finished.
pub fn join<A: Future, B: Future>(a: A, b: B) -> impl Future<Output = (A::Output, B::Output)> {
    futures_lite::future::zip(a, b)
}

/// Waits for whichever of two futures finishes first (the first wins a tie).
pub fn race<T, A, B>(a: A, b: B) -> impl Future<Output = T>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    futures_lite::future::or(a, b)
}

/// `fut`, with `f` applied to its output (without an async block, which would hold
/// `fut` twice; see above).
pub fn map<F: Future, G: FnOnce(F::Output) -> T, T>(fut: F, f: G) -> Map<F, G> {
    Map { fut, f: Some(f) }
}

pin_project_lite::pin_project! {
    /// The future of [`map`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Map<F, G> {
        #[pin]
        fut: F,
        f: Option<G>,
    }
}

impl<F: Future, G: FnOnce(F::Output) -> T, T> Future for Map<F, G> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.project();
        match this.fut.poll(cx) {
            Poll::Ready(out) => match this.f.take() {
                Some(f) => Poll::Ready(f(out)),
                // Polled again after it finished: a caller's bug, as with any future.
                None => panic!("`rt::map` polled after completion"),
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream of the termination signals portico acts on.
pub fn signals() -> io::Result<async_signal::Signals> {
    use async_signal::Signal;
    async_signal::Signals::new([Signal::Term, Signal::Int, Signal::Hup])
}

pub use async_signal::Signal;

/// A futures-io stream seen as a hyper stream.
///
/// futures-io reads into initialised memory and hyper lends uninitialised memory, so
/// reads land in a small zeroed scratch buffer (initialised once per connection) and
/// only the bytes read are copied on: cheaper than zeroing hyper's whole window per read.
pub struct HyperIo<T> {
    inner: T,
    scratch: Box<[u8]>,
}

impl<T> HyperIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            scratch: vec![0u8; READ_SCRATCH].into_boxed_slice(),
        }
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let want = buf.remaining().min(this.scratch.len());
        let Some(window) = this.scratch.get_mut(..want) else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(&mut this.inner).poll_read(cx, window) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(window.get(..n).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The scratch buffer of one HTTP connection's reads.
const READ_SCRATCH: usize = 16 * 1024;

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
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

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
/// hyper's executor: spawns connection background tasks on the runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperExec;

impl<F> hyper::rt::Executor<F> for HyperExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(spawn(fut));
    }
}

/// hyper's timer, over [`coarse`] sleeps: hyper's only timer on a server connection is
/// the header-read timeout, started for every request head (on a kept-alive connection,
/// while it waits for the next request) and dropped when the head has arrived.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(coarse::sleep(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(coarse::sleep_until(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

impl hyper::rt::Sleep for coarse::Sleep {}

/// Values in numbered slots, a freed number reused first: the [`coarse`] timer table and
/// the edge poller's sockets (`net::edge`), whose numbers are handed out (as a slot
/// index, as epoll data) and must stay put while the value lives.
struct Slots<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slots<T> {
    const fn new() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores `value`; returns its number.
    fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i) {
                    *slot = Some(value);
                }
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    /// Takes the value out of slot `i`, freeing the number (`None` if it was free).
    fn take(&mut self, i: usize) -> Option<T> {
        let value = self.slots.get_mut(i).and_then(Option::take);
        if value.is_some() {
            self.free.push(i);
        }
        value
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    /// Values held, and slots in all (tests).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        (self.slots.iter().flatten().count(), self.slots.len())
    }
}

/// Sleeps for long waits that are nearly always called off before they end (hyper's
/// header-read timeout, the connections' idle checks, a CGI script's time limit and
/// start window): entries in one table, woken by one thread of their own, never seen by
/// the reactor.
///
/// An async-io timer registers with the reactor on its first poll, wakes the thread that
/// waits on the reactor so that it plans its next wake-up again (an eventfd write, read
/// and re-arm), and sits in the reactor's ordered map, which the reactor splits on every
/// wake-up while any timer is in it. For hyper's header-read timeout that was once per
/// request: about 1,950 of the ~16,000 user-space instructions of a kept-alive echo
/// request (callgrind, `benches/instructions.sh`), besides the system calls. Here a
/// sleep costs a lock and a slot in a table when first polled, and the same when
/// dropped. The `portico-timer` thread sleeps until the earliest deadline it knows of,
/// wakes the sleeps that are due, and is woken early only by a sleep due before it
/// planned to look (rare: most waits have the same length, so a new one ends after the
/// ones before it). A sleep ends no earlier than its deadline and at most
/// [`coarse::GRAIN`] after it (plus the time its task takes to be polled): for waits of
/// seconds, not for precise short ones.
pub mod coarse {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Mutex, MutexGuard};
    use std::task::{Context, Poll, Waker};
    use std::thread::Thread;
    use std::time::{Duration, Instant};

    /// How late after its deadline a sleep may end: the timer thread wakes at most this
    /// often.
    pub const GRAIN: Duration = Duration::from_millis(10);

    struct Entry {
        at: Instant,
        /// `None` once the timer thread has woken it.
        waker: Option<Waker>,
    }

    struct Table {
        slots: super::Slots<Entry>,
        /// The timer thread, once started.
        thread: Option<Thread>,
        /// The timer thread could not be started: sleeps use async-io timers.
        no_thread: bool,
        /// When the timer thread will look at the table next (`None`: when woken).
        look_at: Option<Instant>,
    }

    static TABLE: Mutex<Table> = Mutex::new(Table {
        slots: super::Slots::new(),
        thread: None,
        no_thread: false,
        look_at: None,
    });

    fn table() -> MutexGuard<'static, Table> {
        // The table stays consistent whatever panicked while it was held: every update
        // is a single assignment or push.
        TABLE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sleep until an instant; see the [module](self).
    #[derive(Debug)]
    pub struct Sleep {
        at: Instant,
        slot: Option<usize>,
        /// Used instead when the timer thread could not be started.
        fallback: Option<async_io::Timer>,
    }

    /// Sleeps until `at`.
    pub fn sleep_until(at: Instant) -> Sleep {
        Sleep {
            at,
            slot: None,
            fallback: None,
        }
    }

    /// Runs `fut` for at most `d` (its clock starts now), as [`super::timeout`] does.
    pub fn timeout<F: Future>(
        d: Duration,
        fut: F,
    ) -> impl Future<Output = Result<F::Output, super::Elapsed>> {
        super::limited(fut, sleep(d))
    }

    /// Sleeps for `d` (from now).
    pub fn sleep(d: Duration) -> Sleep {
        let now = Instant::now();
        // Past what `Instant` holds is never: a year is as good.
        let at = now
            .checked_add(d)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        sleep_until(at)
    }

    impl Sleep {
        fn release(&mut self) {
            if let Some(i) = self.slot.take() {
                // Taken out, dropped after the lock (a waker's drop may run anything).
                let entry = table().slots.take(i);
                drop(entry);
            }
        }

        /// A sleep already in the table (slot `i`) polled again: usually by the same
        /// task, so nothing changes. An entry without a waker was woken already by the
        /// timer thread (a waker stored now would never be called): the sleep has ended.
        fn poll_again(&mut self, i: usize, cx: &mut Context<'_>) -> Poll<()> {
            let t = table();
            let same = match t.slots.get(i) {
                Some(Entry { waker: Some(w), .. }) => w.will_wake(cx.waker()),
                _ => {
                    drop(t);
                    self.release();
                    return Poll::Ready(());
                }
            };
            drop(t);
            if same {
                return Poll::Pending;
            }
            // Another task's waker: cloned outside the lock (a clone runs the waker's
            // code), then stored if the entry still waits.
            let waker = cx.waker().clone();
            let mut t = table();
            let old = match t.slots.get_mut(i) {
                Some(Entry {
                    waker: w @ Some(_), ..
                }) => w.replace(waker),
                _ => {
                    drop(t);
                    drop(waker);
                    self.release();
                    return Poll::Ready(());
                }
            };
            drop(t);
            drop(old);
            Poll::Pending
        }

        fn fall_back(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            self.release();
            let mut timer = async_io::Timer::at(self.at);
            let polled = Pin::new(&mut timer).poll(cx).map(|_| ());
            self.fallback = Some(timer);
            polled
        }
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            if let Some(timer) = &mut this.fallback {
                return Pin::new(timer).poll(cx).map(|_| ());
            }
            // Once in the table, the timer thread decides (it takes the waker out when
            // the sleep is due): a sleep raced against a connection is polled again on
            // each of its requests, and a clock read each time was one per request.
            if let Some(i) = this.slot {
                return this.poll_again(i, cx);
            }
            if Instant::now() >= this.at {
                return Poll::Ready(());
            }
            // Cloned before the lock: a waker's clone runs its own code.
            let waker = cx.waker().clone();
            let mut t = table();
            if t.no_thread {
                drop(t);
                drop(waker);
                return this.fall_back(cx);
            }
            let i = t.slots.insert(Entry {
                at: this.at,
                waker: Some(waker),
            });
            this.slot = Some(i);
            if t.look_at.is_some_and(|l| l <= this.at + GRAIN) {
                // The timer thread looks in time: the common case.
                return Poll::Pending;
            }
            t.look_at = Some(this.at);
            if let Some(thread) = &t.thread {
                thread.unpark();
                return Poll::Pending;
            }
            match std::thread::Builder::new()
                .name("portico-timer".into())
                .stack_size(64 * 1024)
                .spawn(run)
            {
                Ok(handle) => {
                    t.thread = Some(handle.thread().clone());
                    Poll::Pending
                }
                Err(e) => {
                    // Once: every later sleep goes straight to the fallback.
                    t.look_at = None;
                    t.no_thread = true;
                    drop(t);
                    log::warn!(target: "portico::rt", "cannot start the timer thread ({e}); long timeouts use the reactor's timers");
                    this.fall_back(cx)
                }
            }
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            self.release();
        }
    }

    /// How many sleeps are in the table, and how many slots it has (tests).
    #[cfg(test)]
    pub(super) fn slots() -> (usize, usize) {
        table().slots.counts()
    }

    /// The timer thread: wakes the sleeps that are due, then sleeps until the earliest
    /// deadline left (at least a grain), or until a sooner one wakes it. A waker that
    /// panics is caught (and printed by the panic hook): a dead timer thread would leave
    /// every later sleep waiting for ever.
    fn run() {
        let mut due: Vec<Waker> = Vec::new();
        loop {
            let now = Instant::now();
            let look_at = {
                let mut t = table();
                let mut next: Option<Instant> = None;
                for e in t.slots.values_mut() {
                    if e.at <= now {
                        due.extend(e.waker.take());
                    } else if e.waker.is_some() {
                        next = Some(next.map_or(e.at, |n| n.min(e.at)));
                    }
                }
                let look_at = next.map(|n| n.max(now + GRAIN));
                t.look_at = look_at;
                look_at
            };
            for w in due.drain(..) {
                if let Err(payload) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()))
                {
                    // Not dropped: a payload whose drop panics would end the thread.
                    std::mem::forget(payload);
                }
            }
            match look_at {
                // Woken early by a sooner sleep, or spuriously: the loop looks again.
                Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
        }
    }
}

/// A counting semaphore (connection and concurrency limits).
pub use async_lock::{Semaphore, SemaphoreGuardArc};

/// The receiving side of a shutdown notice: every connection holds a clone.
#[derive(Clone, Debug)]
pub struct Shutdown(async_channel::Receiver<()>);

/// The sending side: dropping or triggering it notifies every [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(#[allow(dead_code)] async_channel::Sender<()>);

/// A connected trigger and notice.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = async_channel::bounded(1);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Notifies every [`Shutdown`].
    pub fn trigger(self) {
        drop(self);
    }
}

impl Shutdown {
    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        let _ = self.0.recv().await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.0.is_closed()
    }
}

/// Tracks outstanding work: each task holds a [`Tracker`]; [`Drain::wait`] completes when
/// all of them are gone (mini-redis's completion-by-dropping-a-sender).
#[derive(Clone, Debug)]
pub struct Tracker(#[allow(dead_code)] async_channel::Sender<()>);

/// The waiting side of [`Tracker`].
#[derive(Debug)]
pub struct Drain(async_channel::Receiver<()>);

/// A connected tracker and drain.
pub fn drain_pair() -> (Tracker, Drain) {
    let (tx, rx) = async_channel::bounded(1);
    (Tracker(tx), Drain(rx))
}

impl Drain {
    /// Completes when every [`Tracker`] is dropped.
    pub async fn wait(&self) {
        let _ = self.0.recv().await;
    }
}

/// Milliseconds on a monotonic clock that advances in steps of the kernel's tick (1 to
/// 10 ms), for bookkeeping that needs no more (when a connection last moved).
///
/// `CLOCK_MONOTONIC_COARSE` returns the time of the last tick, which the kernel keeps
/// for the asking; `Instant::now` reads and scales the fine clock (on this virtual
/// machine a paravirtual clock read). Read on every request, that was 2 of the 5 clock
/// reads of a kept-alive `GET /echo`. Never decreases; not comparable with `Instant`.
pub fn coarse_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc == 0 {
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
    } else {
        // A kernel without the coarse clock (before 2.6.32): the fine one, from a fixed
        // origin.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Time since `since` (a [`coarse_millis`] reading), to the coarse clock's step.
pub fn coarse_elapsed(since: u64) -> Duration {
    Duration::from_millis(coarse_millis().saturating_sub(since))
}

/// Sleeps until `deadline` (returns at once when it has passed).
pub async fn sleep_until(deadline: Instant) {
    timers::Sleep::until(Some(deadline)).await;
}

/// Precise timers ([`sleep`], [`sleep_until`], [`timeout`]), kept by the worker threads:
/// a worker that runs out of tasks sleeps in its `epoll_wait` until the soonest one at
/// most (a millisecond's grain), and fires the due ones each round. async-io's timers
/// live in its reactor, which the workers do not drive: setting and dropping one (a CGI
/// request's `whole_body_wait` does) woke that reactor's thread twice.
mod timers {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    static TIMERS: Mutex<BTreeMap<(Instant, u64), Waker>> = Mutex::new(BTreeMap::new());
    static IDS: AtomicU64 = AtomicU64::new(0);

    fn timers() -> std::sync::MutexGuard<'static, BTreeMap<(Instant, u64), Waker>> {
        // A map of wakers holds no invariant a panicking holder could break halfway.
        TIMERS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The deadline of the soonest timer.
    pub(super) fn next_deadline() -> Option<Instant> {
        timers().first_key_value().map(|(k, _)| k.0)
    }

    /// Wakes the timers that are due.
    pub(super) fn fire_due() {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut t = timers();
            while let Some(entry) = t.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
        }
        // A waker that panics must not take the worker (and the other due wakers) with
        // it, as in the edge poller's dispatch.
        for w in due {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err() {
                log::error!(target: "portico::rt", "a timer's waker panicked");
            }
        }
    }

    /// Ready at `at`, or at once if that has passed; never if `at` is `None` (a
    /// duration past what `Instant` can hold, as async-io's timers took it).
    pub(super) struct Sleep {
        at: Option<Instant>,
        /// The key while registered.
        key: Option<(Instant, u64)>,
    }

    impl Sleep {
        pub(super) fn until(at: Option<Instant>) -> Sleep {
            Sleep { at, key: None }
        }

        /// `d` from now.
        pub(super) fn after(d: std::time::Duration) -> Sleep {
            Sleep::until(Instant::now().checked_add(d))
        }
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let Some(at) = self.at else {
                return Poll::Pending;
            };
            if Instant::now() >= at {
                if let Some(key) = self.key.take() {
                    timers().remove(&key);
                }
                return Poll::Ready(());
            }
            let soonest = {
                let mut t = timers();
                match self.key {
                    Some(key) => {
                        // Taken out of the map only by `fire_due`, once due.
                        let Some(w) = t.get_mut(&key) else {
                            drop(t);
                            self.key = None;
                            return Poll::Ready(());
                        };
                        if !w.will_wake(cx.waker()) {
                            w.clone_from(cx.waker());
                        }
                        false
                    }
                    None => {
                        let key = (at, IDS.fetch_add(1, Ordering::Relaxed));
                        t.insert(key, cx.waker().clone());
                        self.key = Some(key);
                        t.first_key_value().is_some_and(|(k, _)| *k == key)
                    }
                }
            };
            if soonest {
                // The workers may sleep until a later timer (or none): one must look
                // again.
                super::exec::ensure_started();
                super::exec::wake_for_timer();
            }
            Poll::Pending
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            if let Some(key) = self.key.take() {
                timers().remove(&key);
            }
        }
    }
}

/// Reads at most `max` bytes from `r` onto the end of `buf`, straight into it (a buffer
/// of its own would sit in the caller's future); returns how many. `buf` keeps only
/// what was read: nothing on an error, and nothing extra if this future is dropped
/// before the read ends (it can lose a race to a timer).
pub async fn read_appending<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    /// Cuts `buf` back to `len` when dropped: on every way out.
    struct Grown<'a> {
        buf: &'a mut Vec<u8>,
        len: usize,
    }
    impl Drop for Grown<'_> {
        fn drop(&mut self) {
            self.buf.truncate(self.len);
        }
    }
    let old = buf.len();
    buf.resize(old + max, 0);
    let mut grown = Grown { buf, len: old };
    let n = r.read(grown.buf.get_mut(old..).unwrap_or_default()).await?;
    grown.len = old + n;
    Ok(n)
}

/// [`read_appending`] for a child's pipe: the same contract, with no zeroing
/// ([`net::Pipe::poll_read_appending`]).
pub fn read_pipe_appending<'a>(
    pipe: &'a mut net::Pipe,
    buf: &'a mut Vec<u8>,
    max: usize,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| pipe.poll_read_appending(cx, buf, max))
}

/// Files whose reads and writes run on the runtime's blocking pool (spooled request
/// bodies).
pub mod fs {
    /// A file read and written on the blocking pool.
    pub type File = blocking::Unblock<std::fs::File>;

    /// Each blocking read or write moves up to this much (blocking's default is 8 KiB).
    const CHUNK: usize = 64 << 10;

    /// `file`, read and written on the blocking pool.
    pub fn file(file: std::fs::File) -> File {
        blocking::Unblock::with_capacity(CHUNK, file)
    }
}

/// The process's standard input as an async stream of at most `limit` bytes (CGI mode:
/// CONTENT_LENGTH), read on the blocking pool. The limit is the reader's own: the pool
/// reads ahead, and must not take a byte past it (CGI-4.2-2).
pub fn stdin(limit: u64) -> blocking::Unblock<std::io::Take<std::io::Stdin>> {
    use std::io::Read;
    blocking::Unblock::new(std::io::stdin().take(limit))
}

/// The process's standard output as an async stream (CGI mode), written on the
/// blocking pool: a write returns once the pool has it, so it must be flushed.
pub fn stdout() -> blocking::Unblock<std::io::Stdout> {
    blocking::Unblock::new(std::io::stdout())
}

/// A connected stream to an upstream: TCP or Unix-domain.
pub enum Connection {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain.
    Unix(UnixStream),
}

impl Connection {
    /// Connects to `host:port`.
    pub async fn tcp(addr: &str) -> io::Result<Connection> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(Connection::Tcp(s))
    }

    /// Connects to a Unix socket.
    pub async fn unix(path: &std::path::Path) -> io::Result<Connection> {
        Ok(Connection::Unix(UnixStream::connect(path).await?))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_flush(cx),
            Connection::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => Pin::new(s).poll_close(cx),
            Connection::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// A connection whose writes are gathered until a flush (or 64 KiB), and whose small
/// reads are served from one larger read: a client that writes a record header, its
/// content and its padding separately, and reads them back with three `read_exact`s
/// (fastcgi-client), then costs one system call per request head and about one per
/// reply instead of one per piece.
pub struct Buffered<T> {
    inner: T,
    out: Vec<u8>,
    sent: usize,
    input: Vec<u8>,
    in_pos: usize,
    in_len: usize,
}

/// Reads at least this long bypass the read buffer; shorter ones fill it.
const READ_BUFFER: usize = 16 * 1024;

impl<T> Buffered<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Buffered {
            inner,
            out: Vec::new(),
            sent: 0,
            input: Vec::new(),
            in_pos: 0,
            in_len: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Buffered<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let pending = self.out.get(self.sent..).unwrap_or_default();
            match Pin::new(&mut self.inner).poll_write(cx, pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > 256 * 1024 {
            self.out.shrink_to(64 * 1024);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Buffered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.in_pos >= this.in_len {
            if buf.len() >= READ_BUFFER {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Zeroed once, on first use; after that refills overwrite it in place.
            if this.input.len() < READ_BUFFER {
                this.input.resize(READ_BUFFER, 0);
            }
            this.in_pos = 0;
            this.in_len = 0;
            match Pin::new(&mut this.inner).poll_read(cx, &mut this.input) {
                Poll::Ready(Ok(n)) => this.in_len = n,
                other => return other,
            }
        }
        let pending = this.input.get(this.in_pos..this.in_len).unwrap_or_default();
        let n = pending.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), pending.get(..n)) {
            dst.copy_from_slice(src);
        }
        this.in_pos += n;
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Buffered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.out.len() >= 64 * 1024 {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_close(cx),
            other => other,
        }
    }
}

/// Sockets on async-io's reactor (async-std's sockets were the same `Async<T>` inside),
/// with a read that spares the system call that would fail.
///
/// A read that returns less than was asked for has emptied the socket's receive queue,
/// as nginx also assumes on epoll: the next read waits for readiness first instead of
/// calling `recv` only to get `EAGAIN`. hyper and the FastCGI listener read again right
/// after every request, so this is one failed `recvfrom` less per request (`strace -c`
/// of an HTTP echo run: 2.5 `recvfrom` per request, 1.5 of them `EAGAIN`). If data did
/// arrive in between, nothing is lost: arming the one-shot readiness reports a socket
/// that is already readable at once.
pub mod net {
    use std::io;
    use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, ready};

    use std::io::Write as _;

    use async_io::Async;
    use futures_lite::io::{AsyncRead, AsyncWrite};

    /// A connected stream socket; clones share the socket (one reads while another
    /// writes), each with its own read state. An accepted connection waits on the
    /// edge-triggered poller ([`edge`]) when it could be set up; any other on async-io.
    pub struct Stream<T> {
        io: Io<T>,
    }

    /// The shared socket, and this handle's reading state.
    enum Io<T> {
        /// `bool`: the last read came back short, so the next waits for readiness first.
        Async(Arc<Async<T>>, bool),
        Edge(Arc<edge::Socket<T>>, edge::Side),
    }

    /// A TCP connection.
    pub type TcpStream = Stream<std::net::TcpStream>;
    /// The parent's end of a pipe to or from a child (a CGI script's stdin, stdout or
    /// stderr).
    pub type Pipe = Stream<std::fs::File>;
    /// A Unix-domain stream connection.
    pub type UnixStream = Stream<std::os::unix::net::UnixStream>;

    impl<T> Clone for Stream<T> {
        fn clone(&self) -> Self {
            let io = match &self.io {
                Io::Async(a, _) => Io::Async(a.clone(), false),
                Io::Edge(e, _) => Io::Edge(e.clone(), edge::Side::default()),
            };
            Stream { io }
        }
    }

    impl<T: std::os::fd::AsFd> Stream<T> {
        fn new(io: Async<T>) -> Self {
            Stream {
                io: Io::Async(Arc::new(io), false),
            }
        }

        /// An accepted connection, non-blocking already: on the edge-triggered poller,
        /// or on async-io if that could not be set up. `stream_socket`: a short read
        /// means an empty queue (TCP; not Unix sockets, see [`edge`]).
        fn accepted(sock: T, stream_socket: bool) -> io::Result<Self> {
            match edge::Socket::new(sock, stream_socket) {
                Ok(e) => Ok(Stream {
                    io: Io::Edge(Arc::new(e), edge::Side::default()),
                }),
                Err(sock) => Ok(Stream::new(Async::new_nonblocking(sock)?)),
            }
        }

        /// Whether this stream waits on the edge-triggered poller.
        #[cfg(test)]
        pub(crate) fn on_edge(&self) -> bool {
            matches!(self.io, Io::Edge(..))
        }

        /// The socket itself, for its blocking-free methods (addresses, options).
        pub fn get_ref(&self) -> &T {
            match &self.io {
                Io::Async(a, _) => a.get_ref(),
                Io::Edge(e, _) => e.get_ref(),
            }
        }
    }

    impl Pipe {
        /// Takes the parent's end `fd` of a pipe: made non-blocking here (the child's
        /// end stays blocking) and added to the edge-triggered poller, or async-io's
        /// reactor if that could not be set up.
        ///
        /// On the edge poller a pipe is registered once and taken out by its close: no
        /// re-arm per wait and no `epoll_ctl` at the end, three calls fewer per pipe and
        /// six per CGI request than async-io's one-shot registration. A short read is
        /// not taken for an empty pipe (a wait always follows `EAGAIN`): a script
        /// may put its stdout in packet mode (`O_DIRECT`), and then each read returns
        /// one write's bytes while more may be queued. The first read waits for an edge
        /// instead of trying at once: a pipe is put here right after its child's
        /// `exec`, when it has nearly never written yet, and adding a pipe that already
        /// holds data (or whose writers are gone) reports it at once.
        pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Pipe> {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: FIONBIO reads one int that lives across the call; `fd` is ours.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &on) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let file = std::fs::File::from(fd);
            match edge::Socket::new(file, false) {
                Ok(e) => Ok(Stream {
                    io: Io::Edge(Arc::new(e), edge::Side::fresh()),
                }),
                Err(file) => Ok(Stream::new(Async::new_nonblocking(file)?)),
            }
        }

        /// Reads at most `max` bytes onto the end of `buf` (0 at once when `max` is 0),
        /// straight into its spare room: not zeroed first, as a `&mut [u8]` to read into
        /// has to be (that memset was an eighth of portico's user-space instructions per
        /// CGI request: 12 KiB for a 34-byte answer, callgrind). `buf` grows only by what
        /// was read.
        pub fn poll_read_appending(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut Vec<u8>,
            max: usize,
        ) -> Poll<io::Result<usize>> {
            use std::os::fd::AsRawFd;
            if max == 0 {
                // As a read into an empty buffer: at once, and not an end of stream.
                return Poll::Ready(Ok(0));
            }
            buf.reserve(max);
            let old = buf.len();
            match &mut self.io {
                Io::Edge(e, side) => {
                    let spare = buf.spare_capacity_mut();
                    let len = spare.len().min(max);
                    let at = spare.as_mut_ptr();
                    let n = ready!(e.poll_read_with(side, cx, len, |file| {
                        // SAFETY: `at` points to `len` bytes of `buf`'s spare room, which
                        // nothing else uses while this runs; the kernel writes at most
                        // `len` bytes there.
                        let r = unsafe { libc::read(file.as_raw_fd(), at.cast(), len) };
                        usize::try_from(r).map_err(|_| io::Error::last_os_error())
                    }))?;
                    let n = n.min(len);
                    // SAFETY: the read initialised `n` (at most `len`) bytes right after
                    // the old end, within the capacity reserved above.
                    unsafe { buf.set_len(old + n) };
                    Poll::Ready(Ok(n))
                }
                Io::Async(..) => {
                    buf.resize(old + max, 0);
                    let r =
                        Pin::new(&mut *self).poll_read(cx, buf.get_mut(old..).unwrap_or_default());
                    let n = match &r {
                        Poll::Ready(Ok(n)) => *n,
                        _ => 0,
                    };
                    buf.truncate(old + n);
                    r
                }
            }
        }
    }

    impl TcpStream {
        /// Connects to `addr` (`ip:port`, or `host:port` resolved on the blocking pool),
        /// trying each address it resolves to in turn.
        pub async fn connect(addr: &str) -> io::Result<TcpStream> {
            let addrs: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
                Ok(a) => vec![a],
                Err(_) => {
                    let owned = addr.to_owned();
                    super::spawn_blocking(move || owned.to_socket_addrs().map(Iterator::collect))
                        .await?
                }
            };
            let mut last = None;
            for a in addrs {
                match Async::<std::net::TcpStream>::connect(a).await {
                    Ok(s) => return Ok(Stream::new(s)),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"))
            }))
        }

        /// Sets `TCP_NODELAY`.
        pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
            self.get_ref().set_nodelay(on)
        }

        /// The local address.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.get_ref().local_addr()
        }

        /// Shuts down one or both directions.
        pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
            self.get_ref().shutdown(how)
        }
    }

    impl UnixStream {
        /// Connects to the socket at `path`.
        pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
            Ok(Stream::new(
                Async::<std::os::unix::net::UnixStream>::connect(path).await?,
            ))
        }

        /// Shuts down one or both directions.
        pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
            self.get_ref().shutdown(how)
        }
    }

    impl<T: std::os::fd::AsFd> AsyncRead for Stream<T>
    where
        for<'a> &'a T: io::Read,
    {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let (io, drained) = match &mut self.io {
                Io::Edge(e, side) => return e.poll_read(side, cx, buf),
                Io::Async(a, drained) => (a, drained),
            };
            if *drained {
                ready!(io.poll_readable(cx))?;
                *drained = false;
            }
            let n = ready!(Pin::new(&mut &**io).poll_read(cx, buf))?;
            *drained = n > 0 && n < buf.len();
            Poll::Ready(Ok(n))
        }
    }

    impl<T: std::os::fd::AsFd> AsyncWrite for Stream<T>
    where
        for<'a> &'a T: io::Write,
    {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match &self.io {
                Io::Async(a, _) => Pin::new(&mut &**a).poll_write(cx, buf),
                Io::Edge(e, _) => e.poll_write(cx, |mut s| s.write(buf)),
            }
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            match &self.io {
                Io::Async(a, _) => Pin::new(&mut &**a).poll_write_vectored(cx, bufs),
                Io::Edge(e, _) => e.poll_write(cx, |mut s| s.write_vectored(bufs)),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match &self.io {
                Io::Async(a, _) => Pin::new(&mut &**a).poll_flush(cx),
                // Nothing buffered: writes go straight to the socket.
                Io::Edge(..) => Poll::Ready(Ok(())),
            }
        }

        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // As async-io's: a flush (the socket closes when its last clone is dropped).
            self.poll_flush(cx)
        }
    }

    /// A listening TCP socket.
    pub struct TcpListener(Async<std::net::TcpListener>);

    impl TcpListener {
        /// Binds `addr` (`host:port`).
        pub async fn bind(addr: &str) -> io::Result<TcpListener> {
            let owned = addr.to_owned();
            let l = super::spawn_blocking(move || std::net::TcpListener::bind(owned)).await?;
            TcpListener::from_std(l)
        }

        /// Takes over a listening socket (made non-blocking here).
        pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
            Ok(TcpListener(Async::new(l)?))
        }

        /// Accepts a connection.
        pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
            let (s, peer) = self.0.read_with(|l| l.accept()).await?;
            s.set_nonblocking(true)?;
            Ok((Stream::accepted(s, true)?, peer))
        }

        /// The bound address.
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.get_ref().local_addr()
        }
    }

    /// A listening Unix-domain socket.
    pub struct UnixListener(Async<std::os::unix::net::UnixListener>);

    impl UnixListener {
        /// Binds `path`.
        pub async fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
            UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?)
        }

        /// Takes over a listening socket (made non-blocking here).
        pub fn from_std(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
            Ok(UnixListener(Async::new(l)?))
        }

        /// Accepts a connection (a Unix peer has no address worth keeping).
        pub async fn accept(&self) -> io::Result<UnixStream> {
            let (s, _) = self.0.read_with(|l| l.accept()).await?;
            s.set_nonblocking(true)?;
            Stream::accepted(s, false)
        }
    }

    pub mod edge;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that holds `N` bytes and is ready after `polls` polls.
    struct Heavy<const N: usize> {
        _payload: [u8; N],
        polls: u32,
    }

    impl<const N: usize> Future for Heavy<N> {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.polls == 0 {
                return Poll::Ready(7);
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn heavy(polls: u32) -> Heavy<4096> {
        Heavy {
            _payload: [0; 4096],
            polls,
        }
    }

    #[test]
    fn combinators_hold_what_they_wrap_once() {
        // An `async fn` wrapper held its argument and the future it awaited side by side:
        // nested three deep around the CGI head phase, 96 KiB (see the note above
        // `timeout`). Each combinator is now its input plus a few words.
        let inner = std::mem::size_of::<Heavy<4096>>();
        let slack = 128;
        assert!(std::mem::size_of_val(&race(heavy(0), heavy(0))) <= 2 * inner + slack);
        assert!(std::mem::size_of_val(&timeout(Duration::from_secs(1), heavy(0))) <= inner + slack);
        assert!(std::mem::size_of_val(&map(heavy(0), |n| n + 1)) <= inner + slack);
        let nested = race(race(map(heavy(0), |n| n), heavy(0)), heavy(0));
        assert!(std::mem::size_of_val(&nested) <= 3 * inner + slack);
        assert!(std::mem::size_of_val(&join(heavy(0), heavy(0))) <= 2 * inner + 2 * slack);
    }

    #[test]
    fn timeout_returns_the_output_when_it_comes_first_and_elapsed_otherwise() {
        // `timeout` (a worker-kept timer) and `coarse::timeout` (the timer thread) alike.
        let secs = Duration::from_secs(5);
        assert_eq!(block_on(timeout(secs, heavy(3))), Ok(7));
        assert_eq!(block_on(coarse::timeout(secs, heavy(3))), Ok(7));
        let ms = Duration::from_millis(20);
        for thread in [false, true] {
            let never = std::future::pending::<u32>();
            let start = Instant::now();
            let late = if thread {
                block_on(coarse::timeout(ms, never))
            } else {
                block_on(timeout(ms, never))
            };
            assert_eq!(late, Err(Elapsed));
            assert!(start.elapsed() >= ms);
        }
    }

    #[test]
    fn a_time_past_what_an_instant_holds_means_never() {
        // A configured `grace` or timeout of u64::MAX seconds: the clock cannot hold
        // now + d, which means "never" (as async-io's timers took it).
        assert_eq!(block_on(timeout(Duration::MAX, heavy(3))), Ok(7));
        let mut sleep = std::pin::pin!(sleep(Duration::MAX));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert!(timers::next_deadline().is_none_or(|at| at < Instant::now() + HOUR));
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// A timer set from outside the workers goes to the worker in the poller, and a
    /// task queued next to a parked one: that task holding its worker (blocking, as a
    /// long computation would) must not hold the timer up (the tests run at least two
    /// workers).
    #[test]
    fn a_timer_fires_on_time_while_a_worker_runs_a_long_task() {
        for round in 0..3 {
            // Every worker idle.
            std::thread::sleep(Duration::from_millis(50));
            let timer = std::thread::spawn(|| {
                let start = Instant::now();
                block_on(sleep(Duration::from_millis(30)));
                start.elapsed()
            });
            std::thread::sleep(Duration::from_millis(5));
            let long = spawn(async { std::thread::sleep(Duration::from_millis(250)) });
            let took = timer.join().unwrap();
            assert!(
                took < Duration::from_millis(150),
                "round {round}: a 30 ms timer fired after {took:?}"
            );
            block_on(long);
        }
    }

    #[test]
    fn coarse_sleeps_end_after_their_deadline_and_within_a_grain_of_it() {
        // Slack for a loaded machine on top of the grain; the point is "not before, and
        // not seconds after".
        let slack = Duration::from_millis(250);
        for ms in [0u64, 1, 15, 40] {
            let d = Duration::from_millis(ms);
            let start = Instant::now();
            block_on(coarse::sleep(d));
            let took = start.elapsed();
            assert!(took >= d, "{ms} ms sleep ended after {took:?}");
            assert!(
                took < d + coarse::GRAIN + slack,
                "{ms} ms sleep took {took:?}"
            );
        }
    }

    #[test]
    fn a_coarse_sleep_due_sooner_than_the_others_wakes_the_timer_thread_early() {
        // A long sleep (the timer thread plans to look in an hour), then a 2 s one
        // pending, then a 50 ms one: each must end on time, not when a later one does.
        // Bounded by reactor timers, so a thread that oversleeps fails the test instead
        // of hanging it.
        block_on(async {
            let start = Instant::now();
            let mut long = coarse::sleep(Duration::from_secs(3600));
            assert!(futures_lite::future::poll_once(&mut long).await.is_none());
            // Time for the thread to plan on what it has seen and park, so that the
            // next sleeps must wake it (the thread may be new, and scan only later).
            std::thread::sleep(Duration::from_millis(50));
            let mut mid = coarse::sleep(Duration::from_secs(2));
            assert!(futures_lite::future::poll_once(&mut mid).await.is_none());
            std::thread::sleep(Duration::from_millis(50));
            let ended = timeout(
                Duration::from_secs(5),
                coarse::sleep(Duration::from_millis(50)),
            )
            .await;
            let took = start.elapsed();
            assert_eq!(ended, Ok(()), "50 ms sleep still waiting after 5 s");
            assert!(took >= Duration::from_millis(150));
            // Ending with `mid` instead would take 2 s.
            assert!(took < Duration::from_secs(1), "50 ms sleep took {took:?}");
            assert_eq!(timeout(Duration::from_secs(5), &mut mid).await, Ok(()));
            let took = start.elapsed();
            assert!(took >= Duration::from_secs(2));
            assert!(
                took < Duration::from_millis(2500),
                "2 s sleep took {took:?}"
            );
            assert!(futures_lite::future::poll_once(&mut long).await.is_none());
        });
    }

    #[test]
    fn coarse_sleeps_dropped_before_their_deadline_give_their_slot_back() {
        // 1,000 kept-alive connections each wait for a request head: their sleeps are
        // polled once and dropped when the request comes. The table must not grow with
        // every one of them.
        block_on(async {
            for _ in 0..3 {
                let mut sleeps: Vec<_> = (0..1000)
                    .map(|_| coarse::sleep(Duration::from_secs(600)))
                    .collect();
                for s in &mut sleeps {
                    assert!(futures_lite::future::poll_once(s).await.is_none());
                }
                assert!(coarse::slots().0 >= 1000);
                drop(sleeps);
            }
        });
        // Other tests' sleeps may be in the table at the same time, never 1,000 of them.
        let (in_use, len) = coarse::slots();
        assert!(in_use < 1000, "{in_use} slots still in use");
        assert!(
            len < 2000,
            "the table grew to {len} slots for 3 x 1,000 sleeps"
        );
    }

    #[test]
    fn a_waker_that_panics_does_not_stop_the_timer_thread() {
        struct Panics;
        impl std::task::Wake for Panics {
            fn wake(self: std::sync::Arc<Self>) {
                panic!("a waker that panics (expected by this test)");
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Panics));
        let mut cx = Context::from_waker(&waker);
        let mut doomed = coarse::sleep(Duration::from_millis(100));
        assert!(Pin::new(&mut doomed).poll(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(400));
        // The thread has woken (and caught) it; later sleeps still end, on time (the
        // reactor timeout would also end it, 5 s late: `timeout` polls it first).
        let start = Instant::now();
        let ended = block_on(timeout(
            Duration::from_secs(5),
            coarse::sleep(Duration::from_millis(20)),
        ));
        let took = start.elapsed();
        assert_eq!(ended, Ok(()));
        assert!(took < Duration::from_secs(1), "20 ms sleep took {took:?}");
        assert!(Pin::new(&mut doomed).poll(&mut cx).is_ready());
    }

    #[test]
    fn read_appending_keeps_only_what_was_read() {
        let mut buf = b"ab".to_vec();
        let mut src = futures_lite::io::Cursor::new(b"cdef".to_vec());
        assert_eq!(
            block_on(read_appending(&mut src, &mut buf, 3)).ok(),
            Some(3)
        );
        assert_eq!(buf, b"abcde"[..]);
        assert_eq!(
            block_on(read_appending(&mut src, &mut buf, 8)).ok(),
            Some(1)
        );
        assert_eq!(buf, b"abcdef"[..]);
        assert_eq!(
            block_on(read_appending(&mut src, &mut buf, 8)).ok(),
            Some(0)
        );
        assert_eq!(buf, b"abcdef"[..]);
        // Dropped before its read ends (it lost a race): nothing added.
        let mut never = Never;
        let lost = block_on(race(
            map(read_appending(&mut never, &mut buf, 8), Some),
            map(sleep(Duration::from_millis(10)), |()| None),
        ));
        assert!(lost.is_none());
        assert_eq!(buf, b"abcdef"[..]);
    }

    /// A reader that never has data.
    struct Never;

    impl AsyncRead for Never {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }

    #[test]
    fn map_applies_its_function_once_to_the_output() {
        assert_eq!(block_on(map(heavy(2), |n| n * 6)), 42);
        assert_eq!(
            block_on(race(map(heavy(5), |_| 1), map(heavy(0), |_| 2))),
            2
        );
    }

    #[test]
    fn buffered_reads_hand_back_every_byte_in_order_whatever_the_read_sizes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut conn = Buffered::new(futures_lite::io::Cursor::new(data.clone()));
        let got = block_on(async {
            let mut got = Vec::new();
            // Small record-sized pieces, a read larger than the buffer, then the rest.
            for size in [8usize, 5, 3, 8, 1, 40_000, 7, 65_536, 1024].iter().cycle() {
                let mut buf = vec![0u8; *size];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        assert_eq!(got, data);
    }

    /// State letter of `pid` in /proc ('Z' for a zombie), or None once it is gone.
    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .and_then(|rest| rest.chars().next())
    }

    /// Starts `program` with `args`, stdin on /dev/null and stdout on a pipe; returns
    /// the child and the pipe's reading end.
    fn piped(program: &str, args: &[&str]) -> (std::process::Child, std::os::fd::OwnedFd) {
        let mut std_child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = std_child.stdout.take().expect("piped stdout");
        (std_child, out.into())
    }

    /// Starts `sh -c SCRIPT` with stdout on a pipe and hands it to [`child`].
    fn sh(script: &str) -> (child::Child, child::Stdout) {
        let (std_child, out) = piped("/bin/sh", &["-c", script]);
        let pid = i32::try_from(std_child.id()).expect("pid");
        // std's Child neither kills nor waits when dropped: the pid is ours to adopt.
        let child = child::Child::adopt(pid);
        let out = child::stdout(out).expect("on a poller");
        (child, out)
    }

    #[test]
    fn child_status_waits_for_a_child_that_closed_its_output_but_still_runs() {
        // stdout ends at once; the exit comes 300 ms later, past the first waitpid.
        let started = Instant::now();
        let status = block_on(async {
            let (mut child, mut out) = sh("exec >&-; sleep 0.3; exit 3");
            let mut rest = Vec::new();
            out.read_to_end(&mut rest).await?;
            child.status().await
        })
        .expect("status");
        assert_eq!(status.code(), Some(3));
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn a_childs_output_in_pieces_is_read_to_its_end_from_the_edge_poller() {
        // Each piece comes after the read before it found the pipe empty (a short
        // read): only the edge of the next write can wake it.
        let got = block_on(async {
            let (mut child, mut out) = sh("printf a; sleep 0.1; printf bc; sleep 0.1; printf d");
            assert!(out.on_edge(), "the pipe is not on the edge poller");
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                let n = timeout(Duration::from_secs(5), out.read(&mut buf))
                    .await
                    .expect("a read missed its wake-up")
                    .expect("read");
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            child.status().await.expect("status");
            all
        });
        assert_eq!(got, b"abcd");
    }

    #[test]
    fn pipe_reads_append_only_what_was_read() {
        block_on(async {
            let (mut child, mut out) = sh("sleep 0.2; printf hello");
            let mut buf = b"xy".to_vec();
            // Cut off before the output comes: nothing added.
            let early = timeout(
                Duration::from_millis(50),
                read_pipe_appending(&mut out, &mut buf, 8192),
            )
            .await;
            assert!(early.is_err(), "read before the child wrote: {early:?}");
            assert_eq!(buf, b"xy");
            let n = timeout(
                Duration::from_secs(5),
                read_pipe_appending(&mut out, &mut buf, 3),
            )
            .await
            .expect("the output was not seen")
            .expect("read");
            assert_eq!((n, &buf[..]), (3, &b"xyhel"[..]));
            let mut rest = 0;
            loop {
                let n = timeout(
                    Duration::from_secs(5),
                    read_pipe_appending(&mut out, &mut buf, 8192),
                )
                .await
                .expect("the end was not seen")
                .expect("read");
                if n == 0 {
                    break;
                }
                rest += n;
            }
            assert_eq!((rest, &buf[..]), (2, &b"xyhello"[..]));
            child.status().await.expect("status");
        });
    }

    #[test]
    fn output_and_exit_before_the_pipe_is_registered_are_both_seen() {
        // The child has written and exited before its pipe is added: the addition
        // itself must report both (the first read of a new pipe waits for an edge),
        // and after the data the end of the stream must still come.
        let (mut std_child, out) = piped("/bin/sh", &["-c", "printf hello"]);
        assert!(std_child.wait().expect("wait").success());
        let mut out = child::stdout(out).expect("pipe");
        assert!(out.on_edge(), "the pipe is not on the edge poller");
        block_on(async {
            let mut buf = [0u8; 64];
            let n = timeout(Duration::from_secs(5), out.read(&mut buf))
                .await
                .expect("the output was not seen")
                .expect("read");
            assert_eq!(&buf[..n], b"hello");
            let end = timeout(Duration::from_secs(5), out.read(&mut buf)).await;
            assert!(matches!(end, Ok(Ok(0))), "the end of the output was lost");
        });
    }

    #[test]
    fn packets_queued_in_a_pipe_are_all_read_without_a_new_write() {
        // A script may put its stdout in packet mode: a read then returns one write
        // while more are queued, so a short read must not be taken for an empty pipe.
        // The child writes two packets and then waits; both must be read before it
        // exits (at 5 s).
        let (std_child, out) = piped(
            "python3",
            &[
                "-c",
                "import fcntl, os, sys, time\n\
                 fl = fcntl.fcntl(1, fcntl.F_GETFL)\n\
                 fcntl.fcntl(1, fcntl.F_SETFL, fl | os.O_DIRECT)\n\
                 os.write(1, b'abc'); os.write(1, b'def'); time.sleep(5)",
            ],
        );
        let pid = i32::try_from(std_child.id()).expect("pid");
        let child = child::Child::adopt(pid);
        let mut out = child::stdout(out).expect("pipe");
        let got = block_on(async {
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            while all.len() < 6 {
                match timeout(Duration::from_secs(3), out.read(&mut buf)).await {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                    Ok(Err(e)) => panic!("read: {e}"),
                }
            }
            all
        });
        drop(child);
        assert_eq!(got, b"abcdef", "a queued packet was left unread");
    }

    #[test]
    fn writing_to_a_child_that_stopped_reading_fails_instead_of_hanging() {
        // The child reads 10 bytes and exits; the pipe fills, the write waits for room,
        // and the reader's exit (EPOLLERR on the writing end) must wake it to fail.
        let mut std_child = std::process::Command::new("/bin/sh")
            .args(["-c", "head -c 10 >/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn sh");
        let input = std_child.stdin.take().expect("piped stdin");
        let mut input = child::stdin(std::os::fd::OwnedFd::from(input)).expect("pipe");
        assert!(input.on_edge(), "the pipe is not on the edge poller");
        let r = block_on(timeout(
            Duration::from_secs(10),
            input.write_all(&vec![b'x'; 4 << 20]),
        ));
        let e = r
            .expect("the write hung")
            .expect_err("4 MiB went into a pipe nobody reads");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(std_child.wait().expect("wait").success());
    }

    #[test]
    fn a_child_dropped_while_running_is_killed_and_reaped() {
        let pid = block_on(async {
            let (child, out) = sh("exec sleep 30");
            let pid = child.id();
            drop((child, out));
            // Its reaping task runs on the executor; give it a moment.
            for _ in 0..100 {
                if proc_state(pid).is_none() {
                    break;
                }
                sleep(Duration::from_millis(20)).await;
            }
            pid
        });
        assert_eq!(proc_state(pid), None, "pid {pid} left behind");
    }
}
