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
