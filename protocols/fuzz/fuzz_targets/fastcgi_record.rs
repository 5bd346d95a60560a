//! Framing and content parsers: `parse_header`, `parse_record`, `Records`, the three
//! fixed bodies, `parse_pair`, `NameValues`, `ParamBlock::parse`, `answer_get_values`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::Status;
use portico_protocols::fastcgi::nv::{self, Capabilities, encoded_pair_len, parse_pair};
use portico_protocols::fastcgi::{
    BeginRequestBody, EndRequestBody, HEADER_LEN, NameValues, ParamBlock, Records, UnknownTypeBody,
    encode_pair, parse_header, parse_record,
};

fuzz_target!(|data: &[u8]| {
    records(data);
    bodies(data);
    pairs(data);
});

fn records(data: &[u8]) {
    // parse_header: 8 bytes or Partial; the header re-encodes to the same bytes.
    match parse_header(data).expect("parse_header never fails") {
        Status::Complete((h, used)) => {
            assert_eq!(used, HEADER_LEN);
            assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN]);
        }
        Status::Partial => assert!(data.len() < HEADER_LEN),
    }

    // parse_record repeatedly == Records.
    let mut expected = Vec::new();
    let mut rest = data;
    while let Status::Complete((r, used)) = parse_record(rest).expect("parse_record never fails") {
        assert_eq!(used, r.header.record_len());
        assert!(used <= rest.len());
        assert_eq!(r.content.len(), usize::from(r.header.content_length));
        assert_eq!(&rest[HEADER_LEN..HEADER_LEN + r.content.len()], r.content);
        let owned = r.to_owned_record();
        assert_eq!(owned.as_record(), r);
        expected.push(r);
        rest = &rest[used..];
    }
    let mut it = Records::new(data);
    let got: Vec<_> = it.by_ref().collect();
    assert_eq!(got, expected);
    assert_eq!(it.rest(), rest);
    assert_eq!(it.consumed() + it.rest().len(), data.len());

    // Each record's content through the matching body parser.
    for r in &expected {
        let _ = BeginRequestBody::parse(r.content);
        let _ = EndRequestBody::parse(r.content);
        let _ = UnknownTypeBody::parse(r.content);
        let _ = NameValues::new(r.content).count();
    }
}

fn bodies(data: &[u8]) {
    let b = BeginRequestBody::parse(data);
    assert_eq!(b.is_ok(), data.len() == 8);
    if let Ok(b) = b {
        assert_eq!(BeginRequestBody::parse(&b.to_bytes()), Ok(b));
        let _ = b.keep_conn();
    }
    let e = EndRequestBody::parse(data);
    assert_eq!(e.is_ok(), data.len() == 8);
    if let Ok(e) = e {
        assert_eq!(EndRequestBody::parse(&e.to_bytes()), Ok(e));
    }
    let u = UnknownTypeBody::parse(data);
    assert_eq!(u.is_ok(), data.len() == 8);
    if let Ok(u) = u {
        assert_eq!(UnknownTypeBody::parse(&u.to_bytes()), Ok(u));
    }
}

fn pairs(data: &[u8]) {
    // parse_pair repeatedly == NameValues; each pair round-trips through encode_pair.
    let mut expected = Vec::new();
    let mut rest = data;
    let mut malformed = false;
    while !rest.is_empty() {
        match parse_pair(rest).expect("parse_pair never fails") {
            Status::Complete(((name, value), used)) => {
                assert!(used >= name.len() + value.len() + 2);
                assert!(used <= rest.len());
                let mut enc = Vec::new();
                encode_pair(name, value, &mut enc);
                assert_eq!(enc.len(), encoded_pair_len(name, value));
                assert!(enc.len() <= used);
                assert_eq!(
                    parse_pair(&enc),
                    Ok(Status::Complete(((name, value), enc.len())))
                );
                expected.push((name, value));
                rest = &rest[used..];
            }
            Status::Partial => {
                malformed = true;
                break;
            }
        }
    }
    let got: Vec<_> = NameValues::new(data).collect();
    let (ok, errs): (Vec<_>, Vec<_>) = got.into_iter().partition(Result::is_ok);
    let ok: Vec<_> = ok.into_iter().map(Result::unwrap).collect();
    assert_eq!(ok, expected);
    assert_eq!(errs.len(), usize::from(malformed));

    match ParamBlock::parse(data.to_vec()) {
        Ok(block) => {
            assert!(!malformed);
            assert_eq!(block.len(), expected.len());
            assert_eq!(block.is_empty(), expected.is_empty());
            assert_eq!(block.as_bytes(), data);
            assert_eq!(block.iter().collect::<Vec<_>>(), expected);
            if let Some(&(name, value)) = expected.first() {
                assert_eq!(block.get(name), Some(value));
            }
            let owned = block.to_vec();
            let rebuilt = ParamBlock::from_pairs(owned.iter().map(|(n, v)| (&n[..], &v[..])));
            assert_eq!(rebuilt.iter().collect::<Vec<_>>(), expected);
        }
        Err(_) => assert!(malformed),
    }

    // GET_VALUES answering reads the same pairs.
    let caps = Capabilities {
        max_conns: 10,
        max_reqs: 50,
        mpxs_conns: true,
    };
    let mut out = Vec::new();
    if nv::answer_get_values(data, &caps, &mut out).is_ok() {
        assert!(NameValues::new(&out).all(|p| p.is_ok()));
    }
}
