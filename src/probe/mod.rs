//! `portico probe`: checks a FastCGI application, an SCGI server or a CGI program clause
//! by clause, or (`--serve`) listens as a strict FastCGI application and reports every
//! clause the connecting web server breaks. Built on the `protocols` crate, whose
//! `fastcgi::client` machine can write any record, right or deliberately wrong.
//!
//! Each check has its own time limit, so a probe never hangs on a broken peer. Reports
//! follow `shared/specs/README.md` (see [`report`]).

use std::process::ExitCode;
use std::time::Duration;

pub mod cgi;
pub mod fastcgi;
pub mod report;
pub mod scgi;
pub mod serve;
pub mod serve_cgi;
pub mod serve_scgi;
pub mod spawn;

use report::Format;

/// Options of `probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// What to check: `fastcgi://HOST:PORT`, `fastcgi+unix:/path`, `scgi://HOST:PORT`,
    /// `scgi+unix:/path`, or `cgi PATH` (a CGI program run directly).
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// Start the FastCGI application CMD with a listening socket on fd 0 (as a web
    /// server would) and probe it; the target address is then chosen by portico.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    pub spawn: Option<Vec<String>>,
    /// Check a web server instead: listen at the target address as a strict FastCGI
    /// application (`fastcgi://…`) or SCGI server (`scgi://…`) and report what the
    /// connecting web server breaks (until interrupted or --requests are served). `cgi`
    /// checks a web server's CGI requests from inside: run portico as its CGI program
    /// with PORTICO_PROBE=serve-cgi in the environment.
    #[arg(long)]
    pub serve: bool,
    /// With --serve: stop after this many requests.
    #[arg(long, value_name = "N")]
    pub requests: Option<usize>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The time limit of each check.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub check_timeout: Duration,
    /// The request path the checks use (SCRIPT_NAME / REQUEST_URI), e.g. a PHP script's.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Extra params sent with every request, NAME=VALUE (e.g. SCRIPT_FILENAME=/srv/x.php).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// Where an implementation listens (or a `--serve` checker is to listen): TCP or a Unix
/// socket, written `SCHEME://HOST:PORT` or `SCHEME+unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT`.
    Tcp(String),
    /// A socket path.
    Unix(std::path::PathBuf),
}

impl Target {
    /// Parses `SCHEME://HOST:PORT` or `SCHEME+unix:/path` (also `SCHEME+unix:///path`);
    /// `None` for anything else.
    pub fn parse(s: &str, scheme: &str) -> Option<Target> {
        if let Some(rest) = s.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest.rsplit_once(':')?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return None;
            }
            return Some(Target::Tcp(rest.to_owned()));
        }
        let path = s.strip_prefix(scheme)?.strip_prefix("+unix:")?;
        let path = path.strip_prefix("//").unwrap_or(path);
        (!path.is_empty()).then(|| Target::Unix(std::path::PathBuf::from(path)))
    }

    /// Connects, giving up after `timeout`.
    pub fn connect(&self, timeout: Duration) -> std::io::Result<fastcgi::Stream> {
        use std::net::ToSocketAddrs;
        match self {
            Target::Tcp(addr) => {
                let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                for a in addr.to_socket_addrs()? {
                    match std::net::TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(fastcgi::Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Target::Unix(path) => {
                std::os::unix::net::UnixStream::connect(path).map(fastcgi::Stream::Unix)
            }
        }
    }

    /// The target written with `scheme`.
    pub fn shown(&self, scheme: &str) -> String {
        match self {
            Target::Tcp(a) => format!("{scheme}://{a}"),
            Target::Unix(p) => format!("{scheme}+unix:{}", p.display()),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Whether portico was started by a web server as the CGI probe (`PORTICO_PROBE=serve-cgi`
/// in its environment): then `serve_cgi::run_as_cgi` answers the request, whatever else
/// the command line would do.
pub fn cgi_probe_requested() -> bool {
    serve_cgi::requested()
}

/// Runs the checker; the exit status is non-zero when any FAIL (or ERROR) was found.
pub fn run(args: ProbeArgs) -> ExitCode {
    let first = args.target.first().map(String::as_str).unwrap_or_default();
    if args.serve {
        if first == "cgi" {
            return serve_cgi::run(&args);
        }
        if first.starts_with("scgi") {
            return serve_scgi::run(&args);
        }
        return serve::run(&args);
    }
    if first.starts_with("fastcgi") || args.spawn.is_some() {
        return fastcgi::run(&args);
    }
    let report = if first.starts_with("scgi") {
        let Some(target) = Target::parse(first, "scgi") else {
            eprintln!(
                "portico probe: bad SCGI target {first:?} (scgi://HOST:PORT or scgi+unix:/path)"
            );
            return ExitCode::from(2);
        };
        Some(scgi::probe(&target, &args))
    } else if first == "cgi" {
        let Some(path) = args.target.get(1) else {
            eprintln!("portico probe: `cgi` needs the path of a CGI program");
            return ExitCode::from(2);
        };
        Some(cgi::probe(std::path::Path::new(path), &args))
    } else {
        None
    };
    if let Some(report) = report {
        print!("{}", report.render(args.format));
        return if report.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("portico probe: not available yet ({:?})", args.target);
    ExitCode::from(2)
}
