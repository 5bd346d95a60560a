//! The application-side connection machine: what portico's FastCGI listener drives.
//!
//! [`Conn`] takes the bytes a web server sent ([`Conn::handle_read`]), turns
//! them into [`Event`]s ([`Conn::poll_event`]), takes the application's output
//! as commands ([`Conn::write_stdout`], [`Conn::write_stderr`],
//! [`Conn::end_request`], [`Conn::reject`]) and hands back the bytes to send
//! ([`Conn::poll_transmit`]). It answers management records itself:
//! GET_VALUES with GET_VALUES_RESULT (FCGI-4.1-3, FCGI-4.1-7) and unknown
//! management types with UNKNOWN_TYPE (FCGI-4.2-1). It rejects, on its own,
//! BEGIN_REQUESTs it cannot take: a second request when multiplexing is off
//! (CANT_MPX_CONN, FCGI-5.5-5), one past the per-connection limit
//! (OVERLOADED, FCGI-5.5-6), an unknown role (UNKNOWN_ROLE, FCGI-5.5-7).
//!
//! **Buffering.** `handle_read` consumes all its input on success. A record
//! cut by the end of the input is copied into an internal buffer of at most
//! one record (65798 bytes) and completed by the next call, so input may be
//! split at any byte. STDIN and DATA content is copied once, from the input
//! into the event's own `Vec`; PARAMS content is gathered into one buffer per
//! request and handed over as a [`ParamBlock`] without a further copy.
//!
//! **Errors.** A protocol violation returns `Err` naming its clause
//! ([`Error::clause`]); the connection can no longer be trusted, so every
//! later `handle_read` returns the same error and the caller should close it
//! (FCGI-AMB-2, FCGI-AMB-14). Records that the spec says to ignore are
//! ignored silently: anything but BEGIN_REQUEST for an inactive request ID
//! (FCGI-3.3-10) — which covers ABORT_REQUEST for an unknown ID (FCGI-AMB-12)
//! and STDIN still in flight after END_REQUEST (FCGI-AMB-16) — input after
//! ABORT_REQUEST, and unknown types with a nonzero ID (FCGI-AMB-3).
//!
//! # Request states
//!
//! Each active request ID has its own input state:
//!
//! ```text
//!              BEGIN_REQUEST accepted
//!  inactive ─────────────────────────▶ Params ──empty PARAMS──▶ Stdin ──empty STDIN──▶ Data ──empty DATA──▶ Complete
//!   ▲   │                                │                        │                      │                    │
//!   │   │ BEGIN_REQUEST rejected         │        end_request / reject (from any active state)                │
//!   │   └──▶ END_REQUEST{CANT_MPX_CONN | ▼                        ▼                      ▼                    ▼
//!   │        OVERLOADED | UNKNOWN_ROLE}  ├────────────────────────┴──────────────────────┴────────────────────┘
//!   └────────────────────────────────────┘  (empty STDOUT, empty STDERR if any was sent, END_REQUEST)
//!
//!  ABORT_REQUEST in any active state: Event::Abort; later input for the ID is ignored;
//!  the ID stays active until the application calls end_request (FCGI-5.4-2, FCGI-5.4-3).
//! ```
//!
//! Output is allowed once the inputs before the final one have ended
//! (FCGI-6.1-8): after PARAMS for Responder and Authorizer (FCGI-6.2-6),
//! after STDIN for Filter (FCGI-6.4-6).
//!
//! # Example
//!
//! ```
//! use portico_protocols::fastcgi::server::{Config, Conn, Event};
//! use portico_protocols::fastcgi::{client, ProtocolStatus, Role};
//!
//! // What a web server sends: a Responder request with one param and no body.
//! let mut wire = Vec::new();
//! client::Request {
//!     id: 1,
//!     role: Role::RESPONDER,
//!     keep_conn: false,
//!     params: &[(b"REQUEST_METHOD", b"GET")],
//!     stdin: Some(b""),
//!     data: None,
//! }
//! .encode(&mut wire);
//!
//! let mut conn = Conn::new(Config::default());
//! assert_eq!(conn.handle_read(&wire)?, wire.len());
//! assert!(matches!(conn.poll_event(), Some(Event::BeginRequest { id: 1, .. })));
//! let Some(Event::Params { params, .. }) = conn.poll_event() else { panic!() };
//! assert_eq!(params.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
//! assert_eq!(conn.poll_event(), Some(Event::StdinEnd { id: 1 }));
//!
//! conn.write_stdout(1, b"Content-Type: text/plain\r\n\r\nhi")?;
//! conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)?;
//! let mut out = Vec::new();
//! conn.poll_transmit(&mut out);
//! assert!(out.ends_with(b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\0\0\0\0"));
//! assert!(conn.wants_close()); // KEEP_CONN was clear (FCGI-5.1-5)
//! # Ok::<(), portico_protocols::fastcgi::Error>(())
//! ```

use std::collections::{BTreeMap, VecDeque};

use super::Error;
use super::body::{BeginRequestBody, EndRequestBody, UnknownTypeBody};
use super::nv::{Capabilities, ParamBlock, answer_get_values};
use super::record::{
    Framer, NULL_REQUEST_ID, ProtocolStatus, Record, RecordType, Role, VERSION_1, encode_record,
    encode_stream,
};

/// Default `FCGI_MAX_CONNS` answer: 1024.
pub const DEFAULT_MAX_CONNS: u32 = 1024;
/// Default `FCGI_MAX_REQS` answer: 1024.
pub const DEFAULT_MAX_REQS: u32 = 1024;
/// Default limit on one request's PARAMS stream (encoded bytes): 1 MiB.
pub const DEFAULT_MAX_PARAMS_LEN: usize = 1 << 20;
/// Default limit on concurrently active requests per connection: 64.
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// Settings of a [`Conn`]. Every field's default is stated on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `FCGI_MAX_CONNS` answered to GET_VALUES (advisory, FCGI-AMB-17).
    /// Default [`DEFAULT_MAX_CONNS`].
    pub max_conns: u32,
    /// `FCGI_MAX_REQS` answered to GET_VALUES (advisory, FCGI-AMB-17).
    /// Default [`DEFAULT_MAX_REQS`].
    pub max_reqs: u32,
    /// `FCGI_MPXS_CONNS` answered to GET_VALUES; when `false`, a BEGIN_REQUEST
    /// while another request is active is rejected with CANT_MPX_CONN
    /// (FCGI-5.5-5). Default `true`.
    pub mpxs_conns: bool,
    /// Most encoded PARAMS bytes one request may send; more is
    /// [`Error::ParamsTooLarge`] (FCGI-AMB-5). Default [`DEFAULT_MAX_PARAMS_LEN`].
    pub max_params_len: usize,
    /// Most requests active at once on this connection; a BEGIN_REQUEST past it
    /// is rejected with OVERLOADED (FCGI-5.5-6). Default [`DEFAULT_MAX_REQUESTS`].
    pub max_requests: usize,
    /// Reject roles other than Responder, Authorizer and Filter with
    /// UNKNOWN_ROLE (FCGI-5.5-7) instead of reporting them. Default `true`.
    pub reject_unknown_roles: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: DEFAULT_MAX_CONNS,
            max_reqs: DEFAULT_MAX_REQS,
            mpxs_conns: true,
            max_params_len: DEFAULT_MAX_PARAMS_LEN,
            max_requests: DEFAULT_MAX_REQUESTS,
            reject_unknown_roles: true,
        }
    }
}

/// What the web server asked for, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request became active (FCGI-3.3-9).
    BeginRequest {
        /// Request ID.
        id: u16,
        /// Requested role.
        role: Role,
        /// `FCGI_KEEP_CONN`: if clear, the connection closes after this request.
        keep_conn: bool,
    },
    /// The whole PARAMS stream, delivered once its empty record arrived.
    Params {
        /// Request ID.
        id: u16,
        /// The pairs, validated.
        params: ParamBlock,
    },
    /// One STDIN record's content (never empty).
    Stdin {
        /// Request ID.
        id: u16,
        /// The bytes, copied once from the input.
        data: Vec<u8>,
    },
    /// STDIN ended.
    StdinEnd {
        /// Request ID.
        id: u16,
    },
    /// One DATA record's content (never empty).
    Data {
        /// Request ID.
        id: u16,
        /// The bytes, copied once from the input.
        data: Vec<u8>,
    },
    /// DATA ended.
    DataEnd {
        /// Request ID.
        id: u16,
    },
    /// The web server aborted the request; answer with [`Conn::end_request`]
    /// once the work has stopped (FCGI-5.4-2, FCGI-5.4-3).
    Abort {
        /// Request ID.
        id: u16,
    },
}

/// One FastCGI transport connection, application side. See the [module docs](self).
#[derive(Debug)]
pub struct Conn {
    framer: Framer,
    state: State,
    error: Option<Error>,
}

impl Conn {
    /// A fresh connection with no active request.
    pub fn new(config: Config) -> Self {
        Conn {
            framer: Framer::default(),
            state: State {
                config,
                requests: BTreeMap::new(),
                events: VecDeque::new(),
                tx: Vec::new(),
                close_pending: false,
            },
            error: None,
        }
    }

    /// Feeds bytes read from the web server. On success all of `input` is
    /// consumed (a trailing partial record is buffered) and the count returned.
    ///
    /// After an error the connection is unusable: this and every later call
    /// return that error.
    pub fn handle_read(&mut self, input: &[u8]) -> Result<usize, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let state = &mut self.state;
        match self.framer.feed(input, |record| state.on_record(record)) {
            Ok(()) => Ok(input.len()),
            Err(e) => {
                self.error = Some(e);
                Err(e)
            }
        }
    }

    /// The next event, in arrival order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.state.events.pop_front()
    }

    /// Sends STDOUT bytes for request `id`, split into records as needed.
    /// Empty `data` sends nothing: the stream is ended by [`Conn::end_request`].
    ///
    /// Errors: [`Error::InactiveRequest`] if `id` is not active (FCGI-6.1-3:
    /// nothing after END_REQUEST); [`Error::OutputBeforeInput`] if the inputs
    /// output must wait for have not ended (FCGI-6.1-8).
    pub fn write_stdout(&mut self, id: u16, data: &[u8]) -> Result<(), Error> {
        self.state.write(RecordType::STDOUT, id, data)
    }

    /// Sends STDERR bytes for request `id`; STDOUT and STDERR may interleave
    /// freely (FCGI-6.1-3, FCGI-6.2-5). Errors as [`Conn::write_stdout`].
    pub fn write_stderr(&mut self, id: u16, data: &[u8]) -> Result<(), Error> {
        self.state.write(RecordType::STDERR, id, data)
    }

    /// Ends request `id`: the empty STDOUT record (always for
    /// REQUEST_COMPLETE, FCGI-6.1-7, and whenever STDOUT data was sent), the
    /// empty STDERR record if STDERR data was sent (FCGI-6.1-6), then
    /// END_REQUEST (FCGI-5.5-1, FCGI-6.2-7). The ID becomes inactive
    /// (FCGI-3.3-9). If the request lacked KEEP_CONN the connection is to be
    /// closed once no request remains ([`Conn::wants_close`], FCGI-5.1-5).
    ///
    /// Errors: [`Error::InactiveRequest`] if `id` is not active.
    pub fn end_request(
        &mut self,
        id: u16,
        app_status: u32,
        protocol_status: ProtocolStatus,
    ) -> Result<(), Error> {
        self.state.end(id, app_status, protocol_status)
    }

    /// Rejects request `id` after its BEGIN_REQUEST event with
    /// `END_REQUEST{0, status}` — `CANT_MPX_CONN`, `OVERLOADED` or
    /// `UNKNOWN_ROLE` (FCGI-5.5-4) — and no stream records.
    ///
    /// Errors: [`Error::InactiveRequest`] if `id` is not active.
    pub fn reject(&mut self, id: u16, status: ProtocolStatus) -> Result<(), Error> {
        self.state.end(id, 0, status)
    }

    /// Appends every byte waiting to be sent to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            std::mem::swap(out, &mut self.state.tx);
        } else {
            out.append(&mut self.state.tx);
        }
    }

    /// Bytes waiting for [`Conn::poll_transmit`].
    pub fn pending_transmit(&self) -> usize {
        self.state.tx.len()
    }

    /// `true` once the application must close the connection: a request
    /// without KEEP_CONN has been ended (FCGI-5.1-5) and no request remains
    /// active (FCGI-AMB-11). Flush [`Conn::poll_transmit`] first. Never `true`
    /// while only KEEP_CONN requests were served (FCGI-5.1-6).
    pub fn wants_close(&self) -> bool {
        self.state.close_pending && self.state.requests.is_empty()
    }

    /// `true` if request `id` is active.
    pub fn is_active(&self, id: u16) -> bool {
        self.state.requests.contains_key(&id)
    }

    /// The number of active requests.
    pub fn active_requests(&self) -> usize {
        self.state.requests.len()
    }
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new(Config::default())
    }
}

/// The `FCGI_WEB_SERVER_ADDRS` allow-list: after each `accept`, a peer not
/// in the list is disconnected (FCGI-3.2-2). The list is comma-separated IP
/// literals (FCGI-3.2-3); IPv6 literals are accepted too (FCGI-AMB-13).
///
/// `core::net::IpAddr` is a plain value type: no socket is touched here.
///
/// ```
/// use portico_protocols::fastcgi::server::WebServerAddrs;
/// let addrs = WebServerAddrs::parse("199.170.183.28, 199.170.183.71").unwrap();
/// assert!(addrs.allows(Some("199.170.183.71".parse().unwrap())));
/// assert!(!addrs.allows(Some("10.0.0.1".parse().unwrap())));
/// assert!(!addrs.allows(None)); // not a TCP/IP peer (a Unix socket)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebServerAddrs {
    addrs: Vec<core::net::IpAddr>,
}

impl WebServerAddrs {
    /// Parses the variable's value; `None` if an entry is not an IP literal.
    /// Blanks around entries and empty entries are skipped.
    pub fn parse(value: &str) -> Option<Self> {
        let addrs = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(WebServerAddrs { addrs })
    }

    /// `true` if the peer may stay connected. `None` stands for a peer that is
    /// not TCP/IP, which fails the check (FCGI-3.2-2). IPv4-mapped IPv6 peers
    /// match their IPv4 entry.
    pub fn allows(&self, peer: Option<core::net::IpAddr>) -> bool {
        // FCGI-3.2-2: only listed TCP/IP peers.
        peer.is_some_and(|p| {
            let p = p.to_canonical();
            self.addrs.iter().any(|a| a.to_canonical() == p)
        })
    }
}

#[derive(Debug)]
struct State {
    config: Config,
    requests: BTreeMap<u16, Request>,
    events: VecDeque<Event>,
    tx: Vec<u8>,
    close_pending: bool,
}

/// One active request.
#[derive(Debug)]
struct Request {
    role: Role,
    keep_conn: bool,
    input: Input,
    aborted: bool,
    stdout_sent: bool,
    stderr_sent: bool,
}

impl Request {
    /// FCGI-6.1-8: output waits for every input but the final one.
    fn may_write(&self) -> bool {
        if self.role == Role::FILTER {
            // FCGI-6.4-6: a Filter finishes reading STDIN first.
            matches!(self.input, Input::Data | Input::Complete)
        } else {
            // FCGI-6.2-6: a Responder (and an Authorizer) finishes reading PARAMS first.
            !matches!(self.input, Input::Params(_))
        }
    }
}

/// Which input stream a request is reading (FCGI-6.1-2: PARAMS, STDIN, DATA).
#[derive(Debug)]
enum Input {
    /// Gathering PARAMS content.
    Params(Vec<u8>),
    /// PARAMS ended; reading STDIN.
    Stdin,
    /// STDIN ended; reading DATA.
    Data,
    /// DATA ended.
    Complete,
}

impl State {
    fn on_record(&mut self, record: Record<'_>) -> Result<(), Error> {
        let header = record.header;
        // FCGI-3.3-3, FCGI-AMB-2: only version 1; anything else closes the connection.
        if header.version != VERSION_1 {
            return Err(Error::UnsupportedVersion(header.version));
        }
        let (t, id) = (header.record_type, header.request_id);
        if id == NULL_REQUEST_ID {
            return self.on_management(t, record.content);
        }
        if t == RecordType::BEGIN_REQUEST {
            return self.on_begin(id, record.content);
        }
        let Some(request) = self.requests.get_mut(&id) else {
            // FCGI-3.3-10: every record but BEGIN_REQUEST for an inactive ID is
            // ignored: ABORT for an unknown ID (FCGI-AMB-12), STDIN in flight
            // after END_REQUEST (FCGI-AMB-16), records of a rejected request.
            return Ok(());
        };
        match t {
            RecordType::ABORT_REQUEST => {
                // FCGI-AMB-12: content ignored. A repeated ABORT is harmless.
                if !request.aborted {
                    request.aborted = true;
                    self.events.push_back(Event::Abort { id });
                }
                Ok(())
            }
            RecordType::PARAMS | RecordType::STDIN | RecordType::DATA => {
                if request.aborted {
                    // Input crossing our abort handling is dropped.
                    return Ok(());
                }
                on_input(
                    request,
                    &mut self.events,
                    self.config.max_params_len,
                    id,
                    t,
                    record.content,
                )
            }
            // FCGI-A-1: END_REQUEST, STDOUT, STDERR travel only to the web server.
            _ if t.is_from_application() => Err(Error::WrongDirection(t)),
            // FCGI-A-2: GET_VALUES uses request ID 0.
            RecordType::GET_VALUES => Err(Error::WrongRequestId {
                record_type: t,
                request_id: id,
            }),
            // FCGI-AMB-3: an unknown type with a nonzero ID is skipped.
            _ => Ok(()),
        }
    }

    fn on_management(&mut self, t: RecordType, content: &[u8]) -> Result<(), Error> {
        match t {
            RecordType::GET_VALUES => {
                // FCGI-4.1-3, FCGI-4.1-4: answer the known names only; FCGI-4.1-6:
                // at any time; FCGI-4.1-7: by the protocol layer.
                let capabilities = Capabilities {
                    max_conns: self.config.max_conns,
                    max_reqs: self.config.max_reqs,
                    mpxs_conns: self.config.mpxs_conns,
                };
                let mut answer = Vec::new();
                answer_get_values(content, &capabilities, &mut answer)?;
                encode_record(RecordType::GET_VALUES_RESULT, 0, &answer, &mut self.tx);
                Ok(())
            }
            // FCGI-A-1: types the application sends never come to it.
            _ if t.is_from_application() => Err(Error::WrongDirection(t)),
            // FCGI-A-2: application types never use request ID 0.
            _ if t.is_known() => Err(Error::WrongRequestId {
                record_type: t,
                request_id: NULL_REQUEST_ID,
            }),
            _ => {
                // FCGI-4.2-1: an unknown management type is echoed in UNKNOWN_TYPE.
                let body = UnknownTypeBody { record_type: t };
                encode_record(RecordType::UNKNOWN_TYPE, 0, &body.to_bytes(), &mut self.tx);
                Ok(())
            }
        }
    }

    fn on_begin(&mut self, id: u16, content: &[u8]) -> Result<(), Error> {
        // FCGI-5.1-2: the body is 8 bytes.
        let body = BeginRequestBody::parse(content)?;
        // FCGI-AMB-14: BEGIN_REQUEST for an active ID is a protocol error.
        if self.requests.contains_key(&id) {
            return Err(Error::DuplicateRequest(id));
        }
        let keep_conn = body.keep_conn();
        let rejection = if self.config.reject_unknown_roles && !body.role.is_known() {
            // FCGI-5.5-7
            Some(ProtocolStatus::UNKNOWN_ROLE)
        } else if !self.config.mpxs_conns && !self.requests.is_empty() {
            // FCGI-5.5-5
            Some(ProtocolStatus::CANT_MPX_CONN)
        } else if self.requests.len() >= self.config.max_requests {
            // FCGI-5.5-6
            Some(ProtocolStatus::OVERLOADED)
        } else {
            None
        };
        if let Some(status) = rejection {
            // FCGI-5.5-1: a rejected request is still answered with END_REQUEST;
            // the ID never becomes active, so its further records are ignored.
            self.send_end_request(id, 0, status);
            // FCGI-5.1-5: the rejection is this request's response.
            self.close_pending |= !keep_conn;
            return Ok(());
        }
        // FCGI-3.3-9: the ID is active from BEGIN_REQUEST on.
        self.requests.insert(
            id,
            Request {
                role: body.role,
                keep_conn,
                input: Input::Params(Vec::new()),
                aborted: false,
                stdout_sent: false,
                stderr_sent: false,
            },
        );
        self.events.push_back(Event::BeginRequest {
            id,
            role: body.role,
            keep_conn,
        });
        Ok(())
    }

    fn write(&mut self, t: RecordType, id: u16, data: &[u8]) -> Result<(), Error> {
        // FCGI-6.1-3: nothing for a request after its END_REQUEST.
        let request = self
            .requests
            .get_mut(&id)
            .ok_or(Error::InactiveRequest(id))?;
        // FCGI-6.1-8, FCGI-6.2-6, FCGI-6.4-6.
        if !request.may_write() {
            return Err(Error::OutputBeforeInput(id));
        }
        // FCGI-3.3-16: an empty record would end the stream early.
        if data.is_empty() {
            return Ok(());
        }
        if t == RecordType::STDERR {
            request.stderr_sent = true;
        } else {
            request.stdout_sent = true;
        }
        encode_stream(t, id, data, &mut self.tx);
        Ok(())
    }

    fn end(&mut self, id: u16, app_status: u32, status: ProtocolStatus) -> Result<(), Error> {
        let request = self
            .requests
            .remove(&id)
            .ok_or(Error::InactiveRequest(id))?;
        // FCGI-6.1-7: at least the empty STDOUT record for a completed request;
        // FCGI-3.3-16: every stream sent is ended.
        if status == ProtocolStatus::REQUEST_COMPLETE || request.stdout_sent {
            encode_stream(RecordType::STDOUT, id, &[], &mut self.tx);
        }
        // FCGI-6.1-6: STDERR is ended only if it was used.
        if request.stderr_sent {
            encode_stream(RecordType::STDERR, id, &[], &mut self.tx);
        }
        // FCGI-6.1-3: END_REQUEST last. FCGI-3.3-9: the ID becomes inactive.
        self.send_end_request(id, app_status, status);
        // FCGI-5.1-5 / FCGI-5.1-6.
        self.close_pending |= !request.keep_conn;
        Ok(())
    }

    fn send_end_request(&mut self, id: u16, app_status: u32, protocol_status: ProtocolStatus) {
        let body = EndRequestBody {
            app_status,
            protocol_status,
        };
        encode_record(RecordType::END_REQUEST, id, &body.to_bytes(), &mut self.tx);
    }
}

/// A PARAMS, STDIN or DATA record for an active, unaborted request.
fn on_input(
    request: &mut Request,
    events: &mut VecDeque<Event>,
    max_params_len: usize,
    id: u16,
    t: RecordType,
    content: &[u8],
) -> Result<(), Error> {
    // FCGI-3.3-16: the first empty record of a stream ends it.
    let end = content.is_empty();
    match (t, &mut request.input) {
        (RecordType::PARAMS, Input::Params(buf)) => {
            if end {
                // FCGI-5.2-3: pairs are decoded from the concatenated stream,
                // whatever the record boundaries; FCGI-3.4-1: a cut pair is an error.
                let params = ParamBlock::parse(std::mem::take(buf))?;
                request.input = Input::Stdin;
                events.push_back(Event::Params { id, params });
            } else {
                // FCGI-AMB-5: bounded before anything is appended.
                let len = buf.len().saturating_add(content.len());
                if len > max_params_len {
                    return Err(Error::ParamsTooLarge(id));
                }
                buf.extend_from_slice(content);
            }
        }
        (RecordType::STDIN, Input::Stdin) => {
            if end {
                request.input = Input::Data;
                events.push_back(Event::StdinEnd { id });
            } else {
                events.push_back(Event::Stdin {
                    id,
                    data: content.to_vec(),
                });
            }
        }
        (RecordType::DATA, Input::Data) => {
            if end {
                request.input = Input::Complete;
                events.push_back(Event::DataEnd { id });
            } else {
                events.push_back(Event::Data {
                    id,
                    data: content.to_vec(),
                });
            }
        }
        // FCGI-6.1-2: all of PARAMS before STDIN, all of STDIN before DATA.
        (RecordType::STDIN, Input::Params(_))
        | (RecordType::DATA, Input::Params(_) | Input::Stdin) => {
            return Err(Error::StreamOutOfOrder {
                request_id: id,
                record_type: t,
            });
        }
        // FCGI-3.3-16: nothing of a stream after its empty record.
        _ => {
            return Err(Error::StreamAfterEnd {
                request_id: id,
                record_type: t,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::nv::{MAX_CONNS, MAX_REQS, MPXS_CONNS, NameValues, encode_pair};
    use crate::fastcgi::record::{Header, RecordBuf, Records};
    use proptest::prelude::*;

    const BEGIN_1_KEEP: &[u8] = b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0";
    const BEGIN_1_CLOSE: &[u8] = b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\0\0\0\0\0";
    const BEGIN_2_KEEP: &[u8] = b"\x01\x01\x00\x02\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0";
    const PARAMS_1_END: &[u8] = b"\x01\x04\x00\x01\x00\x00\x00\x00";
    const STDIN_1_END: &[u8] = b"\x01\x05\x00\x01\x00\x00\x00\x00";
    const END_1_COMPLETE: &[u8] = b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\0\0\0\0";
    const STDOUT_1_END: &[u8] = b"\x01\x06\x00\x01\x00\x00\x00\x00";

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn feed(conn: &mut Conn, bytes: &[u8]) -> Vec<Event> {
        conn.handle_read(bytes).expect("valid input");
        std::iter::from_fn(|| conn.poll_event()).collect()
    }

    fn sent(conn: &mut Conn) -> Vec<RecordBuf> {
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        let mut records = Records::new(&out);
        let v: Vec<_> = records.by_ref().map(|r| r.to_owned_record()).collect();
        assert!(records.rest().is_empty());
        v
    }

    fn record(t: RecordType, id: u16, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(t, id, content, &mut out);
        out
    }

    /// A request up to the end of PARAMS.
    fn started(begin: &[u8]) -> Conn {
        let mut conn = Conn::default();
        feed(&mut conn, &cat(&[begin, PARAMS_1_END]));
        conn
    }

    /// FCGI-3.3-9: an ID is active from BEGIN_REQUEST until END_REQUEST is sent.
    #[test]
    fn fcgi_3_3_9_active_between_begin_and_end() {
        let mut conn = Conn::default();
        assert!(!conn.is_active(1));
        let events = feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(
            events,
            [Event::BeginRequest {
                id: 1,
                role: Role::RESPONDER,
                keep_conn: true
            }]
        );
        assert!(conn.is_active(1));
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(!conn.is_active(1));
        assert_eq!(
            conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE),
            Err(Error::InactiveRequest(1))
        );
    }

    /// FCGI-3.3-10: records for an inactive ID are ignored (also FCGI-AMB-12, FCGI-AMB-16).
    #[test]
    fn fcgi_3_3_10_inactive_id_ignored() {
        let mut conn = Conn::default();
        let junk = cat(&[
            b"\x01\x05\x00\x07\x00\x03\x05\x00abc\0\0\0\0\0", // STDIN for 7
            b"\x01\x02\x00\x07\x00\x00\x00\x00",              // ABORT for 7
            b"\x01\x04\x00\x07\x00\x01\x07\x00\x05\0\0\0\0\0\0\0", // PARAMS for 7
            b"\x01\x06\x00\x07\x00\x00\x00\x00",              // STDOUT for 7
        ]);
        assert_eq!(feed(&mut conn, &junk), []);
        assert!(sent(&mut conn).is_empty());
        // The connection is still usable.
        assert_eq!(feed(&mut conn, BEGIN_1_KEEP).len(), 1);
    }

    /// FCGI-AMB-16: STDIN still arriving after END_REQUEST is ignored.
    #[test]
    fn fcgi_amb_16_stdin_after_end_request_ignored() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert_eq!(
            feed(
                &mut conn,
                b"\x01\x05\x00\x01\x00\x01\x07\x00x\0\0\0\0\0\0\0"
            ),
            []
        );
        assert_eq!(feed(&mut conn, STDIN_1_END), []);
    }

    /// FCGI-3.3-16: a stream record after the stream's end is an error.
    #[test]
    fn fcgi_3_3_16_params_after_end() {
        let mut conn = started(BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(PARAMS_1_END),
            Err(Error::StreamAfterEnd {
                request_id: 1,
                record_type: RecordType::PARAMS
            })
        );
        // Poisoned: the same error again.
        assert!(conn.handle_read(b"").is_err());
        let mut conn = started(BEGIN_1_KEEP);
        feed(&mut conn, STDIN_1_END);
        assert_eq!(
            conn.handle_read(STDIN_1_END).map_err(|e| e.clause()),
            Err("FCGI-3.3-16")
        );
    }

    /// FCGI-6.1-2: STDIN before PARAMS ended, DATA before STDIN ended are errors.
    #[test]
    fn fcgi_6_1_2_inputs_in_order() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(STDIN_1_END),
            Err(Error::StreamOutOfOrder {
                request_id: 1,
                record_type: RecordType::STDIN
            })
        );
        let mut conn = started(BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(b"\x01\x08\x00\x01\x00\x00\x00\x00")
                .map_err(|e| e.clause()),
            Err("FCGI-6.1-2")
        );
    }

    /// FCGI-3.3-3 / FCGI-AMB-2: a version other than 1 is an error.
    #[test]
    fn fcgi_3_3_3_bad_version() {
        let mut conn = Conn::default();
        assert_eq!(
            conn.handle_read(b"\x02\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0"),
            Err(Error::UnsupportedVersion(2))
        );
    }

    /// FCGI-5.1-2: a BEGIN_REQUEST body of the wrong length is an error.
    #[test]
    fn fcgi_5_1_2_begin_body_length() {
        let mut conn = Conn::default();
        assert_eq!(
            conn.handle_read(b"\x01\x01\x00\x01\x00\x07\x01\x00\x00\x01\x01\0\0\0\0\0"),
            Err(Error::BeginRequestBodyLength(7))
        );
    }

    /// FCGI-AMB-14: BEGIN_REQUEST for an active ID is an error.
    #[test]
    fn fcgi_amb_14_duplicate_begin() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(BEGIN_1_KEEP),
            Err(Error::DuplicateRequest(1))
        );
    }

    /// FCGI-AMB-5: PARAMS past the limit fail before being buffered.
    #[test]
    fn fcgi_amb_5_params_limit() {
        let mut conn = Conn::new(Config {
            max_params_len: 16,
            ..Config::default()
        });
        feed(&mut conn, BEGIN_1_KEEP);
        feed(&mut conn, &record(RecordType::PARAMS, 1, &[1; 16]));
        assert_eq!(
            conn.handle_read(&record(RecordType::PARAMS, 1, &[1])),
            Err(Error::ParamsTooLarge(1))
        );
    }

    /// FCGI-3.4-1: a PARAMS stream ending inside a pair is an error.
    #[test]
    fn fcgi_3_4_1_malformed_params() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        feed(&mut conn, &record(RecordType::PARAMS, 1, b"\x0b\x02SERVER"));
        assert_eq!(
            conn.handle_read(PARAMS_1_END),
            Err(Error::MalformedNameValue)
        );
    }

    /// FCGI-5.2-3: pairs are decoded across PARAMS records, split even inside a
    /// length field and a name (FCGI-B-2, FCGI-T-4).
    #[test]
    fn fcgi_5_2_3_params_split_across_records() {
        let mut content = Vec::new();
        encode_pair(b"SERVER_PORT", b"80", &mut content);
        encode_pair(b"X", &[b'v'; 300], &mut content);
        let mut wire = BEGIN_1_KEEP.to_vec();
        for byte in &content {
            encode_record(RecordType::PARAMS, 1, std::slice::from_ref(byte), &mut wire);
        }
        wire.extend_from_slice(PARAMS_1_END);
        let mut conn = Conn::default();
        let events = feed(&mut conn, &wire);
        let Some(Event::Params { params, .. }) = events.get(1) else {
            panic!("{events:?}")
        };
        assert_eq!(params.get(b"SERVER_PORT"), Some(&b"80"[..]));
        assert_eq!(params.get(b"X").map(<[u8]>::len), Some(300));
    }

    /// FCGI-5.2-2: the order of pairs carries no meaning; the block keeps it as sent.
    #[test]
    fn fcgi_5_2_2_params_any_order() {
        let mut content = Vec::new();
        encode_pair(b"B", b"2", &mut content);
        encode_pair(b"A", b"1", &mut content);
        let wire = cat(&[
            BEGIN_1_KEEP,
            &record(RecordType::PARAMS, 1, &content),
            PARAMS_1_END,
        ]);
        let mut conn = Conn::default();
        let events = feed(&mut conn, &wire);
        let Some(Event::Params { params, .. }) = events.get(1) else {
            panic!()
        };
        assert_eq!(params.get(b"A"), Some(&b"1"[..]));
        assert_eq!(params.to_vec()[0].0, b"B");
    }

    fn get_values(names: &[&[u8]]) -> Vec<u8> {
        let mut content = Vec::new();
        crate::fastcgi::nv::encode_get_values_query(names, &mut content);
        record(RecordType::GET_VALUES, 0, &content)
    }

    fn result_pairs(r: &RecordBuf) -> Vec<(Vec<u8>, Vec<u8>)> {
        NameValues::new(&r.content)
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    /// FCGI-4.1-3 / FCGI-4.1-4: GET_VALUES is answered with the known names only (FCGI-T-6).
    #[test]
    fn fcgi_4_1_3_get_values_answered() {
        let mut conn = Conn::new(Config {
            max_conns: 10,
            max_reqs: 50,
            mpxs_conns: false,
            ..Config::default()
        });
        let query = get_values(&[MAX_CONNS, MAX_REQS, MPXS_CONNS, b"PORTICO_NOPE"]);
        assert_eq!(&query[..8], b"\x01\x09\x00\x00\x00\x3e\x02\x00");
        assert_eq!(feed(&mut conn, &query), []);
        let out = sent(&mut conn);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].header.record_type, RecordType::GET_VALUES_RESULT);
        assert_eq!(out[0].header.request_id, 0);
        assert_eq!(
            result_pairs(&out[0]),
            vec![
                (MAX_CONNS.to_vec(), b"10".to_vec()),
                (MAX_REQS.to_vec(), b"50".to_vec()),
                (MPXS_CONNS.to_vec(), b"0".to_vec()),
            ]
        );
    }

    /// FCGI-4.1-4: a query of unknown names only gets an empty answer.
    #[test]
    fn fcgi_4_1_4_unknown_name_left_out() {
        let mut conn = Conn::default();
        feed(&mut conn, &get_values(&[b"PORTICO_NOPE"]));
        let out = sent(&mut conn);
        assert_eq!(out[0].header.content_length, 0);
    }

    /// FCGI-4.1-6: GET_VALUES in the middle of a request is answered; the request goes on.
    #[test]
    fn fcgi_4_1_6_get_values_any_time() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(feed(&mut conn, &get_values(&[MPXS_CONNS])), []);
        assert_eq!(sent(&mut conn)[0].content, b"\x0f\x01FCGI_MPXS_CONNS1");
        let events = feed(&mut conn, &cat(&[PARAMS_1_END, STDIN_1_END]));
        assert_eq!(events.len(), 2);
    }

    /// FCGI-4.2-1: an unknown management type is answered with UNKNOWN_TYPE (FCGI-T-8).
    #[test]
    fn fcgi_4_2_1_unknown_management_type() {
        let mut conn = Conn::default();
        feed(
            &mut conn,
            b"\x01\xc8\x00\x00\x00\x00\x00\x00\x01\x0c\x00\x00\x00\x02\x06\x00ab\0\0\0\0\0\0",
        );
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(
            out,
            cat(&[
                b"\x01\x0b\x00\x00\x00\x08\x00\x00\xc8\x00\x00\x00\x00\x00\x00\x00",
                b"\x01\x0b\x00\x00\x00\x08\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00",
            ])
        );
    }

    /// FCGI-AMB-3: an unknown type with a nonzero ID is skipped without reply.
    #[test]
    fn fcgi_amb_3_unknown_application_type_ignored() {
        let mut conn = started(BEGIN_1_KEEP);
        assert_eq!(
            feed(
                &mut conn,
                b"\x01\xc8\x00\x01\x00\x01\x07\x00x\0\0\0\0\0\0\0"
            ),
            []
        );
        assert!(sent(&mut conn).is_empty());
    }

    /// FCGI-A-1: records only an application sends are errors when received.
    #[test]
    fn fcgi_a_1_wrong_direction() {
        let mut conn = started(BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(STDOUT_1_END),
            Err(Error::WrongDirection(RecordType::STDOUT))
        );
        let mut conn = Conn::default();
        assert_eq!(
            conn.handle_read(b"\x01\x0a\x00\x00\x00\x00\x00\x00"),
            Err(Error::WrongDirection(RecordType::GET_VALUES_RESULT))
        );
    }

    /// FCGI-A-2: BEGIN_REQUEST with ID 0, GET_VALUES with a nonzero ID are errors.
    #[test]
    fn fcgi_a_2_management_ids() {
        let mut conn = Conn::default();
        assert_eq!(
            conn.handle_read(b"\x01\x01\x00\x00\x00\x08\x00\x00\x00\x01\x01\0\0\0\0\0")
                .map_err(|e| e.clause()),
            Err("FCGI-A-2")
        );
        let mut conn = started(BEGIN_1_KEEP);
        assert_eq!(
            conn.handle_read(b"\x01\x09\x00\x01\x00\x00\x00\x00"),
            Err(Error::WrongRequestId {
                record_type: RecordType::GET_VALUES,
                request_id: 1
            })
        );
    }

    /// FCGI-5.1-5: without KEEP_CONN the application closes after the response.
    #[test]
    fn fcgi_5_1_5_close_without_keep_conn() {
        let mut conn = started(BEGIN_1_CLOSE);
        assert!(!conn.wants_close());
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(conn.wants_close());
    }

    /// FCGI-5.1-6: with KEEP_CONN the application does not close; the ID can be reused (FCGI-3.3-8).
    #[test]
    fn fcgi_5_1_6_keep_conn_stays_open() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(!conn.wants_close());
        assert_eq!(feed(&mut conn, BEGIN_1_KEEP).len(), 1);
    }

    /// FCGI-AMB-11: a request without KEEP_CONN closes only once no request is active.
    #[test]
    fn fcgi_amb_11_close_after_last_request() {
        let mut conn = started(BEGIN_1_CLOSE);
        feed(&mut conn, BEGIN_2_KEEP);
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(!conn.wants_close());
        conn.end_request(2, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(conn.wants_close());
    }

    /// FCGI-5.4-2 / FCGI-5.4-3: ABORT is reported, not answered automatically;
    /// the application's end_request sends END_REQUEST{REQUEST_COMPLETE}.
    #[test]
    fn fcgi_5_4_2_abort_answered_by_application() {
        let mut conn = started(BEGIN_1_KEEP);
        let events = feed(&mut conn, b"\x01\x02\x00\x01\x00\x00\x00\x00");
        assert_eq!(events, [Event::Abort { id: 1 }]);
        assert!(sent(&mut conn).is_empty(), "no automatic END_REQUEST");
        assert!(conn.is_active(1));
        // Input after the abort is dropped; a second ABORT is harmless.
        assert_eq!(
            feed(
                &mut conn,
                &cat(&[STDIN_1_END, b"\x01\x02\x00\x01\x00\x00\x00\x00"])
            ),
            []
        );
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        let out = sent(&mut conn);
        let end = out.last().unwrap();
        assert_eq!(end.header.record_type, RecordType::END_REQUEST);
        assert_eq!(
            EndRequestBody::parse(&end.content).unwrap().protocol_status,
            ProtocolStatus::REQUEST_COMPLETE
        );
    }

    /// FCGI-5.4-3: ABORT_REQUEST alone produces no output (the library does not answer).
    #[test]
    fn fcgi_5_4_3_no_automatic_end_request() {
        let mut conn = started(BEGIN_1_KEEP);
        feed(&mut conn, b"\x01\x02\x00\x01\x00\x00\x00\x00");
        assert_eq!(conn.pending_transmit(), 0);
    }

    /// FCGI-5.5-1 / FCGI-5.5-5: a second request without multiplexing is
    /// answered with END_REQUEST{CANT_MPX_CONN}; its records are then ignored.
    #[test]
    fn fcgi_5_5_5_cant_mpx_conn() {
        let mut conn = Conn::new(Config {
            mpxs_conns: false,
            ..Config::default()
        });
        feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(feed(&mut conn, BEGIN_2_KEEP), []);
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, b"\x01\x03\x00\x02\x00\x08\x00\x00\0\0\0\0\x01\0\0\0");
        assert!(!conn.is_active(2));
        assert_eq!(feed(&mut conn, b"\x01\x04\x00\x02\x00\x00\x00\x00"), []);
    }

    /// FCGI-5.5-1 / FCGI-5.5-6: past max_requests, a new request gets OVERLOADED.
    #[test]
    fn fcgi_5_5_6_overloaded() {
        let mut conn = Conn::new(Config {
            max_requests: 1,
            ..Config::default()
        });
        feed(&mut conn, BEGIN_1_KEEP);
        feed(&mut conn, BEGIN_2_KEEP);
        let out = sent(&mut conn);
        assert_eq!(
            EndRequestBody::parse(&out[0].content)
                .unwrap()
                .protocol_status,
            ProtocolStatus::OVERLOADED
        );
    }

    /// FCGI-5.5-1 / FCGI-5.5-7: an unknown role gets END_REQUEST{UNKNOWN_ROLE} (FCGI-T-9).
    #[test]
    fn fcgi_5_5_7_unknown_role() {
        let mut conn = Conn::default();
        assert_eq!(
            feed(
                &mut conn,
                b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x63\x00\0\0\0\0\0"
            ),
            []
        );
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\x03\0\0\0");
        // KEEP_CONN was clear: close (FCGI-5.1-5).
        assert!(conn.wants_close());
    }

    /// FCGI-5.5-1: reject() ends an accepted request with END_REQUEST only.
    #[test]
    fn fcgi_5_5_1_reject_by_application() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        conn.reject(1, ProtocolStatus::OVERLOADED).unwrap();
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, b"\x01\x03\x00\x01\x00\x08\x00\x00\0\0\0\0\x02\0\0\0");
    }

    /// FCGI-6.1-7 / FCGI-6.2-7: a response with no output still has the empty
    /// STDOUT, then END_REQUEST with the app status (FCGI-T-1).
    #[test]
    fn fcgi_6_1_7_empty_stdout_always_sent() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        assert_eq!(out, cat(&[STDOUT_1_END, END_1_COMPLETE]));
    }

    /// FCGI-6.2-7 / FCGI-5.5-3: appStatus is the CGI exit status; END_REQUEST comes after all output.
    #[test]
    fn fcgi_6_2_7_end_request_after_output() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.write_stdout(1, b"Status: 500\r\n\r\n").unwrap();
        conn.end_request(1, 938, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        let out = sent(&mut conn);
        let types: Vec<_> = out.iter().map(|r| r.header.record_type).collect();
        assert_eq!(
            types,
            [
                RecordType::STDOUT,
                RecordType::STDOUT,
                RecordType::END_REQUEST
            ]
        );
        assert_eq!(
            EndRequestBody::parse(&out[2].content).unwrap().app_status,
            938
        );
    }

    /// FCGI-6.2-5 / FCGI-6.1-6 / FCGI-B-3: STDOUT and STDERR interleave; both
    /// are terminated, then END_REQUEST.
    #[test]
    fn fcgi_6_2_5_stdout_stderr_interleaved() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.write_stdout(1, b"Content-type: text/html\r\n\r\n")
            .unwrap();
        conn.write_stderr(1, b"config error: missing SI_UID\n")
            .unwrap();
        conn.write_stdout(1, b"<html>").unwrap();
        conn.end_request(1, 938, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        let types: Vec<_> = sent(&mut conn)
            .iter()
            .map(|r| (r.header.record_type, r.content.is_empty()))
            .collect();
        assert_eq!(
            types,
            [
                (RecordType::STDOUT, false),
                (RecordType::STDERR, false),
                (RecordType::STDOUT, false),
                (RecordType::STDOUT, true),
                (RecordType::STDERR, true),
                (RecordType::END_REQUEST, false),
            ]
        );
    }

    /// FCGI-6.1-3: nothing may be written for a request after END_REQUEST.
    #[test]
    fn fcgi_6_1_3_no_output_after_end() {
        let mut conn = started(BEGIN_1_KEEP);
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert_eq!(
            conn.write_stdout(1, b"late"),
            Err(Error::InactiveRequest(1))
        );
        assert_eq!(
            conn.write_stderr(1, b"late"),
            Err(Error::InactiveRequest(1))
        );
    }

    /// FCGI-6.1-8 / FCGI-6.2-6: a Responder writes nothing before PARAMS ended.
    #[test]
    fn fcgi_6_2_6_no_output_before_params_end() {
        let mut conn = Conn::default();
        feed(&mut conn, BEGIN_1_KEEP);
        assert_eq!(conn.write_stdout(1, b"x"), Err(Error::OutputBeforeInput(1)));
        assert_eq!(
            conn.write_stderr(1, b"x").map_err(|e| e.clause()),
            Err("FCGI-6.1-8")
        );
        feed(&mut conn, PARAMS_1_END);
        // STDIN has begun but not ended: output is allowed now.
        conn.write_stdout(1, b"x").unwrap();
    }

    /// FCGI-3.2-2 / FCGI-3.2-3: only listed TCP/IP peers are kept.
    #[test]
    fn fcgi_3_2_2_web_server_addrs() {
        let addrs = WebServerAddrs::parse("199.170.183.28,199.170.183.71,::1").unwrap();
        assert!(addrs.allows(Some("199.170.183.28".parse().unwrap())));
        assert!(addrs.allows(Some("::ffff:199.170.183.71".parse().unwrap())));
        assert!(addrs.allows(Some("::1".parse().unwrap())));
        assert!(!addrs.allows(Some("199.170.183.29".parse().unwrap())));
        assert!(!addrs.allows(None));
        assert_eq!(WebServerAddrs::parse("1.2.3.4,localhost"), None);
        assert!(
            !WebServerAddrs::parse("")
                .unwrap()
                .allows(Some("1.2.3.4".parse().unwrap()))
        );
    }

    /// FCGI-6.1-8: output waits for every input but the final one; for an
    /// Authorizer that is PARAMS, so it may answer without any STDIN (FCGI-AMB-8).
    #[test]
    fn fcgi_6_1_8_authorizer_output_after_params() {
        let mut conn = Conn::default();
        feed(
            &mut conn,
            b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x02\x00\0\0\0\0\0",
        );
        assert_eq!(
            conn.write_stdout(1, b"Status: 200\r\n\r\n"),
            Err(Error::OutputBeforeInput(1))
        );
        feed(&mut conn, PARAMS_1_END);
        conn.write_stdout(1, b"Status: 200\r\n\r\n").unwrap();
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert!(conn.wants_close());
    }

    /// FCGI-6.1-8 / FCGI-6.4-6: a Filter writes nothing before STDIN ended,
    /// but may before DATA ended; FCGI-6.4-7: it ends with REQUEST_COMPLETE.
    #[test]
    fn fcgi_6_4_6_filter_waits_for_stdin() {
        let mut conn = Conn::default();
        feed(
            &mut conn,
            &cat(&[
                b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x03\x01\0\0\0\0\0",
                PARAMS_1_END,
            ]),
        );
        assert_eq!(conn.write_stdout(1, b"x"), Err(Error::OutputBeforeInput(1)));
        let events = feed(
            &mut conn,
            &cat(&[STDIN_1_END, &record(RecordType::DATA, 1, b"file")]),
        );
        assert_eq!(
            events,
            [
                Event::StdinEnd { id: 1 },
                Event::Data {
                    id: 1,
                    data: b"file".to_vec()
                }
            ]
        );
        conn.write_stdout(1, b"x").unwrap();
        assert_eq!(
            feed(&mut conn, b"\x01\x08\x00\x01\x00\x00\x00\x00"),
            [Event::DataEnd { id: 1 }]
        );
        conn.end_request(1, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        assert_eq!(sent(&mut conn).last().unwrap().content, END_1_COMPLETE[8..]);
    }

    /// FCGI-6.1-4 / FCGI-B-4: two multiplexed requests interleave freely.
    #[test]
    fn fcgi_6_1_4_multiplexed_requests() {
        let mut conn = Conn::default();
        let wire = cat(&[
            BEGIN_1_KEEP,
            BEGIN_2_KEEP,
            PARAMS_1_END,
            b"\x01\x04\x00\x02\x00\x00\x00\x00",
            b"\x01\x05\x00\x02\x00\x00\x00\x00",
            &record(RecordType::STDIN, 1, b"body"),
        ]);
        let events = feed(&mut conn, &wire);
        assert_eq!(events.len(), 6);
        conn.write_stdout(2, b"two").unwrap();
        conn.end_request(2, 0, ProtocolStatus::REQUEST_COMPLETE)
            .unwrap();
        conn.write_stdout(1, b"one").unwrap();
        assert_eq!(conn.active_requests(), 1);
        let ids: Vec<_> = sent(&mut conn)
            .iter()
            .map(|r| r.header.request_id)
            .collect();
        assert_eq!(ids, [2, 2, 2, 1]);
    }

    /// FCGI-3.3-6 / FCGI-T-2: any padding is skipped on input.
    #[test]
    fn fcgi_3_3_6_random_padding_accepted() {
        let mut wire = Vec::new();
        for (t, content, pad) in [
            (
                RecordType::BEGIN_REQUEST,
                &b"\x00\x01\x01\0\0\0\0\0"[..],
                255u8,
            ),
            (RecordType::PARAMS, b"\x01\x01ab", 3),
            (RecordType::PARAMS, b"", 9),
            (RecordType::STDIN, b"", 1),
        ] {
            Header {
                padding_length: pad,
                ..Header::new(t, 1, content.len() as u16)
            }
            .encode(&mut wire);
            wire.extend_from_slice(content);
            wire.extend(std::iter::repeat_n(0xAA, usize::from(pad)));
        }
        let events = feed(&mut Conn::default(), &wire);
        assert_eq!(events.len(), 3);
    }

    /// FCGI-3.3-4 / FCGI-T-17: a long body in 65535-byte records arrives whole.
    #[test]
    fn fcgi_3_3_4_large_stdin() {
        let mut conn = started(BEGIN_1_KEEP);
        let body = vec![7u8; 200_000];
        let mut wire = Vec::new();
        encode_stream(RecordType::STDIN, 1, &body, &mut wire);
        let events = feed(&mut conn, &wire);
        let total: usize = events
            .iter()
            .map(|e| match e {
                Event::Stdin { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, body.len());
        // Output bigger than a record is split too.
        conn.write_stdout(1, &body).unwrap();
        let out = sent(&mut conn);
        assert!(
            out.iter()
                .all(|r| usize::from(r.header.content_length) <= 65535)
        );
        assert_eq!(out.len(), 4);
    }

    // ---- property tests: the machine sees the same thing however input is cut ----

    /// A valid web-server stream: GET_VALUES, then requests with params,
    /// stdin chunks and (for Filters) data chunks, records split by `chunk`.
    /// (id, is a Filter, params, body).
    type TestRequest = (u16, bool, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

    fn valid_stream(requests: &[TestRequest], chunk: usize) -> Vec<u8> {
        let mut wire = get_values(&[MAX_REQS, b"NOPE"]);
        for (id, filter, params, body) in requests {
            let role = if *filter {
                Role::FILTER
            } else {
                Role::RESPONDER
            };
            let begin = BeginRequestBody::new(role, true).to_bytes();
            encode_record(RecordType::BEGIN_REQUEST, *id, &begin, &mut wire);
            let mut content = Vec::new();
            for (n, v) in params {
                encode_pair(n, v, &mut content);
            }
            for c in content.chunks(chunk) {
                encode_record(RecordType::PARAMS, *id, c, &mut wire);
            }
            encode_stream(RecordType::PARAMS, *id, &[], &mut wire);
            for c in body.chunks(chunk) {
                encode_record(RecordType::STDIN, *id, c, &mut wire);
            }
            encode_stream(RecordType::STDIN, *id, &[], &mut wire);
            if *filter {
                if !body.is_empty() {
                    encode_record(RecordType::DATA, *id, body, &mut wire);
                }
                encode_stream(RecordType::DATA, *id, &[], &mut wire);
            }
        }
        wire
    }

    fn run(parts: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
        let mut conn = Conn::default();
        let mut events = Vec::new();
        for p in parts {
            assert_eq!(conn.handle_read(p), Ok(p.len()));
            events.extend(std::iter::from_fn(|| conn.poll_event()));
        }
        let mut out = Vec::new();
        conn.poll_transmit(&mut out);
        (events, out)
    }

    fn any_requests() -> impl Strategy<Value = Vec<TestRequest>> {
        let pair = (
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::vec(any::<u8>(), 0..150),
        );
        proptest::collection::vec(
            (
                1u16..6,
                any::<bool>(),
                proptest::collection::vec(pair, 0..4),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            1..3,
        )
        .prop_map(|mut v| {
            // Distinct IDs: all requests stay active.
            v.sort_by_key(|r| r.0);
            v.dedup_by_key(|r| r.0);
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_server_split_at_every_byte(requests in any_requests(), chunk in 1usize..40) {
            let wire = valid_stream(&requests, chunk);
            let whole = run(&[&wire]);
            prop_assert!(!whole.0.is_empty());
            for at in 0..=wire.len() {
                let (a, b) = wire.split_at(at);
                prop_assert_eq!(&run(&[a, b]), &whole, "split at {}", at);
            }
        }

        #[test]
        fn prop_server_random_chunks(requests in any_requests(),
                                     cuts in proptest::collection::vec(1usize..50, 1..40)) {
            let wire = valid_stream(&requests, 7);
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
        fn prop_server_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut conn = Conn::default();
            let _ = conn.handle_read(&bytes);
            while conn.poll_event().is_some() {}
        }
    }
}
