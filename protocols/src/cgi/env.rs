//! A CGI request read back from a process environment, for running portico itself as a
//! CGI program (the script side, `app` in `cgi.md`).
//!
//! The caller collects the environment (`std::env::vars_os`, as bytes) and passes the
//! pairs; this module reads no environment itself.
//!
//! ```
//! use portico_protocols::cgi::env::parse_env;
//!
//! let vars: [(&[u8], &[u8]); 5] = [
//!     (b"GATEWAY_INTERFACE", b"CGI/1.1"),
//!     (b"REQUEST_METHOD", b"POST"),
//!     (b"CONTENT_LENGTH", b"5"),
//!     (b"HTTP_X_FORWARDED_FOR", b"192.0.2.1"),
//!     (b"PATH", b"/usr/bin"),
//! ];
//! let req = parse_env(vars)?;
//! assert_eq!(req.method, b"POST");
//! assert_eq!(req.content_length, Some(5));
//! assert_eq!(req.headers, vec![("X-Forwarded-For".to_string(), &b"192.0.2.1"[..])]);
//! assert_eq!(req.vars.len(), 5);
//! # Ok::<(), portico_protocols::cgi::env::Error>(())
//! ```

use core::fmt;

use super::is_token_char;
use super::meta;

/// The request a web server handed to a CGI program. Slices borrow the environment.
///
/// A variable that is absent and one that is empty mean the same (CGI-4.1-6): both
/// read as `None` for the optional fields and `""` for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRequest<'a> {
    /// `REQUEST_METHOD` (CGI-4.1.12), a token, case kept.
    pub method: &'a [u8],
    /// `SCRIPT_NAME` (CGI-4.1.13), `""` when unset.
    pub script_name: &'a [u8],
    /// `PATH_INFO` (CGI-4.1.5), decoded; `None` when unset or empty.
    pub path_info: Option<&'a [u8]>,
    /// `QUERY_STRING` (CGI-4.1.7), still encoded; `""` when unset.
    pub query_string: &'a [u8],
    /// `CONTENT_LENGTH` (CGI-4.1.2); `None` when unset or empty (no body). Leading
    /// zeros are accepted.
    pub content_length: Option<u64>,
    /// `CONTENT_TYPE` (CGI-4.1.3); `None` when unset or empty.
    pub content_type: Option<&'a [u8]>,
    /// `SERVER_NAME` (CGI-4.1.14), `""` when unset.
    pub server_name: &'a [u8],
    /// `SERVER_PORT` (CGI-4.1.15); `None` when unset or empty.
    pub server_port: Option<u16>,
    /// `SERVER_PROTOCOL` (CGI-4.1.16), `""` when unset.
    pub server_protocol: &'a [u8],
    /// `REMOTE_ADDR` (CGI-4.1.8), `""` when unset.
    pub remote_addr: &'a [u8],
    /// The `HTTP_*` variables as request header fields, in environment order:
    /// `HTTP_X_FOO` → `X-Foo`. `HTTP_PROXY` is skipped (CGI-RW-6), as are names with
    /// characters a header name cannot have.
    pub headers: Vec<(String, &'a [u8])>,
    /// Every variable, in the order given.
    pub vars: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> EnvRequest<'a> {
    /// The first variable named `name` (names compare exactly, as the environment does).
    pub fn var(&self, name: &[u8]) -> Option<&'a [u8]> {
        lookup(&self.vars, name)
    }
}

/// Reads a CGI request from environment variables.
///
/// Requires `GATEWAY_INTERFACE` = `CGI/1.x` (CGI-4.1.4-1; leading zeros in either
/// number are ignored, CGI-4.1.4-4) and a `REQUEST_METHOD` that is a token
/// (CGI-4.1.12-1). `CONTENT_LENGTH` and `SERVER_PORT`, when non-empty, must be decimal
/// numbers. When a name appears twice, the first one counts (as `getenv`).
pub fn parse_env<'a>(
    vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<EnvRequest<'a>, Error> {
    let vars: Vec<(&'a [u8], &'a [u8])> = vars.into_iter().collect();
    let get = |name: &str| lookup(&vars, name.as_bytes()).filter(|v| !v.is_empty());

    // CGI-4.1.4-1
    let gateway = get(meta::GATEWAY_INTERFACE).ok_or(Error::MissingGatewayInterface)?;
    if !is_cgi_1(gateway) {
        return Err(Error::UnsupportedGatewayInterface);
    }
    // CGI-4.1.12-1, CGI-4.1.12-2: a token, case-sensitive.
    let method = get(meta::REQUEST_METHOD).ok_or(Error::MissingMethod)?;
    if !method.iter().all(|&b| is_token_char(b)) {
        return Err(Error::InvalidMethod);
    }
    // CGI-4.1.2-1: "" or one or more digits.
    let content_length = get(meta::CONTENT_LENGTH)
        .map(|v| parse_decimal(v).ok_or(Error::InvalidContentLength))
        .transpose()?;
    // CGI-4.1.15-1: decimal digits.
    let server_port = get(meta::SERVER_PORT)
        .map(|v| {
            parse_decimal(v)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(Error::InvalidServerPort)
        })
        .transpose()?;

    let mut headers: Vec<(String, &'a [u8])> = Vec::new();
    for &(name, value) in &vars {
        let Some(rest) = name.strip_prefix(meta::HTTP_PREFIX.as_bytes()) else {
            continue;
        };
        // CGI-RW-6: never turn HTTP_PROXY back into a `Proxy` header either.
        if rest.is_empty() || rest == b"PROXY" {
            continue;
        }
        let Some(header) = header_name(rest) else {
            continue;
        };
        if headers.iter().any(|(h, _)| *h == header) {
            continue;
        }
        headers.push((header, value));
    }

    Ok(EnvRequest {
        method,
        script_name: get(meta::SCRIPT_NAME).unwrap_or_default(),
        path_info: get(meta::PATH_INFO),
        query_string: get(meta::QUERY_STRING).unwrap_or_default(),
        content_length,
        content_type: get(meta::CONTENT_TYPE),
        server_name: get(meta::SERVER_NAME).unwrap_or_default(),
        server_port,
        server_protocol: get(meta::SERVER_PROTOCOL).unwrap_or_default(),
        remote_addr: get(meta::REMOTE_ADDR).unwrap_or_default(),
        headers,
        vars,
    })
}

/// An environment that is not a CGI request portico can serve. The web server in front
/// is misconfigured (or portico was started outside CGI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No `GATEWAY_INTERFACE`: not started as a CGI program.
    MissingGatewayInterface,
    /// `GATEWAY_INTERFACE` is not `CGI/1.x`.
    UnsupportedGatewayInterface,
    /// No `REQUEST_METHOD`.
    MissingMethod,
    /// A `REQUEST_METHOD` that is not a token.
    InvalidMethod,
    /// A `CONTENT_LENGTH` that is not a decimal number.
    InvalidContentLength,
    /// A `SERVER_PORT` that is not a decimal port number.
    InvalidServerPort,
}

impl Error {
    /// The clause of `shared/specs/cgi.md` the environment breaks.
    pub fn clause(&self) -> &'static str {
        match self {
            Error::MissingGatewayInterface | Error::UnsupportedGatewayInterface => "CGI-4.1.4-1",
            Error::MissingMethod => "CGI-4.1.12-1",
            Error::InvalidMethod => "CGI-4.1.12-2",
            Error::InvalidContentLength => "CGI-4.1.2-1",
            Error::InvalidServerPort => "CGI-4.1.15-1",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::MissingGatewayInterface => "GATEWAY_INTERFACE is not set",
            Error::UnsupportedGatewayInterface => "GATEWAY_INTERFACE is not CGI/1.x",
            Error::MissingMethod => "REQUEST_METHOD is not set",
            Error::InvalidMethod => "REQUEST_METHOD is not a token",
            Error::InvalidContentLength => "CONTENT_LENGTH is not a decimal number",
            Error::InvalidServerPort => "SERVER_PORT is not a port number",
        };
        write!(f, "{msg} ({})", self.clause())
    }
}

impl std::error::Error for Error {}

fn lookup<'a>(vars: &[(&'a [u8], &'a [u8])], name: &[u8]) -> Option<&'a [u8]> {
    vars.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// `CGI/` major `.` minor with major 1; leading zeros ignored (CGI-4.1.4-2, 4.1.4-4).
fn is_cgi_1(v: &[u8]) -> bool {
    let Some(version) = v.strip_prefix(b"CGI/") else {
        return false;
    };
    let mut parts = version.splitn(2, |&b| b == b'.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    let digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    digits(major) && digits(minor) && parse_decimal(major) == Some(1)
}

/// A non-empty string of ASCII digits as a `u64`; `None` on overflow.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `X_FORWARDED_FOR` → `X-Forwarded-For`; `None` unless letters, digits and `_`.
fn header_name(var_tail: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(var_tail.len());
    let mut start = true;
    for &b in var_tail {
        match b {
            b'_' => {
                out.push('-');
                start = true;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => {
                let c = char::from(b);
                out.push(if start {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
                start = false;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> Result<EnvRequest<'a>, Error> {
        parse_env(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    const BASE: [(&str, &str); 2] = [("GATEWAY_INTERFACE", "CGI/1.1"), ("REQUEST_METHOD", "GET")];

    #[test]
    fn cgi_4_1_4_1_gateway_interface_required() {
        assert_eq!(
            env(&[("REQUEST_METHOD", "GET")]),
            Err(Error::MissingGatewayInterface)
        );
        for bad in [
            "CGI/2.0",
            "CGI/1",
            "CGI/1.x",
            "cgi/1.1",
            "FastCGI/1.0",
            "CGI/99999999999999999999999.1",
        ] {
            assert_eq!(
                env(&[("GATEWAY_INTERFACE", bad), ("REQUEST_METHOD", "GET")]),
                Err(Error::UnsupportedGatewayInterface),
                "{bad}"
            );
        }
        assert!(env(&[("GATEWAY_INTERFACE", "CGI/1.0"), ("REQUEST_METHOD", "GET")]).is_ok());
    }

    #[test]
    fn cgi_4_1_4_4_leading_zeros_ignored() {
        assert!(
            env(&[
                ("GATEWAY_INTERFACE", "CGI/001.01"),
                ("REQUEST_METHOD", "GET")
            ])
            .is_ok()
        );
    }

    #[test]
    fn cgi_4_1_12_1_request_method_required() {
        assert_eq!(
            env(&[("GATEWAY_INTERFACE", "CGI/1.1")]),
            Err(Error::MissingMethod)
        );
        assert_eq!(
            env(&[("GATEWAY_INTERFACE", "CGI/1.1"), ("REQUEST_METHOD", "")]),
            Err(Error::MissingMethod)
        );
        assert_eq!(
            env(&[("GATEWAY_INTERFACE", "CGI/1.1"), ("REQUEST_METHOD", "G T")]),
            Err(Error::InvalidMethod)
        );
    }

    #[test]
    fn cgi_4_1_6_empty_and_absent_are_the_same() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("CONTENT_LENGTH", ""),
            ("PATH_INFO", ""),
            ("CONTENT_TYPE", ""),
        ]);
        let req = env(&vars).unwrap();
        assert_eq!(
            (req.content_length, req.path_info, req.content_type),
            (None, None, None)
        );
        assert_eq!(req.query_string, b"");
    }

    #[test]
    fn cgi_4_3_2_2_content_length_parsed() {
        let mut vars = BASE.to_vec();
        vars.push(("CONTENT_LENGTH", "0042"));
        assert_eq!(env(&vars).unwrap().content_length, Some(42));
        vars.pop();
        vars.push(("CONTENT_LENGTH", "4x"));
        assert_eq!(env(&vars), Err(Error::InvalidContentLength));
    }

    #[test]
    fn cgi_4_1_15_1_server_port_parsed() {
        let mut vars = BASE.to_vec();
        vars.push(("SERVER_PORT", "8080"));
        assert_eq!(env(&vars).unwrap().server_port, Some(8080));
        vars.pop();
        vars.push(("SERVER_PORT", "70000"));
        assert_eq!(env(&vars), Err(Error::InvalidServerPort));
    }

    #[test]
    fn cgi_4_1_18_4_http_variables_back_to_headers() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("HTTP_X_FORWARDED_FOR", "192.0.2.1"),
            ("HTTP_ACCEPT", "*/*"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_", "x"),
            ("HTTP_BAD-NAME", "x"),
            ("HTTP_ACCEPT", "second"),
            ("SCRIPT_NAME", "/cgi-bin/x"),
            ("PATH_INFO", "/a b"),
            ("QUERY_STRING", "q=%20"),
            ("SERVER_NAME", "example.org"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REMOTE_ADDR", "192.0.2.9"),
        ]);
        let req = env(&vars).unwrap();
        assert_eq!(
            req.headers,
            vec![
                ("X-Forwarded-For".to_string(), &b"192.0.2.1"[..]),
                ("Accept".to_string(), &b"*/*"[..]),
            ]
        );
        assert_eq!(req.method, b"GET");
        assert_eq!(req.script_name, b"/cgi-bin/x");
        assert_eq!(req.path_info, Some(&b"/a b"[..]));
        assert_eq!(req.query_string, b"q=%20");
        assert_eq!(req.server_name, b"example.org");
        assert_eq!(req.server_protocol, b"HTTP/1.1");
        assert_eq!(req.remote_addr, b"192.0.2.9");
        assert_eq!(req.vars.len(), vars.len());
        assert_eq!(req.var(b"HTTP_ACCEPT"), Some(&b"*/*"[..]));
        assert_eq!(Error::MissingMethod.clause(), "CGI-4.1.12-1");
    }
}
