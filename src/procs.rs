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

/// A program to start with `posix_spawn(3)`: its path, arguments and whole environment as
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
    /// ignores SIGPIPE, and an ignored signal stays ignored across exec; see [`Attr`]).
    /// Blocks until the child has exec'd or failed to.
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
        let mut actions = Actions::new()?;
        match &child_in {
            Some(fd) => actions.dup2(fd.as_raw_fd(), 0)?,
            None => actions.open_null(0)?,
        }
        actions.dup2(out_w.as_raw_fd(), 1)?;
        actions.dup2(err_w.as_raw_fd(), 2)?;
        if let Some(dir) = &self.dir {
            actions.chdir(dir)?;
        }
        let attr = Attr::new(spawns_need_normal_policy())?;

        let mut argv: Vec<*mut libc::c_char> =
            self.argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        let mut envp: Vec<*mut libc::c_char> = self
            .entries
            .iter()
            .filter_map(|&at| self.env.get(at..))
            .map(|e| e.as_ptr().cast::<libc::c_char>().cast_mut())
            .collect();
        envp.push(std::ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: `program` and `argv` point into
        // CStrings owned by `self`, `envp` into NUL-terminated entries of `self.env`
        // (borrowed, not changed, until the call returns), and both arrays end with a
        // null pointer; the
        // file actions and attributes were initialised by their constructors and are
        // destroyed only when dropped after this call; `pid` is ours to write.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.program.as_ptr(),
                &actions.0,
                &attr.0,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
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

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct Actions(libc::posix_spawn_file_actions_t);

impl Actions {
    fn new() -> io::Result<Actions> {
        // SAFETY: the type is plain data; init fills it in before any other use.
        let mut a = Actions(unsafe { std::mem::zeroed() });
        // SAFETY: init on our own zeroed value.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut a.0) })?;
        Ok(a)
    }

    fn dup2(&mut self, fd: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: an initialised actions object; fd numbers only.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, to) })
    }

    fn open_null(&mut self, to: RawFd) -> io::Result<()> {
        // SAFETY: an initialised actions object; the path is a static NUL-terminated
        // string (glibc copies it).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                to,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: an initialised actions object; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.0);
        }
    }
}

/// For a forked child just before its `exec` (`CommandExt::pre_exec`): every signal back
/// to its default action, as [`Attr`] does for scripts, so a managed FastCGI child does
/// not inherit what portico was started with ignoring (a SIGHUP under `nohup`). Only
/// `signal(2)`, which is async-signal-safe; glibc refuses its own internal signals, and
/// that refusal is ignored.
pub fn default_signals() -> io::Result<()> {
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL installs no handler; the call touches only this process.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

/// `posix_spawnattr_t` set for a script: own process group, empty signal mask, every
/// signal at its default action.
///
/// Every signal, not only SIGPIPE (which Rust ignores in portico): the script starts the
/// same whatever portico inherited (a SIGHUP ignored by `nohup`), and it is cheaper.
/// glibc's child side of `posix_spawn` visits each signal: one in the "default" set is
/// set to SIG_DFL with one `rt_sigaction`; any other is first read back and then set,
/// two calls. With only SIGPIPE listed, strace showed 120 `rt_sigaction` calls in
/// every child before its `execve`; now there are 62.
struct Attr(libc::posix_spawnattr_t);

impl Attr {
    /// With `normal`, the child is also set to `SCHED_OTHER` (it is started from a
    /// thread that portico made `SCHED_BATCH`, see [`batch_this_thread`]).
    fn new(normal: bool) -> io::Result<Attr> {
        // SAFETY: the type is plain data; init fills it in before any other use.
        let mut a = Attr(unsafe { std::mem::zeroed() });
        // SAFETY: each call takes our initialised attribute object and plain values or
        // signal sets we own.
        unsafe {
            check(libc::posix_spawnattr_init(&mut a.0))?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut default: libc::sigset_t = std::mem::zeroed();
            // glibc leaves its own internal signals out of a filled set.
            libc::sigfillset(&mut default);
            libc::sigdelset(&mut default, libc::SIGKILL);
            libc::sigdelset(&mut default, libc::SIGSTOP);
            check(libc::posix_spawnattr_setsigmask(&mut a.0, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut a.0, &default))?;
            check(libc::posix_spawnattr_setpgroup(&mut a.0, 0))?;
            let mut flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            if normal {
                let param = libc::sched_param { sched_priority: 0 };
                check(libc::posix_spawnattr_setschedpolicy(
                    &mut a.0,
                    libc::SCHED_OTHER,
                ))?;
                check(libc::posix_spawnattr_setschedparam(&mut a.0, &param))?;
                flags |= libc::POSIX_SPAWN_SETSCHEDULER;
            }
            check(libc::posix_spawnattr_setflags(
                &mut a.0,
                libc::c_short::try_from(flags).unwrap_or(0),
            ))?;
        }
        Ok(a)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.0);
        }
    }
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
        let mut out = String::new();
        std::fs::File::from(spawned.stdout)
            .read_to_string(&mut out)
            .expect("stdout");
        let mut status = 0;
        // SAFETY: waitpid on the child just spawned, with a status int we own.
        unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
        out.trim().to_string()
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

    #[test]
    fn spawn_reports_a_program_that_cannot_run() {
        let cmd = Spawn::new(Path::new("/nonexistent/script")).expect("program");
        let e = cmd.spawn(Stdin::Null).err().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
