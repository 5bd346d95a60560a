//! The CGI backend: runs one script per request under a route's root (RFC 3875).
//!
//! It owns everything between a [`Request`] and a running script and back: resolving the
//! script under the root (refusing anything that escapes it), the `PATH_INFO` split, the
//! scrubbed environment, spooling a body of unknown length so `CONTENT_LENGTH` can be
//! set, the child in its own process group, stdin and stdout streamed concurrently,
//! stderr logged line by line, the response head parsed by `proto::cgi::response`, the
//! time limit, the per-route concurrency limit, and the reaping of every child. Must not
//! import listen or dispatch.
//!
//! Implementation-defined behaviour (CGI-1.3-2), as portico does it:
//!
//! - *Script selection* (CGI-3.3-1): the path below the route prefix is split by
//!   [`proto::cgi::meta::split_script`], each decoded prefix looked up under `root`. A
//!   prefix is a script when it is a regular file with an execute bit whose canonical
//!   path stays inside the canonical root; a symlink that leaves the root, a
//!   non-executable file or anything that is neither file nor directory is refused with
//!   403; `.`/`..` segments, `%2F`, NUL, CR and LF in the path with 404. A path that ends
//!   in a directory runs its first `index` script; a directory without one is 403.
//! - `SCRIPT_NAME` is the route prefix plus the decoded script path (CGI-4.1.13-3);
//!   `DOCUMENT_ROOT` is the canonical root, `SCRIPT_FILENAME` the root plus the script
//!   path, `PATH_TRANSLATED` the root plus `PATH_INFO` (CGI-4.1.6-5).
//! - The script runs as its canonical path, in the directory that holds it
//!   (CGI-7.2-3), in a new process group, with an environment of only the `pass_env`
//!   names, the `env` settings and the meta-variables (gnosek/fcgiwrap's scrubbing).
//! - NPH scripts are those whose file name starts with `nph-` (CGI-5.1-3), when `nph` is
//!   on. Their status line and fields are relayed; hop-by-hop fields are left to the
//!   HTTP layer, and a reason phrase is lost (the model has no place for it).
//! - Time limit (CGI-6.1-3): `timeout` covers the whole run from spawn, the body stream
//!   included. Past it the whole process group gets SIGKILL: before the head that is a
//!   504, after it the response body ends with an error so the connection is cut.
//! - A client that goes away (the reply or its body dropped) kills the group too. After a
//!   local or client redirect, or for `HEAD`, the rest of the output is read and
//!   discarded while the script finishes (CGI-RW-9, CGI-4.3.3-2).
//! - A script that ends normally is reaped and its group left alone: a child it
//!   detached on purpose keeps running, as under Apache.

use std::ffi::OsStr;
use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use proto::Status;
use proto::cgi::meta::{self as cgi_meta, HeaderNamePolicy, HeaderOptions, Lookup, SplitKind};
use proto::cgi::response::{self, Limits};

use super::head::{BodyMode, Head, HeadOptions, build_head};
use super::queue::{Slot, Slots};
use super::spool::{self, SpoolError, Spooled};
use super::{BackendError, Reply, RouteMatch};
use crate::config::{Cgi, HeaderPolicy};
use crate::meta::{self, Script, ServerInfo};
use crate::model::{Body, Request, Response, StderrSink};
use crate::procs;
use crate::rt::channel::{Receiver, Sender, bounded};
use crate::rt::child::{
    self, Child, Stderr as ChildStderr, Stdin as ChildStdin, Stdout as ChildStdout,
};
use crate::rt::{self, AsyncReadExt, AsyncWriteExt};
use crate::stats::{ChildGuard, Stats};

/// The CGI backend of one route: spawns a script per request.
///
/// Cheap to share behind the `Backend` enum; every request runs in its own child
/// process, supervised by a task of its own so that the time limit holds even while
/// the client reads slowly.
pub struct CgiBackend {
    settings: Arc<Cgi>,
    server: Arc<ServerInfo>,
    stats: Arc<Stats>,
    running: Arc<AtomicUsize>,
    /// Places for scripts starting at once (`max_starting`); none without a limit.
    starting: Option<Slots>,
    /// The route's root, canonical.
    root: Root,
    /// The `pass_env` variables portico's own environment has, read once here: a
    /// `getenv` per name per request took the environment's lock and searched it.
    passed: Box<[(Vec<u8>, Vec<u8>)]>,
}

impl CgiBackend {
    /// A backend running scripts under `settings.root`, describing itself with `server`
    /// and counting its children in `stats`.
    pub fn new(settings: Arc<Cgi>, server: Arc<ServerInfo>, stats: Arc<Stats>) -> CgiBackend {
        let passed = settings
            .pass_env
            .iter()
            .filter_map(|var| {
                let value = std::env::var_os(var)?;
                Some((var.as_bytes().to_vec(), value.as_bytes().to_vec()))
            })
            .collect();
        CgiBackend {
            root: Root::default(),
            passed,
            starting: (settings.max_starting > 0).then(|| Slots::new(settings.max_starting)),
            settings,
            server,
            stats,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs the script `req` names below `m.base` and answers with its response, or a
    /// local redirect for the dispatcher to follow.
    ///
    /// Errors: [`BackendError::NotFound`] / [`BackendError::Forbidden`] for paths that
    /// do not resolve to a runnable script under the root, [`BackendError::Busy`] past
    /// `max_concurrent` or when no start place (`max_starting`) came within `timeout`,
    /// [`BackendError::BodyTooLarge`] for a spooled body over the
    /// listener's limit, [`BackendError::BadRequest`] for headers that cannot become
    /// meta-variables, [`BackendError::BadGateway`] when the script fails before a valid
    /// head, [`BackendError::Timeout`] when it takes longer than `timeout` to send one.
    pub async fn call(&self, mut req: Request, m: &RouteMatch) -> Result<Reply, BackendError> {
        let settings = &self.settings;
        let req_stderr = req.stderr.clone();
        // No queue: past the limit, answer 503 at once.
        let permit =
            Permit::try_acquire(&self.running, settings.max_concurrent).ok_or_else(|| {
                BackendError::Busy(format!(
                    "{} CGI scripts already running on route {}",
                    settings.max_concurrent, m.name
                ))
            })?;

        // A few stat/readlink calls on a warm dentry cache, made in place as the FastCGI
        // and SCGI routes' script split is: a hop to the blocking pool and back cost more
        // than the calls (perf under `benches/cgi.sh`).
        let target = {
            let lookup = LookupRequest {
                path: req.path.clone(),
                base: m.base.clone(),
                filename: req.param(b"SCRIPT_FILENAME").cloned(),
                script_name: req.param(b"SCRIPT_NAME").cloned(),
                path_info: req.param(b"PATH_INFO").cloned(),
            };
            let root_error = |e: io::Error| {
                BackendError::Internal(format!("CGI root {}: {e}", settings.root.display()))
            };
            let now = rt::coarse_millis();
            let root = self
                .root
                .canonical(&settings.root, now)
                .map_err(root_error)?;
            match resolve(settings, &root, &lookup) {
                // Refused or missing under the root as it was up to a second ago: under
                // the root as it is now (a deploy may just have re-pointed it), once.
                // A request that is really refused pays the root's lookup, as all did.
                Err(e @ (BackendError::Forbidden(_) | BackendError::NotFound(_))) => {
                    let fresh = self.root.refresh(&settings.root, now).map_err(root_error)?;
                    if fresh == root {
                        return Err(e);
                    }
                    resolve(settings, &fresh, &lookup)?
                }
                other => other?,
            }
        };

        let (input, content_length) = self.take_input(&mut req).await?;

        let opts = HeaderOptions {
            policy: match settings.header_policy {
                HeaderPolicy::Strict => HeaderNamePolicy::Strict,
                HeaderPolicy::Map => HeaderNamePolicy::MapAndRejectCollisions,
            },
            pass_authorization: settings.pass_authorization,
        };
        let path_translated = if target.path_info.is_empty() {
            None
        } else {
            cgi_meta::path_translated(&target.document_root, &target.path_info)
        };
        let script = Script {
            script_name: &target.script_name,
            path_info: Some(target.path_info.as_slice()).filter(|p| !p.is_empty()),
            path_translated: path_translated.as_deref(),
            document_root: Some(&target.document_root),
            script_filename: Some(&target.script_filename),
        };
        let vars = meta::variables(&req, &script, &self.server, content_length, &opts)
            .map_err(|e| BackendError::BadRequest(e.to_string()))?;
        // CGI-4.4-1, CGI-AMB-9: argv only when the route asks for it, only for an
        // indexed GET or HEAD query; `search_args` refuses words starting with `-`.
        let args = if settings.search_args && matches!(req.method, Method::GET | Method::HEAD) {
            cgi_meta::search_args(&req.query).unwrap_or_default()
        } else {
            Vec::new()
        };

        let name: Arc<str> = String::from_utf8_lossy(&target.script_name).into();
        let cmd = script_command(settings, &self.passed, &target, vars, args)
            .map_err(|e| spawn_error(&name, &e))?;
        let (stdin, input) = match input {
            Input::None => (procs::Stdin::Null, None),
            // The spool file itself is the script's stdin: the kernel feeds it.
            Input::File(file) => (procs::Stdin::Fd(file.into()), None),
            body @ (Input::Stream(_) | Input::Memory(_)) => (procs::Stdin::Pipe, Some(body)),
        };
        // The time limit counts from here: time in line for a start place is part of it.
        let deadline = deadline_after(settings.timeout);
        // Start pacing: past `max_starting` scripts between their spawn and their head,
        // wait in order. Starting is where a script burns CPU (exec, loading, an
        // interpreter compiling); a burst that starts everything at once shares the CPUs
        // among all of them, so every one finishes late. In order, the first ones finish
        // first: under `benches/fastcgi.sh` (16 clients, 2 CPUs) a limit of 8 gave p99
        // 11.6 ms against 15.6 ms without, and no fewer requests per second. The place is
        // given back once the head is read; when the whole output came with the head
        // (`whole_body_wait`), once the script has exited, as its exit (unmapping,
        // freeing its pages) is CPU work too: with that, 6 on 2 CPUs kept p99 under
        // fcgiwrap's at 1.3x its rate, where 8 released at the head did not. On a machine
        // where a start costs more (a VM trapping the dynamic loader's CPUIDs), 4 on 2
        // CPUs gave p99 10.5 against 11.8 ms (C) and 11.9 against 13.5 ms (sh) at the
        // same rate as 6 (six interleaved rounds each): 2 per CPU is the default. Also on
        // failure, and at the latest after `start_window`, so a script that waits (for a
        // slow client's body, a database) holds it only that long; a wait here is thus at
        // most about max_concurrent / max_starting windows, and never past the time
        // limit (503).
        let mut start_place = match &self.starting {
            None => None,
            // A free place is taken at once, with no timer (`Slots::take`).
            Some(places) => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(places.take(left).await.map_err(|_| {
                    BackendError::Busy(format!(
                        "{name}: no start place (max_starting {}, start_window {:?}) on route {} within the time limit {:?}",
                        settings.max_starting, settings.start_window, m.name, settings.timeout
                    ))
                })?)
            }
        };
        let window_end = deadline_after(settings.start_window);
        // fork/exec blocks the calling thread until the child has exec'd (about a
        // millisecond): do it off the executor threads that serve connections.
        // The child is owned (registered, killed and reaped if dropped) from inside the
        // blocking call: a request dropped while it waits here leaves no script behind.
        let (spawned, mut started) = rt::spawn_blocking(move || {
            procs::batch_this_thread();
            cmd.spawn(stdin).map(|spawned| {
                // The child is its own group's leader, so its pid is the group id.
                procs::register(spawned.pid);
                let started = Started(Some(Child::adopt(spawned.pid)));
                (spawned, started)
            })
        })
        .await
        .map_err(|e| spawn_error(&name, &e))?;
        let pgid = spawned.pid;
        log::debug!("{name}: started as pid {pgid}");
        // An error here leaves `started` armed: its drop kills, unregisters and reaps.
        let pipes = (|| -> io::Result<_> {
            Ok((
                child::stdout(spawned.stdout)?,
                child::stderr(spawned.stderr)?,
                spawned.stdin.map(child::stdin).transpose()?,
            ))
        })();
        let (mut stdout, stderr, child_stdin) = pipes.map_err(|e| spawn_error(&name, &e))?;
        let Some(child) = started.0.take() else {
            return Err(BackendError::Internal(format!("{name}: lost its child")));
        };
        let guard = self.stats.child_started();
        let (stop_feed, feed_stopped) = bounded::<()>(1);
        let mut run = Run {
            child,
            pgid,
            name: name.clone(),
            deadline,
            timeout: settings.timeout,
            reaped: false,
            _permit: permit,
            _stats: guard,
            _stop_feed: stop_feed,
        };
        if let (Some(child_stdin), Some(input)) = (child_stdin, input) {
            drop(rt::spawn(feed_stdin(
                child_stdin,
                input,
                feed_stopped,
                name.clone(),
            )));
        }

        let head_opts = HeadOptions {
            // CGI-AMB-12: NPH output is HTTP/1.x; for later protocols the head is read as
            // a CGI head (which may start with a status line, SCGI-AMB-1).
            nph: settings.nph
                && cgi_meta::is_nph(&target.script_filename)
                && req.version <= http::Version::HTTP_11,
            head_only: req.method == Method::HEAD,
            limits: Limits {
                max_header_bytes: settings.max_header_bytes,
                ..Limits::default()
            },
        };
        let mut stderr = Box::pin(log_stderr(stderr, name.clone(), req_stderr.clone()));

        // The head, on this task (dropping this future kills the script: `Run`'s drop),
        // with stderr drained alongside so a script that writes much there first cannot
        // block. Most scripts have finished by the time their head is parsed: then the
        // whole body comes with it.
        let whole_body_wait = settings.whole_body_wait;
        let head_phase = async {
            let (head, rest) = read_head(&mut stdout, &head_opts).await?;
            let whole = if head.mode() == BodyMode::Stream && !head.frames_body() {
                read_ready(&mut stdout, rest, whole_body_wait, deadline).await
            } else {
                Ready::Partial(rest)
            };
            Ok::<_, Stop>((head, whole))
        };
        let mut stderr_done = false;
        let drain = async {
            stderr.as_mut().await;
            stderr_done = true;
            std::future::pending().await
        };
        // Boxed: the read buffers and parser state would otherwise sit inline in every
        // caller's future.
        // The start place goes back at the window's end, or after this race (below).
        let outcome = Box::pin(watch(
            rt::race(
                rt::race(head_phase, drain),
                hold_place(&mut start_place, window_end),
            ),
            deadline,
            None,
        ))
        .await;
        let (head, whole) = match outcome.and_then(|phase| phase) {
            Ok(done) => done,
            Err(stop) => {
                drop(start_place.take());
                let err = run.abort(stop, Some(stdout)).await;
                // What it said before it failed belongs in the log, and (FastCGI
                // listener, `stderr = true`) before the error answer: the group is dead,
                // so stderr ends at once unless something it left holds it.
                if !stderr_done && rt::timeout(STDERR_GRACE, stderr.as_mut()).await.is_err() {
                    drop(rt::spawn(stderr));
                }
                return Err(
                    err.unwrap_or_else(|| BackendError::Internal(format!("{name}: cancelled")))
                );
            }
        };
        // Often at its end already, though not yet seen: look once more, which also
        // forwards what it holds before the answer goes out.
        let stderr_done = stderr_done
            || futures_lite::future::poll_once(stderr.as_mut())
                .await
                .is_some();
        let stderr = (!stderr_done).then_some(stderr);

        let mode = head.mode();
        let body = match whole {
            Ready::Whole(whole) => {
                // stdout is at its end: the script has exited or is about to. Reap it
                // here if it has; otherwise a task waits for it (and its stderr).
                // Its start place is held until it has exited (or the window ends).
                if !run.try_reap() || stderr.is_some() {
                    drop(rt::spawn(async move {
                        rt::race(run.finish_exit(), hold_place(&mut start_place, window_end)).await;
                        drop(start_place);
                        // Its slot and count go now, not when whatever it left running
                        // closes stderr.
                        drop(run);
                        if let Some(stderr) = stderr {
                            stderr.await;
                        }
                    }));
                }
                Some(Body::full(whole))
            }
            Ready::Partial(rest) => {
                // A script still writing is no longer starting.
                drop(start_place.take());
                let (chunk_tx, chunk_rx) = bounded::<Msg>(OUTPUT_QUEUE);
                // Never sent on: its closing (the body dropped) means the client is gone.
                let (alive_tx, alive_rx) = bounded::<()>(1);
                let after = run.after_head(stdout, mode, rest, chunk_tx, alive_rx);
                match stderr {
                    Some(stderr) => drop(rt::spawn(rt::join(after, stderr))),
                    None => drop(rt::spawn(after)),
                }
                (mode == BodyMode::Stream)
                    .then(|| Body::from_stream(None, output(chunk_rx, alive_tx)))
            }
        };
        Ok(match head {
            Head::LocalRedirect(location) => Reply::LocalRedirect(location),
            Head::Response {
                status,
                headers,
                body: mode,
            } => {
                let body = match (mode, body) {
                    (BodyMode::Stream, Some(body)) => body,
                    (BodyMode::Stream, None) | (BodyMode::Empty, _) => Body::empty(),
                    // HEAD: no body, and no claim about its length either.
                    (BodyMode::Discard, _) => {
                        Body::from_stream(None, futures_lite::stream::empty())
                    }
                };
                let mut resp = Response::new(status, body);
                resp.headers = headers;
                Reply::Response(resp)
            }
        })
    }

    /// Takes the request body and decides what the script's stdin is, and
    /// `CONTENT_LENGTH` (CGI-4.1.2, CGI-AMB-4): unset without body framing, the declared
    /// length for a streamed body, the spooled length for a chunked one.
    async fn take_input(&self, req: &mut Request) -> Result<(Input, Option<u64>), BackendError> {
        let framed = req.body.is_framed();
        let mut body = std::mem::replace(&mut req.body, Body::empty_unframed());
        if !framed {
            return Ok((Input::None, None));
        }
        match body.len() {
            Some(0) => Ok((Input::None, Some(0))),
            Some(n) => Ok((Input::Stream(body), Some(n))),
            // CGI-4.2-8, CGI-RW-7: de-chunked and counted before the script starts.
            None => match spool::spool(&mut body, self.settings.spool_memory, u64::MAX).await {
                Ok(s) if s.is_empty() => Ok((Input::None, Some(0))),
                Ok(Spooled::Memory { chunks, len }) => Ok((Input::Memory(chunks), Some(len))),
                Ok(Spooled::File { file, len }) => Ok((Input::File(file), Some(len))),
                Err(SpoolError::TooLarge { .. }) => Err(BackendError::BodyTooLarge),
                Err(e @ SpoolError::Read(_)) => Err(BackendError::BadRequest(e.to_string())),
                Err(e @ SpoolError::Write(_)) => Err(BackendError::Internal(e.to_string())),
            },
        }
    }
}

/// Output chunks kept between the script and a slow client: with [`OUTPUT_CHUNK`] this
/// bounds the memory one response holds.
const OUTPUT_QUEUE: usize = 2;
/// Largest read from the script's stdout.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Reads while the head is incomplete.
const HEAD_READ: usize = 8 * 1024;
/// How much more stdout [`read_ready`] asks for at a time.
const READ_STEP: usize = 4 * 1024;
/// Largest read from the script's stderr.
const STDERR_READ: usize = 8 * 1024;
/// A stderr line longer than this is logged in pieces.
const MAX_LOG_LINE: usize = 4096;
/// How long a failed script's stderr may take to end, so its lines precede the error.
const STDERR_GRACE: Duration = Duration::from_millis(100);
/// How long to wait for a killed script to be reaped before leaving it to the reaper.
const REAP_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Script resolution

/// What a request names, copied out so resolution can run on the blocking pool.
struct LookupRequest {
    path: Bytes,
    base: Bytes,
    filename: Option<Bytes>,
    script_name: Option<Bytes>,
    path_info: Option<Bytes>,
}

/// A resolved script.
#[derive(Debug)]
struct Target {
    /// The canonical file to execute.
    exec: PathBuf,
    /// Its directory: the working directory (CGI-7.2-3).
    dir: PathBuf,
    /// SCRIPT_NAME.
    script_name: Vec<u8>,
    /// PATH_INFO, empty when none.
    path_info: Vec<u8>,
    /// SCRIPT_FILENAME.
    script_filename: Vec<u8>,
    /// DOCUMENT_ROOT: the canonical root.
    document_root: Vec<u8>,
}

/// What the file system says about one decoded path prefix.
enum Probe {
    Script(PathBuf),
    Directory,
    Missing,
    Refused(String),
}

/// A route's root as `realpath(3)` gives it, kept for a second ([`Root::FRESH_MS`]): a
/// request spares the `readlink` of each of the root's components (4 of a CGI
/// request's 60-odd system calls under `benches/cgi.sh`). The names below the root are
/// checked on every request ([`check_file`]), so a symlink there that leads out of the
/// root is refused as soon as it appears; the root itself is checked to still be a
/// directory and not a symlink, but the directories above it are taken as they were when
/// the root was last resolved. A root that is a symlink re-pointed by a deploy: a request that the kept
/// root refuses (403) or does not find (404) looks the root up again and, if it moved,
/// is resolved once more under the new one (`CgiBackend::call`); a script found under
/// the kept root (the old release, still there) runs from it for up to a second.
#[derive(Default)]
struct Root(Mutex<Option<(Arc<Path>, u64)>>);

impl Root {
    const FRESH_MS: u64 = 1000;

    /// The canonical form of `configured`: the one kept, if it was looked up less than
    /// [`Root::FRESH_MS`] before `now` ([`rt::coarse_millis`]), else a new lookup.
    fn canonical(&self, configured: &Path, now: u64) -> io::Result<Arc<Path>> {
        if let Some((root, at)) = &*self.kept()
            && now.saturating_sub(*at) < Self::FRESH_MS
        {
            return Ok(root.clone());
        }
        self.refresh(configured, now)
    }

    /// Looks `configured` up now, and keeps the result as of `now`. Errors are not kept.
    fn refresh(&self, configured: &Path, now: u64) -> io::Result<Arc<Path>> {
        let root: Arc<Path> = fs::canonicalize(configured)?.into();
        *self.kept() = Some((root.clone(), now));
        Ok(root)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Path>, u64)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn resolve(settings: &Cgi, root: &Path, req: &LookupRequest) -> Result<Target, BackendError> {
    if settings.script_filename
        && let Some(filename) = &req.filename
    {
        return resolve_filename(root, req, filename);
    }
    let raw = req.path.strip_prefix(req.base.as_ref()).ok_or_else(|| {
        BackendError::NotFound(format!(
            "{} is not below {}",
            String::from_utf8_lossy(&req.path),
            String::from_utf8_lossy(&req.base)
        ))
    })?;
    let mut refusal: Option<String> = None;
    let mut found: Option<PathBuf> = None;
    let split = cgi_meta::split_script(raw, |prefix| match probe(root, prefix) {
        Probe::Script(file) => {
            found = Some(file);
            Lookup::Script
        }
        Probe::Directory => Lookup::Directory,
        Probe::Missing => Lookup::NotFound,
        Probe::Refused(why) => {
            refusal = Some(why);
            Lookup::NotFound
        }
    });
    let shown = || String::from_utf8_lossy(&req.path).into_owned();
    let split = match split {
        Ok(split) => split,
        Err(cgi_meta::PathError::NotFound) => {
            return Err(match refusal {
                Some(why) => BackendError::Forbidden(format!("{}: {why}", shown())),
                None => BackendError::NotFound(shown()),
            });
        }
        // CGI-9.8-1, CGI-AMB-13, CGI-4.1.5-5: refused, never resolved.
        Err(e) => return Err(BackendError::NotFound(format!("{}: {e}", shown()))),
    };
    let (script, exec) = match (split.kind, found) {
        (SplitKind::Script, Some(exec)) => (split.script, exec),
        (SplitKind::Script, None) => {
            return Err(BackendError::Internal("script split without a file".into()));
        }
        (SplitKind::Directory, _) => {
            let dir = split.script.strip_suffix(b"/").unwrap_or(&split.script);
            let mut chosen = None;
            for index in &settings.index {
                if index.is_empty() || index.contains('/') || index == "." || index == ".." {
                    continue;
                }
                let mut candidate = dir.to_vec();
                candidate.push(b'/');
                candidate.extend_from_slice(index.as_bytes());
                match probe(root, &candidate) {
                    Probe::Script(exec) => {
                        chosen = Some((candidate, exec));
                        break;
                    }
                    Probe::Refused(why) => refusal = Some(why),
                    Probe::Directory | Probe::Missing => {}
                }
            }
            match chosen {
                Some(c) => c,
                None => {
                    let why = refusal.unwrap_or_else(|| "directory without an index script".into());
                    return Err(BackendError::Forbidden(format!("{}: {why}", shown())));
                }
            }
        }
    };
    let mut script_name = req.base.to_vec();
    script_name.extend_from_slice(&script);
    let mut script_filename = root.as_os_str().as_bytes().to_vec();
    script_filename.extend_from_slice(&script);
    Ok(Target {
        dir: exec
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf()),
        exec,
        script_name,
        path_info: split.path_info,
        script_filename,
        document_root: root.as_os_str().as_bytes().to_vec(),
    })
}

/// fcgiwrap's drop-in mode: the web server chose `SCRIPT_FILENAME`; run it only when it
/// is a script inside the root.
fn resolve_filename(
    root: &Path,
    req: &LookupRequest,
    filename: &[u8],
) -> Result<Target, BackendError> {
    let shown = String::from_utf8_lossy(filename).into_owned();
    if filename.first() != Some(&b'/') {
        return Err(BackendError::NotFound(format!(
            "{shown}: not an absolute path"
        )));
    }
    let exec = match check_file(root, Path::new(OsStr::from_bytes(filename))) {
        Probe::Script(exec) => exec,
        Probe::Refused(why) => return Err(BackendError::Forbidden(format!("{shown}: {why}"))),
        Probe::Directory | Probe::Missing => return Err(BackendError::NotFound(shown)),
    };
    Ok(Target {
        dir: exec
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf()),
        script_filename: exec.as_os_str().as_bytes().to_vec(),
        exec,
        script_name: req.script_name.as_deref().unwrap_or_default().to_vec(),
        path_info: req.path_info.as_deref().unwrap_or_default().to_vec(),
        document_root: root.as_os_str().as_bytes().to_vec(),
    })
}

/// Looks a decoded prefix (`/a/b`) up under the canonical `root`.
fn probe(root: &Path, prefix: &[u8]) -> Probe {
    let rel = prefix.strip_prefix(b"/").unwrap_or(prefix);
    check_file(root, &root.join(OsStr::from_bytes(rel)))
}

fn check_file(root: &Path, path: &Path) -> Probe {
    check_plain(root, path).unwrap_or_else(|| check_realpath(root, path))
}

/// [`check_file`] in full: `realpath(3)`, which must land inside the root.
fn check_realpath(root: &Path, path: &Path) -> Probe {
    let canonical = match fs::canonicalize(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Probe::Missing;
        }
        Err(e) => return Probe::Refused(e.to_string()),
    };
    if !canonical.starts_with(root) {
        // A symlink (here or in a parent) leads out of the root.
        return Probe::Refused("leaves the CGI root".into());
    }
    match fs::metadata(&canonical) {
        Ok(meta) => classify(&meta, canonical),
        Err(e) => Probe::Refused(e.to_string()),
    }
}

/// [`check_file`] for the usual case, a path that is the canonical `root` followed by
/// plain names (no empty, `.` or `..` segment, no NUL): an `lstat` of the root (still a
/// directory, not replaced by a symlink) and one per name below it, instead of
/// `realpath`'s `readlink` of every component from `/` (five of a CGI request's
/// fifty-odd system calls for a script at the root's top). None of them a symlink, the
/// path is its own canonical form as long as the directories above the root are as
/// they were when it was resolved ([`Root`]). `None` when the path is not of that form,
/// the root or a name is a symlink, or an `lstat` fails other than by a missing name
/// (or a name under a file, `ENOTDIR`): [`check_realpath`] then decides.
fn check_plain(root: &Path, path: &Path) -> Option<Probe> {
    let rel = path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root.as_os_str().as_bytes())?
        .strip_prefix(b"/")?;
    let plain = |seg: &[u8]| !seg.is_empty() && seg != b"." && seg != b".." && !seg.contains(&0);
    if !rel.split(|&b| b == b'/').all(plain) {
        return None;
    }
    let top = fs::symlink_metadata(root).ok()?;
    if !top.is_dir() {
        return None;
    }
    let mut at = root.to_path_buf();
    let mut last = None;
    for seg in rel.split(|&b| b == b'/') {
        at.push(OsStr::from_bytes(seg));
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return None,
            Ok(meta) => last = Some(meta),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Some(Probe::Missing);
            }
            Err(_) => return None,
        }
    }
    Some(classify(&last?, at))
}

/// What the file at `canonical` (no symlink in it) is to a CGI route.
fn classify(meta: &fs::Metadata, canonical: PathBuf) -> Probe {
    if meta.is_dir() {
        Probe::Directory
    } else if !meta.is_file() {
        Probe::Refused("not a regular file".into())
    } else if meta.permissions().mode() & 0o111 == 0 {
        Probe::Refused("not executable".into())
    } else {
        Probe::Script(canonical)
    }
}

/// The script's command line and environment: only the `pass_env` names (`passed`: their
/// values in portico's environment when the route was set up), the route's `env`
/// settings and the meta-variables, later ones winning (gnosek/fcgiwrap's scrubbing);
/// the script's directory as its working directory.
fn script_command(
    settings: &Cgi,
    passed: &[(Vec<u8>, Vec<u8>)],
    target: &Target,
    vars: Vec<(String, Vec<u8>)>,
    args: Vec<Vec<u8>>,
) -> io::Result<procs::Spawn> {
    let mut cmd = procs::Spawn::new(&target.exec)?;
    for (var, value) in passed {
        cmd.env(var, value)?;
    }
    for (var, value) in &settings.env {
        cmd.env(var.as_bytes(), value.as_bytes())?;
    }
    for (var, value) in &vars {
        cmd.env(var.as_bytes(), value)?;
    }
    for arg in &args {
        cmd.arg(arg)?;
    }
    cmd.dir(&target.dir)?;
    Ok(cmd)
}

fn spawn_error(name: &str, e: &io::Error) -> BackendError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            BackendError::Forbidden(format!("{name}: cannot execute: {e}"))
        }
        _ => BackendError::BadGateway(format!("{name}: cannot execute: {e}")),
    }
}

/// Gives a start place back at `window_end` (if it is still held then), and never
/// finishes: it is raced against what the place is held for.
///
/// A coarse sleep (up to [`rt::coarse::GRAIN`] late on a window of 100 ms by default;
/// a window set to a few milliseconds can thus last about twice as long):
/// nearly every script gives its place back long before, and an async-io timer made
/// and dropped per request cost an eventfd write, a wake-up of the reactor and two
/// `timerfd_settime` with their re-arms (strace under `wrk -c16`: 66.9 system calls per
/// CGI request before this and the pipes' move to the edge poller, 60.2 after).
async fn hold_place<T>(place: &mut Option<Slot>, window_end: Instant) -> T {
    if place.is_some() {
        rt::coarse::sleep_until(window_end).await;
        drop(place.take());
    }
    std::future::pending().await
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(10 * 365 * 24 * 3600))
}

// ---------------------------------------------------------------------------------------
// The concurrency limit

/// One running script counted against `max_concurrent`; released when dropped.
struct Permit(Arc<AtomicUsize>);

impl Permit {
    fn try_acquire(running: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(running.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------
// Running the script

/// The script's stdin.
enum Input {
    /// No body: `/dev/null`.
    None,
    /// A body of known length, streamed from the client.
    Stream(Body),
    /// A spooled body in memory.
    Memory(Vec<Bytes>),
    /// A spooled body in a file, which becomes stdin itself.
    File(fs::File),
}

/// One message of the output stream. The stream ends cleanly only on `End`; a channel
/// closed without it means the script was cut off, and the body fails.
enum Msg {
    Data(Bytes),
    End,
}

/// Why supervision stopped before a normal end.
#[derive(Debug)]
enum Stop {
    /// The time limit passed.
    Timeout,
    /// The client went away.
    Cancelled,
    /// The script misbehaved (502 before the head).
    Failed(String),
}

/// A running script: killed (its whole group) and reaped when dropped before its end.
struct Run {
    child: Child,
    pgid: i32,
    name: Arc<str>,
    deadline: Instant,
    timeout: Duration,
    reaped: bool,
    _permit: Permit,
    _stats: ChildGuard,
    /// Dropped with the run: stops feeding stdin.
    _stop_feed: Sender<()>,
}

impl Run {
    /// After the head: streams the rest of stdout to `chunks` (or discards it), then
    /// reaps the script; on any abnormal end kills the group first, then reaps the leader
    /// (so the group id cannot have been reused when the signal is sent).
    async fn after_head(
        mut self,
        mut stdout: ChildStdout,
        mode: BodyMode,
        rest: Bytes,
        chunks: Sender<Msg>,
        alive: Receiver<()>,
    ) {
        let deadline = self.deadline;
        let outcome = async {
            if mode == BodyMode::Stream {
                watch(pump(&mut stdout, rest, &chunks), deadline, Some(&alive)).await??;
            } else {
                // The reply is complete: the client leaving no longer matters.
                drop(alive);
                watch(discard(&mut stdout), deadline, None).await?;
            }
            Ok::<_, Stop>(())
        }
        .await;
        drop(chunks);
        match outcome {
            Ok(()) => self.finish_exit().await,
            // The head is out; the body stream, closed without its end mark, fails.
            Err(stop) => drop(self.abort(stop, Some(stdout)).await),
        }
    }

    /// Reaps the script if it has exited; no waiting.
    fn try_reap(&mut self) -> bool {
        match self.child.try_status() {
            Ok(Some(status)) => {
                self.reaped(Some(&status));
                self.log_exit(&status);
                true
            }
            Ok(None) => false,
            Err(e) => {
                log::warn!("{}: wait failed: {e}", self.name);
                false
            }
        }
    }

    /// Waits (within the time limit) for a script whose output has ended to exit.
    async fn finish_exit(&mut self) {
        if self.reaped {
            return;
        }
        match watch(self.child.status(), self.deadline, None).await {
            Ok(Ok(status)) => {
                self.reaped(Some(&status));
                self.log_exit(&status);
            }
            Ok(Err(e)) => log::warn!("{}: wait failed: {e}", self.name),
            Err(stop) => drop(self.abort(stop, None).await),
        }
    }

    fn log_exit(&self, status: &ExitStatus) {
        if status.success() {
            log::debug!("{}: {status}", self.name);
        } else {
            log::warn!("{}: {status}", self.name);
        }
    }

    /// Ends an abnormal run: kills the group, reaps the leader, logs why; the error to
    /// answer with, if the client is still there to get one.
    async fn abort(&mut self, stop: Stop, stdout: Option<ChildStdout>) -> Option<BackendError> {
        // Asked before the reap below, which clears the mark.
        let killed_at_shutdown = procs::killed_at_shutdown(self.pgid);
        procs::kill_group(self.pgid);
        drop(stdout);
        let status = self.reap().await;
        let name = &self.name;
        match stop {
            Stop::Timeout => {
                log::warn!(
                    "{name}: killed after the {:?} time limit ({status})",
                    self.timeout
                );
                Some(BackendError::Timeout(format!(
                    "{name}: no answer within {:?}",
                    self.timeout
                )))
            }
            Stop::Cancelled => {
                log::debug!("{name}: client went away, killed ({status})");
                None
            }
            // The grace period of a shutdown ended before the script answered and
            // portico killed it: not the script's fault, and the server is going away
            // (503, as for a request refused while busy), not a bad gateway.
            Stop::Failed(why) if killed_at_shutdown => {
                log::warn!(
                    "{name}: stopped by the shutdown: the grace period ended before it answered ({why}; {status})"
                );
                Some(BackendError::Busy(format!(
                    "{name}: stopped by the shutdown before it answered"
                )))
            }
            Stop::Failed(why) => {
                log::warn!("{name}: {why} ({status})");
                Some(BackendError::BadGateway(format!(
                    "{name}: {why} ({status})"
                )))
            }
        }
    }

    /// Waits for the leader after SIGKILL; describes how it ended.
    async fn reap(&mut self) -> String {
        match rt::timeout(REAP_WAIT, self.child.status()).await {
            Ok(Ok(status)) => {
                self.reaped(Some(&status));
                status.to_string()
            }
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => "not reaped yet".into(),
        }
    }

    fn reaped(&mut self, status: Option<&ExitStatus>) {
        if status.is_some() {
            self.reaped = true;
            procs::unregister(self.pgid);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.reaped {
            // Dropped mid-run (runtime shutting down, or a panic): the leader is not
            // reaped yet, so the group id is still ours. `Child` then kills the leader
            // and reaps it on a task of its own.
            procs::kill_group(self.pgid);
            procs::unregister(self.pgid);
        }
    }
}

/// A script between its spawn and its [`Run`]: if dropped still holding the child (the
/// request went away while the spawn was under way), its group is killed and
/// unregistered, and the child reaped.
struct Started(Option<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(child) = &self.0 {
            procs::kill_group(child.id());
            procs::unregister(child.id());
        }
    }
}

/// Runs `fut` until it ends, the deadline passes, or (with `alive`) the client goes away.
/// A plain function, not an `async fn`, so `fut` is held once (see `rt::map`).
fn watch<'a, T: 'a>(
    fut: impl Future<Output = T> + 'a,
    deadline: Instant,
    alive: Option<&'a Receiver<()>>,
) -> impl Future<Output = Result<T, Stop>> + 'a {
    let limit = async move {
        rt::coarse::sleep_until(deadline).await;
        Err(Stop::Timeout)
    };
    let gone = async move {
        match alive {
            // Nothing is ever sent: `recv` returns when every sender is dropped.
            Some(rx) => {
                let _ = rx.recv().await;
                Err(Stop::Cancelled)
            }
            None => std::future::pending().await,
        }
    };
    rt::race(rt::map(fut, Ok), rt::race(limit, gone))
}

/// Reads stdout until the head is complete; returns it and the body bytes read with it.
async fn read_head(stdout: &mut ChildStdout, opts: &HeadOptions) -> Result<(Head, Bytes), Stop> {
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_READ);
    loop {
        let n = match rt::read_pipe_appending(stdout, &mut buf, HEAD_READ).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Failed(format!("reading its output: {e}"))),
        };
        if n == 0 {
            return Err(Stop::Failed(if buf.is_empty() {
                // CGI-6.1-1, CGI-AMB-10: a script always produces a non-empty response.
                "exited without output (CGI-AMB-10)".into()
            } else {
                format!(
                    "malformed response head: {}",
                    response::Error::UnexpectedEof
                )
            }));
        }
        match response::parse_head(&buf, opts.nph, &opts.limits) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete((head, used))) => {
                let head = build_head(&head, opts).map_err(Stop::Failed)?;
                let rest = Bytes::copy_from_slice(buf.get(used..).unwrap_or_default());
                return Ok((head, rest));
            }
            // CGI-AMB-6, CGI-3.1-4: the parser's clause goes into the message.
            Err(e) => return Err(Stop::Failed(format!("malformed response head: {e}"))),
        }
    }
}

/// What [`read_ready`] found.
enum Ready {
    /// Output up to its end: the whole body.
    Whole(Bytes),
    /// The body so far; the script is still writing.
    Partial(Bytes),
}

/// Most scripts have written everything and are exiting by the time their head is
/// parsed. Reads on while stdout keeps coming, for at most `wait` (and never past the
/// run's deadline): when it reaches its end within that and stays under
/// [`OUTPUT_CHUNK`], the response goes out as one write with a Content-Length (as
/// lighttpd's mod_cgi does) instead of a chunked head, a chunk, and a last chunk after
/// the exit. Otherwise what was read is streamed first.
async fn read_ready(
    stdout: &mut ChildStdout,
    rest: Bytes,
    wait: Duration,
    deadline: Instant,
) -> Ready {
    let mut body = Vec::from(rest);
    if wait.is_zero() {
        return Ready::Partial(Bytes::from(body));
    }
    // One timer for the whole wait; the loop ends as soon as it has fired.
    let mut limit = std::pin::pin!(rt::sleep_until(deadline.min(Instant::now() + wait)));
    // Never past one chunk: what was read goes on as the first chunk if the script is not
    // done, and a chunk is at most OUTPUT_CHUNK. Each read is a whole READ_STEP (pipe
    // capacity's page, PIPE_BUF): a script whose stdout is in packet mode (`O_DIRECT`)
    // has the rest of a packet dropped by a read shorter than it.
    while OUTPUT_CHUNK - body.len() >= READ_STEP {
        let got = rt::race(
            rt::map(rt::read_pipe_appending(stdout, &mut body, READ_STEP), Some),
            rt::map(limit.as_mut(), |()| None),
        )
        .await;
        match got {
            Some(Ok(0)) => return Ready::Whole(Bytes::from(body)),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            // Not within the wait (or an error, which the streaming read meets again).
            Some(Err(_)) | None => break,
        }
    }
    Ready::Partial(Bytes::from(body))
}

/// Streams the body: `rest` first, then stdout in bounded chunks, each sent only when
/// the client has room (backpressure), then the end mark.
async fn pump(stdout: &mut ChildStdout, rest: Bytes, chunks: &Sender<Msg>) -> Result<(), Stop> {
    if !rest.is_empty() {
        chunks
            .send(Msg::Data(rest))
            .await
            .map_err(|_| Stop::Cancelled)?;
    }
    // Small reads reuse one small buffer; a read that fills it moves to full-size
    // chunks, each handed on whole (no copy) and replaced.
    let mut size = HEAD_READ;
    let mut buf = vec![0u8; size];
    loop {
        if buf.len() < size {
            buf = vec![0u8; size];
        }
        let n = match stdout.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Failed(format!("reading its output: {e}"))),
        };
        let filled = n == buf.len();
        let data = if n < OUTPUT_CHUNK / 4 {
            // Do not pin a whole chunk's allocation for a few bytes.
            Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())
        } else {
            let mut full = std::mem::take(&mut buf);
            full.truncate(n);
            Bytes::from(full)
        };
        if filled {
            size = OUTPUT_CHUNK;
        }
        chunks
            .send(Msg::Data(data))
            .await
            .map_err(|_| Stop::Cancelled)?;
    }
    chunks.send(Msg::End).await.map_err(|_| Stop::Cancelled)
}

/// Reads stdout to its end and throws it away (CGI-RW-9, CGI-4.3.3-2).
async fn discard(stdout: &mut ChildStdout) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The response body: chunks until the end mark; a channel closed without it (time
/// limit, script killed, read error) is an error, so the listener cuts the connection
/// instead of ending the body cleanly. Holds `alive` so that dropping the body tells the
/// supervisor the client is gone.
fn output(
    chunks: Receiver<Msg>,
    alive: Sender<()>,
) -> impl futures_lite::Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_lite::stream::unfold(Some((chunks, alive)), |state| async move {
        let (chunks, alive) = state?;
        match chunks.recv().await {
            Ok(Msg::Data(data)) => Some((Ok(data), Some((chunks, alive)))),
            Ok(Msg::End) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "CGI script output cut short",
                )),
                None,
            )),
        }
    })
}

/// Writes the request body into the script's stdin, concurrently with the rest of the
/// run, and closes it. A script that exits (or closes stdin) without reading it all is
/// not an error (EPIPE is expected, CGI-4.2-6).
async fn feed_stdin(mut stdin: ChildStdin, input: Input, stop: Receiver<()>, name: Arc<str>) {
    let feed = async {
        match input {
            Input::Stream(mut body) => {
                while let Some(chunk) = body.chunk().await {
                    match chunk {
                        Ok(chunk) => stdin.write_all(&chunk).await?,
                        Err(e) => {
                            log::debug!("{name}: request body ended early: {e}");
                            break;
                        }
                    }
                }
            }
            Input::Memory(chunks) => {
                for chunk in chunks {
                    stdin.write_all(&chunk).await?;
                }
            }
            Input::None | Input::File(_) => {}
        }
        stdin.close().await
    };
    let stopped = async {
        let _ = stop.recv().await;
        Ok(())
    };
    match rt::race(feed, stopped).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            log::debug!("{name}: did not read all of its input");
        }
        Err(e) => log::debug!("{name}: writing its input: {e}"),
    }
}

/// Logs the script's stderr line by line until it closes, so a chatty script never
/// blocks on a full pipe.
async fn log_stderr(mut stderr: ChildStderr, name: Arc<str>, sink: Option<StderrSink>) {
    let mut pending: Vec<u8> = Vec::new();
    // Most scripts write nothing here: start small, grow while reads fill the buffer.
    let mut buf = vec![0u8; 256];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if n == buf.len() && buf.len() < STDERR_READ {
            buf.resize((buf.len() * 4).min(STDERR_READ), 0);
        }
        pending.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(sink) = &sink {
            sink.send(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()));
        }
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            log_line(&name, &line);
        }
        if pending.len() > MAX_LOG_LINE {
            log_line(&name, &pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        log_line(&name, &pending);
    }
}

fn log_line(name: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    log::warn!("{name}: {}", String::from_utf8_lossy(line));
}

#[cfg(test)]
mod tests {
    //! Real scripts from `fixtures/cgi/`, driven through [`CgiBackend::call`]. Tests named
    //! `cgi_*` check the clause of `shared/specs/cgi.md` in their name.

    use super::*;
    use http::{HeaderValue, StatusCode, header};
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};

    use http::Version;

    use crate::model::Endpoint;

    const MIB: usize = 1024 * 1024;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cgi")
    }

    fn canonical_fixtures() -> PathBuf {
        fs::canonicalize(fixtures()).expect("fixtures/cgi exists")
    }

    fn settings(root: PathBuf) -> Cgi {
        Cgi {
            root,
            timeout: Duration::from_secs(30),
            index: vec!["index.cgi".into()],
            pass_env: vec!["PATH".into(), "LANG".into()],
            env: Vec::new(),
            max_concurrent: 64,
            search_args: false,
            spool_memory: MIB,
            pass_authorization: false,
            header_policy: HeaderPolicy::Strict,
            nph: true,
            max_header_bytes: 64 * 1024,
            script_filename: false,
            whole_body_wait: Duration::from_millis(1),
            max_starting: 8,
            start_window: Duration::from_millis(100),
        }
    }

    fn backend_with(s: Cgi) -> CgiBackend {
        let server = ServerInfo {
            name: "portico.test".into(),
            software: "portico/test".into(),
        };
        CgiBackend::new(
            Arc::new(s),
            Arc::new(server),
            Stats::new(Vec::<String>::new()),
        )
    }

    fn backend() -> CgiBackend {
        backend_with(settings(fixtures()))
    }

    fn route() -> RouteMatch {
        RouteMatch {
            name: "cgi".into(),
            base: Bytes::from_static(b"/cgi-bin"),
        }
    }

    fn request(method: Method, target: &str) -> Request {
        let mut req = Request::new(method, target.as_bytes());
        req.local = Endpoint {
            addr: "127.0.0.1".into(),
            port: Some(8080),
        };
        req.peer = Endpoint {
            addr: "192.0.2.7".into(),
            port: Some(50123),
        };
        req
    }

    fn get(target: &str) -> Request {
        request(Method::GET, target)
    }

    fn call(b: &CgiBackend, req: Request) -> Result<Reply, BackendError> {
        rt::block_on(b.call(req, &route()))
    }

    fn response(r: Result<Reply, BackendError>) -> Response {
        match r {
            Ok(Reply::Response(resp)) => resp,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    async fn read_all(body: &mut Body) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = body.chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// The response and its body as text.
    fn fetch(b: &CgiBackend, req: Request) -> (Response, String) {
        let mut resp = response(call(b, req));
        let body = rt::block_on(read_all(&mut resp.body)).expect("complete body");
        (resp, String::from_utf8_lossy(&body).into_owned())
    }

    fn parse_env(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn env_with(b: &CgiBackend, req: Request) -> BTreeMap<String, String> {
        let (resp, text) = fetch(b, req);
        assert_eq!(resp.status, StatusCode::OK, "{text}");
        parse_env(&text)
    }

    fn env_of(target: &str) -> BTreeMap<String, String> {
        env_with(&backend(), get(target))
    }

    fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
        resp.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn chunked_body(data: Vec<u8>, piece: usize, len: Option<u64>) -> Body {
        let data = Bytes::from(data);
        let pieces: Vec<io::Result<Bytes>> = (0..data.len())
            .step_by(piece)
            .map(|i| Ok(data.slice(i..(i + piece).min(data.len()))))
            .collect();
        Body::from_stream(len, futures_lite::stream::iter(pieces))
    }

    /// Deterministic, not very compressible test data.
    fn test_data(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn md5_of(data: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("md5sum runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(data)
            .expect("write to md5sum");
        let out = child.wait_with_output().expect("md5sum output");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    // ---- /proc helpers -----------------------------------------------------------------

    /// (state, ppid, pgrp) of a process.
    fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = s.get(s.rfind(')')? + 2..)?;
        let mut it = rest.split_whitespace();
        let state = it.next()?.chars().next()?;
        let ppid = it.next()?.parse().ok()?;
        let pgrp = it.next()?.parse().ok()?;
        Some((state, ppid, pgrp))
    }

    fn all_pids() -> Vec<i32> {
        fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Processes of group `pgid` that are still alive (zombies excluded).
    fn live_in_group(pgid: i32) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&p| matches!(proc_stat(p), Some((st, _, g)) if g == pgid && st != 'Z'))
            .collect()
    }

    /// Zombie children of this test process.
    fn our_zombies() -> Vec<i32> {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        all_pids()
            .into_iter()
            .filter(|&p| matches!(proc_stat(p), Some(('Z', ppid, _)) if ppid == me))
            .collect()
    }

    fn eventually(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if ok() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn plain_paths_are_checked_name_by_name_and_the_rest_by_realpath_with_the_same_answers() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let root = base.join("root");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::create_dir_all(base.join("rootx")).expect("mkdir");
        let script = |p: &Path| {
            fs::write(p, "#!/bin/sh\n").expect("write");
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        script(&root.join("tiny"));
        script(&root.join("sub/s.cgi"));
        script(&base.join("outside.cgi"));
        script(&base.join("rootx/s.cgi"));
        fs::write(root.join("plain.txt"), "x").expect("write");
        symlink("sub/s.cgi", root.join("link.cgi")).expect("symlink");
        symlink("sub", root.join("dirlink")).expect("symlink");
        symlink("../outside.cgi", root.join("out.cgi")).expect("symlink");
        symlink("..", root.join("up")).expect("symlink");
        symlink("nowhere", root.join("dangling.cgi")).expect("symlink");
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).expect("path");
        // SAFETY: a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o755) }, 0);

        let show = |p: Probe| match p {
            Probe::Script(at) => format!("script {}", at.display()),
            Probe::Directory => "directory".into(),
            Probe::Missing => "missing".into(),
            Probe::Refused(why) => format!("refused: {why}"),
        };
        let r = root.display().to_string();
        // (path, the answer, whether the name-by-name check gives it)
        let cases = [
            (format!("{r}/tiny"), format!("script {r}/tiny"), true),
            (
                format!("{r}/sub/s.cgi"),
                format!("script {r}/sub/s.cgi"),
                true,
            ),
            (format!("{r}/sub"), "directory".into(), true),
            (format!("{r}/missing"), "missing".into(), true),
            (format!("{r}/missing/x"), "missing".into(), true),
            (format!("{r}/tiny/extra"), "missing".into(), true),
            (
                format!("{r}/plain.txt"),
                "refused: not executable".into(),
                true,
            ),
            (
                format!("{r}/fifo"),
                "refused: not a regular file".into(),
                true,
            ),
            // Trailing slash or dot on a file: realpath's "not a directory".
            (format!("{r}/tiny/"), "missing".into(), false),
            (format!("{r}/tiny/."), "missing".into(), false),
            (format!("{r}//tiny"), format!("script {r}/tiny"), false),
            (
                format!("{r}/sub/../tiny"),
                format!("script {r}/tiny"),
                false,
            ),
            (
                format!("{r}/link.cgi"),
                format!("script {r}/sub/s.cgi"),
                false,
            ),
            (
                format!("{r}/dirlink/s.cgi"),
                format!("script {r}/sub/s.cgi"),
                false,
            ),
            (format!("{r}/dangling.cgi"), "missing".into(), false),
            (
                format!("{r}/out.cgi"),
                "refused: leaves the CGI root".into(),
                false,
            ),
            (
                format!("{r}/up/outside.cgi"),
                "refused: leaves the CGI root".into(),
                false,
            ),
            // A sibling whose name starts with the root's, and a file outside
            // altogether (fcgiwrap mode's SCRIPT_FILENAME).
            (
                format!("{r}x/s.cgi"),
                "refused: leaves the CGI root".into(),
                false,
            ),
            (
                format!("{}/outside.cgi", base.display()),
                "refused: leaves the CGI root".into(),
                false,
            ),
        ];
        for (path, want, plain) in &cases {
            let path = PathBuf::from(path);
            assert_eq!(show(check_file(&root, &path)), *want, "{}", path.display());
            let fast = check_plain(&root, &path);
            assert_eq!(fast.is_some(), *plain, "{}", path.display());
            // Where the name-by-name check answers, realpath answers the same.
            if let Some(fast) = fast {
                assert_eq!(
                    show(fast),
                    show(check_realpath(&root, &path)),
                    "{}",
                    path.display()
                );
            }
        }
        // A NUL in a web server's SCRIPT_FILENAME: refused, as before (not "missing").
        let nul = PathBuf::from(format!("{r}/missing/a\0b"));
        assert!(check_plain(&root, &nul).is_none());
        assert!(matches!(check_file(&root, &nul), Probe::Refused(_)));
        // A root replaced by a symlink is left to realpath (which here lands outside
        // the root as it was resolved, and refuses).
        let moved = base.join("moved");
        fs::rename(&root, &moved).expect("rename");
        symlink(base.join("rootx"), &root).expect("symlink");
        let path = root.join("s.cgi");
        assert!(check_plain(&root, &path).is_none());
        assert_eq!(
            show(check_file(&root, &path)),
            "refused: leaves the CGI root"
        );
    }

    #[test]
    fn the_canonical_root_is_kept_for_a_second_and_errors_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        fs::create_dir(base.join("one")).expect("mkdir");
        fs::create_dir(base.join("two")).expect("mkdir");
        let current = base.join("current");
        let root = Root::default();
        let t0 = rt::coarse_millis();
        // A missing root is an error, and not remembered.
        assert!(root.canonical(&current, t0).is_err());
        std::os::unix::fs::symlink("one", &current).expect("symlink");
        assert_eq!(
            &*root.canonical(&current, t0).expect("root"),
            base.join("one")
        );
        fs::remove_file(&current).expect("rm");
        std::os::unix::fs::symlink("two", &current).expect("symlink");
        // Within the second, the root as it was; after it (or refreshed), the new one.
        let within = t0 + Root::FRESH_MS - 1;
        assert_eq!(
            &*root.canonical(&current, within).expect("root"),
            base.join("one")
        );
        let after = t0 + Root::FRESH_MS;
        assert_eq!(
            &*root.canonical(&current, after).expect("root"),
            base.join("two")
        );
        fs::remove_file(&current).expect("rm");
        std::os::unix::fs::symlink("one", &current).expect("symlink");
        assert_eq!(
            &*root.refresh(&current, after).expect("root"),
            base.join("one")
        );
    }

    #[test]
    fn a_script_of_a_root_just_repointed_runs_at_once() {
        // A deploy re-points `current` between two requests: the second names a script
        // only the new release has. The root kept from the first request refuses it
        // (404); the backend looks the root up again and runs it.
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        for release in ["one", "two"] {
            fs::create_dir(base.join(release)).expect("mkdir");
        }
        let script = |release: &str, name: &str| {
            let path = base.join(release).join(name);
            fs::write(
                &path,
                format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n{release}'\n"),
            )
            .expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        script("one", "old.cgi");
        script("two", "new.cgi");
        let current = base.join("current");
        std::os::unix::fs::symlink("one", &current).expect("symlink");
        let backend = backend_with(settings(current.clone()));
        let (resp, body) = fetch(&backend, get("/cgi-bin/old.cgi"));
        assert_eq!((resp.status, body.as_str()), (StatusCode::OK, "one"));
        fs::remove_file(&current).expect("rm");
        std::os::unix::fs::symlink("two", &current).expect("symlink");
        let (resp, body) = fetch(&backend, get("/cgi-bin/new.cgi"));
        assert_eq!((resp.status, body.as_str()), (StatusCode::OK, "two"));
        // A script neither release has is still a 404.
        let r = call(&backend, get("/cgi-bin/none.cgi"));
        assert!(matches!(r, Err(BackendError::NotFound(_))), "{r:?}");
    }

    fn pid_backend(timeout: Duration) -> (CgiBackend, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pids");
        let mut s = settings(fixtures());
        s.timeout = timeout;
        s.env = vec![("PIDFILE".into(), pidfile.display().to_string())];
        (backend_with(s), dir, pidfile)
    }

    fn read_pids(pidfile: &Path) -> Vec<i32> {
        assert!(
            eventually(Duration::from_secs(10), || pidfile.exists()),
            "script never wrote {}",
            pidfile.display()
        );
        fs::read_to_string(pidfile)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Every process of the script's group is dead. (A pid alone is not checked: once
    /// reaped it may be reused, even as a thread id of this test process.)
    fn assert_group_gone(pids: &[i32]) {
        let leader = *pids.first().expect("leader pid");
        assert!(
            eventually(Duration::from_secs(5), || live_in_group(leader).is_empty()
                && live_in_group(leader).is_empty()),
            "group {leader} still has live processes: {:?}",
            live_in_group(leader)
        );
    }

    // ---- a log capture for the stderr test ----------------------------------------------

    struct Capture;
    static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static CAPTURE: Capture = Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = record.args().to_string();
            if record.target() == "portico::backend::cgi"
                && record.level() == log::Level::Warn
                && line.contains("line")
                && let Ok(mut lines) = CAPTURED.lock()
            {
                lines.push(line);
            }
        }
        fn flush(&self) {}
    }

    /// Installs the capture logger; false when another logger got there first.
    fn capture_logs() -> bool {
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        *INSTALLED.get_or_init(|| {
            let ok = log::set_logger(&CAPTURE).is_ok();
            if ok {
                log::set_max_level(log::LevelFilter::Warn);
            }
            ok
        })
    }

    // ---- meta-variables (RFC 3875 §4.1) --------------------------------------------------

    #[test]
    fn cgi_4_1_4_gateway_interface() {
        assert_eq!(env_of("/cgi-bin/env.cgi")["GATEWAY_INTERFACE"], "CGI/1.1");
    }

    #[test]
    fn cgi_4_1_5_path_info() {
        let env = env_of("/cgi-bin/env.cgi/a%20b/C");
        assert_eq!(env["PATH_INFO"], "/a b/C");
        assert_eq!(env["SCRIPT_NAME"], "/cgi-bin/env.cgi");
    }

    #[test]
    fn cgi_4_1_5_3_trailing_slash_is_path_info_slash() {
        let env = env_of("/cgi-bin/env.cgi/");
        assert_eq!(env["PATH_INFO"], "/");
        let root = canonical_fixtures().display().to_string();
        assert_eq!(env["PATH_TRANSLATED"], format!("{root}/"));
    }

    #[test]
    fn cgi_4_1_6_path_translated() {
        let env = env_of("/cgi-bin/env.cgi/this%2eis%2epath%3binfo");
        assert_eq!(env["PATH_INFO"], "/this.is.path;info");
        let root = canonical_fixtures().display().to_string();
        assert_eq!(env["PATH_TRANSLATED"], format!("{root}/this.is.path;info"));
    }

    #[test]
    fn cgi_4_1_6_7_no_path_info_no_path_translated() {
        let env = env_of("/cgi-bin/env.cgi");
        assert!(!env.contains_key("PATH_INFO"), "{env:?}");
        assert!(!env.contains_key("PATH_TRANSLATED"), "{env:?}");
    }

    #[test]
    fn cgi_4_1_7_query_string_raw() {
        assert_eq!(
            env_of("/cgi-bin/env.cgi?a=1%202&b=%26")["QUERY_STRING"],
            "a=1%202&b=%26"
        );
        // CGI-4.1.7-3: always set, empty without a query.
        assert_eq!(env_of("/cgi-bin/env.cgi")["QUERY_STRING"], "");
    }

    #[test]
    fn cgi_4_1_8_remote_addr() {
        let env = env_of("/cgi-bin/env.cgi");
        assert_eq!(env["REMOTE_ADDR"], "192.0.2.7");
        assert_eq!(env["REMOTE_PORT"], "50123");
    }

    #[test]
    fn cgi_4_1_12_request_method() {
        let method = Method::from_bytes(b"PATCH").expect("token");
        let env = env_with(&backend(), request(method, "/cgi-bin/env.cgi"));
        assert_eq!(env["REQUEST_METHOD"], "PATCH");
    }

    #[test]
    fn cgi_4_1_13_script_name() {
        assert_eq!(
            env_of("/cgi-bin/env.cgi")["SCRIPT_NAME"],
            "/cgi-bin/env.cgi"
        );
        // CGI-4.1.13-4: no part of PATH_INFO.
        assert_eq!(
            env_of("/cgi-bin/env.cgi/x/y")["SCRIPT_NAME"],
            "/cgi-bin/env.cgi"
        );
    }

    #[test]
    fn cgi_4_1_14_server_name() {
        let mut req = get("/cgi-bin/env.cgi");
        req.headers
            .insert(header::HOST, HeaderValue::from_static("example.org:8080"));
        assert_eq!(env_with(&backend(), req)["SERVER_NAME"], "example.org");
        // CGI-AMB-11: without Host, the configured name.
        assert_eq!(env_of("/cgi-bin/env.cgi")["SERVER_NAME"], "portico.test");
    }

    #[test]
    fn cgi_4_1_15_server_port() {
        assert_eq!(env_of("/cgi-bin/env.cgi")["SERVER_PORT"], "8080");
    }

    #[test]
    fn cgi_4_1_16_server_protocol() {
        assert_eq!(env_of("/cgi-bin/env.cgi")["SERVER_PROTOCOL"], "HTTP/1.1");
        let mut req = get("/cgi-bin/env.cgi");
        req.version = Version::HTTP_10;
        assert_eq!(env_with(&backend(), req)["SERVER_PROTOCOL"], "HTTP/1.0");
    }

    #[test]
    fn cgi_4_1_17_server_software() {
        assert_eq!(
            env_of("/cgi-bin/env.cgi")["SERVER_SOFTWARE"],
            "portico/test"
        );
    }

    #[test]
    fn cgi_4_1_18_http_headers() {
        let mut req = get("/cgi-bin/env.cgi");
        req.headers
            .insert("x-foo-bar", HeaderValue::from_static("baz"));
        req.headers
            .append(header::ACCEPT, HeaderValue::from_static("text/html"));
        req.headers
            .append(header::ACCEPT, HeaderValue::from_static("*/*"));
        let env = env_with(&backend(), req);
        assert_eq!(env["HTTP_X_FOO_BAR"], "baz");
        assert_eq!(env["HTTP_ACCEPT"], "text/html, */*");
    }

    #[test]
    fn cgi_rw_6_no_http_proxy() {
        let mut req = get("/cgi-bin/env.cgi");
        req.headers
            .insert("proxy", HeaderValue::from_static("http://evil.example/"));
        let env = env_with(&backend(), req);
        assert!(!env.contains_key("HTTP_PROXY"), "{env:?}");
    }

    #[test]
    fn cgi_9_2_1_no_authorization_by_default() {
        let mut req = get("/cgi-bin/env.cgi");
        req.headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        let env = env_with(&backend(), req);
        assert!(!env.contains_key("HTTP_AUTHORIZATION"), "{env:?}");
    }

    #[test]
    fn cgi_rw_5_pass_authorization_when_configured() {
        let mut s = settings(fixtures());
        s.pass_authorization = true;
        let mut req = get("/cgi-bin/env.cgi");
        req.headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        let env = env_with(&backend_with(s), req);
        assert_eq!(env["HTTP_AUTHORIZATION"], "Basic eDp5");
    }

    #[test]
    fn cgi_amb_7_strict_policy_drops_underscore_headers() {
        let mut req = get("/cgi-bin/env.cgi");
        req.headers
            .insert("x_foo", HeaderValue::from_static("evil"));
        req.headers
            .insert("x-foo", HeaderValue::from_static("good"));
        let env = env_with(&backend(), req);
        assert_eq!(env["HTTP_X_FOO"], "good");
    }

    #[test]
    fn cgi_amb_7_map_policy_collision_is_bad_request() {
        let mut s = settings(fixtures());
        s.header_policy = HeaderPolicy::Map;
        let mut req = get("/cgi-bin/env.cgi");
        req.headers
            .insert("x_foo", HeaderValue::from_static("evil"));
        req.headers
            .insert("x-foo", HeaderValue::from_static("good"));
        let r = call(&backend_with(s), req);
        assert!(matches!(r, Err(BackendError::BadRequest(_))), "{r:?}");
    }

    #[test]
    fn cgi_4_1_2_content_length_of_known_body() {
        let mut req = request(Method::POST, "/cgi-bin/env.cgi");
        req.body = Body::full(&b"hello"[..]);
        assert_eq!(env_with(&backend(), req)["CONTENT_LENGTH"], "5");
    }

    #[test]
    fn cgi_amb_4_no_content_length_without_body() {
        assert!(!env_of("/cgi-bin/env.cgi").contains_key("CONTENT_LENGTH"));
    }

    #[test]
    fn cgi_amb_4_content_length_zero_for_empty_framed_body() {
        let mut req = request(Method::POST, "/cgi-bin/env.cgi");
        req.body = Body::empty();
        assert_eq!(env_with(&backend(), req)["CONTENT_LENGTH"], "0");
    }

    #[test]
    fn cgi_4_1_3_content_type() {
        let mut req = request(Method::POST, "/cgi-bin/env.cgi");
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        req.body = Body::full(&b"a=1"[..]);
        let env = env_with(&backend(), req);
        assert_eq!(env["CONTENT_TYPE"], "application/x-www-form-urlencoded");
        assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
    }

    #[test]
    fn cgi_rw_1_document_root_and_script_filename() {
        let env = env_of("/cgi-bin/env.cgi/x");
        let root = canonical_fixtures().display().to_string();
        assert_eq!(env["DOCUMENT_ROOT"], root);
        assert_eq!(env["SCRIPT_FILENAME"], format!("{root}/env.cgi"));
        assert_eq!(env["REQUEST_URI"], "/cgi-bin/env.cgi/x");
    }

    #[test]
    fn cgi_7_2_3_working_directory_is_the_scripts() {
        let (resp, _) = fetch(&backend(), get("/cgi-bin/env.cgi"));
        let root = canonical_fixtures().display().to_string();
        assert_eq!(header(&resp, "x-cwd"), Some(root.as_str()));
    }

    #[test]
    fn cgi_9_5_scrubbed_environment() {
        let mut s = settings(fixtures());
        s.env = vec![("X_SITE".into(), "portico".into())];
        let env = env_with(&backend_with(s), get("/cgi-bin/env.cgi"));
        assert_eq!(env["X_SITE"], "portico");
        assert_eq!(
            env.get("PATH").map(String::as_str),
            std::env::var("PATH").ok().as_deref()
        );
        // Nothing else of the test process's environment.
        for leaked in [
            "HOME",
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "RUST_TEST_THREADS",
        ] {
            assert!(!env.contains_key(leaked), "{leaked} leaked: {env:?}");
        }
        let allowed = |k: &str| {
            k.starts_with("HTTP_")
                || ["PATH", "LANG", "X_SITE", "PWD", "SHLVL", "_"].contains(&k)
                || k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        };
        assert!(env.keys().all(|k| allowed(k)), "{env:?}");
    }

    #[test]
    fn cgi_rw_2_redirect_status_set() {
        assert_eq!(env_of("/cgi-bin/env.cgi")["REDIRECT_STATUS"], "200");
    }

    /// Descriptors of this process that a child inherits (no `FD_CLOEXEC`), above 2.
    fn inheritable_fds() -> Vec<u32> {
        let mut fds: Vec<u32> = fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        fds.retain(|&fd| {
            fd > 2
                && fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).is_ok_and(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("flags:"))
                        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                        .is_some_and(|flags| flags & 0o2000000 == 0)
                })
        });
        fds
    }

    #[test]
    fn cgi_t_23_no_portico_descriptors_leak() {
        // A spooled body makes portico hold a temporary file; a streamed one, pipes.
        let mut req = request(Method::POST, "/cgi-bin/fds.cgi");
        req.body = chunked_body(test_data(2 * MIB), 4096, None);
        let (resp, text) = fetch(&backend(), req);
        assert_eq!(resp.status, StatusCode::OK);
        let inherited = inheritable_fds();
        let extra: Vec<u32> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .filter(|fd| *fd > 2 && !inherited.contains(fd))
            .collect();
        // Only the script's own directory handle.
        assert_eq!(
            extra.len(),
            1,
            "script saw {text:?}; inherited from the test: {inherited:?}"
        );
    }

    #[test]
    fn examples_run() {
        let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cgi-bin");
        let b = backend_with(settings(examples.clone()));
        let (resp, text) = fetch(&b, get("/cgi-bin/hello.sh/x"));
        assert_eq!(resp.status, StatusCode::OK);
        assert!(text.contains("GET /cgi-bin/hello.sh/x"), "{text}");
        let env = env_with(&b, get("/cgi-bin/env.pl"));
        assert_eq!(env["SCRIPT_NAME"], "/cgi-bin/env.pl");
        let mut req = request(Method::POST, "/cgi-bin/form.py?q=get");
        req.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        req.body = Body::full(&b"name=p%3Cb%3E"[..]);
        let (resp, text) = fetch(&b, req);
        assert_eq!(resp.status, StatusCode::OK);
        assert!(text.contains("<td>q</td><td>get</td>"), "{text}");
        assert!(text.contains("<td>name</td><td>p&lt;b&gt;</td>"), "{text}");
        // build.rs compiles the C example whenever a C compiler is there.
        let have_cc = std::process::Command::new("cc")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if have_cc || examples.join("hello-c.cgi").exists() {
            let (resp, text) = fetch(&b, get("/cgi-bin/hello-c.cgi/p?x=1"));
            assert_eq!(resp.status, StatusCode::OK);
            assert!(text.contains("PATH_INFO=/p\nQUERY_STRING=x=1"), "{text}");
        }
    }

    // ---- command line (§4.4) -----------------------------------------------------------

    fn args_with(search: bool, req: Request) -> Vec<String> {
        let mut s = settings(fixtures());
        s.search_args = search;
        let (resp, text) = fetch(&backend_with(s), req);
        assert_eq!(resp.status, StatusCode::OK);
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn cgi_4_4_search_args_when_enabled() {
        assert_eq!(
            args_with(true, get("/cgi-bin/args.cgi?a+b%20c")),
            ["a", "b c"]
        );
        // CGI-4.4-1: `=` means not indexed; POST is never indexed.
        assert!(args_with(true, get("/cgi-bin/args.cgi?a=b")).is_empty());
        assert!(args_with(true, request(Method::POST, "/cgi-bin/args.cgi?a+b")).is_empty());
    }

    #[test]
    fn cgi_amb_9_no_search_args_by_default() {
        assert!(args_with(false, get("/cgi-bin/args.cgi?a+b")).is_empty());
    }

    #[test]
    fn cgi_rw_12_no_option_like_args() {
        assert!(args_with(true, get("/cgi-bin/args.cgi?-s")).is_empty());
        assert!(args_with(true, get("/cgi-bin/args.cgi?a+%2Dd")).is_empty());
    }

    // ---- script resolution and refusals -------------------------------------------------

    fn refused(target: &str) -> BackendError {
        match call(&backend(), get(target)) {
            Err(e) => e,
            Ok(r) => panic!("{target} was served: {r:?}"),
        }
    }

    #[test]
    fn cgi_9_8_1_dot_segments_refused() {
        for target in [
            "/cgi-bin/../cgi-bin/env.cgi",
            "/cgi-bin/sub/../env.cgi",
            "/cgi-bin/%2e%2e/cgi/env.cgi",
            "/cgi-bin/sub/%2E%2E/env.cgi",
            "/cgi-bin/./env.cgi",
            "/cgi-bin/env.cgi/../../etc/passwd",
        ] {
            assert!(
                matches!(refused(target), BackendError::NotFound(_)),
                "{target}"
            );
        }
    }

    #[test]
    fn cgi_amb_13_encoded_slash_refused() {
        for target in ["/cgi-bin/sub%2Findex.cgi", "/cgi-bin/env.cgi/a%2fb"] {
            assert!(
                matches!(refused(target), BackendError::NotFound(_)),
                "{target}"
            );
        }
    }

    #[test]
    fn cgi_7_2_4_nul_and_line_breaks_refused() {
        for target in [
            "/cgi-bin/env.cgi%00.txt",
            "/cgi-bin/env.cgi/a%00b",
            "/cgi-bin/env.cgi/a%0d%0aSet-Cookie:x",
            "/cgi-bin/env%0a.cgi",
        ] {
            assert!(
                matches!(refused(target), BackendError::NotFound(_)),
                "{target}"
            );
        }
    }

    #[test]
    fn missing_script_not_found() {
        assert!(matches!(
            refused("/cgi-bin/no-such.cgi"),
            BackendError::NotFound(_)
        ));
        assert!(matches!(
            refused("/cgi-bin/sub/no-such.cgi/x"),
            BackendError::NotFound(_)
        ));
    }

    #[test]
    fn non_executable_forbidden() {
        assert!(matches!(
            refused("/cgi-bin/noexec.cgi"),
            BackendError::Forbidden(_)
        ));
    }

    #[test]
    fn symlinks_out_of_the_root_forbidden() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = fixtures().join("env.cgi");
        std::os::unix::fs::symlink(&outside, root.path().join("out.cgi")).expect("symlink");
        std::os::unix::fs::symlink(fixtures(), root.path().join("outdir")).expect("symlink");
        std::os::unix::fs::symlink("/", root.path().join("slash")).expect("symlink");
        fs::create_dir(root.path().join("in")).expect("mkdir");
        fs::copy(&outside, root.path().join("in/env.cgi")).expect("copy");
        std::os::unix::fs::symlink("in/env.cgi", root.path().join("inside.cgi")).expect("symlink");
        let b = backend_with(settings(root.path().to_path_buf()));
        for target in [
            "/cgi-bin/out.cgi",
            "/cgi-bin/outdir/env.cgi",
            "/cgi-bin/slash/bin/sh",
        ] {
            let r = call(&b, get(target));
            assert!(
                matches!(r, Err(BackendError::Forbidden(_))),
                "{target}: {r:?}"
            );
        }
        // A symlink that stays inside the root is fine.
        let env = env_with(&b, get("/cgi-bin/inside.cgi/p"));
        assert_eq!(env["SCRIPT_NAME"], "/cgi-bin/inside.cgi");
        assert_eq!(env["PATH_INFO"], "/p");
    }

    #[test]
    fn scripts_run_under_the_normal_policy_though_started_from_a_batch_thread() {
        // The spawning thread is made SCHED_BATCH (procs::batch_this_thread); the script
        // and what it runs must not inherit that.
        let root = tempfile::tempdir().expect("tempdir");
        let script = root.path().join("policy.cgi");
        fs::write(
            &script,
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
             awk '{print $41}' /proc/self/stat\n",
        )
        .expect("write");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let b = backend_with(settings(root.path().to_path_buf()));
        for _ in 0..3 {
            let (resp, text) = fetch(&b, get("/cgi-bin/policy.cgi"));
            assert_eq!(resp.status, StatusCode::OK, "{text}");
            assert_eq!(text.trim(), libc::SCHED_OTHER.to_string());
        }
    }

    #[test]
    fn non_regular_file_forbidden() {
        let root = tempfile::tempdir().expect("tempdir");
        let fifo = root.path().join("fifo.cgi");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("755")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let r = call(
            &backend_with(settings(root.path().to_path_buf())),
            get("/cgi-bin/fifo.cgi"),
        );
        assert!(matches!(r, Err(BackendError::Forbidden(_))), "{r:?}");
    }

    #[test]
    fn index_script_in_subdirectory() {
        for target in ["/cgi-bin/sub/", "/cgi-bin/sub"] {
            let (resp, text) = fetch(&backend(), get(target));
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(text, "index of sub: /cgi-bin/sub/index.cgi|\n", "{target}");
        }
        // Its working directory is its own.
        let env = env_of("/cgi-bin/sub/index.cgi/more");
        assert_eq!(env.len(), 0, "index.cgi prints no variables");
    }

    #[test]
    fn directory_without_index_forbidden() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir(root.path().join("empty")).expect("mkdir");
        let r = call(
            &backend_with(settings(root.path().to_path_buf())),
            get("/cgi-bin/empty/"),
        );
        assert!(matches!(r, Err(BackendError::Forbidden(_))), "{r:?}");
    }

    #[test]
    fn script_filename_mode_stays_inside_the_root() {
        let mut s = settings(fixtures());
        s.script_filename = true;
        let b = backend_with(s);
        let file = canonical_fixtures().join("env.cgi");
        let mut req = get("/anything");
        req.params = vec![
            (
                Bytes::from_static(b"SCRIPT_FILENAME"),
                Bytes::from(file.display().to_string()),
            ),
            (
                Bytes::from_static(b"SCRIPT_NAME"),
                Bytes::from_static(b"/app.cgi"),
            ),
            (Bytes::from_static(b"PATH_INFO"), Bytes::from_static(b"/x")),
        ];
        let env = env_with(&b, req);
        assert_eq!(env["SCRIPT_NAME"], "/app.cgi");
        assert_eq!(env["PATH_INFO"], "/x");
        let mut req = get("/anything");
        req.params = vec![(
            Bytes::from_static(b"SCRIPT_FILENAME"),
            Bytes::from_static(b"/bin/sh"),
        )];
        let r = call(&b, req);
        assert!(matches!(r, Err(BackendError::Forbidden(_))), "{r:?}");
    }

    // ---- responses (§5, §6) -------------------------------------------------------------

    #[test]
    fn cgi_6_2_1_document() {
        let (resp, text) = fetch(&backend(), get("/cgi-bin/cookies.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(header(&resp, "content-type"), Some("text/plain"));
        assert_eq!(text, "cookies\n");
    }

    #[test]
    fn cgi_6_3_3_status_and_rw_8_framing_fields_dropped() {
        let (resp, text) = fetch(&backend(), get("/cgi-bin/status.cgi"));
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(text, "nope\n");
        assert_eq!(header(&resp, "x-extra"), Some("kept"));
        for dropped in [
            "content-length",
            "connection",
            "transfer-encoding",
            "status",
        ] {
            assert!(resp.headers.get(dropped).is_none(), "{dropped} relayed");
        }
    }

    #[test]
    fn set_cookie_order_kept() {
        let (resp, _) = fetch(&backend(), get("/cgi-bin/cookies.cgi"));
        let cookies: Vec<&str> = resp
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2", "c=3"]);
        assert_eq!(header(&resp, "x-between"), Some("1"));
    }

    #[test]
    fn cgi_6_2_2_local_redirect() {
        match call(&backend(), get("/cgi-bin/local-redirect.cgi")) {
            Ok(Reply::LocalRedirect(to)) => {
                assert_eq!(to.as_ref(), b"/cgi-bin/env.cgi?from=redirect");
            }
            other => panic!("expected a local redirect, got {other:?}"),
        }
    }

    #[test]
    fn cgi_6_2_3_client_redirect() {
        let (resp, text) = fetch(&backend(), get("/cgi-bin/client-redirect.cgi"));
        assert_eq!(resp.status, StatusCode::FOUND);
        assert_eq!(
            header(&resp, "location"),
            Some("http://example.org/elsewhere")
        );
        assert_eq!(text, "");
    }

    #[test]
    fn cgi_6_2_4_client_redirect_with_document() {
        let (resp, text) = fetch(&backend(), get("/cgi-bin/redirect-doc.cgi"));
        assert_eq!(resp.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header(&resp, "location"), Some("http://example.org/new"));
        assert_eq!(header(&resp, "content-type"), Some("text/html"));
        assert_eq!(text, "<a href=\"http://example.org/new\">moved</a>\n");
    }

    #[test]
    fn cgi_5_2_4_nph_relayed() {
        let (resp, text) = fetch(&backend(), get("/cgi-bin/nph-hello.cgi"));
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(header(&resp, "x-nph"), Some("yes"));
        // Location is an ordinary HTTP field of an NPH response, not a redirect.
        assert_eq!(header(&resp, "location"), Some("/not-a-redirect"));
        assert_eq!(header(&resp, "content-type"), Some("text/plain"));
        assert!(resp.headers.get("connection").is_none());
        assert_eq!(text, "nph body\n");
    }

    #[test]
    fn cgi_4_3_3_head_discards_body() {
        let (resp, text) = fetch(&backend(), request(Method::HEAD, "/cgi-bin/cookies.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(header(&resp, "content-type"), Some("text/plain"));
        assert_eq!(text, "");
    }

    #[test]
    fn python_fixture_form_post() {
        let mut req = request(Method::POST, "/cgi-bin/form.py?x=1");
        req.body = Body::full(&b"a=1&b=2"[..]);
        let (resp, text) = fetch(&backend(), req);
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(text, "method=POST\nquery=x=1\nbody=a=1&b=2\n");
    }

    // ---- 502 ---------------------------------------------------------------------------

    fn bad_gateway(b: &CgiBackend, target: &str) -> String {
        match call(b, get(target)) {
            Err(BackendError::BadGateway(msg)) => msg,
            other => panic!("{target}: expected 502, got {other:?}"),
        }
    }

    #[test]
    fn cgi_amb_10_silent_script_is_bad_gateway() {
        let msg = bad_gateway(&backend(), "/cgi-bin/silent.cgi");
        assert!(msg.contains("CGI-AMB-10"), "{msg}");
    }

    #[test]
    fn script_dying_before_head_is_bad_gateway() {
        let msg = bad_gateway(&backend(), "/cgi-bin/die.cgi");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn cgi_amb_6_output_ending_inside_head_is_bad_gateway() {
        let msg = bad_gateway(&backend(), "/cgi-bin/half-head.cgi");
        assert!(msg.contains("CGI-AMB-6"), "{msg}");
    }

    #[test]
    fn cgi_6_3_3_malformed_head_names_the_clause() {
        let msg = bad_gateway(&backend(), "/cgi-bin/malformed.cgi");
        assert!(msg.contains("CGI-6.3-3"), "{msg}");
    }

    #[test]
    fn cgi_8_1_1_head_over_the_limit_is_bad_gateway() {
        let msg = bad_gateway(&backend(), "/cgi-bin/big-head.cgi");
        assert!(msg.contains("CGI-8.1-1"), "{msg}");
        // With a larger limit the same script is fine.
        let mut s = settings(fixtures());
        s.max_header_bytes = 256 * 1024;
        let (resp, text) = fetch(&backend_with(s), get("/cgi-bin/big-head.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(text, "body\n");
    }

    // ---- request bodies (§4.2) ---------------------------------------------------------

    fn md5_reply(b: &CgiBackend, req: Request) -> String {
        let (resp, text) = fetch(b, req);
        assert_eq!(resp.status, StatusCode::OK, "{text}");
        text.trim().to_owned()
    }

    #[test]
    fn cgi_4_2_3_known_length_body_streamed() {
        let data = test_data(5 * MIB + 123);
        let want = format!("{} {}", md5_of(&data), data.len());
        let mut req = request(Method::POST, "/cgi-bin/md5.cgi");
        let len = data.len() as u64;
        req.body = chunked_body(data, 64 * 1024, Some(len));
        assert_eq!(md5_reply(&backend(), req), want);
    }

    #[test]
    fn cgi_4_2_8_chunked_body_spooled_to_a_file() {
        let data = test_data(5 * MIB + 7);
        let want = format!("{} {}", md5_of(&data), data.len());
        let mut req = request(Method::POST, "/cgi-bin/md5.cgi");
        req.body = chunked_body(data, 32 * 1024 + 5, None);
        assert_eq!(md5_reply(&backend(), req), want);
    }

    #[test]
    fn cgi_4_2_8_chunked_body_spooled_in_memory() {
        let data = test_data(100_000);
        let want = format!("{} {}", md5_of(&data), data.len());
        let mut req = request(Method::POST, "/cgi-bin/md5.cgi");
        req.body = chunked_body(data, 1000, None);
        assert_eq!(md5_reply(&backend(), req), want);
    }

    #[test]
    fn chunked_body_over_the_listener_limit_is_too_large() {
        let items: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::new(io::ErrorKind::FileTooLarge, "over")),
        ];
        let mut req = request(Method::POST, "/cgi-bin/md5.cgi");
        req.body = Body::from_stream(None, futures_lite::stream::iter(items));
        let r = call(&backend(), req);
        assert!(matches!(r, Err(BackendError::BodyTooLarge)), "{r:?}");
    }

    #[test]
    fn script_writing_before_reading_stdin_does_not_deadlock() {
        let data = test_data(3 * MIB);
        let want = format!("md5 {} {}", md5_of(&data), data.len());
        let mut req = request(Method::POST, "/cgi-bin/write-first.cgi");
        let len = data.len() as u64;
        req.body = chunked_body(data, 64 * 1024, Some(len));
        let (resp, text) = fetch(&backend(), req);
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(text.len(), MIB + want.len() + 1);
        assert_eq!(text.lines().last(), Some(want.as_str()));
    }

    #[test]
    fn cgi_4_2_6_script_not_reading_its_body_is_fine() {
        let data = test_data(8 * MIB);
        let mut req = request(Method::POST, "/cgi-bin/early-exit.cgi");
        let len = data.len() as u64;
        req.body = chunked_body(data, 64 * 1024, Some(len));
        let (resp, text) = fetch(&backend(), req);
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(text, "ignored your body\n");
    }

    // ---- streaming, time limits, cancellation ------------------------------------------

    fn vm_rss_kib() -> u64 {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    #[test]
    fn output_read_while_waiting_for_the_whole_body_is_at_most_one_chunk() {
        // 256 KiB written at once, the head's read taking body bytes too, then read for
        // up to a second in the hope of an end: what was read goes on as the first
        // chunk, and must not exceed one.
        let mut s = settings(fixtures());
        s.whole_body_wait = Duration::from_secs(1);
        const SIZE: usize = 256 << 10;
        let mut resp = response(call(&backend_with(s), get("/cgi-bin/burst.cgi")));
        let (mut total, mut biggest) = (0, 0);
        rt::block_on(async {
            while let Some(chunk) = resp.body.chunk().await {
                let chunk = chunk.expect("complete body");
                total += chunk.len();
                biggest = biggest.max(chunk.len());
            }
        });
        assert_eq!(total, SIZE);
        assert!(biggest <= OUTPUT_CHUNK, "chunk of {biggest} bytes");
    }

    #[test]
    fn cgi_9_6_2_one_gib_response_streams_in_bounded_memory() {
        const SIZE: u64 = 1 << 30;
        let mut resp = response(call(&backend(), get(&format!("/cgi-bin/big.cgi?{SIZE}"))));
        assert!(
            resp.body.len().is_none(),
            "the script's length is not trusted"
        );
        let start = vm_rss_kib();
        let mut peak = start;
        let mut total: u64 = 0;
        let mut biggest = 0;
        rt::block_on(async {
            while let Some(chunk) = resp.body.chunk().await {
                let chunk = chunk.expect("complete body");
                total += chunk.len() as u64;
                biggest = biggest.max(chunk.len());
                if total % (64 << 20) < chunk.len() as u64 {
                    peak = peak.max(vm_rss_kib());
                }
            }
        });
        assert_eq!(total, SIZE);
        assert!(biggest <= OUTPUT_CHUNK, "chunk of {biggest} bytes");
        // Other tests run alongside; a buffered body would add a whole GiB.
        assert!(
            peak < start + 256 * 1024,
            "RSS grew from {start} KiB to {peak} KiB"
        );
    }

    #[test]
    fn cgi_6_1_3_timeout_kills_the_whole_group() {
        let (b, _dir, pidfile) = pid_backend(Duration::from_secs(1));
        let started = Instant::now();
        let r = call(&b, get("/cgi-bin/sleep.cgi"));
        assert!(matches!(r, Err(BackendError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pids = read_pids(&pidfile);
        assert_eq!(pids.len(), 2, "leader and grandchild: {pids:?}");
        assert_group_gone(&pids);
        assert!(
            eventually(Duration::from_secs(5), || !our_zombies().contains(&pids[0])),
            "leader left a zombie"
        );
    }

    #[test]
    fn a_script_done_within_whole_body_wait_is_sent_whole_with_its_length() {
        let mut s = settings(fixtures());
        // Generous, so a loaded machine cannot turn this into the streamed case.
        s.whole_body_wait = Duration::from_secs(1);
        let (resp, body) = fetch(&backend_with(s), get("/cgi-bin/status.cgi"));
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(body, "nope\n");
        assert_eq!(resp.body.len(), Some(5));
    }

    #[test]
    fn a_script_that_runs_on_after_closing_its_output_is_answered_then_reaped() {
        // The output's end is awaited for 300 ms, not the default millisecond: under a
        // loaded test run, `sh` may take longer than that between its `printf` and
        // closing its output, and the body would then (rightly) be streamed.
        let mut s = settings(fixtures());
        s.whole_body_wait = Duration::from_millis(300);
        let b = backend_with(s);
        let started = Instant::now();
        let (resp, body) = fetch(&b, get("/cgi-bin/linger.cgi"));
        assert_eq!(body, "done\n");
        assert_eq!(resp.body.len(), Some(5));
        assert!(
            started.elapsed() < Duration::from_millis(450),
            "waited for the exit"
        );
        assert!(eventually(Duration::from_secs(5), || b
            .stats
            .children
            .load(Ordering::Relaxed)
            == 0));
        // Tests run side by side: another test's child may be between its exit and its
        // reaping right now, so wait as the other zombie checks do.
        assert!(
            eventually(Duration::from_secs(5), || our_zombies().is_empty()),
            "zombies: {:?}",
            our_zombies()
        );
    }

    #[test]
    fn whole_body_wait_zero_streams_every_response() {
        let mut s = settings(fixtures());
        s.whole_body_wait = Duration::ZERO;
        let (resp, body) = fetch(&backend_with(s), get("/cgi-bin/status.cgi"));
        assert_eq!(body, "nope\n");
        assert_eq!(resp.body.len(), None);
    }

    #[test]
    fn timeout_mid_body_cuts_the_stream() {
        let (b, _dir, pidfile) = pid_backend(Duration::from_secs(1));
        let mut resp = response(call(&b, get("/cgi-bin/slow-body.cgi")));
        assert_eq!(resp.status, StatusCode::OK);
        let body = rt::block_on(async {
            let mut got = Vec::new();
            loop {
                match resp.body.chunk().await {
                    Some(Ok(c)) => got.extend_from_slice(&c),
                    Some(Err(e)) => return Err((got, e)),
                    None => return Ok(got),
                }
            }
        });
        match body {
            Err((got, _)) => assert_eq!(got, b"partial\n"),
            Ok(got) => panic!("body ended cleanly: {got:?}"),
        }
        assert_group_gone(&read_pids(&pidfile));
    }

    #[test]
    fn dropping_the_body_kills_the_script() {
        let (b, _dir, pidfile) = pid_backend(Duration::from_secs(60));
        let mut resp = response(call(&b, get("/cgi-bin/stream.cgi")));
        let first = rt::block_on(resp.body.chunk());
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
        let pids = read_pids(&pidfile);
        assert!(
            !live_in_group(pids[0]).is_empty(),
            "script should be running"
        );
        drop(resp);
        assert_group_gone(&pids);
        assert!(eventually(Duration::from_secs(5), || b
            .stats
            .children
            .load(Ordering::Relaxed)
            == 0));
    }

    #[test]
    fn dropping_the_call_before_the_head_kills_the_script() {
        let (b, _dir, pidfile) = pid_backend(Duration::from_secs(60));
        let r = rt::block_on(rt::timeout(
            Duration::from_millis(700),
            b.call(get("/cgi-bin/sleep.cgi"), &route()),
        ));
        assert!(r.is_err(), "the call should still be waiting for a head");
        assert_group_gone(&read_pids(&pidfile));
    }

    #[test]
    fn dropping_the_call_while_the_script_spawns_leaves_nothing_running() {
        let (b, _dir, pidfile) = pid_backend(Duration::from_secs(60));
        rt::block_on(async {
            let rm = route();
            let mut call = Box::pin(b.call(get("/cgi-bin/sleep.cgi"), &rm));
            // The first poll starts the spawn and waits for it.
            let first = futures_lite::future::poll_once(&mut call).await;
            assert!(first.is_none(), "the call should still be waiting");
        });
        // Killed before or after it wrote its pids: either way nothing may live on.
        std::thread::sleep(Duration::from_millis(500));
        if pidfile.exists() {
            assert_group_gone(&read_pids(&pidfile));
        }
        assert!(eventually(Duration::from_secs(5), || b
            .stats
            .children
            .load(Ordering::Relaxed)
            == 0));
        assert!(eventually(Duration::from_secs(5), || our_zombies().is_empty()));
    }

    #[test]
    fn max_concurrent_scripts_then_busy() {
        let (mut_b, _dir, _pidfile) = pid_backend(Duration::from_secs(60));
        let mut s = (*mut_b.settings).clone();
        s.max_concurrent = 1;
        let b = backend_with(s);
        let held = response(call(&b, get("/cgi-bin/slow-body.cgi")));
        let r = call(&b, get("/cgi-bin/env.cgi"));
        assert!(matches!(r, Err(BackendError::Busy(_))), "{r:?}");
        drop(held);
        // The slot comes back once the killed script is reaped.
        assert!(eventually(Duration::from_secs(5), || {
            !matches!(
                call(&b, get("/cgi-bin/env.cgi")),
                Err(BackendError::Busy(_))
            )
        }));
    }

    /// When `target`'s whole answer has come, counted from `t0`.
    async fn done_after(b: &CgiBackend, target: &str, t0: Instant) -> (StatusCode, Duration) {
        let mut resp = match b.call(get(target), &route()).await {
            Ok(Reply::Response(resp)) => resp,
            other => panic!("expected a response, got {other:?}"),
        };
        let _ = read_all(&mut resp.body).await;
        (resp.status, t0.elapsed())
    }

    /// Two late-head scripts (head at 0.5 s), the second started `gap` after the first;
    /// when the second was done, after both answered 200.
    fn second_of_two_late_heads(b: &CgiBackend, gap: Duration) -> Duration {
        let t0 = Instant::now();
        let (first, second) = rt::block_on(rt::join(
            done_after(b, "/cgi-bin/late-head.cgi?0.5", t0),
            async {
                rt::sleep(gap).await;
                done_after(b, "/cgi-bin/late-head.cgi?0.5", t0).await
            },
        ));
        assert_eq!((first.0, second.0), (StatusCode::OK, StatusCode::OK));
        second.1
    }

    /// One start place, held at most `window`.
    fn paced_settings(window: Duration) -> Cgi {
        let mut s = settings(fixtures());
        s.max_starting = 1;
        s.start_window = window;
        s
    }

    fn paced(window: Duration) -> CgiBackend {
        backend_with(paced_settings(window))
    }

    #[test]
    fn max_starting_holds_the_next_script_until_the_head() {
        // One place, a long window: the second script may start only once the first has
        // sent its head at 0.5 s, so it cannot be done before 1 s.
        let b = paced(Duration::from_secs(20));
        let second = second_of_two_late_heads(&b, Duration::from_millis(50));
        assert!(
            second >= Duration::from_millis(1000),
            "second done after {second:?}"
        );
    }

    /// The second of two late heads was not kept in line behind the first (which would
    /// make it done after 1 s).
    fn assert_not_in_line(second: Duration) {
        assert!(
            second < Duration::from_millis(950),
            "second done after {second:?}"
        );
    }

    #[test]
    fn a_starting_script_gives_its_place_back_after_the_window() {
        // Same, with a 50 ms window: the second starts at about 50 ms and is done at
        // about 0.55 s, long before the 1 s it would take in line.
        let b = paced(Duration::from_millis(50));
        assert_not_in_line(second_of_two_late_heads(&b, Duration::from_millis(20)));
    }

    #[test]
    fn max_starting_zero_paces_nothing() {
        let mut s = paced_settings(Duration::from_secs(20));
        s.max_starting = 0;
        let b = backend_with(s);
        assert!(b.starting.is_none());
        assert_not_in_line(second_of_two_late_heads(&b, Duration::ZERO));
    }

    #[test]
    fn no_start_place_within_the_time_limit_is_busy() {
        let mut s = paced_settings(Duration::from_millis(100));
        s.timeout = Duration::from_millis(200);
        let b = backend_with(s);
        let taken = b.starting.as_ref().and_then(Slots::try_take);
        assert!(taken.is_some());
        let t0 = Instant::now();
        let r = call(&b, get("/cgi-bin/env.cgi"));
        assert!(
            matches!(&r, Err(BackendError::Busy(m)) if m.contains("max_starting")),
            "{r:?}"
        );
        assert!(t0.elapsed() >= Duration::from_millis(200));
        assert_eq!(b.stats.spawned.load(Ordering::Relaxed), 0);
        drop(taken);
        let (resp, _) = fetch(&b, get("/cgi-bin/env.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
    }

    /// One start place held at most `window`; a reply is whole when the script closes
    /// its output within a second (not the 1 ms default, which a busy machine misses).
    fn paced_whole(window: Duration) -> CgiBackend {
        let mut s = paced_settings(window);
        s.whole_body_wait = Duration::from_secs(1);
        backend_with(s)
    }

    /// Runs `linger.cgi` (whole answer at once, exits 0.5 s later) on `b`, then
    /// `env.cgi`; how long after the first call the second was done.
    fn after_a_lingering_script(b: &CgiBackend) -> Duration {
        let t0 = Instant::now();
        let (resp, body) = fetch(b, get("/cgi-bin/linger.cgi"));
        assert_eq!((resp.status, body.as_str()), (StatusCode::OK, "done\n"));
        let (resp, _) = fetch(b, get("/cgi-bin/env.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
        t0.elapsed()
    }

    #[test]
    fn a_script_whose_output_is_whole_holds_its_start_place_until_it_exits() {
        // Its exit is still starting work on the CPUs: the next script waits for it.
        let b = paced_whole(Duration::from_secs(20));
        let took = after_a_lingering_script(&b);
        assert!(took >= Duration::from_millis(500), "took {took:?}");
    }

    #[test]
    fn a_script_that_runs_on_after_its_output_holds_its_place_only_for_the_window() {
        let b = paced_whole(Duration::from_millis(50));
        let took = after_a_lingering_script(&b);
        assert!(took < Duration::from_millis(450), "took {took:?}");
    }

    #[test]
    fn a_streaming_or_failed_script_holds_no_start_place() {
        let b = paced(Duration::from_secs(20));
        // Its head is out and it hangs mid-body: it runs, but is no longer starting.
        let held = response(call(&b, get("/cgi-bin/slow-body.cgi")));
        let t0 = Instant::now();
        // One that dies before its head gives its place back too.
        assert!(matches!(
            call(&b, get("/cgi-bin/die.cgi")),
            Err(BackendError::BadGateway(_))
        ));
        let (resp, text) = fetch(&b, get("/cgi-bin/env.cgi"));
        assert_eq!(resp.status, StatusCode::OK);
        assert!(text.contains("GATEWAY_INTERFACE=CGI/1.1"));
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "waited {:?}",
            t0.elapsed()
        );
        drop(held);
    }

    #[test]
    fn a_script_starts_with_every_signal_at_its_default_and_none_blocked() {
        // portico itself ignores SIGPIPE (Rust does), and may inherit other ignored
        // signals (nohup): here SIGUSR2, which nothing in these tests uses.
        // SAFETY: setting a disposition to SIG_IGN installs no handler; the old one is
        // put back below.
        let old = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        let (resp, text) = fetch(&backend(), get("/cgi-bin/signals.cgi"));
        // SAFETY: as above, the disposition this process had.
        unsafe {
            libc::signal(libc::SIGUSR2, old);
        }
        assert_eq!(resp.status, StatusCode::OK);
        let mask = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        };
        assert_eq!(mask("SigBlk:"), Some(0), "{text}");
        // Nothing ignored, glibc's two internal signals (32 and 33) included.
        assert_eq!(mask("SigIgn:"), Some(0), "{text}");
    }

    #[test]
    fn children_counted_in_stats() {
        let b = backend();
        let _ = fetch(&b, get("/cgi-bin/env.cgi"));
        let _ = call(&b, get("/cgi-bin/die.cgi"));
        assert_eq!(b.stats.spawned.load(Ordering::Relaxed), 2);
        assert!(eventually(Duration::from_secs(5), || b
            .stats
            .children
            .load(Ordering::Relaxed)
            == 0));
    }

    #[test]
    fn stderr_logged_line_by_line_and_drained() {
        let logging = capture_logs();
        let (resp, text) = fetch(&backend(), get("/cgi-bin/stderr.cgi?m4rk3r"));
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(text, "done\n");
        if logging {
            let found = eventually(Duration::from_secs(5), || {
                CAPTURED.lock().is_ok_and(|lines| {
                    lines.contains(&"/cgi-bin/stderr.cgi: first line m4rk3r".to_owned())
                        && lines.contains(&"/cgi-bin/stderr.cgi: last line m4rk3r".to_owned())
                })
            });
            assert!(found, "stderr lines not logged");
        }
    }

    #[test]
    fn no_zombies_left_behind() {
        let b = backend();
        for target in [
            "/cgi-bin/env.cgi",
            "/cgi-bin/die.cgi",
            "/cgi-bin/silent.cgi",
            "/cgi-bin/malformed.cgi",
            "/cgi-bin/local-redirect.cgi",
            "/cgi-bin/client-redirect.cgi",
        ] {
            if let Ok(Reply::Response(mut r)) = call(&b, get(target)) {
                let _ = rt::block_on(read_all(&mut r.body));
            }
        }
        // Other tests run in parallel, so a child may be between exit and reaping for a
        // moment; none may stay a zombie.
        assert!(
            eventually(Duration::from_secs(10), || our_zombies().is_empty()),
            "zombies: {:?}",
            our_zombies()
        );
    }
}
