//! Managed FastCGI children, the way php-fpm, mod_fcgid and spawn-fcgi + multiwatch do
//! it: portico creates one listening Unix socket per child in a private runtime
//! directory, spawns the command with that socket on fd 0 (the FastCGI convention,
//! FCGI-2.2-2; `php-cgi` works as is), and sends one request at a time to an idle child
//! over a kept connection.
//!
//! Supervision: `static` (always `processes`), `dynamic` (between `min_spare` and
//! `max_spare` idle children) and `ondemand` (children start when needed and stop after
//! `idle_timeout`), like php-fpm's `pm`. A child is recycled after `max_requests`; one
//! that exits on its own with status 0 after serving (php-cgi after
//! PHP_FCGI_MAX_REQUESTS) is normal recycling, not a crash. Crashed children are
//! respawned with a backoff; past `crash_limit` crashes in a minute the pool pauses and
//! answers 503. A request running past `request_terminate_timeout` kills its child.
//! Children's stderr goes to the log; shutdown sends SIGTERM, then SIGKILL after a grace.
//!
//! Must not import listen or dispatch.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BackendError;
use super::fastcgi::FcgiClient;
use super::queue::FairPool;
use crate::config::{Children, Gateway, PoolMode};
use crate::procs;
use crate::rt::{self, AsyncReadExt};
use crate::stats::{PoolStats, Stats};

/// A pool of managed children.
pub(crate) struct ChildPool {
    name: String,
    spec: Children,
    stats: Arc<PoolStats>,
    global: Arc<Stats>,
    dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    state: Mutex<State>,
    /// Idle children, handed to waiting requests first-come first-served.
    idle: FairPool<Idle>,
    stopping: AtomicBool,
}

struct State {
    children: HashMap<u64, Child>,
    next_id: u64,
    crashes: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

struct Child {
    pid: i32,
    requests: u64,
    last_used: Instant,
    retiring: bool,
    busy: bool,
}

/// An idle child with its kept connection, once it has one. A child gets its first
/// connection when it first serves: php-cgi closes an accepted connection on which no
/// request arrives within 5 seconds.
struct Idle {
    id: u64,
    client: Option<FcgiClient>,
}

/// A child checked out for one request.
pub(crate) struct Lease {
    pool: Arc<ChildPool>,
    id: u64,
    client: Option<FcgiClient>,
    released: bool,
}

impl ChildPool {
    /// Creates the runtime directory and starts the supervisor (which spawns the
    /// initial children).
    pub(crate) fn start(
        name: &str,
        settings: Arc<Gateway>,
        stats: Arc<PoolStats>,
        global: Arc<Stats>,
    ) -> Arc<ChildPool> {
        let spec = settings.children.clone().unwrap_or_else(|| Children {
            command: vec!["false".into()],
            mode: PoolMode::Static,
            processes: 0,
            min_spare: 0,
            max_spare: 0,
            idle_timeout: Duration::from_secs(10),
            max_requests: 0,
            terminate_timeout: None,
            env: Vec::new(),
            pass_env: Vec::new(),
            cwd: None,
            crash_limit: 1,
        });
        // A private runtime directory (0700) for the children's sockets.
        let tmp = tempfile::Builder::new()
            .prefix("portico-fcgi-")
            .tempdir()
            .ok();
        let dir = tmp
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let pool = Arc::new(ChildPool {
            name: name.to_owned(),
            spec,
            stats,
            global,
            dir,
            _dir: tmp,
            state: Mutex::new(State {
                children: HashMap::new(),
                next_id: 1,
                crashes: VecDeque::new(),
                paused_until: None,
            }),
            idle: FairPool::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let p = pool.clone();
        drop(rt::spawn(async move { p.supervise().await }));
        pool
    }

    /// An idle child for one request: an idle one, a new one if the mode allows, or the
    /// next one to become idle within `queue_timeout` (503 past it).
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        queue_timeout: Duration,
    ) -> Result<Lease, BackendError> {
        if let Some(until) = self.paused() {
            return Err(BackendError::Busy(format!(
                "{}: children crash-looping; respawning paused for {:?}",
                self.name,
                until.saturating_duration_since(Instant::now())
            )));
        }
        // Requests already waiting come first: the fast path only when nobody waits.
        while let Some(idle) = self.idle.try_take() {
            if let Some(lease) = self.lease(idle) {
                return Ok(lease);
            }
        }
        if self.spec.mode != PoolMode::Static && self.count() < self.spec.processes {
            if let Some(idle) = self.spawn_child().await {
                if let Some(lease) = self.lease(idle) {
                    return Ok(lease);
                }
            }
        } else if self.count() >= self.spec.processes {
            self.stats.max_children_reached.fetch_add(1, Relaxed);
        }
        let queued = super::gateway::Queued::new(&self.stats);
        let deadline = Instant::now() + queue_timeout;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.idle.take(left).await {
                Ok(idle) => {
                    if let Some(lease) = self.lease(idle) {
                        break Some(lease);
                    }
                }
                Err(rt::Elapsed) => break None,
            }
        };
        drop(queued);
        got.ok_or_else(|| {
            self.stats.rejected.fetch_add(1, Relaxed);
            BackendError::Busy(format!(
                "{}: every child stayed busy for {queue_timeout:?} (queue_timeout)",
                self.name
            ))
        })
    }

    /// Stops every child: SIGTERM, then SIGKILL after two seconds.
    pub(crate) async fn shutdown(&self) {
        self.stopping.store(true, Relaxed);
        // Close the kept connections of idle children first: a child blocked reading its
        // connection (php-cgi) then sees EOF and exits on its own.
        drop(self.idle.drain_free());
        let pids: Vec<i32> = self
            .state
            .lock()
            .map(|s| s.children.values().map(|c| c.pid).collect())
            .unwrap_or_default();
        for &pid in &pids {
            signal_group(pid, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end && self.count() > 0 {
            rt::sleep(Duration::from_millis(50)).await;
        }
        for &pid in &pids {
            procs::kill_group(pid);
        }
    }

    fn lease(self: &Arc<Self>, idle: Idle) -> Option<Lease> {
        let mut st = self.state.lock().ok()?;
        let child = st.children.get_mut(&idle.id)?;
        if child.retiring {
            return None;
        }
        child.busy = true;
        child.last_used = Instant::now();
        self.stats.idle.fetch_sub(1, Relaxed);
        self.stats.busy.fetch_add(1, Relaxed);
        self.stats.in_flight.fetch_add(1, Relaxed);
        Some(Lease {
            pool: self.clone(),
            id: idle.id,
            client: idle.client,
            released: false,
        })
    }

    fn count(&self) -> usize {
        self.state.lock().map(|s| s.children.len()).unwrap_or(0)
    }

    fn idle_count(&self) -> usize {
        self.state
            .lock()
            .map(|s| {
                s.children
                    .values()
                    .filter(|c| !c.busy && !c.retiring)
                    .count()
            })
            .unwrap_or(0)
    }

    fn paused(&self) -> Option<Instant> {
        let st = self.state.lock().ok()?;
        st.paused_until.filter(|u| *u > Instant::now())
    }

    /// Spawns one child and connects to it; returns it as idle (not yet queued).
    async fn spawn_child(self: &Arc<Self>) -> Option<Idle> {
        if self.stopping.load(Relaxed) || self.paused().is_some() {
            return None;
        }
        let id = {
            let mut st = self.state.lock().ok()?;
            let id = st.next_id;
            st.next_id += 1;
            id
        };
        let path = self.dir.join(format!("child-{id}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                log::error!(target: "portico::backend::children", "{}: cannot create {}: {e}", self.name, path.display());
                return None;
            }
        };
        let mut cmd = std::process::Command::new(&self.spec.command[0]);
        cmd.args(&self.spec.command[1..])
            .env_clear()
            .process_group(0);
        for name in &self.spec.pass_env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: `default_signals` makes only async-signal-safe calls, as a hook that
        // runs between fork and exec must.
        unsafe {
            cmd.pre_exec(procs::default_signals);
        }
        // Stdio is set on the async command: it would replace what the std command says.
        let mut child = match rt::process::Command::from(cmd)
            .stdin(rt::process::Stdio::from(OwnedFd::from(listener)))
            .stdout(rt::process::Stdio::null())
            .stderr(rt::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                log::error!(target: "portico::backend::children", "{}: cannot start {:?}: {e}", self.name, self.spec.command);
                self.crashed();
                return None;
            }
        };
        let pid = child.id() as i32;
        procs::register(pid);
        self.stats.spawned.fetch_add(1, Relaxed);
        let guard = self.global.child_started();
        log::info!(target: "portico::backend::children", "{}: started child {pid} ({})", self.name, self.spec.command.join(" "));
        if let Some(stderr) = child.stderr.take() {
            let name = format!("{} child {pid}", self.name);
            drop(rt::spawn(log_stderr(stderr, name)));
        }
        if let Ok(mut st) = self.state.lock() {
            st.children.insert(
                id,
                Child {
                    pid,
                    requests: 0,
                    last_used: Instant::now(),
                    retiring: false,
                    busy: false,
                },
            );
        }
        self.stats.idle.fetch_add(1, Relaxed);
        let pool = self.clone();
        drop(rt::spawn(async move {
            let status = child.status().await;
            procs::unregister(pid);
            drop(guard);
            let _ = std::fs::remove_file(pool.dir.join(format!("child-{id}.sock")));
            pool.exited(id, status.ok());
        }));
        Some(Idle { id, client: None })
    }

    fn exited(self: &Arc<Self>, id: u64, status: Option<std::process::ExitStatus>) {
        let Some(child) = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.children.remove(&id))
        else {
            return;
        };
        if child.busy {
            self.stats.busy.fetch_sub(1, Relaxed);
        } else {
            self.stats.idle.fetch_sub(1, Relaxed);
        }
        let ok = status.is_some_and(|s| s.success());
        if child.retiring || self.stopping.load(Relaxed) {
            log::debug!(target: "portico::backend::children", "{}: child {} stopped", self.name, child.pid);
        } else if ok && child.requests > 0 {
            // php-cgi exits by itself after PHP_FCGI_MAX_REQUESTS: planned recycling.
            self.stats.recycled.fetch_add(1, Relaxed);
            log::info!(target: "portico::backend::children", "{}: child {} exited after {} requests (its own limit); replacing it", self.name, child.pid, child.requests);
        } else {
            log::warn!(target: "portico::backend::children", "{}: child {} exited unexpectedly ({}) after {} requests", self.name, child.pid, status.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into()), child.requests);
            self.crashed();
        }
    }

    fn crashed(&self) {
        self.stats.crashed.fetch_add(1, Relaxed);
        if let Ok(mut st) = self.state.lock() {
            let now = Instant::now();
            st.crashes.push_back(now);
            while st
                .crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                st.crashes.pop_front();
            }
            if st.crashes.len() as u32 >= self.spec.crash_limit
                && st.paused_until.is_none_or(|u| u < now)
            {
                st.paused_until = Some(now + Duration::from_secs(30));
                log::error!(target: "portico::backend::children", "{}: {} crashes within a minute: not respawning for 30 s", self.name, st.crashes.len());
            }
        }
    }

    /// Marks a child to stop and signals it (SIGTERM, then SIGKILL a second later).
    fn retire(&self, id: u64, why: &str) {
        let pid = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let Some(c) = st.children.get_mut(&id) else {
                return;
            };
            if c.retiring {
                return;
            }
            c.retiring = true;
            c.pid
        };
        log::debug!(target: "portico::backend::children", "{}: retiring child {pid}: {why}", self.name);
        signal_group(pid, libc::SIGTERM);
        drop(rt::spawn(async move {
            rt::sleep(Duration::from_secs(1)).await;
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                procs::kill_group(pid);
            }
        }));
    }

    /// Keeps the pool at its size; retires idle children the mode does not need.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stopping.load(Relaxed) {
                return;
            }
            let want_spawn = match self.spec.mode {
                PoolMode::Static => self.count() < self.spec.processes,
                PoolMode::Dynamic => {
                    self.idle_count() < self.spec.min_spare && self.count() < self.spec.processes
                }
                PoolMode::Ondemand => false,
            };
            if want_spawn && self.paused().is_none() {
                match self.spawn_child().await {
                    Some(idle) => {
                        backoff = Duration::from_millis(100);
                        self.idle.put(idle);
                        continue;
                    }
                    None => {
                        rt::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            // Idle children past what the mode keeps.
            let keep = match self.spec.mode {
                PoolMode::Static => usize::MAX,
                PoolMode::Dynamic => self.spec.max_spare,
                PoolMode::Ondemand => 0,
            };
            if self.idle_count() > keep {
                self.trim_idle(keep);
            }
            // Coarse (as the orphan reaper's): this sleep is always pending.
            rt::coarse::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Retires idle children idle longer than `idle_timeout` while more than `keep` are
    /// idle.
    fn trim_idle(&self, keep: usize) {
        let held = self.idle.drain_free();
        let now = Instant::now();
        let mut idle_now = held.len();
        for idle in held {
            let stale = self
                .state
                .lock()
                .ok()
                .and_then(|s| {
                    s.children
                        .get(&idle.id)
                        .map(|c| now.duration_since(c.last_used) >= self.spec.idle_timeout)
                })
                .unwrap_or(true);
            if idle_now > keep && stale {
                idle_now -= 1;
                self.retire(idle.id, "idle");
            } else {
                self.idle.put(idle);
            }
        }
    }
}

impl Lease {
    /// The kept connection, or a new one to the child's socket.
    pub(crate) async fn client(&mut self) -> Result<FcgiClient, BackendError> {
        if let Some(c) = self.client.take() {
            return Ok(c);
        }
        self.connect().await
    }

    /// A new connection to the child's socket (its kept one was closed).
    pub(crate) async fn connect(&self) -> Result<FcgiClient, BackendError> {
        let path = self.pool.dir.join(format!("child-{}.sock", self.id));
        match rt::timeout(Duration::from_secs(5), rt::Connection::unix(&path)).await {
            Ok(Ok(c)) => Ok(super::fastcgi::new_client(c)),
            Ok(Err(e)) => Err(BackendError::BadGateway(format!(
                "{}: cannot connect to child: {e}",
                self.pool.name
            ))),
            Err(rt::Elapsed) => Err(BackendError::BadGateway(format!(
                "{}: child does not accept",
                self.pool.name
            ))),
        }
    }

    /// The pool's `request_terminate_timeout`.
    pub(crate) fn terminate_timeout(&self) -> Option<Duration> {
        self.pool.spec.terminate_timeout
    }

    /// Kills the child (its request ran too long).
    pub(crate) fn kill(&self, why: &str) {
        log::warn!(target: "portico::backend::children", "{}: killing child: {why}", self.pool.name);
        let pid = self.pool.state.lock().ok().and_then(|mut s| {
            s.children.get_mut(&self.id).map(|c| {
                c.retiring = true;
                c.pid
            })
        });
        if let Some(pid) = pid {
            procs::kill_group(pid);
        }
    }

    /// Gives the child back: with its connection if the exchange completed (it serves
    /// again unless it reached `max_requests`), or without (it is retired).
    pub(crate) fn release(mut self, client: Option<FcgiClient>) {
        self.released = true;
        let pool = self.pool.clone();
        pool.stats.in_flight.fetch_sub(1, Relaxed);
        let (retire, requests) = match pool.state.lock() {
            Ok(mut st) => match st.children.get_mut(&self.id) {
                Some(c) => {
                    c.busy = false;
                    c.requests += 1;
                    c.last_used = Instant::now();
                    pool.stats.busy.fetch_sub(1, Relaxed);
                    pool.stats.idle.fetch_add(1, Relaxed);
                    let max = pool.spec.max_requests;
                    (
                        client.is_none() || c.retiring || (max > 0 && c.requests >= max),
                        c.requests,
                    )
                }
                None => (true, 0),
            },
            Err(_) => (true, 0),
        };
        match client {
            Some(client) if !retire => {
                pool.idle.put(Idle {
                    id: self.id,
                    client: Some(client),
                });
            }
            Some(_) => {
                pool.stats.recycled.fetch_add(1, Relaxed);
                pool.retire(
                    self.id,
                    &format!("served {requests} requests (max_requests)"),
                );
            }
            None => pool.retire(self.id, "its connection failed"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            self.pool.stats.in_flight.fetch_sub(1, Relaxed);
            self.pool.retire(self.id, "request abandoned");
        }
    }
}

fn signal_group(pid: i32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill(2) on a process group we created; no memory involved.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

async fn log_stderr(mut stderr: rt::process::ChildStderr, name: String) {
    let mut buf = vec![0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                log::warn!(target: "portico::backend::children", "{name}: {}", String::from_utf8_lossy(&line));
                line.clear();
            } else if line.len() < 4096 {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        log::warn!(target: "portico::backend::children", "{name}: {}", String::from_utf8_lossy(&line));
    }
}
