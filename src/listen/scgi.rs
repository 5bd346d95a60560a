//! The SCGI listener (portico as the SCGI server behind `scgi_pass`): a netstring header,
//! the body, a CGI-style reply, close (SCGI §2–3). A malformed netstring is answered with
//! a 400 reply in CGI form and a log line naming the clause.
//!
//! Must not import backend or route.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use proto::Status;

use super::params::request_from_params;
use super::{Conn, Listener, cgi_head};
use crate::config::Scgi;
use crate::dispatch::{Dispatcher, error_page};
use crate::model::{Body, Endpoint, Response};
use crate::rt::{self, AsyncRead, AsyncWriteExt};

/// Accepts SCGI connections until `shutdown`.
pub async fn serve(
    listener: Listener,
    dispatcher: Arc<Dispatcher>,
    settings: Arc<Scgi>,
    shutdown: rt::Shutdown,
    tracker: rt::Tracker,
) {
    super::accept_loop(listener, settings.max_connections, shutdown, tracker, move |conn, local, peer| {
        let dispatcher = dispatcher.clone();
        let settings = settings.clone();
        Some(async move {
            if let Err(e) = connection(conn, local, peer.clone(), &dispatcher, &settings).await {
                log::debug!(target: "portico::listen::scgi", "connection from {}: {e}", peer.addr);
            }
        })
    })
    .await;
}

async fn connection(
    mut conn: Conn,
    local: Endpoint,
    peer: Endpoint,
    dispatcher: &Dispatcher,
    settings: &Scgi,
) -> io::Result<()> {
    let limits = proto::scgi::Limits {
        max_header_bytes: settings.max_header_bytes,
        max_headers: settings.max_headers,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let head = rt::coarse::timeout(settings.header_timeout, async {
        loop {
            match proto::scgi::parse_request(&buf, &limits) {
                Ok(Status::Complete((req, used))) => {
                    let params: Vec<(Bytes, Bytes)> = req
                        .headers
                        .iter()
                        .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                        .collect();
                    return Ok(Ok((params, req.content_length, used)));
                }
                Ok(Status::Partial) => {}
                Err(e) => return Ok(Err(e)),
            }
            let n = rt::read_appending(&mut conn, &mut buf, 8192).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the SCGI header",
                ));
            }
        }
    })
    .await;
    let (params, content_length, used) = match head {
        Err(rt::Elapsed) => {
            log::info!(target: "portico::listen::scgi", "{}: no complete SCGI header within {:?}", peer.addr, settings.header_timeout);
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(e))) => {
            log::warn!(target: "portico::listen::scgi", "{}: malformed SCGI request ({}): {e}", peer.addr, e.clause());
            let resp = error_page(http::StatusCode::BAD_REQUEST);
            return reply(&mut conn, resp).await;
        }
        Ok(Ok(Ok(h))) => h,
    };
    // The body: what followed the header in the buffer, then the socket, up to
    // CONTENT_LENGTH (SCGI-3: the body is exactly that long).
    let leftover = Bytes::copy_from_slice(buf.get(used..).unwrap_or_default());
    let body = if content_length == 0 {
        Body::empty()
    } else {
        Body::from_stream(
            Some(content_length),
            BodyReader {
                conn: conn.clone(),
                leftover: Some(leftover),
                remaining: content_length,
                buf: Vec::new(),
            },
        )
    };
    let resp = match request_from_params(params, local, peer.clone(), body) {
        Ok(req) => dispatcher.dispatch(req).await,
        Err(e) => {
            log::warn!(target: "portico::listen::scgi", "{}: {e}", peer.addr);
            error_page(http::StatusCode::BAD_REQUEST)
        }
    };
    reply(&mut conn, resp).await
}

/// Writes the response in CGI form and closes (SCGI closes per request).
async fn reply(conn: &mut Conn, resp: Response) -> io::Result<()> {
    conn.write_all(&cgi_head(&resp)).await?;
    let mut body = resp.body;
    while let Some(chunk) = body.chunk().await {
        conn.write_all(&chunk?).await?;
    }
    conn.flush().await?;
    conn.close().await
}

/// Reads the request body from the socket, at most `remaining` bytes.
struct BodyReader {
    conn: Conn,
    leftover: Option<Bytes>,
    remaining: u64,
    buf: Vec<u8>,
}

impl futures_lite::Stream for BodyReader {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(mut l) = self.leftover.take()
            && !l.is_empty()
        {
            let take = l
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            let first = l.split_to(take);
            self.remaining -= first.len() as u64;
            return Poll::Ready(Some(Ok(first)));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(self.remaining.min(64 * 1024)).unwrap_or(64 * 1024);
        let this = &mut *self;
        this.buf.resize(want, 0);
        match Pin::new(&mut this.conn).poll_read(cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(0)) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "SCGI body shorter than CONTENT_LENGTH",
            )))),
            Poll::Ready(Ok(n)) => {
                let chunk = Bytes::copy_from_slice(this.buf.get(..n).unwrap_or_default());
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
        }
    }
}
