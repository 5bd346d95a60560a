//! Replays the bytes captured from real peers (`fixtures/records/`, `fixtures/scgi/`;
//! `fixtures/capture/capture.sh` re-captures them, `fixtures/records/README.md` lists
//! them).
//!
//! * Web server → application captures (nginx, Apache `mod_proxy_fcgi`, libfcgi's
//!   `cgi-fcgi`) go through [`server::Conn`], the application side.
//! * Application → web server captures (php-fpm) go through [`client::Conn`], the
//!   web-server side.
//! * SCGI captures go through [`scgi::parse_request`].
//!
//! Every file is also fed cut at every byte boundary (files up to
//! [`EVERY_BOUNDARY_MAX`] bytes) or in [`RANDOM_CHUNKINGS`] random chunkings (larger
//! ones), and byte by byte, and must give the same events, output and error each time.
//! `invalid-*.bin` are damaged copies of real captures and must fail with the error
//! variant, and clause, named in their test.
//!
//! The list of expectations is checked against the directories: a new capture without
//! an expectation here, or an expectation without its file, fails
//! [`every_fixture_file_has_an_expectation`].

use std::collections::BTreeSet;
use std::path::PathBuf;

use portico_protocols::Status;
use portico_protocols::cgi::response;
use portico_protocols::fastcgi::client::{self, ClientEvent, ClientEventRef};
use portico_protocols::fastcgi::server;
use portico_protocols::fastcgi::{
    Error, Header, NameValues, ParamBlock, ProtocolStatus, RecordType, Records, Role, parse_record,
};
use portico_protocols::scgi;

/// Files up to this size are cut at every byte boundary; larger ones get random chunkings.
const EVERY_BOUNDARY_MAX: usize = 4096;
/// Random chunkings per large file (besides whole and byte by byte).
const RANDOM_CHUNKINGS: usize = 48;
/// The replay application's answer to every request.
const REPLY: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nreplayed\n";
/// The body every POST capture carries.
const FORM: &[u8] = b"name=portico&lang=rust&n=42";

/// Declares one test per fixture file and the list [`EXPECTED`] of all of them.
macro_rules! fixtures {
    ($( $(#[doc = $doc:literal])* $test:ident: $file:literal => $check:path; )*) => {
        /// Every fixture file that has an expectation, relative to `fixtures/`.
        const EXPECTED: &[&str] = &[$($file),*];
        $(
            $(#[doc = $doc])*
            #[test]
            fn $test() {
                $check(&load($file));
            }
        )*
    };
}

fixtures! {
    // ------------------------------------------------ web server → application
    /// nginx's bundled fastcgi_params for a GET with a query: one Responder request
    /// with ID 1, KEEP_CONN clear, empty CONTENT_TYPE/CONTENT_LENGTH sent as empty
    /// strings, PARAMS padded to 8 bytes. Also FCGI-RW-1, RW-2, RW-4, 5.1-1, B-1.
    fcgi_rw_3_nginx_get_params: "records/nginx-get-params.bin" => nginx_get_params;
    /// nginx POST with Content-Length: STDIN carries exactly CONTENT_LENGTH bytes.
    /// Also FCGI-6.2-4, B-2.
    fcgi_6_2_3_nginx_post_stdin: "records/nginx-post-stdin.bin" => nginx_post_stdin;
    /// nginx de-chunks a chunked body and sends its decoded CONTENT_LENGTH.
    fcgi_rw_5_nginx_post_chunked: "records/nginx-post-chunked.bin" => nginx_post_chunked;
    /// `fastcgi_keep_conn on`: two requests on one connection, both ID 1, KEEP_CONN
    /// set, so the application never closes. Also FCGI-3.3-8, RW-2.
    fcgi_5_1_6_nginx_keep_conn: "records/nginx-keep-conn.bin" => nginx_keep_conn;
    /// 20 000-byte header values use the 4-byte length form; nginx sends all params
    /// in one record. Also FCGI-3.4-3, 3.3-4.
    fcgi_3_4_2_nginx_large_params: "records/nginx-large-params.bin" => nginx_large_params;
    /// Apache mod_proxy_fcgi GET: request ID 1, no padding, no CONTENT_LENGTH,
    /// SCRIPT_FILENAME `proxy:fcgi://…`. Also FCGI-3.3-5.
    fcgi_rw_6_apache_get: "records/apache-get.bin" => apache_get;
    /// Apache mod_proxy_fcgi POST. Also FCGI-6.2-3, 6.2-4.
    fcgi_rw_6_apache_post: "records/apache-post.bin" => apache_post;
    /// Apache spreads large params over several PARAMS records (whole pairs each).
    fcgi_5_2_3_apache_large_params: "records/apache-large-params.bin" => apache_large_params;
    /// libfcgi's cgi-fcgi sends its environment, and nothing else, as PARAMS.
    fcgi_6_2_2_cgi_fcgi_get: "records/cgi-fcgi-get.bin" => cgi_fcgi_get;
    /// cgi-fcgi POST: its stdin on FCGI_STDIN.
    fcgi_6_2_3_cgi_fcgi_post: "records/cgi-fcgi-post.bin" => cgi_fcgi_post;
    /// libfcgi cuts PARAMS records at its buffer size, inside a pair; the pairs are
    /// decoded from the concatenated stream. Also FCGI-B-2, T-4.
    fcgi_5_2_3_cgi_fcgi_large_params: "records/cgi-fcgi-large-params.bin" => cgi_fcgi_large_params;

    // ------------------------------------------------ application → web server
    /// php-fpm ends a request with END_REQUEST but no empty STDOUT record: strict
    /// decoding refuses it, lenient decoding reports the violation and the response.
    /// Also FCGI-5.5-1, 5.5-3, 6.2-5, RW-7.
    fcgi_6_1_7_php_fpm_stdout_end: "records/php-fpm-stdout-end.bin" => php_fpm_stdout_end;
    /// More than 64 KiB of output in several STDOUT records, reassembled. Also FCGI-6.2-5.
    fcgi_3_3_4_php_fpm_large_stdout: "records/php-fpm-large-stdout.bin" => php_fpm_large_stdout;
    /// php-fpm's error_log() goes to FCGI_STDERR, which it never terminates.
    /// Also FCGI-6.1-7, B-3.
    fcgi_3_3_16_php_fpm_stderr: "records/php-fpm-stderr.bin" => php_fpm_stderr;
    /// php-fpm echoes a POST body read from STDIN.
    fcgi_6_2_5_php_fpm_post_echo: "records/php-fpm-post-echo.bin" => php_fpm_post_echo;
    /// php-fpm answers GET_VALUES with FCGI_MPXS_CONNS=0 only. Also FCGI-4.1-4, RW-7.
    fcgi_4_1_3_php_fpm_get_values_result: "records/php-fpm-get-values-result.bin" => php_fpm_get_values_result;

    // ------------------------------------------------ damaged FastCGI copies
    /// Version byte 2 in the first header.
    fcgi_3_3_3_invalid_version: "records/invalid-version.bin" => invalid_version;
    /// BEGIN_REQUEST whose content is 5 bytes.
    fcgi_5_1_2_invalid_begin_request_short: "records/invalid-begin-request-short.bin" => invalid_begin_request_short;
    /// A PARAMS record with request ID 0.
    fcgi_a_2_invalid_request_id_zero: "records/invalid-request-id-zero.bin" => invalid_request_id_zero;
    /// The last pair's value length runs one byte past the PARAMS stream.
    fcgi_3_4_1_invalid_params_length_past_end: "records/invalid-params-length-past-end.bin" => invalid_params_length_past_end;
    /// The capture stops inside a STDIN record: never an error, never complete.
    fcgi_3_3_2_invalid_truncated_record: "records/invalid-truncated-record.bin" => invalid_truncated_record;
    /// php-fpm's END_REQUEST declaring 5 content bytes.
    fcgi_5_5_2_invalid_php_fpm_end_request_short: "records/invalid-php-fpm-end-request-short.bin" => invalid_php_fpm_end_request_short;

    // ------------------------------------------------ SCGI
    /// nginx scgi_params GET: CONTENT_LENGTH 0 written first by nginx, SCGI=1.
    /// Also SCGI-RW-1, 3-4, 3-6, 3-7.
    scgi_rw_2_nginx_get: "scgi/nginx-get.bin" => scgi_nginx_get;
    /// nginx POST: exactly CONTENT_LENGTH body bytes follow the netstring. Also SCGI-3-10.
    scgi_3_11_nginx_post: "scgi/nginx-post.bin" => scgi_nginx_post;
    /// Apache mod_proxy_scgi GET: CONTENT_LENGTH first, SCGI=1 second, no
    /// GATEWAY_INTERFACE.
    scgi_rw_3_apache_get: "scgi/apache-get.bin" => scgi_apache_get;
    /// Apache mod_proxy_scgi POST. Also SCGI-RW-3.
    scgi_3_11_apache_post: "scgi/apache-post.bin" => scgi_apache_post;
    /// A non-digit in the netstring length.
    scgi_4_5_invalid_length_not_digit: "scgi/invalid-length-not-digit.bin" => scgi_invalid_length_not_digit;
    /// A leading zero on the netstring length.
    scgi_4_2_invalid_leading_zero: "scgi/invalid-leading-zero.bin" => scgi_invalid_leading_zero;
    /// `;` where the netstring's comma belongs.
    scgi_4_5_invalid_missing_comma: "scgi/invalid-missing-comma.bin" => scgi_invalid_missing_comma;
}

/// A capture without an expectation above (or an expectation without its capture)
/// fails here, naming the file.
#[test]
fn every_fixture_file_has_an_expectation() {
    let mut found = BTreeSet::new();
    for dir in ["records", "scgi"] {
        let entries = std::fs::read_dir(fixtures_dir().join(dir))
            .unwrap_or_else(|e| panic!("fixtures/{dir}: {e}"));
        for entry in entries {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_str().expect("UTF-8 file name");
            if name == "README.md" {
                continue;
            }
            assert!(
                name.ends_with(".bin"),
                "fixtures/{dir}/{name}: only .bin captures (and README.md) belong here"
            );
            found.insert(format!("{dir}/{name}"));
        }
    }
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    let unexpected: Vec<_> = found.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(
        unexpected.is_empty(),
        "captures without an expectation in protocols/tests/fixtures.rs: {unexpected:?}"
    );
    assert!(
        missing.is_empty(),
        "expectations whose capture is missing: {missing:?}"
    );
}

// ------------------------------------------------------------ web server → application

fn nginx_get_params(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(
        (req.id, req.role, req.keep_conn),
        (1, Role::RESPONDER, false)
    );
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(param(&req, "QUERY_STRING"), Some("a=1&b=two%20words"));
    assert_eq!(
        param(&req, "REQUEST_URI"),
        Some("/app/index.php?a=1&b=two%20words")
    );
    assert_eq!(param(&req, "SCRIPT_NAME"), Some("/app/index.php"));
    assert_eq!(
        param(&req, "SCRIPT_FILENAME"),
        Some("/srv/www/app/index.php")
    );
    assert_eq!(param(&req, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(param(&req, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
    assert_eq!(param(&req, "REDIRECT_STATUS"), Some("200"));
    assert_eq!(param(&req, "HTTP_USER_AGENT"), Some("portico-capture"));
    assert_eq!(param(&req, "HTTP_ACCEPT"), Some("*/*"));
    assert!(param(&req, "SERVER_SOFTWARE").is_some_and(|s| s.starts_with("nginx/")));
    // FCGI-RW-3: unset variables still travel, as empty strings; HTTPS is if_not_empty.
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some(""));
    assert_eq!(param(&req, "CONTENT_TYPE"), Some(""));
    assert_eq!(param(&req, "HTTPS"), None);
    assert_eq!(req.params.len(), 22);
    assert!(req.stdin.is_empty() && req.stdin_ended);
    // FCGI-5.1-5: KEEP_CONN clear, so the application closes after answering.
    assert!(run.wants_close);
    assert_ends_with_end_request(&run.sent, 1);
    // FCGI-RW-1, RW-2: ID 1 throughout, every record padded to 8 bytes.
    let headers = headers(bytes);
    assert_eq!(
        types(&headers),
        [
            RecordType::BEGIN_REQUEST,
            RecordType::PARAMS,
            RecordType::PARAMS,
            RecordType::STDIN
        ]
    );
    assert!(headers.iter().all(|h| h.version == 1 && h.request_id == 1));
    assert!(headers.iter().all(|h| h.record_len() % 8 == 0));
}

fn nginx_post_stdin(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!((req.id, req.keep_conn), (1, false));
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("POST"));
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some("27"));
    assert_eq!(
        param(&req, "CONTENT_TYPE"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(param(&req, "HTTP_CONTENT_LENGTH"), Some("27"));
    // FCGI-6.2-3, FCGI-6.2-4: exactly CONTENT_LENGTH bytes, then the empty STDIN.
    assert_eq!(req.stdin, FORM);
    assert!(req.stdin_ended);
    assert!(run.wants_close);
    assert!(headers(bytes).iter().all(|h| h.record_len() % 8 == 0));
}

fn nginx_post_chunked(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("POST"));
    // FCGI-RW-5: the body was buffered and de-chunked; the header still says chunked.
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some("31"));
    assert_eq!(param(&req, "HTTP_TRANSFER_ENCODING"), Some("chunked"));
    assert_eq!(param(&req, "CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(req.stdin, b"chunk one;chunk two;chunk three");
    assert!(req.stdin_ended);
}

fn nginx_keep_conn(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [first, second] = requests(&run.events).try_into().expect("two requests");
    // FCGI-3.3-8: the ID is reused once the first request has ended.
    assert_eq!((first.id, first.keep_conn), (1, true));
    assert_eq!((second.id, second.keep_conn), (1, true));
    assert_eq!(param(&first, "SCRIPT_NAME"), Some("/keep/first.php"));
    assert_eq!(param(&first, "QUERY_STRING"), Some("n=1"));
    assert_eq!(param(&second, "SCRIPT_NAME"), Some("/keep/second.php"));
    assert_eq!(param(&second, "QUERY_STRING"), Some("n=2"));
    assert!(first.stdin_ended && second.stdin_ended);
    // FCGI-5.1-6: KEEP_CONN set, so the application leaves the connection open.
    assert!(!run.wants_close);
    let ends = Records::new(&run.sent)
        .filter(|r| r.header.record_type == RecordType::END_REQUEST)
        .count();
    assert_eq!(ends, 2);
}

fn nginx_large_params(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(param(&req, "HTTP_X_BIG_ONE").map(str::len), Some(20_000));
    assert!(param(&req, "HTTP_X_BIG_ONE").is_some_and(|v| v.bytes().all(|b| b == b'a')));
    assert!(param(&req, "HTTP_X_BIG_TWO").is_some_and(|v| v == "b".repeat(20_000)));
    // FCGI-3.4-2, FCGI-3.4-3: 20 000 = 0x4E20 in the 4-byte form, high bit set.
    let raw = req.params.as_bytes();
    assert!(
        raw.windows(19)
            .any(|w| w == b"\x0e\x80\x00\x4e\x20HTTP_X_BIG_ONE"),
        "4-byte value length of HTTP_X_BIG_ONE"
    );
    // nginx refuses params over 65535 bytes: they always fit one record.
    let params: Vec<_> = headers(bytes)
        .into_iter()
        .filter(|h| h.record_type == RecordType::PARAMS && h.content_length > 0)
        .collect();
    assert_eq!(params.len(), 1);
    assert!(params[0].content_length > 40_000);
}

fn apache_get(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(
        (req.id, req.role, req.keep_conn),
        (1, Role::RESPONDER, false)
    );
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(param(&req, "QUERY_STRING"), Some("a=1&b=two%20words"));
    assert_eq!(
        param(&req, "REQUEST_URI"),
        Some("/app/index.php?a=1&b=two%20words")
    );
    assert_eq!(param(&req, "SCRIPT_NAME"), Some("/app/index.php"));
    assert_eq!(param(&req, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(param(&req, "HTTP_USER_AGENT"), Some("portico-capture"));
    // FCGI-RW-6: the backend URL is in SCRIPT_FILENAME.
    assert!(
        param(&req, "SCRIPT_FILENAME")
            .is_some_and(|s| s.starts_with("proxy:fcgi://127.0.0.1:") && s.ends_with("/index.php"))
    );
    // Unlike nginx, Apache leaves CONTENT_LENGTH out when there is no body.
    assert_eq!(param(&req, "CONTENT_LENGTH"), None);
    assert!(req.stdin.is_empty() && req.stdin_ended);
    assert!(run.wants_close);
    // FCGI-3.3-5, FCGI-3.3-7: padding is optional; Apache sends none.
    let headers = headers(bytes);
    assert!(headers.iter().all(|h| h.padding_length == 0));
    assert!(headers.iter().all(|h| h.version == 1 && h.request_id == 1));
}

fn apache_post(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("POST"));
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some("27"));
    assert_eq!(
        param(&req, "CONTENT_TYPE"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.stdin, FORM);
    assert!(req.stdin_ended);
}

fn apache_large_params(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert!(param(&req, "HTTP_X_BIG_ONE").is_some_and(|v| v == "a".repeat(8000)));
    assert!(param(&req, "HTTP_X_BIG_TWO").is_some_and(|v| v == "b".repeat(8000)));
    assert!(param(&req, "HTTP_X_BIG_THREE").is_some_and(|v| v == "c".repeat(8000)));
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("GET"));
    // Several non-empty PARAMS records, each holding whole pairs (Apache's way).
    let contents = params_record_contents(bytes);
    assert!(contents.len() >= 2, "{} PARAMS records", contents.len());
    for content in &contents {
        assert!(NameValues::new(content).all(|p| p.is_ok()));
    }
}

fn cgi_fcgi_get(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(
        (req.id, req.role, req.keep_conn),
        (1, Role::RESPONDER, false)
    );
    let names: Vec<&[u8]> = req.params.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            &b"SCRIPT_FILENAME"[..],
            b"SCRIPT_NAME",
            b"SERVER_PROTOCOL",
            b"GATEWAY_INTERFACE",
            b"REQUEST_METHOD",
            b"QUERY_STRING"
        ]
    );
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(param(&req, "QUERY_STRING"), Some("who=fixture"));
    assert_eq!(param(&req, "SCRIPT_NAME"), Some("/hello.php"));
    assert!(param(&req, "SCRIPT_FILENAME").is_some_and(|s| s.ends_with("/php/hello.php")));
    assert!(req.stdin.is_empty() && req.stdin_ended);
}

fn cgi_fcgi_post(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("POST"));
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some("27"));
    assert_eq!(
        param(&req, "CONTENT_TYPE"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.stdin, FORM);
    assert!(req.stdin_ended);
}

fn cgi_fcgi_large_params(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert!(param(&req, "HTTP_X_BIG").is_some_and(|v| v == "a".repeat(20_000)));
    assert_eq!(param(&req, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(req.params.len(), 7);
    // FCGI-5.2-3: the record boundaries fall inside the HTTP_X_BIG pair, so the first
    // record alone does not hold whole pairs; only the concatenation does.
    let contents = params_record_contents(bytes);
    assert!(contents.len() >= 3, "{} PARAMS records", contents.len());
    assert!(NameValues::new(&contents[0]).any(|p| p == Err(Error::MalformedNameValue)));
    assert!(ParamBlock::parse(contents.concat()).is_ok());
}

// ------------------------------------------------------------ application → web server

fn php_fpm_stdout_end(bytes: &[u8]) {
    // Strict: php-fpm sends END_REQUEST{REQUEST_COMPLETE} without the empty STDOUT.
    let strict = replay_client(bytes, false);
    let error = Error::UnterminatedStream {
        request_id: 1,
        record_type: RecordType::STDOUT,
    };
    assert_eq!(strict.error, Some(error));
    assert_eq!(error.clause(), "FCGI-6.1-7");
    // Lenient: the violation is reported and the response is whole.
    let reply = summarize(&replay_client(bytes, true));
    assert_eq!(reply.violations, [error]);
    assert_eq!(reply.end, Some((0, ProtocolStatus::REQUEST_COMPLETE)));
    assert!(!reply.stdout_ended);
    assert!(reply.stderr.is_empty());
    let (head, body) = cgi_head(&reply.stdout);
    assert_eq!(head.status, None);
    assert_eq!(head.content_type, Some(&b"text/html; charset=UTF-8"[..]));
    assert!(head.headers.contains(&(&b"X-Portico"[..], &b"fixture"[..])));
    assert!(
        head.headers
            .contains(&(&b"Set-Cookie"[..], &b"session=abc123; path=/; HttpOnly"[..]))
    );
    assert!(
        head.headers
            .iter()
            .any(|(n, v)| *n == b"X-Powered-By" && v.starts_with(b"PHP/8."))
    );
    assert_eq!(body, b"hello from php-fpm\n");
}

fn php_fpm_large_stdout(bytes: &[u8]) {
    let reply = summarize(&replay_client(bytes, true));
    assert_eq!(
        reply.violations,
        [Error::UnterminatedStream {
            request_id: 1,
            record_type: RecordType::STDOUT
        }]
    );
    assert_eq!(reply.end, Some((0, ProtocolStatus::REQUEST_COMPLETE)));
    // FCGI-3.3-4: more than one record's worth, so several STDOUT records.
    assert!(
        reply.stdout_records >= 3,
        "{} records",
        reply.stdout_records
    );
    let (head, body) = cgi_head(&reply.stdout);
    assert_eq!(head.content_type, Some(&b"text/plain;charset=UTF-8"[..]));
    assert_eq!(body.len(), 80_000);
    assert_eq!(body, "0123456789abcdef".repeat(5000).as_bytes());
    // The biggest record is close to the 65535-byte limit.
    let largest = headers(bytes)
        .iter()
        .map(|h| h.content_length)
        .max()
        .unwrap_or(0);
    assert!(largest > 60_000, "largest record {largest}");
}

fn php_fpm_stderr(bytes: &[u8]) {
    let reply = summarize(&replay_client(bytes, true));
    let stdout = Error::UnterminatedStream {
        request_id: 1,
        record_type: RecordType::STDOUT,
    };
    let stderr = Error::UnterminatedStream {
        request_id: 1,
        record_type: RecordType::STDERR,
    };
    // Neither stream is terminated: both are reported, in this order.
    assert_eq!(reply.violations, [stdout, stderr]);
    assert_eq!(stderr.clause(), "FCGI-3.3-16");
    assert_eq!(
        reply.stderr,
        b"PHP message: portico fixture: written to stderr"
    );
    assert!(!reply.stderr_ended);
    assert_eq!(reply.end, Some((0, ProtocolStatus::REQUEST_COMPLETE)));
    let (_, body) = cgi_head(&reply.stdout);
    assert_eq!(body, b"logged\n");
    // FCGI-B-3: STDERR came first, before any STDOUT.
    assert_eq!(types(&headers(bytes))[0], RecordType::STDERR);
    // Strict decoding stops at the first violation.
    assert_eq!(replay_client(bytes, false).error, Some(stdout));
}

fn php_fpm_post_echo(bytes: &[u8]) {
    let reply = summarize(&replay_client(bytes, true));
    assert_eq!(reply.end, Some((0, ProtocolStatus::REQUEST_COMPLETE)));
    assert_eq!(reply.violations.len(), 1);
    let (head, body) = cgi_head(&reply.stdout);
    assert_eq!(head.content_type, Some(&b"text/plain;charset=UTF-8"[..]));
    assert_eq!(body, [&b"POST "[..], FORM].concat());
}

fn php_fpm_get_values_result(bytes: &[u8]) {
    let run = replay_client(bytes, false);
    assert_eq!(run.error, None);
    // Asked for FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS; php-fpm 8.2 knows
    // only the last (FCGI-4.1-4: unknown names are left out).
    assert_eq!(
        run.events,
        [ClientEvent::GetValuesResult {
            pairs: vec![(b"FCGI_MPXS_CONNS".to_vec(), b"0".to_vec())]
        }]
    );
    let headers = headers(bytes);
    assert_eq!(types(&headers), [RecordType::GET_VALUES_RESULT]);
    assert_eq!(headers[0].request_id, 0);
}

// ------------------------------------------------------------ damaged FastCGI copies

fn invalid_version(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, Some(Error::UnsupportedVersion(2)));
    assert_eq!(Error::UnsupportedVersion(2).clause(), "FCGI-3.3-3");
    assert!(run.events.is_empty());
    assert!(run.sent.is_empty());
}

fn invalid_begin_request_short(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, Some(Error::BeginRequestBodyLength(5)));
    assert_eq!(Error::BeginRequestBodyLength(5).clause(), "FCGI-5.1-2");
    assert!(run.events.is_empty());
}

fn invalid_request_id_zero(bytes: &[u8]) {
    let run = replay_server(bytes);
    let error = Error::WrongRequestId {
        record_type: RecordType::PARAMS,
        request_id: 0,
    };
    assert_eq!(run.error, Some(error));
    assert_eq!(error.clause(), "FCGI-A-2");
    assert_eq!(
        run.events,
        [server::Event::BeginRequest {
            id: 1,
            role: Role::RESPONDER,
            keep_conn: false
        }]
    );
}

fn invalid_params_length_past_end(bytes: &[u8]) {
    let run = replay_server(bytes);
    assert_eq!(run.error, Some(Error::MalformedNameValue));
    assert_eq!(Error::MalformedNameValue.clause(), "FCGI-3.4-1");
    // The BEGIN_REQUEST went through; the PARAMS stream never became an event.
    assert_eq!(run.events.len(), 1);
    assert!(matches!(
        run.events[0],
        server::Event::BeginRequest { id: 1, .. }
    ));
}

fn invalid_truncated_record(bytes: &[u8]) {
    // A sans-IO decoder cannot tell a cut stream from a slow one: no error, but the
    // request never completes, and the tail stays a partial record.
    let run = replay_server(bytes);
    assert_eq!(run.error, None);
    let [req] = requests(&run.events).try_into().expect("one request");
    assert_eq!(param(&req, "CONTENT_LENGTH"), Some("27"));
    assert!(req.stdin.is_empty(), "no STDIN event from a partial record");
    assert!(!req.stdin_ended);
    assert!(run.sent.is_empty(), "nothing to answer yet");
    let mut records = Records::new(bytes);
    let complete = records.by_ref().count();
    assert_eq!(complete, 3);
    let tail = records.rest();
    assert!(!tail.is_empty());
    assert_eq!(parse_record(tail), Ok(Status::Partial));
    let Ok(Status::Complete((header, _))) = portico_protocols::fastcgi::parse_header(tail) else {
        panic!("the cut falls after the STDIN header");
    };
    assert_eq!(header.record_type, RecordType::STDIN);
    assert_eq!(tail.len(), 8 + usize::from(header.content_length) / 2);
}

fn invalid_php_fpm_end_request_short(bytes: &[u8]) {
    let strict = replay_client(bytes, false);
    assert_eq!(strict.error, Some(Error::EndRequestBodyLength(5)));
    assert_eq!(Error::EndRequestBodyLength(5).clause(), "FCGI-5.5-2");
    // The STDOUT data before it was delivered; no EndRequest event even when lenient.
    let reply = summarize(&replay_client(bytes, true));
    assert_eq!(reply.violations, [Error::EndRequestBodyLength(5)]);
    assert_eq!(reply.end, None);
    assert!(reply.stdout.ends_with(b"hello from php-fpm\n"));
}

// ------------------------------------------------------------ SCGI

fn scgi_nginx_get(bytes: &[u8]) {
    let (req, used) = replay_scgi(bytes).expect("valid request");
    // SCGI-RW-1: nginx writes CONTENT_LENGTH first itself, `0` without a body.
    assert_eq!(req.headers[0], (&b"CONTENT_LENGTH"[..], &b"0"[..]));
    assert_eq!(req.content_length, 0);
    assert_eq!(used, bytes.len());
    assert!(req.has_scgi_header());
    assert_eq!(req.get(b"SCGI"), Some(&b"1"[..]));
    assert_eq!(req.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    assert_eq!(req.get(b"REQUEST_URI"), Some(&b"/scgi/hello?q=scgi"[..]));
    assert_eq!(req.get(b"QUERY_STRING"), Some(&b"q=scgi"[..]));
    assert_eq!(req.get(b"DOCUMENT_URI"), Some(&b"/scgi/hello"[..]));
    assert_eq!(req.get(b"HTTP_USER_AGENT"), Some(&b"portico-capture"[..]));
    // SCGI-RW-2: empty CONTENT_TYPE is sent; no SCRIPT_NAME, GATEWAY_INTERFACE.
    assert_eq!(req.get(b"CONTENT_TYPE"), Some(&b""[..]));
    assert_eq!(req.get(b"SCRIPT_NAME"), None);
    assert_eq!(req.get(b"GATEWAY_INTERFACE"), None);
    assert_eq!(req.get(b"SERVER_SOFTWARE"), None);
}

fn scgi_nginx_post(bytes: &[u8]) {
    let (req, used) = replay_scgi(bytes).expect("valid request");
    assert_eq!(req.headers[0], (&b"CONTENT_LENGTH"[..], &b"21"[..]));
    assert_eq!(req.content_length, 21);
    assert_eq!(req.get(b"REQUEST_METHOD"), Some(&b"POST"[..]));
    assert_eq!(
        req.get(b"CONTENT_TYPE"),
        Some(&b"application/x-www-form-urlencoded"[..])
    );
    // SCGI-3-10, SCGI-3-11: the body is exactly CONTENT_LENGTH bytes after the comma.
    assert_eq!(&bytes[used..], b"name=portico&via=scgi");
}

fn scgi_apache_get(bytes: &[u8]) {
    let (req, used) = replay_scgi(bytes).expect("valid request");
    // SCGI-RW-3: CONTENT_LENGTH first, then SCGI=1.
    assert_eq!(req.headers[0], (&b"CONTENT_LENGTH"[..], &b"0"[..]));
    assert_eq!(req.headers[1], (&b"SCGI"[..], &b"1"[..]));
    assert_eq!(used, bytes.len());
    assert_eq!(req.get(b"REQUEST_METHOD"), Some(&b"GET"[..]));
    assert_eq!(req.get(b"QUERY_STRING"), Some(&b"q=scgi"[..]));
    assert_eq!(req.get(b"REQUEST_URI"), Some(&b"/scgi/hello?q=scgi"[..]));
    assert_eq!(req.get(b"SCRIPT_NAME"), Some(&b"/scgi/hello"[..]));
    assert_eq!(req.get(b"GATEWAY_INTERFACE"), None);
    assert!(
        req.get(b"SCRIPT_FILENAME")
            .is_some_and(|s| s.starts_with(b"proxy:scgi://127.0.0.1:"))
    );
}

fn scgi_apache_post(bytes: &[u8]) {
    let (req, used) = replay_scgi(bytes).expect("valid request");
    assert_eq!(req.headers[0], (&b"CONTENT_LENGTH"[..], &b"21"[..]));
    assert_eq!(req.headers[1], (&b"SCGI"[..], &b"1"[..]));
    assert_eq!(req.content_length, 21);
    assert_eq!(req.get(b"REQUEST_METHOD"), Some(&b"POST"[..]));
    assert_eq!(&bytes[used..], b"name=portico&via=scgi");
}

fn scgi_invalid_length_not_digit(bytes: &[u8]) {
    let error = replay_scgi(bytes).expect_err("a non-digit in the length");
    assert_eq!(error, scgi::Error::InvalidLength);
    assert_eq!(error.clause(), "SCGI-4-5");
}

fn scgi_invalid_leading_zero(bytes: &[u8]) {
    let error = replay_scgi(bytes).expect_err("a leading zero");
    assert_eq!(error, scgi::Error::LeadingZero);
    assert_eq!(error.clause(), "SCGI-4-2");
}

fn scgi_invalid_missing_comma(bytes: &[u8]) {
    let error = replay_scgi(bytes).expect_err("no comma");
    assert_eq!(error, scgi::Error::MissingComma);
    assert_eq!(error.clause(), "SCGI-4-5");
}

// ------------------------------------------------------------ replay machinery

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures"))
}

fn load(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Cut points (strictly inside `0..len`, ascending) for every way a file is fed:
/// whole, byte by byte, then every single cut (small files) or random chunkings.
fn chunkings(len: usize) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new(), (1..len).collect()];
    if len <= EVERY_BOUNDARY_MAX {
        all.extend((1..len).map(|k| vec![k]));
    } else {
        // xorshift64*, seeded by the length: the same chunkings on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ len as u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for i in 0..RANDOM_CHUNKINGS {
            // Alternate tiny, medium and record-sized pieces.
            let max = [16_u64, 700, 70_000][i % 3];
            let mut cuts = Vec::new();
            let mut at = 0usize;
            loop {
                at += 1 + usize::try_from(next() % max).unwrap_or(0);
                if at >= len {
                    break;
                }
                cuts.push(at);
            }
            all.push(cuts);
        }
    }
    all
}

/// Describes a chunking in assertion messages without printing thousands of cuts.
fn describe(cuts: &[usize]) -> String {
    match cuts {
        [] => "whole".to_owned(),
        [k] => format!("cut at {k}"),
        _ => format!(
            "{} pieces, first cuts {:?}",
            cuts.len() + 1,
            &cuts[..cuts.len().min(4)]
        ),
    }
}

/// What the application side saw, and sent, for one way of feeding a capture.
#[derive(Debug, Default, PartialEq)]
struct ServerRun {
    events: Vec<server::Event>,
    error: Option<Error>,
    sent: Vec<u8>,
    wants_close: bool,
}

/// Replays a web server's bytes through [`server::Conn`] in every chunking; all must
/// agree. Returns the run of the whole file.
fn replay_server(bytes: &[u8]) -> ServerRun {
    let turns = turn_ends(bytes);
    let whole = run_server(bytes, &turns);
    for cuts in chunkings(bytes.len()) {
        let mut merged: Vec<usize> = cuts.iter().chain(&turns).copied().collect();
        merged.sort_unstable();
        merged.dedup();
        let run = run_server(bytes, &merged);
        assert_eq!(run, whole, "server replay, {}", describe(&cuts));
    }
    whole
}

/// Where the web server stopped to wait for a response: after each empty STDIN
/// record (a Responder's last input). A real server sends nothing more on the
/// connection until the response is in, so the replay answers there before
/// reading on (nginx reuses request ID 1 on a kept connection).
fn turn_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut records = Records::new(bytes);
    while let Some(record) = records.next() {
        if record.header.record_type == RecordType::STDIN && record.content.is_empty() {
            ends.push(records.consumed());
        }
    }
    ends.retain(|&e| e < bytes.len());
    ends
}

/// Feeds `bytes` cut at `cuts`, answering each request when its STDIN ends, as an
/// application would.
fn run_server(bytes: &[u8], cuts: &[usize]) -> ServerRun {
    let mut conn = server::Conn::default();
    let mut run = ServerRun::default();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let result = conn.handle_read(&bytes[start..end]);
        start = end;
        while let Some(event) = conn.poll_event() {
            if let (Ok(_), server::Event::StdinEnd { id }) = (&result, &event) {
                conn.write_stdout(*id, REPLY).expect("write_stdout");
                conn.end_request(*id, 0, ProtocolStatus::REQUEST_COMPLETE)
                    .expect("end_request");
            }
            run.events.push(event);
        }
        if let Err(e) = result {
            run.error = Some(e);
            break;
        }
    }
    conn.poll_transmit(&mut run.sent);
    run.wants_close = conn.wants_close();
    run
}

/// One request as the application saw it.
#[derive(Debug)]
struct Req {
    id: u16,
    role: Role,
    keep_conn: bool,
    params: ParamBlock,
    stdin: Vec<u8>,
    stdin_ended: bool,
}

/// Groups events into requests, in order of their BEGIN_REQUEST.
fn requests(events: &[server::Event]) -> Vec<Req> {
    let mut reqs: Vec<Req> = Vec::new();
    for event in events {
        if let server::Event::BeginRequest {
            id,
            role,
            keep_conn,
        } = *event
        {
            reqs.push(Req {
                id,
                role,
                keep_conn,
                params: ParamBlock::default(),
                stdin: Vec::new(),
                stdin_ended: false,
            });
            continue;
        }
        let req = reqs.last_mut().expect("an event before any BEGIN_REQUEST");
        match event {
            server::Event::Params { id, params } => {
                assert_eq!(*id, req.id);
                req.params = params.clone();
            }
            server::Event::Stdin { id, data } => {
                assert_eq!(*id, req.id);
                req.stdin.extend_from_slice(data);
            }
            server::Event::StdinEnd { id } => {
                assert_eq!(*id, req.id);
                req.stdin_ended = true;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    reqs
}

/// A parameter's value as text.
fn param<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.params
        .get(name.as_bytes())
        .map(|v| std::str::from_utf8(v).expect("UTF-8 parameter value"))
}

/// Every record header of a capture (whole records only).
fn headers(bytes: &[u8]) -> Vec<Header> {
    Records::new(bytes).map(|r| r.header).collect()
}

fn types(headers: &[Header]) -> Vec<RecordType> {
    headers.iter().map(|h| h.record_type).collect()
}

/// The content of each non-empty PARAMS record.
fn params_record_contents(bytes: &[u8]) -> Vec<Vec<u8>> {
    Records::new(bytes)
        .filter(|r| r.header.record_type == RecordType::PARAMS && !r.content.is_empty())
        .map(|r| r.content.to_vec())
        .collect()
}

/// The replay application answered request `id` completely, END_REQUEST last.
fn assert_ends_with_end_request(sent: &[u8], id: u16) {
    let records: Vec<_> = Records::new(sent).collect();
    let last = records.last().expect("a response");
    assert_eq!(last.header.record_type, RecordType::END_REQUEST);
    assert_eq!(last.header.request_id, id);
    assert_eq!(last.content, [0, 0, 0, 0, 0, 0, 0, 0]);
}

/// What the web-server side decoded for one way of feeding a capture.
#[derive(Debug, Default, PartialEq)]
struct ClientRun {
    events: Vec<ClientEvent>,
    error: Option<Error>,
}

/// Replays an application's bytes through [`client::Conn`] (request 1 announced,
/// strict IDs) in every chunking; all must agree, and with the zero-copy entry
/// point. Returns the run of the whole file.
fn replay_client(bytes: &[u8], lenient: bool) -> ClientRun {
    let config = client::Config {
        lenient,
        observe_records: false,
        strict_ids: true,
    };
    let whole = run_client(bytes, &[], config);
    for cuts in chunkings(bytes.len()) {
        let run = run_client(bytes, &cuts, config);
        assert_eq!(run, whole, "client replay, {}", describe(&cuts));
    }
    let mut conn = client::Conn::new(config);
    conn.begin_request(1);
    let mut borrowed = ClientRun::default();
    let result = conn.handle_read_with(bytes, |e: ClientEventRef<'_>| {
        borrowed.events.push(e.to_owned_event());
    });
    borrowed.error = result.err();
    assert_eq!(borrowed, whole, "handle_read_with");
    whole
}

fn run_client(bytes: &[u8], cuts: &[usize], config: client::Config) -> ClientRun {
    let mut conn = client::Conn::new(config);
    conn.begin_request(1);
    let mut run = ClientRun::default();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let result = conn.handle_read(&bytes[start..end]);
        start = end;
        run.events.extend(std::iter::from_fn(|| conn.poll_event()));
        if let Err(e) = result {
            run.error = Some(e);
            break;
        }
    }
    run
}

/// A response as the web server saw it (request 1).
#[derive(Debug, Default)]
struct Reply {
    stdout: Vec<u8>,
    stdout_records: usize,
    stdout_ended: bool,
    stderr: Vec<u8>,
    stderr_ended: bool,
    end: Option<(u32, ProtocolStatus)>,
    violations: Vec<Error>,
}

fn summarize(run: &ClientRun) -> Reply {
    assert_eq!(run.error, None);
    let mut reply = Reply::default();
    for event in &run.events {
        match event {
            ClientEvent::Stdout { id: 1, data } => {
                reply.stdout.extend_from_slice(data);
                reply.stdout_records += 1;
            }
            ClientEvent::StdoutEnd { id: 1 } => reply.stdout_ended = true,
            ClientEvent::Stderr { id: 1, data } => reply.stderr.extend_from_slice(data),
            ClientEvent::StderrEnd { id: 1 } => reply.stderr_ended = true,
            ClientEvent::EndRequest {
                id: 1,
                app_status,
                protocol_status,
            } => reply.end = Some((*app_status, *protocol_status)),
            ClientEvent::Violation(e) => reply.violations.push(*e),
            other => panic!("unexpected event {other:?}"),
        }
    }
    reply
}

/// Splits reassembled STDOUT into its CGI head and body (CGI-6.2-1).
fn cgi_head(stdout: &[u8]) -> (response::ResponseHead<'_>, &[u8]) {
    match response::parse_head(stdout, false, &response::Limits::default()) {
        Ok(Status::Complete((head, used))) => (head, &stdout[used..]),
        other => panic!("CGI response head: {other:?}"),
    }
}

/// Parses an SCGI capture from every prefix, as a server reading it piecemeal would:
/// each prefix is `Partial` until the result of the whole file is reached, and never
/// gives a different result. Returns the request and the bytes it used.
fn replay_scgi(bytes: &[u8]) -> Result<(scgi::Request<'_>, usize), scgi::Error> {
    let limits = scgi::Limits::default();
    let whole = scgi::parse_request(bytes, &limits);
    for k in 0..bytes.len() {
        let prefix = scgi::parse_request(&bytes[..k], &limits);
        match (&whole, &prefix) {
            (_, Ok(Status::Partial)) => {}
            (Ok(Status::Complete((_, used))), Ok(Status::Complete(_))) => {
                assert!(k >= *used, "complete before its end at {k}");
                assert_eq!(prefix, whole, "prefix of {k} bytes");
            }
            (Err(_), Err(_)) => assert_eq!(prefix, whole, "prefix of {k} bytes"),
            _ => panic!("prefix of {k} bytes gave {prefix:?}, the whole file {whole:?}"),
        }
    }
    match whole? {
        Status::Complete(v) => Ok(v),
        Status::Partial => panic!("the whole capture is still a partial request"),
    }
}
