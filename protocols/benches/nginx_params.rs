//! Decoding one request's PARAMS as nginx sends them: the variables of nginx's stock
//! `fastcgi_params` (plus `SCRIPT_FILENAME` and `PATH_INFO` from a typical PHP
//! location) and the `HTTP_*` headers of a browser GET, about 1 KiB encoded.
//!
//! Compared: `NameValues` over the block, `ParamBlock::parse`, and `server::Conn`
//! fed BEGIN_REQUEST + PARAMS + empty PARAMS (what one request costs the listener).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portico_protocols::fastcgi::client::{encode_begin_request, encode_params};
use portico_protocols::fastcgi::server::{Config, Conn, Event};
use portico_protocols::fastcgi::{KEEP_CONN, NameValues, ParamBlock, Role, encode_pair};

const PARAMS: &[(&str, &str)] = &[
    // nginx 1.24 conf/fastcgi_params, in its order.
    ("QUERY_STRING", "page=2&sort=date"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("SCRIPT_NAME", "/index.php"),
    ("REQUEST_URI", "/blog/archive?page=2&sort=date"),
    ("DOCUMENT_URI", "/index.php"),
    ("DOCUMENT_ROOT", "/var/www/example.com/public"),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "https"),
    ("HTTPS", "on"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "nginx/1.24.0"),
    ("REMOTE_ADDR", "203.0.113.42"),
    ("REMOTE_PORT", "51544"),
    ("REMOTE_USER", ""),
    ("SERVER_ADDR", "192.0.2.10"),
    ("SERVER_PORT", "443"),
    ("SERVER_NAME", "example.com"),
    ("REDIRECT_STATUS", "200"),
    // fastcgi.conf / a PHP location.
    ("SCRIPT_FILENAME", "/var/www/example.com/public/index.php"),
    ("PATH_INFO", ""),
    // Request headers (fastcgi_pass_request_headers on).
    ("HTTP_HOST", "example.com"),
    (
        "HTTP_USER_AGENT",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "HTTP_ACCEPT",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"),
    ("HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"),
    (
        "HTTP_REFERER",
        "https://example.com/blog/archive?page=1&sort=date",
    ),
    ("HTTP_CONNECTION", "keep-alive"),
    (
        "HTTP_COOKIE",
        "PHPSESSID=9f2c1e7b4a5d6e8f0a1b2c3d4e5f6a7b; theme=dark; consent=1",
    ),
    ("HTTP_UPGRADE_INSECURE_REQUESTS", "1"),
    ("HTTP_SEC_FETCH_DEST", "document"),
    ("HTTP_SEC_FETCH_MODE", "navigate"),
    ("HTTP_SEC_FETCH_SITE", "same-origin"),
    ("HTTP_SEC_FETCH_USER", "?1"),
    ("HTTP_PRIORITY", "u=0, i"),
];

fn block() -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in PARAMS {
        encode_pair(n.as_bytes(), v.as_bytes(), &mut out);
    }
    out
}

fn wire() -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = PARAMS
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let mut out = Vec::new();
    encode_begin_request(1, Role::RESPONDER, KEEP_CONN, &mut out);
    // One PARAMS record and the empty one, as nginx sends a small block.
    encode_params(1, pairs.iter().copied(), &mut out);
    out
}

fn bench(c: &mut Criterion) {
    let block = block();
    let wire = wire();
    println!(
        "nginx_params: {} pairs, block {} bytes, wire {} bytes",
        PARAMS.len(),
        block.len(),
        wire.len()
    );
    let mut g = c.benchmark_group("nginx_params");
    g.throughput(Throughput::Bytes(block.len() as u64));

    g.bench_function("name_values", |b| {
        b.iter(|| {
            let mut n = 0;
            for pair in NameValues::new(black_box(&block)) {
                let (name, value) = pair.unwrap();
                n += black_box(name).len() + black_box(value).len();
            }
            n
        })
    });

    g.bench_function("param_block_parse", |b| {
        b.iter(|| ParamBlock::parse(black_box(&block).clone()).unwrap())
    });

    g.bench_function("server_conn", |b| {
        b.iter(|| {
            let mut conn = Conn::new(Config::default());
            conn.handle_read(black_box(&wire)).unwrap();
            let mut got = None;
            while let Some(e) = conn.poll_event() {
                if let Event::Params { params, .. } = e {
                    got = Some(params);
                }
            }
            got.unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
