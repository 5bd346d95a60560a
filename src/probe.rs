//! `portico probe`: the FastCGI / SCGI / CGI conformance checker (being written).

use std::process::ExitCode;

/// Options of `probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// What to check: fastcgi://HOST:PORT, fastcgi+unix:/path, scgi://HOST:PORT, or `cgi PATH`.
    pub target: Vec<String>,
}

/// Runs the checker.
pub fn run(args: ProbeArgs) -> ExitCode {
    eprintln!("portico probe: not available yet ({:?})", args.target);
    ExitCode::from(2)
}
