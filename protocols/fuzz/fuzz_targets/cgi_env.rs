//! `cgi::env::parse_env` over an environment block: `NAME=value` entries split on NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::cgi::env::parse_env;

fuzz_target!(|data: &[u8]| {
    let vars = data.split(|&b| b == 0).filter_map(|entry| {
        let eq = entry.iter().position(|&b| b == b'=')?;
        Some((&entry[..eq], &entry[eq + 1..]))
    });
    match parse_env(vars) {
        Ok(req) => {
            assert!(!req.method.is_empty());
            assert_eq!(req.var(b"REQUEST_METHOD"), Some(req.method));
            for (name, _) in &req.headers {
                assert!(!name.is_empty());
            }
            for &(name, value) in &req.vars {
                let _ = req.var(name).map(|v| v.len() + value.len());
            }
            let _ = (req.content_length, req.server_port, req.path_info);
        }
        Err(e) => {
            let _ = e.clause();
        }
    }
});
