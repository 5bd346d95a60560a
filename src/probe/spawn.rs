//! `portico probe --spawn CMD…`: starts a FastCGI application the way a web server does — a
//! listening Unix-domain socket as its fd 0 (FCGI-2.2-1, FCGI-2.2-2), fds 1 and 2 on
//! `/dev/null` (FCGI-RW-14), in a process group of its own — and kills and reaps that group
//! when the probe is over.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running application and the socket it listens on.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    /// The listening socket's path (connect here).
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Creates `app.sock` in a fresh temp dir, listens on it and runs `cmd` with that socket
    /// as fd 0.
    pub fn start(cmd: &[String]) -> io::Result<Spawned> {
        let (program, args) = cmd
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty --spawn command"))?;
        let dir = tempfile::Builder::new()
            .prefix("portico-probe-")
            .tempdir()?;
        let socket = dir.path().join("app.sock");
        let listener = UnixListener::bind(&socket)?;
        let fd = OwnedFd::from(listener);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            crate::procs::register(pid);
        }
        Ok(Spawned {
            child,
            socket,
            _dir: dir,
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            crate::procs::kill_group(pid);
            crate::procs::unregister(pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
