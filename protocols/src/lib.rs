//! Sans-IO codecs for the CGI family: FastCGI 1.0, SCGI and CGI/1.1 (RFC 3875).
//!
//! This crate turns bytes into protocol values and values into bytes. It does no I/O:
//! no sockets, files, processes, clocks or async. Callers feed it the bytes they read
//! and send the bytes it writes into their buffers; where a rule needs the world (the
//! CGI `PATH_INFO` split needs to know which paths are scripts), the caller passes a
//! lookup function.
//!
//! Clause IDs such as `FCGI-3.3-2` refer to the digests in the project's `shared/specs/`.
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
