//! Sans-IO codecs for the CGI family: FastCGI 1.0, SCGI and CGI/1.1 (RFC 3875).
//!
//! This crate turns bytes into protocol values and values into bytes:
//!
//! * [`fastcgi`]: records, name-value pairs, and the two connection machines,
//!   [`fastcgi::server::Conn`] (the application side, what a web server talks to) and
//!   [`fastcgi::client::Conn`] (the web-server side, decoding an application's reply);
//! * [`scgi`]: the netstring request head, both directions;
//! * [`cgi`]: meta-variables, the script environment and the script's response head.
//!
//! What it deliberately does not do:
//!
//! * **no I/O**: no sockets, pipes, processes or async runtime. Callers feed it the
//!   bytes they read and send the bytes it writes into their buffers; every parser
//!   accepts input cut at any byte and says "read more" ([`Status::Partial`]) rather
//!   than block.
//! * **no clock**: no timeouts or timestamps; time limits are the caller's.
//! * **no filesystem**: where a rule needs the world (the CGI `PATH_INFO` split needs to
//!   know which paths are scripts), the caller passes a lookup function.
//!
//! Clause IDs such as `FCGI-3.3-2` refer to the digests in the project's `shared/specs/`;
//! every error names the clause it breaks.
//!
//! # Example
//!
//! Decoding what nginx 1.22 really sent to its FastCGI backend for
//! `GET /app/index.php?a=1&b=two%20words` (captured by `fixtures/capture/capture.sh`):
//!
//! ```
//! use portico_protocols::fastcgi::Role;
//! use portico_protocols::fastcgi::server::{Conn, Event};
//!
//! let bytes = include_bytes!("../../fixtures/records/nginx-get-params.bin");
//! let mut conn = Conn::default();
//! conn.handle_read(bytes)?;
//!
//! // BEGIN_REQUEST: a Responder, request ID 1, close after the response.
//! let begin = conn.poll_event();
//! assert_eq!(
//!     begin,
//!     Some(Event::BeginRequest { id: 1, role: Role::RESPONDER, keep_conn: false })
//! );
//! // The whole PARAMS stream, decoded once its empty record arrived.
//! let Some(Event::Params { id: 1, params }) = conn.poll_event() else {
//!     panic!("PARAMS follow BEGIN_REQUEST");
//! };
//! for (name, value) in &params {
//!     println!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(value));
//! }
//! assert_eq!(params.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
//! assert_eq!(params.get(b"QUERY_STRING"), Some(&b"a=1&b=two%20words"[..]));
//! assert_eq!(params.get(b"CONTENT_LENGTH"), Some(&b""[..])); // nginx sends it empty
//! // No body: the empty STDIN record ends the request's input.
//! assert_eq!(conn.poll_event(), Some(Event::StdinEnd { id: 1 }));
//! assert_eq!(conn.poll_event(), None);
//! # Ok::<(), portico_protocols::fastcgi::Error>(())
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod cgi;
pub mod fastcgi;
pub mod scgi;

/// The result of an incremental parse: the value, or "read more bytes".
///
/// `Partial` is never an error: the input seen so far is a valid prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A complete value was parsed.
    Complete(T),
    /// More input is needed before a value can be produced.
    Partial,
}

impl<T> Status<T> {
    /// Returns `true` for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(_))
    }

    /// Converts into an `Option`, dropping the distinction of why nothing came.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(v) => Some(v),
            Status::Partial => None,
        }
    }
}
