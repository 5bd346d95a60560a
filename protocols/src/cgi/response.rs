//! The CGI response head: `Status`, `Location`, `Content-Type` and the other fields a
//! script writes before the blank line, and its classification into the four response
//! types of RFC 3875 §6.2.
//!
//! One parser serves CGI stdout, FastCGI stdout and SCGI replies (SCGI-AMB-1). It is
//! incremental: feed it everything buffered so far; it answers [`Status::Partial`] until
//! the blank line has arrived, and fails as soon as the buffered bytes are malformed or
//! exceed the [`Limits`].
//!
//! ```
//! use portico_protocols::Status;
//! use portico_protocols::cgi::response::{parse_head, Limits, ResponseKind};
//!
//! let out = b"Status: 404 Not Found\nContent-Type: text/plain\nSet-Cookie: a=1\n\nnope";
//! let Status::Complete((head, n)) = parse_head(out, false, &Limits::default())? else {
//!     unreachable!("the blank line is in the buffer");
//! };
//! assert_eq!(&out[n..], b"nope");
//! assert_eq!(head.kind()?, ResponseKind::Document);
//! assert_eq!(head.status_code(), 404);
//! assert_eq!(head.reason, Some(&b"Not Found"[..]));
//! assert_eq!(head.content_type, Some(&b"text/plain"[..]));
//! assert_eq!(head.headers, vec![(&b"Set-Cookie"[..], &b"a=1"[..])]);
//! # Ok::<(), portico_protocols::cgi::response::Error>(())
//! ```

use core::fmt;

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_while_m_n},
    combinator::{opt, recognize},
};

use super::is_token_char;
use crate::Status;

/// Default for [`Limits::max_header_bytes`]: 64 KiB (65 536 bytes).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Default for [`Limits::max_headers`]: 100 header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Bounds on the response head a script may send (CGI-8.1-1, CGI-9.6-2: the body is
/// streamed and never limited here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head accepted, status line, fields and blank line included.
    /// Default [`DEFAULT_MAX_HEADER_BYTES`] (64 KiB).
    pub max_header_bytes: usize,
    /// Most header fields accepted (a status line does not count).
    /// Default [`DEFAULT_MAX_HEADERS`] (100).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// A parsed response head. All slices borrow the input buffer.
///
/// For a CGI head (`nph = false`) the three CGI fields are taken out into their own
/// fields and every other field stays in [`headers`](Self::headers), in order and with
/// duplicates (several `Set-Cookie`). A CGI field with an empty value counts as not sent
/// (CGI-6.3-4) and appears nowhere.
///
/// For an NPH head (`nph = true`) the status line fills [`version`](Self::version),
/// [`status`](Self::status) and [`reason`](Self::reason), and *every* field, `Location`
/// and `Content-Type` included, is an HTTP header in [`headers`](Self::headers): the
/// server relays NPH output unmodified (CGI-5.2-4).
///
/// Script-sent framing fields (`Content-Length`, `Transfer-Encoding`, `Connection` …)
/// are left in `headers`; the server drops them and frames the body itself (CGI-RW-8,
/// CGI-6.3.4-4). [`is_server_owned`] names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    /// The protocol of a leading HTTP status line (`HTTP/1.1`), if the head had one:
    /// always for NPH output, and for a CGI reply that starts with a status line as
    /// nginx accepts from SCGI upstreams (SCGI-AMB-1, SCGI-RW-1).
    pub version: Option<&'a [u8]>,
    /// The status code from `Status:` or the status line, `None` when the script gave
    /// none. Use [`status_code`](Self::status_code) for the code to send.
    pub status: Option<u16>,
    /// The reason phrase after the status code, `None` when absent or empty.
    pub reason: Option<&'a [u8]>,
    /// The `Location` field value (CGI-6.3.2), surrounding whitespace trimmed.
    pub location: Option<&'a [u8]>,
    /// The `Content-Type` field value (CGI-6.3.1), surrounding whitespace trimmed.
    pub content_type: Option<&'a [u8]>,
    /// Every other field as (name, value): order, name case and duplicates kept,
    /// values trimmed of surrounding spaces and tabs.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// The four response types of RFC 3875 §6.2 (CGI-6.2-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// A document (CGI-6.2.1): send [`ResponseHead::status_code`], the fields and the body.
    Document,
    /// A local redirect (CGI-6.2.2): serve [`ResponseHead::location`] (a path with an
    /// optional query) internally; the client sees the target's response, never a 3xx.
    /// Other fields and any body are discarded, as Apache does (CGI-RW-9).
    LocalRedirect,
    /// A client redirect (CGI-6.2.3): send [`ResponseHead::status_code`] (302 unless the
    /// script gave a 3xx) with the `Location`, and no script body.
    ClientRedirect,
    /// A client redirect with document (CGI-6.2.4): send the status, the `Location`,
    /// the fields and the body.
    ClientRedirectWithDocument,
}

/// Malformed script output. Every variant is the script's fault: the server answers
/// 502 and logs it (CGI-AMB-6, CGI-3.1-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No blank line within [`Limits::max_header_bytes`].
    HeadTooLarge,
    /// More than [`Limits::max_headers`] header fields.
    TooManyHeaders,
    /// A header line without `:`.
    MissingColon,
    /// Whitespace between a field name and its `:`.
    SpaceBeforeColon,
    /// An empty field name, or one with a character that is not a token character.
    InvalidName,
    /// A line starting with a space or tab: CGI/1.1 has no continuation lines.
    ContinuationLine,
    /// A control character (other than tab) in a field value.
    InvalidValue,
    /// No `Status`, `Location` or `Content-Type` field (and no status line).
    NoCgiField,
    /// `Status`, `Location` or `Content-Type` given more than once.
    DuplicateCgiField,
    /// A `Status` value that is not a three-digit code from 200 to 599, optionally
    /// followed by a space and a reason phrase.
    InvalidStatus,
    /// A first line that is not `HTTP/1.x NNN [reason]` where a status line is required
    /// or begun, or a code outside 100–599.
    InvalidStatusLine,
    /// A `Location` that is neither an absolute URI (`scheme:…`) nor a path starting
    /// with `/`.
    InvalidLocation,
    /// The output ended before the blank line. No parser returns it: callers that reach
    /// end of file while [`parse_head`] still says `Partial` report this variant.
    UnexpectedEof,
}

impl Error {
    /// The clause of `shared/specs/cgi.md` the script output breaks.
    pub fn clause(&self) -> &'static str {
        match self {
            Error::HeadTooLarge | Error::TooManyHeaders => "CGI-8.1-1",
            Error::MissingColon | Error::InvalidName => "CGI-6.3-3",
            Error::SpaceBeforeColon => "CGI-6.3-6",
            Error::ContinuationLine => "CGI-6.3-5",
            Error::InvalidValue => "CGI-2.2-3",
            Error::NoCgiField | Error::DuplicateCgiField => "CGI-6.3-2",
            Error::InvalidStatus => "CGI-6.3.3-1",
            Error::InvalidStatusLine => "CGI-5.2-2",
            Error::InvalidLocation => "CGI-6.3.2-2",
            Error::UnexpectedEof => "CGI-AMB-6",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::HeadTooLarge => "response head too large",
            Error::TooManyHeaders => "too many response header fields",
            Error::MissingColon => "header line without a colon",
            Error::SpaceBeforeColon => "whitespace before the colon of a header field",
            Error::InvalidName => "invalid header field name",
            Error::ContinuationLine => "continuation line in the response head",
            Error::InvalidValue => "control character in a header field value",
            Error::NoCgiField => "no Status, Location or Content-Type field",
            Error::DuplicateCgiField => "Status, Location or Content-Type given twice",
            Error::InvalidStatus => "invalid Status field",
            Error::InvalidStatusLine => "invalid HTTP status line",
            Error::InvalidLocation => "Location is neither an absolute URI nor a local path",
            Error::UnexpectedEof => "output ended before the end of the response head",
        };
        write!(f, "{msg} ({})", self.clause())
    }
}

impl std::error::Error for Error {}

/// Parses a response head up to and including the blank line.
///
/// On success returns the head and its length in bytes: the body starts at that
/// offset. Lines may end in LF or CR LF (CGI-7.2-5). With `nph = false` the head is a
/// CGI head, optionally opened by an `HTTP/1.x NNN reason` status line (accepted from
/// SCGI upstreams as nginx does, SCGI-AMB-1); it is checked for the rules of §6.3 and
/// classified, so [`ResponseHead::kind`] never fails on a head this function returned.
/// With `nph = true` the first line must be an HTTP/1.x status line and the fields are
/// HTTP header fields relayed as they are (CGI-5.2-2).
///
/// Returns [`Status::Partial`] while the blank line has not arrived and the bytes so
/// far are a valid prefix; an error as soon as they are not, or exceed `limits`.
/// When the output ends while still `Partial`, the caller reports
/// [`Error::UnexpectedEof`].
///
/// ```
/// use portico_protocols::Status;
/// use portico_protocols::cgi::response::{parse_head, Limits};
///
/// let limits = Limits::default();
/// assert_eq!(parse_head(b"Content-Type: text/ht", false, &limits), Ok(Status::Partial));
/// let Status::Complete((head, n)) = parse_head(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", true, &limits)?
/// else { unreachable!() };
/// assert_eq!((head.version, head.status, n), (Some(&b"HTTP/1.1"[..]), Some(200), 30));
/// # Ok::<(), portico_protocols::cgi::response::Error>(())
/// ```
pub fn parse_head<'a>(
    buf: &'a [u8],
    nph: bool,
    limits: &Limits,
) -> Result<Status<(ResponseHead<'a>, usize)>, Error> {
    // CGI-8.1-1 / CGI-9.6-2: never look further than the limit for the blank line.
    let window = buf.get(..limits.max_header_bytes).unwrap_or(buf);
    let mut head = ResponseHead::default();
    let mut pos = 0;
    let mut first = true;
    let mut fields = 0usize;
    loop {
        let rest = window.get(pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            check_partial_line(rest, first, nph)?;
            if buf.len() > limits.max_header_bytes {
                return Err(Error::HeadTooLarge);
            }
            return Ok(Status::Partial);
        };
        let raw = rest.get(..nl).unwrap_or_default();
        // CGI-7.2-5: accept CR LF as well as LF.
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += nl + 1;

        if line.is_empty() {
            if first {
                // CGI-6.2-1: at least one header field before the blank line.
                return Err(if nph {
                    Error::InvalidStatusLine
                } else {
                    Error::NoCgiField
                });
            }
            if !nph {
                // CGI-6.3-2, CGI-6.3.2-2, CGI-AMB-3: the whole head must classify.
                head.kind()?;
            }
            return Ok(Status::Complete((head, pos)));
        }

        if first && (nph || line.starts_with(b"HTTP/")) {
            // CGI-5.2-2 (NPH) and SCGI-AMB-1 (a status line in a CGI reply).
            let (version, code, reason) = parse_status_line(line)?;
            if !nph && code < 200 {
                // A CGI head is a final response: no interim 1xx.
                return Err(Error::InvalidStatusLine);
            }
            head.version = Some(version);
            head.status = Some(code);
            head.reason = reason;
            first = false;
            continue;
        }
        first = false;

        let Some((name, value)) = scan_line(line, true)? else {
            // Only a partial line can be undetermined.
            return Err(Error::MissingColon);
        };
        fields += 1;
        if fields > limits.max_headers {
            // CGI-8.1-1: documented limit on header data.
            return Err(Error::TooManyHeaders);
        }
        if nph {
            head.headers.push((name, value));
            continue;
        }
        // CGI-6.3-3: field names are case-insensitive.
        let slot = if name.eq_ignore_ascii_case(b"Status") {
            CgiField::Status
        } else if name.eq_ignore_ascii_case(b"Location") {
            CgiField::Location
        } else if name.eq_ignore_ascii_case(b"Content-Type") {
            CgiField::ContentType
        } else {
            head.headers.push((name, value));
            continue;
        };
        if value.is_empty() {
            // CGI-6.3-4: a field with an empty value counts as not sent.
            continue;
        }
        let taken = match slot {
            CgiField::Status => head.status.is_some(),
            CgiField::Location => head.location.is_some(),
            CgiField::ContentType => head.content_type.is_some(),
        };
        if taken {
            // CGI-6.3-2: no CGI field more than once (a status line counts as Status).
            return Err(Error::DuplicateCgiField);
        }
        match slot {
            CgiField::Status => {
                let (code, reason) = parse_status_value(value)?;
                head.status = Some(code);
                head.reason = reason;
            }
            CgiField::Location => head.location = Some(value),
            CgiField::ContentType => head.content_type = Some(value),
        }
    }
}

/// Writes `head` in CGI form with CR LF line ends, ending with the blank line.
///
/// A head with a [`version`](ResponseHead::version) starts with a status line
/// (`HTTP/1.1 200 OK`, status 200 if none is set); otherwise a set status becomes a
/// `Status:` field. Then `Location`, `Content-Type` and the other fields, in order.
/// Values are written as given: the caller keeps CR, LF and NUL out of them.
///
/// ```
/// use portico_protocols::cgi::response::{encode_head, ResponseHead};
///
/// let head = ResponseHead {
///     status: Some(200),
///     reason: Some(b"OK"),
///     content_type: Some(b"text/plain"),
///     ..ResponseHead::default()
/// };
/// let mut out = Vec::new();
/// encode_head(&head, &mut out);
/// assert_eq!(out, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n");
/// ```
pub fn encode_head(head: &ResponseHead<'_>, out: &mut Vec<u8>) {
    let status_tail = |out: &mut Vec<u8>, code: u16| {
        out.extend_from_slice(code.to_string().as_bytes());
        if let Some(reason) = head.reason.filter(|r| !r.is_empty()) {
            out.push(b' ');
            out.extend_from_slice(reason);
        }
        out.extend_from_slice(b"\r\n");
    };
    if let Some(version) = head.version {
        out.extend_from_slice(version);
        out.push(b' ');
        status_tail(out, head.status.unwrap_or(200));
    } else if let Some(code) = head.status {
        out.extend_from_slice(b"Status: ");
        status_tail(out, code);
    }
    let cgi = [
        (&b"Location"[..], head.location),
        (&b"Content-Type"[..], head.content_type),
    ];
    let fields = cgi
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .chain(head.headers.iter().copied());
    for (name, value) in fields {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a script-sent field is one the server must own rather than relay: the
/// hop-by-hop fields (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`; CGI-6.3.4-3, CGI-6.3.4-4) and `Content-Length`, which
/// the server recomputes when it frames the body (CGI-RW-8, CGI-6.2.1-4). For
/// non-NPH responses the server drops these from [`ResponseHead::headers`] (a
/// script-sent `Transfer-Encoding` may also be treated as an error, as Apache does).
///
/// ```
/// use portico_protocols::cgi::response::is_server_owned;
/// assert!(is_server_owned(b"transfer-encoding"));
/// assert!(!is_server_owned(b"Set-Cookie"));
/// ```
pub fn is_server_owned(name: &[u8]) -> bool {
    const OWNED: [&[u8]; 8] = [
        b"Connection",
        b"Keep-Alive",
        b"Proxy-Connection",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Content-Length",
    ];
    OWNED.iter().any(|o| o.eq_ignore_ascii_case(name))
}

impl<'a> ResponseHead<'a> {
    /// Classifies the head into a §6.2 response type (CGI-6.2-2).
    ///
    /// Portico's reading (CGI-AMB-3, CGI-AMB-6, CGI-RW-9, CGI-RW-10):
    ///
    /// - no `Status`, `Location`, `Content-Type` or status line: [`Error::NoCgiField`];
    /// - no `Location`: [`ResponseKind::Document`] (a `Status` without `Content-Type`,
    ///   such as 204 or 304, is a document without body);
    /// - a `Location` starting with `/` (but not `//`) is local, one starting with
    ///   `scheme:` or `//` is a client target, anything else [`Error::InvalidLocation`];
    /// - with no `Status` or `Status: 200`, a local `Location` is a
    ///   [`ResponseKind::LocalRedirect`] (other fields and the body discarded), a client
    ///   one a client redirect with status 302;
    /// - with a 3xx `Status`, any `Location` is a client redirect;
    /// - a client redirect is [`ResponseKind::ClientRedirectWithDocument`] when it has a
    ///   `Content-Type`, else [`ResponseKind::ClientRedirect`];
    /// - with any other `Status` (e.g. `201 Created`), `Location` is an ordinary field of
    ///   a [`ResponseKind::Document`].
    ///
    /// An NPH head keeps `Location` in its headers, so it is always a document.
    pub fn kind(&self) -> Result<ResponseKind, Error> {
        if self.version.is_none()
            && self.status.is_none()
            && self.location.is_none()
            && self.content_type.is_none()
        {
            // CGI-6.3-2: at least one CGI field.
            return Err(Error::NoCgiField);
        }
        let Some(location) = self.location else {
            // CGI-6.2.1-1
            return Ok(ResponseKind::Document);
        };
        // CGI-6.3.2-2, CGI-AMB-3
        let local = classify_location(location)?;
        let client = if self.content_type.is_some() {
            ResponseKind::ClientRedirectWithDocument
        } else {
            ResponseKind::ClientRedirect
        };
        Ok(match self.status {
            // CGI-6.2.2-1, CGI-RW-9: local path with status 200 (or none).
            None | Some(200) if local => ResponseKind::LocalRedirect,
            // CGI-6.2.3-3: a client redirect without a 3xx status becomes 302.
            None | Some(200) => client,
            // CGI-6.2.4-2: a redirection status.
            Some(300..=399) => client,
            Some(_) => ResponseKind::Document,
        })
    }

    /// The status code to send to the client: the script's status, else 302 for a
    /// client redirect and 200 for everything else (CGI-6.2.1-3, CGI-6.2.3-3). A client
    /// redirect with `Status: 200` also gets 302 (CGI-RW-9). Meaningless for a
    /// [`ResponseKind::LocalRedirect`], which the server serves internally.
    pub fn status_code(&self) -> u16 {
        let redirect = matches!(
            self.kind(),
            Ok(ResponseKind::ClientRedirect | ResponseKind::ClientRedirectWithDocument)
        );
        match self.status {
            None | Some(200) if redirect => 302,
            Some(code) => code,
            None => 200,
        }
    }

    /// The script's reason phrase, when [`status_code`](Self::status_code) is the
    /// script's own status (so a replaced `200 OK` never travels with a 302).
    pub fn reason_phrase(&self) -> Option<&'a [u8]> {
        match self.status {
            Some(code) if code == self.status_code() => self.reason,
            _ => None,
        }
    }
}

/// A header field: (name, value).
type Field<'a> = (&'a [u8], &'a [u8]);

/// A parsed status line: version, code, reason.
type StatusLine<'a> = (&'a [u8], u16, Option<&'a [u8]>);

/// nom output for a status line: version, space, code, optional space.
type StatusLineParts<'a> = (&'a [u8], &'a [u8], &'a [u8], Option<&'a [u8]>);

#[derive(Clone, Copy)]
enum CgiField {
    Status,
    Location,
    ContentType,
}

/// `true` for a local path, `false` for a client target (CGI-6.3.2-2, CGI-AMB-3).
fn classify_location(value: &[u8]) -> Result<bool, Error> {
    match value {
        // CGI-AMB-3: `//host/…` is a network-path reference, sent to the client.
        [b'/', b'/', ..] => Ok(false),
        [b'/', ..] => Ok(true),
        // CGI-6.3.2-2: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
        [first, rest @ ..] if first.is_ascii_alphabetic() => {
            let scheme_len = rest
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                .count();
            if rest.get(scheme_len) == Some(&b':') {
                Ok(false)
            } else {
                Err(Error::InvalidLocation)
            }
        }
        _ => Err(Error::InvalidLocation),
    }
}

/// Checks one header line so that a prefix of a line fails with the same error as the
/// whole line or not at all. `complete` says whether `line` is the whole line (line end
/// removed); for a prefix, `Ok(None)` means "undecided yet".
fn scan_line(line: &[u8], complete: bool) -> Result<Option<Field<'_>>, Error> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        // CGI-6.3-5: no continuation lines in CGI/1.1.
        return Err(Error::ContinuationLine);
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        // CGI-6.3-3, CGI-AMB-6: `name ":" [value]`; undecided until the line ends.
        return if complete {
            Err(Error::MissingColon)
        } else {
            Ok(None)
        };
    };
    let (name, after) = line.split_at(colon);
    let token_len = name.iter().take_while(|&&b| is_token_char(b)).count();
    let (token, tail) = name.split_at(token_len);
    if token.is_empty() {
        // CGI-6.3-3: the name is a non-empty token.
        return Err(Error::InvalidName);
    }
    if !tail.is_empty() {
        return Err(if tail.iter().all(|b| matches!(b, b' ' | b'\t')) {
            // CGI-6.3-6: no whitespace between the field name and the colon.
            Error::SpaceBeforeColon
        } else {
            Error::InvalidName
        });
    }
    let value = after.get(1..).unwrap_or_default();
    // CGI-2.2-3: values are TEXT; tab is the only control character allowed.
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::InvalidValue);
    }
    if !complete {
        return Ok(None);
    }
    // CGI-6.3-6: whitespace after the colon is not part of the value.
    Ok(Some((name, trim_ows(value))))
}

/// Checks the bytes of a line whose end has not arrived yet.
fn check_partial_line(rest: &[u8], first: bool, nph: bool) -> Result<(), Error> {
    // The last byte may be the CR of a CR LF.
    let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
    if first {
        let n = rest.len().min(5);
        let could_be_status = rest.get(..n) == b"HTTP/".get(..n);
        if could_be_status && (nph || rest.len() >= 5) {
            return Ok(());
        }
        if nph {
            // CGI-5.2-2: an NPH head starts with a status line.
            return Err(Error::InvalidStatusLine);
        }
    }
    scan_line(rest, false).map(|_| ())
}

/// `HTTP/1.x NNN [reason]` (CGI-5.2-2; SCGI-RW-1).
fn parse_status_line(line: &[u8]) -> Result<StatusLine<'_>, Error> {
    fn head(i: &[u8]) -> IResult<&[u8], StatusLineParts<'_>> {
        (
            recognize((tag(&b"HTTP/1."[..]), take_while_m_n(1, 1, is_digit))),
            tag(&b" "[..]),
            take_while_m_n(3, 3, is_digit),
            opt(tag(&b" "[..])),
        )
            .parse(i)
    }
    let (reason, (version, _, code, sp)) = head(line).map_err(|_| Error::InvalidStatusLine)?;
    if sp.is_none() && !reason.is_empty() {
        // A fourth digit, or junk straight after the code.
        return Err(Error::InvalidStatusLine);
    }
    let code = three_digits(code).ok_or(Error::InvalidStatusLine)?;
    if !(100..=599).contains(&code) {
        return Err(Error::InvalidStatusLine);
    }
    // Status lines are relayed to HTTP clients: same TEXT rule as field values.
    if reason
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(Error::InvalidStatusLine);
    }
    let reason = trim_ows(reason);
    Ok((version, code, (!reason.is_empty()).then_some(reason)))
}

/// The value of a `Status:` field: `NNN [SP reason]` (CGI-6.3.3-1). A missing reason is
/// accepted, as Apache does (CGI-RW-8).
fn parse_status_value(value: &[u8]) -> Result<(u16, Option<&[u8]>), Error> {
    let digits = value.get(..3).ok_or(Error::InvalidStatus)?;
    let code = three_digits(digits).ok_or(Error::InvalidStatus)?;
    let rest = value.get(3..).unwrap_or_default();
    let reason = match rest.first() {
        None => None,
        Some(b' ' | b'\t') => Some(trim_ows(rest)).filter(|r| !r.is_empty()),
        Some(_) => return Err(Error::InvalidStatus),
    };
    // A CGI response is final: 200 to 599 (no interim 1xx, no codes HTTP lacks).
    if !(200..=599).contains(&code) {
        return Err(Error::InvalidStatus);
    }
    Ok((code, reason))
}

fn three_digits(d: &[u8]) -> Option<u16> {
    match *d {
        [a, b, c] if d.iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    let v = v.get(start..).unwrap_or_default();
    let end = v.len()
        - v.iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
    v.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses a complete CGI head with default limits.
    fn cgi(buf: &[u8]) -> Result<ResponseHead<'_>, Error> {
        match parse_head(buf, false, &Limits::default())? {
            Status::Complete((head, n)) => {
                assert_eq!(n, buf.len(), "test heads end at the blank line");
                Ok(head)
            }
            Status::Partial => panic!("partial: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// A table case: name, CGI output, expected error.
    macro_rules! malformed {
        ($($name:ident: $input:expr => $err:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(cgi($input).map(|_| ()), Err($err));
            }
        )*};
    }

    malformed! {
        // CGI-AMB-6 / CGI-3.1-4: each malformed shape is a typed error (the server
        // answers 502 instead of relaying it).
        cgi_amb_6_line_without_colon: b"Content-Type text/plain\n\n" => Error::MissingColon;
        cgi_6_3_6_space_before_colon: b"Content-Type : text/plain\n\n" => Error::SpaceBeforeColon;
        cgi_6_3_3_name_is_token: b"Content Type: text/plain\n\n" => Error::InvalidName;
        cgi_6_3_3_empty_name: b": text/plain\n\n" => Error::InvalidName;
        cgi_6_3_5_no_continuation_lines: b"Content-Type: text/plain\nX-A: 1\n  2\n\n" => Error::ContinuationLine;
        cgi_6_3_2_no_cgi_field: b"X-Foo: bar\n\n" => Error::NoCgiField;
        cgi_6_2_1_empty_head: b"\n" => Error::NoCgiField;
        cgi_6_3_2_duplicate_content_type: b"Content-Type: a/b\ncontent-type: c/d\n\n" => Error::DuplicateCgiField;
        cgi_6_3_2_duplicate_status: b"Status: 200 OK\nStatus: 404 Not Found\nContent-Type: a/b\n\n" => Error::DuplicateCgiField;
        cgi_6_3_2_duplicate_location: b"Location: /a\nLocation: /b\n\n" => Error::DuplicateCgiField;
        cgi_6_3_3_1_status_not_numeric: b"Status: OK\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_6_3_3_1_status_four_digits: b"Status: 2000\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_6_3_3_1_status_glued_reason: b"Status: 200OK\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_6_3_3_1_status_out_of_range: b"Status: 099 Nope\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_6_3_3_1_status_600: b"Status: 600 Nope\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_6_3_3_1_status_interim: b"Status: 100 Continue\nContent-Type: a/b\n\n" => Error::InvalidStatus;
        cgi_2_2_3_control_in_value: b"Content-Type: a/b\nX: a\x00b\n\n" => Error::InvalidValue;
        cgi_2_2_3_bare_cr_in_value: b"Content-Type: a/b\nX: a\rb\n\n" => Error::InvalidValue;
        cgi_6_3_2_2_relative_location: b"Location: foo/bar\n\n" => Error::InvalidLocation;
        cgi_amb_3_location_without_scheme_or_slash: b"Location: 1http://x/\n\n" => Error::InvalidLocation;
        cgi_5_2_2_status_line_garbage_in_cgi: b"HTTP/1.1 abc\nContent-Type: a/b\n\n" => Error::InvalidStatusLine;
        cgi_6_3_2_status_line_and_status_field: b"HTTP/1.1 200 OK\nStatus: 404 Not Found\n\n" => Error::DuplicateCgiField;
    }

    /// CGI-3.1-4: the server turns these into a valid error response; the clause
    /// goes to the log.
    #[test]
    fn cgi_3_1_4_malformed_errors_name_their_clause() {
        assert_eq!(Error::MissingColon.clause(), "CGI-6.3-3");
        assert_eq!(Error::DuplicateCgiField.clause(), "CGI-6.3-2");
        assert_eq!(Error::UnexpectedEof.clause(), "CGI-AMB-6");
        assert!(Error::SpaceBeforeColon.to_string().contains("CGI-6.3-6"));
    }

    /// CGI-6.2.1-1, CGI-6.2.1-3, CGI-6.2-2
    #[test]
    fn cgi_6_2_1_3_document_defaults_to_200() {
        let head = cgi(b"Content-Type: text/html\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
        assert_eq!(head.status_code(), 200);
        assert_eq!(head.reason_phrase(), None);
    }

    #[test]
    fn cgi_6_3_3_1_status_with_reason() {
        let head = cgi(b"Status: 404 Not Found\nContent-Type: text/plain\n\n").unwrap();
        assert_eq!(head.status_code(), 404);
        assert_eq!(head.reason_phrase(), Some(&b"Not Found"[..]));
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
    }

    /// CGI-6.2.1-2 and CGI-6.3.1-1 tie `Content-Type` to a body; portico reads a head
    /// with only `Status` as a bodiless document and leaves the type unset (never
    /// guessed, CGI-6.3.1-2).
    #[test]
    fn cgi_6_2_1_2_status_only_document_has_no_type() {
        let head = cgi(b"Status: 304 Not Modified\r\n\r\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
        assert_eq!(head.content_type, None);
        assert_eq!(head.status_code(), 304);
    }

    #[test]
    fn cgi_rw_8_status_without_reason() {
        let head = cgi(b"Status: 204\n\n").unwrap();
        assert_eq!((head.status, head.reason), (Some(204), None));
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
    }

    /// CGI-6.2.2-1, CGI-6.2.2-3: the server serves the path internally.
    #[test]
    fn cgi_6_2_2_3_local_redirect() {
        let head = cgi(b"Location: /other?x=1\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::LocalRedirect));
        assert_eq!(head.location, Some(&b"/other?x=1"[..]));
    }

    /// CGI-6.2.2-2 is the script's MUST NOT; portico reads such output as Apache
    /// does (CGI-RW-9): still a local redirect, the rest discarded by the server.
    #[test]
    fn cgi_6_2_2_2_local_redirect_extra_fields_discarded() {
        let head = cgi(b"Location: /x\nContent-Type: text/html\nX-A: 1\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::LocalRedirect));
        let head = cgi(b"Status: 200 OK\nLocation: /x\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::LocalRedirect));
    }

    /// CGI-6.2.3-1, CGI-6.3.2-2
    #[test]
    fn cgi_6_2_3_3_client_redirect_is_302() {
        let head = cgi(b"Location: http://example.org/\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::ClientRedirect));
        assert_eq!(head.status_code(), 302);
        // CGI-RW-9: `Status: 200` with an absolute Location is still a 302, and the
        // "OK" reason is not sent with it.
        let head = cgi(b"Status: 200 OK\nLocation: https://x/\n\n").unwrap();
        assert_eq!(head.status_code(), 302);
        assert_eq!(head.reason_phrase(), None);
    }

    #[test]
    fn cgi_amb_3_network_path_is_client_redirect() {
        let head = cgi(b"Location: //evil.example/\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::ClientRedirect));
    }

    /// CGI-6.2.4-1, CGI-6.2.4-3
    #[test]
    fn cgi_6_2_4_2_client_redirect_with_document() {
        let head =
            cgi(b"Status: 301 Moved\r\nLocation: http://x/\r\nContent-Type: text/html\r\n\r\n")
                .unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::ClientRedirectWithDocument));
        assert_eq!(head.status_code(), 301);
        // CGI-RW-10: no Status but a body type: nginx sends 302 with the document.
        let head = cgi(b"Location: http://x/\nContent-Type: text/html\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::ClientRedirectWithDocument));
        assert_eq!(head.status_code(), 302);
        // A 3xx with a local path is sent to the client too.
        let head = cgi(b"Status: 303 See Other\nLocation: /done\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::ClientRedirect));
        assert_eq!(head.status_code(), 303);
    }

    #[test]
    fn cgi_6_3_2_1_location_with_non_redirect_status_is_a_field() {
        let head = cgi(b"Status: 201 Created\nLocation: /items/7\nContent-Type: a/b\n\n").unwrap();
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
        assert_eq!(head.status_code(), 201);
    }

    #[test]
    fn cgi_6_3_4_empty_cgi_field_counts_as_not_sent() {
        let head = cgi(b"Content-Type:\nContent-Type: text/plain\nStatus: \n\n").unwrap();
        assert_eq!(head.content_type, Some(&b"text/plain"[..]));
        assert_eq!(head.status, None);
    }

    #[test]
    fn cgi_6_3_3_names_case_insensitive_values_trimmed() {
        let head = cgi(b"content-TYPE: \t text/plain \t\nSET-COOKIE:a=1\n\n").unwrap();
        assert_eq!(head.content_type, Some(&b"text/plain"[..]));
        assert_eq!(head.headers, vec![(&b"SET-COOKIE"[..], &b"a=1"[..])]);
    }

    #[test]
    fn cgi_6_2_3_other_fields_order_and_duplicates_kept() {
        let head = cgi(b"Set-Cookie: a=1\nContent-Type: a/b\nSet-Cookie: b=2\nX: \n\n").unwrap();
        assert_eq!(
            head.headers,
            vec![
                (&b"Set-Cookie"[..], &b"a=1"[..]),
                (&b"Set-Cookie"[..], &b"b=2"[..]),
                (&b"X"[..], &b""[..]),
            ]
        );
    }

    #[test]
    fn cgi_7_2_5_lf_and_crlf_line_ends() {
        let lf = b"Status: 200 OK\nContent-Type: a/b\n\nbody";
        let crlf = b"Status: 200 OK\r\nContent-Type: a/b\r\n\r\nbody";
        let mixed = b"Status: 200 OK\r\nContent-Type: a/b\n\r\nbody";
        for buf in [&lf[..], &crlf[..], &mixed[..]] {
            let Ok(Status::Complete((head, n))) = parse_head(buf, false, &Limits::default()) else {
                panic!("{buf:?}");
            };
            assert_eq!(buf.get(n..), Some(&b"body"[..]));
            assert_eq!(head.status, Some(200));
        }
    }

    /// CGI-6.3.4-2: LF from the script becomes CR LF towards HTTP.
    #[test]
    fn cgi_6_3_4_2_encoder_writes_crlf() {
        let head = cgi(b"Status: 404 Not Found\nContent-Type: a/b\nX-A: 1\n\n").unwrap();
        let mut out = Vec::new();
        encode_head(&head, &mut out);
        assert_eq!(
            out,
            b"Status: 404 Not Found\r\nContent-Type: a/b\r\nX-A: 1\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn cgi_5_2_2_nph_requires_status_line() {
        let limits = Limits::default();
        assert_eq!(
            parse_head(b"Content-Type: a/b\r\n\r\n", true, &limits),
            Err(Error::InvalidStatusLine)
        );
        assert_eq!(
            parse_head(b"Cont", true, &limits),
            Err(Error::InvalidStatusLine)
        );
        assert_eq!(parse_head(b"HTTP/1.", true, &limits), Ok(Status::Partial));
        assert_eq!(
            parse_head(b"HTTP/2 200 OK\r\n\r\n", true, &limits),
            Err(Error::InvalidStatusLine)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 20 OK\r\n\r\n", true, &limits),
            Err(Error::InvalidStatusLine)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 2000\r\n\r\n", true, &limits),
            Err(Error::InvalidStatusLine)
        );
    }

    #[test]
    fn cgi_5_2_4_nph_headers_relayed_unmodified() {
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nStatus: odd\r\n\
                    Content-Type: a/b\r\nContent-Type: c/d\r\n\r\n";
        let Ok(Status::Complete((head, n))) = parse_head(buf, true, &Limits::default()) else {
            panic!()
        };
        assert_eq!(n, buf.len());
        assert_eq!(head.version, Some(&b"HTTP/1.1"[..]));
        assert_eq!(head.status_code(), 101);
        assert_eq!(head.reason, Some(&b"Switching Protocols"[..]));
        assert_eq!((head.location, head.content_type), (None, None));
        assert_eq!(head.headers.len(), 4);
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
    }

    #[test]
    fn scgi_amb_1_status_line_accepted_in_cgi_reply() {
        let head = cgi(b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(head.status_code(), 403);
        assert_eq!(head.content_type, Some(&b"text/plain"[..]));
        assert_eq!(head.kind(), Ok(ResponseKind::Document));
        // A status line alone is enough (it counts as the Status field).
        assert_eq!(
            cgi(b"HTTP/1.1 204 No Content\n\n").unwrap().status_code(),
            204
        );
    }

    #[test]
    fn scgi_5_2_example_reply() {
        let buf = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n42";
        let Ok(Status::Complete((head, n))) = parse_head(buf, false, &Limits::default()) else {
            panic!()
        };
        assert_eq!(buf.get(n..), Some(&b"42"[..]));
        assert_eq!(head.status_code(), 200);
    }

    #[test]
    fn cgi_8_1_1_head_size_limit() {
        let limits = Limits {
            max_header_bytes: 32,
            max_headers: 100,
        };
        // Exactly at the limit: fine.
        let ok = b"Content-Type: text/plain\nX: 12\n\n";
        assert_eq!(ok.len(), 32);
        assert!(parse_head(ok, false, &limits).unwrap().is_complete());
        // One byte more without the blank line: refused at once, no more reading.
        assert_eq!(
            parse_head(b"Content-Type: text/plain\nX: 123\n\n", false, &limits),
            Err(Error::HeadTooLarge)
        );
        assert_eq!(
            parse_head(&[b'X'; 33], false, &limits),
            Err(Error::HeadTooLarge)
        );
        assert_eq!(parse_head(&[b'X'; 32], false, &limits), Ok(Status::Partial));
    }

    #[test]
    fn cgi_8_1_1_header_count_limit() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 2,
        };
        assert!(parse_head(b"Content-Type: a/b\nX: 1\n\n", false, &limits).is_ok());
        assert_eq!(
            parse_head(b"Content-Type: a/b\nX: 1\nY: 2\n", false, &limits),
            Err(Error::TooManyHeaders)
        );
    }

    #[test]
    fn cgi_amb_6_malformed_prefix_fails_early() {
        let limits = Limits::default();
        assert_eq!(
            parse_head(b"Content-Type: a/b\nX: 1", false, &limits),
            Ok(Status::Partial)
        );
        assert_eq!(
            parse_head(b"Content-Type: a/b\r", false, &limits),
            Ok(Status::Partial)
        );
        assert_eq!(parse_head(b"Bad Name", false, &limits), Ok(Status::Partial));
        assert_eq!(
            parse_head(b"Bad Name:", false, &limits),
            Err(Error::InvalidName)
        );
        assert_eq!(
            parse_head(b"<html>\n", false, &limits),
            Err(Error::MissingColon)
        );
        assert_eq!(
            parse_head(b"Name :", false, &limits),
            Err(Error::SpaceBeforeColon)
        );
        assert_eq!(
            parse_head(b"X: a\x01", false, &limits),
            Err(Error::InvalidValue)
        );
        assert_eq!(
            parse_head(b" x", false, &limits),
            Err(Error::ContinuationLine)
        );
    }

    #[test]
    fn cgi_6_3_4_4_server_owned_fields() {
        for name in [
            &b"Connection"[..],
            b"transfer-encoding",
            b"Content-Length",
            b"Keep-Alive",
        ] {
            assert!(is_server_owned(name));
        }
        // CGI-RW-8: they stay in the parsed headers; the server drops them.
        let head = cgi(b"Content-Type: a/b\nTransfer-Encoding: chunked\n\n").unwrap();
        assert_eq!(
            head.headers,
            vec![(&b"Transfer-Encoding"[..], &b"chunked"[..])]
        );
    }

    // ---- properties -------------------------------------------------------------------

    fn token() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::sample::select(b"abcXYZ019-_!#$%&'*+.^`|~".to_vec()),
            1..12,
        )
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        // Visible TEXT with inner spaces, no surrounding whitespace.
        (
            proptest::collection::vec(0x21u8..=0x7e, 1..8),
            proptest::collection::vec(prop_oneof![Just(b' '), 0x21u8..=0x7e, 0x80u8..=0xff], 0..16),
            proptest::collection::vec(0x21u8..=0x7e, 0..3),
        )
            .prop_map(|(a, b, c)| {
                let mut v = a;
                v.extend(b);
                v.extend(c);
                while v.last() == Some(&b' ') {
                    v.pop();
                }
                v
            })
    }

    #[derive(Debug, Clone)]
    struct OwnedHead {
        status: Option<(u16, Option<Vec<u8>>)>,
        location: Option<Vec<u8>>,
        content_type: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    }

    impl OwnedHead {
        fn borrow(&self) -> ResponseHead<'_> {
            ResponseHead {
                version: None,
                status: self.status.as_ref().map(|s| s.0),
                reason: self.status.as_ref().and_then(|s| s.1.as_deref()),
                location: self.location.as_deref(),
                content_type: self.content_type.as_deref(),
                headers: self
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect(),
            }
        }
    }

    fn owned_head() -> impl Strategy<Value = OwnedHead> {
        let location = prop_oneof![
            text().prop_map(|t| {
                let mut v = b"/".to_vec();
                v.extend(t);
                v
            }),
            text().prop_map(|t| {
                let mut v = b"https://".to_vec();
                v.extend(t);
                v
            }),
        ];
        (
            proptest::option::of((200u16..=599, proptest::option::of(text()))),
            proptest::option::of(location),
            proptest::option::of(text()),
            proptest::collection::vec((token(), prop_oneof![Just(Vec::new()), text()]), 0..6),
        )
            .prop_filter_map(
                "needs a CGI field",
                |(status, location, content_type, headers)| {
                    let headers: Vec<_> = headers
                        .into_iter()
                        .filter(|(n, _)| {
                            ![&b"Status"[..], b"Location", b"Content-Type"]
                                .iter()
                                .any(|c| c.eq_ignore_ascii_case(n))
                        })
                        .collect();
                    (status.is_some() || location.is_some() || content_type.is_some()).then_some(
                        OwnedHead {
                            status,
                            location,
                            content_type,
                            headers,
                        },
                    )
                },
            )
    }

    proptest! {
        /// CGI-6.3.4-2: parse(encode(x)) == x, and the head ends where encode stopped.
        #[test]
        fn cgi_6_3_3_head_round_trip(owned in owned_head(), body in proptest::collection::vec(any::<u8>(), 0..8)) {
            let head = owned.borrow();
            let mut out = Vec::new();
            encode_head(&head, &mut out);
            let len = out.len();
            out.extend_from_slice(&body);
            let parsed = parse_head(&out, false, &Limits::default());
            prop_assert_eq!(parsed, Ok(Status::Complete((head, len))));
        }

        /// SCGI-2-1 (a byte stream): every split of a valid head is Partial until the
        /// blank line is complete.
        #[test]
        fn cgi_7_2_5_head_split_at_every_byte(owned in owned_head()) {
            let head = owned.borrow();
            let mut out = Vec::new();
            encode_head(&head, &mut out);
            for i in 0..out.len() {
                prop_assert_eq!(parse_head(&out[..i], false, &Limits::default()), Ok(Status::Partial));
            }
            prop_assert!(parse_head(&out, false, &Limits::default()).unwrap().is_complete());
        }

        /// Any bytes: no panic, and a prefix either waits or fails exactly as the whole.
        #[test]
        fn cgi_amb_6_prefix_agrees_with_whole(
            buf in proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(b"HTP/1. 0123456789:\r\n\n\tStatusLocation-Content-Type".to_vec()),
                    1 => any::<u8>(),
                ],
                0..80,
            ),
            nph in any::<bool>(),
            max in 8usize..100,
        ) {
            let limits = Limits { max_header_bytes: max, max_headers: 4 };
            let whole = parse_head(&buf, nph, &limits);
            for i in 0..buf.len() {
                let part = parse_head(&buf[..i], nph, &limits);
                match (&part, &whole) {
                    (Ok(Status::Partial), _) => {}
                    (Err(p), Err(w)) => prop_assert_eq!(p, w, "prefix {}", i),
                    _ => prop_assert!(false, "prefix {} gave {:?}, whole {:?}", i, part, whole),
                }
            }
        }
    }
}
