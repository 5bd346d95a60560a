//! CGI response heads: `parse_head` (CGI and NPH, small and default limits), then
//! `kind`, `status_code`, `reason_phrase`, `is_server_owned`, and a round trip
//! through `encode_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::Status;
use portico_protocols::cgi::response::{Limits, encode_head, is_server_owned, parse_head};

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_header_bytes: 32,
        max_headers: 2,
    };
    for nph in [false, true] {
        for limits in [small, Limits::default()] {
            head(data, nph, &limits);
        }
    }
});

fn head(data: &[u8], nph: bool, limits: &Limits) {
    let (head, used) = match parse_head(data, nph, limits) {
        Ok(Status::Complete(v)) => v,
        Ok(Status::Partial) => return,
        Err(e) => {
            let _ = e.clause();
            return;
        }
    };
    assert!(used <= data.len());
    assert!(used <= limits.max_header_bytes);
    assert!(head.headers.len() <= limits.max_headers);
    let kind = head.kind();
    let code = head.status_code();
    let _ = head.reason_phrase();
    if kind.is_ok() {
        assert!((100..=999).contains(&code), "status code {code}");
    }
    for &(name, _) in &head.headers {
        let _ = is_server_owned(name);
    }
    if nph {
        assert!(head.version.is_some());
    }

    // What parsed re-encodes to a head that parses back the same.
    let mut out = Vec::new();
    encode_head(&head, &mut out);
    let big = Limits {
        max_header_bytes: usize::MAX,
        max_headers: usize::MAX,
    };
    match parse_head(&out, nph, &big) {
        Ok(Status::Complete((again, n))) => {
            assert_eq!(n, out.len());
            assert_eq!(again, head);
            assert_eq!(again.kind(), kind);
        }
        other => panic!("encode_head output does not re-parse: {other:?}"),
    }
}
