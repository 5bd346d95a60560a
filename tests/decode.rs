//! `portico decode`: the real binary on the captured fixtures (fixtures/records,
//! fixtures/scgi), on damaged captures and on inputs built with the protocols encoders;
//! asserts the printed lines and the exit status (0 clean, 1 violations, 2 I/O error).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use proto::fastcgi::client::{Request, encode_get_values};
use proto::fastcgi::nv::{MAX_CONNS, MPXS_CONNS};
use proto::fastcgi::{RecordType, Role, encode_record};

/// Runs `portico decode ARGS…`; returns (stdout, exit code).
fn decode(args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("decode")
        .args(args)
        .output()
        .expect("run portico decode");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn fixture(rel: &str) -> String {
    support::repo()
        .join("fixtures")
        .join(rel)
        .display()
        .to_string()
}

fn decode_fixture(rel: &str) -> (String, i32) {
    let path = fixture(rel);
    assert!(Path::new(&path).exists(), "missing fixture {path}");
    decode(&[&path])
}

fn decode_bytes(bytes: &[u8], args: &[&str]) -> (String, i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.bin");
    std::fs::write(&path, bytes).expect("write");
    let mut all = vec![path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    decode(&all)
}

fn violations(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("!! ")).collect()
}

/// nginx's GET: every record and every param, no violation. Covers FCGI-3.3-2, 5.1-2,
/// 3.4-1 (the framing the decoder follows).
#[test]
fn fcgi_3_3_2_nginx_get_decoded() {
    let (text, code) = decode_fixture("records/nginx-get-params.bin");
    assert!(
        text.starts_with("FastCGI, web server -> application\n"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("@0      v1 BEGIN_REQUEST     id=1   content=8     padding=0"),
        "{text}"
    );
    assert_eq!(
        lines[2], "    role=RESPONDER flags=0x00 (KEEP_CONN clear)",
        "{text}"
    );
    assert!(
        lines[3].contains(" PARAMS ") && lines[3].contains("id=1"),
        "{text}"
    );
    for want in [
        "    REQUEST_METHOD=GET",
        "    QUERY_STRING=a=1&b=two%20words",
        "    CONTENT_LENGTH=",
    ] {
        assert!(lines.contains(&want), "{want}\n{text}");
    }
    assert!(text.contains(" STDIN             id=1"), "{text}");
    assert!(text.contains("    (end of stream)"), "{text}");
    assert!(violations(&text).is_empty(), "{text}");
    assert!(text.ends_with(" bytes, 0 violations\n"), "{text}");
    assert_eq!(code, 0);
}

/// libfcgi's cgi-fcgi cuts a 20 000-byte pair across three PARAMS records: the pair is
/// still printed whole. Covers FCGI-5.2-3.
#[test]
fn fcgi_5_2_3_pair_spanning_records() {
    let (text, code) = decode_fixture("records/cgi-fcgi-large-params.bin");
    assert!(
        text.contains("bytes of a pair continue in the next PARAMS record)"),
        "{text}"
    );
    assert!(text.contains("    HTTP_X_BIG="), "{text}");
    assert!(text.contains("… (20000 bytes)"), "{text}");
    assert_eq!(code, 0, "{text}");
}

/// nginx with KEEP_CONN: two requests with ID 1 on one connection are not duplicates.
#[test]
fn fcgi_amb_14_keep_conn_reuses_id() {
    let (text, code) = decode_fixture("records/nginx-keep-conn.bin");
    assert_eq!(text.matches(" BEGIN_REQUEST ").count(), 2, "{text}");
    assert!(text.contains("(KEEP_CONN set)"), "{text}");
    assert_eq!(code, 0, "{text}");
}

/// POST bodies: STDIN previews with byte counts.
#[test]
fn fcgi_6_2_4_stdin_preview() {
    let (text, code) = decode_fixture("records/nginx-post-stdin.bin");
    assert!(
        text.contains("    27 bytes: \"name=portico&lang=rust&n=42\""),
        "{text}"
    );
    assert_eq!(code, 0, "{text}");
}

/// php-fpm's reply (auto-detected as application side): STDOUT preview, END_REQUEST
/// fields, and the missing empty STDOUT record flagged. Covers FCGI-6.1-7, 5.5-2.
#[test]
fn fcgi_6_1_7_php_fpm_unterminated_stdout() {
    let (text, code) = decode_fixture("records/php-fpm-stdout-end.bin");
    assert!(
        text.starts_with("FastCGI, application -> web server\n"),
        "{text}"
    );
    assert!(text.contains(" STDOUT "), "{text}");
    assert!(text.contains("X-Portico: fixture\\r\\n"), "{text}");
    assert!(
        text.contains("    app_status=0 protocol_status=REQUEST_COMPLETE"),
        "{text}"
    );
    assert_eq!(
        violations(&text),
        ["!! FCGI-6.1-7: request 1 ended without the empty FCGI_STDOUT record"],
        "{text}"
    );
    assert_eq!(code, 1);
}

/// GET_VALUES_RESULT pairs. Covers FCGI-4.1-3.
#[test]
fn fcgi_4_1_3_get_values_result_pairs() {
    let (text, code) = decode_fixture("records/php-fpm-get-values-result.bin");
    assert!(text.contains(" GET_VALUES_RESULT id=0"), "{text}");
    assert!(text.contains("    FCGI_MPXS_CONNS=0"), "{text}");
    assert_eq!(code, 0, "{text}");
}

/// The damaged captures: each marked with its clause, and decoding goes on after it.
#[test]
fn fcgi_3_3_3_damaged_captures_marked() {
    for (file, clause) in [
        ("records/invalid-version.bin", "FCGI-3.3-3"),
        ("records/invalid-begin-request-short.bin", "FCGI-5.1-2"),
        ("records/invalid-request-id-zero.bin", "FCGI-A-2"),
        ("records/invalid-params-length-past-end.bin", "FCGI-3.4-1"),
        ("records/invalid-truncated-record.bin", "FCGI-3.3-2"),
        (
            "records/invalid-php-fpm-end-request-short.bin",
            "FCGI-5.5-2",
        ),
    ] {
        let (text, code) = decode_fixture(file);
        let v = violations(&text);
        assert!(
            v.iter().any(|l| l.starts_with(&format!("!! {clause}: "))),
            "{file}: {clause}\n{text}"
        );
        assert_eq!(code, 1, "{file}\n{text}");
    }
    // After the bad version byte the records are still decoded.
    let (text, _) = decode_fixture("records/invalid-version.bin");
    assert!(text.contains("@0      v2 BEGIN_REQUEST"), "{text}");
    assert!(text.contains("    REQUEST_METHOD=GET"), "{text}");
}

/// nginx's SCGI request: the header pairs and the body length. Covers SCGI-3-9, 3-10.
#[test]
fn scgi_3_10_nginx_post_decoded() {
    let (text, code) = decode_fixture("scgi/nginx-post.bin");
    assert!(
        text.starts_with("SCGI, web server -> application\n"),
        "{text}"
    );
    assert!(text.contains("    CONTENT_LENGTH=21\n"), "{text}");
    assert!(text.contains("    SCGI=1\n"), "{text}");
    assert!(text.contains("    REQUEST_METHOD=POST\n"), "{text}");
    assert!(
        text.contains("body: 21 of CONTENT_LENGTH 21 bytes: \"name=portico&via=scgi\""),
        "{text}"
    );
    assert_eq!(code, 0, "{text}");
}

/// Damaged SCGI captures: marked, and the headers still shown where the netstring can
/// still be framed. Covers SCGI-4-2, 4-5.
#[test]
fn scgi_4_5_damaged_netstrings_marked() {
    let (text, code) = decode_fixture("scgi/invalid-leading-zero.bin");
    assert!(text.contains("!! SCGI-4-2: "), "{text}");
    assert!(text.contains("    REQUEST_METHOD=GET"), "{text}");
    assert_eq!(code, 1);
    let (text, code) = decode_fixture("scgi/invalid-missing-comma.bin");
    assert!(text.contains("!! SCGI-4-5: "), "{text}");
    assert!(text.contains("    CONTENT_LENGTH=21"), "{text}");
    assert_eq!(code, 1);
    let (text, code) = decode_fixture("scgi/invalid-length-not-digit.bin");
    assert!(text.contains("!! SCGI-4-5: "), "{text}");
    assert!(text.contains("cannot frame the rest"), "{text}");
    assert_eq!(code, 1);
}

/// Built with the encoders: a request whose STDIN exceeds CONTENT_LENGTH, a stream
/// record after its end, an END_REQUEST from the wrong side, then a cut record — all
/// marked, in order. Covers FCGI-6.2-4, 3.3-16, A-1, 3.3-2.
#[test]
fn fcgi_3_3_16_built_damaged_stream() {
    let mut wire = Vec::new();
    encode_get_values(&[MAX_CONNS, MPXS_CONNS], &mut wire);
    Request {
        id: 3,
        role: Role::RESPONDER,
        keep_conn: true,
        params: &[
            (&b"CONTENT_LENGTH"[..], &b"2"[..]),
            (&b"REQUEST_METHOD"[..], &b"POST"[..]),
        ],
        stdin: Some(b"abcd"),
        data: None,
    }
    .encode(&mut wire);
    encode_record(RecordType::STDIN, 3, b"late", &mut wire);
    encode_record(RecordType::END_REQUEST, 3, &[0; 8], &mut wire);
    wire.extend_from_slice(b"\x01\x05\x00\x03\x00\x10\x00\x00abc");
    let (text, code) = decode_bytes(&wire, &["--direction", "ws"]);
    assert!(text.contains(" GET_VALUES        id=0"), "{text}");
    assert!(text.contains("    FCGI_MAX_CONNS="), "{text}");
    let v = violations(&text);
    assert_eq!(v.len(), 4, "{text}");
    assert!(
        v[0].starts_with("!! FCGI-6.2-4: STDIN has 4 bytes, CONTENT_LENGTH says 2"),
        "{text}"
    );
    assert!(v[1].starts_with("!! FCGI-3.3-16: "), "{text}");
    assert!(v[2].starts_with("!! FCGI-A-1: "), "{text}");
    assert!(v[3].starts_with("!! FCGI-3.3-2: "), "{text}");
    assert!(text.ends_with(" bytes, 4 violations\n"), "{text}");
    assert_eq!(code, 1);
}

/// Standard input, an SCGI reply (`--direction app`), and the explicit protocol.
#[test]
fn scgi_2_6_reply_from_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["decode", "-", "--protocol", "scgi", "--direction", "app"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n42")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("    Status: 200 OK\n"), "{text}");
    assert!(text.contains("    Content-Type: text/plain\n"), "{text}");
    assert!(
        text.contains("body: 2 bytes: \"42\" (CR LF line ends in the head)"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
}

/// An unreadable input is an I/O error: exit 2.
#[test]
fn missing_file_exits_2() {
    let (_, code) = decode(&["/nonexistent/portico-capture.bin"]);
    assert_eq!(code, 2);
}
