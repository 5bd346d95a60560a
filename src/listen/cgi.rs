//! CGI in: portico executed as a CGI program by a web server that only speaks CGI
//! (lighttpd mod_cgi, Apache mod_cgi). The environment and stdin become one request,
//! routed like any other (to a FastCGI pool, an in-process handler, a CGI script …); the
//! response goes to stdout in CGI form. The job of the FastCGI kit's `cgi-fcgi`,
//! generalised.
//!
//! The path routed on is `PATH_INFO` (what follows portico's own script name), so a
//! route `prefix = "/app/"` serves `/cgi-bin/portico.cgi/app/x`. Must not import backend
//! or route.

use std::io;
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;

use super::cgi_head;
use super::params::{percent_encode_path, request_from_params};
use crate::dispatch::{Dispatcher, error_page};
use crate::model::{Body, Endpoint};
use crate::rt::{self, AsyncReadExt, AsyncWriteExt};

/// Whether the process environment says a web server ran us as a CGI program.
pub fn detected() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some_and(|v| v.as_bytes().starts_with(b"CGI/"))
        && std::env::var_os("REQUEST_METHOD").is_some()
}

/// Serves the one request of this process.
pub async fn serve_once(dispatcher: &Dispatcher) -> io::Result<()> {
    let env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let mut stdout = rt::stdout();
    let parsed = proto::cgi::env::parse_env(env.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let resp = match parsed {
        Err(e) => {
            log::error!(target: "portico::listen::cgi", "not a valid CGI environment: {e} ({})", e.clause());
            error_page(http::StatusCode::INTERNAL_SERVER_ERROR)
        }
        Ok(req) => {
            let content_length = req.content_length;
            // Only the request's meta-variables become params; the web server's own
            // environment (PATH, HOME …) stays here.
            let mut params: Vec<(Bytes, Bytes)> = env
                .iter()
                .filter(|(k, _)| is_request_variable(k))
                .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
                .collect();
            // Route on PATH_INFO: what follows portico's own SCRIPT_NAME.
            let path_info = req.path_info.unwrap_or(b"/");
            let path_info = if path_info.is_empty() {
                &b"/"[..]
            } else {
                path_info
            };
            params.retain(|(k, _)| k.as_ref() != b"SCRIPT_NAME" && k.as_ref() != b"REQUEST_URI");
            let mut uri = percent_encode_path(path_info);
            if !req.query_string.is_empty() {
                uri.push(b'?');
                uri.extend_from_slice(req.query_string);
            }
            params.push((Bytes::from_static(b"REQUEST_URI"), Bytes::from(uri)));
            let body = match content_length {
                None => Body::empty_unframed(),
                Some(0) => Body::empty(),
                Some(n) => {
                    // Stdin is read as the backend asks for it, up to CONTENT_LENGTH
                    // (CGI-4.2-2: the script must not read past it; the reader itself
                    // stops there, read-ahead included).
                    let mut stdin = rt::stdin(n);
                    let (tx, rx) = rt::channel::bounded::<io::Result<Bytes>>(4);
                    drop(rt::spawn(async move {
                        let mut left = n;
                        let mut buf = vec![0u8; 64 * 1024];
                        while left > 0 {
                            let want =
                                usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                            let chunk = match stdin.read(&mut buf[..want]).await {
                                Ok(0) => Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "stdin shorter than CONTENT_LENGTH",
                                )),
                                Ok(k) => Ok(Bytes::copy_from_slice(&buf[..k])),
                                Err(e) => Err(e),
                            };
                            let stop = chunk.is_err();
                            if let Ok(c) = &chunk {
                                left -= c.len() as u64;
                            }
                            if tx.send(chunk).await.is_err() || stop {
                                break;
                            }
                        }
                    }));
                    Body::from_stream(Some(n), rx)
                }
            };
            let local = Endpoint::default();
            let peer = Endpoint::default();
            match request_from_params(params, local, peer, body) {
                Ok(r) => dispatcher.dispatch(r).await,
                Err(e) => {
                    log::error!(target: "portico::listen::cgi", "{e}");
                    error_page(http::StatusCode::BAD_REQUEST)
                }
            }
        }
    };
    let sent = async {
        stdout.write_all(&cgi_head(&resp)).await?;
        let mut body = resp.body;
        while let Some(chunk) = body.chunk().await {
            stdout.write_all(&chunk?).await?;
        }
        Ok::<(), io::Error>(())
    }
    .await;
    // Flushed whatever happened: what was written before a failed body chunk goes out
    // (the writes only handed it to the blocking pool).
    let flushed = stdout.flush().await;
    sent.and(flushed)
}

/// The variables a web server sets for a request (RFC 3875 §4.1 and the de facto ones),
/// as opposed to its own environment.
fn is_request_variable(name: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"AUTH_TYPE",
        b"CONTENT_LENGTH",
        b"CONTENT_TYPE",
        b"GATEWAY_INTERFACE",
        b"PATH_INFO",
        b"PATH_TRANSLATED",
        b"QUERY_STRING",
        b"HTTPS",
        b"DOCUMENT_ROOT",
        b"UNIQUE_ID",
    ];
    const PREFIXES: &[&[u8]] = &[
        b"HTTP_",
        b"REMOTE_",
        b"REQUEST_",
        b"SCRIPT_",
        b"SERVER_",
        b"SSL_",
        b"REDIRECT_",
        b"CONTEXT_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}
