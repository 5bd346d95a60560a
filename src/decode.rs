//! `portico decode [FILE|-]`: prints captured bytes — FastCGI records or SCGI requests
//! (and, for SCGI replies, the CGI response head) — in a readable form, and marks every
//! violation with the clause ID it breaks (`!! FCGI-3.3-3: …`), carrying on after it
//! wherever the framing allows.
//!
//! Input is one direction of one connection: a raw stream, or one side of a TCP
//! conversation exported from a capture tool. FastCGI records are framed with
//! `proto::fastcgi::parse_record`; what an application sent is checked by the lenient
//! `fastcgi::client::Conn`, what a web server sent by the rules of the appendix tables
//! and of §3, §5 and §6 (versions, directions, request IDs, body lengths, stream order
//! and termination, name-value framing, NUL bytes, STDIN length). PARAMS pairs are
//! decoded as they complete, even when a pair spans records. SCGI requests are parsed
//! with `proto::scgi::parse_request`; on an error the header block is split leniently so
//! that the rest can still be shown. Exit status: 0 without violations, 1 with any, 2 when
//! the input cannot be read (or its protocol cannot be told).
//!
//! Uses `protocols` and `std::{fs, io}` only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::ExitCode;

use proto::Status;
use proto::cgi::response as cgi_response;
use proto::fastcgi::client::{ClientEvent, Config, Conn};
use proto::fastcgi::nv::parse_pair;
use proto::fastcgi::{
    BeginRequestBody, EndRequestBody, HEADER_LEN, NameValues, ProtocolStatus, RecordType, Role,
    UnknownTypeBody, parse_header, parse_record,
};
use proto::scgi;

/// Options of `decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The capture file, or `-` for standard input.
    pub input: Option<String>,
    /// The protocol: `auto` takes FastCGI if the first byte is 1 and a record header
    /// parses, SCGI if the input starts with digits and `:`.
    #[arg(long, value_enum, default_value = "auto")]
    pub protocol: Protocol,
    /// Who sent the bytes: `ws` (the web server), `app` (the application), or `auto`
    /// (FastCGI: from the record types; SCGI: a netstring is a request, else a reply).
    #[arg(long, value_enum, default_value = "auto")]
    pub direction: Direction,
}

/// The protocol of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// FastCGI records.
    Fastcgi,
    /// SCGI requests (or an SCGI reply with `--direction app`).
    Scgi,
    /// Decide from the first bytes.
    Auto,
}

/// Which side sent the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// The web server (FastCGI client, SCGI client).
    Ws,
    /// The application (FastCGI application, SCGI server).
    App,
    /// Decide from the content.
    Auto,
}

/// Runs the decoder.
pub fn run(args: DecodeArgs) -> ExitCode {
    let name = args.input.as_deref().unwrap_or("-");
    let read = if name == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(name)
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            eprintln!("portico decode: cannot read {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(protocol) = detect(&bytes, args.protocol) else {
        eprintln!(
            "portico decode: {name}: cannot tell FastCGI from SCGI (use --protocol fastcgi|scgi)"
        );
        return ExitCode::from(2);
    };
    let decoded = decode(&bytes, protocol, args.direction);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(decoded.text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(2);
    }
    if decoded.violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The decoded text and the number of violations marked in it.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The readable form, one item per line.
    pub text: String,
    /// How many `!!` lines it holds.
    pub violations: usize,
}

impl Decoded {
    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn violation(&mut self, clause: &str, what: impl AsRef<str>) {
        self.violations += 1;
        let _ = writeln!(self.text, "!! {clause}: {}", what.as_ref());
    }
}

/// The protocol of `bytes` (`None` when `auto` cannot tell).
pub fn detect(bytes: &[u8], protocol: Protocol) -> Option<Protocol> {
    match protocol {
        Protocol::Auto => {}
        p => return Some(p),
    }
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if bytes.first() == Some(&1) && matches!(parse_header(bytes), Ok(Status::Complete(_))) {
        Some(Protocol::Fastcgi)
    } else if digits > 0 && bytes.get(digits) == Some(&b':') {
        Some(Protocol::Scgi)
    } else if bytes.len() >= HEADER_LEN && bytes.get(1).is_some_and(|&t| (1..=11).contains(&t)) {
        // A damaged version byte: still FastCGI framing.
        Some(Protocol::Fastcgi)
    } else if bytes
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b':')
        || looks_like_reply(bytes)
    {
        Some(Protocol::Scgi)
    } else {
        None
    }
}

fn looks_like_reply(bytes: &[u8]) -> bool {
    let head = bytes.get(..bytes.len().min(16)).unwrap_or(bytes);
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    ["status:", "content-type:", "location:", "http/"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// Decodes `bytes` as `protocol` (not `Auto`: see [`detect`]) sent by `direction`.
pub fn decode(bytes: &[u8], protocol: Protocol, direction: Direction) -> Decoded {
    let mut out = Decoded::default();
    match protocol {
        Protocol::Scgi => {
            let reply = match direction {
                Direction::App => true,
                Direction::Ws => false,
                Direction::Auto => !bytes
                    .first()
                    .is_some_and(|b| b.is_ascii_digit() || *b == b':'),
            };
            if reply {
                scgi_reply(bytes, &mut out);
            } else {
                scgi_requests(bytes, &mut out);
            }
        }
        _ => fastcgi(bytes, direction, &mut out),
    }
    let _ = writeln!(
        out.text,
        "-- {} bytes, {} violation{}",
        bytes.len(),
        out.violations,
        if out.violations == 1 { "" } else { "s" }
    );
    out
}

/// An error's message without the ` (CLAUSE)` its `Display` appends.
fn plain(e: &impl std::fmt::Display, clause: &str) -> String {
    let text = e.to_string();
    text.strip_suffix(&format!(" ({clause})"))
        .map(str::to_string)
        .unwrap_or(text)
}

// ---- text -------------------------------------------------------------------------------

/// Bytes as text: printable ASCII kept, `\n \r \t \0 \\` and `\xNN` for the rest.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0 => s.push_str("\\0"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// At most `max` bytes, escaped, with an ellipsis when cut.
fn preview(bytes: &[u8], max: usize) -> String {
    match bytes.get(..max) {
        Some(head) if bytes.len() > max => format!("\"{}\"…", escape(head)),
        _ => format!("\"{}\"", escape(bytes)),
    }
}

fn pair_text(name: &[u8], value: &[u8]) -> String {
    if value.len() > 200 {
        format!(
            "{}={}… ({} bytes)",
            escape(name),
            escape(value.get(..120).unwrap_or(value)),
            value.len()
        )
    } else {
        format!("{}={}", escape(name), escape(value))
    }
}

fn role_name(r: Role) -> String {
    match r {
        Role::RESPONDER => "RESPONDER".into(),
        Role::AUTHORIZER => "AUTHORIZER".into(),
        Role::FILTER => "FILTER".into(),
        Role(n) => format!("unknown role {n}"),
    }
}

fn protocol_status_name(p: ProtocolStatus) -> String {
    match p {
        ProtocolStatus::REQUEST_COMPLETE => "REQUEST_COMPLETE".into(),
        ProtocolStatus::CANT_MPX_CONN => "CANT_MPX_CONN".into(),
        ProtocolStatus::OVERLOADED => "OVERLOADED".into(),
        ProtocolStatus::UNKNOWN_ROLE => "UNKNOWN_ROLE".into(),
        ProtocolStatus(n) => format!("unknown protocol status {n}"),
    }
}

fn type_name(t: RecordType) -> String {
    t.name()
        .map(|n| n.trim_start_matches("FCGI_").to_string())
        .unwrap_or_else(|| format!("TYPE_{}", t.0))
}

// ---- FastCGI ----------------------------------------------------------------------------

/// Which side sent a FastCGI stream, by a majority of its record types.
fn guess_direction(bytes: &[u8]) -> Direction {
    let (mut ws, mut app) = (0usize, 0usize);
    let mut first = None;
    let mut pos = 0;
    while let Ok(Status::Complete((r, used))) = parse_record(bytes.get(pos..).unwrap_or_default()) {
        let t = r.header.record_type;
        if t.is_from_web_server() {
            ws += 1;
            first.get_or_insert(Direction::Ws);
        } else if t.is_from_application() {
            app += 1;
            first.get_or_insert(Direction::App);
        }
        pos += used;
    }
    match ws.cmp(&app) {
        std::cmp::Ordering::Greater => Direction::Ws,
        std::cmp::Ordering::Less => Direction::App,
        std::cmp::Ordering::Equal => first.unwrap_or(Direction::Ws),
    }
}

/// The web-server side's input state of one request ID.
#[derive(Debug, Default)]
struct WsRequest {
    role: u16,
    params_ended: bool,
    stdin_ended: bool,
    data_ended: bool,
    aborted: bool,
    /// PARAMS bytes not yet decoded into whole pairs.
    pending: Vec<u8>,
    content_length: Option<u64>,
    stdin_len: u64,
    stdin_flagged: bool,
}

impl WsRequest {
    fn inputs_ended(&self) -> bool {
        self.params_ended && self.stdin_ended && (self.role != Role::FILTER.0 || self.data_ended)
    }
}

fn fastcgi(bytes: &[u8], direction: Direction, out: &mut Decoded) {
    let direction = match direction {
        Direction::Auto => guess_direction(bytes),
        d => d,
    };
    out.line(format!(
        "FastCGI, {}",
        if direction == Direction::App {
            "application -> web server"
        } else {
            "web server -> application"
        }
    ));
    let mut ws: BTreeMap<u16, WsRequest> = BTreeMap::new();
    let mut app = Conn::new(Config {
        lenient: true,
        observe_records: false,
        strict_ids: false,
    });
    let mut pos = 0usize;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let (record, used) = match parse_record(rest) {
            Ok(Status::Complete(v)) => v,
            _ => {
                let have = rest.len().saturating_sub(HEADER_LEN);
                match parse_header(rest) {
                    Ok(Status::Complete((h, _))) => out.violation(
                        "FCGI-3.3-2",
                        format!(
                            "@{pos}: the input ends inside a {} record: its header announces {} content and {} padding bytes, {} are present",
                            type_name(h.record_type),
                            h.content_length,
                            h.padding_length,
                            have
                        ),
                    ),
                    _ => out.violation(
                        "FCGI-3.3-2",
                        format!(
                            "@{pos}: the input ends inside a record header ({} of 8 bytes)",
                            rest.len()
                        ),
                    ),
                }
                break;
            }
        };
        let h = record.header;
        let mut line = format!(
            "@{pos:<6} v{} {:<17} id={:<3} content={:<5} padding={}",
            h.version,
            type_name(h.record_type),
            h.request_id,
            h.content_length,
            h.padding_length
        );
        if h.reserved != 0 {
            let _ = write!(line, " reserved={}", h.reserved);
        }
        out.line(line);
        describe(record.header.record_type, record.content, out);
        match direction {
            Direction::App => {
                let raw = rest.get(..used).unwrap_or_default();
                if let Err(e) = app.handle_read(raw) {
                    out.violation(e.clause(), e.to_string());
                }
                while let Some(event) = app.poll_event() {
                    if let ClientEvent::Violation(e) = event {
                        out.violation(e.clause(), e.to_string());
                    }
                }
            }
            _ => check_ws(
                h.request_id,
                h.version,
                h.record_type,
                record.content,
                &mut ws,
                out,
            ),
        }
        pos += used;
    }
    if direction != Direction::App {
        for (id, r) in &ws {
            if !r.aborted && !r.inputs_ended() {
                out.line(format!(
                    "-- request {id}: input ends with {} still open (capture cut short?)",
                    if !r.params_ended {
                        "PARAMS"
                    } else if !r.stdin_ended {
                        "STDIN"
                    } else {
                        "DATA"
                    }
                ));
            }
        }
    }
}

/// The content of a record, by type, indented under its line.
fn describe(t: RecordType, content: &[u8], out: &mut Decoded) {
    match t {
        RecordType::BEGIN_REQUEST => {
            if let Ok(b) = BeginRequestBody::parse(content) {
                out.line(format!(
                    "    role={} flags={:#04x} (KEEP_CONN {})",
                    role_name(b.role),
                    b.flags,
                    if b.keep_conn() { "set" } else { "clear" }
                ));
            }
        }
        RecordType::END_REQUEST => {
            if let Ok(b) = EndRequestBody::parse(content) {
                out.line(format!(
                    "    app_status={} protocol_status={}",
                    b.app_status,
                    protocol_status_name(b.protocol_status)
                ));
            }
        }
        RecordType::UNKNOWN_TYPE => {
            if let Ok(b) = UnknownTypeBody::parse(content) {
                out.line(format!("    type={}", b.record_type.0));
            }
        }
        RecordType::GET_VALUES | RecordType::GET_VALUES_RESULT => {
            for pair in NameValues::new(content) {
                match pair {
                    Ok((n, v)) => out.line(format!("    {}", pair_text(n, v))),
                    Err(_) => out.line("    (a truncated pair)"),
                }
            }
        }
        RecordType::STDIN | RecordType::STDOUT | RecordType::STDERR | RecordType::DATA => {
            if content.is_empty() {
                out.line("    (end of stream)");
            } else {
                out.line(format!(
                    "    {} bytes: {}",
                    content.len(),
                    preview(content, 240)
                ));
            }
        }
        RecordType::PARAMS => {
            if content.is_empty() {
                out.line("    (end of stream)");
            }
        }
        RecordType::ABORT_REQUEST => {}
        _ => {
            if !content.is_empty() {
                out.line(format!(
                    "    {} bytes: {}",
                    content.len(),
                    preview(content, 64)
                ));
            }
        }
    }
}

/// The checks on a record a web server sent (the application side's view).
fn check_ws(
    id: u16,
    version: u8,
    t: RecordType,
    content: &[u8],
    requests: &mut BTreeMap<u16, WsRequest>,
    out: &mut Decoded,
) {
    if version != 1 {
        // FCGI-3.3-3
        out.violation(
            "FCGI-3.3-3",
            format!("unsupported FastCGI version {version}"),
        );
    }
    if t.is_from_application() {
        // FCGI-A-1
        out.violation("FCGI-A-1", format!("{t} sent by the web server"));
        return;
    }
    if !t.is_known() {
        if id != 0 {
            out.line(
                "    (an unknown type with a request ID: ignored by applications, FCGI-AMB-3)",
            );
        } else {
            out.line("    (an unknown management type: the application answers UNKNOWN_TYPE)");
        }
        return;
    }
    if t.is_management() != (id == 0) {
        // FCGI-A-2
        out.violation("FCGI-A-2", format!("{t} with request ID {id}"));
        return;
    }
    if t == RecordType::GET_VALUES {
        return;
    }
    if t == RecordType::BEGIN_REQUEST {
        let role = match BeginRequestBody::parse(content) {
            Ok(b) => b.role.0,
            Err(e) => {
                out.violation(e.clause(), e.to_string());
                Role::RESPONDER.0
            }
        };
        if let Some(prev) = requests.get(&id)
            && !prev.aborted
            && !prev.inputs_ended()
        {
            out.violation(
                "FCGI-AMB-14",
                format!("BEGIN_REQUEST for request {id} while its input streams are still open"),
            );
        }
        requests.insert(
            id,
            WsRequest {
                role,
                ..WsRequest::default()
            },
        );
        return;
    }
    let Some(req) = requests.get_mut(&id) else {
        out.violation(
            "FCGI-3.3-9",
            format!("{t} for request {id}, which no BEGIN_REQUEST opened"),
        );
        return;
    };
    match t {
        RecordType::ABORT_REQUEST => req.aborted = true,
        RecordType::PARAMS => {
            if req.params_ended {
                out.violation(
                    "FCGI-3.3-16",
                    format!("PARAMS for request {id} after its end"),
                );
                return;
            }
            if content.is_empty() {
                req.params_ended = true;
                if !req.pending.is_empty() {
                    out.violation(
                        "FCGI-3.4-1",
                        format!(
                            "PARAMS ended inside a name-value pair ({} bytes left: {})",
                            req.pending.len(),
                            preview(&req.pending, 32)
                        ),
                    );
                    req.pending.clear();
                }
                return;
            }
            req.pending.extend_from_slice(content);
            let mut used = 0;
            while let Ok(Status::Complete(((n, v), len))) =
                parse_pair(req.pending.get(used..).unwrap_or_default())
            {
                out.line(format!("    {}", pair_text(n, v)));
                if n.contains(&0) || v.contains(&0) {
                    out.violation("FCGI-6.1-9", format!("a NUL byte in {}", escape(n)));
                }
                if n == b"CONTENT_LENGTH" {
                    req.content_length = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
                used += len;
            }
            req.pending.drain(..used);
            if !req.pending.is_empty() {
                out.line(format!(
                    "    (… {} bytes of a pair continue in the next PARAMS record)",
                    req.pending.len()
                ));
            }
        }
        RecordType::STDIN => {
            if !req.params_ended {
                out.violation(
                    "FCGI-6.1-2",
                    format!("STDIN for request {id} before PARAMS ended"),
                );
            }
            if req.stdin_ended {
                out.violation(
                    "FCGI-3.3-16",
                    format!("STDIN for request {id} after its end"),
                );
                return;
            }
            if content.is_empty() {
                req.stdin_ended = true;
                return;
            }
            req.stdin_len += content.len() as u64;
            if let Some(cl) = req.content_length
                && req.stdin_len > cl
                && !req.stdin_flagged
            {
                req.stdin_flagged = true;
                out.violation(
                    "FCGI-6.2-4",
                    format!(
                        "STDIN has {} bytes, CONTENT_LENGTH says {cl}",
                        req.stdin_len
                    ),
                );
            }
        }
        RecordType::DATA => {
            if !req.stdin_ended {
                out.violation(
                    "FCGI-6.1-2",
                    format!("DATA for request {id} before STDIN ended"),
                );
            }
            if req.data_ended {
                out.violation(
                    "FCGI-3.3-16",
                    format!("DATA for request {id} after its end"),
                );
            } else if content.is_empty() {
                req.data_ended = true;
            }
        }
        _ => {}
    }
}

// ---- SCGI -------------------------------------------------------------------------------

/// Decode limits: generous (a capture is not an attack), but bounded.
const SCGI_MAX_BLOCK: usize = 16 << 20;

fn scgi_requests(bytes: &[u8], out: &mut Decoded) {
    out.line("SCGI, web server -> application");
    let limits = scgi::Limits {
        max_header_bytes: SCGI_MAX_BLOCK,
        max_headers: usize::MAX,
    };
    let mut pos = 0usize;
    let mut first = true;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        if !first {
            out.violation(
                "SCGI-3-10",
                format!(
                    "@{pos}: {} bytes after the body (a connection carries one request, SCGI-2-4): {}",
                    rest.len(),
                    preview(rest, 64)
                ),
            );
        }
        first = false;
        // The head: strictly, then leniently to show what is there.
        let (headers, consumed, content_length) = match scgi::parse_request(rest, &limits) {
            Ok(Status::Complete((req, n))) => {
                let headers: Vec<(Vec<u8>, Vec<u8>)> = req
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                if !req.has_scgi_header() {
                    // SCGI-3-7 (the application accepts it, SCGI-AMB-8; the sender is wrong)
                    out.violation("SCGI-3-7", "no SCGI header");
                }
                (headers, n, Some(req.content_length))
            }
            Ok(Status::Partial) => {
                out.violation(
                    "SCGI-3-9",
                    format!(
                        "@{pos}: the input ends inside the header netstring ({} bytes: {})",
                        rest.len(),
                        preview(rest, 64)
                    ),
                );
                return;
            }
            Err(e) => {
                out.violation(e.clause(), format!("@{pos}: {}", plain(&e, e.clause())));
                match lenient_head(rest) {
                    Some(v) => v,
                    None => {
                        out.line(format!(
                            "   cannot frame the rest ({} bytes): {}",
                            rest.len(),
                            preview(rest, 64)
                        ));
                        return;
                    }
                }
            }
        };
        out.line(format!(
            "@{pos:<6} request: header netstring of {consumed} bytes, {} headers",
            headers.len()
        ));
        for (n, v) in &headers {
            out.line(format!("    {}", pair_text(n, v)));
        }
        pos += consumed;
        let body = bytes.get(pos..).unwrap_or_default();
        match content_length {
            Some(cl) => {
                let want = usize::try_from(cl).unwrap_or(usize::MAX);
                let have = body.len().min(want);
                let shown = body.get(..have).unwrap_or_default();
                out.line(format!(
                    "@{pos:<6} body: {have} of CONTENT_LENGTH {cl} bytes{}",
                    if have > 0 {
                        format!(": {}", preview(shown, 240))
                    } else {
                        String::new()
                    }
                ));
                if have < want {
                    out.violation(
                        "SCGI-3-10",
                        format!("the body is {have} bytes, CONTENT_LENGTH says {cl}"),
                    );
                }
                pos += have;
            }
            None => {
                out.line(format!(
                    "@{pos:<6} {} more bytes (no usable CONTENT_LENGTH): {}",
                    body.len(),
                    preview(body, 240)
                ));
                return;
            }
        }
    }
}

/// The head of a request that broke a rule: the block with leading zeros, a wrong
/// terminator or invalid headers allowed, its length, and CONTENT_LENGTH if readable.
type LenientHead = (Vec<(Vec<u8>, Vec<u8>)>, usize, Option<u64>);

fn lenient_head(buf: &[u8]) -> Option<LenientHead> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || buf.get(digits) != Some(&b':') {
        return None;
    }
    let len: usize = std::str::from_utf8(buf.get(..digits)?).ok()?.parse().ok()?;
    let start = digits + 1;
    let block = buf.get(start..start.checked_add(len)?)?;
    // The terminator: a comma, or whatever byte stands there (already reported).
    let consumed = start + len + usize::from(buf.get(start + len).is_some());
    let mut headers = Vec::new();
    let mut parts = block.split(|&b| b == 0);
    while let Some(name) = parts.next() {
        match parts.next() {
            Some(value) => headers.push((name.to_vec(), value.to_vec())),
            None if name.is_empty() => break,
            None => headers.push((name.to_vec(), b"(no terminating NUL)".to_vec())),
        }
    }
    let content_length = headers
        .iter()
        .find(|(n, _)| n == b"CONTENT_LENGTH")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
    Some((headers, consumed, content_length))
}

/// An SCGI reply: a CGI response head (SCGI-2-6), then the body.
fn scgi_reply(bytes: &[u8], out: &mut Decoded) {
    out.line("SCGI, application -> web server (a CGI-style reply)");
    match cgi_response::parse_head(bytes, false, &cgi_response::Limits::default()) {
        Ok(Status::Complete((head, n))) => {
            if let Some(v) = head.version {
                out.line(format!(
                    "    status line: {} {} (SCGI-AMB-1)",
                    escape(v),
                    head.status_code()
                ));
            }
            if let Some(s) = head.status {
                out.line(format!(
                    "    Status: {s} {}",
                    escape(head.reason.unwrap_or_default())
                ));
            }
            if let Some(l) = head.location {
                out.line(format!("    Location: {}", escape(l)));
            }
            if let Some(c) = head.content_type {
                out.line(format!("    Content-Type: {}", escape(c)));
            }
            for (name, value) in &head.headers {
                out.line(format!("    {}: {}", escape(name), escape(value)));
            }
            let crlf = bytes
                .get(..n)
                .is_some_and(|h| h.windows(2).any(|w| w == b"\r\n"));
            let body = bytes.get(n..).unwrap_or_default();
            out.line(format!(
                "@{n:<6} body: {} bytes{} ({} line ends in the head)",
                body.len(),
                if body.is_empty() {
                    String::new()
                } else {
                    format!(": {}", preview(body, 240))
                },
                if crlf { "CR LF" } else { "LF" }
            ));
        }
        Ok(Status::Partial) => out.violation(
            "CGI-6.2-1",
            format!(
                "the reply ends before the blank line that ends its head: {}",
                preview(bytes, 120)
            ),
        ),
        Err(e) => out.violation(
            e.clause(),
            format!("{}: {}", plain(&e, e.clause()), preview(bytes, 120)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::fastcgi::client::Request;
    use proto::fastcgi::encode_record;

    #[test]
    fn escapes_non_printables() {
        assert_eq!(escape(b"a\r\n\0\xff\\"), "a\\r\\n\\0\\xff\\\\");
    }

    #[test]
    fn detects_protocols() {
        assert_eq!(detect(b"70:CONTENT", Protocol::Auto), Some(Protocol::Scgi));
        assert_eq!(
            detect(b"\x01\x01\x00\x01\x00\x08\x00\x00", Protocol::Auto),
            Some(Protocol::Fastcgi)
        );
        assert_eq!(
            detect(b"\x02\x01\x00\x01\x00\x08\x00\x00", Protocol::Auto),
            Some(Protocol::Fastcgi)
        );
        assert_eq!(detect(b"\xff\xfe", Protocol::Auto), None);
    }

    #[test]
    fn fcgi_5_2_3_params_spanning_records_are_decoded() {
        let mut content = Vec::new();
        proto::fastcgi::encode_pair(b"REQUEST_METHOD", b"GET", &mut content);
        proto::fastcgi::encode_pair(b"X", b"a\nb", &mut content);
        let mut wire = Vec::new();
        proto::fastcgi::client::encode_begin_request(1, Role::RESPONDER, 0, &mut wire);
        proto::fastcgi::client::encode_stream_split(RecordType::PARAMS, 1, &content, 5, &mut wire);
        encode_record(RecordType::PARAMS, 1, &[], &mut wire);
        encode_record(RecordType::STDIN, 1, &[], &mut wire);
        let d = decode(&wire, Protocol::Fastcgi, Direction::Auto);
        assert!(d.text.contains("    REQUEST_METHOD=GET\n"), "{}", d.text);
        assert!(d.text.contains("    X=a\\nb\n"), "{}", d.text);
        assert_eq!(d.violations, 0, "{}", d.text);
    }

    #[test]
    fn fcgi_3_3_3_version_and_truncation_marked() {
        let mut wire = Vec::new();
        Request {
            id: 1,
            role: Role::RESPONDER,
            keep_conn: false,
            params: &[(b"A", b"1")],
            stdin: Some(b""),
            data: None,
        }
        .encode(&mut wire);
        wire[0] = 2;
        wire.extend_from_slice(b"\x01\x05\x00\x01\x00\x10");
        assert_eq!(detect(&wire, Protocol::Auto), Some(Protocol::Fastcgi));
        let d = decode(&wire, Protocol::Fastcgi, Direction::Auto);
        assert!(d.text.contains("!! FCGI-3.3-3: "), "{}", d.text);
        assert!(d.text.contains("!! FCGI-3.3-2: "), "{}", d.text);
        assert_eq!(d.violations, 2);
    }

    #[test]
    fn scgi_4_2_leading_zero_still_shown() {
        let d = decode(
            b"024:CONTENT_LENGTH\x002\x00SCGI\x001\x00,hi",
            Protocol::Scgi,
            Direction::Auto,
        );
        assert!(d.text.contains("!! SCGI-4-2: "), "{}", d.text);
        assert!(d.text.contains("    CONTENT_LENGTH=2\n"), "{}", d.text);
        assert!(
            d.text.contains("body: 2 of CONTENT_LENGTH 2 bytes: \"hi\""),
            "{}",
            d.text
        );
        assert_eq!(d.violations, 1);
    }
}
