//! The web-server-side decoder `client::Conn`, strict and lenient, with and without
//! `observe_records`, through `handle_read` + `poll_event` and the zero-copy
//! `handle_read_with`.
//!
//! Input layout: `flags`, `nids`, `nids` × u16 IDs announced with `begin_request`,
//! `ncuts`, `ncuts` × u16 cut offsets, then the stream.
//!
//! Checks: no panic; owned and zero-copy paths give the same events and result; input
//! cut at any points gives the same events and result as the whole input; a strict
//! error is sticky; lenient mode never fails.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::fastcgi::Error;
use portico_protocols::fastcgi::client::{ClientEvent, ClientEventRef, Config, Conn};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(flags) = input.byte() else { return };
    let nids = input.byte().unwrap_or(0) % 4;
    let ids: Vec<u16> = (0..nids).filter_map(|_| input.u16()).collect();
    let ncuts = input.byte().unwrap_or(0) % 8;
    let raw_cuts: Vec<u16> = (0..ncuts).filter_map(|_| input.u16()).collect();
    let stream = input.0;
    let mut cuts: Vec<usize> = raw_cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(stream.len());

    let config = Config {
        lenient: flags & 1 != 0,
        observe_records: flags & 2 != 0,
        strict_ids: flags & 4 != 0,
    };

    let whole = run(config, &ids, stream, &[stream.len()], false);
    let split_owned = run(config, &ids, stream, &cuts, false);
    let split_ref = run(config, &ids, stream, &cuts, true);
    assert_eq!(split_owned, split_ref, "owned and zero-copy paths differ");
    assert_eq!(whole, split_owned, "cut input decodes differently");
    if config.lenient {
        assert_eq!(whole.1, None, "lenient decoder failed");
    }
});

fn run(
    config: Config,
    ids: &[u16],
    stream: &[u8],
    cuts: &[usize],
    zero_copy: bool,
) -> (Vec<ClientEvent>, Option<Error>) {
    let mut conn = Conn::new(config);
    for &id in ids {
        conn.begin_request(id);
        assert!(conn.is_active(id));
    }
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts {
        let chunk = &stream[start..end];
        start = end;
        let result = if zero_copy {
            conn.handle_read_with(chunk, |e| {
                check_ref(&e);
                events.push(e.to_owned_event());
            })
        } else {
            conn.handle_read(chunk)
        };
        while let Some(e) = conn.poll_event() {
            assert!(!zero_copy, "handle_read_with queued an event");
            events.push(e);
        }
        match result {
            Ok(n) => assert_eq!(n, chunk.len()),
            Err(e) => {
                let _ = e.clause();
                // Sticky in both forms.
                assert_eq!(conn.handle_read(b"\x01\x06"), Err(e));
                assert_eq!(conn.handle_read_with(b"", |_| ()), Err(e));
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

fn check_ref(e: &ClientEventRef<'_>) {
    match e {
        ClientEventRef::Stdout { data, .. } | ClientEventRef::Stderr { data, .. } => {
            assert!(!data.is_empty());
        }
        ClientEventRef::GetValuesResult { pairs } => {
            assert!(pairs.clone().all(|p| p.is_ok()));
        }
        _ => {}
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let (b, rest) = self.0.split_at_checked(2)?;
        self.0 = rest;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
}
