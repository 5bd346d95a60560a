//! The application-side machine `server::Conn`: arbitrary bytes cut at arbitrary
//! points, events drained, commands issued; everything it transmits must decode
//! cleanly with the web-server-side decoder. Also `WebServerAddrs::parse`.
//!
//! Input layout: `flags`, `ncuts`, `ncuts` × u16 cut offsets, then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::fastcgi::client::{self, ClientEvent};
use portico_protocols::fastcgi::record::padding_for;
use portico_protocols::fastcgi::server::{Config, Conn, Event, WebServerAddrs};
use portico_protocols::fastcgi::{ProtocolStatus, Records};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = WebServerAddrs::parse(s).map(|a| a.allows(None));
    }
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 8);
    let Some((cut_bytes, stream)) = rest.split_at_checked(ncuts * 2) else {
        return;
    };
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(stream.len());

    let config = Config {
        mpxs_conns: flags & 1 == 0,
        reject_unknown_roles: flags & 2 == 0,
        max_params_len: if flags & 4 == 0 { 1 << 20 } else { 64 },
        max_requests: if flags & 8 == 0 { 64 } else { 2 },
        ..Config::default()
    };
    let big_output = flags & 16 != 0;
    let mut conn = Conn::new(config);
    let mut peer = Peer::default();
    let mut start = 0;
    for (step, &end) in cuts.iter().enumerate() {
        let chunk = &stream[start..end];
        start = end;
        match conn.handle_read(chunk) {
            Ok(n) => assert_eq!(n, chunk.len()),
            Err(e) => {
                // Sticky: every later call repeats it.
                assert_eq!(conn.handle_read(b"\x01"), Err(e));
                let _ = e.clause();
                peer.take(&mut conn);
                break;
            }
        }
        peer.take(&mut conn);
        while let Some(event) = conn.poll_event() {
            react(&mut conn, event, step, big_output);
            peer.take(&mut conn);
        }
        // A command on an ID that is probably not active.
        let stray = u16::try_from(step).unwrap_or(0).wrapping_mul(7919);
        if !conn.is_active(stray) {
            assert!(conn.write_stdout(stray, b"x").is_err());
            assert!(
                conn.end_request(stray, 0, ProtocolStatus::REQUEST_COMPLETE)
                    .is_err()
            );
        }
        peer.take(&mut conn);
        let _ = conn.wants_close();
        let _ = conn.active_requests();
    }
    assert_eq!(conn.pending_transmit(), 0);
});

fn react(conn: &mut Conn, event: Event, step: usize, big: bool) {
    match event {
        Event::BeginRequest { id, .. } => {
            assert!(conn.is_active(id));
            if step % 3 == 2 {
                let _ = conn.reject(id, ProtocolStatus::OVERLOADED);
            } else {
                // Output before the inputs ended is refused, never a panic.
                let _ = conn.write_stdout(id, b"early");
            }
        }
        Event::Params { id, params } => {
            let _ = params.iter().count();
            let _ = conn.write_stderr(id, b"params seen");
        }
        Event::Stdin { id, data } | Event::Data { id, data } => {
            assert!(!data.is_empty());
            let _ = conn.write_stdout(id, &data);
        }
        Event::StdinEnd { id } | Event::DataEnd { id } => {
            if conn.is_active(id) {
                let body = if big {
                    vec![b'b'; 70_000]
                } else {
                    b"Status: 200\r\n\r\nok".to_vec()
                };
                let _ = conn.write_stdout(id, &body);
                if step.is_multiple_of(2) {
                    let _ = conn.write_stderr(id, b"warn");
                }
                assert!(
                    conn.end_request(id, 0, ProtocolStatus::REQUEST_COMPLETE)
                        .is_ok()
                );
                assert!(!conn.is_active(id));
            }
        }
        Event::Abort { id } => {
            if conn.is_active(id) {
                assert!(
                    conn.end_request(id, 1, ProtocolStatus::REQUEST_COMPLETE)
                        .is_ok()
                );
            }
        }
    }
}

/// The web server on the other end: decodes everything the application sends.
struct Peer {
    decoder: client::Conn,
    out: Vec<u8>,
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            decoder: client::Conn::new(client::Config::default()),
            out: Vec::new(),
        }
    }
}

impl Peer {
    fn take(&mut self, conn: &mut Conn) {
        self.out.clear();
        conn.poll_transmit(&mut self.out);
        assert_eq!(conn.pending_transmit(), 0);
        // Whole records only, and the decoder accepts every one of them.
        let mut records = Records::new(&self.out);
        for r in records.by_ref() {
            assert_eq!(r.header.version, 1);
            assert_eq!(r.header.padding_length, padding_for(r.content.len()));
        }
        assert!(records.rest().is_empty(), "partial record transmitted");
        if let Err(e) = self.decoder.handle_read(&self.out) {
            panic!(
                "client decoder refused server output: {e:?} ({})",
                e.clause()
            );
        }
        while let Some(e) = self.decoder.poll_event() {
            assert!(!matches!(e, ClientEvent::Violation(_)));
        }
    }
}
