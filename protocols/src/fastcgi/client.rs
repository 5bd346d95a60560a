//! The web-server side: request encoders, a raw record writer, and the
//! response decoder [`Conn`].
//!
//! * [`Request`] encodes a whole request for any ID: BEGIN_REQUEST, PARAMS
//!   (split into records of at most 65535 bytes), the PARAMS terminator, then
//!   STDIN and DATA, each with its terminator (FCGI-6.1-2, FCGI-6.1-7).
//!   [`Request::check`] reports what the web server must not send.
//! * [`encode_begin_request`], [`encode_params`], [`encode_stdin`],
//!   [`encode_data`], [`encode_abort`], [`encode_get_values`] and
//!   [`encode_stream_split`] (arbitrary record boundaries) are the pieces.
//! * [`RawRecord`] writes any header at all — wrong version, type, ID,
//!   lengths that disagree with the content, any padding, reserved bytes — for
//!   the conformance checker.
//! * [`Conn`] decodes what an application sends back, per request ID. It can
//!   report every violation as an event instead of stopping at the first
//!   ([`Config::lenient`]) and show every raw record
//!   ([`Config::observe_records`]). [`Conn::handle_read_with`] is the
//!   zero-copy entry point: STDOUT/STDERR content is passed as slices of the
//!   caller's buffer.
//!
//! # Example
//!
//! ```
//! use portico_protocols::fastcgi::client::{ClientEvent, Config, Conn};
//! use portico_protocols::fastcgi::ProtocolStatus;
//!
//! // STDOUT "hi", empty STDOUT, END_REQUEST{0, REQUEST_COMPLETE}, for request 1.
//! let reply = b"\x01\x06\x00\x01\x00\x02\x06\x00hi\0\0\0\0\0\0\
//!               \x01\x06\x00\x01\x00\x00\x00\x00\
//!               \x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\0\0\0\0";
//! let mut conn = Conn::new(Config::default());
//! conn.handle_read(reply)?;
//! assert_eq!(conn.poll_event(), Some(ClientEvent::Stdout { id: 1, data: b"hi".to_vec() }));
//! assert_eq!(conn.poll_event(), Some(ClientEvent::StdoutEnd { id: 1 }));
//! assert_eq!(
//!     conn.poll_event(),
//!     Some(ClientEvent::EndRequest {
//!         id: 1,
//!         app_status: 0,
//!         protocol_status: ProtocolStatus::REQUEST_COMPLETE
//!     })
//! );
//! # Ok::<(), portico_protocols::fastcgi::Error>(())
//! ```

use std::collections::{BTreeMap, VecDeque};

use super::Error;
use super::body::{BeginRequestBody, EndRequestBody, UnknownTypeBody};
use super::nv::{NameValues, encode_get_values_query, encode_pair};
use super::record::{
    Framer, MAX_CONTENT_LEN, NULL_REQUEST_ID, ProtocolStatus, Record, RecordBuf, RecordType, Role,
    VERSION_1, ZEROS, encode_record, encode_stream, padding_for,
};

/// Appends a BEGIN_REQUEST record (FCGI-5.1-1, FCGI-5.1-2). The ID should be
/// nonzero; any ID is encoded as given.
///
/// ```
/// use portico_protocols::fastcgi::{client::encode_begin_request, Role, KEEP_CONN};
/// let mut out = Vec::new();
/// encode_begin_request(1, Role::RESPONDER, KEEP_CONN, &mut out);
/// assert_eq!(out, b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0");
/// ```
pub fn encode_begin_request(request_id: u16, role: Role, flags: u8, out: &mut Vec<u8>) {
    let body = BeginRequestBody { role, flags };
    encode_record(RecordType::BEGIN_REQUEST, request_id, &body.to_bytes(), out);
}

/// Appends a whole PARAMS stream: the pairs, split into records of at most
/// 65535 bytes wherever the boundary falls (FCGI-5.2-3), then the empty
/// terminating record (FCGI-3.3-16).
pub fn encode_params<'p>(
    request_id: u16,
    pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
    out: &mut Vec<u8>,
) {
    // Records hold whole pairs where they fit: php-fpm drops the connection when a pair
    // is split across two PARAMS records (seen in captures; Apache does the same packing).
    // Only a single pair longer than a record is split (FCGI-5.2-3 allows any split).
    let mut content = Vec::new();
    let mut pair = Vec::new();
    for (name, value) in pairs {
        pair.clear();
        encode_pair(name, value, &mut pair);
        if !content.is_empty() && content.len() + pair.len() > MAX_CONTENT_LEN {
            encode_record(RecordType::PARAMS, request_id, &content, out);
            content.clear();
        }
        if pair.len() > MAX_CONTENT_LEN {
            encode_stream(RecordType::PARAMS, request_id, &pair, out);
        } else {
            content.extend_from_slice(&pair);
        }
    }
    if !content.is_empty() {
        encode_record(RecordType::PARAMS, request_id, &content, out);
    }
    encode_stream(RecordType::PARAMS, request_id, &[], out);
}

/// Appends STDIN records; empty `data` appends the terminator (FCGI-3.3-16).
pub fn encode_stdin(request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    encode_stream(RecordType::STDIN, request_id, data, out);
}

/// Appends DATA records; empty `data` appends the terminator (FCGI-3.3-16).
pub fn encode_data(request_id: u16, data: &[u8], out: &mut Vec<u8>) {
    encode_stream(RecordType::DATA, request_id, data, out);
}

/// Appends ABORT_REQUEST with no content (FCGI-5.4-1, FCGI-AMB-12).
pub fn encode_abort(request_id: u16, out: &mut Vec<u8>) {
    encode_record(RecordType::ABORT_REQUEST, request_id, &[], out);
}

/// Appends a GET_VALUES record (request ID 0) asking for `names` (FCGI-4.1-2).
///
/// ```
/// use portico_protocols::fastcgi::client::encode_get_values;
/// use portico_protocols::fastcgi::nv::{MAX_CONNS, MAX_REQS, MPXS_CONNS};
/// let mut out = Vec::new();
/// encode_get_values(&[MAX_CONNS, MAX_REQS, MPXS_CONNS], &mut out);
/// assert_eq!(&out[..8], b"\x01\x09\x00\x00\x00\x30\x00\x00");
/// ```
pub fn encode_get_values(names: &[&[u8]], out: &mut Vec<u8>) {
    let mut content = Vec::new();
    encode_get_values_query(names, &mut content);
    encode_record(RecordType::GET_VALUES, NULL_REQUEST_ID, &content, out);
}

/// Appends stream data cut into records of `record_len` content bytes (the
/// last may be shorter), for tests of arbitrary record boundaries
/// (FCGI-3.3-15, FCGI-T-4). `record_len` is clamped to 1..=65535. Empty
/// `data` appends the terminator, as [`encode_stream`] does.
///
/// ```
/// use portico_protocols::fastcgi::{client::encode_stream_split, RecordType, Records};
/// let mut out = Vec::new();
/// encode_stream_split(RecordType::PARAMS, 1, b"\x01\x01ab", 1, &mut out);
/// assert_eq!(Records::new(&out).count(), 4);
/// ```
pub fn encode_stream_split(
    record_type: RecordType,
    request_id: u16,
    data: &[u8],
    record_len: usize,
    out: &mut Vec<u8>,
) {
    if data.is_empty() {
        encode_stream(record_type, request_id, &[], out);
        return;
    }
    for chunk in data.chunks(record_len.clamp(1, MAX_CONTENT_LEN)) {
        encode_record(record_type, request_id, chunk, out);
    }
}

/// A whole request, web-server side.
///
/// `stdin: None` sends no STDIN stream at all (the Authorizer convention,
/// FCGI-AMB-8); `Some(b"")` sends just the empty STDIN record, as a
/// Responder without a body must get (FCGI-6.1-7). `data` likewise, for Filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Request ID; nonzero for a valid request (FCGI-5.1-1).
    pub id: u16,
    /// Role.
    pub role: Role,
    /// Sets `FCGI_KEEP_CONN` (FCGI-5.1-4).
    pub keep_conn: bool,
    /// The params, in the order to send them.
    pub params: &'a [(&'a [u8], &'a [u8])],
    /// The STDIN stream's whole content, or `None` for no STDIN stream.
    pub stdin: Option<&'a [u8]>,
    /// The DATA stream's whole content, or `None` for no DATA stream.
    pub data: Option<&'a [u8]>,
}

impl Request<'_> {
    /// Appends every record of the request: BEGIN_REQUEST, PARAMS and its
    /// terminator, then STDIN and its terminator, then DATA and its terminator
    /// — one stream after the other (FCGI-6.1-2, FCGI-6.2-3, FCGI-6.4-2).
    ///
    /// ```
    /// use portico_protocols::fastcgi::{client::Request, Role, RecordType, Records};
    /// let mut out = Vec::new();
    /// Request { id: 1, role: Role::RESPONDER, keep_conn: false,
    ///           params: &[(b"SERVER_PORT", b"80")], stdin: Some(b""), data: None }
    ///     .encode(&mut out);
    /// let types: Vec<u8> = Records::new(&out).map(|r| r.header.record_type.0).collect();
    /// assert_eq!(types, [1, 4, 4, 5]);
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flags = if self.keep_conn { super::KEEP_CONN } else { 0 };
        encode_begin_request(self.id, self.role, flags, out);
        encode_params(self.id, self.params.iter().copied(), out);
        if let Some(stdin) = self.stdin {
            if !stdin.is_empty() {
                encode_stdin(self.id, stdin, out);
            }
            encode_stdin(self.id, &[], out);
        }
        if let Some(data) = self.data {
            if !data.is_empty() {
                encode_data(self.id, data, out);
            }
            encode_data(self.id, &[], out);
        }
    }

    /// Checks what the web server must or must not send:
    ///
    /// * a nonzero ID (FCGI-5.1-1, FCGI-A-2);
    /// * no NUL in any name or value (FCGI-6.1-9);
    /// * for an Authorizer, none of `CONTENT_LENGTH`, `PATH_INFO`,
    ///   `PATH_TRANSLATED`, `SCRIPT_NAME` (FCGI-6.3-3);
    /// * for a Filter, `FCGI_DATA_LAST_MOD` and `FCGI_DATA_LENGTH` (FCGI-6.4-3),
    ///   and no more DATA than `FCGI_DATA_LENGTH` (FCGI-6.4-4);
    /// * no more STDIN than a numeric `CONTENT_LENGTH` (FCGI-6.2-4, FCGI-6.4-4).
    ///
    /// ```
    /// use portico_protocols::fastcgi::{client::Request, Error, Role};
    /// let req = Request { id: 1, role: Role::RESPONDER, keep_conn: false,
    ///                     params: &[(b"CONTENT_LENGTH", b"2")], stdin: Some(b"abc"), data: None };
    /// assert_eq!(req.check(), Err(Error::StdinTooLong));
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        if self.id == NULL_REQUEST_ID {
            return Err(Error::WrongRequestId {
                record_type: RecordType::BEGIN_REQUEST,
                request_id: NULL_REQUEST_ID,
            });
        }
        let mut content_length = None;
        let mut data_length = None;
        let mut data_last_mod = false;
        for &(name, value) in self.params {
            // FCGI-6.1-9: textual values carry no NUL (nor do names).
            if name.contains(&0) || value.contains(&0) {
                return Err(Error::NulInParam);
            }
            // FCGI-6.3-3
            if self.role == Role::AUTHORIZER && AUTHORIZER_WITHHELD.contains(&name) {
                return Err(Error::WithheldFromAuthorizer);
            }
            match name {
                b"CONTENT_LENGTH" => content_length = decimal(value),
                b"FCGI_DATA_LENGTH" => data_length = decimal(value),
                b"FCGI_DATA_LAST_MOD" => data_last_mod = true,
                _ => {}
            }
        }
        let stdin_len = self.stdin.map_or(0, <[u8]>::len);
        let data_len = self.data.map_or(0, <[u8]>::len);
        // FCGI-6.2-4, FCGI-6.4-4: at most CONTENT_LENGTH bytes on STDIN.
        if content_length.is_some_and(|n| to_u64(stdin_len) > n) {
            return Err(Error::StdinTooLong);
        }
        if self.role == Role::FILTER {
            // FCGI-6.4-3
            if !data_last_mod || data_length.is_none() {
                return Err(Error::MissingFilterParam);
            }
            // FCGI-6.4-4
            if data_length.is_some_and(|n| to_u64(data_len) > n) {
                return Err(Error::DataTooLong);
            }
        }
        Ok(())
    }
}

/// Params a web server does not send to an Authorizer (FCGI-6.3-3).
pub const AUTHORIZER_WITHHELD: [&[u8]; 4] = [
    b"CONTENT_LENGTH",
    b"PATH_INFO",
    b"PATH_TRANSLATED",
    b"SCRIPT_NAME",
];

/// A record written exactly as described, right or wrong, for conformance
/// checks. Start from [`RawRecord::new`] (a correct record) and change fields.
///
/// ```
/// use portico_protocols::fastcgi::{client::RawRecord, RecordType};
/// let mut out = Vec::new();
/// RawRecord { version: 2, reserved: 0xff, ..RawRecord::new(RecordType(200), 0, b"") }
///     .encode(&mut out);
/// assert_eq!(out, b"\x02\xc8\x00\x00\x00\x00\x00\xff");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Header `version`.
    pub version: u8,
    /// Header `type`.
    pub record_type: RecordType,
    /// Header `requestId`.
    pub request_id: u16,
    /// Header `contentLength`, written as is, whatever `content` holds.
    pub content_length: u16,
    /// Header `paddingLength`, written as is, whatever `padding` holds.
    pub padding_length: u8,
    /// Header `reserved`.
    pub reserved: u8,
    /// Bytes written after the header.
    pub content: &'a [u8],
    /// Bytes written after the content.
    pub padding: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// A correct record: version 1, lengths matching `content` (which should be
    /// at most 65535 bytes), zero padding to 8 bytes, reserved 0.
    pub fn new(record_type: RecordType, request_id: u16, content: &'a [u8]) -> Self {
        let pad = padding_for(content.len());
        RawRecord {
            version: VERSION_1,
            record_type,
            request_id,
            content_length: u16::try_from(content.len()).unwrap_or(u16::MAX),
            padding_length: pad,
            reserved: 0,
            content,
            padding: ZEROS.get(..usize::from(pad)).unwrap_or_default(),
        }
    }

    /// Appends the header fields, `content` and `padding`, verbatim.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let [id1, id0] = self.request_id.to_be_bytes();
        let [cl1, cl0] = self.content_length.to_be_bytes();
        out.extend_from_slice(&[
            self.version,
            self.record_type.0,
            id1,
            id0,
            cl1,
            cl0,
            self.padding_length,
            self.reserved,
        ]);
        out.extend_from_slice(self.content);
        out.extend_from_slice(self.padding);
    }
}

/// Settings of a response decoder [`Conn`]. All default to `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// Report violations as [`ClientEvent::Violation`] and carry on, instead of
    /// failing `handle_read` at the first one. Default `false`.
    pub lenient: bool,
    /// Report every record as [`ClientEvent::Record`] before its decoded
    /// events. Default `false`.
    pub observe_records: bool,
    /// Treat records for IDs not announced with [`Conn::begin_request`] (or
    /// already ended) as [`Error::InactiveRequest`]. When `false`, a record for
    /// an unknown ID opens it. Default `false`.
    pub strict_ids: bool,
}

/// What an application sent, decoded (owned form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A raw record (only with [`Config::observe_records`]).
    Record(RecordBuf),
    /// One STDOUT record's content (never empty).
    Stdout {
        /// Request ID.
        id: u16,
        /// The bytes.
        data: Vec<u8>,
    },
    /// STDOUT ended (its empty record).
    StdoutEnd {
        /// Request ID.
        id: u16,
    },
    /// One STDERR record's content (never empty).
    Stderr {
        /// Request ID.
        id: u16,
        /// The bytes.
        data: Vec<u8>,
    },
    /// STDERR ended (its empty record).
    StderrEnd {
        /// Request ID.
        id: u16,
    },
    /// The request ended.
    EndRequest {
        /// Request ID.
        id: u16,
        /// Application status (FCGI-5.5-3).
        app_status: u32,
        /// Protocol status (FCGI-5.5-4).
        protocol_status: ProtocolStatus,
    },
    /// The answer to GET_VALUES.
    GetValuesResult {
        /// The pairs, in wire order.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// The application did not understand a management type we sent.
    UnknownType {
        /// The type it echoed.
        record_type: RecordType,
    },
    /// A violation (only with [`Config::lenient`]).
    Violation(Error),
}

/// What an application sent, decoded, borrowing the input (see
/// [`Conn::handle_read_with`]).
#[derive(Debug, Clone)]
pub enum ClientEventRef<'a> {
    /// A raw record (only with [`Config::observe_records`]).
    Record(Record<'a>),
    /// One STDOUT record's content (never empty).
    Stdout {
        /// Request ID.
        id: u16,
        /// The bytes, borrowed.
        data: &'a [u8],
    },
    /// STDOUT ended.
    StdoutEnd {
        /// Request ID.
        id: u16,
    },
    /// One STDERR record's content (never empty).
    Stderr {
        /// Request ID.
        id: u16,
        /// The bytes, borrowed.
        data: &'a [u8],
    },
    /// STDERR ended.
    StderrEnd {
        /// Request ID.
        id: u16,
    },
    /// The request ended.
    EndRequest {
        /// Request ID.
        id: u16,
        /// Application status.
        app_status: u32,
        /// Protocol status.
        protocol_status: ProtocolStatus,
    },
    /// The answer to GET_VALUES; the pairs are already validated.
    GetValuesResult {
        /// The pairs.
        pairs: NameValues<'a>,
    },
    /// The application did not understand a management type.
    UnknownType {
        /// The type it echoed.
        record_type: RecordType,
    },
    /// A violation (only with [`Config::lenient`]).
    Violation(Error),
}

impl ClientEventRef<'_> {
    /// Copies into an owned [`ClientEvent`].
    pub fn to_owned_event(&self) -> ClientEvent {
        match self {
            ClientEventRef::Record(r) => ClientEvent::Record(r.to_owned_record()),
            ClientEventRef::Stdout { id, data } => ClientEvent::Stdout {
                id: *id,
                data: data.to_vec(),
            },
            ClientEventRef::StdoutEnd { id } => ClientEvent::StdoutEnd { id: *id },
            ClientEventRef::Stderr { id, data } => ClientEvent::Stderr {
                id: *id,
                data: data.to_vec(),
            },
            ClientEventRef::StderrEnd { id } => ClientEvent::StderrEnd { id: *id },
            ClientEventRef::EndRequest {
                id,
                app_status,
                protocol_status,
            } => ClientEvent::EndRequest {
                id: *id,
                app_status: *app_status,
                protocol_status: *protocol_status,
            },
            ClientEventRef::GetValuesResult { pairs } => ClientEvent::GetValuesResult {
                pairs: pairs
                    .clone()
                    .filter_map(Result::ok)
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
            },
            ClientEventRef::UnknownType { record_type } => ClientEvent::UnknownType {
                record_type: *record_type,
            },
            ClientEventRef::Violation(e) => ClientEvent::Violation(*e),
        }
    }
}

/// The response decoder for one connection, web-server side.
///
/// Input handling is as in [`super::server::Conn`]: all input is consumed, a
/// trailing partial record is buffered (at most one record), input may be cut
/// at any byte. In strict mode (the default) the first violation is returned
/// from `handle_read` and repeated on every later call.
#[derive(Debug)]
pub struct Conn {
    framer: Framer,
    state: State,
    events: VecDeque<ClientEvent>,
    error: Option<Error>,
}

impl Conn {
    /// A fresh decoder.
    pub fn new(config: Config) -> Self {
        Conn {
            framer: Framer::default(),
            state: State {
                config,
                requests: BTreeMap::new(),
            },
            events: VecDeque::new(),
            error: None,
        }
    }

    /// Announces that BEGIN_REQUEST for `id` was sent (needed with
    /// [`Config::strict_ids`]; harmless otherwise). Resets the ID's stream state.
    pub fn begin_request(&mut self, id: u16) {
        self.state.requests.insert(id, Streams::default());
    }

    /// `true` if `id` has begun (or been seen) and not yet ended.
    pub fn is_active(&self, id: u16) -> bool {
        self.state.requests.contains_key(&id)
    }

    /// Feeds bytes read from the application; events are queued for
    /// [`Conn::poll_event`]. Returns the bytes consumed (all of them on success).
    pub fn handle_read(&mut self, input: &[u8]) -> Result<usize, Error> {
        let Conn {
            framer,
            state,
            events,
            error,
        } = self;
        feed(framer, state, error, input, &mut |e: ClientEventRef<'_>| {
            events.push_back(e.to_owned_event())
        })
    }

    /// Zero-copy form of [`Conn::handle_read`]: calls `f` with each event,
    /// borrowing STDOUT/STDERR content from `input` (records completed from
    /// an earlier partial are borrowed from the internal buffer). Nothing is
    /// queued for [`Conn::poll_event`].
    ///
    /// ```
    /// use portico_protocols::fastcgi::client::{ClientEventRef, Config, Conn};
    /// use portico_protocols::fastcgi::{encode_stream, RecordType};
    /// let mut wire = Vec::new();
    /// encode_stream(RecordType::STDOUT, 1, &vec![b'x'; 100_000], &mut wire);
    /// let mut conn = Conn::new(Config::default());
    /// let mut total = 0;
    /// conn.handle_read_with(&wire, |e| {
    ///     if let ClientEventRef::Stdout { data, .. } = e {
    ///         total += data.len();
    ///     }
    /// })?;
    /// assert_eq!(total, 100_000);
    /// # Ok::<(), portico_protocols::fastcgi::Error>(())
    /// ```
    pub fn handle_read_with(
        &mut self,
        input: &[u8],
        mut f: impl FnMut(ClientEventRef<'_>),
    ) -> Result<usize, Error> {
        let Conn {
            framer,
            state,
            error,
            ..
        } = self;
        feed(framer, state, error, input, &mut f)
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new(Config::default())
    }
}

fn feed(
    framer: &mut Framer,
    state: &mut State,
    error: &mut Option<Error>,
    input: &[u8],
    f: &mut dyn FnMut(ClientEventRef<'_>),
) -> Result<usize, Error> {
    if let Some(e) = *error {
        return Err(e);
    }
    match framer.feed(input, |record| state.on_record(record, f)) {
        Ok(()) => Ok(input.len()),
        Err(e) => {
            *error = Some(e);
            Err(e)
        }
    }
}

#[derive(Debug)]
struct State {
    config: Config,
    requests: BTreeMap<u16, Streams>,
}

/// The output streams of one request, as seen so far.
#[derive(Debug, Default)]
struct Streams {
    stdout_ended: bool,
    stderr_started: bool,
    stderr_ended: bool,
}

impl State {
    fn on_record<'a>(
        &mut self,
        record: Record<'a>,
        f: &mut dyn FnMut(ClientEventRef<'_>),
    ) -> Result<(), Error> {
        // The callback is higher-ranked at the public edge; here one lifetime suffices.
        let f: &mut dyn FnMut(ClientEventRef<'_>) = f;
        if self.config.observe_records {
            f(ClientEventRef::Record(record));
        }
        let header = record.header;
        let (t, id, content) = (header.record_type, header.request_id, record.content);
        // FCGI-3.3-3, FCGI-AMB-2. When lenient, decode it as version 1.
        if header.version != VERSION_1 {
            self.flag_ref(Error::UnsupportedVersion(header.version), f)?;
        }
        if id == NULL_REQUEST_ID {
            return self.on_management(t, content, f);
        }
        match t {
            RecordType::STDOUT | RecordType::STDERR | RecordType::END_REQUEST => {}
            // FCGI-A-1: these travel only from web server to application.
            _ if t.is_from_web_server() => return self.flag_ref(Error::WrongDirection(t), f),
            // FCGI-A-2: management types use ID 0.
            _ if t.is_management() => {
                return self.flag_ref(
                    Error::WrongRequestId {
                        record_type: t,
                        request_id: id,
                    },
                    f,
                );
            }
            // An unknown type has no rule to break (compare FCGI-AMB-3); observers see it.
            _ => return Ok(()),
        }
        if !self.requests.contains_key(&id) {
            if self.config.strict_ids {
                // FCGI-3.3-9: output only for an active request (FCGI-6.1-3: none after END_REQUEST).
                self.flag_ref(Error::InactiveRequest(id), f)?;
            }
            self.requests.insert(id, Streams::default());
        }
        let lenient = self.config.lenient;
        let Some(streams) = self.requests.get_mut(&id) else {
            return Ok(());
        };
        let mut violation = None;
        match t {
            RecordType::STDOUT => {
                if streams.stdout_ended {
                    // FCGI-3.3-16
                    violation = Some(Error::StreamAfterEnd {
                        request_id: id,
                        record_type: t,
                    });
                }
                if !content.is_empty() {
                    emit_after(
                        lenient,
                        violation,
                        f,
                        ClientEventRef::Stdout { id, data: content },
                    )?;
                } else if !streams.stdout_ended {
                    streams.stdout_ended = true;
                    f(ClientEventRef::StdoutEnd { id });
                } else {
                    emit_violation(lenient, violation, f)?;
                }
            }
            RecordType::STDERR => {
                if streams.stderr_ended {
                    // FCGI-3.3-16
                    violation = Some(Error::StreamAfterEnd {
                        request_id: id,
                        record_type: t,
                    });
                }
                streams.stderr_started = true;
                if !content.is_empty() {
                    emit_after(
                        lenient,
                        violation,
                        f,
                        ClientEventRef::Stderr { id, data: content },
                    )?;
                } else if !streams.stderr_ended {
                    streams.stderr_ended = true;
                    f(ClientEventRef::StderrEnd { id });
                } else {
                    emit_violation(lenient, violation, f)?;
                }
            }
            _ => {
                // END_REQUEST. FCGI-5.5-2: an 8-byte body.
                let body = match EndRequestBody::parse(content) {
                    Ok(body) => body,
                    Err(e) => return emit_violation(lenient, Some(e), f),
                };
                // FCGI-6.1-7: a completed request sent at least the empty STDOUT.
                if body.protocol_status == ProtocolStatus::REQUEST_COMPLETE && !streams.stdout_ended
                {
                    emit_violation(
                        lenient,
                        Some(Error::UnterminatedStream {
                            request_id: id,
                            record_type: RecordType::STDOUT,
                        }),
                        f,
                    )?;
                }
                // FCGI-6.1-6, FCGI-3.3-16: a STDERR stream that was used is terminated.
                if streams.stderr_started && !streams.stderr_ended {
                    emit_violation(
                        lenient,
                        Some(Error::UnterminatedStream {
                            request_id: id,
                            record_type: RecordType::STDERR,
                        }),
                        f,
                    )?;
                }
                // FCGI-3.3-9: the ID is inactive once END_REQUEST is sent.
                self.requests.remove(&id);
                f(ClientEventRef::EndRequest {
                    id,
                    app_status: body.app_status,
                    protocol_status: body.protocol_status,
                });
            }
        }
        Ok(())
    }

    fn flag_ref(&self, e: Error, f: &mut dyn FnMut(ClientEventRef<'_>)) -> Result<(), Error> {
        emit_violation(self.config.lenient, Some(e), f)
    }

    fn on_management<'a>(
        &self,
        t: RecordType,
        content: &'a [u8],
        f: &mut dyn FnMut(ClientEventRef<'_>),
    ) -> Result<(), Error> {
        match t {
            RecordType::GET_VALUES_RESULT => {
                // FCGI-4.1-3: name-value pairs; FCGI-3.4-1: whole ones.
                if NameValues::new(content).any(|p| p.is_err()) {
                    return self.flag_ref(Error::MalformedNameValue, f);
                }
                f(ClientEventRef::GetValuesResult {
                    pairs: NameValues::new(content),
                });
                Ok(())
            }
            RecordType::UNKNOWN_TYPE => {
                // FCGI-4.2-2
                match UnknownTypeBody::parse(content) {
                    Ok(body) => {
                        f(ClientEventRef::UnknownType {
                            record_type: body.record_type,
                        });
                        Ok(())
                    }
                    Err(e) => self.flag_ref(e, f),
                }
            }
            // FCGI-A-1
            _ if t.is_from_web_server() => self.flag_ref(Error::WrongDirection(t), f),
            // FCGI-A-2: END_REQUEST, STDOUT, STDERR never use ID 0.
            _ if t.is_known() => self.flag_ref(
                Error::WrongRequestId {
                    record_type: t,
                    request_id: NULL_REQUEST_ID,
                },
                f,
            ),
            _ => Ok(()),
        }
    }
}

/// Reports `violation` (if any), then `event`.
fn emit_after<'a>(
    lenient: bool,
    violation: Option<Error>,
    f: &mut dyn FnMut(ClientEventRef<'_>),
    event: ClientEventRef<'a>,
) -> Result<(), Error> {
    emit_violation(lenient, violation, f)?;
    f(event);
    Ok(())
}

/// Reports `violation` (if any): an event when lenient, else the error.
fn emit_violation(
    lenient: bool,
    violation: Option<Error>,
    f: &mut dyn FnMut(ClientEventRef<'_>),
) -> Result<(), Error> {
    match violation {
        None => Ok(()),
        Some(e) if lenient => {
            f(ClientEventRef::Violation(e));
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// A decimal ASCII number, as CONTENT_LENGTH carries.
fn decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::nv::{MAX_CONNS, MPXS_CONNS};
    use crate::fastcgi::record::{Header, Records};
    use crate::fastcgi::server;
    use proptest::prelude::*;

    const STDOUT_1_END: &[u8] = b"\x01\x06\x00\x01\x00\x00\x00\x00";
    const END_1_COMPLETE: &[u8] = b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\0\0\0\0";

    fn types(wire: &[u8]) -> Vec<(u8, bool)> {
        Records::new(wire)
            .map(|r| (r.header.record_type.0, r.content.is_empty()))
            .collect()
    }

    fn decode(config: Config, wire: &[u8]) -> Result<Vec<ClientEvent>, Error> {
        let mut conn = Conn::new(config);
        conn.handle_read(wire)?;
        Ok(std::iter::from_fn(|| conn.poll_event()).collect())
    }

    fn lenient() -> Config {
        Config {
            lenient: true,
            ..Config::default()
        }
    }

    fn responder<'a>(params: &'a [(&'a [u8], &'a [u8])], stdin: &'a [u8]) -> Request<'a> {
        Request {
            id: 1,
            role: Role::RESPONDER,
            keep_conn: false,
            params,
            stdin: Some(stdin),
            data: None,
        }
    }

    // ---- encoder (ws side) ----

    /// FCGI-5.1-1 / FCGI-5.1-2: BEGIN_REQUEST is 16 bytes with a nonzero ID; ID 0 is refused by check.
    #[test]
    fn fcgi_5_1_1_begin_request_nonzero_id() {
        let mut out = Vec::new();
        encode_begin_request(1, Role::RESPONDER, crate::fastcgi::KEEP_CONN, &mut out);
        assert_eq!(
            out,
            b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0"
        );
        assert!(responder(&[], b"").check().is_ok());
        let zero = Request {
            id: 0,
            ..responder(&[], b"")
        };
        assert_eq!(zero.check().map_err(|e| e.clause()), Err("FCGI-A-2"));
    }

    /// FCGI-6.1-2 / FCGI-6.2-3 / FCGI-6.4-2: PARAMS, then STDIN, then DATA, each terminated.
    #[test]
    fn fcgi_6_1_2_inputs_sequential() {
        let mut out = Vec::new();
        Request {
            id: 3,
            role: Role::FILTER,
            keep_conn: true,
            params: &[(b"A", b"1")],
            stdin: Some(b"form"),
            data: Some(b"file"),
        }
        .encode(&mut out);
        assert_eq!(
            types(&out),
            [
                (1, false),
                (4, false),
                (4, true),
                (5, false),
                (5, true),
                (8, false),
                (8, true)
            ]
        );
        assert!(Records::new(&out).all(|r| r.header.request_id == 3));
    }

    /// FCGI-6.4-2: a Filter's inputs are PARAMS, STDIN, DATA, in that order.
    #[test]
    fn fcgi_6_4_2_filter_input_order() {
        let mut out = Vec::new();
        Request {
            id: 1,
            role: Role::FILTER,
            keep_conn: false,
            params: &[],
            stdin: Some(b""),
            data: Some(b""),
        }
        .encode(&mut out);
        assert_eq!(types(&out), [(1, false), (4, true), (5, true), (8, true)]);
    }

    /// FCGI-6.1-7: the empty STDIN record is sent even without a body (FCGI-T-18).
    #[test]
    fn fcgi_6_1_7_empty_stdin_without_body() {
        let mut out = Vec::new();
        responder(&[], b"").encode(&mut out);
        assert_eq!(
            out.get(out.len() - 8..),
            Some(&b"\x01\x05\x00\x01\x00\x00\x00\x00"[..])
        );
    }

    /// FCGI-AMB-8: an Authorizer request may carry no STDIN stream at all.
    #[test]
    fn fcgi_amb_8_authorizer_without_stdin() {
        let mut out = Vec::new();
        Request {
            role: Role::AUTHORIZER,
            stdin: None,
            ..responder(&[], b"")
        }
        .encode(&mut out);
        assert_eq!(types(&out), [(1, false), (4, true)]);
    }

    /// FCGI-6.2-2 / FCGI-6.3-2 / FCGI-3.4-3 / FCGI-T-5: params go as PARAMS,
    /// split past 65535 bytes, and the server machine reads them back.
    #[test]
    fn fcgi_6_2_2_params_as_params_stream() {
        let big = vec![b'v'; 70_000];
        let params: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (&[b'n'; 127], b"x"),
            (&[b'n'; 128], b"y"),
            (b"BIG", &big),
        ];
        let mut out = Vec::new();
        responder(params, b"").encode(&mut out);
        assert!(types(&out).iter().filter(|t| t.0 == 4).count() >= 3);
        let mut app = server::Conn::default();
        app.handle_read(&out).unwrap();
        app.poll_event();
        let Some(server::Event::Params { params: got, .. }) = app.poll_event() else {
            panic!()
        };
        let want: Vec<(Vec<u8>, Vec<u8>)> = params
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got.to_vec(), want);
    }

    /// FCGI-6.1-9: no NUL in names or values.
    #[test]
    fn fcgi_6_1_9_no_nul_in_params() {
        assert_eq!(
            responder(&[(b"A", b"x\0")], b"").check(),
            Err(Error::NulInParam)
        );
        assert_eq!(
            responder(&[(b"A\0", b"x")], b"").check(),
            Err(Error::NulInParam)
        );
    }

    /// FCGI-6.2-4: no more STDIN than CONTENT_LENGTH.
    #[test]
    fn fcgi_6_2_4_stdin_within_content_length() {
        assert!(
            responder(&[(b"CONTENT_LENGTH", b"3")], b"abc")
                .check()
                .is_ok()
        );
        assert!(
            responder(&[(b"CONTENT_LENGTH", b"3")], b"ab")
                .check()
                .is_ok()
        );
        assert_eq!(
            responder(&[(b"CONTENT_LENGTH", b"3")], b"abcd").check(),
            Err(Error::StdinTooLong)
        );
    }

    /// FCGI-6.3-3: CONTENT_LENGTH, PATH_INFO, PATH_TRANSLATED, SCRIPT_NAME are withheld from Authorizers.
    #[test]
    fn fcgi_6_3_3_authorizer_withheld_params() {
        for name in AUTHORIZER_WITHHELD {
            let params: &[(&[u8], &[u8])] = &[(name, b"1")];
            let req = Request {
                role: Role::AUTHORIZER,
                stdin: None,
                ..responder(params, b"")
            };
            assert_eq!(req.check(), Err(Error::WithheldFromAuthorizer));
            // A Responder may get them.
            assert!(responder(params, b"").check().is_ok());
        }
    }

    /// FCGI-6.4-3 / FCGI-6.4-4: a Filter gets FCGI_DATA_LAST_MOD and
    /// FCGI_DATA_LENGTH, and no more DATA than announced.
    #[test]
    fn fcgi_6_4_3_filter_params() {
        let filter = |params, data| Request {
            role: Role::FILTER,
            data: Some(data),
            ..responder(params, b"")
        };
        assert_eq!(filter(&[], b"").check(), Err(Error::MissingFilterParam));
        let ok: &[(&[u8], &[u8])] = &[(b"FCGI_DATA_LAST_MOD", b"0"), (b"FCGI_DATA_LENGTH", b"4")];
        assert!(filter(ok, b"file").check().is_ok());
        assert_eq!(filter(ok, b"files").check(), Err(Error::DataTooLong));
    }

    /// FCGI-5.4-1 / FCGI-AMB-12: ABORT_REQUEST has no content.
    #[test]
    fn fcgi_5_4_1_abort_is_empty() {
        let mut out = Vec::new();
        encode_abort(9, &mut out);
        assert_eq!(out, b"\x01\x02\x00\x09\x00\x00\x00\x00");
    }

    /// FCGI-4.1-2: GET_VALUES is a management record with empty values.
    #[test]
    fn fcgi_4_1_2_get_values_query() {
        let mut out = Vec::new();
        encode_get_values(&[MPXS_CONNS], &mut out);
        assert_eq!(
            out,
            b"\x01\x09\x00\x00\x00\x11\x07\x00\x0f\x00FCGI_MPXS_CONNS\0\0\0\0\0\0\0"
        );
    }

    /// FCGI-3.3-15 / FCGI-T-4: a stream may be cut into one-byte records.
    #[test]
    fn fcgi_3_3_15_arbitrary_record_split() {
        let mut out = Vec::new();
        encode_stream_split(RecordType::STDIN, 1, b"quantity=100", 1, &mut out);
        encode_stream_split(RecordType::STDIN, 1, b"", 1, &mut out);
        let contents: Vec<&[u8]> = Records::new(&out).map(|r| r.content).collect();
        assert_eq!(contents.len(), 13);
        assert_eq!(contents.concat(), b"quantity=100");
    }

    /// FCGI-AMB-1 / FCGI-T-24: the raw writer produces deliberately wrong records.
    #[test]
    fn fcgi_amb_1_raw_record_any_field() {
        let mut out = Vec::new();
        RawRecord {
            content_length: 100,
            padding_length: 3,
            padding: b"JUNKJUNK",
            ..RawRecord::new(RecordType::STDIN, 0xBEEF, b"abc")
        }
        .encode(&mut out);
        assert_eq!(out, b"\x01\x05\xbe\xef\x00\x64\x03\x00abcJUNKJUNK");
        let mut out = Vec::new();
        RawRecord::new(RecordType::STDOUT, 1, b"hello").encode(&mut out);
        let mut reference = Vec::new();
        encode_record(RecordType::STDOUT, 1, b"hello", &mut reference);
        assert_eq!(out, reference);
    }

    // ---- decoder ----

    /// FCGI-3.3-15 / FCGI-3.3-6 / FCGI-6.2-5 / FCGI-T-19: multi-record STDOUT
    /// with padding and interleaved STDERR is delivered per record.
    #[test]
    fn fcgi_3_3_15_stdout_reassembled() {
        let mut wire = Vec::new();
        for (t, c, pad) in [
            (RecordType::STDOUT, &b"Status: 200\r\n"[..], 200u8),
            (RecordType::STDERR, b"warn\n", 0),
            (RecordType::STDOUT, b"\r\nbody", 1),
            (RecordType::STDOUT, b"", 5),
            (RecordType::STDERR, b"", 0),
        ] {
            Header {
                padding_length: pad,
                ..Header::new(t, 1, c.len() as u16)
            }
            .encode(&mut wire);
            wire.extend_from_slice(c);
            wire.extend(std::iter::repeat_n(0x55, usize::from(pad)));
        }
        wire.extend_from_slice(END_1_COMPLETE);
        let events = decode(Config::default(), &wire).unwrap();
        let stdout: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Stdout { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(stdout, b"Status: 200\r\n\r\nbody");
        assert!(events.contains(&ClientEvent::StderrEnd { id: 1 }));
        assert!(matches!(
            events.last(),
            Some(ClientEvent::EndRequest { id: 1, .. })
        ));
    }

    /// FCGI-6.1-7: END_REQUEST{REQUEST_COMPLETE} without the empty STDOUT is a violation.
    #[test]
    fn fcgi_6_1_7_missing_stdout_end() {
        let err = decode(Config::default(), END_1_COMPLETE).unwrap_err();
        assert_eq!(err.clause(), "FCGI-6.1-7");
        // A rejection needs no STDOUT (FCGI-5.5-4).
        let reject = b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\x01\0\0\0";
        assert!(decode(Config::default(), reject).is_ok());
        // Lenient: reported, then decoding goes on.
        let events = decode(lenient(), END_1_COMPLETE).unwrap();
        assert!(matches!(
            events[0],
            ClientEvent::Violation(Error::UnterminatedStream { .. })
        ));
        assert!(matches!(events[1], ClientEvent::EndRequest { .. }));
    }

    /// FCGI-6.1-6: a STDERR stream that was used must be terminated.
    #[test]
    fn fcgi_6_1_6_stderr_terminated() {
        let wire = [
            &b"\x01\x07\x00\x01\x00\x01\x07\x00x\0\0\0\0\0\0\0"[..],
            STDOUT_1_END,
            END_1_COMPLETE,
        ]
        .concat();
        assert_eq!(
            decode(Config::default(), &wire),
            Err(Error::UnterminatedStream {
                request_id: 1,
                record_type: RecordType::STDERR
            })
        );
    }

    /// FCGI-3.3-16: STDOUT after its end is a violation.
    #[test]
    fn fcgi_3_3_16_stdout_after_end() {
        let wire = [
            STDOUT_1_END,
            b"\x01\x06\x00\x01\x00\x01\x07\x00x\0\0\0\0\0\0\0",
        ]
        .concat();
        assert_eq!(
            decode(Config::default(), &wire).map_err(|e| e.clause()),
            Err("FCGI-3.3-16")
        );
        // Lenient: the violation, then the data anyway.
        let events = decode(lenient(), &wire).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[2],
            ClientEvent::Stdout {
                id: 1,
                data: b"x".to_vec()
            }
        );
    }

    /// FCGI-A-1: an application sending STDIN or BEGIN_REQUEST is a violation.
    #[test]
    fn fcgi_a_1_app_sends_ws_type() {
        assert_eq!(
            decode(Config::default(), b"\x01\x05\x00\x01\x00\x00\x00\x00"),
            Err(Error::WrongDirection(RecordType::STDIN))
        );
        assert_eq!(
            decode(Config::default(), b"\x01\x09\x00\x00\x00\x00\x00\x00"),
            Err(Error::WrongDirection(RecordType::GET_VALUES))
        );
    }

    /// FCGI-A-2: END_REQUEST with ID 0, GET_VALUES_RESULT with a nonzero ID.
    #[test]
    fn fcgi_a_2_app_request_ids() {
        assert_eq!(
            decode(
                Config::default(),
                b"\x01\x03\x00\x00\x00\x08\x00\x00\0\0\0\0\0\0\0\0"
            )
            .map_err(|e| e.clause()),
            Err("FCGI-A-2")
        );
        assert_eq!(
            decode(Config::default(), b"\x01\x0a\x00\x01\x00\x00\x00\x00").map_err(|e| e.clause()),
            Err("FCGI-A-2")
        );
    }

    /// FCGI-3.3-3 / FCGI-AMB-2: version 2 is an error; lenient mode reports it and goes on.
    #[test]
    fn fcgi_3_3_3_version_checked() {
        let wire = b"\x02\x06\x00\x01\x00\x00\x00\x00";
        assert_eq!(
            decode(Config::default(), wire),
            Err(Error::UnsupportedVersion(2))
        );
        assert_eq!(
            decode(lenient(), wire),
            Ok(vec![
                ClientEvent::Violation(Error::UnsupportedVersion(2)),
                ClientEvent::StdoutEnd { id: 1 }
            ])
        );
    }

    /// FCGI-5.5-2: END_REQUEST content must be 8 bytes.
    #[test]
    fn fcgi_5_5_2_end_request_length() {
        assert_eq!(
            decode(
                Config::default(),
                &[
                    STDOUT_1_END,
                    b"\x01\x03\x00\x01\x00\x04\x04\x00\0\0\0\0\0\0\0\0"
                ]
                .concat()
            ),
            Err(Error::EndRequestBodyLength(4))
        );
    }

    /// FCGI-3.3-9: with strict IDs, output for a request never begun (or ended) is a violation.
    #[test]
    fn fcgi_3_3_9_strict_ids() {
        let strict = Config {
            strict_ids: true,
            ..Config::default()
        };
        assert_eq!(decode(strict, STDOUT_1_END), Err(Error::InactiveRequest(1)));
        let mut conn = Conn::new(strict);
        conn.begin_request(1);
        conn.handle_read(&[STDOUT_1_END, END_1_COMPLETE].concat())
            .unwrap();
        assert!(!conn.is_active(1));
        // FCGI-6.1-3: nothing after END_REQUEST.
        assert_eq!(
            conn.handle_read(STDOUT_1_END),
            Err(Error::InactiveRequest(1))
        );
    }

    /// FCGI-4.1-3 / FCGI-4.2-1: management answers are decoded.
    #[test]
    fn fcgi_4_1_3_management_answers() {
        let mut wire = Vec::new();
        let mut content = Vec::new();
        encode_pair(MAX_CONNS, b"10", &mut content);
        encode_record(RecordType::GET_VALUES_RESULT, 0, &content, &mut wire);
        wire.extend_from_slice(b"\x01\x0b\x00\x00\x00\x08\x00\x00\xc8\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(
            decode(Config::default(), &wire),
            Ok(vec![
                ClientEvent::GetValuesResult {
                    pairs: vec![(MAX_CONNS.to_vec(), b"10".to_vec())]
                },
                ClientEvent::UnknownType {
                    record_type: RecordType(200)
                }
            ])
        );
    }

    /// FCGI-3.3-1: observing mode shows every record, including ones it skips.
    #[test]
    fn fcgi_3_3_1_observe_every_record() {
        let config = Config {
            observe_records: true,
            ..Config::default()
        };
        let wire = [&b"\x01\xc8\x00\x01\x00\x00\x00\x00"[..], STDOUT_1_END].concat();
        let events = decode(config, &wire).unwrap();
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[0], ClientEvent::Record(r) if r.header.record_type == RecordType(200))
        );
        assert_eq!(events[2], ClientEvent::StdoutEnd { id: 1 });
    }

    /// Zero-copy entry: STDOUT slices borrow the caller's buffer.
    #[test]
    fn fcgi_5_3_3_zero_copy_stdout() {
        let mut wire = Vec::new();
        encode_stream(RecordType::STDOUT, 1, b"abcdef", &mut wire);
        let base = wire.as_ptr() as usize;
        let mut conn = Conn::default();
        let mut seen = 0;
        conn.handle_read_with(&wire, |e| {
            if let ClientEventRef::Stdout { data, .. } = e {
                assert_eq!(data.as_ptr() as usize, base + 8);
                seen += 1;
            }
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert!(conn.poll_event().is_none());
    }

    /// End to end: the server machine's output decodes cleanly in strict mode.
    #[test]
    fn fcgi_t_1_server_to_client() {
        let mut app = server::Conn::default();
        let mut req = Vec::new();
        responder(&[(b"REQUEST_METHOD", b"GET")], b"").encode(&mut req);
        app.handle_read(&req).unwrap();
        app.write_stdout(1, b"Content-type: text/html\r\n\r\n")
            .unwrap();
        app.write_stderr(1, b"oops").unwrap();
        app.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        let mut out = Vec::new();
        app.poll_transmit(&mut out);
        let strict = Config {
            strict_ids: true,
            ..Config::default()
        };
        let mut conn = Conn::new(strict);
        conn.begin_request(1);
        conn.handle_read(&out).unwrap();
        let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
        assert_eq!(events.len(), 5);
    }

    // ---- property tests ----

    fn response_stream(requests: &[(u16, Vec<u8>, Vec<u8>, u32)], chunk: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut content = Vec::new();
        encode_pair(MPXS_CONNS, b"1", &mut content);
        encode_record(RecordType::GET_VALUES_RESULT, 0, &content, &mut wire);
        for (id, stdout, stderr, status) in requests {
            if !stdout.is_empty() {
                encode_stream_split(RecordType::STDOUT, *id, stdout, chunk, &mut wire);
            }
            if !stderr.is_empty() {
                encode_stream_split(RecordType::STDERR, *id, stderr, chunk, &mut wire);
                encode_stream(RecordType::STDERR, *id, &[], &mut wire);
            }
            encode_stream(RecordType::STDOUT, *id, &[], &mut wire);
            let body = EndRequestBody {
                app_status: *status,
                protocol_status: ProtocolStatus::REQUEST_COMPLETE,
            };
            encode_record(RecordType::END_REQUEST, *id, &body.to_bytes(), &mut wire);
        }
        wire
    }

    fn run(parts: &[&[u8]]) -> Vec<ClientEvent> {
        let mut conn = Conn::new(Config {
            observe_records: true,
            ..Config::default()
        });
        let mut events = Vec::new();
        for p in parts {
            assert_eq!(conn.handle_read(p), Ok(p.len()));
            events.extend(std::iter::from_fn(|| conn.poll_event()));
        }
        events
    }

    fn run_borrowed(parts: &[&[u8]]) -> Vec<ClientEvent> {
        let mut conn = Conn::default();
        let mut events = Vec::new();
        for p in parts {
            conn.handle_read_with(p, |e| events.push(e.to_owned_event()))
                .unwrap();
        }
        events
    }

    fn any_responses() -> impl Strategy<Value = Vec<(u16, Vec<u8>, Vec<u8>, u32)>> {
        proptest::collection::vec(
            (
                1u16..1000,
                proptest::collection::vec(any::<u8>(), 0..100),
                proptest::collection::vec(any::<u8>(), 0..20),
                any::<u32>(),
            ),
            1..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_client_split_at_every_byte(responses in any_responses(), chunk in 1usize..50) {
            let wire = response_stream(&responses, chunk);
            let whole = run(&[&wire]);
            let whole_borrowed = run_borrowed(&[&wire]);
            for at in 0..=wire.len() {
                let (a, b) = wire.split_at(at);
                prop_assert_eq!(&run(&[a, b]), &whole, "split at {}", at);
                prop_assert_eq!(&run_borrowed(&[a, b]), &whole_borrowed, "split at {}", at);
            }
        }

        #[test]
        fn prop_client_random_chunks(responses in any_responses(),
                                     cuts in proptest::collection::vec(1usize..70, 1..30)) {
            let wire = response_stream(&responses, 13);
            let whole = run(&[&wire]);
            let mut parts = Vec::new();
            let mut rest = &wire[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let (a, b) = rest.split_at((*c).min(rest.len()));
                parts.push(a);
                rest = b;
            }
            prop_assert_eq!(run(&parts), whole);
        }

        #[test]
        fn prop_client_lenient_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut conn = Conn::new(Config { lenient: true, observe_records: true, strict_ids: true });
            let _ = conn.handle_read(&bytes);
            while conn.poll_event().is_some() {}
        }
    }

    #[test]
    fn fcgi_rw_params_records_hold_whole_pairs() {
        // 3 pairs of ~30 KB each: no record boundary may fall inside a pair.
        let big = vec![b'v'; 30_000];
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"A", &big), (b"B", &big), (b"C", &big)];
        let mut out = Vec::new();
        encode_params(1, pairs.iter().copied(), &mut out);
        let contents: Vec<usize> = crate::fastcgi::Records::new(&out)
            .map(|r| r.content.len())
            .collect();
        let pair_len = crate::fastcgi::nv::encoded_pair_len(b"A", &big);
        assert_eq!(contents, vec![2 * pair_len, pair_len, 0]);
    }
}
