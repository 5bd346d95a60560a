//! The `portico` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena and keeps freed memory in it;
    // with the blocking pool's threads that lets a streaming gateway's RSS drift up.
    // Two arenas are plenty for two executor threads.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
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
