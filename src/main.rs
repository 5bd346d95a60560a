//! The `portico` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: per-request buffers (a FastCGI exchange allocates and
/// frees 64 KiB blocks) made glibc's arena locks and `malloc_consolidate` about 40% of
/// the gateway's CPU under load (perf, `benches/php.sh`); mimalloc's thread-local free
/// lists avoid both, and it returns freed memory to the system, keeping RSS flat.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    // Run by a web server as the CGI-side checker (PORTICO_PROBE=serve-cgi): before the
    // command line is parsed, since a web server may pass query words as arguments.
    if portico::probe::cgi_probe_requested() {
        return portico::probe::serve_cgi::run_as_cgi();
    }
    let cli = portico::cli::Cli::parse();
    portico::cli::run(cli, portico::backend::Registry::new())
}
