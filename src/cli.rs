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
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args, registry),
        Command::Check(args) => check(args, &registry),
    }
}

fn sources(config: Option<PathBuf>, listen: Option<String>, set: &[String]) -> Result<Sources, String> {
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
    let cfg = match config::load(&src) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("portico: invalid configuration:\n{errs}");
            return ExitCode::from(2);
        }
    };
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
    match rt::block_on(server::run(cfg, &registry)) {
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
