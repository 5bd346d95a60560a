//! The model-to-CGI step: one pure function from a [`Request`] and what the route decided
//! (script name, path info, file names) to the CGI meta-variables a backend sends.
//!
//! The rules themselves (which variables, `HTTP_*` mapping, httpoxy, header-name
//! collisions) live in `proto::cgi::meta`; this file only gathers the inputs.
//! Must not import rt, listen or backend.

use http::Version;
use proto::cgi::meta as cgi;

use crate::model::Request;

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The configured `[server].name` (SERVER_NAME without a usable Host).
    pub name: String,
    /// SERVER_SOFTWARE.
    pub software: String,
}

/// What the route decided about the script.
#[derive(Debug, Clone, Copy, Default)]
pub struct Script<'a> {
    /// SCRIPT_NAME: the URL path of the script (decoded).
    pub script_name: &'a [u8],
    /// PATH_INFO (decoded), if the path went past the script.
    pub path_info: Option<&'a [u8]>,
    /// PATH_TRANSLATED, when PATH_INFO is set.
    pub path_translated: Option<&'a [u8]>,
    /// DOCUMENT_ROOT.
    pub document_root: Option<&'a [u8]>,
    /// SCRIPT_FILENAME: the script's file-system path.
    pub script_filename: Option<&'a [u8]>,
}

/// The CGI meta-variables for `req` run as `script`, in a stable order.
///
/// `content_length` is the body length the backend will deliver (after spooling a
/// chunked body); `None` means the request has no body framing (CGI-AMB-4).
pub fn variables(
    req: &Request,
    script: &Script<'_>,
    server: &ServerInfo,
    content_length: Option<u64>,
    opts: &cgi::HeaderOptions,
) -> Result<Vec<(String, Vec<u8>)>, cgi::Error> {
    let headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let server_name = host_name(req).unwrap_or(&server.name);
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes());
    let param = |name: &str| req.param(name.as_bytes()).map(|v| v.as_ref());
    let protocol = match req.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let info = cgi::RequestInfo {
        method: req.method.as_str(),
        request_uri: &req.target,
        query_string: &req.query,
        script_name: script.script_name,
        path_info: script.path_info,
        path_translated: script.path_translated,
        server_name,
        server_port: req.local.port.unwrap_or(if req.tls { 443 } else { 80 }),
        server_addr: Some(&*req.local.addr).filter(|a| !a.is_empty()),
        server_protocol: protocol,
        server_software: &server.software,
        remote_addr: &req.peer.addr,
        remote_port: req.peer.port,
        remote_user: param("REMOTE_USER"),
        auth_type: param("AUTH_TYPE"),
        https: req.tls,
        content_length,
        content_type,
        document_root: script.document_root,
        script_filename: script.script_filename,
        // CGI-RW-3: php-cgi refuses to run without REDIRECT_STATUS; lighttpd sets 200 on
        // every request.
        redirect_status: Some(200),
        redirect_url: req.redirected.as_ref().map(|r| r.url.as_ref()),
        redirect_query_string: req.redirected.as_ref().map(|r| r.query.as_ref()),
        headers: &headers,
    };
    let mut vars = cgi::meta_variables(&info, opts)?;
    // Params a web server sent that portico did not compute itself pass through
    // (DOCUMENT_ROOT of the front server, HTTPS, REMOTE_USER …), the first of a name
    // once; HTTP_* params already became headers. (A linear search: names differ in
    // length mostly, so each comparison is cheap; a sorted set cost more, callgrind.)
    for (name, value) in &req.params {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.starts_with("HTTP_") || vars.iter().any(|(n, _)| n == name) {
            continue;
        }
        vars.push((name.to_owned(), value.to_vec()));
    }
    Ok(vars)
}

/// The Host header's name part when it is a plausible host name (CGI-AMB-11).
fn host_name(req: &Request) -> Option<&str> {
    let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next()?
    } else {
        host.split(':').next()?
    };
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn front_server_params_pass_through_once_without_overriding_computed_ones() {
        let mut req = Request::new(Method::GET, b"/x");
        let param = |n: &[u8], v: &[u8]| {
            (
                bytes::Bytes::copy_from_slice(n),
                bytes::Bytes::copy_from_slice(v),
            )
        };
        req.params = vec![
            param(b"DOCUMENT_ROOT", b"/front/root"),
            param(b"REQUEST_METHOD", b"POST"),
            param(b"HTTP_X_FROM_PARAM", b"no"),
            param(b"HTTPS", b"on"),
            param(b"HTTPS", b"off"),
            param(b"\xff\xfe", b"bad name"),
            param(b"FRONT_ONLY", b"yes"),
        ];
        let server = ServerInfo {
            name: "gw".into(),
            software: "portico".into(),
        };
        let script = Script {
            script_name: b"/x",
            ..Script::default()
        };
        let vars = variables(&req, &script, &server, None, &cgi::HeaderOptions::default())
            .expect("variables");
        let all = |n: &str| {
            vars.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
        };
        // Computed by portico: the front server's value does not replace it.
        assert_eq!(all("REQUEST_METHOD"), ["GET"]);
        // Not computed here (no document root on this route): passed through.
        assert_eq!(all("DOCUMENT_ROOT"), ["/front/root"]);
        // The first of a repeated name, once.
        assert_eq!(all("HTTPS"), ["on"]);
        assert_eq!(all("FRONT_ONLY"), ["yes"]);
        // HTTP_* params already became headers; a name that is not UTF-8 is dropped.
        assert!(all("HTTP_X_FROM_PARAM").is_empty());
        assert_eq!(
            vars.iter().filter(|(k, _)| k.contains('\u{fffd}')).count(),
            0
        );
        let mut names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name twice: {vars:?}");
    }

    #[test]
    fn cgi_amb_11_server_name_from_host_without_port() {
        let mut req = Request::new(Method::GET, b"/x");
        req.headers
            .insert(http::header::HOST, "example.org:8080".parse().unwrap());
        assert_eq!(host_name(&req), Some("example.org"));
        req.headers
            .insert(http::header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(host_name(&req), Some("[::1]"));
        req.headers
            .insert(http::header::HOST, "bad host/x".parse().unwrap());
        assert_eq!(host_name(&req), None);
    }
}
