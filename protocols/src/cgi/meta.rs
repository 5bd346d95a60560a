//! CGI meta-variables (RFC 3875 §4): names, the request header → `HTTP_*` mapping, the
//! full variable set for a request, the `SCRIPT_NAME` / `PATH_INFO` split,
//! `PATH_TRANSLATED`, the §4.4 command line and NPH identification.
//!
//! ```
//! use portico_protocols::cgi::meta::{self, HeaderOptions, RequestInfo};
//!
//! let headers = [("Accept", &b"text/html"[..]), ("Proxy", &b"http://evil"[..])];
//! let info = RequestInfo {
//!     method: "GET",
//!     request_uri: b"/cgi-bin/env.cgi/a%20b?x=1",
//!     query_string: b"x=1",
//!     script_name: b"/cgi-bin/env.cgi",
//!     path_info: Some(b"/a b"),
//!     server_name: "example.org",
//!     server_port: 8080,
//!     remote_addr: "192.0.2.7",
//!     headers: &headers,
//!     ..RequestInfo::default()
//! };
//! let vars = meta::meta_variables(&info, &HeaderOptions::default())?;
//! let get = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_slice());
//! assert_eq!(get(meta::GATEWAY_INTERFACE), Some(&b"CGI/1.1"[..]));
//! assert_eq!(get(meta::PATH_INFO), Some(&b"/a b"[..]));
//! assert_eq!(get("HTTP_ACCEPT"), Some(&b"text/html"[..]));
//! assert_eq!(get("HTTP_PROXY"), None); // CGI-RW-6, httpoxy
//! # Ok::<(), meta::Error>(())
//! ```

use core::fmt;

use super::percent_decode;

// ---------------------------------------------------------------------------------------
// Names

/// `AUTH_TYPE` (CGI-4.1.1): the authentication scheme, e.g. `Basic`.
pub const AUTH_TYPE: &str = "AUTH_TYPE";
/// `CONTENT_LENGTH` (CGI-4.1.2): body length in decimal, set iff there is a body.
pub const CONTENT_LENGTH: &str = "CONTENT_LENGTH";
/// `CONTENT_TYPE` (CGI-4.1.3): the body's media type.
pub const CONTENT_TYPE: &str = "CONTENT_TYPE";
/// `GATEWAY_INTERFACE` (CGI-4.1.4): always [`CGI_VERSION`].
pub const GATEWAY_INTERFACE: &str = "GATEWAY_INTERFACE";
/// `PATH_INFO` (CGI-4.1.5): decoded extra path after the script name.
pub const PATH_INFO: &str = "PATH_INFO";
/// `PATH_TRANSLATED` (CGI-4.1.6): `PATH_INFO` mapped into the document tree.
pub const PATH_TRANSLATED: &str = "PATH_TRANSLATED";
/// `QUERY_STRING` (CGI-4.1.7): the raw, still-encoded query, `""` when none.
pub const QUERY_STRING: &str = "QUERY_STRING";
/// `REMOTE_ADDR` (CGI-4.1.8): the client's IP address.
pub const REMOTE_ADDR: &str = "REMOTE_ADDR";
/// `REMOTE_HOST` (CGI-4.1.9): the client's host name; portico puts the address here.
pub const REMOTE_HOST: &str = "REMOTE_HOST";
/// `REMOTE_IDENT` (CGI-4.1.10): RFC 1413 identity; portico never sets it.
pub const REMOTE_IDENT: &str = "REMOTE_IDENT";
/// `REMOTE_USER` (CGI-4.1.11): the authenticated user-ID.
pub const REMOTE_USER: &str = "REMOTE_USER";
/// `REQUEST_METHOD` (CGI-4.1.12): the method, case-sensitive.
pub const REQUEST_METHOD: &str = "REQUEST_METHOD";
/// `SCRIPT_NAME` (CGI-4.1.13): decoded URI path of the script, always set.
pub const SCRIPT_NAME: &str = "SCRIPT_NAME";
/// `SERVER_NAME` (CGI-4.1.14): host name or address the request was sent to.
pub const SERVER_NAME: &str = "SERVER_NAME";
/// `SERVER_PORT` (CGI-4.1.15): the port the request arrived on.
pub const SERVER_PORT: &str = "SERVER_PORT";
/// `SERVER_PROTOCOL` (CGI-4.1.16): e.g. `HTTP/1.1`.
pub const SERVER_PROTOCOL: &str = "SERVER_PROTOCOL";
/// `SERVER_SOFTWARE` (CGI-4.1.17): product/version of the server.
pub const SERVER_SOFTWARE: &str = "SERVER_SOFTWARE";

/// `DOCUMENT_ROOT` (CGI-RW-1): the document root of the request.
pub const DOCUMENT_ROOT: &str = "DOCUMENT_ROOT";
/// `SCRIPT_FILENAME` (CGI-RW-1): absolute file-system path of the script.
pub const SCRIPT_FILENAME: &str = "SCRIPT_FILENAME";
/// `REQUEST_URI` (CGI-RW-1): the original request target, still encoded.
pub const REQUEST_URI: &str = "REQUEST_URI";
/// `REMOTE_PORT` (CGI-RW-1): the client's TCP port.
pub const REMOTE_PORT: &str = "REMOTE_PORT";
/// `SERVER_ADDR` (CGI-RW-1): the local address the request arrived on.
pub const SERVER_ADDR: &str = "SERVER_ADDR";
/// `HTTPS` (CGI-RW-1, CGI-4.1.18-3): `on` for requests over TLS.
pub const HTTPS: &str = "HTTPS";
/// `REQUEST_SCHEME` (CGI-RW-1): `http` or `https`.
pub const REQUEST_SCHEME: &str = "REQUEST_SCHEME";
/// `REDIRECT_STATUS` (CGI-RW-2, CGI-RW-3): the original status on an internal
/// redirect; php-cgi refuses to run without it.
pub const REDIRECT_STATUS: &str = "REDIRECT_STATUS";
/// `REDIRECT_URL` (CGI-RW-2): the original path on an internal redirect.
pub const REDIRECT_URL: &str = "REDIRECT_URL";
/// `REDIRECT_QUERY_STRING` (CGI-RW-2): the original query on an internal redirect.
pub const REDIRECT_QUERY_STRING: &str = "REDIRECT_QUERY_STRING";
/// `DOCUMENT_URI` (CGI-RW-1, nginx): the request path.
pub const DOCUMENT_URI: &str = "DOCUMENT_URI";

/// The value of `GATEWAY_INTERFACE` (CGI-4.1.4-1), without leading zeros (CGI-4.1.4-3).
pub const CGI_VERSION: &str = "CGI/1.1";

/// The prefix of protocol-specific variables made from request headers (CGI-4.1.18-4).
pub const HTTP_PREFIX: &str = "HTTP_";

/// Most command-line words [`search_args`] makes; beyond it there are none at all
/// (CGI-4.4-4). Value: 1024.
pub const MAX_SEARCH_ARGS: usize = 1024;

// ---------------------------------------------------------------------------------------
// Header mapping

/// How request header names that are not plain `[A-Za-z0-9-]` are treated (CGI-AMB-7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderNamePolicy {
    /// Drop any header whose name has a character other than an ASCII letter, digit or
    /// `-`, as Apache 2.4 does (CGI-RW-4). The default: a client cannot forge a
    /// variable with `X_Foo` next to `X-Foo`.
    #[default]
    Strict,
    /// Map other characters to `_`, and refuse the request with
    /// [`Error::HeaderNameCollision`] when two different header names map to the same
    /// variable, as lighttpd does (CGI-RW-4).
    MapAndRejectCollisions,
}

/// Options for turning request headers into `HTTP_*` variables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderOptions {
    /// Name policy; default [`HeaderNamePolicy::Strict`].
    pub policy: HeaderNamePolicy,
    /// Pass `Authorization` and `Proxy-Authorization` as `HTTP_AUTHORIZATION` and
    /// `HTTP_PROXY_AUTHORIZATION`. Default `false` (CGI-9.2-1, CGI-4.1.18-10; Apache's
    /// `CGIPassAuth`, CGI-RW-5).
    pub pass_authorization: bool,
}

/// The `HTTP_*` variable name for a request header, or `None` when the header is not
/// passed as a variable.
///
/// `X-Forwarded-For` → `HTTP_X_FORWARDED_FOR` (CGI-4.1.18-4). `None` for:
/// - `Proxy`, never `HTTP_PROXY` (CGI-RW-6, httpoxy);
/// - `Content-Type` and `Content-Length`, which have their own variables
///   (CGI-4.1.18-10);
/// - `Authorization` and `Proxy-Authorization` (CGI-9.2-1; [`header_variables`] passes
///   them when [`HeaderOptions::pass_authorization`] is set);
/// - `Redirect-Status`, so no client can offer php-cgi an `HTTP_REDIRECT_STATUS`
///   (CGI-RW-3, CVE-2024-8927);
/// - names the policy drops, and empty names.
///
/// The comparison is made on the mapped name, so under
/// [`HeaderNamePolicy::MapAndRejectCollisions`] `Content_Type` is dropped too.
///
/// ```
/// use portico_protocols::cgi::meta::{http_variable_name, HeaderNamePolicy::*};
/// assert_eq!(http_variable_name("X-Forwarded-For", Strict).as_deref(), Some("HTTP_X_FORWARDED_FOR"));
/// assert_eq!(http_variable_name("Proxy", Strict), None);
/// assert_eq!(http_variable_name("X_Foo", Strict), None);
/// assert_eq!(http_variable_name("X_Foo", MapAndRejectCollisions).as_deref(), Some("HTTP_X_FOO"));
/// ```
pub fn http_variable_name(header_name: &str, policy: HeaderNamePolicy) -> Option<String> {
    let name = mapped_name(header_name, policy)?;
    if NEVER_PASSED.contains(&name.as_str()) || AUTH_HEADERS.contains(&name.as_str()) {
        return None;
    }
    Some(name)
}

/// Variables a client header must never produce.
const NEVER_PASSED: [&str; 4] = [
    // CGI-RW-6, CGI-AMB-8: httpoxy.
    "HTTP_PROXY",
    // CGI-4.1.18-10: available as CONTENT_TYPE / CONTENT_LENGTH.
    "HTTP_CONTENT_TYPE",
    "HTTP_CONTENT_LENGTH",
    // CGI-RW-3: php-cgi before 8.1.30 read HTTP_REDIRECT_STATUS as REDIRECT_STATUS.
    "HTTP_REDIRECT_STATUS",
];

/// Variables of authentication headers, passed only on request (CGI-9.2-1).
const AUTH_HEADERS: [&str; 2] = ["HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"];

/// `HTTP_` + the name upper-cased with `-` → `_` (CGI-4.1.18-4), under `policy`.
fn mapped_name(header_name: &str, policy: HeaderNamePolicy) -> Option<String> {
    if header_name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(HTTP_PREFIX.len() + header_name.len());
    out.push_str(HTTP_PREFIX);
    for c in header_name.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => out.push(c.to_ascii_uppercase()),
            '-' => out.push('_'),
            // CGI-AMB-7, CGI-RW-4 (Apache): drop the header.
            _ if policy == HeaderNamePolicy::Strict => return None,
            // CGI-RW-4 (lighttpd): map to `_`; collisions are refused by the caller.
            _ => out.push('_'),
        }
    }
    Some(out)
}

/// The `HTTP_*` variables for a request's header fields, in first-seen order.
///
/// Fields with the same name (case-insensitively) become one variable, their values
/// joined with `, ` (CGI-4.1.18-6); `Cookie` fields are joined with `; `, the only
/// separator a cookie header allows (RFC 6265 §5.4, RFC 9113 §8.2.3). A value folded
/// over several lines (CR LF or LF followed by a space or tab) is merged onto one line
/// with a single space (CGI-4.1.18-7); any other CR, LF or NUL makes the whole request
/// refused with [`Error::InvalidHeaderValue`] (CGI-7.2-4).
///
/// Under [`HeaderNamePolicy::MapAndRejectCollisions`], two different header names
/// that map to the same variable give [`Error::HeaderNameCollision`].
///
/// ```
/// use portico_protocols::cgi::meta::{header_variables, HeaderOptions};
/// let headers = [("Accept", &b"text/html"[..]), ("accept", &b"*/*"[..])];
/// let vars = header_variables(headers, &HeaderOptions::default())?;
/// assert_eq!(vars, vec![("HTTP_ACCEPT".to_string(), b"text/html, */*".to_vec())]);
/// # Ok::<(), portico_protocols::cgi::meta::Error>(())
/// ```
pub fn header_variables<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    opts: &HeaderOptions,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    // (variable, first header name seen for it, value)
    let mut vars: Vec<(String, &'a str, Vec<u8>)> = Vec::new();
    for (name, value) in headers {
        let var = match http_variable_name(name, opts.policy) {
            Some(var) => var,
            None if opts.pass_authorization => match mapped_name(name, opts.policy) {
                // CGI-9.2-1: passed only when explicitly configured (CGI-RW-5).
                Some(var) if AUTH_HEADERS.contains(&var.as_str()) => var,
                _ => continue,
            },
            None => continue,
        };
        let value = unfold(value)?;
        match vars.iter_mut().find(|(v, _, _)| *v == var) {
            Some((_, first, joined)) => {
                if !first.eq_ignore_ascii_case(name) {
                    // CGI-AMB-7, CGI-RW-4: `X-Foo` and `X_Foo` must not merge or
                    // overwrite each other. Only reachable under MapAndRejectCollisions.
                    return Err(Error::HeaderNameCollision);
                }
                // CGI-4.1.18-6: one value with the same meaning.
                let sep: &[u8] = if var == "HTTP_COOKIE" { b"; " } else { b", " };
                joined.extend_from_slice(sep);
                joined.extend_from_slice(&value);
            }
            None => vars.push((var, name, value)),
        }
    }
    Ok(vars
        .into_iter()
        .map(|(var, _, value)| (var, value))
        .collect())
}

/// CGI-4.1.18-7: merge a folded value onto one line; refuse other CR, LF and NUL.
fn unfold(value: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        match b {
            b'\r' | b'\n' => {
                let nl = if b == b'\r' && value.get(i + 1) == Some(&b'\n') {
                    2
                } else if b == b'\n' {
                    1
                } else {
                    // A bare CR.
                    return Err(Error::InvalidHeaderValue);
                };
                let ws = value
                    .get(i + nl..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t'))
                    .count();
                if ws == 0 {
                    // Not a fold: a line break inside a value (CGI-7.2-4).
                    return Err(Error::InvalidHeaderValue);
                }
                while out.last().is_some_and(|b| matches!(b, b' ' | b'\t')) {
                    out.pop();
                }
                out.push(b' ');
                i += nl + ws;
            }
            // CGI-7.2-4: no NUL in an environment value.
            0 => return Err(Error::InvalidHeaderValue),
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The full variable set

/// What the server knows about one request, for [`meta_variables`].
///
/// Fill what you have and take the rest from [`RequestInfo::default`] (method `GET`,
/// protocol `HTTP/1.1`, software `portico`, everything else empty, zero, `false` or
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// The request method, case kept (CGI-4.1.12).
    pub method: &'a str,
    /// The raw request target, path and query, still encoded (`REQUEST_URI`).
    pub request_uri: &'a [u8],
    /// The raw query, without `?`, not decoded (CGI-4.1.7-1).
    pub query_string: &'a [u8],
    /// The decoded script path, `""` or starting with `/` (CGI-4.1.13).
    pub script_name: &'a [u8],
    /// The decoded extra path, `""` or starting with `/` (CGI-4.1.5). `None` or empty
    /// leaves `PATH_INFO` unset.
    pub path_info: Option<&'a [u8]>,
    /// `PATH_TRANSLATED`, used only when `path_info` is non-empty (CGI-4.1.6-7). When
    /// `None`, it is computed from `document_root` with [`path_translated`].
    pub path_translated: Option<&'a [u8]>,
    /// `SERVER_NAME` (CGI-4.1.14, CGI-AMB-11).
    pub server_name: &'a str,
    /// `SERVER_PORT`, the port the request arrived on (CGI-4.1.15).
    pub server_port: u16,
    /// `SERVER_ADDR`, the local address (CGI-RW-1).
    pub server_addr: Option<&'a str>,
    /// `SERVER_PROTOCOL` (CGI-4.1.16, CGI-AMB-12).
    pub server_protocol: &'a str,
    /// `SERVER_SOFTWARE` (CGI-4.1.17).
    pub server_software: &'a str,
    /// `REMOTE_ADDR` (CGI-4.1.8); also used as `REMOTE_HOST` (CGI-AMB-14).
    pub remote_addr: &'a str,
    /// `REMOTE_PORT` (CGI-RW-1).
    pub remote_port: Option<u16>,
    /// `REMOTE_USER`, when the server authenticated the request (CGI-4.1.11-2).
    pub remote_user: Option<&'a [u8]>,
    /// `AUTH_TYPE`. When `None`, the scheme of an `Authorization` header is used
    /// (CGI-4.1.1-2).
    pub auth_type: Option<&'a [u8]>,
    /// The request came over TLS: `HTTPS=on`, `REQUEST_SCHEME=https` (CGI-4.1.18-3).
    pub https: bool,
    /// The body length after removing transfer-codings (CGI-4.1.2-3); `Some(0)` for an
    /// empty body that was framed, `None` for no body (CGI-AMB-4).
    pub content_length: Option<u64>,
    /// The body's media type. When `None`, the `Content-Type` header is used
    /// (CGI-4.1.3-4).
    pub content_type: Option<&'a [u8]>,
    /// `DOCUMENT_ROOT` (CGI-RW-1).
    pub document_root: Option<&'a [u8]>,
    /// `SCRIPT_FILENAME` (CGI-RW-1).
    pub script_filename: Option<&'a [u8]>,
    /// `REDIRECT_STATUS` (CGI-RW-2, CGI-RW-3); `Some(200)` for php-cgi.
    pub redirect_status: Option<u16>,
    /// `REDIRECT_URL`, the original path on an internal redirect (CGI-AMB-5, CGI-RW-2).
    pub redirect_url: Option<&'a [u8]>,
    /// `REDIRECT_QUERY_STRING`, the original query on an internal redirect (CGI-RW-2).
    pub redirect_query_string: Option<&'a [u8]>,
    /// The request header fields, in order, for `HTTP_*` (CGI-4.1.18-4).
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl Default for RequestInfo<'_> {
    fn default() -> Self {
        RequestInfo {
            method: "GET",
            request_uri: b"",
            query_string: b"",
            script_name: b"",
            path_info: None,
            path_translated: None,
            server_name: "",
            server_port: 0,
            server_addr: None,
            server_protocol: "HTTP/1.1",
            server_software: "portico",
            remote_addr: "",
            remote_port: None,
            remote_user: None,
            auth_type: None,
            https: false,
            content_length: None,
            content_type: None,
            document_root: None,
            script_filename: None,
            redirect_status: None,
            redirect_url: None,
            redirect_query_string: None,
            headers: &[],
        }
    }
}

/// Every meta-variable for a request: the RFC 3875 set, the de facto extras
/// (CGI-RW-1), then the `HTTP_*` variables from [`header_variables`].
///
/// Order: `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`, `SERVER_NAME`, `SERVER_PORT`,
/// `SERVER_ADDR`?, `SERVER_PROTOCOL`, `REQUEST_METHOD`, `REQUEST_URI`?,
/// `REQUEST_SCHEME`, `HTTPS`?, `QUERY_STRING`, `SCRIPT_NAME`, `PATH_INFO`?,
/// `PATH_TRANSLATED`?, `SCRIPT_FILENAME`?, `DOCUMENT_ROOT`?, `REMOTE_ADDR`,
/// `REMOTE_HOST`, `REMOTE_PORT`?, `AUTH_TYPE`?, `REMOTE_USER`?, `CONTENT_LENGTH`?,
/// `CONTENT_TYPE`?, `REDIRECT_STATUS`?, `REDIRECT_URL`?, `REDIRECT_QUERY_STRING`?,
/// `HTTP_*` (`?` = only when there is a value). Variables the RFC requires are always
/// present, even when empty (CGI-4.1.7-3, CGI-4.1.13-2). `REMOTE_HOST` is the client
/// address: portico does no reverse lookups (CGI-AMB-14, CGI-4.1.9-3). `REMOTE_IDENT`
/// is never set (CGI-4.1.10-1).
///
/// No client header can produce one of these names (all of them lack the `HTTP_`
/// prefix), nor `HTTP_PROXY` or `HTTP_REDIRECT_STATUS` (CGI-RW-3, CGI-RW-6).
///
/// Fails with [`Error::NulInValue`] when a value holds a NUL byte, which no
/// environment can carry (CGI-7.2-4), and with the errors of [`header_variables`].
pub fn meta_variables(
    info: &RequestInfo<'_>,
    opts: &HeaderOptions,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut vars: Vec<(String, Vec<u8>)> = Vec::with_capacity(32 + info.headers.len());
    let mut set = |name: &str, value: &[u8]| vars.push((name.to_string(), value.to_vec()));

    // CGI-4.1.4-1, CGI-4.1.4-3
    set(GATEWAY_INTERFACE, CGI_VERSION.as_bytes());
    // CGI-4.1.17-1
    set(SERVER_SOFTWARE, info.server_software.as_bytes());
    // CGI-4.1.14-1
    set(SERVER_NAME, info.server_name.as_bytes());
    // CGI-4.1.15-1, CGI-4.1.15-2: always, even for the scheme's default port.
    set(SERVER_PORT, info.server_port.to_string().as_bytes());
    if let Some(addr) = info.server_addr {
        set(SERVER_ADDR, addr.as_bytes());
    }
    // CGI-4.1.16-1
    set(SERVER_PROTOCOL, info.server_protocol.as_bytes());
    // CGI-4.1.12-1
    set(REQUEST_METHOD, info.method.as_bytes());
    if !info.request_uri.is_empty() {
        set(REQUEST_URI, info.request_uri);
    }
    // CGI-RW-1, CGI-4.1.18-3: the scheme, and HTTPS=on only over TLS.
    set(REQUEST_SCHEME, if info.https { b"https" } else { b"http" });
    if info.https {
        set(HTTPS, b"on");
    }
    // CGI-4.1.7-3: always set, "" when there is no query; never decoded (CGI-4.1.7-1).
    set(QUERY_STRING, info.query_string);
    // CGI-4.1.13-2: always set, even when empty.
    set(SCRIPT_NAME, info.script_name);
    let path_info = info.path_info.filter(|p| !p.is_empty());
    if let Some(path_info) = path_info {
        // CGI-4.1.5-2
        set(PATH_INFO, path_info);
        // CGI-4.1.6-6; CGI-4.1.6-7: never without PATH_INFO.
        let translated = match (info.path_translated, info.document_root) {
            (Some(t), _) => Some(t.to_vec()),
            (None, Some(root)) => path_translated(root, path_info),
            (None, None) => None,
        };
        if let Some(t) = translated {
            set(PATH_TRANSLATED, &t);
        }
    }
    if let Some(f) = info.script_filename {
        set(SCRIPT_FILENAME, f);
    }
    if let Some(root) = info.document_root {
        set(DOCUMENT_ROOT, root);
    }
    // CGI-4.1.8-1
    set(REMOTE_ADDR, info.remote_addr.as_bytes());
    // CGI-4.1.9-2, CGI-4.1.9-3, CGI-AMB-14: the address stands in for the host name.
    set(REMOTE_HOST, info.remote_addr.as_bytes());
    if let Some(port) = info.remote_port {
        set(REMOTE_PORT, port.to_string().as_bytes());
    }
    // CGI-4.1.1-2: the auth-scheme token of the Authorization header.
    let auth_type = info.auth_type.or_else(|| {
        header(info.headers, "Authorization").and_then(|v| {
            let v = v.trim_ascii_start();
            let scheme = v.split(|&b| b == b' ' || b == b'\t').next()?;
            (!scheme.is_empty() && scheme.iter().all(|&b| super::is_token_char(b)))
                .then_some(scheme)
        })
    });
    if let Some(a) = auth_type {
        set(AUTH_TYPE, a);
    }
    // CGI-4.1.11-2
    if let Some(user) = info.remote_user {
        set(REMOTE_USER, user);
    }
    // CGI-4.1.2-2, CGI-AMB-4: iff the request has a body (Some(0) for a framed empty one).
    if let Some(len) = info.content_length {
        set(CONTENT_LENGTH, len.to_string().as_bytes());
    }
    // CGI-4.1.3-4: whenever the request has a Content-Type.
    if let Some(ct) = info
        .content_type
        .or_else(|| header(info.headers, "Content-Type"))
    {
        set(CONTENT_TYPE, ct);
    }
    // CGI-RW-2, CGI-RW-3
    if let Some(status) = info.redirect_status {
        set(REDIRECT_STATUS, status.to_string().as_bytes());
    }
    if let Some(url) = info.redirect_url {
        set(REDIRECT_URL, url);
    }
    if let Some(q) = info.redirect_query_string {
        set(REDIRECT_QUERY_STRING, q);
    }

    if vars.iter().any(|(_, v)| v.contains(&0)) {
        // CGI-7.2-4: an environment value cannot hold NUL.
        return Err(Error::NulInValue);
    }
    // CGI-4.1.18-4; CGI-RW-3: every header variable starts with HTTP_, which none of
    // the names above does, so a client cannot shadow a server-set variable.
    vars.extend(header_variables(info.headers.iter().copied(), opts)?);
    Ok(vars)
}

fn header<'a>(headers: &[(&'a str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

// ---------------------------------------------------------------------------------------
// Script selection

/// What the caller's lookup says about a decoded path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The prefix names a script: split here.
    Script,
    /// The prefix names a directory: keep walking.
    Directory,
    /// Nothing there (or something that is neither): the request fails with
    /// [`PathError::NotFound`].
    NotFound,
}

/// How a [`Split`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// A prefix was a script: [`Split::script`] names it.
    Script,
    /// Every segment was a directory: [`Split::script`] is the whole path (a trailing
    /// `/` kept), and the caller may try index scripts in it.
    Directory,
}

/// A request path divided into script and extra path (CGI-3.2-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The decoded script path, `""` or starting with `/`; becomes `SCRIPT_NAME` after
    /// the route prefix (CGI-4.1.13-1). It never contains any of `path_info`
    /// (CGI-4.1.13-4).
    pub script: Vec<u8>,
    /// The decoded extra path, `""` or starting with `/` (CGI-4.1.5-2), case kept
    /// (CGI-4.1.5-4).
    pub path_info: Vec<u8>,
    /// Whether a script was found.
    pub kind: SplitKind,
}

/// Splits a request path into script and extra path by asking `is_script` about each
/// decoded prefix, shortest first (CGI-3.2-1; the walk of the worked derivation in
/// `cgi.md` §4.1.13).
///
/// `raw_path` is the still percent-encoded path below the route prefix: empty or
/// starting with `/`. Portico's policy, documented per CGI-8.1-1 and CGI-1.3-2:
///
/// - every segment is decoded separately (CGI-2.3-4), and the whole path is refused
///   before any lookup when a segment holds an invalid escape
///   ([`PathError::InvalidEscape`]), an encoded `/` ([`PathError::EncodedSlash`],
///   CGI-4.1.5-5, CGI-AMB-13), NUL ([`PathError::Nul`]), CR or LF
///   ([`PathError::LineBreak`]), or is `.` or `..` after decoding
///   ([`PathError::DotSegment`], CGI-9.8-1: nothing to resolve, so nothing can escape);
/// - an empty segment (`//`) is refused in the script part
///   ([`PathError::EmptySegment`]) and allowed in the extra path; a trailing `/` after
///   a script gives `PATH_INFO` `/` (CGI-4.1.5-3);
/// - other bytes, non-UTF-8 ones included, pass through decoded (CGI-AMB-13).
///
/// `is_script` gets decoded prefixes such as `/admin`, then `/admin/env.cgi`.
///
/// ```
/// use portico_protocols::cgi::meta::{split_script, Lookup, SplitKind};
///
/// let split = split_script(b"/admin/env.cgi/a%20b/C", |p| match p {
///     b"/admin" => Lookup::Directory,
///     b"/admin/env.cgi" => Lookup::Script,
///     _ => Lookup::NotFound,
/// })?;
/// assert_eq!(split.script, b"/admin/env.cgi");
/// assert_eq!(split.path_info, b"/a b/C");
/// assert_eq!(split.kind, SplitKind::Script);
/// # Ok::<(), portico_protocols::cgi::meta::PathError>(())
/// ```
pub fn split_script(
    raw_path: &[u8],
    mut is_script: impl FnMut(&[u8]) -> Lookup,
) -> Result<Split, PathError> {
    let segments: Vec<Vec<u8>> = match raw_path {
        [] => Vec::new(),
        [b'/', rest @ ..] => rest
            .split(|&b| b == b'/')
            .map(decode_segment)
            .collect::<Result<_, _>>()?,
        // CGI-4.1.5-2, CGI-4.1.13-1: "" or "/" followed by segments.
        _ => return Err(PathError::NotAbsolute),
    };
    let last = segments.len().saturating_sub(1);
    let mut script = Vec::with_capacity(raw_path.len());
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if i == last {
                // A trailing `/` on a directory: the caller tries index scripts.
                script.push(b'/');
                break;
            }
            // CGI-8.1-1: no empty segments in the script path.
            return Err(PathError::EmptySegment);
        }
        script.push(b'/');
        script.extend_from_slice(segment);
        match is_script(&script) {
            Lookup::Directory => continue,
            Lookup::NotFound => return Err(PathError::NotFound),
            Lookup::Script => {
                // CGI-4.1.5-2: the rest, decoded, is PATH_INFO; CGI-4.1.13-4: none of
                // it is in SCRIPT_NAME.
                let mut path_info = Vec::new();
                for rest in segments.get(i + 1..).unwrap_or_default() {
                    path_info.push(b'/');
                    path_info.extend_from_slice(rest);
                }
                return Ok(Split {
                    script,
                    path_info,
                    kind: SplitKind::Script,
                });
            }
        }
    }
    Ok(Split {
        script,
        path_info: Vec::new(),
        kind: SplitKind::Directory,
    })
}

fn decode_segment(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    // Raw control bytes are as unacceptable as encoded ones.
    check_segment_bytes(raw)?;
    // CGI-2.3-4: split on `/` first, then decode each part.
    let decoded = percent_decode(raw).ok_or(PathError::InvalidEscape)?;
    if decoded.contains(&b'/') {
        // CGI-4.1.5-5, CGI-AMB-13: an encoded `/` would lose information.
        return Err(PathError::EncodedSlash);
    }
    check_segment_bytes(&decoded)?;
    if decoded == b"." || decoded == b".." {
        // CGI-9.8-1, CGI-8.1-1: dot segments are refused, never resolved.
        return Err(PathError::DotSegment);
    }
    Ok(decoded)
}

fn check_segment_bytes(s: &[u8]) -> Result<(), PathError> {
    if s.contains(&0) {
        // CGI-7.2-4: no NUL in a meta-variable.
        return Err(PathError::Nul);
    }
    if s.iter().any(|&b| b == b'\r' || b == b'\n') {
        // CGI-4.1.5-5: an objectionable value.
        return Err(PathError::LineBreak);
    }
    Ok(())
}

/// `PATH_TRANSLATED` for a `PATH_INFO`: the document root with its trailing `/` removed,
/// followed by the extra path (CGI-4.1.6-1; the algorithm is portico's,
/// CGI-4.1.6-5). Case is kept (CGI-4.1.6-4).
///
/// `None` when `path_info` is empty (CGI-4.1.6-7), does not start with `/`, holds a
/// NUL, or has a `.` or `..` segment, so the result never leaves the document root
/// (CGI-9.8-2).
///
/// ```
/// use portico_protocols::cgi::meta::path_translated;
/// assert_eq!(path_translated(b"/srv/htdocs", b"/a b/C"), Some(b"/srv/htdocs/a b/C".to_vec()));
/// assert_eq!(path_translated(b"/srv/htdocs/", b"/"), Some(b"/srv/htdocs/".to_vec()));
/// assert_eq!(path_translated(b"/srv/htdocs", b""), None);
/// assert_eq!(path_translated(b"/srv/htdocs", b"/../etc"), None);
/// ```
pub fn path_translated(document_root: &[u8], path_info: &[u8]) -> Option<Vec<u8>> {
    if path_info.first() != Some(&b'/') || path_info.contains(&0) || document_root.contains(&0) {
        return None;
    }
    if path_info
        .split(|&b| b == b'/')
        .any(|s| s == b"." || s == b"..")
    {
        // CGI-9.8-2: the mapping must not leave the document tree.
        return None;
    }
    let root = document_root.strip_suffix(b"/").unwrap_or(document_root);
    let mut out = Vec::with_capacity(root.len() + path_info.len());
    out.extend_from_slice(root);
    out.extend_from_slice(path_info);
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Command line, NPH

/// The command-line words of an indexed query (CGI-4.4), or `None` for none at all.
///
/// Follows §4.4 exactly: only a query without an unencoded `=` is indexed
/// (CGI-4.4-1); it is split on `+` into words of one or more characters from
/// unreserved, `%` escapes and `; / ? : @ & = , $` (CGI-4.4-2), each URL-decoded
/// (CGI-4.4-3). If any word cannot be made (empty, a character outside that set, a bad
/// escape, NUL, more than [`MAX_SEARCH_ARGS`] words), there are no words at all
/// (CGI-4.4-4). In addition, following CGI-AMB-9 and CGI-RW-12 (CVE-2012-1823,
/// CVE-2024-4577), it returns `None` when any decoded word starts with `-` or a soft
/// hyphen (`0xAD`, or `C2 AD` in UTF-8).
///
/// The caller checks the rest of CGI-4.4-1: only `GET` and `HEAD` requests, and only on
/// routes that enable it (CGI-AMB-9). Words are not shell-escaped (CGI-4.4-3,
/// CGI-7.2-2): portico runs scripts without a shell.
///
/// ```
/// use portico_protocols::cgi::meta::search_args;
/// assert_eq!(search_args(b"a+b%20c"), Some(vec![b"a".to_vec(), b"b c".to_vec()]));
/// assert_eq!(search_args(b"a=b"), None);
/// assert_eq!(search_args(b"-s"), None);
/// ```
pub fn search_args(query_string: &[u8]) -> Option<Vec<Vec<u8>>> {
    // CGI-4.4-1: an unencoded `=` means the query is not indexed.
    if query_string.is_empty() || query_string.contains(&b'=') {
        return None;
    }
    let mut args = Vec::new();
    for word in query_string.split(|&b| b == b'+') {
        // CGI-4.4-2: a word is one or more of these characters.
        if word.is_empty() || !word.iter().all(|&b| is_search_char(b)) {
            return None;
        }
        // CGI-4.4-3
        let arg = percent_decode(word)?;
        // A NUL cannot be part of an argument (CGI-4.4-4).
        if arg.contains(&0) {
            return None;
        }
        // CGI-AMB-9, CGI-RW-12: never hand an interpreter an option.
        if matches!(arg.as_slice(), [b'-', ..] | [0xAD, ..] | [0xC2, 0xAD, ..]) {
            return None;
        }
        args.push(arg);
        if args.len() > MAX_SEARCH_ARGS {
            // CGI-4.4-4: all or nothing.
            return None;
        }
    }
    Some(args)
}

fn is_search_char(b: u8) -> bool {
    // unreserved (CGI-2.3-5), `%` of an escape, and `; / ? : @ & = , $` (CGI-4.4-2).
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b';'
                | b'/'
                | b'?'
                | b':'
                | b'@'
                | b'&'
                | b'='
                | b','
                | b'$'
        )
}

/// Whether a script is an NPH script: its file name (after the last `/`) starts with
/// `nph-` (CGI-5.1-3, CGI-RW-11). Case-sensitive, as Apache.
///
/// ```
/// use portico_protocols::cgi::meta::is_nph;
/// assert!(is_nph(b"/srv/cgi-bin/nph-push.cgi"));
/// assert!(!is_nph(b"/srv/nph-dir/env.cgi"));
/// ```
pub fn is_nph(script_file_name: &[u8]) -> bool {
    let base = script_file_name
        .rsplit(|&b| b == b'/')
        .next()
        .unwrap_or(script_file_name);
    base.starts_with(b"nph-")
}

// ---------------------------------------------------------------------------------------
// Errors

/// A request whose meta-variables cannot be built. The client is at fault: answer 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Two different header names map to the same `HTTP_*` variable (only under
    /// [`HeaderNamePolicy::MapAndRejectCollisions`]).
    HeaderNameCollision,
    /// A header value with CR, LF or NUL that is not a line fold.
    InvalidHeaderValue,
    /// A meta-variable value with a NUL byte.
    NulInValue,
}

impl Error {
    /// The clause of `shared/specs/cgi.md` behind the refusal.
    pub fn clause(&self) -> &'static str {
        match self {
            Error::HeaderNameCollision => "CGI-AMB-7",
            Error::InvalidHeaderValue => "CGI-4.1.18-7",
            Error::NulInValue => "CGI-7.2-4",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::HeaderNameCollision => "two header names map to the same CGI variable",
            Error::InvalidHeaderValue => "line break or NUL in a header value",
            Error::NulInValue => "NUL byte in a meta-variable value",
        };
        write!(f, "{msg} ({})", self.clause())
    }
}

impl std::error::Error for Error {}

/// A request path refused by [`split_script`]. `NotFound` is a 404; the others are
/// 400 or 404 as the gateway documents (CGI-AMB-13 chooses 404 for `%2F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A non-empty path that does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidEscape,
    /// `%2F` in a segment.
    EncodedSlash,
    /// A NUL byte, raw or `%00`.
    Nul,
    /// A CR or LF, raw or encoded.
    LineBreak,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// An empty segment (`//`) in the script part of the path.
    EmptySegment,
    /// The lookup said a prefix does not exist.
    NotFound,
}

impl PathError {
    /// The clause of `shared/specs/cgi.md` behind the refusal.
    pub fn clause(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "CGI-4.1.5-2",
            PathError::InvalidEscape => "CGI-2.3-5",
            PathError::EncodedSlash => "CGI-AMB-13",
            PathError::Nul => "CGI-7.2-4",
            PathError::LineBreak => "CGI-4.1.5-5",
            PathError::DotSegment => "CGI-9.8-1",
            PathError::EmptySegment => "CGI-8.1-1",
            PathError::NotFound => "CGI-3.2-1",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            PathError::NotAbsolute => "path does not start with /",
            PathError::InvalidEscape => "invalid percent escape in path",
            PathError::EncodedSlash => "encoded / in path",
            PathError::Nul => "NUL byte in path",
            PathError::LineBreak => "CR or LF in path",
            PathError::DotSegment => ". or .. segment in path",
            PathError::EmptySegment => "empty segment in script path",
            PathError::NotFound => "no script at this path",
        };
        write!(f, "{msg} ({})", self.clause())
    }
}

impl std::error::Error for PathError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(info: &RequestInfo<'_>) -> Vec<(String, Vec<u8>)> {
        meta_variables(info, &HeaderOptions::default()).unwrap()
    }

    fn get<'v>(vars: &'v [(String, Vec<u8>)], name: &str) -> Option<&'v [u8]> {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn count(vars: &[(String, Vec<u8>)], name: &str) -> usize {
        vars.iter().filter(|(n, _)| n == name).count()
    }

    fn basic() -> RequestInfo<'static> {
        RequestInfo {
            method: "GET",
            request_uri: b"/cgi-bin/env.cgi",
            script_name: b"/cgi-bin/env.cgi",
            server_name: "example.org",
            server_port: 80,
            remote_addr: "192.0.2.7",
            ..RequestInfo::default()
        }
    }

    fn lookup(scripts: &'static [&'static [u8]]) -> impl FnMut(&[u8]) -> Lookup {
        move |p| {
            if scripts.contains(&p) {
                Lookup::Script
            } else if p.ends_with(b".cgi") || p.ends_with(b"missing") {
                Lookup::NotFound
            } else {
                Lookup::Directory
            }
        }
    }

    // ---- the variable set (CGI-T-1) -------------------------------------------------

    /// CGI-4.1.4-1, CGI-4.1.4-3: `CGI/1.1`, no leading zeros.
    #[test]
    fn cgi_4_1_4_1_gateway_interface() {
        assert_eq!(
            get(&vars(&basic()), GATEWAY_INTERFACE),
            Some(&b"CGI/1.1"[..])
        );
    }

    #[test]
    fn cgi_4_1_7_3_query_string_always_set() {
        let v = vars(&basic());
        assert_eq!(get(&v, QUERY_STRING), Some(&b""[..]));
        assert_eq!(count(&v, QUERY_STRING), 1);
    }

    #[test]
    fn cgi_4_1_7_1_query_string_not_decoded() {
        let info = RequestInfo {
            query_string: b"a=1%202&b=%26",
            ..basic()
        };
        assert_eq!(get(&vars(&info), QUERY_STRING), Some(&b"a=1%202&b=%26"[..]));
    }

    #[test]
    fn cgi_4_1_8_1_remote_addr() {
        assert_eq!(get(&vars(&basic()), REMOTE_ADDR), Some(&b"192.0.2.7"[..]));
    }

    /// CGI-4.1.9-2, CGI-4.1.9-3: set, from REMOTE_ADDR; no REMOTE_IDENT.
    #[test]
    fn cgi_amb_14_remote_host_is_address() {
        let v = vars(&basic());
        assert_eq!(get(&v, REMOTE_HOST), Some(&b"192.0.2.7"[..]));
        assert_eq!(get(&v, REMOTE_IDENT), None);
    }

    #[test]
    fn cgi_4_1_12_1_request_method_case_kept() {
        let info = RequestInfo {
            method: "Patch",
            ..basic()
        };
        assert_eq!(get(&vars(&info), REQUEST_METHOD), Some(&b"Patch"[..]));
    }

    #[test]
    fn cgi_4_1_13_2_script_name_always_set() {
        let info = RequestInfo {
            script_name: b"",
            ..basic()
        };
        assert_eq!(get(&vars(&info), SCRIPT_NAME), Some(&b""[..]));
    }

    #[test]
    fn cgi_4_1_14_1_server_name() {
        assert_eq!(get(&vars(&basic()), SERVER_NAME), Some(&b"example.org"[..]));
    }

    /// CGI-4.1.15-1, CGI-4.1.15-2
    #[test]
    fn cgi_4_1_15_2_server_port_even_default() {
        assert_eq!(get(&vars(&basic()), SERVER_PORT), Some(&b"80"[..]));
    }

    #[test]
    fn cgi_4_1_16_1_server_protocol() {
        let info = RequestInfo {
            server_protocol: "HTTP/1.0",
            ..basic()
        };
        assert_eq!(get(&vars(&info), SERVER_PROTOCOL), Some(&b"HTTP/1.0"[..]));
    }

    #[test]
    fn cgi_4_1_17_1_server_software() {
        assert_eq!(get(&vars(&basic()), SERVER_SOFTWARE), Some(&b"portico"[..]));
    }

    /// CGI-T-1: no body, no CONTENT_LENGTH or CONTENT_TYPE.
    #[test]
    fn cgi_4_1_2_2_content_length_iff_body() {
        let v = vars(&basic());
        assert_eq!(
            (get(&v, CONTENT_LENGTH), get(&v, CONTENT_TYPE)),
            (None, None)
        );
        // CGI-AMB-4: a framed empty body is `0`.
        let info = RequestInfo {
            content_length: Some(0),
            ..basic()
        };
        assert_eq!(get(&vars(&info), CONTENT_LENGTH), Some(&b"0"[..]));
    }

    /// The caller's de-chunked length wins; the client header never becomes a
    /// variable (CGI-4.1.18-10).
    #[test]
    fn cgi_4_1_2_3_content_length_is_decoded_length() {
        let headers = [
            ("Content-Length", &b"999"[..]),
            ("Transfer-Encoding", &b"chunked"[..]),
        ];
        let info = RequestInfo {
            method: "POST",
            content_length: Some(12),
            headers: &headers,
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, CONTENT_LENGTH), Some(&b"12"[..]));
        assert_eq!(get(&v, "HTTP_CONTENT_LENGTH"), None);
    }

    /// CGI-T-2: CONTENT_TYPE as sent, no HTTP_CONTENT_TYPE.
    #[test]
    fn cgi_4_1_3_4_content_type_from_header() {
        let headers = [("content-type", &b"application/x-www-form-urlencoded"[..])];
        let info = RequestInfo {
            method: "POST",
            content_length: Some(3),
            headers: &headers,
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(
            get(&v, CONTENT_TYPE),
            Some(&b"application/x-www-form-urlencoded"[..])
        );
        assert_eq!(get(&v, "HTTP_CONTENT_TYPE"), None);
    }

    #[test]
    fn cgi_4_1_1_2_auth_type_from_authorization() {
        let headers = [("Authorization", &b"Basic dXNlcjpwdw=="[..])];
        let info = RequestInfo {
            headers: &headers,
            remote_user: Some(b"user"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, AUTH_TYPE), Some(&b"Basic"[..]));
        // CGI-9.2-1: the credentials themselves are not passed by default.
        assert_eq!(get(&v, "HTTP_AUTHORIZATION"), None);
    }

    #[test]
    fn cgi_4_1_11_2_remote_user() {
        let info = RequestInfo {
            auth_type: Some(b"Digest"),
            remote_user: Some(b"alice"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, REMOTE_USER), Some(&b"alice"[..]));
        assert_eq!(get(&v, AUTH_TYPE), Some(&b"Digest"[..]));
        assert_eq!(get(&vars(&basic()), REMOTE_USER), None);
    }

    #[test]
    fn cgi_4_1_6_7_no_path_translated_without_path_info() {
        let info = RequestInfo {
            path_info: Some(b""),
            path_translated: Some(b"/srv/htdocs"),
            document_root: Some(b"/srv/htdocs"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!((get(&v, PATH_INFO), get(&v, PATH_TRANSLATED)), (None, None));
    }

    /// CGI-T-4, CGI-4.1.6-1, CGI-4.1.6-4: case kept.
    #[test]
    fn cgi_4_1_6_6_path_translated_with_path_info() {
        let info = RequestInfo {
            path_info: Some(b"/a b/C"),
            document_root: Some(b"/srv/htdocs"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, PATH_INFO), Some(&b"/a b/C"[..]));
        assert_eq!(get(&v, PATH_TRANSLATED), Some(&b"/srv/htdocs/a b/C"[..]));
    }

    /// CGI-T-25, CGI-RW-1
    #[test]
    fn cgi_4_1_18_3_https_only_over_tls() {
        let v = vars(&basic());
        assert_eq!(
            (get(&v, HTTPS), get(&v, REQUEST_SCHEME)),
            (None, Some(&b"http"[..]))
        );
        let info = RequestInfo {
            https: true,
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(
            (get(&v, HTTPS), get(&v, REQUEST_SCHEME)),
            (Some(&b"on"[..]), Some(&b"https"[..]))
        );
        assert_eq!(get(&v, SERVER_PROTOCOL), Some(&b"HTTP/1.1"[..]));
    }

    #[test]
    fn cgi_rw_1_de_facto_variables() {
        let info = RequestInfo {
            request_uri: b"/cgi-bin/env.cgi?x=%20",
            server_addr: Some("192.0.2.1"),
            remote_port: Some(50000),
            document_root: Some(b"/srv/htdocs"),
            script_filename: Some(b"/srv/cgi-bin/env.cgi"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, REQUEST_URI), Some(&b"/cgi-bin/env.cgi?x=%20"[..]));
        assert_eq!(get(&v, SERVER_ADDR), Some(&b"192.0.2.1"[..]));
        assert_eq!(get(&v, REMOTE_PORT), Some(&b"50000"[..]));
        assert_eq!(get(&v, DOCUMENT_ROOT), Some(&b"/srv/htdocs"[..]));
        assert_eq!(get(&v, SCRIPT_FILENAME), Some(&b"/srv/cgi-bin/env.cgi"[..]));
    }

    /// CGI-T-10: `Redirect-Status` from the client never reaches the script.
    #[test]
    fn cgi_rw_3_client_cannot_shadow_server_variables() {
        let headers = [
            ("Redirect-Status", &b"200"[..]),
            ("Gateway-Interface", &b"x"[..]),
        ];
        let info = RequestInfo {
            redirect_status: Some(200),
            headers: &headers,
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, REDIRECT_STATUS), Some(&b"200"[..]));
        assert_eq!(get(&v, "HTTP_REDIRECT_STATUS"), None);
        // No name appears twice, and every header variable is HTTP_-prefixed.
        for (name, _) in &v {
            assert_eq!(count(&v, name), 1, "{name}");
        }
        assert_eq!(get(&v, "HTTP_GATEWAY_INTERFACE"), Some(&b"x"[..]));
        assert_eq!(get(&v, GATEWAY_INTERFACE), Some(&b"CGI/1.1"[..]));
    }

    #[test]
    fn cgi_rw_2_redirect_variables() {
        let info = RequestInfo {
            redirect_status: Some(404),
            redirect_url: Some(b"/old"),
            redirect_query_string: Some(b"a=1"),
            ..basic()
        };
        let v = vars(&info);
        assert_eq!(get(&v, REDIRECT_STATUS), Some(&b"404"[..]));
        assert_eq!(get(&v, REDIRECT_URL), Some(&b"/old"[..]));
        assert_eq!(get(&v, REDIRECT_QUERY_STRING), Some(&b"a=1"[..]));
    }

    #[test]
    fn cgi_7_2_4_nul_in_value_refused() {
        let info = RequestInfo {
            path_info: Some(b"/a\0b"),
            ..basic()
        };
        assert_eq!(
            meta_variables(&info, &HeaderOptions::default()),
            Err(Error::NulInValue)
        );
    }

    // ---- header mapping (CGI-T-8, T-9, T-10) ----------------------------------------

    #[test]
    fn cgi_4_1_18_4_header_name_mapping() {
        use HeaderNamePolicy::*;
        assert_eq!(
            http_variable_name("Accept-Language", Strict).as_deref(),
            Some("HTTP_ACCEPT_LANGUAGE")
        );
        assert_eq!(
            http_variable_name("x-foo-bar", Strict).as_deref(),
            Some("HTTP_X_FOO_BAR")
        );
        assert_eq!(http_variable_name("", Strict), None);
    }

    /// CGI-AMB-8, SCGI-RW-7: under both policies, in any case.
    #[test]
    fn cgi_rw_6_no_http_proxy() {
        for policy in [
            HeaderNamePolicy::Strict,
            HeaderNamePolicy::MapAndRejectCollisions,
        ] {
            assert_eq!(http_variable_name("Proxy", policy), None);
            assert_eq!(http_variable_name("PROXY", policy), None);
            let opts = HeaderOptions {
                policy,
                pass_authorization: true,
            };
            let v = header_variables([("proxy", &b"http://evil"[..])], &opts).unwrap();
            assert!(v.is_empty());
        }
    }

    #[test]
    fn cgi_4_1_18_10_content_and_auth_headers_removed() {
        use HeaderNamePolicy::*;
        for name in [
            "Content-Type",
            "Content-Length",
            "Authorization",
            "Proxy-Authorization",
        ] {
            assert_eq!(http_variable_name(name, Strict), None, "{name}");
        }
        assert_eq!(
            http_variable_name("Content_Type", MapAndRejectCollisions),
            None
        );
    }

    /// CGI-RW-5: CGIPassAuth.
    #[test]
    fn cgi_9_2_1_authorization_only_when_configured() {
        let headers = [
            ("Authorization", &b"Bearer t"[..]),
            ("Proxy-Authorization", &b"Basic x"[..]),
        ];
        let v = header_variables(headers, &HeaderOptions::default()).unwrap();
        assert!(v.is_empty());
        let opts = HeaderOptions {
            pass_authorization: true,
            ..HeaderOptions::default()
        };
        let v = header_variables(headers, &opts).unwrap();
        assert_eq!(get(&v, "HTTP_AUTHORIZATION"), Some(&b"Bearer t"[..]));
        assert_eq!(get(&v, "HTTP_PROXY_AUTHORIZATION"), Some(&b"Basic x"[..]));
    }

    #[test]
    fn cgi_4_1_18_6_same_name_headers_combined() {
        let headers = [
            ("Accept", &b"text/html"[..]),
            ("X-A", &b"1"[..]),
            ("accept", &b"*/*"[..]),
            ("Cookie", &b"a=1"[..]),
            ("Cookie", &b"b=2"[..]),
        ];
        let v = header_variables(headers, &HeaderOptions::default()).unwrap();
        assert_eq!(
            v,
            vec![
                ("HTTP_ACCEPT".to_string(), b"text/html, */*".to_vec()),
                ("HTTP_X_A".to_string(), b"1".to_vec()),
                ("HTTP_COOKIE".to_string(), b"a=1; b=2".to_vec()),
            ]
        );
    }

    #[test]
    fn cgi_4_1_18_7_folded_value_merged() {
        let v = header_variables(
            [("X-A", &b"one \r\n\t two\n three"[..])],
            &HeaderOptions::default(),
        )
        .unwrap();
        assert_eq!(get(&v, "HTTP_X_A"), Some(&b"one two three"[..]));
        for bad in [&b"a\r\nb"[..], b"a\rb", b"a\nb", b"a\0b"] {
            assert_eq!(
                header_variables([("X-A", bad)], &HeaderOptions::default()),
                Err(Error::InvalidHeaderValue),
                "{bad:?}"
            );
        }
    }

    /// CGI-4.1-9, CGI-7.2-4: ISO-8859-1 TEXT values are bytes, passed as they are.
    #[test]
    fn cgi_4_1_18_8_value_bytes_passed_through() {
        let v =
            header_variables([("X-Name", &b"Andr\xe9"[..])], &HeaderOptions::default()).unwrap();
        assert_eq!(get(&v, "HTTP_X_NAME"), Some(&b"Andr\xe9"[..]));
    }

    /// CGI-T-10, CGI-RW-4
    #[test]
    fn cgi_amb_7_strict_drops_underscore_headers() {
        let headers = [
            ("X_Foo", &b"evil"[..]),
            ("X-Foo", &b"good"[..]),
            ("X.Bar", &b"x"[..]),
        ];
        let v = header_variables(headers, &HeaderOptions::default()).unwrap();
        assert_eq!(v, vec![("HTTP_X_FOO".to_string(), b"good".to_vec())]);
    }

    #[test]
    fn cgi_rw_4_map_policy_rejects_collisions() {
        let opts = HeaderOptions {
            policy: HeaderNamePolicy::MapAndRejectCollisions,
            ..HeaderOptions::default()
        };
        let v = header_variables([("X_Bar", &b"1"[..]), ("x_bar", &b"2"[..])], &opts).unwrap();
        assert_eq!(v, vec![("HTTP_X_BAR".to_string(), b"1, 2".to_vec())]);
        assert_eq!(
            header_variables([("X_Foo", &b"evil"[..]), ("X-Foo", &b"good"[..])], &opts),
            Err(Error::HeaderNameCollision)
        );
    }

    // ---- script selection (CGI-T-4 to T-6) ------------------------------------------

    /// CGI-4.1.13-1: SCRIPT_NAME decoded too; CGI-4.1.5-4: case kept.
    #[test]
    fn cgi_4_1_5_2_path_info_decoded() {
        let s = split_script(b"/ad%6din/env.cgi/a%20b/C", lookup(&[b"/admin/env.cgi"])).unwrap();
        assert_eq!(s.script, b"/admin/env.cgi");
        assert_eq!(s.path_info, b"/a b/C");
        assert_eq!(s.kind, SplitKind::Script);
    }

    #[test]
    fn cgi_4_1_13_4_script_name_has_no_path_info() {
        let mut seen = Vec::new();
        let s = split_script(b"/env.cgi/env.cgi/x", |p| {
            seen.push(p.to_vec());
            Lookup::Script
        })
        .unwrap();
        assert_eq!(seen, vec![b"/env.cgi".to_vec()]);
        assert_eq!(
            (s.script.as_slice(), s.path_info.as_slice()),
            (&b"/env.cgi"[..], &b"/env.cgi/x"[..])
        );
    }

    #[test]
    fn cgi_4_1_5_3_trailing_slash_is_path_info() {
        let s = split_script(b"/env.cgi/", lookup(&[b"/env.cgi"])).unwrap();
        assert_eq!(s.path_info, b"/");
        let s = split_script(b"/env.cgi", lookup(&[b"/env.cgi"])).unwrap();
        assert_eq!(s.path_info, b"");
    }

    #[test]
    fn cgi_3_2_1_directory_and_not_found() {
        let s = split_script(b"/docs/", lookup(&[])).unwrap();
        assert_eq!(
            (s.script.as_slice(), s.kind),
            (&b"/docs/"[..], SplitKind::Directory)
        );
        let s = split_script(b"", lookup(&[])).unwrap();
        assert_eq!(
            (s.script.as_slice(), s.kind),
            (&b""[..], SplitKind::Directory)
        );
        assert_eq!(
            split_script(b"/a/missing/x", lookup(&[])),
            Err(PathError::NotFound)
        );
    }

    /// CGI-4.1.5-5, CGI-T-6
    #[test]
    fn cgi_amb_13_encoded_slash_refused() {
        assert_eq!(
            split_script(b"/env.cgi/a%2Fb", lookup(&[b"/env.cgi"])),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            split_script(b"/a%2fb", lookup(&[])),
            Err(PathError::EncodedSlash)
        );
    }

    #[test]
    fn cgi_9_8_1_dot_segments_refused() {
        for path in [
            &b"/a/../env.cgi"[..],
            b"/env.cgi/..",
            b"/%2e%2E/x",
            b"/./env.cgi",
            b"/env.cgi/%2e",
        ] {
            assert_eq!(
                split_script(path, lookup(&[b"/env.cgi"])),
                Err(PathError::DotSegment),
                "{path:?}"
            );
        }
        // `...` and `.x` are ordinary names.
        assert!(split_script(b"/env.cgi/.../.x", lookup(&[b"/env.cgi"])).is_ok());
    }

    #[test]
    fn cgi_8_1_1_path_policy() {
        let l = || lookup(&[b"/env.cgi"]);
        assert_eq!(
            split_script(b"/a//env.cgi", l()),
            Err(PathError::EmptySegment)
        );
        assert_eq!(
            split_script(b"/env.cgi/a//b", l()).unwrap().path_info,
            b"/a//b"
        );
        assert_eq!(split_script(b"/env.cgi/%00", l()), Err(PathError::Nul));
        assert_eq!(
            split_script(b"/env.cgi/%0d%0a", l()),
            Err(PathError::LineBreak)
        );
        assert_eq!(
            split_script(b"/env.cgi/a\nb", l()),
            Err(PathError::LineBreak)
        );
        assert_eq!(
            split_script(b"/env.cgi/%zz", l()),
            Err(PathError::InvalidEscape)
        );
        assert_eq!(
            split_script(b"/env.cgi/%4", l()),
            Err(PathError::InvalidEscape)
        );
        assert_eq!(split_script(b"env.cgi", l()), Err(PathError::NotAbsolute));
        // CGI-AMB-13: other bytes pass through decoded.
        assert_eq!(
            split_script(b"/env.cgi/%ff", l()).unwrap().path_info,
            b"/\xff"
        );
        assert_eq!(PathError::EncodedSlash.clause(), "CGI-AMB-13");
    }

    #[test]
    fn cgi_9_8_2_path_translated_stays_in_root() {
        assert_eq!(path_translated(b"/srv", b"/a/../../etc"), None);
        assert_eq!(path_translated(b"/srv", b"a"), None);
        assert_eq!(path_translated(b"/srv/", b"/x"), Some(b"/srv/x".to_vec()));
    }

    #[test]
    fn cgi_4_1_6_4_path_translated_keeps_case() {
        assert_eq!(
            path_translated(b"/Srv", b"/A/b"),
            Some(b"/Srv/A/b".to_vec())
        );
    }

    // ---- command line, NPH ----------------------------------------------------------

    /// CGI-T-11
    #[test]
    fn cgi_4_4_4_search_args_all_or_nothing() {
        assert_eq!(
            search_args(b"a+b%20c"),
            Some(vec![b"a".to_vec(), b"b c".to_vec()])
        );
        assert_eq!(search_args(b"a=b"), None);
        assert_eq!(search_args(b"a++b"), None);
        assert_eq!(search_args(b"a+b%zz"), None);
        assert_eq!(search_args(b"a+<b>"), None);
        assert_eq!(search_args(b"a+%00"), None);
        assert_eq!(search_args(b""), None);
        let many: Vec<u8> = b"a+"
            .repeat(MAX_SEARCH_ARGS + 1)
            .into_iter()
            .chain(*b"a")
            .collect();
        assert_eq!(search_args(&many), None);
        // CGI-4.4-2: the reserved characters allowed in a word, decoded `=` included.
        assert_eq!(
            search_args(b"/x;y:@&,$+%3D"),
            Some(vec![b"/x;y:@&,$".to_vec(), b"=".to_vec()])
        );
    }

    /// CGI-RW-12: CVE-2012-1823 (`?-s`), CVE-2024-4577 (soft hyphen).
    #[test]
    fn cgi_amb_9_no_option_like_args() {
        assert_eq!(search_args(b"-s"), None);
        assert_eq!(search_args(b"a+-d+x"), None);
        assert_eq!(search_args(b"%2Ds"), None);
        assert_eq!(search_args(b"%ADd"), None);
        assert_eq!(search_args(b"%C2%ADd"), None);
        assert_eq!(search_args(b"a-b"), Some(vec![b"a-b".to_vec()]));
    }

    /// CGI-RW-11
    #[test]
    fn cgi_5_1_3_nph_by_name() {
        assert!(is_nph(b"nph-test.cgi"));
        assert!(is_nph(b"/srv/cgi-bin/nph-x"));
        assert!(!is_nph(b"/srv/nph-dir/x.cgi"));
        assert!(!is_nph(b"NPH-x"));
        assert!(!is_nph(b""));
    }

    // ---- properties -----------------------------------------------------------------

    /// Percent-encodes everything but unreserved characters.
    fn encode_segment(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in s {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        out
    }

    proptest! {
        /// CGI-3.3-3: re-encoding SCRIPT_NAME and PATH_INFO into a Script-URI path and
        /// splitting it again gives the same two values.
        #[test]
        fn cgi_3_3_3_script_uri_reproduces_split(
            dirs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..6), 0..3),
            extra in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..3),
        ) {
            let bad = |s: &Vec<u8>| s.contains(&b'/') || s.contains(&0) || s.contains(&b'\r')
                || s.contains(&b'\n') || s == b"." || s == b"..";
            prop_assume!(!dirs.iter().chain(&extra).any(bad));
            let mut raw = Vec::new();
            let mut script = Vec::new();
            for d in &dirs {
                raw.push(b'/');
                raw.extend(encode_segment(d));
                script.push(b'/');
                script.extend_from_slice(d);
            }
            raw.extend_from_slice(b"/run.cgi");
            script.extend_from_slice(b"/run.cgi");
            let mut path_info = Vec::new();
            for e in &extra {
                raw.push(b'/');
                raw.extend(encode_segment(e));
                path_info.push(b'/');
                path_info.extend_from_slice(e);
            }
            let target = script.clone();
            let split = split_script(&raw, |p| if p == target { Lookup::Script } else { Lookup::Directory });
            prop_assert_eq!(split, Ok(Split { script, path_info, kind: SplitKind::Script }));
        }

        /// No input makes split_script, search_args or the header mapping panic.
        #[test]
        fn cgi_8_1_1_any_path_no_panic(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = split_script(&raw, |p| if p.len() > 4 { Lookup::Script } else { Lookup::Directory });
            let _ = search_args(&raw);
            let _ = header_variables([("X-A", raw.as_slice())], &HeaderOptions::default());
        }
    }
}
