//! The FastCGI client floor of `benches/php.sh`: how many requests per second a client
//! alone (no HTTP in front, no routing, no CGI head parsing) gets from a FastCGI
//! application over `CONNS` kept connections, each sending its next request as soon as
//! the last reply ended.
//!
//! ```text
//! fcgi_client_floor MODE SOCKET SCRIPT_FILENAME CONNS SECONDS
//! ```
//!
//! MODE `crate`: fastcgi-client, built exactly as portico's upstream pool builds it
//! (`portico::backend::fastcgi::new_client`), one `execute_stream` per request with the
//! params portico sends for `GET /hello.php`. MODE `proto`: the same requests encoded and
//! decoded with `proto::fastcgi::client` (one write per request, one read
//! buffer per connection). Prints `RATE P99_MS ERRORS` (the `target_cmd` form of
//! `benches/lib.sh`).

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use fastcgi_client::response::Content;
use fastcgi_client::{Params, StreamExt};
use portico::rt::{self, AsyncReadExt, AsyncWriteExt};
use proto::fastcgi::client::{self as fc, ClientEventRef};
use proto::fastcgi::{ProtocolStatus, Role};

fn params(script: &str) -> Vec<(String, String)> {
    let doc_root = std::path::Path::new(script)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "portico"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/hello.php"),
        ("SCRIPT_NAME", "/hello.php"),
        ("SCRIPT_FILENAME", script),
        ("DOCUMENT_ROOT", &doc_root),
        ("QUERY_STRING", ""),
        ("CONTENT_LENGTH", ""),
        ("CONTENT_TYPE", ""),
        ("HTTP_HOST", "127.0.0.1:8080"),
        ("HTTP_USER_AGENT", "wrk"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .collect()
}

struct Totals {
    done: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Counts one request; `false` (stop this connection) when it failed.
fn count(totals: &Totals, lat: &mut Vec<u32>, started: Instant, ok: bool) -> bool {
    if !ok {
        totals.errors.fetch_add(1, Relaxed);
        return false;
    }
    totals.done.fetch_add(1, Relaxed);
    lat.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    true
}

/// One connection's loop; returns its latencies in microseconds.
async fn run_crate(sock: PathBuf, script: String, totals: Arc<Totals>) -> Vec<u32> {
    let mut lat = Vec::new();
    let pairs = params(&script);
    let Ok(conn) = rt::Connection::unix(&sock).await else {
        totals.errors.fetch_add(1, Relaxed);
        return lat;
    };
    let mut client = portico::backend::fastcgi::new_client(conn);
    while !totals.stop.load(Relaxed) {
        let t = Instant::now();
        let mut p = Params::default();
        p.clear();
        for (n, v) in &pairs {
            p.insert(Cow::Owned(n.clone()), Cow::Owned(v.clone()));
        }
        let req = fastcgi_client::Request::new(p, futures_lite::io::empty());
        let mut ok = false;
        match client.execute_stream(req).await {
            Ok(mut stream) => {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(Content::Stdout(b)) => ok |= !b.is_empty(),
                        Ok(Content::Stderr(_)) => {}
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
            Err(_) => ok = false,
        }
        if !count(&totals, &mut lat, t, ok) {
            break;
        }
    }
    lat
}

async fn run_proto(sock: PathBuf, script: String, totals: Arc<Totals>) -> Vec<u32> {
    let mut lat = Vec::new();
    let pairs = params(&script);
    let Ok(mut conn) = rt::Connection::unix(&sock).await else {
        totals.errors.fetch_add(1, Relaxed);
        return lat;
    };
    // Lenient: php-fpm never sends the empty STDOUT record before END_REQUEST.
    let mut dec = fc::Conn::new(fc::Config {
        lenient: true,
        ..fc::Config::default()
    });
    let mut out = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 32 * 1024];
    while !totals.stop.load(Relaxed) {
        let t = Instant::now();
        out.clear();
        fc::encode_begin_request(1, Role::RESPONDER, proto::fastcgi::KEEP_CONN, &mut out);
        fc::encode_params(
            1,
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &mut out,
        );
        fc::encode_stdin(1, &[], &mut out);
        dec.begin_request(1);
        let mut ok = conn.write_all(&out).await.is_ok();
        let mut ended = false;
        while ok && !ended {
            let n = match conn.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    eprintln!("fcgi_client_floor: connection closed");
                    ok = false;
                    break;
                }
                Ok(n) => n,
            };
            let read = buf.get(..n).unwrap_or_default();
            let r = dec.handle_read_with(read, |e| {
                if let ClientEventRef::EndRequest {
                    protocol_status, ..
                } = e
                {
                    ended = true;
                    ok = protocol_status == ProtocolStatus::REQUEST_COMPLETE;
                }
            });
            if let Err(e) = r {
                eprintln!("fcgi_client_floor: reply: {e}");
                ok = false;
            }
        }
        if !count(&totals, &mut lat, t, ok) {
            break;
        }
    }
    lat
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, sock, script, conns, secs] = args.as_slice() else {
        eprintln!("usage: fcgi_client_floor crate|proto SOCKET SCRIPT_FILENAME CONNS SECONDS");
        return ExitCode::from(2);
    };
    let (Ok(conns), Ok(secs)) = (conns.parse::<usize>(), secs.parse::<f64>()) else {
        eprintln!("CONNS and SECONDS must be numbers");
        return ExitCode::from(2);
    };
    let totals = Arc::new(Totals {
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let lat: Vec<u32> = rt::block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (s, sc, t) = (PathBuf::from(sock), script.clone(), totals.clone());
            tasks.push(match mode.as_str() {
                "crate" => rt::spawn(async move { run_crate(s, sc, t).await }),
                _ => rt::spawn(async move { run_proto(s, sc, t).await }),
            });
        }
        rt::sleep(Duration::from_secs_f64(secs)).await;
        totals.stop.store(true, Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = lat;
    lat.sort_unstable();
    let p99 = lat
        .get(lat.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or(0);
    println!(
        "{:.0} {:.3} {}",
        totals.done.load(Relaxed) as f64 / elapsed,
        f64::from(p99) / 1000.0,
        totals.errors.load(Relaxed)
    );
    ExitCode::SUCCESS
}
