//! FastCGI 1.0 records and connection machines.
//!
//! Everything on a FastCGI connection is a record (FCGI-3.3-1): an 8-byte
//! [`Header`](record::Header), `content_length` bytes of content and
//! `padding_length` bytes of padding. This module splits the work the way
//! the bytes flow:
//!
//! ```text
//!  bytes ──▶ record::parse_record ──▶ Record { header, content: &[u8] }      (frame first)
//!                                        │
//!            ┌───────────────────────────┼──────────────────────────────┐
//!            ▼                           ▼                              ▼
//!   body::BeginRequestBody      nv::NameValues (PARAMS,            raw bytes (STDIN, DATA,
//!   body::EndRequestBody        GET_VALUES[_RESULT])               STDOUT, STDERR)
//!   body::UnknownTypeBody                                                           (content second)
//!            │                           │                              │
//!            └──────────────┬────────────┴──────────────────────────────┘
//!                           ▼
//!        server::Conn (application side)      client::Conn (web-server side)
//!        handle_read ─▶ poll_event             handle_read ─▶ poll_event
//!        write_stdout / end_request            client::Request::encode, RawRecord
//!        ─▶ poll_transmit ─▶ bytes              ─▶ bytes
//! ```
//!
//! * [`record`]: the header, the wire-code newtypes ([`RecordType`], [`Role`],
//!   [`ProtocolStatus`]), framing and stream encoding.
//! * [`body`]: the three fixed 8-byte bodies.
//! * [`nv`]: name-value pairs (FCGI-3.4) and the GET_VALUES helpers.
//! * [`server`]: the application-side connection machine (portico's FastCGI listener).
//! * [`client`]: the web-server-side encoders and response decoder (probe, decode).
//!
//! Nothing here does I/O; the machines take the bytes the caller read and hand
//! back the bytes the caller should write.
//!
//! # Example
//!
//! ```
//! use portico_protocols::Status;
//! use portico_protocols::fastcgi::{parse_record, RecordType};
//!
//! // FCGI-5.1-2: BEGIN_REQUEST, Responder, KEEP_CONN, request 1.
//! let bytes = b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0";
//! let Status::Complete((record, used)) = parse_record(bytes)? else { panic!() };
//! assert_eq!(used, 16);
//! assert_eq!(record.header.record_type, RecordType::BEGIN_REQUEST);
//! assert_eq!(record.content, b"\x00\x01\x01\0\0\0\0\0");
//! # Ok::<(), portico_protocols::fastcgi::Error>(())
//! ```

use std::fmt;

pub mod body;
pub mod client;
pub mod nv;
pub mod record;
pub mod server;

pub use body::{BeginRequestBody, EndRequestBody, KEEP_CONN, UnknownTypeBody};
pub use nv::{NameValues, ParamBlock, encode_pair};
pub use record::{
    HEADER_LEN, Header, MAX_CONTENT_LEN, ProtocolStatus, Record, RecordBuf, RecordType, Records,
    Role, VERSION_1, encode_record, encode_stream, parse_header, parse_record,
};

/// A FastCGI protocol violation (or misuse of a connection machine).
///
/// Each variant names the clause it breaks through [`Error::clause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// A record header carries a version other than `FCGI_VERSION_1`.
    UnsupportedVersion(u8),
    /// A BEGIN_REQUEST record whose content is not exactly 8 bytes long.
    BeginRequestBodyLength(u16),
    /// An END_REQUEST record whose content is not exactly 8 bytes long.
    EndRequestBodyLength(u16),
    /// An UNKNOWN_TYPE record whose content is not exactly 8 bytes long.
    UnknownTypeBodyLength(u16),
    /// A name-value pair is truncated: a length or its data runs past the end.
    MalformedNameValue,
    /// A record type travelled in the direction the spec forbids for it.
    WrongDirection(RecordType),
    /// A management type with a nonzero request ID, or an application type with ID 0.
    WrongRequestId {
        /// The record's type.
        record_type: RecordType,
        /// The record's request ID.
        request_id: u16,
    },
    /// A BEGIN_REQUEST for a request ID that is already active.
    DuplicateRequest(u16),
    /// A stream record arrived after that stream's terminating empty record.
    StreamAfterEnd {
        /// The request ID.
        request_id: u16,
        /// The stream's record type.
        record_type: RecordType,
    },
    /// An input stream began before the one that must precede it had ended.
    StreamOutOfOrder {
        /// The request ID.
        request_id: u16,
        /// The stream's record type.
        record_type: RecordType,
    },
    /// A request ended while one of its output streams was left unterminated.
    UnterminatedStream {
        /// The request ID.
        request_id: u16,
        /// The stream's record type (STDOUT or STDERR).
        record_type: RecordType,
    },
    /// A request's PARAMS stream exceeded the configured size limit.
    ParamsTooLarge(u16),
    /// A record or command named a request ID that is not active.
    InactiveRequest(u16),
    /// Output was written before the request's inputs it must follow had ended.
    OutputBeforeInput(u16),
    /// A parameter name or value contains a NUL byte.
    NulInParam,
    /// A parameter the web server must withhold from an Authorizer was sent to one.
    WithheldFromAuthorizer,
    /// A Filter request lacks `FCGI_DATA_LAST_MOD` or `FCGI_DATA_LENGTH`.
    MissingFilterParam,
    /// More STDIN bytes than `CONTENT_LENGTH` announces.
    StdinTooLong,
    /// More DATA bytes than `FCGI_DATA_LENGTH` announces.
    DataTooLong,
}

impl Error {
    /// The clause ID (see `shared/specs/fastcgi.md`) this violation breaks.
    ///
    /// ```
    /// use portico_protocols::fastcgi::Error;
    /// assert_eq!(Error::UnsupportedVersion(2).clause(), "FCGI-3.3-3");
    /// ```
    pub fn clause(&self) -> &'static str {
        match self {
            Error::UnsupportedVersion(_) => "FCGI-3.3-3",
            Error::BeginRequestBodyLength(_) => "FCGI-5.1-2",
            Error::EndRequestBodyLength(_) => "FCGI-5.5-2",
            Error::UnknownTypeBodyLength(_) => "FCGI-4.2-2",
            Error::MalformedNameValue => "FCGI-3.4-1",
            Error::WrongDirection(_) => "FCGI-A-1",
            Error::WrongRequestId { .. } => "FCGI-A-2",
            Error::DuplicateRequest(_) => "FCGI-AMB-14",
            Error::StreamAfterEnd { .. } => "FCGI-3.3-16",
            Error::StreamOutOfOrder { .. } => "FCGI-6.1-2",
            Error::UnterminatedStream { record_type, .. } => {
                if *record_type == RecordType::STDOUT {
                    "FCGI-6.1-7"
                } else {
                    "FCGI-3.3-16"
                }
            }
            Error::ParamsTooLarge(_) => "FCGI-AMB-5",
            Error::InactiveRequest(_) => "FCGI-3.3-9",
            Error::OutputBeforeInput(_) => "FCGI-6.1-8",
            Error::NulInParam => "FCGI-6.1-9",
            Error::WithheldFromAuthorizer => "FCGI-6.3-3",
            Error::MissingFilterParam => "FCGI-6.4-3",
            Error::StdinTooLong => "FCGI-6.2-4",
            Error::DataTooLong => "FCGI-6.4-4",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedVersion(v) => write!(f, "unsupported FastCGI version {v}"),
            Error::BeginRequestBodyLength(n) => {
                write!(f, "BEGIN_REQUEST content is {n} bytes, expected 8")
            }
            Error::EndRequestBodyLength(n) => {
                write!(f, "END_REQUEST content is {n} bytes, expected 8")
            }
            Error::UnknownTypeBodyLength(n) => {
                write!(f, "UNKNOWN_TYPE content is {n} bytes, expected 8")
            }
            Error::MalformedNameValue => f.write_str("truncated name-value pair"),
            Error::WrongDirection(t) => write!(f, "{t} sent in the wrong direction"),
            Error::WrongRequestId {
                record_type,
                request_id,
            } => write!(f, "{record_type} with request ID {request_id}"),
            Error::DuplicateRequest(id) => write!(f, "BEGIN_REQUEST for active request {id}"),
            Error::StreamAfterEnd {
                request_id,
                record_type,
            } => write!(f, "{record_type} for request {request_id} after its end"),
            Error::StreamOutOfOrder {
                request_id,
                record_type,
            } => write!(
                f,
                "{record_type} for request {request_id} before the previous input stream ended"
            ),
            Error::UnterminatedStream {
                request_id,
                record_type,
            } => write!(
                f,
                "request {request_id} ended without the empty {record_type} record"
            ),
            Error::ParamsTooLarge(id) => write!(f, "PARAMS of request {id} exceed the limit"),
            Error::InactiveRequest(id) => write!(f, "request {id} is not active"),
            Error::OutputBeforeInput(id) => {
                write!(f, "output for request {id} before its inputs ended")
            }
            Error::NulInParam => f.write_str("NUL byte in a parameter"),
            Error::WithheldFromAuthorizer => f.write_str(
                "CONTENT_LENGTH, PATH_INFO, PATH_TRANSLATED or SCRIPT_NAME sent to an Authorizer",
            ),
            Error::MissingFilterParam => {
                f.write_str("Filter request without FCGI_DATA_LAST_MOD and FCGI_DATA_LENGTH")
            }
            Error::StdinTooLong => f.write_str("STDIN longer than CONTENT_LENGTH"),
            Error::DataTooLong => f.write_str("DATA longer than FCGI_DATA_LENGTH"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcgi_3_3_3_error_names_clause() {
        assert_eq!(Error::UnsupportedVersion(2).clause(), "FCGI-3.3-3");
        assert_eq!(
            Error::UnsupportedVersion(2).to_string(),
            "unsupported FastCGI version 2"
        );
        let e = Error::UnterminatedStream {
            request_id: 1,
            record_type: RecordType::STDERR,
        };
        assert_eq!(e.clause(), "FCGI-3.3-16");
        assert!(e.to_string().contains("FCGI_STDERR"));
    }
}
