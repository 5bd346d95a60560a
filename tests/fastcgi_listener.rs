//! The FastCGI listener driven by the `protocols` client machine over a real socket:
//! requests, keep-alive, 100 requests multiplexed on one connection, GET_VALUES, unknown
//! types, aborts, malformed records; and the SCGI listener.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use proto::fastcgi::client::{ClientEvent, encode_abort, encode_get_values};
use proto::fastcgi::record::{RecordType, encode_record};
use support::{Portico, fcgi_collect, fcgi_params, fcgi_request};

const CONFIG: &str = r#"
[server]
access_log = "off"
[fastcgi]
max_conns = 50
max_reqs = 500
[[listen]]
protocol = "fastcgi"
address = "127.0.0.1:0"
[[listen]]
protocol = "scgi"
address = "127.0.0.1:0"
[[route]]
prefix = "/echo"
handler = "echo"
[[route]]
prefix = "/status"
handler = "status"
"#;

fn addrs(p: &Portico) -> (String, String) {
    // Listeners print in config order: fastcgi, then scgi.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while p.log().matches("portico: listening on ").count() < 2 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = p.log();
    let mut it = log
        .lines()
        .filter_map(|l| l.strip_prefix("portico: listening on "));
    let f = it.next().unwrap().to_string();
    let s = it.next().unwrap_or_else(|| panic!("{log}")).to_string();
    (f, s)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn fcgi_6_2_responder_get_and_post() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    fcgi_request(
        1,
        false,
        &fcgi_params("GET", "/echo/a?b=c", None),
        b"",
        &mut out,
    );
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[1]);
    let r = &res[&1];
    assert_eq!(r.end, Some((0, 0)));
    assert!(r.stdout_ended);
    let t = r.text();
    assert!(t.starts_with("Status: 200 OK\r\n"), "{t}");
    assert!(t.contains("\r\n\r\nGET /echo/a?b=c\n"), "{t}");
    assert!(t.contains("user-agent: test\n"), "{t}");
    // KEEP_CONN clear: the application closes the connection (FCGI-5.1-5).
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);

    let mut s = connect(&fa);
    let mut out = Vec::new();
    fcgi_request(
        7,
        false,
        &fcgi_params("POST", "/echo/post", Some(11)),
        b"hello world",
        &mut out,
    );
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[7]);
    assert!(
        res[&7].text().ends_with("\n\nhello world"),
        "{}",
        res[&7].text()
    );
}

#[test]
fn fcgi_5_1_4_keep_conn_serves_sequential_requests() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    for i in 1..=3u16 {
        let mut out = Vec::new();
        fcgi_request(
            i,
            true,
            &fcgi_params("GET", &format!("/echo/{i}"), None),
            b"",
            &mut out,
        );
        s.write_all(&out).unwrap();
        let (res, _) = fcgi_collect(&mut s, &[i]);
        assert!(res[&i].text().contains(&format!("GET /echo/{i}\n")));
    }
}

#[test]
fn fcgi_t_multiplexed_100_requests_no_cross_talk() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    let ids: Vec<u16> = (1..=100).collect();
    for &i in &ids {
        let body = format!("body-of-{i}-").repeat(i as usize * 10);
        fcgi_request(
            i,
            true,
            &fcgi_params("POST", &format!("/echo/req{i}"), Some(body.len())),
            body.as_bytes(),
            &mut out,
        );
    }
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &ids);
    for &i in &ids {
        let r = &res[&i];
        assert_eq!(r.end, Some((0, 0)), "request {i}");
        let t = r.text();
        let body = format!("body-of-{i}-").repeat(i as usize * 10);
        assert!(
            t.contains(&format!("\r\n\r\nPOST /echo/req{i}\n")),
            "request {i}: {t}"
        );
        assert!(t.ends_with(&format!("\n\n{body}")), "request {i}");
    }
}

#[test]
fn fcgi_4_1_get_values_answers_configured_limits() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    encode_get_values(
        &[
            b"FCGI_MAX_CONNS",
            b"FCGI_MAX_REQS",
            b"FCGI_MPXS_CONNS",
            b"FCGI_UNKNOWN_NAME",
        ],
        &mut out,
    );
    // A request after it, so the collector has something to wait for.
    fcgi_request(1, false, &fcgi_params("GET", "/echo", None), b"", &mut out);
    s.write_all(&out).unwrap();
    let (_, others) = fcgi_collect(&mut s, &[1]);
    let pairs = others
        .iter()
        .find_map(|e| match e {
            ClientEvent::GetValuesResult { pairs } => Some(pairs.clone()),
            _ => None,
        })
        .expect("GET_VALUES_RESULT");
    let get = |n: &[u8]| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get(b"FCGI_MAX_CONNS"), Some(b"50".to_vec()));
    assert_eq!(get(b"FCGI_MAX_REQS"), Some(b"500".to_vec()));
    assert_eq!(get(b"FCGI_MPXS_CONNS"), Some(b"1".to_vec()));
    assert_eq!(get(b"FCGI_UNKNOWN_NAME"), None);
}

#[test]
fn fcgi_4_2_unknown_management_type_answered() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    encode_record(RecordType(200), 0, b"", &mut out);
    fcgi_request(1, false, &fcgi_params("GET", "/echo", None), b"", &mut out);
    s.write_all(&out).unwrap();
    let (res, others) = fcgi_collect(&mut s, &[1]);
    assert!(
        others
            .iter()
            .any(|e| matches!(e, ClientEvent::UnknownType { record_type } if record_type.0 == 200)),
        "{others:?}"
    );
    assert_eq!(res[&1].end, Some((0, 0)));
}

#[test]
fn fcgi_5_4_2_abort_ends_the_request() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    let params = fcgi_params("POST", "/echo/slow", Some(100));
    let pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    proto::fastcgi::client::encode_begin_request(
        3,
        proto::fastcgi::Role::RESPONDER,
        proto::fastcgi::KEEP_CONN,
        &mut out,
    );
    proto::fastcgi::client::encode_params(3, pairs.iter().copied(), &mut out);
    proto::fastcgi::client::encode_stdin(3, b"only part of the body", &mut out);
    s.write_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Vec::new();
    encode_abort(3, &mut out);
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[3]);
    let (app, proto_status) = res[&3].end.expect("END_REQUEST after abort");
    assert_eq!(proto_status, 0, "REQUEST_COMPLETE");
    assert_ne!(app, 0);
    // The connection stays usable (KEEP_CONN).
    let mut out = Vec::new();
    fcgi_request(
        4,
        false,
        &fcgi_params("GET", "/echo/after", None),
        b"",
        &mut out,
    );
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[4]);
    assert_eq!(res[&4].end, Some((0, 0)));
}

#[test]
fn fcgi_3_3_bad_version_closes_only_that_connection() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut good = connect(&fa);
    let mut bad = connect(&fa);
    bad.write_all(b"\x02\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        .unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);
    assert!(p.wait_log("FCGI-", Duration::from_secs(5)), "{}", p.log());
    let mut out = Vec::new();
    fcgi_request(
        1,
        false,
        &fcgi_params("GET", "/echo/fine", None),
        b"",
        &mut out,
    );
    good.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut good, &[1]);
    assert_eq!(res[&1].end, Some((0, 0)));
}

#[test]
fn scgi_request_and_reply() {
    let p = Portico::start(CONFIG);
    let (_, sa) = addrs(&p);
    let mut s = connect(&sa);
    let mut out = Vec::new();
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/echo/scgi?x=1"),
        (b"QUERY_STRING", b"x=1"),
        (b"SCRIPT_NAME", b""),
        (b"HTTP_X_TEST", b"yes"),
    ];
    proto::scgi::encode_request(headers, 5, &mut out);
    out.extend_from_slice(b"abcde");
    s.write_all(&out).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let t = String::from_utf8_lossy(&resp);
    assert!(t.starts_with("Status: 200 OK\r\n"), "{t}");
    assert!(
        t.contains("POST /echo/scgi?x=1\n")
            && t.contains("x-test: yes\n")
            && t.ends_with("\n\nabcde"),
        "{t}"
    );
}

#[test]
fn scgi_malformed_netstring_gets_400() {
    let p = Portico::start(CONFIG);
    let (_, sa) = addrs(&p);
    let mut s = connect(&sa);
    s.write_all(b"12x:CONTENT_LENGTH\x000\x00,").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let t = String::from_utf8_lossy(&resp);
    assert!(t.starts_with("Status: 400 Bad Request\r\n"), "{t}");
    assert!(
        p.wait_log("malformed SCGI request (SCGI-", Duration::from_secs(5)),
        "{}",
        p.log()
    );
}
