//! The one CGI response head step shared by every backend that answers in CGI form (CGI
//! stdout, FastCGI stdout, SCGI replies): a head parsed by `proto::cgi::response` becomes
//! the model's status and headers, or a local redirect (ARCHITECTURE §2).
//!
//! Must not import listen or dispatch.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use proto::cgi::response::{self, Limits, ResponseHead, ResponseKind};

/// What the head says, owned, for a backend to answer with.
pub(crate) enum Head {
    LocalRedirect(Bytes),
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: BodyMode,
    },
}

/// What happens to the script's output after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyMode {
    /// Streamed to the client.
    Stream,
    /// Read and discarded; the client gets an empty body (client redirect).
    Empty,
    /// Read and discarded; the client gets no body at all (HEAD, local redirect).
    Discard,
}

impl Head {
    pub(crate) fn mode(&self) -> BodyMode {
        match self {
            Head::LocalRedirect(_) => BodyMode::Discard,
            Head::Response { body, .. } => *body,
        }
    }

    /// Whether the head itself frames the body (Content-Length or Transfer-Encoding), so
    /// the gateway must not frame it differently.
    pub(crate) fn frames_body(&self) -> bool {
        match self {
            Head::LocalRedirect(_) => false,
            Head::Response { headers, .. } => {
                headers.contains_key(header::CONTENT_LENGTH)
                    || headers.contains_key(header::TRANSFER_ENCODING)
            }
        }
    }
}

/// How a head is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadOptions {
    /// The output is an NPH response (an HTTP status line first).
    pub(crate) nph: bool,
    /// The request was HEAD: the body is discarded.
    pub(crate) head_only: bool,
    /// Limits of the head parser.
    pub(crate) limits: Limits,
}

/// The client-side head for a parsed script head.
pub(crate) fn build_head(h: &ResponseHead<'_>, opts: &HeadOptions) -> Result<Head, String> {
    let streamed = if opts.head_only {
        // CGI-4.3.3-2: a body sent for HEAD is discarded.
        BodyMode::Discard
    } else {
        BodyMode::Stream
    };
    let mut headers = HeaderMap::new();
    if opts.nph {
        // CGI-5.2-4: relayed as they are, as far as the HTTP layer lets us. It frames the
        // body and owns the connection, so hop-by-hop fields are its business;
        // Content-Length is kept and used for framing.
        let code = h.status.unwrap_or(200);
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|s| !s.is_informational())
            .ok_or_else(|| format!("NPH status {code} cannot be relayed"))?;
        for &(name, value) in &h.headers {
            if name.eq_ignore_ascii_case(b"Transfer-Encoding") {
                return Err("NPH script sent Transfer-Encoding, which cannot be relayed".into());
            }
            if response::is_server_owned(name) && !name.eq_ignore_ascii_case(b"Content-Length") {
                continue;
            }
            append(&mut headers, name, value)?;
        }
        return Ok(Head::Response {
            status,
            headers,
            body: streamed,
        });
    }
    let kind = h
        .kind()
        .map_err(|e| format!("malformed response head: {e}"))?;
    if kind == ResponseKind::LocalRedirect {
        // CGI-6.2.2-3: the dispatcher serves the target; the rest is discarded.
        let location = h.location.ok_or("local redirect without Location")?;
        return Ok(Head::LocalRedirect(Bytes::copy_from_slice(location)));
    }
    let code = h.status_code();
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("status {code} cannot be relayed"))?;
    if let Some(location) = h.location {
        append(&mut headers, header::LOCATION.as_str().as_bytes(), location)?;
    }
    if let Some(content_type) = h.content_type {
        append(
            &mut headers,
            header::CONTENT_TYPE.as_str().as_bytes(),
            content_type,
        )?;
    }
    for &(name, value) in &h.headers {
        // CGI-RW-8, CGI-6.3.4-4: the server frames the body and owns the connection.
        if response::is_server_owned(name) {
            continue;
        }
        append(&mut headers, name, value)?;
    }
    let body = match kind {
        // CGI-6.2.3-2: a client redirect has no body; whatever follows is discarded.
        ResponseKind::ClientRedirect if opts.head_only => BodyMode::Discard,
        ResponseKind::ClientRedirect => BodyMode::Empty,
        _ => streamed,
    };
    Ok(Head::Response {
        status,
        headers,
        body,
    })
}

/// Appends a field, keeping duplicates (several `Set-Cookie`) in order.
pub(crate) fn append(headers: &mut HeaderMap, name: &[u8], value: &[u8]) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    let name =
        HeaderName::from_bytes(name).map_err(|_| format!("invalid field name {}", shown()))?;
    let value = HeaderValue::from_bytes(value)
        .map_err(|_| format!("invalid value of field {}", name.as_str()))?;
    headers.append(name, value);
    Ok(())
}
