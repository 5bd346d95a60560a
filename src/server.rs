//! The composition root: configuration → backends, dispatcher and listeners; signals;
//! graceful shutdown (stop accepting, let in-flight requests finish within the grace
//! period, kill what remains).
//!
//! May use every module but `cli`.

use std::io;
use std::sync::Arc;

use crate::backend::fastcgi::FastcgiBackend;
use crate::backend::handler::ServerView;
use crate::backend::scgi::ScgiBackend;
use crate::backend::{Backend, Registry, cgi::CgiBackend};
use crate::config::{AccessLog, Config, Matcher, Protocol, Target};
use crate::dispatch::{AccessSink, Dispatcher, RouteEntry};
use crate::listen::{self, Listener};
use crate::meta::ServerInfo;
use crate::procs;
use crate::route::Router;
use crate::rt;
use crate::stats::Stats;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A route names a handler nobody registered.
    #[error("route {route}: no handler named {name:?} (known: {known})")]
    UnknownHandler {
        /// The route.
        route: String,
        /// The handler name.
        name: String,
        /// The registered names.
        known: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The access log file could not be opened.
    #[error("cannot open access log {path}: {source}")]
    AccessLog {
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// Reading the request from stdin or writing the response to stdout failed (CGI mode).
    #[error("CGI mode: {0}")]
    Stdio(io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The runtime's worker threads could not start, so no request could be served.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
}

/// A running server's handle: its bound addresses and a way to stop it.
pub struct Running {
    /// The listeners' addresses as bound (real ports), in config order.
    pub addresses: Vec<String>,
    trigger: Option<rt::ShutdownTrigger>,
    done: rt::Drain,
    grace: std::time::Duration,
    dispatcher: Arc<Dispatcher>,
}

impl Running {
    /// Stops accepting, waits up to the grace period for in-flight requests, then kills
    /// every child process still running.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        let drained = rt::timeout(self.grace, self.done.wait()).await.is_ok();
        if !drained {
            log::warn!(target: "portico::server", "grace period over: stopping remaining requests");
        }
        self.dispatcher.shutdown().await;
        let killed = procs::kill_all();
        if killed > 0 {
            log::warn!(target: "portico::server", "killed {killed} remaining child process group(s)");
        }
        // Give the runtime a moment to reap what was killed, then collect adopted orphans.
        let mut suspects = std::collections::HashSet::new();
        for _ in 0..10 {
            rt::sleep(std::time::Duration::from_millis(50)).await;
            procs::reap_orphans(&mut suspects);
        }
    }
}

/// Builds everything from `config` and starts the listeners.
pub async fn start(config: Config, registry: &Registry) -> Result<Running, ServerError> {
    // Before anything is bound: a server whose tasks can never run must not accept.
    rt::start().map_err(ServerError::Runtime)?;
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let bound = Listener::bind(&l.address, l.socket_mode, l.socket_owner)
            .await
            .map_err(|source| ServerError::Bind {
                addr: l.address.to_string(),
                source,
            })?;
        listeners.push((l.protocol, bound));
    }
    let addresses: Vec<String> = listeners.iter().map(|(_, l)| l.local_text()).collect();
    let shown: Vec<String> = listeners
        .iter()
        .map(|(p, l)| format!("{} {}", protocol_name(*p), l.local_text()))
        .collect();
    let dispatcher = dispatcher(&config, registry, shown)?;
    let (trigger, shutdown) = rt::shutdown_pair();
    let (tracker, done) = rt::drain_pair();
    spawn_orphan_reaper(shutdown.clone());
    let http = Arc::new(config.http.clone());
    let fastcgi = Arc::new(config.fastcgi.clone());
    let scgi = Arc::new(config.scgi.clone());
    for ((protocol, l), addr) in listeners.into_iter().zip(&addresses) {
        log::info!(target: "portico::server", "listening on {} {addr}", protocol_name(protocol));
        let (d, s, t) = (dispatcher.clone(), shutdown.clone(), tracker.clone());
        drop(match protocol {
            Protocol::Http => rt::spawn(listen::http::serve(l, d, http.clone(), s, t)),
            Protocol::Fastcgi => rt::spawn(listen::fastcgi::serve(l, d, fastcgi.clone(), s, t)),
            Protocol::Scgi => rt::spawn(listen::scgi::serve(l, d, scgi.clone(), s, t)),
        });
    }
    Ok(Running {
        addresses,
        trigger: Some(trigger),
        done,
        grace: config.server.grace,
        dispatcher,
    })
}

/// Adopts orphaned grandchildren of scripts and reaps them, so no zombie is left even
/// where PID 1 does not reap (see `procs::become_subreaper`). Once a second, and only when
/// some child is a zombie at that moment (one `waitid` that reaps nothing) or a zombie seen
/// last time still waits, the process table is scanned: an idle gateway reads no `/proc`.
fn spawn_orphan_reaper(shutdown: rt::Shutdown) {
    if !procs::become_subreaper() {
        log::warn!(target: "portico::server", "cannot become a child subreaper: orphaned grandchildren of scripts go to PID 1");
        return;
    }
    drop(rt::spawn(async move {
        let mut suspects = std::collections::HashSet::new();
        loop {
            let stop = rt::race(
                async {
                    // Coarse: an async-io timer always pending here would have the
                    // reactor sort its timer map on every wake-up.
                    rt::coarse::sleep(std::time::Duration::from_secs(1)).await;
                    false
                },
                async {
                    shutdown.wait().await;
                    true
                },
            )
            .await;
            if !(stop || !suspects.is_empty() || procs::any_zombie_child()) {
                continue;
            }
            let n = rt::spawn_blocking({
                let mut s = std::mem::take(&mut suspects);
                move || {
                    let n = procs::reap_orphans(&mut s);
                    (n, s)
                }
            })
            .await;
            suspects = n.1;
            if n.0 > 0 {
                log::debug!(target: "portico::server", "reaped {} orphaned process(es)", n.0);
            }
            if stop {
                break;
            }
        }
    }));
}

/// The dispatcher for `config`: counters, backends, router and access log. `listeners`
/// is what the landing page shows.
pub fn dispatcher(
    config: &Config,
    registry: &Registry,
    listeners: Vec<String>,
) -> Result<Arc<Dispatcher>, ServerError> {
    let stats = Stats::new(config.routes.iter().map(|r| r.name.clone()));
    let server_info = Arc::new(ServerInfo {
        name: config.server.name.clone(),
        software: config.server.software.clone(),
    });
    let view = ServerView {
        routes: config
            .routes
            .iter()
            .map(|r| {
                let m = match &r.matcher {
                    Matcher::Exact(p) => format!("exact {p}"),
                    Matcher::Prefix(p) => format!("prefix {p}"),
                    Matcher::Suffix(s) => format!("suffix {s}"),
                };
                let b = match &r.target {
                    Target::Cgi(c) => format!("cgi {}", c.root.display()),
                    Target::Handler(h) => format!("handler {h}"),
                    Target::Fastcgi(g) => match &g.children {
                        Some(c) => format!("fastcgi children: {}", c.command.join(" ")),
                        None => format!("fastcgi {}", list(&g.upstreams)),
                    },
                    Target::Scgi(g) => format!("scgi {}", list(&g.upstreams)),
                };
                (r.name.clone(), m, b)
            })
            .collect(),
        listeners,
        stats: stats.clone(),
        software: config.server.software.clone(),
    };
    let mut entries = Vec::new();
    for r in &config.routes {
        let backend = match &r.target {
            Target::Cgi(c) => Backend::Cgi(CgiBackend::new(
                c.clone(),
                server_info.clone(),
                stats.clone(),
            )),
            Target::Fastcgi(g) => Backend::Fastcgi(FastcgiBackend::new(
                &r.name,
                g.clone(),
                suffix_of(&r.matcher),
                server_info.clone(),
                &stats,
            )),
            Target::Scgi(g) => Backend::Scgi(ScgiBackend::new(
                &r.name,
                g.clone(),
                suffix_of(&r.matcher),
                server_info.clone(),
                &stats,
            )),
            Target::Handler(name) => match registry.build(name, &view) {
                Some(h) => Backend::Handler(h),
                None => {
                    return Err(ServerError::UnknownHandler {
                        route: r.name.clone(),
                        name: name.clone(),
                        known: registry.names().join(", "),
                    });
                }
            },
        };
        entries.push(RouteEntry {
            name: r.name.as_str().into(),
            backend,
        });
    }
    let access = match &config.server.access_log {
        AccessLog::Off => AccessSink::Off,
        AccessLog::Stderr => AccessSink::Stderr,
        AccessLog::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ServerError::AccessLog {
                    path: p.display().to_string(),
                    source,
                })?;
            AccessSink::File(std::sync::Mutex::new(f))
        }
    };
    let router = Router::new(config.routes.iter().map(|r| r.matcher.clone()));
    Ok(Arc::new(Dispatcher::new(
        router,
        entries,
        stats,
        config.server.max_redirects,
        access,
    )))
}

/// Runs one request as a CGI program: the environment and stdin are the request, the
/// response goes to stdout in CGI form. Child processes are reaped before returning.
pub async fn run_cgi(config: Config, registry: &Registry) -> Result<(), ServerError> {
    rt::start().map_err(ServerError::Runtime)?;
    let dispatcher = dispatcher(&config, registry, vec!["cgi (run by a web server)".into()])?;
    let result = listen::cgi::serve_once(&dispatcher).await;
    dispatcher.shutdown().await;
    procs::kill_all();
    result.map_err(ServerError::Stdio)
}

fn list(addrs: &[crate::addr::Address]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn suffix_of(m: &Matcher) -> Option<String> {
    match m {
        Matcher::Suffix(s) => Some(s.clone()),
        _ => None,
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Fastcgi => "fastcgi",
        Protocol::Scgi => "scgi",
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully. SIGHUP is
/// logged and ignored (see [`run_with_reload`]).
pub async fn run(config: Config, registry: &Registry) -> Result<(), ServerError> {
    run_with_reload(config, registry, None).await
}

/// Re-reads the configuration on SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the server until SIGTERM or SIGINT; on SIGHUP, `reload` (when given) reads the
/// configuration again and new requests use its routes and backends, while requests in
/// flight finish on the old ones, whose managed children are then drained. Listeners
/// are not rebound on reload (a changed `[[listen]]` needs a restart).
pub async fn run_with_reload(
    config: Config,
    registry: &Registry,
    reload: Option<Reload>,
) -> Result<(), ServerError> {
    let mut signals = rt::signals().map_err(ServerError::Signals)?;
    let running = start(config, registry).await?;
    for a in &running.addresses {
        // On stderr whatever RUST_LOG says: scripts and tests read the real port here.
        eprintln!("portico: listening on {a}");
    }
    use rt::StreamExt;
    while let Some(sig) = signals.next().await {
        match sig {
            Ok(rt::Signal::Hup) => match &reload {
                None => {
                    log::warn!(target: "portico::server", "SIGHUP: this program does not reload; restart to apply a new config")
                }
                Some(reload) => match reload() {
                    Err(e) => {
                        log::error!(target: "portico::server", "SIGHUP: configuration not reloaded:\n{e}")
                    }
                    Ok(cfg) => {
                        let shown = running.addresses.clone();
                        match dispatcher(&cfg, registry, shown) {
                            Err(e) => {
                                log::error!(target: "portico::server", "SIGHUP: configuration not reloaded: {e}")
                            }
                            Ok(next) => {
                                log::info!(target: "portico::server", "SIGHUP: configuration reloaded ({} routes)", cfg.routes.len());
                                let current = running.dispatcher.clone();
                                let grace = cfg.server.grace;
                                let next = Arc::try_unwrap(next).ok();
                                if let Some(next) = next {
                                    drop(rt::spawn(
                                        async move { current.replace(next, grace).await },
                                    ));
                                }
                            }
                        }
                    }
                },
            },
            Ok(s) => {
                log::info!(target: "portico::server", "{s:?}: shutting down");
                break;
            }
            Err(e) => log::warn!(target: "portico::server", "signal stream: {e}"),
        }
    }
    running.shutdown().await;
    log::info!(target: "portico::server", "stopped");
    Ok(())
}
