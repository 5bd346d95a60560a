//! Requests that arrive already parsed by a web server (FastCGI params, SCGI headers, a
//! CGI environment) become model requests here: the method, the path to route on, the
//! query, `HTTP_*` variables back into header fields, the addresses the web server saw,
//! and every param kept as sent so `DOCUMENT_ROOT`, `SCRIPT_FILENAME`, `HTTPS`,
//! `REMOTE_USER` … reach the backend.
//!
//! The path routed on is `SCRIPT_NAME` + `PATH_INFO` (re-encoded, since both are
//! decoded), falling back to the path of `REQUEST_URI`. Must not import backend or route.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use crate::model::{Body, Endpoint, Request, split_target};

/// Why params could not become a request; the listener answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// REQUEST_METHOD is missing or not a method token.
    #[error("REQUEST_METHOD missing or invalid")]
    Method,
    /// Neither SCRIPT_NAME/PATH_INFO nor REQUEST_URI give a path starting with `/`.
    #[error("no request path: SCRIPT_NAME, PATH_INFO and REQUEST_URI are all missing or invalid")]
    Path,
    /// CONTENT_LENGTH is present but not a decimal number.
    #[error("CONTENT_LENGTH is not a number")]
    ContentLength,
}

/// A model request from the `params` a web server sent.
///
/// `socket_local`/`socket_peer` are the listener's own socket ends, used only when the
/// params do not name the addresses (SERVER_ADDR/REMOTE_ADDR…). `body` is the request body
/// as the listener delivers it; its framing decides CONTENT_LENGTH downstream.
pub fn request_from_params(
    params: Vec<(Bytes, Bytes)>,
    socket_local: Endpoint,
    socket_peer: Endpoint,
    body: Body,
) -> Result<Request, ParamsError> {
    // `find` lends, `get` shares (an atomic increment, and another when dropped): only
    // what the request keeps is shared.
    let find = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    };
    let get = |name: &str| find(name).cloned();
    let method = find("REQUEST_METHOD")
        .and_then(|m| Method::from_bytes(m).ok())
        .ok_or(ParamsError::Method)?;
    let query = get("QUERY_STRING").unwrap_or_default();
    let request_uri = get("REQUEST_URI").filter(|u| u.starts_with(b"/"));
    let script_name = find("SCRIPT_NAME").map_or(&b""[..], |v| v.as_ref());
    let path_info = find("PATH_INFO").map_or(&b""[..], |v| v.as_ref());
    let path = if script_name.starts_with(b"/") || path_info.starts_with(b"/") {
        let mut decoded = Vec::with_capacity(script_name.len() + path_info.len());
        decoded.extend_from_slice(script_name);
        decoded.extend_from_slice(path_info);
        Bytes::from(percent_encode_path(&decoded))
    } else if let Some(uri) = &request_uri {
        split_target(uri).0
    } else {
        return Err(ParamsError::Path);
    };
    let target = match request_uri {
        Some(u) => u,
        None if query.is_empty() => path.clone(),
        None => {
            let mut t = path.to_vec();
            t.push(b'?');
            t.extend_from_slice(&query);
            Bytes::from(t)
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &params {
        let header = if let Some(h) = name.strip_prefix(b"HTTP_") {
            // CGI-RW-6: a web server that forwarded `Proxy` still never reaches a script
            // as HTTP_PROXY: the header is dropped here and never rebuilt.
            if h == b"PROXY" {
                continue;
            }
            header_name_of(h)
        } else if name.as_ref() == b"CONTENT_TYPE" && !value.is_empty() {
            Some(http::header::CONTENT_TYPE)
        } else {
            None
        };
        let Some(n) = header else { continue };
        // Shares the param's buffer rather than copying the value.
        if let Ok(v) = HeaderValue::from_maybe_shared(value.clone()) {
            headers.append(n, v);
        }
    }
    let content_length = match find("CONTENT_LENGTH") {
        Some(v) if !v.is_empty() => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ParamsError::ContentLength)?,
        ),
        _ => None,
    };
    if let Some(n) = content_length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let version = match find("SERVER_PROTOCOL").map(|v| v.as_ref()) {
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some(b"HTTP/2.0") | Some(b"HTTP/2") => Version::HTTP_2,
        Some(b"HTTP/3.0") | Some(b"HTTP/3") => Version::HTTP_3,
        _ => Version::HTTP_11,
    };
    fn text(b: Option<&Bytes>) -> Option<&str> {
        b.and_then(|v| std::str::from_utf8(v).ok())
    }
    let port = |b: Option<&Bytes>| text(b).and_then(|p| p.parse::<u16>().ok());
    let local = Endpoint {
        addr: text(find("SERVER_ADDR")).map_or(socket_local.addr, Into::into),
        port: port(find("SERVER_PORT")).or(socket_local.port),
    };
    let peer = Endpoint {
        addr: text(find("REMOTE_ADDR")).map_or(socket_peer.addr, Into::into),
        port: port(find("REMOTE_PORT")).or(socket_peer.port),
    };
    let tls = find("HTTPS").is_some_and(|v| v.eq_ignore_ascii_case(b"on") || v.as_ref() == b"1")
        || find("REQUEST_SCHEME").is_some_and(|v| v.as_ref() == b"https");
    Ok(Request {
        method,
        target,
        path,
        query,
        version,
        headers,
        local,
        peer,
        tls,
        params,
        redirected: None,
        stderr: None,
        body,
    })
}

/// `X_FORWARDED_FOR` → `x-forwarded-for`; `None` if that is no header name.
fn header_name_of(var: &[u8]) -> Option<HeaderName> {
    let lower = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    // Spelled out on the stack: a name is nearly always short.
    let mut buf = [0u8; 64];
    match buf.get_mut(..var.len()) {
        Some(dst) => {
            for (d, &b) in dst.iter_mut().zip(var) {
                *d = lower(b);
            }
            HeaderName::from_bytes(dst).ok()
        }
        None => HeaderName::from_bytes(&var.iter().map(|&b| lower(b)).collect::<Vec<u8>>()).ok(),
    }
}

/// Percent-encodes what cannot stand literally in a path (so that decoding gives the
/// bytes back): `%`, `?`, `#`, controls, space and non-ASCII. `/` stays.
pub fn percent_encode_path(decoded: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(decoded.len());
    for &b in decoded {
        if b <= 0x20 || b >= 0x7f || b == b'%' || b == b'?' || b == b'#' {
            out.push(b'%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        pairs
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.to_string())))
            .collect()
    }

    #[test]
    fn nginx_style_params_become_a_request() {
        let params = p(&[
            ("QUERY_STRING", "a=1"),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "5"),
            ("SCRIPT_NAME", "/cgi-bin/env.pl"),
            ("PATH_INFO", "/x y"),
            ("REQUEST_URI", "/cgi-bin/env.pl/x%20y?a=1"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("REMOTE_ADDR", "10.1.2.3"),
            ("REMOTE_PORT", "5555"),
            ("SERVER_ADDR", "10.0.0.1"),
            ("SERVER_PORT", "80"),
            ("HTTPS", "on"),
            ("HTTP_X_FORWARDED_FOR", "1.1.1.1"),
            ("HTTP_PROXY", "http://evil"),
            ("DOCUMENT_ROOT", "/srv"),
        ]);
        let r = request_from_params(
            params,
            Endpoint::default(),
            Endpoint::default(),
            Body::empty(),
        )
        .unwrap();
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path.as_ref(), b"/cgi-bin/env.pl/x%20y");
        assert_eq!(r.query.as_ref(), b"a=1");
        assert_eq!(r.target.as_ref(), b"/cgi-bin/env.pl/x%20y?a=1");
        assert_eq!(r.version, Version::HTTP_10);
        assert_eq!(r.headers["x-forwarded-for"], "1.1.1.1");
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.headers["content-length"], "5");
        assert!(!r.headers.contains_key("proxy"));
        assert_eq!(
            r.peer,
            Endpoint {
                addr: "10.1.2.3".into(),
                port: Some(5555)
            }
        );
        assert!(r.tls);
        assert_eq!(
            r.param(b"DOCUMENT_ROOT").map(|v| v.as_ref()),
            Some(&b"/srv"[..])
        );
    }

    #[test]
    fn falls_back_to_request_uri() {
        let r = request_from_params(
            p(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/a/b?c")]),
            Endpoint::default(),
            Endpoint::default(),
            Body::empty_unframed(),
        )
        .unwrap();
        assert_eq!(r.path.as_ref(), b"/a/b");
    }

    #[test]
    fn refuses_missing_method_path_and_bad_length() {
        let none = || (Endpoint::default(), Endpoint::default(), Body::empty());
        let (l, pe, b) = none();
        assert_eq!(
            request_from_params(p(&[("REQUEST_URI", "/")]), l, pe, b).unwrap_err(),
            ParamsError::Method
        );
        let (l, pe, b) = none();
        assert_eq!(
            request_from_params(p(&[("REQUEST_METHOD", "GET")]), l, pe, b).unwrap_err(),
            ParamsError::Path
        );
        let (l, pe, b) = none();
        assert_eq!(
            request_from_params(
                p(&[
                    ("REQUEST_METHOD", "GET"),
                    ("REQUEST_URI", "/"),
                    ("CONTENT_LENGTH", "x")
                ]),
                l,
                pe,
                b
            )
            .unwrap_err(),
            ParamsError::ContentLength
        );
    }

    #[test]
    fn path_encoding_round_trips_reserved_bytes() {
        assert_eq!(
            percent_encode_path(b"/a b/%/?#/\xff"),
            b"/a%20b/%25/%3F%23/%FF"
        );
    }
}
