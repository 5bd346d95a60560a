//! The registry of child process groups portico started, so that shutdown can kill
//! whatever is still running once the grace period is over. Backends register a group
//! when they spawn and unregister it once the child is reaped.
//!
//! Must not import rt, listen or dispatch.

use std::collections::HashSet;
use std::sync::Mutex;

static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Records a running process group.
pub fn register(pgid: i32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.get_or_insert_with(HashSet::new).insert(pgid);
    }
}

/// Forgets a process group (its leader has been reaped).
pub fn unregister(pgid: i32) {
    if let Ok(mut g) = GROUPS.lock()
        && let Some(set) = g.as_mut()
    {
        set.remove(&pgid);
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

/// Kills every registered group; returns how many there were.
pub fn kill_all() -> usize {
    let groups: Vec<i32> = match GROUPS.lock() {
        Ok(mut g) => g
            .take()
            .map(|s| s.into_iter().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
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
