//! The records portico's FastCGI upstream client writes (fastcgi-client as
//! `portico::backend::fastcgi::new_client` builds it, from the patched crate in
//! `vendor/fastcgi-client/`), seen by a strict server over a real Unix socket.
//!
//! The patch zeroes the record buffer only as far as it is used; this test pins down that
//! no record got shorter for it: params up to 65535 bytes in one PARAMS record whose pairs
//! are whole (FCGI-3.4-1; php-fpm parses each PARAMS record on its own), bodies cut into
//! records of at most 65535 bytes (FCGI-3.3-3) in the order sent, one empty PARAMS and one
//! empty STDIN record ending each stream (FCGI-3.3-16), on both sides of the 4 KiB start
//! size and of 64 KiB. The one place the records differ from the unpatched crate's: a
//! first read that fills the 4 KiB start buffer is followed by more reads into the same
//! record (the crate sent one record per read), so they are fewer and longer.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use fastcgi_client::response::Content;
use fastcgi_client::{Params, StreamExt};
use portico::rt;
use proto::Status;
use proto::fastcgi::{EndRequestBody, NameValues, ProtocolStatus, RecordType, parse_record};

/// What the server saw of one request.
#[derive(Debug, Default)]
struct Seen {
    /// Content length of each non-empty PARAMS record, in order.
    params_records: Vec<usize>,
    /// Whether every non-empty PARAMS record held whole pairs only.
    pairs_whole_per_record: bool,
    /// The pairs of the whole PARAMS stream.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Empty PARAMS records (the end of the stream).
    params_ends: usize,
    /// Content length of each non-empty STDIN record, in order.
    stdin_records: Vec<usize>,
    /// The body, concatenated.
    body: Vec<u8>,
    /// Empty STDIN records (the end of the stream).
    stdin_ends: usize,
    /// Types of the records that came before BEGIN_REQUEST (none: a second empty STDIN
    /// of the previous request would show here).
    before_begin: Vec<u8>,
}

/// Serves `requests` requests on one kept connection: records what each sent, answers
/// a small CGI reply and END_REQUEST, and sends what it saw to `tx`. Then reads until the
/// client closes and returns how many bytes came after the last request's end (none: a
/// second empty STDIN after the last request would be counted here).
fn serve(listener: UnixListener, requests: usize, tx: mpsc::Sender<Seen>) -> usize {
    let Ok((mut s, _)) = listener.accept() else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..requests {
        let mut seen = Seen {
            pairs_whole_per_record: true,
            ..Seen::default()
        };
        let mut params_stream = Vec::new();
        let mut id = 0;
        let mut begun = false;
        loop {
            let used = match parse_record(&buf) {
                Ok(Status::Complete((r, used))) => {
                    id = r.header.request_id;
                    let len = r.content.len();
                    begun |= r.header.record_type == RecordType::BEGIN_REQUEST;
                    if !begun {
                        seen.before_begin.push(r.header.record_type.0);
                    }
                    match r.header.record_type {
                        RecordType::PARAMS if len == 0 => seen.params_ends += 1,
                        RecordType::PARAMS => {
                            seen.params_records.push(len);
                            seen.pairs_whole_per_record &=
                                NameValues::new(r.content).all(|p| p.is_ok());
                            params_stream.extend_from_slice(r.content);
                        }
                        RecordType::STDIN if len == 0 => seen.stdin_ends += 1,
                        RecordType::STDIN => {
                            seen.stdin_records.push(len);
                            seen.body.extend_from_slice(r.content);
                        }
                        _ => {}
                    }
                    Some((used, r.header.record_type == RecordType::STDIN && len == 0))
                }
                Ok(Status::Partial) => None,
                Err(e) => panic!("malformed record from the client: {e}"),
            };
            match used {
                Some((used, end)) => {
                    buf.drain(..used);
                    if end {
                        break;
                    }
                }
                None => match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return buf.len(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        }
        seen.pairs = NameValues::new(&params_stream)
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let mut out = Vec::new();
        proto::fastcgi::encode_record(
            RecordType::STDOUT,
            id,
            b"Content-Type: text/plain\r\n\r\nok",
            &mut out,
        );
        proto::fastcgi::encode_record(RecordType::STDOUT, id, b"", &mut out);
        let end = EndRequestBody {
            app_status: 0,
            protocol_status: ProtocolStatus::REQUEST_COMPLETE,
        };
        proto::fastcgi::encode_record(RecordType::END_REQUEST, id, &end.to_bytes(), &mut out);
        if s.write_all(&out).is_err() || tx.send(seen).is_err() {
            return buf.len();
        }
    }
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return buf.len(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A body reader that returns at most the next piece's size per read; a piece of 0 is
/// one `Pending` (the waker called first), as a body still on its way.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
}

impl rt::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.sizes.first() == Some(&0) {
            self.sizes.remove(0);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let want = if self.sizes.is_empty() {
            self.data.len()
        } else {
            self.sizes.remove(0)
        };
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// One case: extra params and a body read in `pieces` (empty: as the reader gives).
struct Case {
    extra_value_len: usize,
    body_len: usize,
    pieces: Vec<usize>,
}

fn base_params(extra: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_FILENAME", "/srv/www/index.php"),
        ("SCRIPT_NAME", "/index.php"),
        ("REQUEST_URI", "/index.php"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    if !extra.is_empty() {
        v.push(("HTTP_COOKIE".into(), extra.into()));
    }
    v
}

/// A body whose bytes depend on their position, so a reordering shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Sends every case on one kept connection and returns what the server saw of each.
fn run(cases: &[Case]) -> Vec<Seen> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    let n = cases.len();
    let server = std::thread::spawn(move || serve(listener, n, tx));
    rt::block_on(async {
        let conn = rt::Connection::unix(&path).await.unwrap();
        let mut client = portico::backend::fastcgi::new_client(conn);
        for case in cases {
            let extra = "c".repeat(case.extra_value_len);
            let pairs = base_params(&extra);
            let mut p = Params::default();
            p.clear();
            for (name, value) in &pairs {
                p.insert(Cow::Borrowed(name.as_str()), Cow::Borrowed(value.as_str()));
            }
            let data = body(case.body_len);
            let reader = Pieces {
                data: &data,
                sizes: case.pieces.clone(),
            };
            let mut stream = client
                .execute_stream(fastcgi_client::Request::new(p, reader))
                .await
                .unwrap();
            let mut stdout = Vec::new();
            while let Some(item) = stream.next().await {
                if let Content::Stdout(b) = item.unwrap() {
                    stdout.extend_from_slice(&b);
                }
            }
            assert!(stdout.ends_with(b"\r\n\r\nok"), "{stdout:?}");
        }
    });
    let seen: Vec<Seen> = rx.iter().take(n).collect();
    let after_last = server.join().unwrap();
    assert_eq!(after_last, 0, "bytes after the last request's end");
    seen
}

/// The record sizes a stream of `len` bytes read whole takes: 65535-byte records
/// (FCGI-3.3-3), then the rest.
fn split(len: usize) -> Vec<usize> {
    let mut v = vec![65535; len / 65535];
    if len % 65535 != 0 {
        v.push(len % 65535);
    }
    v
}

/// Encoded length of the params of a case, for the expected PARAMS record sizes.
fn params_len(extra_value_len: usize) -> usize {
    let extra = "c".repeat(extra_value_len);
    base_params(&extra)
        .iter()
        .map(|(n, v)| proto::fastcgi::nv::encoded_pair_len(n.as_bytes(), v.as_bytes()))
        .sum()
}

#[test]
fn fcgi_3_3_3_upstream_records_keep_their_sizes_around_4_kib_and_64_kib() {
    let mut cases = Vec::new();
    // Params: small, just under and over the 4 KiB start size, over 64 KiB.
    for extra in [0, 3900, 4200, 20_000, 70_000] {
        cases.push(Case {
            extra_value_len: extra,
            body_len: 0,
            pieces: vec![],
        });
    }
    // Bodies read whole: on both sides of 4 KiB and of 64 KiB, and several records.
    for len in [1, 4095, 4096, 4097, 65535, 65536, 200_000] {
        cases.push(Case {
            extra_value_len: 0,
            body_len: len,
            pieces: vec![],
        });
    }
    // A body arriving in pieces: a first read of exactly 4 KiB makes the buffer grow and
    // the record takes the next reads too; a short first read is a record of its own.
    cases.push(Case {
        extra_value_len: 0,
        body_len: 9196,
        pieces: vec![4096, 100, 5000],
    });
    cases.push(Case {
        extra_value_len: 0,
        body_len: 6000,
        pieces: vec![1000, 5000],
    });
    // The same with the body pending in between: the grown record waits for it.
    cases.push(Case {
        extra_value_len: 0,
        body_len: 9196,
        pieces: vec![0, 4096, 0, 100, 0, 5000],
    });
    // Last, an empty body: the crate's second empty STDIN would come after this one.
    cases.push(Case {
        extra_value_len: 0,
        body_len: 0,
        pieces: vec![],
    });
    let seen = run(&cases);
    assert_eq!(seen.len(), cases.len());
    for (case, seen) in cases.iter().zip(&seen) {
        let what = format!(
            "params {} + body {} in {:?}",
            case.extra_value_len, case.body_len, case.pieces
        );
        // The params: all pairs arrive, in records of at most 65535 bytes, one record
        // while they fit; each such record holds whole pairs.
        let plen = params_len(case.extra_value_len);
        assert_eq!(seen.params_records, split(plen), "{what}");
        if plen <= 65535 {
            assert!(seen.pairs_whole_per_record, "{what}");
        }
        // In any order: the crate holds the params in a HashMap.
        let mut expected = base_params(&"c".repeat(case.extra_value_len));
        expected.sort();
        let mut got: Vec<(String, String)> = seen
            .pairs
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, expected, "{what}");
        assert_eq!(seen.params_ends, 1, "{what}");
        // The body: every byte in order, one empty STDIN at the end (FCGI-3.3-16).
        assert!(seen.body == body(case.body_len), "{what}: body differs");
        assert_eq!(seen.stdin_ends, 1, "{what}");
        assert!(
            seen.before_begin.is_empty(),
            "{what}: {:?}",
            seen.before_begin
        );
        let reads: Vec<usize> = case.pieces.iter().copied().filter(|&n| n > 0).collect();
        let expected_records = match reads.as_slice() {
            [] => split(case.body_len),
            [4096, ..] => vec![case.body_len],
            _ => reads,
        };
        assert_eq!(seen.stdin_records, expected_records, "{what}");
    }
}
