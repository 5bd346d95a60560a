//! Configuration: a serde mirror of the TOML, layered by the `config` crate (built-in
//! defaults < file < `PORTICO_*` environment < command-line overrides), then converted once
//! into typed values ("parse, don't validate"). `portico check` is exactly that conversion.
//!
//! Every error names the key (`route[1].cgi.timeout`) and, when the file has it, the line.
//! Only this file names the `config` crate. Must not import rt, listen or backend.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::addr::Address;

/// The typed configuration the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[http]`: limits and timeouts of HTTP listeners.
    pub http: Http,
    /// `[fastcgi]`: limits of FastCGI listeners.
    pub fastcgi: Fastcgi,
    /// `[scgi]`: limits of SCGI listeners.
    pub scgi: Scgi,
    /// `[[listen]]`, in order.
    pub listeners: Vec<Listen>,
    /// `[[route]]`, in order.
    pub routes: Vec<Route>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// `name`: SERVER_NAME when the request has no usable Host. Default `localhost`.
    pub name: String,
    /// `software`: SERVER_SOFTWARE. Default `portico/<version>`.
    pub software: String,
    /// `grace`: how long shutdown waits for in-flight requests. Default 10 s.
    pub grace: Duration,
    /// `access_log`: `"stderr"` (default), `"off"`, or a file path.
    pub access_log: AccessLog,
    /// `max_redirects`: local redirect hops before 500. Default 5.
    pub max_redirects: u8,
    /// `threads`: threads serving connections (scripts start on helper threads of
    /// their own). Default one per CPU less one, at least 1: portico shares the CPUs with
    /// the scripts and upstreams it drives and the server in front of it, and each
    /// further thread costs cross-thread wake-ups (on 2 CPUs, 1 thread used 10-40% less
    /// CPU per request than 2). `ASYNC_STD_THREAD_COUNT` in the environment wins.
    pub threads: usize,
}

/// The default `server.threads`: one per CPU less one, at least 1.
pub fn default_threads() -> usize {
    cpus().saturating_sub(1).max(1)
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// `[http]`: limits of HTTP listeners.
#[derive(Debug, Clone)]
pub struct Http {
    /// `max_header_bytes`: request line plus header block; past it 431. Default 16 KiB.
    pub max_header_bytes: usize,
    /// `max_headers`: number of request header fields; past it 431. Default 100.
    pub max_headers: usize,
    /// `max_body_bytes`: request body size; past it 413. Default 1 GiB.
    pub max_body_bytes: u64,
    /// `header_timeout`: time to receive a request head. Default 30 s.
    pub header_timeout: Duration,
    /// `idle_timeout`: a kept-alive connection with no request in flight is closed after
    /// this. Default 60 s.
    pub idle_timeout: Duration,
    /// `max_connections`: open connections per listener; more wait in the accept queue.
    /// Default 1024.
    pub max_connections: usize,
}

/// `[fastcgi]`: FastCGI listeners (portico as the application behind a web server).
#[derive(Debug, Clone)]
pub struct Fastcgi {
    /// `max_conns`: FCGI_MAX_CONNS answered to GET_VALUES, and the connections accepted
    /// at once per listener. Default 1024.
    pub max_conns: u32,
    /// `max_reqs`: FCGI_MAX_REQS answered to GET_VALUES, and the requests in flight at
    /// once per listener; past it new requests get FCGI_OVERLOADED. Default 1024.
    pub max_reqs: u32,
    /// `mpxs_conns`: FCGI_MPXS_CONNS; when false a second concurrent request on one
    /// connection gets FCGI_CANT_MPX_CONN. Default true.
    pub mpxs_conns: bool,
    /// `max_requests_per_conn`: requests active at once on one connection; past it
    /// FCGI_OVERLOADED. Default 256.
    pub max_requests_per_conn: usize,
    /// `max_params_bytes`: one request's encoded params; past it the connection is
    /// closed (FCGI-AMB-5). Default 1 MiB.
    pub max_params_bytes: usize,
    /// `stdin_buffer`: request body bytes held per request while its backend is not
    /// reading; past it the connection stops reading. Default 1 MiB.
    pub stdin_buffer: usize,
    /// `idle_timeout`: a connection with no active request is closed after this.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// `stderr`: forward what CGI scripts write on stderr as FCGI_STDERR (besides the
    /// log). Default false.
    pub stderr: bool,
}

/// `[scgi]`: SCGI listeners.
#[derive(Debug, Clone)]
pub struct Scgi {
    /// `max_header_bytes`: the netstring header; past it 400. Default 64 KiB.
    pub max_header_bytes: usize,
    /// `max_headers`: header pairs; past it 400. Default 256.
    pub max_headers: usize,
    /// `header_timeout`: time to receive the netstring header. Default 30 s.
    pub header_timeout: Duration,
    /// `max_connections`: connections at once per listener. Default 1024.
    pub max_connections: usize,
}

/// The wire protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// FastCGI (portico as the application).
    Fastcgi,
    /// SCGI (portico as the server).
    Scgi,
}

/// `[[listen]]`.
#[derive(Debug, Clone)]
pub struct Listen {
    /// `protocol`: `http` (default), `fastcgi` or `scgi`.
    pub protocol: Protocol,
    /// `address`: `HOST:PORT` or `unix:/path`.
    pub address: Address,
    /// `socket_mode`: permission bits of a Unix socket, as an octal string. Default none
    /// (the umask decides).
    pub socket_mode: Option<u32>,
    /// `socket_owner`: `"user:group"` (names or numbers) of a Unix socket. Default none.
    pub socket_owner: Option<(u32, u32)>,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `exact = "/"`: the path equals this.
    Exact(String),
    /// `prefix = "/cgi-bin/"`: the path starts with this.
    Prefix(String),
    /// `suffix = ".php"`: a path segment ends with this.
    Suffix(String),
}

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`: used in logs and status; defaults to the matcher text.
    pub name: String,
    /// `exact`, `prefix` or `suffix`.
    pub matcher: Matcher,
    /// What serves it: `cgi = {…}` or `handler = "name"`.
    pub target: Target,
}

/// The backend of a route.
#[derive(Debug, Clone)]
pub enum Target {
    /// `cgi = { root = … }`: spawn scripts.
    Cgi(Arc<Cgi>),
    /// `handler = "echo"`: an in-process handler registered under that name.
    Handler(String),
    /// `fastcgi = { upstreams = [...] }` or `fastcgi = { command = [...] }`.
    Fastcgi(Arc<Gateway>),
    /// `scgi = { upstreams = [...] }`.
    Scgi(Arc<Gateway>),
}

/// `fastcgi = { … }` / `scgi = { … }`: a route served by FastCGI or SCGI applications.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// `upstreams`: external servers, `HOST:PORT` or `unix:/path`, balanced by least
    /// requests in flight. Empty when `command` is given.
    pub upstreams: Vec<Address>,
    /// `command` (FastCGI only): managed children spawned by portico.
    pub children: Option<Children>,
    /// `document_root`: DOCUMENT_ROOT, and where scripts are looked up (SCRIPT_FILENAME);
    /// with a `suffix` route the script must exist here (the `try_files` rule).
    /// Default none.
    pub document_root: Option<PathBuf>,
    /// `script`: a front controller (e.g. `"/index.php"`) that serves every request of
    /// the route; PATH_INFO is the request path. Default none.
    pub script: Option<String>,
    /// `max_conns`: connections per upstream at once. Default 16.
    pub max_conns: usize,
    /// `connect_timeout`: time to connect. Default 3 s (502 past it).
    pub connect_timeout: Duration,
    /// `send_timeout`: time to send the request and its body. Default 60 s (504).
    pub send_timeout: Duration,
    /// `read_timeout`: time to the response head, and between response reads. Default
    /// 60 s (504).
    pub read_timeout: Duration,
    /// `queue_timeout`: how long a request waits for a free connection or child before
    /// 503. Default 5 s.
    pub queue_timeout: Duration,
    /// `down_backoff`: how long a failed upstream is left alone before it is tried again
    /// (doubling up to 30 s while it keeps failing). Default 1 s.
    pub down_backoff: Duration,
    /// `spool_memory`: a body of unknown length is held in memory up to this, then in a
    /// temporary file, so CONTENT_LENGTH can be sent. Default 1 MiB.
    pub spool_memory: usize,
    /// `params`: extra params sent with every request. Default none.
    pub params: Vec<(String, String)>,
    /// `pass_authorization`: send `Authorization` as HTTP_AUTHORIZATION. Default true
    /// (applications behind FastCGI usually authenticate themselves).
    pub pass_authorization: bool,
    /// `header_policy`: `"strict"` (default) or `"map"`.
    pub header_policy: HeaderPolicy,
    /// `max_header_bytes`: an application's response head; past it 502. Default 64 KiB.
    pub max_header_bytes: usize,
    /// `slow_request`: requests slower than this are counted (and logged) as slow.
    /// Default 5 s.
    pub slow_request: Duration,
}

/// How many managed children run (php-fpm's `pm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// `"static"`: always `processes` children.
    Static,
    /// `"dynamic"`: between `min_spare` and `max_spare` idle children, at most
    /// `processes` in all.
    Dynamic,
    /// `"ondemand"`: children start when requests need them and stop after
    /// `idle_timeout` without work.
    Ondemand,
}

/// `fastcgi = { command = [...], … }`: managed FastCGI children.
#[derive(Debug, Clone)]
pub struct Children {
    /// `command`: the program and its arguments; it gets its listening socket on fd 0.
    pub command: Vec<String>,
    /// `mode`: `"static"` (default), `"dynamic"` or `"ondemand"`.
    pub mode: PoolMode,
    /// `processes`: children at most (static: exactly). Default 4.
    pub processes: usize,
    /// `min_spare` (dynamic): idle children kept at least. Default 1.
    pub min_spare: usize,
    /// `max_spare` (dynamic): idle children kept at most. Default 3.
    pub max_spare: usize,
    /// `idle_timeout` (ondemand, and dynamic above max_spare): an idle child stops after
    /// this. Default 10 s.
    pub idle_timeout: Duration,
    /// `max_requests`: a child is recycled after this many requests (0 = never).
    /// Default 500.
    pub max_requests: u64,
    /// `request_terminate_timeout`: a child whose request runs longer is killed (504).
    /// Default none.
    pub terminate_timeout: Option<Duration>,
    /// `env`: the children's environment (besides `pass_env`). Default none.
    pub env: Vec<(String, String)>,
    /// `pass_env`: variables of portico's environment passed on. Default `["PATH"]`.
    pub pass_env: Vec<String>,
    /// `cwd`: the children's working directory. Default portico's.
    pub cwd: Option<PathBuf>,
    /// `crash_limit`: crashes within a minute after which the pool stops respawning for
    /// a while and answers 503. Default 10.
    pub crash_limit: u32,
}

/// Which request headers become `HTTP_*` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPolicy {
    /// `"strict"` (default): names with anything but letters, digits and `-` are dropped
    /// (CGI-AMB-7, Apache's rule).
    Strict,
    /// `"map"`: other characters map to `_`; a request whose names collide after mapping is
    /// refused with 400 (lighttpd's rule).
    Map,
}

/// `cgi = { … }`: settings of a CGI route.
#[derive(Debug, Clone)]
pub struct Cgi {
    /// `root`: the directory scripts are resolved in (required).
    pub root: PathBuf,
    /// `timeout`: wall-clock limit per script; past it 504 and the process group is killed.
    /// Default 30 s.
    pub timeout: Duration,
    /// `index`: script names tried for a directory. Default `["index.cgi"]`.
    pub index: Vec<String>,
    /// `pass_env`: variables of portico's own environment passed to scripts. Default
    /// `["PATH", "LANG", "LC_ALL", "TZ"]`.
    pub pass_env: Vec<String>,
    /// `env`: extra variables set for every script. Default none.
    pub env: Vec<(String, String)>,
    /// `max_concurrent`: scripts running at once on this route; past it 503. Default 64.
    pub max_concurrent: usize,
    /// `search_args`: RFC 3875 §4.4 command-line arguments from an `=`-less query.
    /// Default false (CGI-AMB-9).
    pub search_args: bool,
    /// `spool_memory`: a body of unknown length is held in memory up to this, then in a
    /// temporary file. Default 1 MiB.
    pub spool_memory: usize,
    /// `pass_authorization`: pass `Authorization` as HTTP_AUTHORIZATION. Default false
    /// (CGI-RW-5).
    pub pass_authorization: bool,
    /// `header_policy`: `"strict"` (default) or `"map"`.
    pub header_policy: HeaderPolicy,
    /// `nph`: honour `nph-` scripts. Default true.
    pub nph: bool,
    /// `max_header_bytes`: a script's response head; past it 502. Default 64 KiB.
    pub max_header_bytes: usize,
    /// `script_filename`: run the `SCRIPT_FILENAME` a web server sent (fcgiwrap's drop-in
    /// mode), only inside `root`. Default false.
    pub script_filename: bool,
    /// `whole_body_wait`: how long a script that has sent its head may take to finish
    /// (with at most 64 KiB of body) so that its response goes out whole, with a
    /// Content-Length, rather than chunked as it comes. `"0ms"` streams at once. Default
    /// 1 ms.
    pub whole_body_wait: Duration,
    /// `max_starting`: scripts of this route that may be starting at once, that is
    /// spawned but with their head not yet read (or, when the whole output came with the
    /// head within `whole_body_wait`, not yet exited), and less than `start_window` old;
    /// later ones wait in order, and get 503 if no place comes within `timeout`. `0` is
    /// no limit. Default 2 per CPU.
    pub max_starting: usize,
    /// `start_window`: how long a starting script may hold its place at most.
    /// Default 100 ms.
    pub start_window: Duration,
}

/// CPUs this process may run on (1 if unknown).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The default `max_starting`: 2 per CPU.
pub fn default_max_starting() -> usize {
    cpus() * 2
}

/// A configuration error: which key, which line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when one was read.
    pub file: Option<PathBuf>,
    /// The key path, e.g. `route[1].cgi.timeout`.
    pub key: String,
    /// The 1-based line of the key in the file, when it is there.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

/// All the errors found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where a configuration comes from, and what overrides it.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file; `None` means the built-in default.
    pub file: Option<PathBuf>,
    /// Read `PORTICO_*` environment variables (`PORTICO_SERVER__NAME=x`).
    pub env: bool,
    /// `key = value` overrides from the command line (`server.name`, `listen` …).
    pub overrides: Vec<(String, String)>,
    /// Replace every listener with one HTTP listener on this address.
    pub listen: Option<String>,
}

/// The built-in default configuration: HTTP on 127.0.0.1:8080, the landing page,
/// `/status`, `/echo`, and the example CGI scripts under `/cgi-bin/`.
pub const DEFAULT_TOML: &str = r#"
[server]
name = "localhost"

[[listen]]
protocol = "http"
address = "127.0.0.1:8080"

[[route]]
exact = "/"
handler = "landing"

[[route]]
prefix = "/status"
handler = "status"

[[route]]
prefix = "/echo"
handler = "echo"

[[route]]
prefix = "/cgi-bin/"
cgi = { root = "examples/cgi-bin", timeout = "30s" }
"#;

/// Loads and types a configuration.
pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
    let (text, file) = match &sources.file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => (t, Some(path.clone())),
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigError {
                    file: Some(path.clone()),
                    key: String::new(),
                    line: None,
                    message: format!("cannot read: {e}"),
                }]));
            }
        },
        None => (DEFAULT_TOML.to_owned(), None),
    };
    let base = file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let lines = KeyLines::new(&text);
    let err = |key: String, message: String| ConfigError {
        file: file.clone(),
        line: lines.line_of(&key),
        key,
        message,
    };
    // The syntax first, with toml_edit's own line and column.
    if let Err(e) = text.parse::<toml_edit::DocumentMut>() {
        let line = e.span().map(|s| line_at(&text, s.start));
        return Err(ConfigErrors(vec![ConfigError {
            file: file.clone(),
            key: String::new(),
            line,
            message: format!("TOML syntax: {}", e.message()),
        }]));
    }
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml));
    if sources.env {
        builder = builder.add_source(
            config::Environment::with_prefix("PORTICO")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
    }
    for (k, v) in &sources.overrides {
        builder = builder
            .set_override(k.as_str(), v.as_str())
            .map_err(|e| ConfigErrors(vec![err(k.clone(), e.to_string())]))?;
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigErrors(vec![from_config_error(&e, &err)]))?;
    let raw: RawConfig = merged
        .try_deserialize()
        .map_err(|e| ConfigErrors(vec![from_config_error(&e, &err)]))?;
    let mut typed = typed(raw, &base, &err)?;
    if let Some(listen) = &sources.listen {
        match listen.parse() {
            Ok(address) => {
                typed.listeners = vec![Listen {
                    protocol: Protocol::Http,
                    address,
                    socket_mode: None,
                    socket_owner: None,
                }]
            }
            Err(e) => return Err(ConfigErrors(vec![err("--listen".into(), format!("{e}"))])),
        }
    }
    Ok(typed)
}

fn from_config_error(
    e: &config::ConfigError,
    err: &impl Fn(String, String) -> ConfigError,
) -> ConfigError {
    // The `config` crate reports "... for key `route[0].cgi.timeout`" and "unknown field
    // `x`"; pull the key out so the line can be found.
    let msg = e.to_string();
    let parent = between(&msg, "for key `", "`");
    let field =
        between(&msg, "unknown field `", "`").or_else(|| between(&msg, "missing field `", "`"));
    let key = match (parent, field) {
        (Some(p), Some(f)) => format!("{p}.{f}"),
        (p, f) => p.or(f).unwrap_or_default(),
    };
    // The message repeats the key; keep only what is wrong.
    let msg = msg.split(" for key `").next().unwrap_or(&msg).to_owned();
    err(key, msg)
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_owned())
}

// ---- the serde mirror ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    fastcgi: RawFastcgi,
    #[serde(default)]
    scgi: RawScgi,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Option<String>,
    software: Option<String>,
    grace: Option<String>,
    access_log: Option<String>,
    max_redirects: Option<i64>,
    threads: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    max_header_bytes: Option<RawSize>,
    max_headers: Option<i64>,
    max_body_bytes: Option<RawSize>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFastcgi {
    max_conns: Option<i64>,
    max_reqs: Option<i64>,
    mpxs_conns: Option<bool>,
    max_requests_per_conn: Option<i64>,
    max_params_bytes: Option<RawSize>,
    stdin_buffer: Option<RawSize>,
    idle_timeout: Option<String>,
    stderr: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScgi {
    max_header_bytes: Option<RawSize>,
    max_headers: Option<i64>,
    header_timeout: Option<String>,
    max_connections: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    protocol: Option<String>,
    address: Option<String>,
    socket_mode: Option<String>,
    socket_owner: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    cgi: Option<RawCgi>,
    handler: Option<String>,
    fastcgi: Option<RawGateway>,
    scgi: Option<RawGateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    upstreams: Option<Vec<String>>,
    command: Option<Vec<String>>,
    document_root: Option<String>,
    script: Option<String>,
    max_conns: Option<i64>,
    connect_timeout: Option<String>,
    send_timeout: Option<String>,
    read_timeout: Option<String>,
    queue_timeout: Option<String>,
    down_backoff: Option<String>,
    spool_memory: Option<RawSize>,
    params: Option<BTreeMap<String, String>>,
    pass_authorization: Option<bool>,
    header_policy: Option<String>,
    max_header_bytes: Option<RawSize>,
    slow_request: Option<String>,
    mode: Option<String>,
    processes: Option<i64>,
    min_spare: Option<i64>,
    max_spare: Option<i64>,
    idle_timeout: Option<String>,
    max_requests: Option<i64>,
    request_terminate_timeout: Option<String>,
    env: Option<BTreeMap<String, String>>,
    pass_env: Option<Vec<String>>,
    cwd: Option<String>,
    crash_limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCgi {
    root: Option<String>,
    timeout: Option<String>,
    index: Option<Vec<String>>,
    pass_env: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    max_concurrent: Option<i64>,
    search_args: Option<bool>,
    spool_memory: Option<RawSize>,
    pass_authorization: Option<bool>,
    header_policy: Option<String>,
    nph: Option<bool>,
    max_header_bytes: Option<RawSize>,
    script_filename: Option<bool>,
    whole_body_wait: Option<String>,
    max_starting: Option<i64>,
    start_window: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(i64),
    Text(String),
}

// ---- typing ----

fn typed(
    raw: RawConfig,
    base: &Path,
    err: &impl Fn(String, String) -> ConfigError,
) -> Result<Config, ConfigErrors> {
    let errors = std::cell::RefCell::new(Vec::new());
    let check = |r: Result<(), ConfigError>| {
        if let Err(e) = r {
            errors.borrow_mut().push(e);
        }
    };

    macro_rules! field {
        ($key:expr, $val:expr, $default:expr, $parse:expr) => {
            match $val {
                None => $default,
                Some(v) => match $parse(v) {
                    Ok(x) => x,
                    Err(m) => {
                        check(Err(err($key.to_string(), m)));
                        $default
                    }
                },
            }
        };
    }

    let s = raw.server;
    let server = Server {
        name: s.name.unwrap_or_else(|| "localhost".into()),
        software: s
            .software
            .unwrap_or_else(|| format!("portico/{}", env!("CARGO_PKG_VERSION"))),
        grace: field!(
            "server.grace",
            s.grace,
            Duration::from_secs(10),
            |v: String| parse_duration(&v)
        ),
        access_log: match s.access_log.as_deref() {
            None | Some("stderr") => AccessLog::Stderr,
            Some("off") => AccessLog::Off,
            Some(p) => AccessLog::File(base.join(p)),
        },
        max_redirects: field!("server.max_redirects", s.max_redirects, 5, |v: i64| {
            in_range(v, 0, 32).map(|v| v as u8)
        }),
        threads: field!("server.threads", s.threads, default_threads(), |v: i64| {
            in_range(v, 1, 1024).map(|v| v as usize)
        }),
    };

    let h = raw.http;
    let http = Http {
        max_header_bytes: field!(
            "http.max_header_bytes",
            h.max_header_bytes,
            16 * 1024,
            |v| size(v, 1024, 1 << 24).map(|v| v as usize)
        ),
        max_headers: field!("http.max_headers", h.max_headers, 100, |v: i64| in_range(
            v, 1, 10_000
        )
        .map(|v| v as usize)),
        max_body_bytes: field!("http.max_body_bytes", h.max_body_bytes, 1 << 30, |v| size(
            v,
            0,
            u64::MAX
        )),
        header_timeout: field!(
            "http.header_timeout",
            h.header_timeout,
            Duration::from_secs(30),
            |v: String| parse_duration(&v)
        ),
        idle_timeout: field!(
            "http.idle_timeout",
            h.idle_timeout,
            Duration::from_secs(60),
            |v: String| parse_duration(&v)
        ),
        max_connections: field!("http.max_connections", h.max_connections, 1024, |v: i64| {
            in_range(v, 1, 1_000_000).map(|v| v as usize)
        }),
    };

    let f = raw.fastcgi;
    let fastcgi = Fastcgi {
        max_conns: field!("fastcgi.max_conns", f.max_conns, 1024, |v: i64| in_range(
            v, 1, 1_000_000
        )
        .map(|v| v as u32)),
        max_reqs: field!("fastcgi.max_reqs", f.max_reqs, 1024, |v: i64| in_range(
            v, 1, 1_000_000
        )
        .map(|v| v as u32)),
        mpxs_conns: f.mpxs_conns.unwrap_or(true),
        max_requests_per_conn: field!(
            "fastcgi.max_requests_per_conn",
            f.max_requests_per_conn,
            256,
            |v: i64| in_range(v, 1, 65_535).map(|v| v as usize)
        ),
        max_params_bytes: field!(
            "fastcgi.max_params_bytes",
            f.max_params_bytes,
            1 << 20,
            |v| size(v, 1024, 1 << 30).map(|v| v as usize)
        ),
        stdin_buffer: field!("fastcgi.stdin_buffer", f.stdin_buffer, 1 << 20, |v| size(
            v,
            65_536,
            1 << 32
        )
        .map(|v| v as usize)),
        idle_timeout: field!(
            "fastcgi.idle_timeout",
            f.idle_timeout,
            Duration::from_secs(60),
            |v: String| parse_duration(&v)
        ),
        stderr: f.stderr.unwrap_or(false),
    };
    let sc = raw.scgi;
    let scgi = Scgi {
        max_header_bytes: field!(
            "scgi.max_header_bytes",
            sc.max_header_bytes,
            64 * 1024,
            |v| size(v, 256, 1 << 24).map(|v| v as usize)
        ),
        max_headers: field!("scgi.max_headers", sc.max_headers, 256, |v: i64| in_range(
            v, 1, 100_000
        )
        .map(|v| v as usize)),
        header_timeout: field!(
            "scgi.header_timeout",
            sc.header_timeout,
            Duration::from_secs(30),
            |v: String| parse_duration(&v)
        ),
        max_connections: field!(
            "scgi.max_connections",
            sc.max_connections,
            1024,
            |v: i64| in_range(v, 1, 1_000_000).map(|v| v as usize)
        ),
    };

    let mut listeners = Vec::new();
    for (i, l) in raw.listen.into_iter().enumerate() {
        let key = |k: &str| format!("listen[{i}].{k}");
        let protocol = field!(
            key("protocol"),
            l.protocol,
            Protocol::Http,
            |v: String| match v.as_str() {
                "http" => Ok(Protocol::Http),
                "fastcgi" => Ok(Protocol::Fastcgi),
                "scgi" => Ok(Protocol::Scgi),
                other => Err(format!(
                    "unknown protocol {other:?} (expected http, fastcgi or scgi)"
                )),
            }
        );
        let address = match l.address {
            None => {
                check(Err(err(
                    key("address"),
                    "missing (HOST:PORT or unix:/path)".into(),
                )));
                continue;
            }
            Some(a) => match a.parse::<Address>() {
                Ok(Address::Unix(p)) => Address::Unix(base.join(p)),
                Ok(a) => a,
                Err(e) => {
                    check(Err(err(key("address"), e.to_string())));
                    continue;
                }
            },
        };
        let socket_mode = field!(key("socket_mode"), l.socket_mode, None, |v: String| {
            u32::from_str_radix(v.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .map(Some)
                .ok_or_else(|| format!("{v:?} is not an octal mode such as \"0660\""))
        });
        let socket_owner = field!(key("socket_owner"), l.socket_owner, None, |v: String| {
            parse_owner(&v).map(Some)
        });
        listeners.push(Listen {
            protocol,
            address,
            socket_mode,
            socket_owner,
        });
    }
    if listeners.is_empty() && errors.borrow().is_empty() {
        errors.borrow_mut().push(err(
            "listen".into(),
            "no [[listen]] entry: nothing to serve on".into(),
        ));
    }

    let mut routes = Vec::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        let key = |k: &str| format!("route[{i}].{k}");
        let matchers: Vec<Matcher> = [
            r.exact.map(Matcher::Exact),
            r.prefix.map(Matcher::Prefix),
            r.suffix.map(Matcher::Suffix),
        ]
        .into_iter()
        .flatten()
        .collect();
        let matcher = match matchers.as_slice() {
            [m] => m.clone(),
            [] => {
                errors.borrow_mut().push(err(
                    format!("route[{i}]"),
                    "needs one of exact, prefix or suffix".into(),
                ));
                continue;
            }
            _ => {
                errors.borrow_mut().push(err(
                    format!("route[{i}]"),
                    "has more than one of exact, prefix and suffix".into(),
                ));
                continue;
            }
        };
        match &matcher {
            Matcher::Exact(p) | Matcher::Prefix(p) if !p.starts_with('/') => {
                errors.borrow_mut().push(err(
                    key(if matches!(matcher, Matcher::Exact(_)) {
                        "exact"
                    } else {
                        "prefix"
                    }),
                    format!("{p:?} must start with '/'"),
                ));
            }
            Matcher::Suffix(s) if s.is_empty() || s.contains('/') => {
                errors.borrow_mut().push(err(
                    key("suffix"),
                    format!("{s:?} must be non-empty and contain no '/'"),
                ));
            }
            _ => {}
        }
        let name = r.name.unwrap_or_else(|| match &matcher {
            Matcher::Exact(p) | Matcher::Prefix(p) => p.clone(),
            Matcher::Suffix(s) => format!("*{s}"),
        });
        let kinds = usize::from(r.cgi.is_some())
            + usize::from(r.handler.is_some())
            + usize::from(r.fastcgi.is_some())
            + usize::from(r.scgi.is_some());
        if kinds > 1 {
            errors.borrow_mut().push(err(
                format!("route[{i}]"),
                "has more than one backend (cgi, handler, fastcgi, scgi); pick one".into(),
            ));
            continue;
        }
        let target = match (r.cgi, r.handler) {
            (Some(c), None) => {
                let root = match c.root {
                    Some(root) => base.join(root),
                    None => {
                        errors.borrow_mut().push(err(
                            key("cgi.root"),
                            "missing: the directory of the scripts".into(),
                        ));
                        continue;
                    }
                };
                let k = |f: &str| key(&format!("cgi.{f}"));
                Target::Cgi(Arc::new(Cgi {
                    root,
                    timeout: field!(
                        k("timeout"),
                        c.timeout,
                        Duration::from_secs(30),
                        |v: String| parse_duration(&v)
                    ),
                    index: c.index.unwrap_or_else(|| vec!["index.cgi".into()]),
                    pass_env: c.pass_env.unwrap_or_else(|| {
                        ["PATH", "LANG", "LC_ALL", "TZ"].map(String::from).to_vec()
                    }),
                    env: c.env.unwrap_or_default().into_iter().collect(),
                    max_concurrent: field!(k("max_concurrent"), c.max_concurrent, 64, |v: i64| {
                        in_range(v, 1, 100_000).map(|v| v as usize)
                    }),
                    search_args: c.search_args.unwrap_or(false),
                    spool_memory: field!(k("spool_memory"), c.spool_memory, 1 << 20, |v| size(
                        v,
                        0,
                        1 << 32
                    )
                    .map(|v| v as usize)),
                    pass_authorization: c.pass_authorization.unwrap_or(false),
                    header_policy: field!(
                        k("header_policy"),
                        c.header_policy,
                        HeaderPolicy::Strict,
                        |v: String| match v.as_str() {
                            "strict" => Ok(HeaderPolicy::Strict),
                            "map" => Ok(HeaderPolicy::Map),
                            o => Err(format!("unknown policy {o:?} (expected strict or map)")),
                        }
                    ),
                    nph: c.nph.unwrap_or(true),
                    max_header_bytes: field!(
                        k("max_header_bytes"),
                        c.max_header_bytes,
                        64 * 1024,
                        |v| size(v, 256, 1 << 24).map(|v| v as usize)
                    ),
                    script_filename: c.script_filename.unwrap_or(false),
                    whole_body_wait: field!(
                        k("whole_body_wait"),
                        c.whole_body_wait,
                        Duration::from_millis(1),
                        |v: String| parse_duration(&v).and_then(
                            |d| if d > Duration::from_secs(1) {
                                Err(format!("{v:?} is over the 1s this wait may take"))
                            } else {
                                Ok(d)
                            }
                        )
                    ),
                    max_starting: field!(
                        k("max_starting"),
                        c.max_starting,
                        default_max_starting(),
                        |v: i64| in_range(v, 0, 100_000).map(|v| v as usize)
                    ),
                    start_window: field!(
                        k("start_window"),
                        c.start_window,
                        Duration::from_millis(100),
                        |v: String| parse_duration(&v).and_then(|d| {
                            if d.is_zero() || d > Duration::from_secs(60) {
                                Err(format!("{v:?} is not between 1ms and 60s"))
                            } else {
                                Ok(d)
                            }
                        })
                    ),
                }))
            }
            (None, Some(h)) => Target::Handler(h),
            (None, None) => {
                let (g, fcgi) = match (r.fastcgi, r.scgi) {
                    (Some(g), _) => (g, true),
                    (None, Some(g)) => (g, false),
                    (None, None) => {
                        errors.borrow_mut().push(err(
                            format!("route[{i}]"),
                            "needs a backend: cgi = { root = … }, fastcgi = { … }, scgi = { … } or handler = \"name\"".into(),
                        ));
                        continue;
                    }
                };
                let k = key(if fcgi { "fastcgi" } else { "scgi" });
                match gateway(g, &k, fcgi, base, err) {
                    Ok(g) if fcgi => Target::Fastcgi(Arc::new(g)),
                    Ok(g) => Target::Scgi(Arc::new(g)),
                    Err(e) => {
                        errors.borrow_mut().extend(e);
                        continue;
                    }
                }
            }
            (Some(_), Some(_)) => {
                errors.borrow_mut().push(err(
                    format!("route[{i}]"),
                    "has both cgi and handler; pick one".into(),
                ));
                continue;
            }
        };
        routes.push(Route {
            name,
            matcher,
            target,
        });
    }

    let errors = errors.into_inner();
    if errors.is_empty() {
        Ok(Config {
            server,
            http,
            fastcgi,
            scgi,
            listeners,
            routes,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `"user:group"` to ids; each part a name or a number.
fn parse_owner(v: &str) -> Result<(u32, u32), String> {
    let (user, group) = v
        .split_once(':')
        .ok_or_else(|| format!("{v:?} is not \"user:group\""))?;
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let name = std::ffi::CString::new(user).map_err(|_| format!("bad user {user:?}"))?;
            // SAFETY: getpwnam returns null or a pointer to static storage valid until the
            // next call; we read one field at once, single-threaded during config load.
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            if pw.is_null() {
                return Err(format!("no user named {user:?}"));
            }
            unsafe { (*pw).pw_uid }
        }
    };
    let gid = match group.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let name = std::ffi::CString::new(group).map_err(|_| format!("bad group {group:?}"))?;
            // SAFETY: as for getpwnam above.
            let gr = unsafe { libc::getgrnam(name.as_ptr()) };
            if gr.is_null() {
                return Err(format!("no group named {group:?}"));
            }
            unsafe { (*gr).gr_gid }
        }
    };
    Ok((uid, gid))
}

/// Types a `fastcgi = {…}` or `scgi = {…}` table whose key is `key`.
fn gateway(
    g: RawGateway,
    key: &str,
    fastcgi: bool,
    base: &Path,
    err: &impl Fn(String, String) -> ConfigError,
) -> Result<Gateway, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let k = |f: &str| format!("{key}.{f}");
    macro_rules! opt {
        ($field:expr, $name:expr, $default:expr, $parse:expr) => {
            match $field {
                None => $default,
                Some(v) => match $parse(v) {
                    Ok(x) => x,
                    Err(m) => {
                        errors.push(err(k($name), m));
                        $default
                    }
                },
            }
        };
    }
    let dur = |v: String| parse_duration(&v);
    let mut upstreams = Vec::new();
    for (n, u) in g.upstreams.clone().unwrap_or_default().iter().enumerate() {
        match u.parse::<Address>() {
            Ok(Address::Unix(p)) => upstreams.push(Address::Unix(base.join(p))),
            Ok(Address::Inherited(_)) => errors.push(err(
                format!("{key}.upstreams[{n}]"),
                "an upstream cannot be an inherited socket".into(),
            )),
            Ok(a) => upstreams.push(a),
            Err(e) => errors.push(err(format!("{key}.upstreams[{n}]"), e.to_string())),
        }
    }
    let children = match (&g.command, fastcgi) {
        (Some(_), false) => {
            errors.push(err(
                k("command"),
                "managed children are for FastCGI only; SCGI routes take upstreams".into(),
            ));
            None
        }
        (Some(cmd), true) if cmd.is_empty() => {
            errors.push(err(
                k("command"),
                "is empty: give the program and its arguments".into(),
            ));
            None
        }
        (Some(cmd), true) => {
            let mode = opt!(
                g.mode.clone(),
                "mode",
                PoolMode::Static,
                |v: String| match v.as_str() {
                    "static" => Ok(PoolMode::Static),
                    "dynamic" => Ok(PoolMode::Dynamic),
                    "ondemand" => Ok(PoolMode::Ondemand),
                    o => Err(format!(
                        "unknown mode {o:?} (expected static, dynamic or ondemand)"
                    )),
                }
            );
            let processes = opt!(g.processes, "processes", 4, |v: i64| in_range(v, 1, 4096)
                .map(|v| v as usize));
            let min_spare = opt!(g.min_spare, "min_spare", 1, |v: i64| in_range(v, 0, 4096)
                .map(|v| v as usize));
            let max_spare = opt!(g.max_spare, "max_spare", 3, |v: i64| in_range(v, 1, 4096)
                .map(|v| v as usize));
            if mode == PoolMode::Dynamic && (min_spare > max_spare || max_spare > processes) {
                errors.push(err(
                    k("max_spare"),
                    format!("needs min_spare ({min_spare}) <= max_spare ({max_spare}) <= processes ({processes})"),
                ));
            }
            Some(Children {
                command: cmd.clone(),
                mode,
                processes,
                min_spare,
                max_spare,
                idle_timeout: opt!(
                    g.idle_timeout.clone(),
                    "idle_timeout",
                    Duration::from_secs(10),
                    dur
                ),
                max_requests: opt!(g.max_requests, "max_requests", 500, |v: i64| in_range(
                    v,
                    0,
                    i64::MAX
                )
                .map(|v| v as u64)),
                terminate_timeout: opt!(
                    g.request_terminate_timeout.clone(),
                    "request_terminate_timeout",
                    None,
                    |v: String| parse_duration(&v).map(Some)
                ),
                env: g.env.clone().unwrap_or_default().into_iter().collect(),
                pass_env: g.pass_env.clone().unwrap_or_else(|| vec!["PATH".into()]),
                cwd: g.cwd.as_ref().map(|c| base.join(c)),
                crash_limit: opt!(g.crash_limit, "crash_limit", 10, |v: i64| in_range(
                    v, 1, 1_000_000
                )
                .map(|v| v as u32)),
            })
        }
        (None, _) => {
            if g.upstreams.is_none() {
                errors.push(err(
                    key.to_owned(),
                    if fastcgi {
                        "needs upstreams = [\"HOST:PORT\" | \"unix:/path\", …] or command = [\"php-cgi\", …]".into()
                    } else {
                        "needs upstreams = [\"HOST:PORT\" | \"unix:/path\", …]".into()
                    },
                ));
            } else if upstreams.is_empty() && errors.is_empty() {
                errors.push(err(k("upstreams"), "is empty".into()));
            }
            for (name, set) in [
                ("mode", g.mode.is_some()),
                ("processes", g.processes.is_some()),
                ("max_requests", g.max_requests.is_some()),
                ("env", g.env.is_some()),
            ] {
                if set {
                    errors.push(err(
                        k(name),
                        "applies to managed children (command = [...]) only".into(),
                    ));
                }
            }
            None
        }
    };
    if children.is_some() && !upstreams.is_empty() {
        errors.push(err(
            key.to_owned(),
            "has both upstreams and command; pick one".into(),
        ));
    }
    let script = match g.script {
        Some(s) if !s.starts_with('/') => {
            errors.push(err(k("script"), format!("{s:?} must start with '/'")));
            None
        }
        s => s,
    };
    let gw = Gateway {
        upstreams,
        children,
        document_root: g.document_root.as_ref().map(|d| base.join(d)),
        script,
        max_conns: opt!(g.max_conns, "max_conns", 16, |v: i64| in_range(
            v, 1, 100_000
        )
        .map(|v| v as usize)),
        connect_timeout: opt!(
            g.connect_timeout,
            "connect_timeout",
            Duration::from_secs(3),
            dur
        ),
        send_timeout: opt!(g.send_timeout, "send_timeout", Duration::from_secs(60), dur),
        read_timeout: opt!(g.read_timeout, "read_timeout", Duration::from_secs(60), dur),
        queue_timeout: opt!(
            g.queue_timeout,
            "queue_timeout",
            Duration::from_secs(5),
            dur
        ),
        down_backoff: opt!(g.down_backoff, "down_backoff", Duration::from_secs(1), dur),
        spool_memory: opt!(g.spool_memory, "spool_memory", 1 << 20, |v| size(
            v,
            0,
            1 << 32
        )
        .map(|v| v as usize)),
        params: g.params.unwrap_or_default().into_iter().collect(),
        pass_authorization: g.pass_authorization.unwrap_or(true),
        header_policy: opt!(
            g.header_policy,
            "header_policy",
            HeaderPolicy::Strict,
            |v: String| {
                match v.as_str() {
                    "strict" => Ok(HeaderPolicy::Strict),
                    "map" => Ok(HeaderPolicy::Map),
                    o => Err(format!("unknown policy {o:?} (expected strict or map)")),
                }
            }
        ),
        max_header_bytes: opt!(g.max_header_bytes, "max_header_bytes", 64 * 1024, |v| size(
            v,
            256,
            1 << 24
        )
        .map(|v| v as usize)),
        slow_request: opt!(g.slow_request, "slow_request", Duration::from_secs(5), dur),
    };
    if errors.is_empty() {
        Ok(gw)
    } else {
        Err(errors)
    }
}

fn in_range(v: i64, lo: i64, hi: i64) -> Result<i64, String> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is out of range {lo}..={hi}"))
    }
}

fn size(v: RawSize, lo: u64, hi: u64) -> Result<u64, String> {
    let n = match v {
        RawSize::Int(i) => u64::try_from(i).map_err(|_| format!("{i} is negative"))?,
        RawSize::Text(t) => parse_size(&t)?,
    };
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} bytes is out of range {lo}..={hi}"))
    }
}

/// Parses a duration: `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as \"30s\" or \"250ms\""))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    // Deadlines are the clock plus a duration: one past what the clock holds would
    // not be "never" everywhere, so a year is the longest a setting can say.
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too long (at most 8760h, a year)"));
    }
    Ok(d)
}

/// The longest duration a setting takes ([`parse_duration`]).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a size: `512`, `64KiB`, `1MiB`, `2GiB`, `10MB`, `1k`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as \"64KiB\" or \"1MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit (use KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Finds the line of a key path such as `route[1].cgi.timeout` in the TOML text: the
/// deepest part of the path that the file has.
struct KeyLines {
    doc: Option<toml_edit::Document<String>>,
    text: String,
}

enum Node<'a> {
    Table(&'a toml_edit::Table),
    Inline(&'a toml_edit::InlineTable),
    Tables(&'a toml_edit::ArrayOfTables),
    Leaf,
}

impl<'a> Node<'a> {
    fn of_item(item: &'a toml_edit::Item) -> Node<'a> {
        match item {
            toml_edit::Item::Table(t) => Node::Table(t),
            toml_edit::Item::ArrayOfTables(a) => Node::Tables(a),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => Node::Inline(t),
            _ => Node::Leaf,
        }
    }
}

impl KeyLines {
    fn new(text: &str) -> KeyLines {
        KeyLines {
            doc: toml_edit::Document::parse(text.to_owned()).ok(),
            text: text.to_owned(),
        }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<usize> = None;
        for part in key.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let (span, next) = match node {
                Node::Table(t) => match t.get_key_value(name) {
                    Some((k, v)) => (k.span(), Node::of_item(v)),
                    None => break,
                },
                Node::Inline(t) => match t.get_key_value(name) {
                    Some((k, v)) => (k.span(), Node::of_item(v)),
                    None => break,
                },
                Node::Tables(_) | Node::Leaf => break,
            };
            if let Some(sp) = span {
                best = Some(sp.start);
            }
            node = next;
            if let (Some(i), Node::Tables(a)) = (index, &node) {
                match a.get(i) {
                    Some(t) => {
                        if let Some(sp) = t.span() {
                            best = Some(sp.start);
                        }
                        node = Node::Table(t);
                    }
                    None => break,
                }
            }
        }
        best.map(|off| line_at(&self.text, off))
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        load(&Sources {
            file: Some(f),
            env: false,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen: None,
        })
    }

    const MIN: &str = "[[listen]]\naddress = \"127.0.0.1:0\"\n";

    #[test]
    fn built_in_default_is_valid() {
        let c = load(&Sources::default()).unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.http.max_header_bytes, 16 * 1024);
        assert_eq!(c.server.grace, Duration::from_secs(10));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        // Past a year: refused, not a deadline the clock cannot hold.
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert!(parse_duration("8761h").is_err());
        assert!(parse_duration("18446744073709551615s").is_err());
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn server_threads() {
        let threads = |extra: &str| {
            load_text(&format!("[server]\n{extra}\n{MIN}"), &[]).map(|c| c.server.threads)
        };
        assert_eq!(threads("").expect("valid"), default_threads());
        assert!(default_threads() >= 1);
        assert_eq!(threads("threads = 3").expect("valid"), 3);
        let e = threads("threads = 0").unwrap_err();
        assert_eq!(
            (e.0[0].key.as_str(), e.0[0].line),
            ("server.threads", Some(2))
        );
    }

    #[test]
    fn cgi_start_pacing_keys() {
        let cgi = |extra: &str| {
            let c = load_text(
                &format!("{MIN}[[route]]\nprefix = \"/x/\"\ncgi = {{ root = \"/tmp\"{extra} }}\n"),
                &[],
            )
            .expect("valid");
            match &c.routes[0].target {
                Target::Cgi(c) => (c.max_starting, c.start_window),
                other => panic!("not a CGI route: {other:?}"),
            }
        };
        assert_eq!(
            cgi(""),
            (default_max_starting(), Duration::from_millis(100))
        );
        assert!(default_max_starting() >= 3);
        assert_eq!(
            cgi(", max_starting = 0, start_window = \"250ms\""),
            (0, Duration::from_millis(250))
        );
        assert_eq!(cgi(", max_starting = 3"), (3, Duration::from_millis(100)));
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = load_text(&format!("{MIN}[[route]]\nprefix = \"/x/\"\ncgi = {{ root = \"/tmp\", max_concurrent = 0 }}\n"), &[]).unwrap_err();
        assert_eq!(e.0[0].key, "route[0].cgi.max_concurrent");
        assert_eq!(e.0[0].line, Some(5));
        let e = load_text(&format!("{MIN}[[route]]\nprefix = \"/x/\"\ncgi = {{ root = \"/tmp\", whole_body_wait = \"2s\" }}\n"), &[]).unwrap_err();
        assert_eq!(
            (e.0[0].key.as_str(), e.0[0].line),
            ("route[0].cgi.whole_body_wait", Some(5))
        );
        for bad in [
            "max_starting = -1",
            "start_window = \"0ms\"",
            "start_window = \"2m\"",
        ] {
            let e = load_text(
                &format!("{MIN}[[route]]\nprefix = \"/x/\"\ncgi = {{ root = \"/tmp\", {bad} }}\n"),
                &[],
            )
            .unwrap_err();
            let key = format!("route[0].cgi.{}", bad.split(' ').next().unwrap_or(""));
            assert_eq!(
                (e.0[0].key.as_str(), e.0[0].line),
                (key.as_str(), Some(5)),
                "{bad}"
            );
        }
        let e = load_text(
            &format!("{MIN}[[route]]\nprefix = \"x\"\nhandler = \"echo\"\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            (e.0[0].key.as_str(), e.0[0].line),
            ("route[0].prefix", Some(4))
        );
        let e = load_text("[[listen]]\naddress = \"nowhere\"\n", &[]).unwrap_err();
        assert_eq!(
            (e.0[0].key.as_str(), e.0[0].line),
            ("listen[0].address", Some(2))
        );
        let e = load_text("[server\n", &[]).unwrap_err();
        assert!(e.0[0].message.starts_with("TOML syntax"), "{e}");
        assert_eq!(e.0[0].line, Some(1));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = load_text(
            &format!(
                "[http]\nidle_timeout = \"x\"\nmax_headers = 0\n{MIN}[[route]]\nprefix = \"/a/\"\n"
            ),
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["http.max_headers", "http.idle_timeout", "route[0]"]
        );
    }

    #[test]
    fn gateway_routes_are_checked() {
        let e = load_text(
            &format!("{MIN}[[route]]\nsuffix = \".php\"\nfastcgi = {{ }}\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "route[0].fastcgi");
        let e = load_text(
            &format!("{MIN}[[route]]\nprefix = \"/s/\"\nscgi = {{ command = [\"x\"] }}\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "route[0].scgi.command");
        let e = load_text(
            &format!("{MIN}[[route]]\nprefix = \"/p/\"\nfastcgi = {{ command = [\"php-cgi\"], mode = \"dynamic\", processes = 2, max_spare = 5 }}\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "route[0].fastcgi.max_spare");
        let c = load_text(
            &format!("{MIN}[[route]]\nsuffix = \".php\"\nfastcgi = {{ upstreams = [\"127.0.0.1:9000\", \"unix:/run/php.sock\"], read_timeout = \"2s\" }}\n"),
            &[],
        )
        .unwrap();
        let Target::Fastcgi(g) = &c.routes[0].target else {
            panic!()
        };
        assert_eq!(g.upstreams.len(), 2);
        assert_eq!(g.read_timeout, Duration::from_secs(2));
        assert_eq!(g.max_conns, 16);
    }

    #[test]
    fn command_line_overrides_win() {
        let c = load_text(
            &format!("[server]\nname = \"file\"\n{MIN}"),
            &[("server.name", "flag")],
        )
        .unwrap();
        assert_eq!(c.server.name, "flag");
    }
}
