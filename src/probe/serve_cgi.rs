//! `portico probe --serve cgi` (or `PORTICO_PROBE=serve-cgi` in the environment of a
//! portico started with no arguments): portico run *as a CGI program* by a web server
//! (lighttpd mod_cgi, Apache mod_cgi …), checking the CGI request it was given against
//! RFC 3875 §4 (`shared/specs/cgi.md`, test ideas CGI-T-1 to CGI-T-10, CGI-T-16 and
//! CGI-T-23 as far as they are observable from inside the script):
//! the required meta-variables GATEWAY_INTERFACE = `CGI/1.1` (CGI-4.1.4-1, CGI-4.1.4-3),
//! REQUEST_METHOD (CGI-4.1.12-1), QUERY_STRING (CGI-4.1.7-3), SCRIPT_NAME (CGI-4.1.13-1,
//! CGI-4.1.13-2), SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL, SERVER_SOFTWARE
//! (CGI-4.1.14-1 to CGI-4.1.17-1), REMOTE_ADDR (CGI-4.1.8-1) and REMOTE_HOST (CGI-4.1.9-2);
//! SCRIPT_NAME + PATH_INFO against the decoded path of REQUEST_URI (CGI-3.3-3, CGI-4.1.5-2,
//! CGI-4.1.13-4) and QUERY_STRING byte-identical to its query (CGI-4.1.7-1);
//! PATH_TRANSLATED (CGI-4.1.6-6, CGI-4.1.6-7); CONTENT_LENGTH if and only if a body, equal
//! to the bytes readable on standard input (CGI-4.1.2-2, CGI-4.2-3, CGI-4.2-4, CGI-AMB-4);
//! CONTENT_TYPE (CGI-4.1.3-4); the HTTP_* mapping (CGI-4.1.18-4, CGI-4.1.18-10, CGI-9.2-1)
//! and no HTTP_PROXY even when the client sent `Proxy:` (CGI-RW-6, CGI-AMB-8); AUTH_TYPE
//! with REMOTE_USER (CGI-4.1.11-2); the working directory (CGI-7.2-3) and the open file
//! descriptors (CGI-4.2-1, CGI-9.5-1).
//!
//! The answer is a CGI document (`Status: 200 OK`, `Content-Type: text/plain`) whose body
//! is the report: one finding per line, then the summary line. For HEAD the body is sent
//! all the same, on purpose: the web server must discard it (CGI-4.3.3-2), which the HTTP
//! client can check. The exit status is always 0, so the web server relays the report.
//!
//! The meta-variable checks are shared with `probe --serve scgi` ([`super::serve_scgi`]),
//! whose SCGI headers carry the same variables (SCGI-3-8).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::ProbeArgs;
use super::report::{Finding, Format, Level, Report, Side};

/// The environment variable that selects this mode when portico is started without
/// arguments by a web server: `PORTICO_PROBE=serve-cgi`.
pub const ENV_SWITCH: &str = "PORTICO_PROBE";

/// The value of [`ENV_SWITCH`] that selects this mode.
pub const ENV_VALUE: &str = "serve-cgi";

/// The time limit for the request body in the environment-selected mode
/// (`PORTICO_PROBE_TIMEOUT`, e.g. `5s`; default 2 s, like `--check-timeout`).
pub const ENV_TIMEOUT: &str = "PORTICO_PROBE_TIMEOUT";

/// How long standard input is watched for bytes beyond CONTENT_LENGTH, or for a body
/// that came without one.
const GRACE: Duration = Duration::from_millis(200);

/// The most body bytes read (and counted) from standard input.
const MAX_BODY: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Clauses and findings (shared with `serve_scgi`)

/// The level and side of each CGI or SCGI clause the web-server checks cite
/// (`shared/specs/cgi.md`, `shared/specs/scgi.md`).
pub(crate) fn clause(id: &str) -> (Level, Side) {
    use Level::{Amb, Fact, May, Must, MustNot, Rw, Should, ShouldNot};
    use Side::{Both, Ws};
    match id {
        "SCGI-2-2" | "SCGI-3-4" | "SCGI-3-5" | "SCGI-3-6" | "SCGI-3-7" | "SCGI-3-9"
        | "SCGI-3-10" => (Must, Ws),
        "SCGI-3-3" | "SCGI-4-2" => (MustNot, Ws),
        "SCGI-3-8" => (Should, Ws),
        "CGI-3.3-3" | "CGI-4.1.2-2" | "CGI-4.1.3-4" | "CGI-4.1.4-1" | "CGI-4.1.5-2"
        | "CGI-4.1.6-7" | "CGI-4.1.7-3" | "CGI-4.1.8-1" | "CGI-4.1.11-2" | "CGI-4.1.12-1"
        | "CGI-4.1.13-1" | "CGI-4.1.13-2" | "CGI-4.1.14-1" | "CGI-4.1.15-1" | "CGI-4.1.16-1"
        | "CGI-4.1.17-1" | "CGI-4.2-3" | "CGI-4.3.3-2" => (Must, Ws),
        "CGI-4.1.4-3" | "CGI-4.1.13-4" => (MustNot, Ws),
        "CGI-4.1.6-6" | "CGI-4.1.9-2" | "CGI-4.1.18-10" | "CGI-7.2-3" | "CGI-9.5-1" => (Should, Ws),
        "CGI-9.2-1" => (ShouldNot, Ws),
        "CGI-4.2-4" | "CGI-4.1.9-3" => (May, Ws),
        "CGI-4.1.18-4" | "CGI-4.4-1" => (Fact, Ws),
        id if id.contains("-RW-") => (Rw, Ws),
        id if id.contains("-AMB-") => (Amb, Both),
        _ => (Fact, Both),
    }
}

/// The findings of one request: at most one break per clause (the first), and no PASS
/// for a clause that broke.
#[derive(Debug)]
pub(crate) struct Sink {
    check: String,
    findings: Vec<Finding>,
    broken: BTreeSet<String>,
}

impl Sink {
    /// An empty result for the check `check`.
    pub(crate) fn new(check: &str) -> Sink {
        Sink {
            check: check.to_owned(),
            findings: Vec::new(),
            broken: BTreeSet::new(),
        }
    }

    /// The clause held.
    pub(crate) fn pass(&mut self, id: &str, obs: impl Into<String>) {
        if self.broken.contains(id) {
            return;
        }
        let (level, side) = clause(id);
        self.findings
            .push(Finding::pass(&self.check, id, level, side, obs));
    }

    /// The clause was broken: the verdict follows its level.
    pub(crate) fn broken(&mut self, id: &str, obs: impl Into<String>) {
        if !self.broken.insert(id.to_owned()) {
            return;
        }
        self.findings
            .retain(|f| !(f.clause == id && f.verdict == super::report::Verdict::Pass));
        let (level, side) = clause(id);
        self.findings
            .push(Finding::broken(&self.check, id, level, side, obs));
    }

    /// An observation.
    pub(crate) fn info(&mut self, id: &str, obs: impl Into<String>) {
        let (level, side) = clause(id);
        self.findings
            .push(Finding::info(&self.check, id, level, side, obs));
    }

    /// The findings, in the order they were made.
    pub(crate) fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}

// ---------------------------------------------------------------------------------------------
// The meta-variables (CGI directly, or SCGI headers)

/// How the meta-variables arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// A CGI program's environment (RFC 3875 §4.1 applies in full).
    Cgi,
    /// SCGI headers: CONTENT_LENGTH is SCGI's own (always sent), and the CGI variables
    /// are a SHOULD (SCGI-3-8).
    Scgi,
}

/// Meta-variables as name/value bytes, first occurrence wins.
pub(crate) struct Env<'a>(pub(crate) &'a [(Vec<u8>, Vec<u8>)]);

impl Env<'_> {
    /// The value of `name`, set (possibly empty) or not.
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The value of `name` when non-empty (an empty value is an unset one, CGI-4.1-6).
    fn value(&self, name: &str) -> Option<&[u8]> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Percent-decodes `s` (RFC 3986 `%HH`); a `%` not followed by two hex digits stays.
pub(crate) fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

fn is_token(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `CGI/` digits `.` digits: Some(leading zeros?) (CGI-4.1.4-1, CGI-4.1.4-3).
fn gateway_version(v: &[u8]) -> Option<bool> {
    let rest = v.strip_prefix(b"CGI/")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (major, minor) = (rest.get(..dot)?, rest.get(dot + 1..)?);
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return None;
    }
    let zero = |d: &[u8]| d.len() > 1 && d.first() == Some(&b'0');
    Some(zero(major) || zero(minor))
}

/// `HTTP/1.1`, `INCLUDED`, or `token[/digits.digits]` (CGI-4.1.16-2).
fn protocol_syntax(v: &[u8]) -> bool {
    if v == b"INCLUDED" {
        return true;
    }
    match v.iter().position(|&b| b == b'/') {
        None => is_token(v),
        Some(slash) => {
            let (name, ver) = (&v[..slash], &v[slash + 1..]);
            let mut parts = ver.split(|&b| b == b'.');
            let ok = |p: Option<&[u8]>| {
                p.is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
            };
            is_token(name) && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
        }
    }
}

/// Checks the CGI meta-variables (RFC 3875 §4.1) a web server sent, directly or as SCGI
/// headers; `body` is whether a request body is known to have come (for CONTENT_TYPE).
pub(crate) fn meta_findings(env: &Env<'_>, via: Via, o: &mut Sink) {
    presence(env, via, o);
    values(env, via, o);
    uri_consistency(env, o);
    headers(env, via, o);
}

/// The variables a server must (CGI) or should (SCGI-3-8) send.
fn presence(env: &Env<'_>, via: Via, o: &mut Sink) {
    match via {
        Via::Cgi => {
            // CGI-T-1: set even when empty (QUERY_STRING, SCRIPT_NAME), or non-empty.
            for (name, id, may_be_empty) in [
                ("GATEWAY_INTERFACE", "CGI-4.1.4-1", false),
                ("REQUEST_METHOD", "CGI-4.1.12-1", false),
                ("QUERY_STRING", "CGI-4.1.7-3", true),
                ("SCRIPT_NAME", "CGI-4.1.13-2", true),
                ("SERVER_NAME", "CGI-4.1.14-1", false),
                ("SERVER_PORT", "CGI-4.1.15-1", false),
                ("SERVER_PROTOCOL", "CGI-4.1.16-1", false),
                ("SERVER_SOFTWARE", "CGI-4.1.17-1", false),
                ("REMOTE_ADDR", "CGI-4.1.8-1", false),
            ] {
                let v = if may_be_empty {
                    env.get(name)
                } else {
                    env.value(name)
                };
                match v {
                    Some(v) => o.pass(id, format!("{name}={}", show(v))),
                    None if env.get(name).is_some() => o.broken(id, format!("{name} is empty")),
                    None => o.broken(id, format!("{name} is not set")),
                }
            }
            match (env.value("REMOTE_HOST"), env.value("REMOTE_ADDR")) {
                (None, _) => o.broken("CGI-4.1.9-2", "REMOTE_HOST is not set"),
                (Some(h), Some(a)) if h == a => o.info(
                    "CGI-4.1.9-3",
                    format!("REMOTE_HOST is REMOTE_ADDR ({})", show(a)),
                ),
                (Some(h), _) => o.pass("CGI-4.1.9-2", format!("REMOTE_HOST={}", show(h))),
            }
        }
        Via::Scgi => {
            // SCGI-T-16: the CGI variables that make an SCGI request a CGI request.
            let wanted = [
                "REQUEST_METHOD",
                "REQUEST_URI",
                "QUERY_STRING",
                "SCRIPT_NAME",
                "SERVER_NAME",
                "SERVER_PORT",
                "SERVER_PROTOCOL",
                "REMOTE_ADDR",
            ];
            let mut problems: Vec<String> = Vec::new();
            let missing: Vec<&str> = wanted
                .into_iter()
                .filter(|n| env.get(n).is_none())
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "CGI meta-variables not sent: {}",
                    missing.join(", ")
                ));
            }
            if !env.0.iter().any(|(n, _)| n.starts_with(b"HTTP_")) {
                problems.push("no HTTP_* variables (the request headers)".to_owned());
            }
            if problems.is_empty() {
                o.pass(
                    "SCGI-3-8",
                    format!("CGI meta-variables sent: {}, HTTP_*", wanted.join(", ")),
                );
            } else {
                o.broken("SCGI-3-8", problems.join("; "));
            }
            let optional: Vec<&str> = ["PATH_INFO", "GATEWAY_INTERFACE", "SERVER_SOFTWARE"]
                .into_iter()
                .filter(|n| env.get(n).is_none())
                .collect();
            if !optional.is_empty() {
                o.info(
                    "SCGI-3-8",
                    format!(
                        "not sent: {} (PATH_INFO is set only with extra path)",
                        optional.join(", ")
                    ),
                );
            }
        }
    }
}

/// The syntax of the values that are set.
fn values(env: &Env<'_>, via: Via, o: &mut Sink) {
    if let Some(v) = env.value("GATEWAY_INTERFACE") {
        match gateway_version(v) {
            None => o.broken(
                "CGI-4.1.4-1",
                format!("GATEWAY_INTERFACE={} is not CGI/x.y", show(v)),
            ),
            Some(true) => o.broken(
                "CGI-4.1.4-3",
                format!("GATEWAY_INTERFACE={} has a leading zero", show(v)),
            ),
            Some(false) if v != b"CGI/1.1" => o.info(
                "CGI-4.1.4-1",
                format!("GATEWAY_INTERFACE={} (this RFC is CGI/1.1)", show(v)),
            ),
            Some(false) => {}
        }
    }
    if let Some(v) = env.value("REQUEST_METHOD")
        && !is_token(v)
    {
        o.info(
            "CGI-4.1.12-2",
            format!("REQUEST_METHOD={} is not a token", show(v)),
        );
    }
    if let Some(v) = env.get("SERVER_PORT")
        && (v.is_empty() || !v.iter().all(u8::is_ascii_digit))
    {
        o.broken(
            "CGI-4.1.15-1",
            format!("SERVER_PORT={} is not a decimal port", show(v)),
        );
    }
    if let Some(v) = env.value("SERVER_PROTOCOL")
        && !protocol_syntax(v)
    {
        o.info(
            "CGI-4.1.16-2",
            format!(
                "SERVER_PROTOCOL={} is not HTTP/x.y, INCLUDED or protocol[/x.y]",
                show(v)
            ),
        );
    }
    if let Some(v) = env.value("REMOTE_ADDR") {
        let ok = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .is_some();
        if !ok {
            o.broken(
                "CGI-4.1.8-1",
                format!("REMOTE_ADDR={} is not an IPv4 or IPv6 address", show(v)),
            );
        }
    }
    if let Some(v) = env.value("SCRIPT_NAME") {
        if v.first() == Some(&b'/') {
            o.pass("CGI-4.1.13-1", format!("SCRIPT_NAME={}", show(v)));
        } else {
            o.broken(
                "CGI-4.1.13-1",
                format!("SCRIPT_NAME={} is neither empty nor a /path", show(v)),
            );
        }
    }
    let path_info = env.value("PATH_INFO");
    if let Some(v) = path_info
        && v.first() != Some(&b'/')
    {
        o.broken(
            "CGI-4.1.5-2",
            format!("PATH_INFO={} is neither empty nor a /path", show(v)),
        );
    }
    match (path_info, env.value("PATH_TRANSLATED")) {
        (None, Some(t)) => o.broken(
            "CGI-4.1.6-7",
            format!("PATH_TRANSLATED={} without a PATH_INFO", show(t)),
        ),
        (Some(p), None) => o.broken(
            "CGI-4.1.6-6",
            format!("PATH_INFO={} but no PATH_TRANSLATED", show(p)),
        ),
        (Some(p), Some(t)) if !t.ends_with(p) => o.info(
            "CGI-4.1.6-1",
            format!(
                "PATH_TRANSLATED={} does not end with PATH_INFO={}",
                show(t),
                show(p)
            ),
        ),
        (Some(p), Some(t))
            if env
                .value("DOCUMENT_ROOT")
                .is_some_and(|d| t != [d.strip_suffix(b"/").unwrap_or(d), p].concat()) =>
        {
            o.pass("CGI-4.1.6-6", format!("PATH_TRANSLATED={}", show(t)));
            o.info(
                "CGI-4.1.6-1",
                format!(
                    "PATH_TRANSLATED={} is not DOCUMENT_ROOT + PATH_INFO ({}{})",
                    show(t),
                    show(env.value("DOCUMENT_ROOT").unwrap_or_default()),
                    show(p)
                ),
            );
        }
        (None, None) => o.pass("CGI-4.1.6-7", "no PATH_INFO and no PATH_TRANSLATED"),
        (Some(_), Some(t)) => o.pass("CGI-4.1.6-6", format!("PATH_TRANSLATED={}", show(t))),
    }
    if via == Via::Cgi
        && let Some(v) = env.value("CONTENT_LENGTH")
        && !v.iter().all(u8::is_ascii_digit)
    {
        o.broken(
            "CGI-4.1.2-2",
            format!("CONTENT_LENGTH={} is not a decimal byte count", show(v)),
        );
    }
    match (env.value("CONTENT_TYPE"), env.value("HTTP_CONTENT_TYPE")) {
        (None, Some(h)) => o.broken(
            "CGI-4.1.3-4",
            format!(
                "the request had Content-Type: {} but CONTENT_TYPE is not set",
                show(h)
            ),
        ),
        (Some(t), _) if !t.contains(&b'/') => o.info(
            "CGI-4.1.3-1",
            format!("CONTENT_TYPE={} is not type/subtype", show(t)),
        ),
        (Some(t), _) => o.pass("CGI-4.1.3-4", format!("CONTENT_TYPE={}", show(t))),
        (None, None) => {}
    }
    if let Some(a) = env.value("AUTH_TYPE") {
        match env.value("REMOTE_USER") {
            Some(u) => o.pass(
                "CGI-4.1.11-2",
                format!("AUTH_TYPE={} with REMOTE_USER={}", show(a), show(u)),
            ),
            None => o.broken(
                "CGI-4.1.11-2",
                format!("AUTH_TYPE={} but no REMOTE_USER", show(a)),
            ),
        }
    }
    if env.value("REQUEST_METHOD") == Some(b"HEAD") {
        o.info(
            "CGI-4.3.3-2",
            "HEAD: this report is sent as a body on purpose; the web server must discard it \
             (check the HTTP response)",
        );
    }
}

/// SCRIPT_NAME + PATH_INFO and QUERY_STRING against REQUEST_URI (CGI-RW-1), when sent.
fn uri_consistency(env: &Env<'_>, o: &mut Sink) {
    let Some(uri) = env.value("REQUEST_URI") else {
        return;
    };
    let (raw_path, query) = match uri.iter().position(|&b| b == b'?') {
        Some(q) => (&uri[..q], Some(&uri[q + 1..])),
        None => (uri, None),
    };
    let rewritten = ["REDIRECT_URI", "REDIRECT_URL", "REDIRECT_QUERY_STRING"]
        .into_iter()
        .any(|n| env.value(n).is_some());
    if let Some(qs) = env.get("QUERY_STRING") {
        let want = query.unwrap_or_default();
        if qs == want {
            o.pass(
                "CGI-4.1.7-1",
                format!(
                    "QUERY_STRING={} is REQUEST_URI's query, byte for byte",
                    show(qs)
                ),
            );
        } else if qs == percent_decode(want).as_slice() {
            o.broken(
                "CGI-3.3-3",
                format!(
                    "QUERY_STRING={} is REQUEST_URI's query {} decoded: it must be passed \
                     without decoding (CGI-4.1.7-1)",
                    show(qs),
                    show(want)
                ),
            );
        } else {
            o.info(
                "CGI-4.1.7-1",
                format!(
                    "QUERY_STRING={} differs from REQUEST_URI's query {}{}",
                    show(qs),
                    show(want),
                    if rewritten {
                        " (after a rewrite)"
                    } else {
                        " (a rewrite?)"
                    }
                ),
            );
        }
    }
    let Some(script) = env.get("SCRIPT_NAME") else {
        return;
    };
    let info = env.get("PATH_INFO").unwrap_or_default();
    let joined = [script, info].concat();
    let decoded = percent_decode(raw_path);
    if decoded == joined {
        if info.is_empty() {
            o.pass(
                "CGI-4.1.13-4",
                format!("SCRIPT_NAME={} is REQUEST_URI's whole path", show(script)),
            );
        } else {
            o.pass(
                "CGI-4.1.5-2",
                format!(
                    "PATH_INFO={} is the decoded extra path of {}",
                    show(info),
                    show(raw_path)
                ),
            );
            o.pass(
                "CGI-4.1.13-4",
                format!("SCRIPT_NAME={} holds no part of PATH_INFO", show(script)),
            );
        }
    } else if raw_path == joined.as_slice() {
        o.broken(
            "CGI-4.1.5-2",
            format!(
                "PATH_INFO={} is not percent-decoded (REQUEST_URI {})",
                show(info),
                show(uri)
            ),
        );
    } else if !info.is_empty() && script.ends_with(info) {
        o.broken(
            "CGI-4.1.13-4",
            format!(
                "SCRIPT_NAME={} ends with PATH_INFO={}",
                show(script),
                show(info)
            ),
        );
    } else if decoded.starts_with(script)
        && decoded.len() > script.len()
        && info.is_empty()
        && !rewritten
    {
        o.info(
            "CGI-3.3-3",
            format!(
                "REQUEST_URI path {} goes on after SCRIPT_NAME={} but PATH_INFO is empty \
                 (the extra path was dropped?)",
                show(raw_path),
                show(script)
            ),
        );
    } else {
        o.info(
            "CGI-3.3-3",
            format!(
                "SCRIPT_NAME + PATH_INFO = {} is not REQUEST_URI's decoded path {}{}",
                show(&joined),
                show(&decoded),
                if rewritten {
                    " (after a rewrite)"
                } else {
                    " (a rewrite or alias?)"
                }
            ),
        );
    }
}

/// The HTTP_* variables (CGI-4.1.18-4, CGI-4.1.18-10, CGI-9.2-1, CGI-RW-6).
fn headers(env: &Env<'_>, via: Via, o: &mut Sink) {
    let http: Vec<&[u8]> = env
        .0
        .iter()
        .map(|(n, _)| n.as_slice())
        .filter(|n| n.starts_with(b"HTTP_"))
        .collect();
    let odd: Vec<String> = http
        .iter()
        .filter(|n| {
            !n.iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(|n| show(n))
        .collect();
    if odd.is_empty() {
        if !http.is_empty() {
            o.pass(
                "CGI-4.1.18-4",
                format!("{} HTTP_* variables, upper case with `_`", http.len()),
            );
        }
    } else {
        o.info(
            "CGI-4.1.18-4",
            format!(
                "HTTP_* names not in upper case with `_`: {}",
                odd.join(", ")
            ),
        );
    }
    let dup: Vec<&str> = ["HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"]
        .into_iter()
        .filter(|n| env.get(n).is_some())
        .collect();
    if dup.is_empty() {
        o.pass(
            "CGI-4.1.18-10",
            "no HTTP_CONTENT_LENGTH or HTTP_CONTENT_TYPE beside CONTENT_*",
        );
    } else {
        o.broken(
            "CGI-4.1.18-10",
            format!(
                "{} sent although CONTENT_LENGTH/CONTENT_TYPE carry them",
                dup.join(", ")
            ),
        );
    }
    let secret: Vec<&str> = ["HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"]
        .into_iter()
        .filter(|n| env.get(n).is_some())
        .collect();
    if !secret.is_empty() {
        o.broken(
            "CGI-9.2-1",
            format!(
                "{} passed to the script (fine only if explicitly configured, e.g. \
                 CGIPassAuth, CGI-RW-5)",
                secret.join(", ")
            ),
        );
    }
    let id = match via {
        Via::Cgi => "CGI-RW-6",
        Via::Scgi => "SCGI-RW-7",
    };
    match env.get("HTTP_PROXY") {
        Some(v) => o.broken(
            id,
            format!(
                "HTTP_PROXY={} sent: a client `Proxy:` header reaches the application as its \
                 outbound proxy setting (httpoxy, CGI-AMB-8)",
                show(v)
            ),
        ),
        None => o.pass(
            id,
            "no HTTP_PROXY (a client `Proxy:` header, if any, was not exported)",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Running as a CGI program

/// What standard input delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stdin {
    /// Bytes read.
    pub(crate) got: u64,
    /// How it stood when reading stopped.
    pub(crate) end: StdinEnd,
}

/// How standard input stood when the probe stopped reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinEnd {
    /// End of file.
    Eof,
    /// Still open, nothing more within the wait.
    Open,
    /// File descriptor 0 is not open (or not readable).
    Closed,
    /// Stopped at [`MAX_BODY`].
    Capped,
}

/// Judges standard input against CONTENT_LENGTH (CGI-4.1.2-2, CGI-4.2-3, CGI-4.2-4,
/// CGI-AMB-4). `waited` is the time limit that applied.
pub(crate) fn body_findings(env: &Env<'_>, stdin: &Stdin, waited: Duration, o: &mut Sink) {
    let got = stdin.got;
    let cl = env.value("CONTENT_LENGTH").and_then(|v| {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
    });
    let how = match stdin.end {
        StdinEnd::Eof => "then end of file".to_owned(),
        StdinEnd::Open => format!("then nothing for {:.1} s", waited.as_secs_f64()),
        StdinEnd::Closed => "fd 0 is not open".to_owned(),
        StdinEnd::Capped => format!("stopped reading at {MAX_BODY} bytes"),
    };
    match cl {
        Some(0) => {
            o.info(
                "CGI-AMB-4",
                format!(
                    "CONTENT_LENGTH=0 with {}: a zero-length body from the client, or one \
                     made up for a request without a body (CGI-4.1.2-2: set only with a body)",
                    show(env.value("REQUEST_METHOD").unwrap_or(b"no REQUEST_METHOD"))
                ),
            );
            if got > 0 {
                o.info(
                    "CGI-4.2-4",
                    format!("{got} bytes on stdin beyond CONTENT_LENGTH=0 ({how})"),
                );
            } else {
                o.pass("CGI-4.2-3", format!("no bytes on stdin ({how})"));
            }
        }
        Some(n) if got < n => o.broken(
            "CGI-4.2-3",
            format!("CONTENT_LENGTH={n} but only {got} bytes readable on stdin, {how}"),
        ),
        Some(n) if got > n => {
            o.pass(
                "CGI-4.2-3",
                format!("at least CONTENT_LENGTH={n} bytes on stdin"),
            );
            o.info(
                "CGI-4.2-4",
                format!(
                    "{} bytes on stdin beyond CONTENT_LENGTH={n}: extension data, or a \
                     CONTENT_LENGTH smaller than the body ({how})",
                    got - n
                ),
            );
        }
        Some(n) => {
            o.pass(
                "CGI-4.2-3",
                format!("exactly CONTENT_LENGTH={n} bytes on stdin, {how}"),
            );
            o.pass(
                "CGI-4.1.2-2",
                format!("CONTENT_LENGTH={n} with a body of {n} bytes"),
            );
        }
        None if got > 0 => o.broken(
            "CGI-4.1.2-2",
            format!(
                "{got} body bytes on stdin but no CONTENT_LENGTH (a streamed body, CGI-RW-7), {how}"
            ),
        ),
        None => o.pass(
            "CGI-4.1.2-2",
            format!("no CONTENT_LENGTH and no body on stdin ({how})"),
        ),
    }
}

/// Reads standard input (a duplicate of fd 0, unbuffered): up to CONTENT_LENGTH bytes
/// within `limit`, then watches [`GRACE`] for more or for the end of file.
fn read_stdin(expect: Option<u64>, limit: Duration) -> Stdin {
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return Stdin {
            got: 0,
            end: StdinEnd::Closed,
        };
    };
    let mut file = std::fs::File::from(fd);
    let (tx, rx) = mpsc::channel::<Option<usize>>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(n)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    let start = Instant::now();
    let mut got = 0u64;
    // Without CONTENT_LENGTH there should be no body: wait a little for one anyway.
    let mut until = start + expect.map_or(GRACE.min(limit), |_| limit);
    let mut in_grace = expect.is_none();
    loop {
        if got >= MAX_BODY {
            return Stdin {
                got,
                end: StdinEnd::Capped,
            };
        }
        if !in_grace && expect.is_some_and(|n| got >= n) {
            in_grace = true;
            until = Instant::now() + GRACE;
        }
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(n)) => got += n as u64,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Stdin {
                    got,
                    end: StdinEnd::Eof,
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Stdin {
                    got,
                    end: StdinEnd::Open,
                };
            }
        }
    }
}

/// What an open file descriptor is (`pipe:[…]`, `socket:[…]`, a path), if open.
fn fd_target(fd: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.display().to_string())
}

/// fds 0/1/2 open (CGI-4.2-1) and no other descriptors inherited (CGI-9.5-1, CGI-T-23).
fn fd_findings(o: &mut Sink) {
    let std: Vec<String> = (0..3)
        .map(|fd| format!("{fd}={}", fd_target(fd).unwrap_or_else(|| "closed".into())))
        .collect();
    if (0..3).all(|fd| fd_target(fd).is_some()) {
        o.pass(
            "CGI-4.2-1",
            format!("fds 0, 1, 2 open ({})", std.join(", ")),
        );
    } else {
        o.info(
            "CGI-4.2-1",
            format!("standard descriptors: {}", std.join(", ")),
        );
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let mut extra = Vec::new();
    let mut sockets = false;
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if fd < 3 {
            continue;
        }
        let Some(t) = fd_target(fd) else { continue };
        // The directory being listed.
        if t.starts_with("/proc/") && t.ends_with("/fd") {
            continue;
        }
        sockets |= t.starts_with("socket:");
        extra.push(format!("{fd}={t}"));
    }
    if extra.is_empty() {
        o.pass("CGI-9.5-1", "no descriptors inherited beyond 0, 1, 2");
    } else if sockets {
        o.broken(
            "CGI-9.5-1",
            format!(
                "descriptors inherited beyond 0, 1, 2, sockets among them: {}",
                extra.join(", ")
            ),
        );
    } else {
        o.info(
            "CGI-9.5-1",
            format!("descriptors inherited beyond 0, 1, 2: {}", extra.join(", ")),
        );
    }
}

/// The working directory is the script's (CGI-7.2-3): SCRIPT_FILENAME's directory when
/// the web server says which file it ran, else this program's.
fn cwd_findings(env: &Env<'_>, o: &mut Sink) {
    let cwd = std::env::current_dir().ok();
    let from_env = env
        .value("SCRIPT_FILENAME")
        .map(|v| PathBuf::from(OsString::from_vec(v.to_vec())));
    let script = from_env.clone().or_else(|| std::env::current_exe().ok());
    let dir = script
        .as_deref()
        .and_then(Path::parent)
        .and_then(|d| d.canonicalize().ok());
    let cwd_c = cwd.as_deref().and_then(|c| c.canonicalize().ok());
    match (cwd_c, dir) {
        (Some(c), Some(d)) if c == d => o.pass(
            "CGI-7.2-3",
            format!("working directory {} is the script's", c.display()),
        ),
        (Some(c), Some(d)) if from_env.is_some() => o.broken(
            "CGI-7.2-3",
            format!(
                "working directory {}, but SCRIPT_FILENAME is in {}",
                c.display(),
                d.display()
            ),
        ),
        (Some(c), Some(d)) => o.info(
            "CGI-7.2-3",
            format!(
                "working directory {}; no SCRIPT_FILENAME, and this program is in {}",
                c.display(),
                d.display()
            ),
        ),
        (c, _) => o.info(
            "CGI-7.2-3",
            format!(
                "working directory {} (the script's directory is unknown)",
                c.map_or_else(|| "unknown".into(), |c| c.display().to_string())
            ),
        ),
    }
}

/// Whether `PORTICO_PROBE=serve-cgi` asks a portico started by a web server to run
/// [`run_as_cgi`] instead of anything else.
pub fn requested() -> bool {
    std::env::var_os(ENV_SWITCH).is_some_and(|v| v == ENV_VALUE)
}

/// The whole check, on this process's environment, stdin, cwd and descriptors; `words`
/// are the command-line words the web server gave (CGI-4.4-1).
fn probe(limit: Duration, words: &[String]) -> Report {
    let start = Instant::now();
    let mut o = Sink::new("cgi-request");
    // Before this process opens anything of its own.
    fd_findings(&mut o);
    let vars: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect();
    let env = Env(&vars);
    if !words.is_empty() {
        o.info(
            "CGI-4.4-1",
            format!("command-line words: {}", words.join(" ")),
        );
    }
    meta_findings(&env, Via::Cgi, &mut o);
    let expect = env.value("CONTENT_LENGTH").and_then(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    });
    let stdin = read_stdin(expect, limit);
    let waited = if expect.is_some() && stdin.got < expect.unwrap_or(0) {
        limit
    } else {
        GRACE.min(limit)
    };
    body_findings(&env, &stdin, waited, &mut o);
    cwd_findings(&env, &mut o);
    let software = env
        .value("SERVER_SOFTWARE")
        .map_or_else(|| "an unnamed web server".to_owned(), show);
    Report {
        target: format!("--serve cgi ({software})"),
        findings: o.into_findings(),
        elapsed: start.elapsed(),
    }
}

/// Answers with the report as a CGI document on stdout; the exit status is 0 so that
/// the web server relays it.
fn answer(report: &Report, format: Format) -> ExitCode {
    let ctype = match format {
        Format::Text => "text/plain; charset=utf-8",
        Format::Json => "application/json",
        Format::Junit => "application/xml",
    };
    let mut out = format!("Status: 200 OK\r\nContent-Type: {ctype}\r\n\r\n").into_bytes();
    out.extend_from_slice(report.render(format).as_bytes());
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(&out);
    let _ = lock.flush();
    ExitCode::SUCCESS
}

/// `portico probe --serve cgi`: checks the CGI request this process was started with.
pub fn run(args: &ProbeArgs) -> ExitCode {
    let report = probe(args.check_timeout, &[]);
    answer(&report, args.format)
}

/// portico started by a web server with `PORTICO_PROBE=serve-cgi` (see [`requested`]):
/// as [`run`], with the time limit from `PORTICO_PROBE_TIMEOUT` (default 2 s).
pub fn run_as_cgi() -> ExitCode {
    let limit = std::env::var(ENV_TIMEOUT)
        .ok()
        .and_then(|s| crate::config::parse_duration(&s).ok())
        .unwrap_or(Duration::from_secs(2));
    let words: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let report = probe(limit, &words);
    answer(&report, Format::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::report::Verdict;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn flagged(f: &[Finding]) -> Vec<String> {
        f.iter()
            .filter(|f| matches!(f.verdict, Verdict::Fail | Verdict::Warn))
            .map(|f| f.clause.clone())
            .collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", "a=1%202&b=%26"),
        ("REQUEST_URI", "/cgi-bin/env.cgi/a%20b/C?a=1%202&b=%26"),
        ("SCRIPT_NAME", "/cgi-bin/env.cgi"),
        ("PATH_INFO", "/a b/C"),
        ("PATH_TRANSLATED", "/srv/htdocs/a b/C"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "test/1"),
        ("REMOTE_ADDR", "::1"),
        ("REMOTE_HOST", "localhost"),
        ("HTTP_HOST", "localhost"),
    ];

    #[test]
    fn cgi_t_4_good_environment_passes() {
        let v = vars(GOOD);
        let mut o = Sink::new("t");
        meta_findings(&Env(&v), Via::Cgi, &mut o);
        let f = o.into_findings();
        assert!(flagged(&f).is_empty(), "{f:#?}");
        assert!(
            f.iter()
                .any(|f| f.clause == "CGI-4.1.5-2" && f.verdict == Verdict::Pass)
        );
    }

    #[test]
    fn cgi_4_1_5_2_undecoded_path_info_and_decoded_query() {
        let mut v = vars(GOOD);
        for (n, val) in &mut v {
            if n == b"PATH_INFO" {
                *val = b"/a%20b/C".to_vec();
            }
            if n == b"QUERY_STRING" {
                *val = b"a=1 2&b=&".to_vec();
            }
        }
        let mut o = Sink::new("t");
        meta_findings(&Env(&v), Via::Cgi, &mut o);
        let f = flagged(&o.into_findings());
        assert_eq!(f, ["CGI-3.3-3", "CGI-4.1.5-2"]);
    }

    #[test]
    fn cgi_4_2_3_short_body_fails() {
        let v = vars(&[("CONTENT_LENGTH", "10")]);
        let mut o = Sink::new("t");
        let stdin = Stdin {
            got: 4,
            end: StdinEnd::Eof,
        };
        body_findings(&Env(&v), &stdin, GRACE, &mut o);
        assert_eq!(flagged(&o.into_findings()), ["CGI-4.2-3"]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b%2fc%zz%4"), b"/a b/c%zz%4");
        assert_eq!(gateway_version(b"CGI/1.01"), Some(true));
        assert_eq!(gateway_version(b"CGI/1.1"), Some(false));
        assert!(protocol_syntax(b"HTTP/1.1") && protocol_syntax(b"INCLUDED"));
        assert!(!protocol_syntax(b"HTTP/1"));
    }
}
