//! The `portico` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = portico::cli::Cli::parse();
    portico::cli::run(cli, portico::backend::Registry::new())
}
