//! SCGI: `parse_netstring` and `parse_request` with small and default limits, with
//! round trips through `encode_netstring` and `encode_request`, and the streaming
//! property (every proper prefix of a complete value is `Partial`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::Status;
use portico_protocols::scgi::{
    Limits, Request, encode_netstring, encode_request, parse_netstring, parse_request,
};

fuzz_target!(|data: &[u8]| {
    for max_len in [0, 16, usize::MAX] {
        netstring(data, max_len);
    }
    let small = Limits {
        max_header_bytes: 64,
        max_headers: 3,
    };
    for limits in [small, Limits::default()] {
        request(data, &limits);
    }
});

fn netstring(data: &[u8], max_len: usize) {
    let Ok(Status::Complete((string, used))) = parse_netstring(data, max_len) else {
        return;
    };
    assert!(string.len() <= max_len);
    let mut out = Vec::new();
    encode_netstring(string, &mut out);
    assert_eq!(&out[..], &data[..used], "netstring is not canonical");
    for end in 0..used {
        assert_eq!(parse_netstring(&data[..end], max_len), Ok(Status::Partial));
    }
}

fn request(data: &[u8], limits: &Limits) {
    let result = parse_request(data, limits);
    if let Err(e) = result {
        let _ = e.clause();
        return;
    }
    let Ok(Status::Complete((req, used))) = result else {
        return;
    };
    assert!(req.headers.len() <= limits.max_headers);
    assert_eq!(
        req.headers.first().map(|h| h.0),
        Some(&b"CONTENT_LENGTH"[..])
    );
    let _ = req.has_scgi_header();
    for &(name, value) in &req.headers {
        assert!(!name.is_empty());
        assert_eq!(req.get(name), Some(value));
    }
    for end in 0..used {
        assert_eq!(parse_request(&data[..end], limits), Ok(Status::Partial));
    }

    // Round trip: encoding the parsed headers re-parses to the same request
    // (CONTENT_LENGTH canonicalised, SCGI = 1 added).
    let mut out = Vec::new();
    encode_request(req.headers.iter().copied(), req.content_length, &mut out);
    let big = Limits {
        max_header_bytes: usize::MAX,
        max_headers: usize::MAX,
    };
    let Ok(Status::Complete((again, n))) = parse_request(&out, &big) else {
        panic!(
            "encode_request output does not parse: {:?}",
            parse_request(&out, &big)
        );
    };
    assert_eq!(n, out.len());
    assert_eq!(again.content_length, req.content_length);
    assert_eq!(again.get(b"SCGI"), Some(&b"1"[..]));
    assert_eq!(others(&again), others(&req));
    assert_eq!(
        again.get(b"CONTENT_LENGTH"),
        Some(req.content_length.to_string().as_bytes())
    );
}

fn others<'a>(req: &Request<'a>) -> Vec<(&'a [u8], &'a [u8])> {
    req.headers
        .iter()
        .copied()
        .filter(|&(n, _)| n != b"CONTENT_LENGTH" && n != b"SCGI")
        .collect()
}
