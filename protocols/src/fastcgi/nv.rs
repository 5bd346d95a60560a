//! Name-value pairs (FCGI-3.4): the content of PARAMS, GET_VALUES and
//! GET_VALUES_RESULT.
//!
//! A pair is `nameLength valueLength name value`. A length whose first byte
//! has the high bit clear is that byte (0–127); with the high bit set it is
//! four bytes, the remaining 31 bits big-endian (FCGI-3.4-2). Either form is
//! accepted for any length (FCGI-3.4-4, FCGI-AMB-4); the encoder always emits
//! the shortest (FCGI-3.4-3).
//!
//! Parsing only slices the input: an announced length is never allocated, so
//! a hostile 2 GiB length costs nothing (FCGI-AMB-5).

use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::{be_u8, be_u32};

use super::Error;
use crate::Status;

/// Largest length a pair can announce: 2^31 − 1 (FCGI-3.4-2).
pub const MAX_NV_LEN: usize = 0x7FFF_FFFF;

/// `FCGI_MAX_CONNS`: most concurrent connections the application accepts (FCGI-4.1-5).
pub const MAX_CONNS: &[u8] = b"FCGI_MAX_CONNS";
/// `FCGI_MAX_REQS`: most concurrent requests the application accepts (FCGI-4.1-5).
pub const MAX_REQS: &[u8] = b"FCGI_MAX_REQS";
/// `FCGI_MPXS_CONNS`: `1` if the application multiplexes connections, else `0` (FCGI-4.1-5).
pub const MPXS_CONNS: &[u8] = b"FCGI_MPXS_CONNS";

/// A borrowed name-value pair: `(name, value)`.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Parses one name-value pair from the start of `buf`.
///
/// `Partial` means the pair (or a length field) is cut; in a PARAMS stream
/// that simply means "more records follow" (FCGI-5.2-3).
///
/// ```
/// use portico_protocols::Status;
/// use portico_protocols::fastcgi::nv::parse_pair;
/// let buf = b"\x0b\x02SERVER_PORT80";
/// let Status::Complete(((name, value), used)) = parse_pair(buf)? else { panic!() };
/// assert_eq!((name, value, used), (&b"SERVER_PORT"[..], &b"80"[..], 15));
/// assert_eq!(parse_pair(&buf[..5])?, Status::Partial);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
pub fn parse_pair(buf: &[u8]) -> Result<Status<(Pair<'_>, usize)>, Error> {
    // Fast path for the usual pair, both lengths in one byte (under 128) and the whole
    // pair present: the general parser below costs several times as much per pair, and
    // a web server sends a few dozen per request.
    if let [n, v, rest @ ..] = buf
        && *n < 0x80
        && *v < 0x80
    {
        let (n, v) = (usize::from(*n), usize::from(*v));
        if let (Some(name), Some(value)) = (rest.get(..n), rest.get(n..n + v)) {
            return Ok(Status::Complete(((name, value), 2 + n + v)));
        }
    }
    // Streaming parsers: a PARAMS record may end anywhere inside a pair (FCGI-5.2-3).
    let parsed: nom::IResult<&[u8], (usize, usize)> = (length, length).parse(buf);
    let Ok((rest, (name_len, value_len))) = parsed else {
        return Ok(Status::Partial);
    };
    let parsed: nom::IResult<&[u8], (&[u8], &[u8])> = (take(name_len), take(value_len)).parse(rest);
    let Ok((after, pair)) = parsed else {
        return Ok(Status::Partial);
    };
    Ok(Status::Complete((
        pair,
        buf.len().saturating_sub(after.len()),
    )))
}

/// A borrowing iterator over the name-value pairs of a complete content
/// buffer (a GET_VALUES record, or a whole PARAMS stream).
///
/// A pair cut short by the end of the buffer yields
/// [`Error::MalformedNameValue`] once, then the iterator ends.
///
/// ```
/// use portico_protocols::fastcgi::NameValues;
/// let pairs: Vec<_> = NameValues::new(b"\x01\x01ab\x01\x00c").collect::<Result<_, _>>()?;
/// assert_eq!(pairs, [(&b"a"[..], &b"b"[..]), (&b"c"[..], &b""[..])]);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NameValues<'a> {
    rest: &'a [u8],
}

impl<'a> NameValues<'a> {
    /// Iterates over the pairs in `content`.
    pub fn new(content: &'a [u8]) -> Self {
        NameValues { rest: content }
    }
}

impl<'a> Iterator for NameValues<'a> {
    type Item = Result<Pair<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match parse_pair(self.rest) {
            Ok(Status::Complete((pair, used))) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                Some(Ok(pair))
            }
            // FCGI-3.4-1: the content ends inside a pair.
            _ => {
                self.rest = &[];
                Some(Err(Error::MalformedNameValue))
            }
        }
    }
}

/// Appends one pair, each length in its shortest form (FCGI-3.4-3, FCGI-AMB-4).
///
/// A name or value longer than [`MAX_NV_LEN`] cannot be represented; only its
/// first `MAX_NV_LEN` bytes are written.
///
/// ```
/// use portico_protocols::fastcgi::encode_pair;
/// let mut out = Vec::new();
/// encode_pair(b"X", &[b'v'; 200], &mut out);
/// assert_eq!(&out[..6], b"\x01\x80\x00\x00\xc8X");
/// ```
pub fn encode_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let name = name.get(..MAX_NV_LEN).unwrap_or(name);
    let value = value.get(..MAX_NV_LEN).unwrap_or(value);
    out.reserve(encoded_pair_len(name, value));
    encode_len(name.len(), out);
    encode_len(value.len(), out);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// The number of bytes [`encode_pair`] appends for this pair.
pub fn encoded_pair_len(name: &[u8], value: &[u8]) -> usize {
    let len_of = |n: usize| if n < 0x80 { 1 } else { 4 };
    let (n, v) = (name.len().min(MAX_NV_LEN), value.len().min(MAX_NV_LEN));
    len_of(n) + len_of(v) + n + v
}

/// Appends a length: one byte below 128, else four bytes with the high bit set
/// (FCGI-3.4-3). Lengths above [`MAX_NV_LEN`] are clamped to it.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    match u8::try_from(len) {
        Ok(b) if b < 0x80 => out.push(b),
        _ => {
            let n = u32::try_from(len.min(MAX_NV_LEN)).unwrap_or(0x7FFF_FFFF);
            out.extend_from_slice(&(n | 0x8000_0000).to_be_bytes());
        }
    }
}

/// An owned, validated block of name-value pairs: a request's whole PARAMS
/// stream, kept as its wire bytes (one allocation) and read by borrowing.
///
/// Order and duplicates are preserved; nothing may depend on the order
/// (FCGI-5.2-2).
///
/// ```
/// use portico_protocols::fastcgi::ParamBlock;
/// let params = ParamBlock::parse(b"\x0e\x03REQUEST_METHODGET\x0c\x00QUERY_STRING".to_vec())?;
/// assert_eq!(params.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
/// assert_eq!(params.get(b"QUERY_STRING"), Some(&b""[..]));
/// assert_eq!(params.len(), 2);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamBlock {
    bytes: Vec<u8>,
    count: usize,
}

impl ParamBlock {
    /// Validates `bytes` as a sequence of whole name-value pairs.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, Error> {
        let mut count = 0;
        for pair in NameValues::new(&bytes) {
            pair?;
            count += 1;
        }
        Ok(ParamBlock { bytes, count })
    }

    /// Builds a block by encoding `pairs`.
    pub fn from_pairs<'p>(pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>) -> Self {
        let mut bytes = Vec::new();
        let mut count = 0;
        for (name, value) in pairs {
            encode_pair(name, value, &mut bytes);
            count += 1;
        }
        ParamBlock { bytes, count }
    }

    /// The pairs in wire order.
    pub fn iter(&self) -> Pairs<'_> {
        Pairs {
            inner: NameValues::new(&self.bytes),
        }
    }

    /// The value of the first pair named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.count
    }

    /// `true` if there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded pairs, as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded pairs, taken out without a copy (to share them, e.g. as one
    /// reference-counted buffer that the pairs are slices of).
    ///
    /// ```
    /// use portico_protocols::fastcgi::{NameValues, ParamBlock};
    /// let block = ParamBlock::from_pairs([(&b"A"[..], &b"1"[..])]);
    /// let bytes = block.into_bytes();
    /// assert_eq!(NameValues::new(&bytes).count(), 1);
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Copies the pairs out.
    pub fn to_vec(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }
}

impl<'a> IntoIterator for &'a ParamBlock {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Pairs<'a>;

    fn into_iter(self) -> Pairs<'a> {
        self.iter()
    }
}

/// The pairs of a [`ParamBlock`] (already validated, so no errors).
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    inner: NameValues<'a>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().and_then(Result::ok)
    }
}

/// What an application answers to FCGI_GET_VALUES (FCGI-4.1-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// `FCGI_MAX_CONNS`.
    pub max_conns: u32,
    /// `FCGI_MAX_REQS`.
    pub max_reqs: u32,
    /// `FCGI_MPXS_CONNS`.
    pub mpxs_conns: bool,
}

impl Capabilities {
    /// The decimal ASCII value for a known variable name, `None` for others (FCGI-4.1-4).
    pub fn value(&self, name: &[u8]) -> Option<Vec<u8>> {
        match name {
            MAX_CONNS => Some(self.max_conns.to_string().into_bytes()),
            MAX_REQS => Some(self.max_reqs.to_string().into_bytes()),
            MPXS_CONNS => Some(if self.mpxs_conns { b"1" } else { b"0" }.to_vec()),
            _ => None,
        }
    }
}

/// Appends a GET_VALUES query's content: each name with an empty value (FCGI-4.1-2).
///
/// ```
/// use portico_protocols::fastcgi::nv::{encode_get_values_query, MAX_CONNS, MAX_REQS, MPXS_CONNS};
/// let mut out = Vec::new();
/// encode_get_values_query(&[MAX_CONNS, MAX_REQS, MPXS_CONNS], &mut out);
/// assert_eq!(out.len(), 48);
/// ```
pub fn encode_get_values_query(names: &[&[u8]], out: &mut Vec<u8>) {
    for name in names {
        encode_pair(name, b"", out);
    }
}

/// Appends the GET_VALUES_RESULT content answering `query` (a GET_VALUES
/// record's content): each asked-for name this crate knows, with its value;
/// unknown names are left out (FCGI-4.1-3, FCGI-4.1-4). Values in the query are
/// ignored, and a name asked twice is answered once.
///
/// ```
/// use portico_protocols::fastcgi::nv::{answer_get_values, Capabilities};
/// let caps = Capabilities { max_conns: 10, max_reqs: 50, mpxs_conns: true };
/// let mut out = Vec::new();
/// answer_get_values(b"\x0f\x00FCGI_MPXS_CONNS\x0c\x00PORTICO_NOPE", &caps, &mut out)?;
/// assert_eq!(out, b"\x0f\x01FCGI_MPXS_CONNS1");
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
pub fn answer_get_values(
    query: &[u8],
    capabilities: &Capabilities,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    // Each known name is answered once, however often it is asked, so the
    // answer always fits one record.
    let mut answered: Vec<&[u8]> = Vec::new();
    for pair in NameValues::new(query) {
        let (name, _) = pair?;
        if answered.contains(&name) {
            continue;
        }
        if let Some(value) = capabilities.value(name) {
            encode_pair(name, &value, out);
            answered.push(name);
        }
    }
    Ok(())
}

/// One length field (FCGI-3.4-2), as `usize`.
fn length(i: &[u8]) -> nom::IResult<&[u8], usize> {
    let (_, first) = be_u8(i)?;
    if first & 0x80 == 0 {
        let (rest, b) = be_u8(i)?;
        return Ok((rest, usize::from(b)));
    }
    let (rest, n) = be_u32(i)?;
    let n = usize::try_from(n & 0x7FFF_FFFF)
        .map_err(|_| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::TooLarge)))?;
    Ok((rest, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type OwnedPairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn pairs(content: &[u8]) -> Result<OwnedPairs, Error> {
        NameValues::new(content)
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect()
    }

    /// `nv_case!(name, bytes => [(name, value), ...])`.
    macro_rules! nv_case {
        ($name:ident, $bytes:expr => [$(($n:expr, $v:expr)),* $(,)?]) => {
            #[test]
            fn $name() {
                let want: Vec<(Vec<u8>, Vec<u8>)> = vec![$(($n.to_vec(), $v.to_vec())),*];
                assert_eq!(pairs($bytes), Ok(want));
            }
        };
    }

    nv_case!(fcgi_3_4_1_spec_example, b"\x0b\x02SERVER_PORT80" => [(b"SERVER_PORT", b"80")]);
    nv_case!(fcgi_3_4_2_one_one, b"\x01\x01ab" => [(b"a", b"b")]);
    nv_case!(fcgi_3_4_2_one_four, b"\x01\x80\x00\x00\x01ab" => [(b"a", b"b")]);
    nv_case!(fcgi_3_4_2_four_one, b"\x80\x00\x00\x01\x01ab" => [(b"a", b"b")]);
    nv_case!(fcgi_3_4_2_four_four, b"\x80\x00\x00\x01\x80\x00\x00\x00a" => [(b"a", b"")]);
    nv_case!(fcgi_3_4_5_raw_bytes, b"\x02\x03\x00\xff=\n\x00" => [(b"\x00\xff", b"=\n\x00")]);
    nv_case!(fcgi_3_4_1_empty_content, b"" => []);

    /// FCGI-3.4-4 / FCGI-AMB-4: a four-byte form of a small length is accepted.
    #[test]
    fn fcgi_3_4_4_four_byte_form_of_small_length() {
        let got = pairs(b"\x80\x00\x00\x05\x01HELLOx").unwrap();
        assert_eq!(got, vec![(b"HELLO".to_vec(), b"x".to_vec())]);
    }

    /// FCGI-3.4-3: lengths above 127 are sent in four bytes; 127 and below in one.
    #[test]
    fn fcgi_3_4_3_long_lengths_use_four_bytes() {
        for (len, head) in [
            (0usize, &b"\x00"[..]),
            (127, b"\x7f"),
            (128, b"\x80\x00\x00\x80"),
            (65536, b"\x80\x01\x00\x00"),
        ] {
            let mut out = Vec::new();
            encode_len(len, &mut out);
            assert_eq!(out, head, "length {len}");
        }
        let mut out = Vec::new();
        encode_pair(b"X", &[b'v'; 200], &mut out);
        assert!(out.starts_with(b"\x01\x80\x00\x00\xc8X"));
        assert_eq!(out.len(), encoded_pair_len(b"X", &[b'v'; 200]));
    }

    /// FCGI-3.4-1: a truncated pair is an error, reported once.
    #[test]
    fn fcgi_3_4_1_truncated_pair() {
        for bad in [
            &b"\x0b"[..],
            b"\x0b\x02SERVER",
            b"\x80\x00",
            b"\x01\x80\x00",
            b"\x01\x01a",
        ] {
            let mut it = NameValues::new(bad);
            assert_eq!(it.next(), Some(Err(Error::MalformedNameValue)), "{bad:?}");
            assert_eq!(it.next(), None);
        }
    }

    /// FCGI-AMB-5: a huge announced length is never allocated: it is just partial.
    #[test]
    fn fcgi_amb_5_huge_length_not_allocated() {
        assert_eq!(parse_pair(b"\xff\xff\xff\xff\x00"), Ok(Status::Partial));
        assert!(ParamBlock::parse(b"\xff\xff\xff\xff\x00".to_vec()).is_err());
    }

    /// FCGI-5.2-3: a pair is partial at every cut, never an error.
    #[test]
    fn fcgi_5_2_3_pair_partial_at_every_cut() {
        let buf = b"\x80\x00\x00\x0b\x02SERVER_PORT80";
        for cut in 0..buf.len() {
            assert_eq!(parse_pair(&buf[..cut]), Ok(Status::Partial), "cut {cut}");
        }
        assert!(parse_pair(buf).unwrap().is_complete());
    }

    /// FCGI-4.1-3 / FCGI-4.1-4 / FCGI-4.1-5: only known names, decimal values.
    #[test]
    fn fcgi_4_1_4_unknown_names_left_out() {
        let caps = Capabilities {
            max_conns: 1,
            max_reqs: 50,
            mpxs_conns: false,
        };
        let mut q = Vec::new();
        encode_get_values_query(&[MAX_CONNS, b"PORTICO_NOPE", MAX_REQS, MPXS_CONNS], &mut q);
        let mut out = Vec::new();
        answer_get_values(&q, &caps, &mut out).unwrap();
        assert_eq!(
            pairs(&out).unwrap(),
            vec![
                (MAX_CONNS.to_vec(), b"1".to_vec()),
                (MAX_REQS.to_vec(), b"50".to_vec()),
                (MPXS_CONNS.to_vec(), b"0".to_vec()),
            ]
        );
        assert_eq!(
            answer_get_values(b"\x05", &caps, &mut out),
            Err(Error::MalformedNameValue)
        );
    }

    /// FCGI-5.2-2: lookup does not depend on the order of the pairs.
    #[test]
    fn fcgi_5_2_2_order_independent_lookup() {
        let a = ParamBlock::from_pairs([(&b"A"[..], &b"1"[..]), (b"B", b"2")]);
        let b = ParamBlock::from_pairs([(&b"B"[..], &b"2"[..]), (b"A", b"1")]);
        for p in [&a, &b] {
            assert_eq!(p.get(b"A"), Some(&b"1"[..]));
            assert_eq!(p.get(b"B"), Some(&b"2"[..]));
            assert_eq!(p.get(b"C"), None);
        }
    }

    proptest! {
        #[test]
        fn prop_pair_roundtrip(name in proptest::collection::vec(any::<u8>(), 0..300),
                               value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            encode_pair(&name, &value, &mut out);
            prop_assert_eq!(out.len(), encoded_pair_len(&name, &value));
            prop_assert_eq!(
                parse_pair(&out),
                Ok(Status::Complete(((&name[..], &value[..]), out.len())))
            );
            let block = ParamBlock::parse(out).unwrap();
            prop_assert_eq!(block.to_vec(), vec![(name, value)]);
        }

        #[test]
        fn prop_nv_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = NameValues::new(&bytes).count();
        }
    }
}
