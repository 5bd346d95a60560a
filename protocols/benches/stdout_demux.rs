//! Decoding a large multiplexed STDOUT stream on the web-server side.
//!
//! 64 MiB of STDOUT content in full records (65535 bytes + 1 byte of padding),
//! round-robin over four request IDs, then each request's empty STDOUT record and
//! END_REQUEST. Compared: the zero-copy `handle_read_with` (whole buffer and 256 KiB
//! reads), the bare `Records` iterator, and the owned `handle_read` + `poll_event`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portico_protocols::fastcgi::client::{ClientEvent, ClientEventRef, Config, Conn};
use portico_protocols::fastcgi::{
    EndRequestBody, MAX_CONTENT_LEN, ProtocolStatus, RecordType, Records, encode_record,
};

const TOTAL: usize = 64 << 20;
const IDS: [u16; 4] = [1, 2, 3, 4];
const READ: usize = 256 << 10;

fn wire() -> Vec<u8> {
    let chunk: Vec<u8> = (0..MAX_CONTENT_LEN).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::with_capacity(TOTAL + TOTAL / 8192 + 1024);
    let mut sent = 0;
    let mut i = 0;
    while sent < TOTAL {
        let n = chunk.len().min(TOTAL - sent);
        encode_record(
            RecordType::STDOUT,
            IDS[i % IDS.len()],
            &chunk[..n],
            &mut out,
        );
        sent += n;
        i += 1;
    }
    for id in IDS {
        encode_record(RecordType::STDOUT, id, &[], &mut out);
        let end = EndRequestBody {
            app_status: 0,
            protocol_status: ProtocolStatus::REQUEST_COMPLETE,
        };
        encode_record(RecordType::END_REQUEST, id, &end.to_bytes(), &mut out);
    }
    out
}

fn sum_ref(total: &mut usize, e: ClientEventRef<'_>) {
    if let ClientEventRef::Stdout { data, .. } = e {
        *total += black_box(data).len();
    }
}

fn bench(c: &mut Criterion) {
    let wire = wire();
    let mut g = c.benchmark_group("stdout_demux");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.sample_size(20);

    g.bench_function("handle_read_with/whole", |b| {
        b.iter(|| {
            let mut conn = Conn::new(Config::default());
            let mut total = 0;
            conn.handle_read_with(black_box(&wire), |e| sum_ref(&mut total, e))
                .unwrap();
            assert_eq!(total, TOTAL);
        })
    });

    g.bench_function("handle_read_with/256KiB-reads", |b| {
        b.iter(|| {
            let mut conn = Conn::new(Config::default());
            let mut total = 0;
            for read in black_box(&wire).chunks(READ) {
                conn.handle_read_with(read, |e| sum_ref(&mut total, e))
                    .unwrap();
            }
            assert_eq!(total, TOTAL);
        })
    });

    g.bench_function("records_iter", |b| {
        b.iter(|| {
            let total: usize = Records::new(black_box(&wire))
                .filter(|r| r.header.record_type == RecordType::STDOUT)
                .map(|r| black_box(r.content).len())
                .sum();
            assert_eq!(total, TOTAL);
        })
    });

    g.bench_function("handle_read+poll_event/whole", |b| {
        b.iter(|| {
            let mut conn = Conn::new(Config::default());
            conn.handle_read(black_box(&wire)).unwrap();
            let mut total = 0;
            while let Some(e) = conn.poll_event() {
                if let ClientEvent::Stdout { data, .. } = e {
                    total += black_box(data).len();
                }
            }
            assert_eq!(total, TOTAL);
        })
    });

    g.bench_function("handle_read+poll_event/256KiB-reads", |b| {
        b.iter(|| {
            let mut conn = Conn::new(Config::default());
            let mut total = 0;
            for read in black_box(&wire).chunks(READ) {
                conn.handle_read(read).unwrap();
                while let Some(e) = conn.poll_event() {
                    if let ClientEvent::Stdout { data, .. } = e {
                        total += black_box(data).len();
                    }
                }
            }
            assert_eq!(total, TOTAL);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
