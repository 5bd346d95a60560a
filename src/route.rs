//! The router: picks the route for a request path. Pure: a table of matchers, no I/O.
//!
//! Order: an `exact` route wins, then the first `suffix` route whose suffix ends a path
//! segment, then the longest `prefix`. Matching is on the raw (still percent-encoded) path,
//! so an encoded path never sneaks into a route it does not literally name; backends
//! decode and vet the rest. Must not import rt, listen or backend.

use crate::config::Matcher;

/// A compiled route table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Matcher>,
}

/// The route a path matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index of the route in config order.
    pub index: usize,
    /// Length of the path prefix the route claims (the backend's `base`): for a prefix
    /// route the prefix without a trailing `/`, for exact and suffix routes 0.
    pub base_len: usize,
}

impl Router {
    /// A router over `matchers`, in config order.
    pub fn new(matchers: impl IntoIterator<Item = Matcher>) -> Router {
        Router {
            routes: matchers.into_iter().collect(),
        }
    }

    /// The route for `path` (the raw path, without query).
    pub fn find(&self, path: &[u8]) -> Option<Match> {
        for (index, m) in self.routes.iter().enumerate() {
            if let Matcher::Exact(p) = m
                && p.as_bytes() == path
            {
                return Some(Match { index, base_len: 0 });
            }
        }
        for (index, m) in self.routes.iter().enumerate() {
            if let Matcher::Suffix(s) = m
                && has_segment_suffix(path, s.as_bytes())
            {
                return Some(Match { index, base_len: 0 });
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (index, m) in self.routes.iter().enumerate() {
            if let Matcher::Prefix(p) = m {
                let p = p.as_bytes();
                let trimmed = p.strip_suffix(b"/").unwrap_or(p);
                // "/cgi-bin/" also claims "/cgi-bin" itself (a directory index).
                let hit = path.starts_with(p) || path == trimmed;
                if hit && best.is_none_or(|(_, len)| p.len() > len) {
                    best = Some((index, p.len()));
                }
            }
        }
        best.map(|(index, _)| {
            let base_len = match &self.routes[index] {
                Matcher::Prefix(p) => p.strip_suffix('/').unwrap_or(p).len(),
                _ => 0,
            };
            Match { index, base_len }
        })
    }
}

/// Whether some segment of `path` ends with `suffix` (`/a/b.php/x` has `.php`).
fn has_segment_suffix(path: &[u8], suffix: &[u8]) -> bool {
    path.split(|&b| b == b'/')
        .any(|seg| seg.len() > suffix.len() && seg.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new([
            Matcher::Exact("/".into()),
            Matcher::Prefix("/cgi-bin/".into()),
            Matcher::Prefix("/cgi-bin/special/".into()),
            Matcher::Suffix(".php".into()),
            Matcher::Prefix("/status".into()),
        ])
    }

    macro_rules! route_case {
        ($name:ident, $path:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(router().find($path).map(|m| (m.index, m.base_len)), $want);
            }
        };
    }

    route_case!(exact_root, b"/", Some((0, 0)));
    route_case!(prefix_script, b"/cgi-bin/env.pl", Some((1, 8)));
    route_case!(prefix_without_slash, b"/cgi-bin", Some((1, 8)));
    route_case!(longest_prefix_wins, b"/cgi-bin/special/x", Some((2, 16)));
    route_case!(suffix_before_prefix, b"/cgi-bin/x.php", Some((3, 0)));
    route_case!(suffix_with_path_info, b"/app/info.php/extra", Some((3, 0)));
    route_case!(suffix_needs_a_name, b"/app/.php", None);
    route_case!(status_prefix, b"/status", Some((4, 7)));
    route_case!(no_route, b"/nothing", None);
    route_case!(encoded_prefix_not_matched, b"/%63gi-bin/x", None);
}
