//! Parsing the response head a PHP script (php-cgi / php-fpm) writes, and
//! classifying it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portico_protocols::Status;
use portico_protocols::cgi::response::{Limits, parse_head};

const PHP_DOCUMENT: &[u8] = b"X-Powered-By: PHP/8.3.6\r\n\
Set-Cookie: PHPSESSID=9f2c1e7b4a5d6e8f0a1b2c3d4e5f6a7b; path=/; HttpOnly; SameSite=Lax\r\n\
Expires: Thu, 19 Nov 1981 08:52:00 GMT\r\n\
Cache-Control: no-store, no-cache, must-revalidate\r\n\
Pragma: no-cache\r\n\
Content-type: text/html; charset=UTF-8\r\n\
\r\n\
<!DOCTYPE html><html><head><title>Archive</title></head><body>";

const PHP_NOT_FOUND: &[u8] = b"Status: 404 Not Found\r\n\
X-Powered-By: PHP/8.3.6\r\n\
Content-type: text/html; charset=UTF-8\r\n\
\r\n\
<h1>Not Found</h1>";

const PHP_REDIRECT: &[u8] = b"X-Powered-By: PHP/8.3.6\r\n\
Set-Cookie: flash=saved; path=/\r\n\
Location: https://example.com/blog/42\r\n\
Content-type: text/html; charset=UTF-8\r\n\
\r\n";

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("cgi_head");
    for (name, head) in [
        ("php_document", PHP_DOCUMENT),
        ("php_404", PHP_NOT_FOUND),
        ("php_redirect", PHP_REDIRECT),
    ] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let Ok(Status::Complete((head, used))) =
                    parse_head(black_box(head), false, &limits)
                else {
                    unreachable!()
                };
                (head.kind().unwrap(), head.status_code(), used)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
