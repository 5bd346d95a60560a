//! CGI/1.1 (RFC 3875) rules: meta-variables, PATH_INFO split, response heads.
//!
//! CGI is the request and response model of the whole family: FastCGI params and SCGI
//! headers *are* meta-variables, and FastCGI stdout and SCGI replies are CGI responses.
//! This module holds the rules once:
//!
//! - [`meta`]: meta-variable names, the request header → `HTTP_*` mapping (with the
//!   httpoxy and name-collision defences), the `SCRIPT_NAME` / `PATH_INFO` split over
//!   an injected lookup function, `PATH_TRANSLATED`, the §4.4 command line and NPH
//!   identification.
//! - [`response`]: the response head a script writes (`Status`, `Location`,
//!   `Content-Type`, other fields), its classification into the four §6.2 response
//!   types, and an encoder for the same form.
//! - [`env`](mod@env): a process environment read back into a request, for running portico
//!   itself as a CGI program.
//!
//! Nothing here touches the file system or starts a process: the caller passes the
//! facts (is this path a script?) and the bytes.
//!
//! Implementation-defined behaviour (CGI-1.3-2) is documented at each function:
//! the script lookup in [`meta::split_script`], `PATH_TRANSLATED` in
//! [`meta::path_translated`], NPH identification in [`meta::is_nph`], and the limits in
//! [`response::Limits`].

pub mod env;
pub mod meta;
pub mod response;

/// Decodes `%XX` escapes (CGI-2.3-1, CGI-2.3-5). Returns `None` on a malformed escape.
pub(crate) fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            // CGI-2.3-5: `escaped` is `%` plus exactly two hex digits, either case.
            let hi = input.get(i + 1).copied().and_then(hex_value)?;
            let lo = input.get(i + 2).copied().and_then(hex_value)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `token` characters (CGI-2.2-2): visible US-ASCII except separators.
pub(crate) fn is_token_char(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_2_3_5_percent_decode_either_case() {
        assert_eq!(
            percent_decode(b"a%20b%2e%2E").as_deref(),
            Some(&b"a b.."[..])
        );
        assert_eq!(percent_decode(b"%4"), None);
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"%"), None);
    }

    #[test]
    fn cgi_2_2_2_token_chars() {
        assert!(b"X-Foo_bar".iter().all(|&b| is_token_char(b)));
        assert!(!is_token_char(b':'));
        assert!(!is_token_char(b' '));
        assert!(!is_token_char(b'/'));
    }
}
