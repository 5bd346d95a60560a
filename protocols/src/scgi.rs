//! SCGI netstring requests (SCGI, N. Schemenauer, 2008-06-23; `shared/specs/scgi.md`).
//!
//! A request is a netstring (`len ":" bytes ","`) holding NUL-terminated name/value
//! pairs, `CONTENT_LENGTH` first and `SCGI` = `1` among them, then exactly
//! `CONTENT_LENGTH` body bytes. The reply is a CGI response: parse it with
//! [`crate::cgi::response::parse_head`].
//!
//! [`parse_request`] is the application side (portico as an SCGI server);
//! [`encode_request`] the web-server side (portico forwarding to an SCGI upstream).
//!
//! ```
//! use portico_protocols::Status;
//! use portico_protocols::scgi::{parse_request, Limits};
//!
//! // SCGI-5-1: the specification's example, byte for byte.
//! let bytes = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00\
//!               REQUEST_URI\x00/deepthought\x00,What is the answer to life?";
//! let Status::Complete((req, n)) = parse_request(bytes, &Limits::default())? else {
//!     unreachable!("the whole netstring is in the buffer");
//! };
//! assert_eq!(req.content_length, 27);
//! assert_eq!(req.get(b"REQUEST_URI"), Some(&b"/deepthought"[..]));
//! assert_eq!(&bytes[n..], b"What is the answer to life?");
//! # Ok::<(), portico_protocols::scgi::Error>(())
//! ```

use core::fmt;

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_till},
    sequence::terminated,
};

use crate::Status;

/// Default for [`Limits::max_header_bytes`]: 64 KiB (65 536 bytes).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Default for [`Limits::max_headers`]: 256 headers.
pub const DEFAULT_MAX_HEADERS: usize = 256;

/// Bounds on a request's header block (SCGI-AMB-4: the specification sets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest netstring length (the header block, without `len:` and `,`). A longer
    /// declared length is refused as soon as its digits are read, before any of the
    /// block is buffered. Default [`DEFAULT_MAX_HEADER_BYTES`] (64 KiB).
    pub max_header_bytes: usize,
    /// Most headers in the block. Default [`DEFAULT_MAX_HEADERS`] (256).
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

/// A parsed SCGI request head. Names and values borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Every header in order, `CONTENT_LENGTH` (first) and `SCGI` included. Names are
    /// unique (SCGI-3-3); values may be empty (SCGI-AMB-2).
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body length: exactly this many bytes follow the netstring (SCGI-3-11).
    pub content_length: u64,
}

impl<'a> Request<'a> {
    /// The value of the header named exactly `name`.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// Whether the `SCGI` header was sent. A request without it is accepted
    /// (SCGI-AMB-8); the caller logs a warning when this is `false`.
    pub fn has_scgi_header(&self) -> bool {
        self.get(b"SCGI").is_some()
    }
}

/// A request that breaks the SCGI rules. The peer (web server) is at fault: close the
/// connection and log it (SCGI-AMB-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The netstring length is empty or has a non-digit before the `:`.
    InvalidLength,
    /// The netstring length has a leading zero.
    LeadingZero,
    /// The declared length is over [`Limits::max_header_bytes`].
    TooLarge,
    /// The byte after the header block is not `,`.
    MissingComma,
    /// The header block does not end in a NUL after a value (an odd number of strings).
    Unterminated,
    /// A header with an empty name.
    EmptyName,
    /// More headers than [`Limits::max_headers`].
    TooManyHeaders,
    /// The same name twice.
    DuplicateName,
    /// No `CONTENT_LENGTH` header.
    MissingContentLength,
    /// `CONTENT_LENGTH` present but not the first header.
    ContentLengthNotFirst,
    /// A `CONTENT_LENGTH` value that is empty, has a non-digit, or overflows 64 bits.
    InvalidContentLength,
    /// An `SCGI` header with a value other than `1`.
    UnsupportedVersion,
}

impl Error {
    /// The clause of `shared/specs/scgi.md` the request breaks.
    pub fn clause(&self) -> &'static str {
        match self {
            Error::InvalidLength | Error::MissingComma => "SCGI-4-5",
            Error::LeadingZero => "SCGI-4-2",
            Error::TooLarge | Error::TooManyHeaders => "SCGI-AMB-4",
            Error::Unterminated | Error::EmptyName => "SCGI-3-2",
            Error::DuplicateName => "SCGI-3-3",
            Error::MissingContentLength => "SCGI-3-6",
            Error::ContentLengthNotFirst => "SCGI-3-4",
            Error::InvalidContentLength => "SCGI-3-5",
            Error::UnsupportedVersion => "SCGI-AMB-8",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::InvalidLength => "invalid netstring length",
            Error::LeadingZero => "leading zero in netstring length",
            Error::TooLarge => "header block too large",
            Error::MissingComma => "netstring not terminated by a comma",
            Error::Unterminated => "header block not terminated by NUL",
            Error::EmptyName => "empty header name",
            Error::TooManyHeaders => "too many headers",
            Error::DuplicateName => "duplicate header name",
            Error::MissingContentLength => "no CONTENT_LENGTH header",
            Error::ContentLengthNotFirst => "CONTENT_LENGTH is not the first header",
            Error::InvalidContentLength => "invalid CONTENT_LENGTH value",
            Error::UnsupportedVersion => "SCGI header is not 1",
        };
        write!(f, "{msg} ({})", self.clause())
    }
}

impl std::error::Error for Error {}

/// Parses one netstring from the start of `buf` (SCGI-4-1), refusing a declared length
/// over `max_len` as soon as its digits show it (SCGI-AMB-4).
///
/// Returns the string and the bytes consumed (through the `,`), or
/// [`Status::Partial`] while `buf` is a valid prefix.
///
/// ```
/// use portico_protocols::{Status, scgi::parse_netstring};
/// assert_eq!(parse_netstring(b"12:hello world!,", 100), Ok(Status::Complete((&b"hello world!"[..], 16))));
/// assert_eq!(parse_netstring(b"12:hel", 100), Ok(Status::Partial));
/// assert!(parse_netstring(b"012:hello world!,", 100).is_err());
/// ```
pub fn parse_netstring(buf: &[u8], max_len: usize) -> Result<Status<(&[u8], usize)>, Error> {
    let mut len: usize = 0;
    let mut digits = 0usize;
    let colon = loop {
        let Some(&b) = buf.get(digits) else {
            return Ok(Status::Partial);
        };
        match b {
            b'0'..=b'9' => {
                if digits == 1 && len == 0 {
                    // SCGI-4-2: `len` starts with `0` only when it is exactly `0`.
                    return Err(Error::LeadingZero);
                }
                // SCGI-AMB-4: refuse an oversized length before reading the block (and
                // so never read more than a few digits before the colon).
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(b - b'0')))
                    .filter(|&l| l <= max_len)
                    .ok_or(Error::TooLarge)?;
                digits += 1;
            }
            // SCGI-4-5: a non-empty run of digits, then `:`.
            b':' if digits > 0 => break digits,
            _ => return Err(Error::InvalidLength),
        }
    };
    let start = colon + 1;
    let end = start.checked_add(len).ok_or(Error::TooLarge)?;
    let (Some(string), Some(&comma)) = (buf.get(start..end), buf.get(end)) else {
        return Ok(Status::Partial);
    };
    if comma != b',' {
        // SCGI-4-5: the byte after the string is a comma.
        return Err(Error::MissingComma);
    }
    Ok(Status::Complete((string, end + 1)))
}

/// Appends `data` as a netstring (SCGI-4-1), with no leading zeros (SCGI-4-2).
///
/// ```
/// let mut out = Vec::new();
/// portico_protocols::scgi::encode_netstring(b"", &mut out);
/// assert_eq!(out, b"0:,");
/// ```
pub fn encode_netstring(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// Parses an SCGI request head: the header netstring (SCGI-3-9).
///
/// Returns the request and the bytes consumed; the body (exactly
/// [`Request::content_length`] bytes, SCGI-3-11) starts there. Returns
/// [`Status::Partial`] while `buf` is a prefix of a netstring, and an error as soon as
/// it cannot be one, or declares a block over [`Limits::max_header_bytes`].
///
/// Checks (portico's readings in brackets): netstring form and no leading zeros
/// (SCGI-4-2, SCGI-4-5); NUL-terminated pairs with non-empty names, values may be empty
/// (SCGI-3-2, SCGI-AMB-2); `CONTENT_LENGTH` present, first, and a non-empty run of
/// digits (SCGI-3-4 to SCGI-3-6; [leading zeros accepted, SCGI-AMB-7]); no duplicate
/// names (SCGI-3-3; [refused, SCGI-AMB-3]); `SCGI` = `1` (SCGI-3-7; [absent is
/// accepted, any other value refused, SCGI-AMB-8]).
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Status<(Request<'a>, usize)>, Error> {
    let (block, consumed) = match parse_netstring(buf, limits.max_header_bytes)? {
        Status::Complete(v) => v,
        Status::Partial => return Ok(Status::Partial),
    };
    let headers = parse_block(block, limits.max_headers)?;

    // SCGI-3-4, SCGI-3-6: CONTENT_LENGTH is always there, and first.
    let content_length = match headers.first() {
        Some(&(b"CONTENT_LENGTH", value)) => value,
        _ if headers.iter().any(|(n, _)| *n == b"CONTENT_LENGTH") => {
            return Err(Error::ContentLengthNotFirst);
        }
        _ => return Err(Error::MissingContentLength),
    };
    // SCGI-3-5: a non-empty string of ASCII digits (SCGI-AMB-7: leading zeros allowed).
    let content_length = parse_decimal(content_length).ok_or(Error::InvalidContentLength)?;

    // SCGI-3-3, SCGI-AMB-3: no name twice.
    let mut names: Vec<&[u8]> = headers.iter().map(|&(n, _)| n).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(Error::DuplicateName);
    }

    // SCGI-3-7, SCGI-AMB-8: an unknown protocol revision is refused.
    if headers.iter().any(|&(n, v)| n == b"SCGI" && v != b"1") {
        return Err(Error::UnsupportedVersion);
    }

    Ok(Status::Complete((
        Request {
            headers,
            content_length,
        },
        consumed,
    )))
}

/// Appends an SCGI request head: the netstring of `CONTENT_LENGTH` (first, SCGI-3-4,
/// SCGI-3-6), `SCGI` = `1` (SCGI-3-7), then `headers` in order (SCGI-3-8, SCGI-3-9).
/// The body, exactly `content_length` bytes, goes after it (SCGI-3-10).
///
/// Given `CONTENT_LENGTH` and `SCGI` headers are skipped, as is any later header whose
/// name was already written (SCGI-3-3). A header that SCGI cannot carry (empty name, or
/// a NUL in name or value, SCGI-3-2) is skipped too.
///
/// ```
/// use portico_protocols::scgi::encode_request;
/// let mut out = Vec::new();
/// encode_request([(&b"REQUEST_METHOD"[..], &b"GET"[..])], 0, &mut out);
/// assert_eq!(out, b"43:CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00,");
/// ```
pub fn encode_request<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    content_length: u64,
    out: &mut Vec<u8>,
) {
    let length = content_length.to_string();
    let mut pairs: Vec<(&[u8], &[u8])> =
        vec![(b"CONTENT_LENGTH", length.as_bytes()), (b"SCGI", b"1")];
    for (name, value) in headers {
        if name.is_empty() || name.contains(&0) || value.contains(&0) {
            continue;
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            continue;
        }
        pairs.push((name, value));
    }
    let len: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    out.reserve(len + 24);
    // SCGI-4-1, SCGI-4-2
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b':');
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out.push(b',');
}

/// One SCGI header: (name, value).
type Header<'a> = (&'a [u8], &'a [u8]);

/// Splits a header block into pairs (SCGI-3-2).
fn parse_block(mut block: &[u8], max_headers: usize) -> Result<Vec<Header<'_>>, Error> {
    let mut headers = Vec::new();
    while !block.is_empty() {
        if headers.len() == max_headers {
            // SCGI-AMB-4
            return Err(Error::TooManyHeaders);
        }
        // SCGI-3-2: name NUL value NUL; a block ends right after a value's NUL.
        let (rest, name) = nul_terminated(block).map_err(|_| Error::Unterminated)?;
        let (rest, value) = nul_terminated(rest).map_err(|_| Error::Unterminated)?;
        if name.is_empty() {
            // SCGI-3-2: names are at least one byte.
            return Err(Error::EmptyName);
        }
        headers.push((name, value));
        block = rest;
    }
    Ok(headers)
}

fn nul_terminated(i: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_till(|b| b == 0), tag(&[0u8][..])).parse(i)
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SCGI-5-1: the specification's example request, 70-byte header block.
    const EXAMPLE: &[u8] = b"70:CONTENT_LENGTH\x0027\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00\
        REQUEST_URI\x00/deepthought\x00,What is the answer to life?";

    fn parse(buf: &[u8]) -> Result<Status<(Request<'_>, usize)>, Error> {
        parse_request(buf, &Limits::default())
    }

    /// Wraps a header block in a netstring.
    fn net(block: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_netstring(block, &mut out);
        out
    }

    macro_rules! refused {
        ($($name:ident: $input:expr => $err:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(parse(&$input[..]).map(|_| ()), Err($err));
            }
        )*};
    }

    refused! {
        // SCGI-T-3, SCGI-T-4
        scgi_4_2_leading_zero_refused: b"070:CONTENT_LENGTH" => Error::LeadingZero;
        scgi_4_2_leading_zero_short: b"00:," => Error::LeadingZero;
        scgi_4_5_non_digit_length: b"7a:" => Error::InvalidLength;
        scgi_4_5_empty_length: b":CONTENT_LENGTH\x000\x00," => Error::InvalidLength;
        scgi_4_5_sign_not_digit: b"+5:" => Error::InvalidLength;
        scgi_4_5_missing_comma: b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00;" => Error::MissingComma;
        // SCGI-4-4: "0:," can never be an SCGI header.
        scgi_4_4_empty_block: b"0:," => Error::MissingContentLength;
        // SCGI-T-9
        scgi_3_2_block_without_final_nul: net(b"CONTENT_LENGTH\x000\x00SCGI\x001") => Error::Unterminated;
        scgi_3_2_odd_string_count: net(b"CONTENT_LENGTH\x000\x00SCGI\x00") => Error::Unterminated;
        scgi_3_2_empty_name: net(b"CONTENT_LENGTH\x000\x00\x00x\x00") => Error::EmptyName;
        // SCGI-T-6
        scgi_3_4_content_length_not_first: net(b"SCGI\x001\x00CONTENT_LENGTH\x000\x00") => Error::ContentLengthNotFirst;
        scgi_3_6_content_length_missing: net(b"SCGI\x001\x00") => Error::MissingContentLength;
        scgi_3_5_content_length_not_numeric: net(b"CONTENT_LENGTH\x00ten\x00") => Error::InvalidContentLength;
        scgi_3_5_content_length_empty: net(b"CONTENT_LENGTH\x00\x00") => Error::InvalidContentLength;
        scgi_3_5_content_length_overflow: net(b"CONTENT_LENGTH\x0099999999999999999999\x00") => Error::InvalidContentLength;
        // SCGI-T-8
        scgi_3_3_duplicate_name_refused: net(b"CONTENT_LENGTH\x000\x00A\x001\x00B\x00\x00A\x002\x00") => Error::DuplicateName;
        scgi_3_3_duplicate_content_length: net(b"CONTENT_LENGTH\x000\x00CONTENT_LENGTH\x000\x00") => Error::DuplicateName;
        // SCGI-T-7
        scgi_amb_8_scgi_version_2_refused: net(b"CONTENT_LENGTH\x000\x00SCGI\x002\x00") => Error::UnsupportedVersion;
    }

    #[test]
    fn scgi_5_1_example_byte_exact() {
        let Ok(Status::Complete((req, n))) = parse(EXAMPLE) else {
            panic!()
        };
        assert_eq!(n, 74);
        assert_eq!(req.content_length, 27);
        assert_eq!(
            req.headers,
            vec![
                (&b"CONTENT_LENGTH"[..], &b"27"[..]),
                (&b"SCGI"[..], &b"1"[..]),
                (&b"REQUEST_METHOD"[..], &b"POST"[..]),
                (&b"REQUEST_URI"[..], &b"/deepthought"[..]),
            ]
        );
        assert!(req.has_scgi_header());
        // And the encoder produces the same bytes (SCGI-3-9, SCGI-3-10).
        let mut out = Vec::new();
        encode_request(req.headers.iter().copied(), 27, &mut out);
        out.extend_from_slice(b"What is the answer to life?");
        assert_eq!(out, EXAMPLE);
    }

    #[test]
    fn scgi_4_3_netstring_examples() {
        let mut out = Vec::new();
        encode_netstring(b"hello world!", &mut out);
        assert_eq!(out, b"12:hello world!,");
        assert_eq!(
            parse_netstring(b"0:,", 10),
            Ok(Status::Complete((&b""[..], 3)))
        );
        assert_eq!(parse_netstring(b"0", 10), Ok(Status::Partial));
        assert_eq!(parse_netstring(b"3:abcX", 10), Err(Error::MissingComma));
    }

    /// SCGI-T-10: extra bytes after the body are not a second request.
    #[test]
    fn scgi_3_11_body_is_exactly_content_length_after_comma() {
        let mut buf = net(b"CONTENT_LENGTH\x005\x00SCGI\x001\x00");
        let head = buf.len();
        buf.extend_from_slice(b"hello0123456789");
        let Ok(Status::Complete((req, n))) = parse(&buf) else {
            panic!()
        };
        assert_eq!(n, head);
        let body = usize::try_from(req.content_length).unwrap();
        assert_eq!(buf.get(n..n + body), Some(&b"hello"[..]));
    }

    /// SCGI-T-2: every prefix is Partial, then the same request.
    #[test]
    fn scgi_2_1_byte_at_a_time() {
        for i in 0..74 {
            assert_eq!(parse(&EXAMPLE[..i]), Ok(Status::Partial), "prefix {i}");
        }
        assert!(parse(&EXAMPLE[..74]).unwrap().is_complete());
    }

    /// SCGI-T-5: refused from the digits alone, without the block.
    #[test]
    fn scgi_amb_4_oversized_length_refused_before_buffering() {
        assert_eq!(parse(b"99999999999999999999"), Err(Error::TooLarge));
        assert_eq!(parse(b"65537"), Err(Error::TooLarge));
        assert_eq!(parse(b"65536"), Ok(Status::Partial));
        let limits = Limits {
            max_header_bytes: 30,
            max_headers: 256,
        };
        assert_eq!(parse_request(b"31", &limits), Err(Error::TooLarge));
        assert_eq!(parse_request(b"3", &limits), Ok(Status::Partial));
    }

    #[test]
    fn scgi_amb_4_header_count_limit() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 2,
        };
        let two = net(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00");
        assert!(parse_request(&two, &limits).unwrap().is_complete());
        let three = net(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00A\x00\x00");
        assert_eq!(parse_request(&three, &limits), Err(Error::TooManyHeaders));
    }

    #[test]
    fn scgi_amb_2_empty_value_accepted() {
        let buf = net(b"CONTENT_LENGTH\x000\x00SCGI\x001\x00QUERY_STRING\x00\x00");
        let Ok(Status::Complete((req, _))) = parse(&buf) else {
            panic!()
        };
        assert_eq!(req.get(b"QUERY_STRING"), Some(&b""[..]));
        assert_eq!(req.get(b"query_string"), None);
    }

    #[test]
    fn scgi_amb_7_content_length_leading_zeros_accepted() {
        let buf = net(b"CONTENT_LENGTH\x00007\x00SCGI\x001\x00");
        let Ok(Status::Complete((req, _))) = parse(&buf) else {
            panic!()
        };
        assert_eq!(req.content_length, 7);
    }

    #[test]
    fn scgi_amb_8_missing_scgi_header_accepted() {
        let buf = net(b"CONTENT_LENGTH\x000\x00");
        let Ok(Status::Complete((req, _))) = parse(&buf) else {
            panic!()
        };
        assert!(!req.has_scgi_header());
    }

    /// SCGI-T-13; also SCGI-3-4, SCGI-3-6: CONTENT_LENGTH first, `0` without body.
    #[test]
    fn scgi_3_7_encoder_sends_scgi_1() {
        let mut out = Vec::new();
        encode_request([], 0, &mut out);
        assert_eq!(out, b"24:CONTENT_LENGTH\x000\x00SCGI\x001\x00,");
    }

    /// SCGI-3-3: given CONTENT_LENGTH / SCGI and repeated names are not duplicated.
    #[test]
    fn scgi_3_4_encoder_writes_content_length_first() {
        let headers: [(&[u8], &[u8]); 5] = [
            (b"SCGI", b"2"),
            (b"A", b"1"),
            (b"CONTENT_LENGTH", b"99"),
            (b"A", b"2"),
            (b"B", b"x\0y"),
        ];
        let mut out = Vec::new();
        encode_request(headers, 12, &mut out);
        let Ok(Status::Complete((req, n))) = parse(&out) else {
            panic!("{out:?}")
        };
        assert_eq!(n, out.len());
        assert_eq!(
            req.headers,
            vec![
                (&b"CONTENT_LENGTH"[..], &b"12"[..]),
                (&b"SCGI"[..], &b"1"[..]),
                (&b"A"[..], &b"1"[..]),
            ]
        );
    }

    #[test]
    fn scgi_3_3_encoder_never_repeats_a_name() {
        let headers: [(&[u8], &[u8]); 4] =
            [(b"A", b"1"), (b"A", b"2"), (b"SCGI", b"1"), (b"a", b"3")];
        let mut out = Vec::new();
        encode_request(headers, 0, &mut out);
        let Ok(Status::Complete((req, _))) = parse(&out) else {
            panic!("{out:?}")
        };
        let names: Vec<&[u8]> = req.headers.iter().map(|&(n, _)| n).collect();
        assert_eq!(names, vec![&b"CONTENT_LENGTH"[..], b"SCGI", b"A", b"a"]);
    }

    /// Also covers SCGI-4-4: the header netstring is never `0:,`.
    #[test]
    fn scgi_3_6_encoder_zero_without_body() {
        let mut out = Vec::new();
        encode_request([], 0, &mut out);
        assert!(out.starts_with(b"24:CONTENT_LENGTH\x000\x00"));
    }

    /// The encoder stops at the comma: the caller's body bytes follow with no separator.
    #[test]
    fn scgi_3_10_body_follows_comma_directly() {
        let mut out = Vec::new();
        encode_request([(&b"REQUEST_METHOD"[..], &b"POST"[..])], 3, &mut out);
        let head = out.len();
        out.extend_from_slice(b"abc");
        let Ok(Status::Complete((req, n))) = parse(&out) else {
            panic!()
        };
        assert_eq!(n, head);
        assert_eq!(out.get(n - 1), Some(&b','));
        assert_eq!(out.len() - n, usize::try_from(req.content_length).unwrap());
    }

    #[test]
    fn scgi_3_5_encoder_content_length_decimal() {
        let mut out = Vec::new();
        encode_request([], u64::MAX, &mut out);
        let Ok(Status::Complete((req, _))) = parse(&out) else {
            panic!()
        };
        assert_eq!(req.content_length, u64::MAX);
        assert_eq!(
            req.get(b"CONTENT_LENGTH"),
            Some(u64::MAX.to_string().as_bytes())
        );
    }

    /// SCGI-3-9, SCGI-4-1
    #[test]
    fn scgi_4_2_encoder_no_leading_zeros() {
        let mut out = Vec::new();
        encode_request([(&b"X"[..], &b"y"[..])], 1, &mut out);
        assert!(out.starts_with(b"28:"));
        assert_eq!(out.last(), Some(&b','));
    }

    #[test]
    fn scgi_amb_3_errors_name_their_clause() {
        assert_eq!(Error::DuplicateName.clause(), "SCGI-3-3");
        assert_eq!(Error::LeadingZero.clause(), "SCGI-4-2");
        assert!(Error::TooLarge.to_string().contains("SCGI-AMB-4"));
    }

    // ---- properties -------------------------------------------------------------------

    fn headers() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        proptest::collection::vec(
            (
                proptest::collection::vec(1u8..=255, 1..12),
                proptest::collection::vec(1u8..=255, 0..12),
            ),
            0..8,
        )
        .prop_map(|hs| {
            let mut seen: Vec<Vec<u8>> = vec![b"CONTENT_LENGTH".to_vec(), b"SCGI".to_vec()];
            hs.into_iter()
                .filter(|(n, _)| {
                    let fresh = !seen.contains(n);
                    seen.push(n.clone());
                    fresh
                })
                .collect()
        })
    }

    proptest! {
        /// SCGI-4-1: parse(encode(x)) == x for netstrings, and every prefix is Partial.
        #[test]
        fn scgi_4_1_netstring_round_trip(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut out = Vec::new();
            encode_netstring(&data, &mut out);
            prop_assert_eq!(parse_netstring(&out, 40), Ok(Status::Complete((data.as_slice(), out.len()))));
            for i in 0..out.len() {
                prop_assert_eq!(parse_netstring(&out[..i], 40), Ok(Status::Partial));
            }
        }

        /// SCGI-3-9: parse(encode(x)) == x for requests, split at every byte boundary.
        #[test]
        fn scgi_3_9_request_round_trip(hs in headers(), len in any::<u64>()) {
            let mut out = Vec::new();
            encode_request(hs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())), len, &mut out);
            let length = len.to_string();
            let mut expected: Vec<(&[u8], &[u8])> = vec![(b"CONTENT_LENGTH", length.as_bytes()), (b"SCGI", b"1")];
            expected.extend(hs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            let whole = parse(&out);
            prop_assert_eq!(
                whole,
                Ok(Status::Complete((Request { headers: expected, content_length: len }, out.len())))
            );
            for i in 0..out.len() {
                prop_assert_eq!(parse(&out[..i]), Ok(Status::Partial));
            }
        }

        /// Any bytes: no panic, and a prefix either waits or fails exactly as the whole.
        #[test]
        fn scgi_4_5_prefix_agrees_with_whole(
            buf in proptest::collection::vec(
                prop_oneof![
                    4 => proptest::sample::select(b"0123456789:,\0CONTENT_LENGTHSCGI1".to_vec()),
                    1 => any::<u8>(),
                ],
                0..60,
            ),
            max in 0usize..80,
        ) {
            let limits = Limits { max_header_bytes: max, max_headers: 4 };
            let whole = parse_request(&buf, &limits);
            for i in 0..buf.len() {
                let part = parse_request(&buf[..i], &limits);
                match (&part, &whole) {
                    (Ok(Status::Partial), _) => {}
                    (Err(p), Err(w)) => prop_assert_eq!(p, w, "prefix {}", i),
                    _ => prop_assert!(false, "prefix {} gave {:?}, whole {:?}", i, part, whole),
                }
            }
        }
    }
}
