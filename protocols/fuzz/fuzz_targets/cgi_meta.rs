//! CGI meta-variable rules: `split_script` with a lookup derived from the input,
//! `path_translated`, `search_args`, `header_variables`, `http_variable_name`, `is_nph`.
//!
//! Input layout: `seed`, then fields separated by `0xFF`: raw path, query string,
//! document root, header lines (`name:value`, one per `\n`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_protocols::cgi::meta::{
    HeaderNamePolicy, HeaderOptions, Lookup, MAX_SEARCH_ARGS, SplitKind, header_variables,
    http_variable_name, is_nph, path_translated, search_args, split_script,
};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.split(|&b| b == 0xFF);
    let path = fields.next().unwrap_or_default();
    let query = fields.next().unwrap_or_default();
    let root = fields.next().unwrap_or_default();
    let header_blob = fields.next().unwrap_or_default();

    split(path, root, seed);
    search(query);
    headers(header_blob);
    let _ = is_nph(path);
});

fn lookup(seed: u8, prefix: &[u8]) -> Lookup {
    let h = prefix.iter().fold(u32::from(seed), |a, &b| {
        a.wrapping_mul(31).wrapping_add(u32::from(b))
    });
    match h % 5 {
        0 => Lookup::Script,
        1 if seed & 0x80 != 0 => Lookup::NotFound,
        _ => Lookup::Directory,
    }
}

fn split(path: &[u8], root: &[u8], seed: u8) {
    let mut last = None;
    let result = split_script(path, |prefix| {
        assert_eq!(prefix.first(), Some(&b'/'));
        assert!(!prefix.contains(&0) && !prefix.contains(&b'\r') && !prefix.contains(&b'\n'));
        assert!(
            !prefix.windows(2).any(|w| w == b"//"),
            "empty segment looked up"
        );
        let answer = lookup(seed, prefix);
        last = Some((prefix.to_vec(), answer));
        answer
    });
    let Ok(split) = result else {
        let _ = result.map_err(|e| e.clause());
        return;
    };
    assert!(split.script.is_empty() || split.script.first() == Some(&b'/'));
    assert!(split.path_info.is_empty() || split.path_info.first() == Some(&b'/'));
    assert!(!split.script.contains(&0) && !split.path_info.contains(&0));
    match split.kind {
        SplitKind::Script => {
            assert_eq!(last, Some((split.script.clone(), Lookup::Script)));
        }
        SplitKind::Directory => assert!(split.path_info.is_empty()),
    }
    // The split never loses or adds a segment.
    let segments = path.iter().filter(|&&b| b == b'/').count();
    let got = split
        .script
        .iter()
        .chain(&split.path_info)
        .filter(|&&b| b == b'/')
        .count();
    assert_eq!(got, segments);

    for info in [&split.path_info[..], path] {
        if let Some(t) = path_translated(root, info) {
            assert!(t.ends_with(info));
            assert!(t.starts_with(root.strip_suffix(b"/").unwrap_or(root)));
            // CGI-9.8-2: the extra path never climbs out of the root.
            assert!(!info.split(|&b| b == b'/').any(|s| s == b".." || s == b"."));
            assert!(!t.contains(&0));
        }
    }
}

fn search(query: &[u8]) {
    if let Some(args) = search_args(query) {
        assert!(!query.contains(&b'='));
        assert!(!args.is_empty() && args.len() <= MAX_SEARCH_ARGS);
        for arg in &args {
            assert!(!arg.is_empty());
            assert!(!arg.contains(&0));
            assert_ne!(arg.first(), Some(&b'-'));
        }
    }
}

fn headers(blob: &[u8]) {
    let lines: Vec<(&str, &[u8])> = blob
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, &line[colon + 1..]))
        })
        .collect();
    for policy in [
        HeaderNamePolicy::Strict,
        HeaderNamePolicy::MapAndRejectCollisions,
    ] {
        for &(name, _) in &lines {
            if let Some(var) = http_variable_name(name, policy) {
                assert!(var.starts_with("HTTP_") && var.len() > 5);
                assert!(
                    var.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                    "{var:?}"
                );
                assert_ne!(var, "HTTP_PROXY");
            }
        }
        for pass_authorization in [false, true] {
            let opts = HeaderOptions {
                policy,
                pass_authorization,
            };
            let Ok(vars) = header_variables(lines.iter().copied(), &opts) else {
                continue;
            };
            for (i, (name, value)) in vars.iter().enumerate() {
                assert!(name.starts_with("HTTP_"));
                assert_ne!(name, "HTTP_PROXY");
                assert!(!value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n'));
                assert!(
                    !vars[..i].iter().any(|(n, _)| n == name),
                    "duplicate {name}"
                );
            }
        }
    }
}
