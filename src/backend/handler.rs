//! In-process handlers: the `Handler` trait, the registry of handlers by name, and the
//! built-ins: `landing` (lists the routes), `status` (JSON and Prometheus text) and `echo`.
//!
//! Must not import listen or dispatch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures_lite::StreamExt as _;
use http::{HeaderValue, StatusCode, header};

use super::{BackendError, RouteMatch};
use crate::model::{Body, Request, Response};
use crate::stats::Stats;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response, BackendError>> + Send>>;

/// In-process request handler, registered by name and named by routes
/// (`handler = "name"`).
///
/// ```
/// use portico::backend::{Handler, HandlerFuture, RouteMatch};
/// use portico::model::{Request, Response};
///
/// struct Hello;
/// impl Handler for Hello {
///     fn call(&self, _req: Request, _m: RouteMatch) -> HandlerFuture {
///         Box::pin(async { Ok(Response::text(http::StatusCode::OK, "hello\n")) })
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn call(&self, req: Request, m: RouteMatch) -> HandlerFuture;
}

/// What the built-in handlers need to know about the running server.
#[derive(Debug, Clone)]
pub struct ServerView {
    /// Routes as `(name, matcher text, backend text)`, in order.
    pub routes: Vec<(String, String, String)>,
    /// Listeners as text.
    pub listeners: Vec<String>,
    /// The counters.
    pub stats: Arc<Stats>,
    /// SERVER_SOFTWARE.
    pub software: String,
}

type Factory = Box<dyn Fn(&ServerView) -> Arc<dyn Handler> + Send + Sync>;

/// Handlers by name: the built-ins plus whatever an embedding program adds.
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-ins `landing`, `status` and `echo`.
    pub fn new() -> Registry {
        let mut r = Registry {
            factories: BTreeMap::new(),
        };
        r.factories.insert(
            "landing".into(),
            Box::new(|v: &ServerView| Arc::new(Landing(v.clone())) as Arc<dyn Handler>),
        );
        r.factories.insert(
            "status".into(),
            Box::new(|v: &ServerView| Arc::new(Status(v.clone())) as Arc<dyn Handler>),
        );
        r.factories.insert(
            "echo".into(),
            Box::new(|_: &ServerView| Arc::new(Echo) as Arc<dyn Handler>),
        );
        r
    }

    /// Registers `handler` under `name` (replacing a built-in of that name).
    pub fn register(&mut self, name: &str, handler: impl Handler) {
        let h: Arc<dyn Handler> = Arc::new(handler);
        self.factories
            .insert(name.to_owned(), Box::new(move |_| h.clone()));
    }

    /// Whether a handler of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The registered names.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// An instance of `name` for a server described by `view`.
    pub fn build(&self, name: &str, view: &ServerView) -> Option<Arc<dyn Handler>> {
        self.factories.get(name).map(|f| f(view))
    }
}

/// `echo`: answers with the request's method, target, headers and body, as text.
/// Streams the body back without holding it whole.
struct Echo;

impl Handler for Echo {
    fn call(&self, req: Request, _m: RouteMatch) -> HandlerFuture {
        Box::pin(async move {
            // Sized first: grown from empty it was reallocated four times per request
            // (a tenth of the user-space instructions of `benches/cgi.sh`'s echo run).
            let size = req.method.as_str().len()
                + req.target.len()
                + 3
                + req
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 3)
                    .sum::<usize>();
            let mut head = BytesMut::with_capacity(size);
            head.extend_from_slice(req.method.as_str().as_bytes());
            head.extend_from_slice(b" ");
            head.extend_from_slice(&req.target);
            head.extend_from_slice(b"\n");
            for (name, value) in &req.headers {
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\n");
            }
            head.extend_from_slice(b"\n");
            let head = head.freeze();
            let len = req.body.len().map(|n| n + head.len() as u64);
            let mut body = req.body;
            // Read the first chunk before answering, so a client that sent
            // `Expect: 100-continue` is told to go on.
            let first_chunk = body
                .chunk()
                .await
                .transpose()
                .map_err(|e| BackendError::BadRequest(e.to_string()))?;
            let out = match first_chunk {
                // No request body (the common GET): one buffer, no stream to box and poll.
                None => Body::full(head),
                Some(first) => Body::from_stream(
                    len,
                    futures_lite::stream::iter([Ok(head), Ok(first)])
                        .chain(futures_lite::stream::poll_fn(move |cx| body.poll_chunk(cx))),
                ),
            };
            let mut resp = Response::new(StatusCode::OK, out);
            resp.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(resp)
        })
    }
}

/// `landing`: an HTML page listing the listeners and routes.
struct Landing(ServerView);

impl Handler for Landing {
    fn call(&self, _req: Request, _m: RouteMatch) -> HandlerFuture {
        let v = &self.0;
        let mut html = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>portico</title></head>\n<body>\n",
        );
        let _ = writeln!(html, "<h1>{}</h1>", crate::text::markup(&v.software));
        html.push_str("<h2>Listeners</h2>\n<ul>\n");
        for l in &v.listeners {
            let _ = writeln!(html, "<li><code>{}</code></li>", crate::text::markup(l));
        }
        html.push_str("</ul>\n<h2>Routes</h2>\n<table>\n<tr><th>route</th><th>backend</th></tr>\n");
        for (_, matcher, backend) in &v.routes {
            let link = matcher
                .strip_prefix("prefix ")
                .or_else(|| matcher.strip_prefix("exact "));
            let shown = match link {
                Some(p) => format!(
                    "<a href=\"{0}\">{1}</a>",
                    crate::text::markup(p),
                    crate::text::markup(matcher)
                ),
                None => crate::text::markup(matcher),
            };
            let _ = writeln!(
                html,
                "<tr><td>{shown}</td><td>{}</td></tr>",
                crate::text::markup(backend)
            );
        }
        html.push_str("</table>\n</body></html>\n");
        Box::pin(async move {
            let mut r = Response::new(StatusCode::OK, Body::full(html));
            r.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            Ok(r)
        })
    }
}

/// `status`: the counters as JSON (default) or Prometheus text (`?format=prometheus`, or
/// `Accept: text/plain`).
struct Status(ServerView);

impl Handler for Status {
    fn call(&self, req: Request, _m: RouteMatch) -> HandlerFuture {
        let prometheus = req
            .query
            .split(|&b| b == b'&')
            .any(|p| p == b"format=prometheus" || p == b"prometheus" || p == b"format=text")
            || req
                .headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.starts_with("text/plain"));
        let (body, ctype) = if prometheus {
            (prometheus_text(&self.0.stats), "text/plain; version=0.0.4")
        } else {
            (json(&self.0.stats), "application/json")
        };
        Box::pin(async move {
            let mut r = Response::new(StatusCode::OK, Body::full(body));
            r.headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            r.headers
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        })
    }
}

fn json(s: &Stats) -> Bytes {
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\"uptime_seconds\":{},\"requests\":{},\"in_flight\":{},\"children\":{},\"spawned\":{},\"routes\":[",
        s.started.elapsed().as_secs(),
        s.requests.load(Relaxed),
        s.in_flight.load(Relaxed),
        s.children.load(Relaxed),
        s.spawned.load(Relaxed),
    );
    for (i, r) in s.routes.iter().enumerate() {
        let n = r.requests.load(Relaxed);
        let sum = r.latency_us_sum.load(Relaxed);
        let _ = write!(
            o,
            "{}{{\"name\":{},\"requests\":{},\"in_flight\":{},\"status\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"latency_avg_ms\":{:.3},\"latency_max_ms\":{:.3}}}",
            if i > 0 { "," } else { "" },
            crate::text::json_str(&r.name),
            n,
            r.in_flight.load(Relaxed),
            r.by_class[0].load(Relaxed),
            r.by_class[1].load(Relaxed),
            r.by_class[2].load(Relaxed),
            r.by_class[3].load(Relaxed),
            r.by_class[4].load(Relaxed),
            if n == 0 {
                0.0
            } else {
                sum as f64 / n as f64 / 1000.0
            },
            r.latency_us_max.load(Relaxed) as f64 / 1000.0,
        );
    }
    o.push_str("],\"pools\":[");
    let pools = s.pools.lock().map(|p| p.clone()).unwrap_or_default();
    for (i, p) in pools.iter().enumerate() {
        let _ = write!(
            o,
            "{}{{\"name\":{},\"kind\":{},\"accepted\":{},\"in_flight\":{},\"listen_queue\":{},\"max_listen_queue\":{},\"idle\":{},\"busy\":{},\"max_children_reached\":{},\"slow_requests\":{},\"rejected\":{},\"failed\":{},\"spawned\":{},\"crashed\":{},\"recycled\":{}}}",
            if i > 0 { "," } else { "" },
            crate::text::json_str(&p.name),
            crate::text::json_str(&p.kind),
            p.accepted.load(Relaxed),
            p.in_flight.load(Relaxed),
            p.queued.load(Relaxed),
            p.max_queued.load(Relaxed),
            p.idle.load(Relaxed),
            p.busy.load(Relaxed),
            p.max_children_reached.load(Relaxed),
            p.slow_requests.load(Relaxed),
            p.rejected.load(Relaxed),
            p.failed.load(Relaxed),
            p.spawned.load(Relaxed),
            p.crashed.load(Relaxed),
            p.recycled.load(Relaxed),
        );
    }
    o.push_str("]}\n");
    Bytes::from(o)
}

fn prometheus_text(s: &Stats) -> Bytes {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# TYPE portico_uptime_seconds gauge\nportico_uptime_seconds {}",
        s.started.elapsed().as_secs()
    );
    let _ = writeln!(
        o,
        "# TYPE portico_requests_total counter\nportico_requests_total {}",
        s.requests.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "# TYPE portico_requests_in_flight gauge\nportico_requests_in_flight {}",
        s.in_flight.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "# TYPE portico_children gauge\nportico_children {}",
        s.children.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "# TYPE portico_children_spawned_total counter\nportico_children_spawned_total {}",
        s.spawned.load(Relaxed)
    );
    o.push_str("# TYPE portico_route_requests_total counter\n");
    for r in &s.routes {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                o,
                "portico_route_requests_total{{route={},status=\"{class}\"}} {}",
                crate::text::json_str(&r.name),
                r.by_class[i].load(Relaxed)
            );
        }
    }
    o.push_str("# TYPE portico_route_in_flight gauge\n");
    for r in &s.routes {
        let _ = writeln!(
            o,
            "portico_route_in_flight{{route={}}} {}",
            crate::text::json_str(&r.name),
            r.in_flight.load(Relaxed)
        );
    }
    o.push_str("# TYPE portico_route_latency_seconds_sum counter\n");
    for r in &s.routes {
        let _ = writeln!(
            o,
            "portico_route_latency_seconds_sum{{route={}}} {:.6}",
            crate::text::json_str(&r.name),
            r.latency_us_sum.load(Relaxed) as f64 / 1e6
        );
    }
    let pools = s.pools.lock().map(|p| p.clone()).unwrap_or_default();
    for (metric, kind, get) in [
        (
            "accepted_total",
            "counter",
            (|p: &crate::stats::PoolStats| p.accepted.load(Relaxed))
                as fn(&crate::stats::PoolStats) -> u64,
        ),
        ("in_flight", "gauge", |p| p.in_flight.load(Relaxed)),
        ("listen_queue", "gauge", |p| p.queued.load(Relaxed)),
        ("max_listen_queue", "gauge", |p| p.max_queued.load(Relaxed)),
        ("idle", "gauge", |p| p.idle.load(Relaxed)),
        ("busy", "gauge", |p| p.busy.load(Relaxed)),
        ("max_children_reached_total", "counter", |p| {
            p.max_children_reached.load(Relaxed)
        }),
        ("slow_requests_total", "counter", |p| {
            p.slow_requests.load(Relaxed)
        }),
        ("rejected_total", "counter", |p| p.rejected.load(Relaxed)),
        ("failed_total", "counter", |p| p.failed.load(Relaxed)),
        ("spawned_total", "counter", |p| p.spawned.load(Relaxed)),
        ("crashed_total", "counter", |p| p.crashed.load(Relaxed)),
        ("recycled_total", "counter", |p| p.recycled.load(Relaxed)),
    ] {
        if pools.is_empty() {
            break;
        }
        let _ = writeln!(o, "# TYPE portico_pool_{metric} {kind}");
        for p in &pools {
            let _ = writeln!(
                o,
                "portico_pool_{metric}{{pool={},kind={}}} {}",
                crate::text::json_str(&p.name),
                crate::text::json_str(&p.kind),
                get(p)
            );
        }
    }
    o.push_str("# TYPE portico_route_latency_seconds_max gauge\n");
    for r in &s.routes {
        let _ = writeln!(
            o,
            "portico_route_latency_seconds_max{{route={}}} {:.6}",
            crate::text::json_str(&r.name),
            r.latency_us_max.load(Relaxed) as f64 / 1e6
        );
    }
    Bytes::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(crate::text::json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn status_json_lists_routes() {
        let s = Stats::new(["/cgi-bin/".to_string()]);
        s.finish(Some(0), 200, std::time::Duration::from_millis(2));
        let j = String::from_utf8(json(&s).to_vec()).unwrap();
        assert!(j.contains("\"name\":\"/cgi-bin/\",\"requests\":1"), "{j}");
        let p = String::from_utf8(prometheus_text(&s).to_vec()).unwrap();
        assert!(
            p.contains("portico_route_requests_total{route=\"/cgi-bin/\",status=\"2xx\"} 1"),
            "{p}"
        );
    }
}
