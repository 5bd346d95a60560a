//! The command line: `portico [serve]`, `portico check`. Each subcommand returns an exit
//! code; errors are printed once, with their cause chain, to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::Registry;
use crate::config::{self, Sources};
use crate::rt;
use crate::server;

/// portico: a FastCGI / SCGI / CGI gateway.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default). Without --config, runs the built-in default:
    /// HTTP on 127.0.0.1:8080 with the landing page, /status, /echo and examples/cgi-bin.
    Serve(ServeArgs),
    /// Validate a configuration and print every error with its key and line.
    Check(CheckArgs),
    /// Serve one request as a CGI program run by a web server (also chosen
    /// automatically when GATEWAY_INTERFACE and REQUEST_METHOD are set).
    Cgi(CgiArgs),
    /// Check a FastCGI, SCGI or CGI implementation clause by clause.
    Probe(crate::probe::ProbeArgs),
    /// Print captured FastCGI records or SCGI requests, marking every violation.
    Decode(crate::decode::DecodeArgs),
}

/// Options of `cgi`.
#[derive(Debug, Default, clap::Args)]
pub struct CgiArgs {
    /// The TOML configuration file (default: the built-in default; PORTICO_CONFIG also
    /// names one, since a web server passes no arguments).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `serve`.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Replace the configured listeners with one HTTP listener on ADDR
    /// (HOST:PORT or unix:/path).
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Override a configuration key, e.g. --set server.name=example.org (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Serve FastCGI on the listening socket inherited on fd 0 (the FastCGI convention of
    /// spawn-fcgi, mod_fcgid, lighttpd) instead of the configured listeners. Chosen
    /// automatically when fd 0 is a listening socket and no --listen is given.
    #[arg(long)]
    pub fd0: bool,
}

/// Options of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the parsed command line with the handlers in `registry`.
pub fn run(cli: Cli, registry: Registry) -> ExitCode {
    let default = if crate::listen::cgi::detected() {
        Command::Cgi(CgiArgs::default())
    } else {
        Command::Serve(ServeArgs::default())
    };
    match cli.command.unwrap_or(default) {
        Command::Serve(args) => serve(args, registry),
        Command::Check(args) => check(args, &registry),
        Command::Cgi(args) => cgi(args, registry),
        Command::Probe(args) => crate::probe::run(args),
        Command::Decode(args) => crate::decode::run(args),
    }
}

fn cgi(args: CgiArgs, registry: Registry) -> ExitCode {
    let file = args
        .config
        .or_else(|| std::env::var_os("PORTICO_CONFIG").map(PathBuf::from));
    let src = Sources {
        file,
        env: false,
        overrides: Vec::new(),
        listen: None,
    };
    let cfg = match config::load(&src) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("portico: invalid configuration:\n{errs}");
            // The web server shows a 500 for a CGI program that prints no head.
            return ExitCode::from(2);
        }
    };
    // One request per process: one thread is all it needs.
    if let Err(code) = start_runtime(1) {
        return code;
    }
    match rt::block_on(server::run_cgi(cfg, &registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Starts the runtime on `threads` workers, before the first `block_on`: when threads
/// cannot be made, it says so and gives the exit code, where async-io would panic and
/// abort.
fn start_runtime(threads: usize) -> Result<(), ExitCode> {
    rt::set_threads(threads);
    rt::start().map(drop).map_err(|e| {
        eprintln!("portico: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn sources(
    config: Option<PathBuf>,
    listen: Option<String>,
    set: &[String],
) -> Result<Sources, String> {
    let mut overrides = Vec::new();
    for s in set {
        match s.split_once('=') {
            Some((k, v)) => overrides.push((k.trim().to_owned(), v.trim().to_owned())),
            None => return Err(format!("--set {s:?}: expected KEY=VALUE")),
        }
    }
    Ok(Sources {
        file: config,
        env: true,
        overrides,
        listen,
    })
}

fn serve(args: ServeArgs, registry: Registry) -> ExitCode {
    let src = match sources(args.config, args.listen, &args.set) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portico: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = match config::load(&src) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("portico: invalid configuration:\n{errs}");
            return ExitCode::from(2);
        }
    };
    if args.fd0 || (src.listen.is_none() && crate::listen::fd0_is_listening_socket()) {
        log::info!(target: "portico", "serving FastCGI on the socket inherited on fd 0");
        cfg.listeners = vec![config::Listen {
            protocol: config::Protocol::Fastcgi,
            address: crate::addr::Address::Inherited(crate::addr::Inherited::Fd(0)),
            socket_mode: None,
            socket_owner: None,
        }];
    }
    if src.file.is_none() {
        // The built-in default serves the examples of a checkout; say so if absent.
        for r in &cfg.routes {
            if let config::Target::Cgi(c) = &r.target
                && !c.root.is_dir()
            {
                log::warn!(target: "portico", "{}: {} is not a directory (run from a checkout of portico to serve the examples)", r.name, c.root.display());
            }
        }
    }
    let fd0 = matches!(
        cfg.listeners.first().map(|l| &l.address),
        Some(crate::addr::Address::Inherited(crate::addr::Inherited::Fd(
            0
        )))
    );
    let again = src.clone();
    let reload: server::Reload = Box::new(move || {
        let mut c = config::load(&again).map_err(|e| e.to_string())?;
        if fd0 {
            c.listeners.clear();
        }
        Ok(c)
    });
    if let Err(code) = start_runtime(cfg.server.threads) {
        return code;
    }
    match rt::block_on(server::run_with_reload(cfg, &registry, Some(reload))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs, registry: &Registry) -> ExitCode {
    let src = Sources {
        file: Some(args.config.clone()),
        env: true,
        overrides: Vec::new(),
        listen: None,
    };
    match config::load(&src) {
        Ok(cfg) => {
            let mut bad = 0;
            for (i, r) in cfg.routes.iter().enumerate() {
                if let config::Target::Handler(h) = &r.target
                    && !registry.contains(h)
                {
                    eprintln!(
                        "{}: key `route[{i}].handler`: no handler named {h:?} (known: {})",
                        args.config.display(),
                        registry.names().join(", ")
                    );
                    bad += 1;
                }
            }
            if bad > 0 {
                return ExitCode::from(2);
            }
            println!(
                "{}: ok ({} listener(s), {} route(s))",
                args.config.display(),
                cfg.listeners.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            ExitCode::from(2)
        }
    }
}

fn print_error(e: &dyn std::error::Error) {
    let mut msg = format!("portico: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
}
