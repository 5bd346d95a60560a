//! Edge-triggered readiness for accepted connections and CGI scripts' pipes: registered
//! once with a poller of their own, never re-armed.
//!
//! async-io registers every source one-shot: each wait for a socket to become readable
//! re-arms it with an `epoll_ctl`, and a kept-alive HTTP or FastCGI connection waits
//! once per request. That call was 4.3% of the gateway's CPU in a kept-alive
//! `GET /echo` run (perf), plus async-io's bookkeeping around it. Here an accepted
//! socket (or a CGI script's pipe, [`super::Pipe`]) is added once, edge-triggered
//! (`EPOLLET`), to a second epoll instance, whose events the worker threads take in
//! batches ([`Waiter`]; an idle worker sleeps in its `epoll_wait`, `rt::exec`), so no
//! re-arm is paid per request, and nothing is paid at the end (closing the descriptor
//! takes it out).
//!
//! Readiness is a pair of counters per socket, raised by the workers for every event
//! (reading: `EPOLLIN`, `EPOLLRDHUP`, `EPOLLPRI`; writing: `EPOLLOUT`; both:
//! `EPOLLERR`, `EPOLLHUP`). A side that saw `EAGAIN` (or a short read) at count `n`
//! waits until the count moves past `n`: the kernel reports an edge for every arrival
//! after the data is queued, so an arrival during or after that read raises the count.
//! The count is read before the system call, so an event between the two only causes
//! one more try. A short read is taken for an empty queue only on TCP (not on pipes,
//! which a script can put in packet mode, where a read returns one write), and only
//! while no close, error or urgent data has been seen on the socket: their edge may already be
//! counted while what they make readable (the end of the stream, the bytes past the
//! urgent mark) is still to be read. On a Unix socket a read also stops after a message
//! that carried descriptors (`SCM_RIGHTS`), with more queued behind it: there every
//! read that did not fail with `EAGAIN` is followed by another. A write is always tried
//! first; `EPOLLOUT` is asked for only once a write has had to wait (the `epoll_ctl`
//! that adds it reports a socket already writable at once), so until then the kernel
//! does not wake this poller for every acknowledgement.
//!
//! One reader and one writer at a time per socket: its clones share one waker per side,
//! and registering a waker replaces the one before without waking it. That is how the
//! listeners use them: hyper owns its connection; the SCGI listener reads the head and
//! then the body, and writes the reply after; the FastCGI listener has one reading task,
//! and its two writers (the responding task's direct writes and the writer task) take
//! turns under the connection's lock (`writer_idle` in `listen/fastcgi.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;

/// Events taken from the poller per system call.
const BATCH: usize = 256;

/// One side's state in one handle: the count at which it last found nothing to do.
#[derive(Default, Clone, Copy)]
pub(super) struct Side {
    idle_at: Option<u64>,
}

impl Side {
    /// For a descriptor just registered that is known to have had nothing to read
    /// before (a new pipe): the first read waits for an edge. Registering a descriptor
    /// that is already readable reports it at once, so nothing is missed.
    pub(super) fn fresh() -> Side {
        Side { idle_at: Some(0) }
    }
}

/// What the workers and the handles share about one socket.
struct Readiness {
    read_seq: AtomicU64,
    write_seq: AtomicU64,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// `EPOLLOUT` has been added to the registration.
    out_armed: AtomicBool,
    /// A short read does not mean an empty queue: a Unix socket, or a close, error or
    /// urgent data was seen. Set before the count is raised, never cleared.
    no_shortcut: AtomicBool,
}

/// A socket registered with the edge poller; deregistered when dropped.
pub(super) struct Socket<T> {
    sock: T,
    slot: usize,
    ready: Arc<Readiness>,
    poller: &'static Poller,
}

/// The second epoll instance, the table of its sockets (slot = epoll data), and the
/// eventfd that wakes the worker sleeping in it.
struct Poller {
    epfd: OwnedFd,
    table: Mutex<Table>,
    wake: OwnedFd,
}

type Table = super::super::Slots<Arc<Readiness>>;

/// The poller, set up (and the workers started) on first use; `None` when that failed,
/// and connections then use async-io.
fn poller() -> Option<&'static Poller> {
    static POLLER: OnceLock<Option<&'static Poller>> = OnceLock::new();
    *POLLER.get_or_init(|| match start() {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!(target: "portico::rt", "edge-triggered poller unavailable ({e}); connections use async-io's readiness");
            None
        }
    })
}

/// Creates the poller (for the life of the process) and starts the workers.
fn start() -> io::Result<&'static Poller> {
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain system call; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nothing else.
    let wake = unsafe { OwnedFd::from_raw_fd(fd) };
    // Level-triggered, and read only by the worker sleeping in the poller: an edge
    // would go to whichever worker's `epoll_wait` came first, and one running tasks
    // (looking in with a zero timeout) would take the wake-up meant for the sleeper.
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: WAKE_KEY,
    };
    // SAFETY: `ev` is valid for the call; both descriptors are ours.
    if unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            &mut ev,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let poller: &'static Poller = Box::leak(Box::new(Poller {
        epfd,
        table: Mutex::new(Table::new()),
        wake,
    }));
    // The worker threads take this poller's events ([`Waiter`]); a socket registered
    // from outside them (a test's `block_on`) needs them running too.
    super::super::exec::ensure_started();
    Ok(poller)
}

impl Poller {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table holds no invariant a panicking holder could break halfway.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, slot: usize) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: slot as u64,
        };
        // SAFETY: `ev` is valid for the call; `fd` is a socket the caller owns.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;
const WRITE_EVENTS: u32 = READ_EVENTS | libc::EPOLLOUT as u32;

/// The epoll data of the poller's wake-up eventfd (never a table slot).
const WAKE_KEY: u64 = u64::MAX;

/// Wakes the worker sleeping in the poller's `epoll_wait` (if none is, the next one to
/// sleep there returns at once, harmlessly): a write to the poller's eventfd, which
/// stays readable until that worker reads it ([`Waiter::wait`]).
pub(in crate::rt) fn wake_poller() {
    if let Some(p) = poller() {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes we own to the poller's eventfd, which lives as long
        // as the poller (the process).
        unsafe {
            libc::write(p.wake.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}

/// Whether there is an edge poller (workers then sleep in it; without one they park).
pub(in crate::rt) fn available() -> bool {
    poller().is_some()
}

/// A worker thread's view of the poller: it takes events from it, and sleeps in its
/// `epoll_wait` while it is the worker that does (`rt::exec`).
pub(in crate::rt) struct Waiter {
    poller: &'static Poller,
    events: Vec<libc::epoll_event>,
    wakers: Vec<Waker>,
}

impl Waiter {
    /// A waiter on the poller; `None` when there is no poller (the worker then parks).
    pub(in crate::rt) fn new() -> Option<Waiter> {
        let poller = poller()?;
        Some(Waiter {
            poller,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
            wakers: Vec::new(),
        })
    }

    /// Takes the poller's events (waiting for one for at most `wait`, rounded up to a
    /// millisecond; `None`: as long as it takes) and wakes the tasks of the sockets they
    /// are for.
    pub(in crate::rt) fn dispatch(&mut self, wait: Option<std::time::Duration>) {
        self.wait(wait, false);
        self.wake_collected();
    }

    /// Takes the poller's events as [`Waiter::dispatch`] does, keeping the wakers of
    /// their tasks for [`Waiter::wake_collected`]. `sleeper`: the caller is the worker
    /// that sleeps in the poller, and reads the wake-up eventfd when it fires (the
    /// others leave it for that worker).
    pub(in crate::rt) fn wait(&mut self, wait: Option<std::time::Duration>, sleeper: bool) {
        let timeout = match wait {
            None => -1,
            Some(d) if d.is_zero() => 0,
            Some(d) => {
                libc::c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
            }
        };
        // SAFETY: `events` has room for BATCH entries.
        let n = unsafe {
            libc::epoll_wait(
                self.poller.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                BATCH as libc::c_int,
                timeout,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // Not expected (the descriptor and buffer are ours); paced, not spun.
                log::error!(target: "portico::rt", "edge poller: epoll_wait: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return;
        }
        let n = usize::try_from(n).unwrap_or(0);
        {
            let table = self.poller.table();
            for ev in self.events.iter().take(n) {
                let bits = ev.events;
                let slot = ev.u64;
                if slot == WAKE_KEY {
                    if sleeper {
                        let mut count = [0u8; 8];
                        // SAFETY: reads 8 bytes into our buffer from the poller's
                        // eventfd (non-blocking: nothing to read is EAGAIN, harmless).
                        unsafe {
                            libc::read(self.poller.wake.as_raw_fd(), count.as_mut_ptr().cast(), 8);
                        }
                    }
                    continue;
                }
                let Some(r) = usize::try_from(slot).ok().and_then(|i| table.get(i)) else {
                    continue;
                };
                let both = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
                if bits & ((libc::EPOLLRDHUP | libc::EPOLLPRI) as u32 | both) != 0 {
                    r.no_shortcut.store(true, Ordering::Release);
                }
                if bits & ((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32 | both) != 0 {
                    r.read_seq.fetch_add(1, Ordering::AcqRel);
                    self.wakers.extend(r.read_waker.take());
                }
                if bits & (libc::EPOLLOUT as u32 | both) != 0 {
                    r.write_seq.fetch_add(1, Ordering::AcqRel);
                    self.wakers.extend(r.write_waker.take());
                }
            }
        }
    }

    /// Wakes the tasks whose sockets [`Waiter::wait`] found ready; whether there were
    /// any.
    pub(in crate::rt) fn wake_collected(&mut self) -> bool {
        let any = !self.wakers.is_empty();
        // Woken outside the table's lock: a waker may run anything. One that panics
        // must not take the worker's dispatching with it.
        for w in self.wakers.drain(..) {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err() {
                log::error!(target: "portico::rt", "edge poller: a waker panicked");
            }
        }
        any
    }
}

impl<T: AsFd> Socket<T> {
    /// Registers `sock` (non-blocking already); gives it back if the poller is
    /// unavailable or refuses it. `short_is_empty`: a short read means an empty queue
    /// (TCP; see the module doc).
    pub(super) fn new(sock: T, short_is_empty: bool) -> Result<Socket<T>, T> {
        let Some(poller) = poller() else {
            return Err(sock);
        };
        let ready = Arc::new(Readiness {
            read_seq: AtomicU64::new(0),
            write_seq: AtomicU64::new(0),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            out_armed: AtomicBool::new(false),
            no_shortcut: AtomicBool::new(!short_is_empty),
        });
        let slot = poller.table().insert(ready.clone());
        let fd = sock.as_fd().as_raw_fd();
        if let Err(e) = poller.ctl(libc::EPOLL_CTL_ADD, fd, READ_EVENTS, slot) {
            log::warn!(target: "portico::rt", "edge poller refused a descriptor ({e}); it uses async-io");
            release(poller, slot);
            return Err(sock);
        }
        Ok(Socket {
            sock,
            slot,
            ready,
            poller,
        })
    }

    /// Runs `op` (a write), or waits for the writing side's next edge when it would
    /// block. Always tried first: a write rarely has to wait, and a side state kept
    /// across calls could go stale (the FastCGI listener tries writes with a no-op waker).
    pub(super) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let seq = self.ready.write_seq.load(Ordering::Acquire);
            match op(&self.sock) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready.write_waker.register(cx.waker());
                    if !self.ready.out_armed.swap(true, Ordering::AcqRel) {
                        let fd = self.sock.as_fd().as_raw_fd();
                        if let Err(e) =
                            self.poller
                                .ctl(libc::EPOLL_CTL_MOD, fd, WRITE_EVENTS, self.slot)
                        {
                            self.ready.out_armed.store(false, Ordering::Release);
                            return Poll::Ready(Err(e));
                        }
                    }
                    if self.ready.write_seq.load(Ordering::Acquire) == seq {
                        return Poll::Pending;
                    }
                    // An edge since the attempt: try again.
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Runs `op`, a read of at most `len` bytes (not 0), or waits for the reading side's
    /// next edge when it would block.
    pub(super) fn poll_read_with(
        &self,
        side: &mut Side,
        cx: &mut Context<'_>,
        len: usize,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let seq = self.ready.read_seq.load(Ordering::Acquire);
            if side.idle_at == Some(seq) {
                self.ready.read_waker.register(cx.waker());
                if self.ready.read_seq.load(Ordering::Acquire) == seq {
                    return Poll::Pending;
                }
                continue;
            }
            match op(&self.sock) {
                Ok(n) => {
                    // Short: the receive queue is empty (as nginx assumes on epoll); the
                    // next read waits for an edge instead of calling `recv` for EAGAIN.
                    // Not once a close or urgent data was seen (see the module doc).
                    let short = n > 0 && n < len;
                    side.idle_at =
                        (short && !self.ready.no_shortcut.load(Ordering::Acquire)).then_some(seq);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => side.idle_at = Some(seq),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn release(poller: &Poller, slot: usize) {
    let old = poller.table().take(slot);
    drop(old);
}

impl<T> Socket<T> {
    pub(super) fn get_ref(&self) -> &T {
        &self.sock
    }
}

impl<T: AsFd> Socket<T>
where
    for<'a> &'a T: io::Read,
{
    /// Reads into `buf` (not empty), or waits for the reading side's next edge.
    pub(super) fn poll_read(
        &self,
        side: &mut Side,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.poll_read_with(side, cx, len, |sock| io::Read::read(&mut &*sock, buf))
    }
}

impl<T> Drop for Socket<T> {
    fn drop(&mut self) {
        // Closing the socket (after this) takes it out of the epoll set once no other
        // descriptor refers to it (a child between its fork and exec may hold one for a
        // moment: its events then find a free slot, or a reused one, and cause at most
        // a spurious wake-up); only the slot is given back here.
        release(self.poller, self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::TcpListener;
    use crate::rt;

    /// An accepted connection and the client's end.
    fn pair() -> (super::super::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let l = TcpListener::from_std(l).unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (s, _) = rt::block_on(l.accept()).unwrap();
        assert!(
            matches!(s.io, super::super::Io::Edge(..)),
            "not on the edge poller"
        );
        (s, client)
    }

    #[test]
    fn a_read_waits_for_data_sent_later_and_sees_the_close() {
        let (mut s, mut client) = pair();
        let start = Instant::now();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            client.write_all(b"hello").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            client.write_all(b" again").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(client);
        });
        let got = rt::block_on(async {
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                // Each read is short, so each next one waits for an edge.
                let n = rt::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .expect("a read missed its wake-up")
                    .unwrap();
                if n == 0 {
                    break all;
                }
                all.extend_from_slice(&buf[..n]);
            }
        });
        writer.join().unwrap();
        assert_eq!(got, b"hello again");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn data_and_the_close_sent_together_are_both_read() {
        // One edge counts both; the short read of the data must not be taken for an
        // empty queue, or the end of the stream is never seen.
        let (mut s, mut client) = pair();
        client.write_all(b"hello").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        rt::block_on(async {
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
            let r = rt::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            assert!(
                matches!(r, Ok(Ok(0))),
                "end of stream lost (timed out: {})",
                r.is_err()
            );
        });
    }

    #[test]
    fn a_panicking_waker_does_not_stop_the_poller() {
        struct Boom;
        impl std::task::Wake for Boom {
            fn wake(self: std::sync::Arc<Self>) {
                panic!("this waker panics (on purpose, in a test)");
            }
        }
        let (mut s, mut client) = pair();
        let waker = std::task::Waker::from(std::sync::Arc::new(Boom));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut buf = [0u8; 8];
        let polled =
            futures_lite::io::AsyncRead::poll_read(std::pin::Pin::new(&mut s), &mut cx, &mut buf);
        assert!(polled.is_pending());
        // The worker wakes the panicking waker for this.
        client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // A connection made after it is still served.
        let (mut s2, mut client2) = pair();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            client2.write_all(b"still here").unwrap();
        });
        let got = rt::block_on(async {
            let mut buf = [0u8; 64];
            let n = rt::timeout(Duration::from_secs(2), s2.read(&mut buf))
                .await
                .expect("the poller stopped")
                .unwrap();
            buf[..n].to_vec()
        });
        writer.join().unwrap();
        assert_eq!(got, b"still here");
    }

    #[test]
    fn unix_connections_are_on_the_poller_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = super::super::UnixListener::bind(&path);
        let l = rt::block_on(l).unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut s = rt::block_on(l.accept()).unwrap();
        assert!(
            matches!(s.io, super::super::Io::Edge(..)),
            "not on the edge poller"
        );
        client.write_all(b"ping").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let got = rt::block_on(async {
            let mut all = Vec::new();
            rt::timeout(Duration::from_secs(2), s.read_to_end(&mut all))
                .await
                .expect("a read missed its wake-up")
                .unwrap();
            s.write_all(b"pong").await.unwrap();
            all
        });
        assert_eq!(got, b"ping");
        drop(s);
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"pong");
    }

    #[test]
    fn a_write_waits_for_room_and_resumes_when_the_peer_reads() {
        let (mut s, mut client) = pair();
        const TOTAL: usize = 16 * 1024 * 1024;
        let reader = std::thread::spawn(move || {
            // Late, so the socket buffers fill and the writer has to wait.
            std::thread::sleep(Duration::from_millis(300));
            let mut n = 0;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match client.read(&mut buf).unwrap() {
                    0 => break n,
                    k => n += k,
                }
            }
        });
        let start = Instant::now();
        rt::block_on(async {
            let chunk = vec![7u8; 256 * 1024];
            for _ in 0..TOTAL / chunk.len() {
                rt::timeout(Duration::from_secs(10), s.write_all(&chunk))
                    .await
                    .expect("a write missed its wake-up")
                    .unwrap();
            }
            s.close().await.unwrap();
        });
        drop(s);
        assert_eq!(reader.join().unwrap(), TOTAL);
        // It had to wait for the late reader, and was woken when room came (a missed
        // wake-up shows as the 10-second bound, which also ends with the write done).
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn clones_read_and_write_at_once() {
        let (s, mut client) = pair();
        let start = Instant::now();
        let mut r = s.clone();
        let mut w = s;
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            for i in 0..100u32 {
                client.read_exact(&mut buf).unwrap();
                assert_eq!(u32::from_le_bytes(buf), i);
                client.write_all(&buf).unwrap();
            }
        });
        rt::block_on(async {
            let reads = async {
                let mut buf = [0u8; 4];
                for i in 0..100u32 {
                    r.read_exact(&mut buf).await.unwrap();
                    assert_eq!(u32::from_le_bytes(buf), i);
                }
            };
            let writes = async {
                for i in 0..100u32 {
                    w.write_all(&i.to_le_bytes()).await.unwrap();
                    // Paced, so the reader waits on each echo.
                    rt::sleep(Duration::from_millis(1)).await;
                }
            };
            rt::timeout(Duration::from_secs(10), rt::join(reads, writes))
                .await
                .expect("a side missed its wake-up");
        });
        echo.join().unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    /// A worker that takes an edge for a task that then holds it (here by blocking, as
    /// a long computation would) hands the poller over first: another worker takes the
    /// next connection's edge at once (the tests run at least two workers). Before, the
    /// poller woke that task from inside and the other workers stayed parked, so the
    /// second read waited for the first task to end.
    #[test]
    fn an_idle_worker_takes_the_poller_while_another_runs_a_long_task() {
        for round in 0..3 {
            let (mut s1, mut c1) = pair();
            let (mut s2, mut c2) = pair();
            let (tx, rx) = std::sync::mpsc::channel();
            let long = rt::spawn(async move {
                let mut b = [0u8; 1];
                assert_eq!(s1.read(&mut b).await.unwrap(), 1);
                std::thread::sleep(Duration::from_millis(250));
            });
            let quick = rt::spawn(async move {
                let mut b = [0u8; 1];
                assert_eq!(s2.read(&mut b).await.unwrap(), 1);
                tx.send(Instant::now()).unwrap();
            });
            // Both tasks wait for their edge; then the first one holds its worker.
            std::thread::sleep(Duration::from_millis(50));
            c1.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let sent = Instant::now();
            c2.write_all(b"y").unwrap();
            let took = rx.recv().unwrap().saturating_duration_since(sent);
            assert!(
                took < Duration::from_millis(150),
                "round {round}: the second edge waited {took:?} for the busy worker"
            );
            rt::block_on(long);
            rt::block_on(quick);
        }
    }
}
