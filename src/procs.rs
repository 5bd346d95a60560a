//! The registry of child process groups portico started, so that shutdown can kill
//! whatever is still running once the grace period is over. Backends register a group
//! when they spawn and unregister it once the child is reaped.
//!
//! Must not import rt, listen or dispatch.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Groups [`kill_all`] killed and whose leader is not reaped yet: a script of one of
/// them that fails now failed because of the shutdown, not by its own fault.
static KILLED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Records a running process group.
pub fn register(pgid: i32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.get_or_insert_with(HashSet::new).insert(pgid);
    }
}

/// Forgets a process group (its leader has been reaped).
pub fn unregister(pgid: i32) {
    for registry in [&GROUPS, &KILLED] {
        if let Ok(mut g) = registry.lock()
            && let Some(set) = g.as_mut()
        {
            set.remove(&pgid);
        }
    }
}

/// Sends SIGKILL to a process group.
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Whether [`kill_all`] killed this group (and its leader is not reaped yet).
pub fn killed_at_shutdown(pgid: i32) -> bool {
    KILLED
        .lock()
        .ok()
        .is_some_and(|g| g.as_ref().is_some_and(|set| set.contains(&pgid)))
}

/// Kills every registered group; returns how many there were. Each is remembered as
/// killed by the shutdown ([`killed_at_shutdown`]) until its leader is reaped.
pub fn kill_all() -> usize {
    let groups: Vec<i32> = match GROUPS.lock() {
        Ok(mut g) => g
            .take()
            .map(|s| s.into_iter().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if let Ok(mut k) = KILLED.lock() {
        k.get_or_insert_with(HashSet::new)
            .extend(groups.iter().copied());
    }
    for &pgid in &groups {
        kill_group(pgid);
    }
    groups.len()
}

/// Makes portico the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a
/// grandchild whose parent script exited is re-parented to portico instead of to PID 1,
/// which on some machines never reaps. [`reap_orphans`] then collects them.
pub fn become_subreaper() -> bool {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory involved.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
}

/// Whether any child of portico is a zombie now (its own or an adopted orphan), without
/// reaping it: one `waitid(P_ALL, WNOHANG | WNOWAIT)`.
pub fn any_zombie_child() -> bool {
    // SAFETY: siginfo_t is plain data that waitid fills in; an all-zero one is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with a pointer to our own siginfo_t; WNOWAIT leaves the child as it
    // is, so its owner still reaps it.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid for WEXITED results and left zero otherwise.
    r == 0 && unsafe { info.si_pid() } != 0
}

/// Reaps zombie children that portico did not spawn itself (orphans re-parented to it),
/// leaving its own children to their owners. `suspects` carries zombies seen by the last
/// call: a zombie that leads its own group is only reaped the second time it is seen, so
/// a child spawned an instant ago and not yet registered is never taken from its owner.
/// Returns how many were reaped.
pub fn reap_orphans(suspects: &mut HashSet<i32>) -> usize {
    let me = std::process::id() as i32;
    let own: HashSet<i32> = GROUPS
        .lock()
        .ok()
        .and_then(|g| g.as_ref().cloned())
        .unwrap_or_default();
    let mut seen = HashSet::new();
    let mut reaped = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        let pgid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if state != Some("Z") || ppid != Some(me) || own.contains(&pid) {
            continue;
        }
        if pgid == Some(pid) && !suspects.contains(&pid) {
            seen.insert(pid);
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific pid with WNOHANG; `status` is ours.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
        }
    }
    *suspects = seen;
    reaped
}

thread_local! {
    /// Whether [`batch_this_thread`] found this thread batched by portico (`None`: not
    /// asked yet).
    static BATCHED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Set once [`batch_this_thread`] has moved a thread from `SCHED_OTHER` to `SCHED_BATCH`:
/// from then on a `SCHED_BATCH` thread of this process is batched by portico (directly,
/// or by inheriting it from the thread that created it: the blocking pool starts new
/// threads from its own threads), not by whoever started portico.
static BATCHING: AtomicBool = AtomicBool::new(false);

/// Moves the calling thread from `SCHED_OTHER` to `SCHED_BATCH`, once per thread; true
/// if it is batched by portico now. For the blocking-pool threads that start scripts:
/// woken for each spawn, and again when the child has exec'd, a normal thread preempts
/// the event loop's thread on that CPU each time (EEVDF's wakeup preemption), a batch
/// one waits for its turn. Under `benches/cgi.sh` load that took the event loop's
/// involuntary context switches from 1.67 to 0.45 per request and all of portico's
/// threads' from 5.5 to 3.4. Scripts are put back to `SCHED_OTHER` when started from
/// any thread portico batched ([`Spawn::spawn`]). A process started under another policy
/// (`chrt`, say) is left as it is, and so are its scripts.
pub fn batch_this_thread() -> bool {
    BATCHED.with(|batched| {
        if let Some(b) = batched.get() {
            return b;
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_getscheduler and sched_setscheduler act on the calling thread
        // (pid 0); the latter reads only `param`, which lives across the call.
        let b = match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_OTHER => {
                // SAFETY: as above.
                let switched =
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0;
                if switched {
                    BATCHING.store(true, Ordering::SeqCst);
                }
                switched
            }
            // Inherited from a thread batched here (BATCHING was set before that thread
            // could create this one), or the process's own policy (BATCHING unset).
            libc::SCHED_BATCH => BATCHING.load(Ordering::SeqCst),
            _ => false,
        };
        batched.set(Some(b));
        b
    })
}

/// Whether a script started from the calling thread must be put back to `SCHED_OTHER`:
/// the thread runs `SCHED_BATCH` because of portico. A thread that asked
/// [`batch_this_thread`] knows; any other is asked its policy (one `sched_getscheduler`,
/// and only while portico batches some thread).
fn spawns_need_normal_policy() -> bool {
    BATCHING.load(Ordering::SeqCst)
        && BATCHED.with(|b| b.get()).unwrap_or_else(|| {
            // SAFETY: reads the calling thread's policy; no memory involved.
            unsafe { libc::sched_getscheduler(0) == libc::SCHED_BATCH }
        })
}

/// A program to start ([`Spawn::spawn`]): its path, arguments and whole environment as
/// C strings built straight from bytes, a working directory, and a process group of its
/// own.
///
/// `std::process::Command` keeps the environment in a map of `OsString`s and converts it
/// on every spawn; for a CGI script's forty-odd variables that was 7% of the gateway's
/// CPU per request (`benches/cgi.sh`, perf). Here the whole environment is one buffer of
/// `NAME=value\0` entries (one `CString` each, which also shrank each on creation, was
/// an allocation and a reallocation per variable).
pub struct Spawn {
    program: CString,
    argv: Vec<CString>,
    /// The entries, one after another; a replaced one stays, unlisted.
    env: Vec<u8>,
    /// Where each entry of the environment starts in `env`, in order.
    entries: Vec<usize>,
    /// A 256-bit Bloom filter of the names in `env`: a name whose bit is clear is new, so
    /// most of a script's forty-odd variables go in without comparing against the rest
    /// (that search was 15% of a CGI request's instructions, callgrind).
    names: [u64; 4],
    dir: Option<CString>,
}

/// The bit of `name` in [`Spawn::names`] (FNV-1a).
fn name_bit(name: &[u8]) -> (usize, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone mix poorly.
    let h = (h ^ (h >> 32)) as usize;
    ((h >> 6) & 3, 1u64 << (h & 63))
}

/// What the child's stdin is.
pub enum Stdin {
    /// `/dev/null`.
    Null,
    /// A new pipe; the parent gets its writing end.
    Pipe,
    /// This descriptor (a spooled body's file).
    Fd(OwnedFd),
}

/// A started child: its pid (also its process group id) and the parent's pipe ends.
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn c_string(bytes: Vec<u8>, what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} holds a NUL byte"),
        )
    })
}

impl Spawn {
    /// Runs `program` (a path; no `PATH` search), with it as `argv[0]`.
    pub fn new(program: &Path) -> io::Result<Spawn> {
        let program = c_string(program.as_os_str().as_bytes().to_vec(), "program path")?;
        Ok(Spawn {
            argv: vec![program.clone()],
            program,
            env: Vec::with_capacity(2048),
            entries: Vec::with_capacity(48),
            names: [0; 4],
            dir: None,
        })
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: &[u8]) -> io::Result<()> {
        self.argv.push(c_string(arg.to_vec(), "argument")?);
        Ok(())
    }

    /// Sets a variable of the (otherwise empty) environment; a later value for the same
    /// name replaces the earlier one.
    pub fn env(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        if name.is_empty() || name.contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bad environment variable name {:?}",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        if name.contains(&0) || value.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "environment variable holds a NUL byte",
            ));
        }
        let start = self.env.len();
        self.env.reserve(name.len() + value.len() + 2);
        self.env.extend_from_slice(name);
        self.env.push(b'=');
        self.env.extend_from_slice(value);
        self.env.push(0);
        let (word, bit) = name_bit(name);
        let Some(slot) = self.names.get_mut(word) else {
            return Err(io::Error::other("name filter out of range"));
        };
        if *slot & bit == 0 {
            *slot |= bit;
            self.entries.push(start);
            return Ok(());
        }
        let key = name.len() + 1;
        let env = &self.env;
        let new = env.get(start..start + key);
        match self
            .entries
            .iter_mut()
            .find(|&&mut at| env.get(at..at + key) == new)
        {
            Some(old) => *old = start,
            None => self.entries.push(start),
        }
        Ok(())
    }

    /// The child's working directory.
    pub fn dir(&mut self, dir: &Path) -> io::Result<()> {
        self.dir = Some(c_string(
            dir.as_os_str().as_bytes().to_vec(),
            "working directory",
        )?);
        Ok(())
    }

    /// Starts the child in a new process group whose id is its pid, with stdout and
    /// stderr on new pipes, an empty signal mask and every signal at its default (Rust
    /// ignores SIGPIPE, and an ignored signal stays ignored across exec). Blocks until
    /// the child has exec'd or failed to.
    ///
    /// The child is made the way `posix_spawn(3)` makes it (a `clone` that shares this
    /// process's memory, while the calling thread is suspended until the `execve`), but
    /// with a stack mapped once per spawning thread instead of once per child: glibc maps
    /// one per spawn and unmaps it after, and that `munmap` is a TLB shootdown on every
    /// CPU running portico (about a tenth of the spawning thread's time, perf). Nor does it
    /// ask the file-descriptor limit five times (glibc's check of each file action), and
    /// a script without a body gets its stdin from a `/dev/null` held open for all
    /// instead of its own `open`. See [`exec_child`] for what the child does.
    pub fn spawn(&self, stdin: Stdin) -> io::Result<Spawned> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (child_in, parent_in) = match stdin {
            Stdin::Null => (None, None),
            Stdin::Pipe => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            Stdin::Fd(fd) => (Some(fd), None),
        };
        let stdin_fd = match &child_in {
            Some(fd) => fd.as_raw_fd(),
            None => dev_null()?,
        };
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self
            .entries
            .iter()
            .filter_map(|&at| self.env.get(at..))
            .map(|e| e.as_ptr().cast::<libc::c_char>())
            .collect();
        envp.push(std::ptr::null());
        let mut plan = Plan {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            dir: self.dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
            fds: [stdin_fd, out_w.as_raw_fd(), err_w.as_raw_fd()],
            normal: spawns_need_normal_policy(),
            err: 0,
        };
        let top = child_stack_top()?;
        // Every signal blocked, glibc's internal ones too: the child starts with this
        // mask, so no handler of portico's can run in it while it shares portico's
        // memory; it sets its own mask just before the exec.
        let old = signals::block_all()?;
        // SAFETY: `exec_child` runs on this thread's child stack, which nothing else uses,
        // while this thread is suspended (CLONE_VFORK) until the child has exec'd or
        // exited (one child at a time per thread, then), so the stack,
        // `plan` and everything it points into (`self`'s strings, `argv`, `envp`, the
        // descriptors) outlive the child's use of them; the child only reads `plan`
        // and writes `plan.err`, and makes async-signal-safe calls.
        let pid = unsafe {
            libc::clone(
                exec_child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut plan).cast::<libc::c_void>(),
            )
        };
        let clone_error = (pid < 0).then(io::Error::last_os_error);
        let restored = signals::set_mask(&old);
        debug_assert!(restored, "the spawning thread's signal mask put back");
        if let Some(e) = clone_error {
            return Err(e);
        }
        // SAFETY: the child wrote `err` (or not) before this thread resumed; a volatile
        // read, as the compiler does not see that write.
        let err = unsafe { std::ptr::read_volatile(&raw const plan.err) };
        if err != 0 {
            // The child exited (127) without exec'ing: reap it here.
            let mut status = 0;
            // SAFETY: waitpid on our own child with a status int we own.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            return Err(io::Error::from_raw_os_error(err));
        }
        // The child's ends close here in the parent, so EOF comes when the child's do.
        drop((out_w, err_w, child_in));
        Ok(Spawned {
            pid,
            stdin: parent_in,
            stdout: out_r,
            stderr: err_r,
        })
    }
}

/// What the child reads between the `clone` and the `execve`, all set up by the parent.
struct Plan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The working directory; null: the parent's.
    dir: *const libc::c_char,
    /// What becomes the child's descriptors 0, 1 and 2.
    fds: [RawFd; 3],
    /// Put the child back to `SCHED_OTHER` ([`spawns_need_normal_policy`]).
    normal: bool,
    /// Written by the child when a step fails: its errno (0: the child exec'd).
    err: libc::c_int,
}

/// Bytes of the child's stack: its part of [`Spawn::spawn`] calls a handful of functions
/// with small frames (under 1 KiB used, even unoptimised); glibc gives the same part
/// 32 KiB and a little more per argument.
const CHILD_STACK: usize = 32 * 1024;

/// A thread's stack for the children it starts, mapped once with a guard page below it
/// (an overrun faults in the child instead of writing into anything of the parent's),
/// and unmapped when the thread ends.
struct ChildStackMap {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for ChildStackMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `ChildStackMap::new`, unmapped once; no child is
        // using it: either the guard could not be set and it was never handed out, or
        // the thread that owns it (and is suspended while a child runs) is ending.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    static CHILD_STACK_MAP: std::cell::RefCell<Option<ChildStackMap>> =
        const { std::cell::RefCell::new(None) };
}

impl ChildStackMap {
    /// Maps the stack, its lowest page the guard.
    fn new() -> io::Result<ChildStackMap> {
        // SAFETY: the page size is a plain query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        let len = CHILD_STACK + page;
        // SAFETY: a new private anonymous mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Unmapped on drop if the guard cannot be set.
        let mapped = ChildStackMap { base, len };
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(mapped)
    }

    /// Its top (stacks grow down on every Linux target); page-aligned, so 16-byte
    /// aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base
            .cast::<u8>()
            .wrapping_add(self.len)
            .cast::<libc::c_void>()
    }
}

/// The top of the calling thread's child stack, mapping it on first use.
fn child_stack_top() -> io::Result<*mut libc::c_void> {
    CHILD_STACK_MAP.with(|cell| {
        let mut map = cell.borrow_mut();
        let stack = match &mut *map {
            Some(stack) => stack,
            empty @ None => empty.insert(ChildStackMap::new()?),
        };
        Ok(stack.top())
    })
}

/// The child's side of [`Spawn::spawn`], in the order of glibc's `posix_spawn`: every
/// signal to its default action, the scheduling policy, a process group of its own,
/// descriptors 0–2, the working directory, an empty signal mask, then `execve`. A step
/// that fails leaves its errno in `Plan::err` and ends the child with 127.
///
/// Runs in the parent's memory on its own stack while the parent is suspended: only
/// async-signal-safe calls, no allocation, nothing that can panic. (errno is the
/// suspended thread's; nothing reads it in between.) Every signal is blocked from the
/// `clone` until just before the `execve`, and by then each is at its default.
extern "C" fn exec_child(arg: *mut libc::c_void) -> libc::c_int {
    let plan = arg.cast::<Plan>();
    // SAFETY: `arg` is the `Plan` the parent passed to clone, alive and unchanged until
    // the parent resumes; every pointer in it is valid for the calls below (see the
    // parent's SAFETY note), and each call is async-signal-safe.
    unsafe {
        // Each signal to SIG_DFL, one call each: the dispositions the child has are
        // portico's (handlers that must not run here, SIGPIPE ignored by Rust, whatever
        // portico inherited ignored).
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                signals::default_action(sig);
            }
        }
        if (*plan).normal {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0 {
                child_failed(plan);
            }
        }
        if libc::setpgid(0, 0) != 0 {
            child_failed(plan);
        }
        for (to, from) in [0, 1, 2].into_iter().zip((*plan).fds) {
            // A descriptor already in place only loses close-on-exec (dup2 onto itself
            // would do nothing, and it would close at the exec).
            let rc = if from == to {
                libc::fcntl(from, libc::F_SETFD, 0)
            } else {
                libc::dup2(from, to)
            };
            if rc < 0 {
                child_failed(plan);
            }
        }
        if !(*plan).dir.is_null() && libc::chdir((*plan).dir) != 0 {
            child_failed(plan);
        }
        if !signals::set_mask(&signals::SignalMask::EMPTY) {
            child_failed(plan);
        }
        libc::execve((*plan).program, (*plan).argv, (*plan).envp);
        child_failed(plan)
    }
}

/// Records the errno of the step that failed for the parent and ends the child.
///
/// # Safety
/// Only in [`exec_child`], with its `Plan`.
unsafe fn child_failed(plan: *mut Plan) -> ! {
    // SAFETY: per the contract, `plan` is the live Plan; `_exit` ends only the child.
    unsafe {
        let e = *libc::__errno_location();
        std::ptr::write_volatile(&raw mut (*plan).err, if e == 0 { libc::ECHILD } else { e });
        libc::_exit(127)
    }
}

/// The signal calls of [`Spawn::spawn`] and its child, straight to the kernel: glibc's
/// wrappers leave out glibc's two internal signals (32 and 33), which must be blocked
/// around the `clone` and set back to their default in the child like every other.
/// Written for the kernel's layout on the targets below (a 64-bit signal set; a
/// `struct sigaction` of handler, flags, [restorer,] mask, at most 32 bytes).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
mod signals {
    use std::io;

    /// The size of the kernel's signal set, as `rt_sigprocmask` and `rt_sigaction` take
    /// it (a `size_t`).
    const SIGSET: libc::size_t = 8;

    /// A thread's signal mask as the kernel has it.
    #[derive(Clone, Copy)]
    pub(super) struct SignalMask(u64);

    impl SignalMask {
        pub(super) const EMPTY: SignalMask = SignalMask(0);
    }

    /// Blocks every signal in the calling thread; the mask it had.
    pub(super) fn block_all() -> io::Result<SignalMask> {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask reads and writes two kernel sigsets we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all,
                &mut old,
                SIGSET,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SignalMask(old))
    }

    /// Sets the calling thread's signal mask (async-signal-safe); false if the kernel
    /// refused (it cannot, with a valid `how` and size).
    pub(super) fn set_mask(mask: &SignalMask) -> bool {
        // SAFETY: rt_sigprocmask reads the kernel sigset we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &mask.0,
                std::ptr::null_mut::<u64>(),
                SIGSET,
            )
        };
        rc == 0
    }

    /// Puts `sig` back to its default action (async-signal-safe): a zeroed kernel
    /// `sigaction` is SIG_DFL with no flags and an empty mask.
    pub(super) fn default_action(sig: libc::c_int) {
        let dfl = [0u64; 4];
        // SAFETY: rt_sigaction reads the zeroed struct we own; no old action is asked.
        // SIGKILL and SIGSTOP are refused, which changes nothing.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl,
                std::ptr::null_mut::<u64>(),
                SIGSET,
            );
        }
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
compile_error!(
    "src/procs.rs starts scripts with raw signal system calls written for the kernel's \
     layout on x86_64, aarch64, riscv64 and loongarch64; add this architecture's there"
);

/// `/dev/null`, open for reading for the life of the process (close-on-exec; a child
/// gets it by dup2), for scripts without a body. One open file for all of them: a script
/// that changes its stdin's flags (O_NONBLOCK) or locks it does so for every other, which
/// for `/dev/null`, always at its end, changes nothing they can see.
fn dev_null() -> io::Result<RawFd> {
    // Only a success is kept: a failure (out of descriptors, say) is this spawn's alone.
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    // SAFETY: a static NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Another thread may have got there first; its descriptor is kept, this one closed.
    let kept = NULL.get_or_init(|| fd);
    Ok(kept.as_raw_fd())
}

/// A pipe whose both ends close on exec (the child gets its end through dup2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [r, w] = fds;
    // SAFETY: pipe2 just created both descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) })
}

/// For a forked child just before its `exec` (`CommandExt::pre_exec`): every signal back
/// to its default action, glibc's two internal ones included, as [`exec_child`] does for
/// scripts, so a managed FastCGI child does not inherit what portico was started with
/// ignoring (a SIGHUP under `nohup`). Only `rt_sigaction(2)`, which is
/// async-signal-safe.
pub fn default_signals() -> io::Result<()> {
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            signals::default_action(sig);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::io::Read;

    #[test]
    fn spawn_gives_the_script_its_environment_arguments_directory_and_own_group() {
        let mut cmd = Spawn::new(Path::new("/bin/sh")).expect("program");
        for arg in [
            &b"-c"[..],
            b"echo \"$A|$B|$1|$(pwd)|$(cat)|$(ps -o pgid= -p $$ | tr -d ' ')|$$\"; \
               grep SigIgn /proc/self/status; echo oops >&2",
            b"sh",
            b"first arg",
        ] {
            cmd.arg(arg).expect("arg");
        }
        cmd.env(b"A", b"one").expect("env");
        cmd.env(b"B", b"two").expect("env");
        cmd.env(b"A", b"three").expect("env");
        cmd.env(b"PATH", b"/usr/bin:/bin").expect("env");
        cmd.dir(Path::new("/tmp")).expect("dir");
        assert!(cmd.env(b"A=B", b"x").is_err());
        assert!(cmd.env(b"C", b"nul\0").is_err());

        let spawned = cmd.spawn(Stdin::Null).expect("spawn");
        let mut out = String::new();
        std::fs::File::from(spawned.stdout)
            .read_to_string(&mut out)
            .expect("stdout");
        let mut err = String::new();
        std::fs::File::from(spawned.stderr)
            .read_to_string(&mut err)
            .expect("stderr");
        let mut status = 0;
        // SAFETY: waitpid on the child just spawned, with a status int we own.
        assert_eq!(
            unsafe { libc::waitpid(spawned.pid, &mut status, 0) },
            spawned.pid
        );
        let pid = spawned.pid;
        let mut lines = out.lines();
        // The later A wins; stdin is /dev/null (empty); the group is the child's own.
        assert_eq!(
            lines.next(),
            Some(format!("three|two|first arg|/tmp||{pid}|{pid}").as_str())
        );
        // SIGPIPE is back at its default, though the test process ignores it.
        let ignored = lines
            .next()
            .and_then(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|mask| u64::from_str_radix(mask, 16).ok())
            .expect("SigIgn line");
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "mask {ignored:x}");
        assert_eq!(err, "oops\n");
        assert!(spawned.stdin.is_none());
    }

    #[test]
    fn env_keeps_one_entry_per_name_the_latest_value_in_first_place() {
        // Enough names that the 256-bit filter has clashes, so both the fast path (a new
        // name) and the search (a clash, or a real repeat) are taken.
        let mut cmd = Spawn::new(Path::new("/bin/true")).expect("program");
        let names: Vec<String> = (0..300).map(|i| format!("VAR_{i}")).collect();
        for n in &names {
            cmd.env(n.as_bytes(), b"first").expect("env");
        }
        for n in names.iter().step_by(7) {
            cmd.env(n.as_bytes(), b"second").expect("env");
        }
        // A name that is a prefix of another is a different name.
        cmd.env(b"VAR_1", b"third").expect("env");
        cmd.env(b"VAR", b"short").expect("env");
        let got: Vec<String> = cmd
            .entries
            .iter()
            .map(|&at| {
                CStr::from_bytes_until_nul(&cmd.env[at..])
                    .expect("NUL-terminated")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let mut want: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v = if n == "VAR_1" {
                    "third"
                } else if i % 7 == 0 {
                    "second"
                } else {
                    "first"
                };
                format!("{n}={v}")
            })
            .collect();
        want.push("VAR=short".into());
        assert_eq!(got, want);
    }

    #[test]
    fn a_batched_spawner_thread_starts_scripts_under_the_normal_policy() {
        // A fresh thread, so the test runner's threads keep their policy.
        let (thread_policy, script_policy) = std::thread::spawn(|| {
            assert!(batch_this_thread());
            assert!(batch_this_thread(), "asked again: still batched");
            // SAFETY: reads the calling thread's policy.
            let thread_policy = unsafe { libc::sched_getscheduler(0) };
            let policy = script_policy();
            (thread_policy, policy)
        })
        .join()
        .expect("thread");
        assert_eq!(thread_policy, libc::SCHED_BATCH);
        assert_eq!(script_policy, libc::SCHED_OTHER.to_string());
    }

    /// The policy field of `/proc/self/stat` as seen by a script spawned from here.
    fn script_policy() -> String {
        let mut cmd = Spawn::new(Path::new("/bin/sh")).expect("program");
        cmd.arg(b"-c").expect("arg");
        cmd.arg(b"awk '{print $41}' /proc/self/stat").expect("arg");
        cmd.env(b"PATH", b"/usr/bin:/bin").expect("env");
        let spawned = cmd.spawn(Stdin::Null).expect("spawn");
        output_then_reap(spawned.stdout, spawned.pid)
            .trim()
            .to_string()
    }

    /// All the child's stdout, then its exit collected.
    fn output_then_reap(stdout: OwnedFd, pid: i32) -> String {
        let mut out = String::new();
        std::fs::File::from(stdout)
            .read_to_string(&mut out)
            .expect("stdout");
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a status int we own.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        out
    }

    #[test]
    fn a_thread_created_by_a_batched_thread_also_starts_scripts_under_the_normal_policy() {
        // The blocking pool starts its new threads from its own threads, which inherit
        // SCHED_BATCH: their scripts must be put back too, asked or not.
        let (inherited, asked, unasked, batched) = std::thread::spawn(|| {
            assert!(batch_this_thread());
            std::thread::spawn(|| {
                // SAFETY: reads the calling thread's policy.
                let inherited = unsafe { libc::sched_getscheduler(0) };
                let unasked = script_policy();
                let batched = batch_this_thread();
                let asked = script_policy();
                (inherited, asked, unasked, batched)
            })
            .join()
            .expect("inner thread")
        })
        .join()
        .expect("thread");
        assert_eq!(inherited, libc::SCHED_BATCH);
        assert!(batched, "an inherited batch policy counts as portico's");
        assert_eq!(unasked, libc::SCHED_OTHER.to_string());
        assert_eq!(asked, libc::SCHED_OTHER.to_string());
    }

    /// The children of the calling thread (running or not yet reaped).
    fn children_of_this_thread() -> String {
        std::fs::read_to_string("/proc/thread-self/children").expect("children")
    }

    #[test]
    fn a_step_that_fails_before_the_exec_is_reported_its_child_reaped_and_the_mask_put_back() {
        // A fresh thread: only the children it makes are listed for it.
        std::thread::spawn(|| {
            let mask = blocked_signals();
            let mut cmd = Spawn::new(Path::new("/bin/true")).expect("program");
            cmd.dir(Path::new("/nonexistent/dir")).expect("dir");
            let e = cmd.spawn(Stdin::Null).err().expect("an error");
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
            // Not executable (no x bit, which even root needs): the exec fails after
            // every other step.
            let dir = std::env::temp_dir().join(format!("portico-noexec-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            let file = dir.join("plain.txt");
            std::fs::write(&file, "not a program\n").expect("write");
            let cmd = Spawn::new(&file).expect("program");
            let e = cmd.spawn(Stdin::Pipe).err().expect("an error");
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            assert_eq!(children_of_this_thread().trim(), "", "a child left behind");
            // And one that runs is this thread's child until reaped.
            let spawned = Spawn::new(Path::new("/bin/true"))
                .expect("program")
                .spawn(Stdin::Null)
                .expect("spawn");
            assert!(
                children_of_this_thread().contains(&spawned.pid.to_string()),
                "the listing shows this thread's children"
            );
            let mut status = 0;
            // SAFETY: waitpid on the child just spawned, with a status int we own.
            assert_eq!(
                unsafe { libc::waitpid(spawned.pid, &mut status, 0) },
                spawned.pid
            );
            // Every signal was blocked around each clone, and the mask is back.
            assert_eq!(blocked_signals(), mask);
        })
        .join()
        .expect("thread");
    }

    /// `pipe:[inode]`, as `/proc/*/fd` shows the pipe `fd` is an end of.
    fn pipe_name(fd: &OwnedFd) -> String {
        // SAFETY: fstat fills the zeroed struct we own, for a descriptor we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        format!("pipe:[{}]", st.st_ino)
    }

    #[test]
    fn the_child_has_its_pipes_as_0_1_and_2_and_no_other_descriptor_of_portico() {
        let mut cmd = Spawn::new(Path::new("/bin/sh")).expect("program");
        cmd.arg(b"-c").expect("arg");
        // What its own 0-2 are, then all it has open.
        cmd.arg(b"readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2; ls /proc/$$/fd")
            .expect("arg");
        cmd.env(b"PATH", b"/usr/bin:/bin").expect("env");
        let spawned = cmd.spawn(Stdin::Pipe).expect("spawn");
        let stdin = spawned.stdin.expect("stdin pipe");
        let want = [
            pipe_name(&stdin),
            pipe_name(&spawned.stdout),
            pipe_name(&spawned.stderr),
        ];
        drop(stdin);
        let out = output_then_reap(spawned.stdout, spawned.pid);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.get(..3),
            Some(&want.each_ref().map(String::as_str)[..]),
            "{out}"
        );
        // Past 0-2, only what this process holds without close-on-exec (what the test
        // runner was started with, say): none of portico's own.
        let inherited = |fd: &str| {
            fd.parse::<RawFd>().is_ok_and(|fd| {
                // SAFETY: F_GETFD on a number; a closed one fails.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                flags >= 0 && flags & libc::FD_CLOEXEC == 0
            })
        };
        let fds = lines.get(3..).unwrap_or_default();
        for want in ["0", "1", "2"] {
            assert!(fds.contains(&want), "{out}");
        }
        let extra: Vec<&&str> = fds
            .iter()
            .filter(|fd| !["0", "1", "2"].contains(fd) && !inherited(fd))
            .collect();
        assert!(extra.is_empty(), "leaked {extra:?}: {out}");
    }

    /// The calling thread's blocked signals, as `/proc` shows them.
    fn blocked_signals() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .expect("status")
            .lines()
            .find(|l| l.starts_with("SigBlk:"))
            .expect("SigBlk line")
            .to_owned()
    }

    #[test]
    fn spawn_reports_a_program_that_cannot_run() {
        let cmd = Spawn::new(Path::new("/nonexistent/script")).expect("program");
        let e = cmd.spawn(Stdin::Null).err().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
