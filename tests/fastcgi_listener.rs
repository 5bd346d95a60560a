//! The FastCGI listener driven by the `protocols` client machine over a real socket:
//! requests, keep-alive, 100 requests multiplexed on one connection, GET_VALUES, unknown
//! types, aborts, malformed records; and the SCGI listener.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use proto::fastcgi::client::{ClientEvent, encode_abort, encode_get_values};
use proto::fastcgi::record::{RecordType, encode_record};
use support::{FcgiResult, Portico, fcgi_collect, fcgi_params, fcgi_request};

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

/// Sends one GET (no body, connection not kept) as request `id` and collects its answer.
fn get_once(s: &mut TcpStream, id: u16, path: &str) -> HashMap<u16, FcgiResult> {
    let mut out = Vec::new();
    fcgi_request(id, false, &fcgi_params("GET", path, None), b"", &mut out);
    s.write_all(&out).unwrap();
    fcgi_collect(s, &[id]).0
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
    let res = get_once(&mut s, 1, "/echo/a?b=c");
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
    let res = get_once(&mut s, 4, "/echo/after");
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

const CGI_CONFIG: &str = r#"
[server]
access_log = "off"
[fastcgi]
max_reqs = 3
[[listen]]
protocol = "fastcgi"
address = "127.0.0.1:0"
[[route]]
prefix = "/cgi-bin/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "10s" }
[[route]]
prefix = "/dropin/"
cgi = { root = "{repo}/fixtures/cgi", timeout = "10s", script_filename = true }
"#;

fn encode_role(
    id: u16,
    role: proto::fastcgi::Role,
    params: &[(Vec<u8>, Vec<u8>)],
    stdin: Option<&[u8]>,
    data: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    let pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    proto::fastcgi::client::Request {
        id,
        role,
        keep_conn: true,
        params: &pairs,
        stdin,
        data,
    }
    .encode(out);
}

#[test]
fn fcgi_6_3_authorizer_role_passes_the_answer_through() {
    let p = Portico::start(CGI_CONFIG);
    let fa = support::addresses(&p, 1)[0].clone();
    let mut s = connect(&fa);
    let mut params = fcgi_params("GET", "/cgi-bin/authz.cgi", None);
    params.retain(|(n, _)| n != b"CONTENT_LENGTH");
    let mut allowed = params.clone();
    allowed.push((b"HTTP_X_TOKEN".to_vec(), b"letmein".to_vec()));
    let mut out = Vec::new();
    // FCGI-6.3-3: an Authorizer gets no STDIN stream here.
    encode_role(
        1,
        proto::fastcgi::Role::AUTHORIZER,
        &allowed,
        None,
        None,
        &mut out,
    );
    encode_role(
        2,
        proto::fastcgi::Role::AUTHORIZER,
        &params,
        None,
        None,
        &mut out,
    );
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[1, 2]);
    let ok = res[&1].text();
    assert!(
        ok.starts_with("Status: 200 OK\r\n") && ok.contains("Variable-AUTH_USER: alice\r\n"),
        "{ok}"
    );
    let no = res[&2].text();
    assert!(
        no.starts_with("Status: 403 Forbidden\r\n") && no.ends_with("denied\n"),
        "{no}"
    );
}

#[test]
fn fcgi_6_4_filter_role_gets_the_data_file() {
    let p = Portico::start(CGI_CONFIG);
    let fa = support::addresses(&p, 1)[0].clone();
    let mut s = connect(&fa);
    let data = b"filter me please";
    let mut params = fcgi_params("GET", "/cgi-bin/filter.cgi", Some(0));
    params.push((b"FCGI_DATA_LAST_MOD".to_vec(), b"1700000000".to_vec()));
    params.push((
        b"FCGI_DATA_LENGTH".to_vec(),
        data.len().to_string().into_bytes(),
    ));
    let mut out = Vec::new();
    encode_role(
        5,
        proto::fastcgi::Role::FILTER,
        &params,
        Some(b""),
        Some(data),
        &mut out,
    );
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[5]);
    let t = res[&5].text();
    assert!(t.ends_with("\r\n\r\nlength=16\nFILTER ME PLEASE"), "{t}");
    assert_eq!(res[&5].end, Some((0, 0)));
}

#[test]
fn fcgi_5_5_6_overloaded_past_max_reqs() {
    let p = Portico::start(CGI_CONFIG);
    let fa = support::addresses(&p, 1)[0].clone();
    let mut s = connect(&fa);
    let mut out = Vec::new();
    // Three slow requests hold the listener's max_reqs = 3; the fourth is refused.
    for id in 1..=3u16 {
        fcgi_request(
            id,
            true,
            &fcgi_params("POST", "/cgi-bin/md5.cgi", Some(10)),
            b"",
            &mut out,
        );
    }
    // (their STDIN never completes, so they stay in flight)
    let mut cut = Vec::new();
    for rec in proto::fastcgi::Records::new(&out) {
        // drop the empty STDIN records so the bodies stay open
        if !(rec.header.record_type == RecordType::STDIN && rec.content.is_empty()) {
            encode_record(
                rec.header.record_type,
                rec.header.request_id,
                rec.content,
                &mut cut,
            );
        }
    }
    fcgi_request(
        4,
        true,
        &fcgi_params("GET", "/cgi-bin/env.cgi", None),
        b"",
        &mut cut,
    );
    s.write_all(&cut).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[4]);
    assert_eq!(
        res[&4].end,
        Some((0, proto::fastcgi::ProtocolStatus::OVERLOADED.0))
    );
    assert!(res[&4].stdout.is_empty());
}

#[test]
fn fcgi_t_slow_request_does_not_stall_others() {
    let p = Portico::start(CGI_CONFIG);
    let fa = support::addresses(&p, 1)[0].clone();
    let mut s = connect(&fa);
    let mut out = Vec::new();
    // Request 1: a 30 MB response. Request 2: an upload that never finishes.
    fcgi_request(
        1,
        true,
        &fcgi_params("GET", "/cgi-bin/big.cgi?30000000", None),
        b"",
        &mut out,
    );
    let params = fcgi_params("POST", "/cgi-bin/md5.cgi", Some(1000));
    let pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    proto::fastcgi::client::encode_begin_request(
        2,
        proto::fastcgi::Role::RESPONDER,
        proto::fastcgi::KEEP_CONN,
        &mut out,
    );
    proto::fastcgi::client::encode_params(2, pairs.iter().copied(), &mut out);
    proto::fastcgi::client::encode_stdin(2, b"only ten b", &mut out);
    // Request 3: small, sent last, must not wait for 1 to finish nor for 2's body.
    fcgi_request(
        3,
        true,
        &fcgi_params("GET", "/cgi-bin/env.cgi", None),
        b"",
        &mut out,
    );
    s.write_all(&out).unwrap();
    let mut conn = proto::fastcgi::client::Conn::new(proto::fastcgi::client::Config::default());
    let mut buf = vec![0u8; 65536];
    let mut big = 0usize;
    let mut order = Vec::new();
    while !order.contains(&1) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        conn.handle_read(&buf[..n]).unwrap();
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientEvent::Stdout { id: 1, data } => big += data.len(),
                ClientEvent::EndRequest { id, .. } => order.push(id),
                _ => {}
            }
        }
    }
    assert_eq!(
        order.first(),
        Some(&3),
        "small request answered first: {order:?}"
    );
    assert!(big >= 30_000_000);
    assert!(
        !order.contains(&2),
        "the unfinished upload is still pending"
    );
}

#[test]
fn fcgi_rw_script_filename_drop_in_mode_stays_inside_root() {
    let p = Portico::start(CGI_CONFIG);
    let fa = support::addresses(&p, 1)[0].clone();
    let root = support::repo().join("fixtures/cgi");
    let mut s = connect(&fa);
    let mut inside = fcgi_params("GET", "/dropin/anything", None);
    inside.push((
        b"SCRIPT_FILENAME".to_vec(),
        root.join("env.cgi").display().to_string().into_bytes(),
    ));
    let mut outside = fcgi_params("GET", "/dropin/anything", None);
    outside.push((b"SCRIPT_FILENAME".to_vec(), b"/bin/sh".to_vec()));
    let mut out = Vec::new();
    fcgi_request(1, true, &inside, b"", &mut out);
    fcgi_request(2, true, &outside, b"", &mut out);
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[1, 2]);
    assert!(
        res[&1].text().starts_with("Status: 200 OK\r\n"),
        "{}",
        res[&1].text()
    );
    assert!(res[&1].text().contains("GATEWAY_INTERFACE=CGI/1.1"));
    let t = res[&2].text();
    assert!(
        t.starts_with("Status: 403") || t.starts_with("Status: 404"),
        "{t}"
    );
}

/// Malformed input from a web server: each case ends that connection with a log line
/// naming the clause; a connection beside it is undisturbed.
#[test]
fn fcgi_t_malformed_records_close_only_their_connection() {
    use proto::fastcgi::client::RawRecord;
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let begin = |id: u16| {
        let mut v = Vec::new();
        proto::fastcgi::client::encode_begin_request(
            id,
            proto::fastcgi::Role::RESPONDER,
            proto::fastcgi::KEEP_CONN,
            &mut v,
        );
        v
    };
    let raw = |t: u8, id: u16, content: &[u8]| {
        let mut v = Vec::new();
        RawRecord::new(RecordType(t), id, content).encode(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "FCGI-3.3-3",
            b"\x02\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec(),
        ),
        ("FCGI-5.1-2", raw(1, 1, b"\x00\x01\x00")),
        (
            "FCGI-A-1",
            [begin(1), raw(6, 1, b"stdout from the web server")].concat(),
        ),
        ("FCGI-AMB-14", [begin(1), begin(1)].concat()),
        (
            "FCGI-3.3-16",
            [begin(1), raw(4, 1, b""), raw(4, 1, b"\x01\x01ab")].concat(),
        ),
        (
            "FCGI-3.4-1",
            [begin(1), raw(4, 1, b"\x05\x05ab"), raw(4, 1, b"")].concat(),
        ),
        ("FCGI-A-2", raw(1, 0, b"\x00\x01\x01\x00\x00\x00\x00\x00")),
    ];
    for (clause, bytes) in cases {
        let mut good = connect(&fa);
        let mut bad = connect(&fa);
        bad.write_all(&bytes).unwrap();
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        assert!(
            p.wait_log(clause, Duration::from_secs(5)),
            "{clause}: {}",
            p.log()
        );
        let mut out = Vec::new();
        fcgi_request(
            9,
            false,
            &fcgi_params("GET", "/echo/ok", None),
            b"",
            &mut out,
        );
        good.write_all(&out).unwrap();
        let (res, _) = fcgi_collect(&mut good, &[9]);
        assert_eq!(
            res[&9].end,
            Some((0, 0)),
            "{clause}: the other connection noticed"
        );
    }
}

#[test]
fn fcgi_t_14_records_for_inactive_ids_are_ignored_and_unknown_role_refused() {
    let p = Portico::start(CONFIG);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    proto::fastcgi::client::encode_stdin(42, b"stray", &mut out);
    encode_abort(43, &mut out);
    proto::fastcgi::client::encode_begin_request(
        5,
        proto::fastcgi::Role(99),
        proto::fastcgi::KEEP_CONN,
        &mut out,
    );
    fcgi_request(
        6,
        true,
        &fcgi_params("GET", "/echo/after-stray", None),
        b"",
        &mut out,
    );
    // FCGI-T-7: GET_VALUES in the middle of a request.
    encode_get_values(&[b"FCGI_MPXS_CONNS"], &mut out);
    s.write_all(&out).unwrap();
    let (res, others) = fcgi_collect(&mut s, &[5, 6]);
    assert_eq!(
        res[&5].end,
        Some((0, proto::fastcgi::ProtocolStatus::UNKNOWN_ROLE.0))
    );
    assert_eq!(res[&6].end, Some((0, 0)));
    assert!(res[&6].text().contains("GET /echo/after-stray\n"));
    assert!(
        others
            .iter()
            .any(|e| matches!(e, ClientEvent::GetValuesResult { .. })),
        "{others:?}"
    );
}

#[test]
fn fcgi_3_2_2_web_server_addrs_limits_peers() {
    let p = Portico::start_full(
        CONFIG,
        &[],
        &[("FCGI_WEB_SERVER_ADDRS", "10.9.9.9, 10.9.9.10")],
    );
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    let mut out = Vec::new();
    fcgi_request(1, false, &fcgi_params("GET", "/echo", None), b"", &mut out);
    let _ = s.write_all(&out);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a peer not in the list got an answer");
    assert!(p.wait_log("not in FCGI_WEB_SERVER_ADDRS", Duration::from_secs(5)));
    drop(p);
    let p = Portico::start_full(CONFIG, &[], &[("FCGI_WEB_SERVER_ADDRS", "127.0.0.1")]);
    let (fa, _) = addrs(&p);
    let mut s = connect(&fa);
    s.write_all(&out).unwrap();
    let (res, _) = fcgi_collect(&mut s, &[1]);
    assert_eq!(res[&1].end, Some((0, 0)));
}

#[test]
fn fcgi_6_2_5_script_stderr_forwarded_when_asked() {
    let p =
        Portico::start(&CGI_CONFIG.replace("[fastcgi]\nmax_reqs = 3", "[fastcgi]\nstderr = true"));
    let fa = support::addresses(&p, 1)[0].clone();
    let mut s = connect(&fa);
    let res = get_once(&mut s, 1, "/cgi-bin/stderr.cgi?fwd7");
    let err = String::from_utf8_lossy(&res[&1].stderr).into_owned();
    assert!(
        err.contains("first line fwd7"),
        "{}",
        &err[..err.len().min(200)]
    );
    assert!(res[&1].text().ends_with("done\n"));
}

#[test]
fn fcgi_6_2_5_stderr_of_a_script_that_dies_precedes_the_error_answer() {
    let p =
        Portico::start(&CGI_CONFIG.replace("[fastcgi]\nmax_reqs = 3", "[fastcgi]\nstderr = true"));
    let fa = support::addresses(&p, 1)[0].clone();
    // The script writes to stderr and exits before any head: its line must go out as
    // FCGI_STDERR before END_REQUEST every time, not only when the race goes well.
    for i in 0..30 {
        let mut s = connect(&fa);
        let res = get_once(&mut s, 1, "/cgi-bin/die.cgi");
        let err = String::from_utf8_lossy(&res[&1].stderr).into_owned();
        assert!(err.contains("about to die"), "request {i}: stderr {err:?}");
        assert!(
            res[&1].text().starts_with("Status: 502"),
            "request {i}: {}",
            res[&1].text()
        );
    }
}

#[test]
fn finished_requests_release_their_slot_and_idle_connections_close() {
    let p =
        Portico::start(&CONFIG.replace("max_reqs = 500", "max_reqs = 2\nidle_timeout = \"1s\""));
    let (fa, _) = addrs(&p);
    // Five kept connections, one finished request each: max_reqs = 2 counts requests in
    // flight, not connections that once had one.
    let mut conns = Vec::new();
    for i in 1..=5u16 {
        let mut s = connect(&fa);
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
        assert_eq!(res[&i].end, Some((0, 0)), "request {i}");
        conns.push(s);
    }
    // Each kept connection is now idle and closed after idle_timeout.
    let start = std::time::Instant::now();
    for mut s in conns {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
}
