//! Record framing: the 8-byte header, wire-code newtypes, limits and padding.
//!
//! Parsing is frame first: [`parse_record`] proves a whole record is present
//! and returns its content as a borrowed slice; the content is then read by
//! type ([`super::body`], [`super::nv`]). Padding is skipped and never
//! interpreted (FCGI-3.3-6). The version byte is *not* checked here, so a
//! checker can see records of any version; the connection machines check it.

use std::fmt;

use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u16};

use super::Error;
use crate::Status;

/// `FCGI_VERSION_1`, the only version FastCGI 1.0 defines (FCGI-3.3-3).
pub const VERSION_1: u8 = 1;
/// `FCGI_HEADER_LEN`: every record starts with 8 header bytes (FCGI-3.3-2).
pub const HEADER_LEN: usize = 8;
/// Largest `contentLength` a header can carry: 65535 (FCGI-3.3-4).
pub const MAX_CONTENT_LEN: usize = 0xFFFF;
/// Largest `paddingLength` a header can carry: 255 (FCGI-3.3-4).
pub const MAX_PADDING_LEN: usize = 0xFF;
/// Largest record on the wire: 8 + 65535 + 255 = 65798 bytes (FCGI-3.3-4).
///
/// This is also the most a connection machine buffers for a partial record.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_CONTENT_LEN + MAX_PADDING_LEN;
/// `FCGI_NULL_REQUEST_ID`: the request ID of management records (FCGI-3.3-13).
pub const NULL_REQUEST_ID: u16 = 0;

/// A record type (the header's `type` byte). Unknown values are kept as they are,
/// so they can be echoed in `FCGI_UNKNOWN_TYPE` (FCGI-4.2-1).
///
/// ```
/// use portico_protocols::fastcgi::RecordType;
/// assert_eq!(RecordType::STDOUT.0, 6);
/// assert!(RecordType(200).name().is_none());
/// assert_eq!(RecordType(200).to_string(), "record type 200");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u8);

impl RecordType {
    /// `FCGI_BEGIN_REQUEST` (1): web server starts a request.
    pub const BEGIN_REQUEST: Self = Self(1);
    /// `FCGI_ABORT_REQUEST` (2): web server aborts a request.
    pub const ABORT_REQUEST: Self = Self(2);
    /// `FCGI_END_REQUEST` (3): application ends a request.
    pub const END_REQUEST: Self = Self(3);
    /// `FCGI_PARAMS` (4): name-value pair stream to the application.
    pub const PARAMS: Self = Self(4);
    /// `FCGI_STDIN` (5): request body stream to the application.
    pub const STDIN: Self = Self(5);
    /// `FCGI_STDOUT` (6): response stream to the web server.
    pub const STDOUT: Self = Self(6);
    /// `FCGI_STDERR` (7): error stream to the web server.
    pub const STDERR: Self = Self(7);
    /// `FCGI_DATA` (8): extra data stream to the application (Filter).
    pub const DATA: Self = Self(8);
    /// `FCGI_GET_VALUES` (9): management query.
    pub const GET_VALUES: Self = Self(9);
    /// `FCGI_GET_VALUES_RESULT` (10): management answer.
    pub const GET_VALUES_RESULT: Self = Self(10);
    /// `FCGI_UNKNOWN_TYPE` (11): "I do not understand this management type".
    pub const UNKNOWN_TYPE: Self = Self(11);

    /// The spec name (`"FCGI_STDOUT"`), or `None` for a type FastCGI 1.0 does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "FCGI_BEGIN_REQUEST",
            2 => "FCGI_ABORT_REQUEST",
            3 => "FCGI_END_REQUEST",
            4 => "FCGI_PARAMS",
            5 => "FCGI_STDIN",
            6 => "FCGI_STDOUT",
            7 => "FCGI_STDERR",
            8 => "FCGI_DATA",
            9 => "FCGI_GET_VALUES",
            10 => "FCGI_GET_VALUES_RESULT",
            11 => "FCGI_UNKNOWN_TYPE",
            _ => return None,
        })
    }

    /// `true` for the eleven types FastCGI 1.0 defines (FCGI-8-1).
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// `true` for the management types GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE (FCGI-A-2).
    pub fn is_management(self) -> bool {
        matches!(self.0, 9..=11)
    }

    /// `true` for the stream types PARAMS, STDIN, STDOUT, STDERR, DATA (FCGI-A-3).
    pub fn is_stream(self) -> bool {
        matches!(self.0, 4..=8)
    }

    /// `true` for the types only a web server sends (FCGI-A-1): GET_VALUES,
    /// BEGIN_REQUEST, ABORT_REQUEST, PARAMS, STDIN, DATA.
    pub fn is_from_web_server(self) -> bool {
        matches!(self.0, 1 | 2 | 4 | 5 | 8 | 9)
    }

    /// `true` for the types only an application sends (FCGI-A-1): END_REQUEST,
    /// STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE.
    pub fn is_from_application(self) -> bool {
        matches!(self.0, 3 | 6 | 7 | 10 | 11)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "record type {}", self.0),
        }
    }
}

/// The role a web server asks for in BEGIN_REQUEST (FCGI-5.1-3). Unknown values are kept.
///
/// ```
/// use portico_protocols::fastcgi::Role;
/// assert!(Role::FILTER.is_known());
/// assert!(!Role(99).is_known());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(pub u16);

impl Role {
    /// `FCGI_RESPONDER` (1): the CGI/1.1 role.
    pub const RESPONDER: Self = Self(1);
    /// `FCGI_AUTHORIZER` (2): allow/deny decisions.
    pub const AUTHORIZER: Self = Self(2);
    /// `FCGI_FILTER` (3): filters a data file.
    pub const FILTER: Self = Self(3);

    /// `true` for Responder, Authorizer and Filter.
    pub fn is_known(self) -> bool {
        matches!(self.0, 1..=3)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("FCGI_RESPONDER"),
            2 => f.write_str("FCGI_AUTHORIZER"),
            3 => f.write_str("FCGI_FILTER"),
            n => write!(f, "role {n}"),
        }
    }
}

/// The `protocolStatus` of END_REQUEST (FCGI-5.5-4). Unknown values are kept.
///
/// ```
/// use portico_protocols::fastcgi::ProtocolStatus;
/// assert_eq!(ProtocolStatus::OVERLOADED.0, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolStatus(pub u8);

impl ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE` (0): normal end of request.
    pub const REQUEST_COMPLETE: Self = Self(0);
    /// `FCGI_CANT_MPX_CONN` (1): rejected, the application does not multiplex.
    pub const CANT_MPX_CONN: Self = Self(1);
    /// `FCGI_OVERLOADED` (2): rejected, the application is out of a resource.
    pub const OVERLOADED: Self = Self(2);
    /// `FCGI_UNKNOWN_ROLE` (3): rejected, the role is not implemented.
    pub const UNKNOWN_ROLE: Self = Self(3);
}

impl fmt::Display for ProtocolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("FCGI_REQUEST_COMPLETE"),
            1 => f.write_str("FCGI_CANT_MPX_CONN"),
            2 => f.write_str("FCGI_OVERLOADED"),
            3 => f.write_str("FCGI_UNKNOWN_ROLE"),
            n => write!(f, "protocol status {n}"),
        }
    }
}

/// The 8-byte record header, every field as it is on the wire (FCGI-3.3-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version; 1 is the only defined value (FCGI-3.3-3).
    pub version: u8,
    /// Record type.
    pub record_type: RecordType,
    /// Request ID; 0 for management records (FCGI-3.3-13).
    pub request_id: u16,
    /// Number of content bytes after the header.
    pub content_length: u16,
    /// Number of padding bytes after the content.
    pub padding_length: u8,
    /// The reserved byte: sent as 0, ignored on receipt (FCGI-AMB-1).
    pub reserved: u8,
}

impl Header {
    /// A version-1 header with 8-byte-alignment padding (FCGI-3.3-7) and reserved 0.
    ///
    /// ```
    /// use portico_protocols::fastcgi::{Header, RecordType};
    /// let h = Header::new(RecordType::STDOUT, 1, 5);
    /// assert_eq!(h.padding_length, 3);
    /// assert_eq!(h.to_bytes(), *b"\x01\x06\x00\x01\x00\x05\x03\x00");
    /// ```
    pub fn new(record_type: RecordType, request_id: u16, content_length: u16) -> Self {
        Header {
            version: VERSION_1,
            record_type,
            request_id,
            content_length,
            padding_length: padding_for(usize::from(content_length)),
            reserved: 0,
        }
    }

    /// Header + content + padding: the record's length on the wire.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + usize::from(self.content_length) + usize::from(self.padding_length)
    }

    /// The header's 8 bytes, fields verbatim.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [id1, id0] = self.request_id.to_be_bytes();
        let [cl1, cl0] = self.content_length.to_be_bytes();
        [
            self.version,
            self.record_type.0,
            id1,
            id0,
            cl1,
            cl0,
            self.padding_length,
            self.reserved,
        ]
    }

    /// Appends the header's 8 bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// Padding that makes a record with `content_len` content bytes a multiple of 8
/// bytes long: `(8 - content_len % 8) % 8` (FCGI-3.3-7).
pub fn padding_for(content_len: usize) -> u8 {
    // The result is 0..=7, so the cast cannot truncate.
    ((8 - content_len % 8) % 8) as u8
}

/// Parses a record header from the start of `buf`.
///
/// Returns `Partial` if fewer than 8 bytes are present. Any version is
/// accepted here; checking it is the caller's business (FCGI-AMB-2).
///
/// ```
/// use portico_protocols::Status;
/// use portico_protocols::fastcgi::{parse_header, RecordType};
/// let Status::Complete((h, used)) = parse_header(b"\x01\x0b\x00\x00\x00\x08\x00\x00")? else {
///     panic!()
/// };
/// assert_eq!((h.record_type, h.content_length, used), (RecordType::UNKNOWN_TYPE, 8, 8));
/// assert_eq!(parse_header(b"\x01\x0b")?, Status::Partial);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
pub fn parse_header(buf: &[u8]) -> Result<Status<(Header, usize)>, Error> {
    Ok(match header(buf) {
        Some((_, h)) => Status::Complete((h, HEADER_LEN)),
        None => Status::Partial,
    })
}

/// A record: its header and its content, borrowed from the input. Padding is
/// skipped (FCGI-3.3-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The header, fields verbatim.
    pub header: Header,
    /// Exactly `header.content_length` bytes of content.
    pub content: &'a [u8],
}

impl Record<'_> {
    /// Copies the content into an owned [`RecordBuf`].
    pub fn to_owned_record(&self) -> RecordBuf {
        RecordBuf {
            header: self.header,
            content: self.content.to_vec(),
        }
    }
}

/// An owned record, for queues that outlive the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBuf {
    /// The header, fields verbatim.
    pub header: Header,
    /// The content bytes.
    pub content: Vec<u8>,
}

impl RecordBuf {
    /// Borrows as a [`Record`].
    pub fn as_record(&self) -> Record<'_> {
        Record {
            header: self.header,
            content: &self.content,
        }
    }
}

/// Parses one whole record (header, content, padding) from the start of `buf`.
///
/// Returns `Partial` until all `8 + contentLength + paddingLength` bytes are
/// present; the `usize` is that total. The padding's value is ignored
/// (FCGI-3.3-6) and the version is not checked (see [`parse_header`]).
///
/// ```
/// use portico_protocols::Status;
/// use portico_protocols::fastcgi::parse_record;
/// // STDOUT, request 1, "hi", 6 bytes of padding.
/// let bytes = b"\x01\x06\x00\x01\x00\x02\x06\x00hi\0\0\0\0\0\0";
/// let Status::Complete((r, used)) = parse_record(bytes)? else { panic!() };
/// assert_eq!((r.content, used), (&b"hi"[..], 16));
/// assert_eq!(parse_record(&bytes[..15])?, Status::Partial);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
pub fn parse_record(buf: &[u8]) -> Result<Status<(Record<'_>, usize)>, Error> {
    // Streaming parsers: the input may be cut anywhere; "incomplete" is Partial.
    let Some((rest, header)) = header(buf) else {
        return Ok(Status::Partial);
    };
    let cl = usize::from(header.content_length);
    let pl = usize::from(header.padding_length);
    // FCGI-3.3-2: content then padding. FCGI-3.3-6: skip padding, ignore its value.
    let parsed: nom::IResult<&[u8], (&[u8], &[u8])> = (take(cl), take(pl)).parse(rest);
    Ok(match parsed {
        Ok((_, (content, _padding))) => {
            Status::Complete((Record { header, content }, header.record_len()))
        }
        // Streaming `take` fails only when the input is short.
        Err(_) => Status::Partial,
    })
}

/// Appends one record: version 1, `content`, zero padding to an 8-byte
/// multiple (FCGI-3.3-7), reserved byte 0 (FCGI-AMB-1).
///
/// Content longer than [`MAX_CONTENT_LEN`] cannot fit one record; it is then
/// written as consecutive records of the same type, as [`encode_stream`] does.
///
/// ```
/// use portico_protocols::fastcgi::{encode_record, RecordType};
/// let mut out = Vec::new();
/// encode_record(RecordType::UNKNOWN_TYPE, 0, &[200, 0, 0, 0, 0, 0, 0, 0], &mut out);
/// assert_eq!(out, b"\x01\x0b\x00\x00\x00\x08\x00\x00\xc8\0\0\0\0\0\0\0");
/// ```
pub fn encode_record(record_type: RecordType, request_id: u16, content: &[u8], out: &mut Vec<u8>) {
    encode_stream(record_type, request_id, content, out);
}

/// Appends stream data as records of at most [`MAX_CONTENT_LEN`] content bytes,
/// each padded to an 8-byte multiple (FCGI-3.3-4, FCGI-3.3-7).
///
/// An empty `data` appends the empty record that ends the stream
/// (FCGI-3.3-16); non-empty `data` never does, so a stream is finished by a
/// last call with `&[]`.
///
/// ```
/// use portico_protocols::fastcgi::{encode_stream, RecordType};
/// let mut out = Vec::new();
/// encode_stream(RecordType::STDIN, 1, &vec![7; 70_000], &mut out);
/// encode_stream(RecordType::STDIN, 1, &[], &mut out);
/// // 65535 (+1 padding) + 4465 (+7 padding) + the empty record, each with a header.
/// assert_eq!(out.len(), 8 + 65536 + 8 + 4472 + 8);
/// ```
pub fn encode_stream(record_type: RecordType, request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        Header::new(record_type, request_id, 0).encode(out);
        return;
    }
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        encode_chunk(record_type, request_id, chunk, out);
    }
}

/// An iterator over the whole records at the start of a buffer, borrowing
/// their content (no copies). It stops at the first incomplete record;
/// [`Records::rest`] is then the unconsumed tail.
///
/// ```
/// use portico_protocols::fastcgi::{encode_stream, RecordType, Records};
/// let mut buf = Vec::new();
/// encode_stream(RecordType::STDOUT, 1, b"hello", &mut buf);
/// encode_stream(RecordType::STDOUT, 1, &[], &mut buf);
/// buf.extend_from_slice(b"\x01\x03"); // start of the next record
/// let mut records = Records::new(&buf);
/// let contents: Vec<&[u8]> = records.by_ref().map(|r| r.content).collect();
/// assert_eq!(contents, [&b"hello"[..], &b""[..]]);
/// assert_eq!(records.rest(), b"\x01\x03");
/// ```
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    consumed: usize,
}

impl<'a> Records<'a> {
    /// Starts iterating at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Records {
            rest: buf,
            consumed: 0,
        }
    }

    /// The bytes not yet yielded as records.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// How many bytes the yielded records occupied.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        match parse_record(self.rest) {
            Ok(Status::Complete((record, used))) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                self.consumed = self.consumed.saturating_add(used);
                Some(record)
            }
            _ => None,
        }
    }
}

/// Reassembles records from input cut at arbitrary points, buffering at most
/// one partial record ([`MAX_RECORD_LEN`] bytes).
#[derive(Debug, Default)]
pub(crate) struct Framer {
    partial: Vec<u8>,
}

impl Framer {
    /// Calls `f` for every record completed by `input`; keeps the trailing
    /// partial record. Whole records in `input` are passed without copying.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut f: impl FnMut(Record<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !self.partial.is_empty() {
            if self.partial.len() < HEADER_LEN {
                let want = HEADER_LEN.saturating_sub(self.partial.len());
                input = self.fill(input, want);
                if self.partial.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            let Some((_, h)) = header(&self.partial) else {
                return Ok(());
            };
            let want = h.record_len().saturating_sub(self.partial.len());
            input = self.fill(input, want);
            if self.partial.len() < h.record_len() {
                return Ok(());
            }
            let buf = std::mem::take(&mut self.partial);
            let result = match parse_record(&buf) {
                Ok(Status::Complete((record, _))) => f(record),
                _ => Ok(()),
            };
            // Keep the allocation for the next partial record.
            self.partial = buf;
            self.partial.clear();
            result?;
        }
        loop {
            match parse_record(input)? {
                Status::Complete((record, used)) => {
                    f(record)?;
                    input = input.get(used..).unwrap_or_default();
                }
                Status::Partial => {
                    self.partial.extend_from_slice(input);
                    return Ok(());
                }
            }
        }
    }

    /// Moves up to `want` bytes of `input` into the partial buffer; returns the rest.
    fn fill<'i>(&mut self, input: &'i [u8], want: usize) -> &'i [u8] {
        let (head, rest) = input.split_at_checked(want).unwrap_or((input, &[]));
        self.partial.extend_from_slice(head);
        rest
    }
}

/// One record of at most [`MAX_CONTENT_LEN`] bytes; callers guarantee the length.
fn encode_chunk(record_type: RecordType, request_id: u16, chunk: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
    let content = chunk.get(..usize::from(len)).unwrap_or(chunk);
    let header = Header::new(record_type, request_id, len);
    out.reserve(header.record_len());
    header.encode(out);
    out.extend_from_slice(content);
    out.extend_from_slice(
        ZEROS
            .get(..usize::from(header.padding_length))
            .unwrap_or_default(),
    );
}

/// Zero bytes for padding.
pub(crate) static ZEROS: [u8; MAX_PADDING_LEN] = [0; MAX_PADDING_LEN];

/// version, type, requestId, contentLength, paddingLength, reserved.
type HeaderFields = (u8, u8, u16, u16, u8, u8);

/// The 8 header fields, big-endian (FCGI-3.1-2), with streaming parsers.
fn header(buf: &[u8]) -> Option<(&[u8], Header)> {
    let parsed: nom::IResult<&[u8], HeaderFields> =
        (be_u8, be_u8, be_u16, be_u16, be_u8, be_u8).parse(buf);
    let (rest, (version, record_type, request_id, content_length, padding_length, reserved)) =
        parsed.ok()?;
    Some((
        rest,
        Header {
            version,
            record_type: RecordType(record_type),
            request_id,
            content_length,
            padding_length,
            reserved,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> (Record<'_>, usize) {
        match parse_record(buf) {
            Ok(Status::Complete(v)) => v,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    /// `record_case!(name, bytes, |record| checks)`: parse a whole record and check it.
    macro_rules! record_case {
        ($name:ident, $bytes:expr, |$r:ident| $body:expr) => {
            #[test]
            fn $name() {
                let bytes: &[u8] = $bytes;
                let ($r, used) = complete(bytes);
                assert_eq!(used, bytes.len());
                $body;
            }
        };
    }

    record_case!(
        fcgi_5_1_2_begin_request_keep_conn,
        b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0",
        |r| {
            assert_eq!(r.header.record_type, RecordType::BEGIN_REQUEST);
            assert_eq!(r.header.request_id, 1);
            assert_eq!(r.content, b"\x00\x01\x01\0\0\0\0\0");
        }
    );
    record_case!(
        fcgi_5_5_2_end_request_complete,
        b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        |r| assert_eq!(r.header.record_type, RecordType::END_REQUEST)
    );
    record_case!(
        fcgi_4_2_2_unknown_type_record,
        b"\x01\x0b\x00\x00\x00\x08\x00\x00\xc8\x00\x00\x00\x00\x00\x00\x00",
        |r| assert_eq!(r.content.first(), Some(&200))
    );
    record_case!(
        fcgi_amb_1_reserved_byte_kept_verbatim,
        b"\x01\x06\x00\x02\x00\x00\x00\xff",
        |r| assert_eq!(r.header.reserved, 0xff)
    );
    record_case!(
        fcgi_3_1_2_big_endian_fields,
        b"\x01\x05\x12\x34\x00\x01\x00\x00X",
        |r| {
            assert_eq!(r.header.request_id, 0x1234);
            assert_eq!(r.content, b"X");
        }
    );

    /// FCGI-3.3-6: padding is read and skipped, whatever its bytes are.
    #[test]
    fn fcgi_3_3_6_padding_skipped() {
        let bytes = b"\x01\x06\x00\x01\x00\x02\x05\x00hiJUNK!NEXT";
        let (r, used) = complete(bytes);
        assert_eq!(r.content, b"hi");
        assert_eq!(used, 15);
        // Padding not yet complete: still partial.
        assert_eq!(parse_record(&bytes[..14]).ok(), Some(Status::Partial));
    }

    /// FCGI-3.3-2: the header is 8 bytes; fewer is partial, never an error.
    #[test]
    fn fcgi_3_3_2_header_partial_below_8_bytes() {
        let bytes = b"\x01\x06\x00\x01\x00\x00\x00\x00";
        for n in 0..8 {
            assert_eq!(parse_header(&bytes[..n]).ok(), Some(Status::Partial));
            assert_eq!(parse_record(&bytes[..n]).ok(), Some(Status::Partial));
        }
        assert!(parse_header(bytes).is_ok_and(|s| s.is_complete()));
    }

    /// FCGI-AMB-2: the framing layer reports any version; machines reject it.
    #[test]
    fn fcgi_amb_2_other_version_is_framed() {
        let (r, _) = complete(b"\x02\x06\x00\x01\x00\x00\x00\x00");
        assert_eq!(r.header.version, 2);
    }

    /// FCGI-3.3-7: every encoded record is a multiple of 8 bytes.
    #[test]
    fn fcgi_3_3_7_padding_aligns() {
        for n in 0..20usize {
            let mut out = Vec::new();
            encode_record(RecordType::STDOUT, 1, &vec![1; n], &mut out);
            assert_eq!(out.len() % 8, 0, "content {n}");
            assert_eq!(usize::from(padding_for(n)), (8 - n % 8) % 8);
        }
    }

    /// FCGI-3.3-4: a 65535-byte record with 255 bytes of padding is the largest.
    #[test]
    fn fcgi_3_3_4_largest_record() {
        let mut buf = Header {
            padding_length: 255,
            ..Header::new(RecordType::STDIN, 1, 0xFFFF)
        }
        .to_bytes()
        .to_vec();
        buf.resize(MAX_RECORD_LEN, 9);
        let (r, used) = complete(&buf);
        assert_eq!((r.content.len(), used), (MAX_CONTENT_LEN, MAX_RECORD_LEN));
    }

    /// FCGI-3.3-16: encode_stream of empty data is the end-of-stream record; large data is split.
    #[test]
    fn fcgi_3_3_16_stream_end_and_split() {
        let mut out = Vec::new();
        encode_stream(RecordType::STDOUT, 3, &[], &mut out);
        assert_eq!(out, b"\x01\x06\x00\x03\x00\x00\x00\x00");

        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode_stream(RecordType::STDOUT, 3, &data, &mut out);
        let records: Vec<_> = Records::new(&out).collect();
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| !r.content.is_empty()));
        let joined: Vec<u8> = records
            .iter()
            .flat_map(|r| r.content.iter().copied())
            .collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn framer_reassembles_split_records() {
        let mut wire = Vec::new();
        encode_stream(RecordType::STDOUT, 1, b"abcdefghij", &mut wire);
        encode_stream(RecordType::STDOUT, 1, &[], &mut wire);
        for split in 0..=wire.len() {
            let mut framer = Framer::default();
            let mut seen = Vec::new();
            let (a, b) = wire.split_at(split);
            for part in [a, b] {
                framer
                    .feed(part, |r| {
                        seen.push(r.to_owned_record());
                        Ok(())
                    })
                    .unwrap();
            }
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(seen[0].content, b"abcdefghij");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(RecordType::GET_VALUES.to_string(), "FCGI_GET_VALUES");
        assert_eq!(Role(7).to_string(), "role 7");
        assert_eq!(
            ProtocolStatus::UNKNOWN_ROLE.to_string(),
            "FCGI_UNKNOWN_ROLE"
        );
        assert!(RecordType::STDERR.is_stream() && !RecordType::END_REQUEST.is_stream());
        assert!(RecordType::UNKNOWN_TYPE.is_management());
    }

    fn any_header() -> impl Strategy<Value = Header> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(
                |(version, t, request_id, content_length, padding_length, reserved)| Header {
                    version,
                    record_type: RecordType(t),
                    request_id,
                    content_length,
                    padding_length,
                    reserved,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_header_roundtrip(h in any_header()) {
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(parse_header(&out), Ok(Status::Complete((h, HEADER_LEN))));
        }

        #[test]
        fn prop_record_roundtrip(t in any::<u8>(), id in any::<u16>(),
                                 content in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut out = Vec::new();
            encode_record(RecordType(t), id, &content, &mut out);
            let header = Header::new(RecordType(t), id, content.len() as u16);
            prop_assert_eq!(
                parse_record(&out),
                Ok(Status::Complete((Record { header, content: &content }, out.len())))
            );
        }

        #[test]
        fn prop_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_record(&bytes);
            let _ = Records::new(&bytes).count();
        }
    }
}
