//! The dispatcher: request → route → backend → response. The only code that sees both a
//! listener's request and a backend's answer, and the only code that turns errors into
//! statuses. It also re-enters the router on CGI local redirects (bounded hops), counts
//! requests for `status`, and writes the access log.
//!
//! Must not import listen.

use std::fs::File;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::backend::{Backend, BackendError, Reply, RouteMatch};
use crate::model::{Body, Redirected, Request, Response, split_target};
use crate::route::Router;
use crate::stats::Stats;

/// One configured route: its name and backend.
pub struct RouteEntry {
    /// The route's name.
    pub name: Arc<str>,
    /// Its backend.
    pub backend: Backend,
}

/// Where access log lines go.
pub enum AccessSink {
    /// Nowhere.
    Off,
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(Mutex<File>),
}

/// Routes requests to backends. The route table can be replaced while requests are in
/// flight (reload): each request keeps the table it started with.
pub struct Dispatcher {
    current: std::sync::RwLock<Arc<Table>>,
}

/// One configuration's routes and backends.
struct Table {
    router: Router,
    routes: Vec<RouteEntry>,
    stats: Arc<Stats>,
    max_redirects: u8,
    access: Arc<AccessSink>,
}

impl Dispatcher {
    /// A dispatcher over `routes` (same order as the router's matchers).
    pub fn new(
        router: Router,
        routes: Vec<RouteEntry>,
        stats: Arc<Stats>,
        max_redirects: u8,
        access: AccessSink,
    ) -> Dispatcher {
        Dispatcher {
            current: std::sync::RwLock::new(Arc::new(Table {
                router,
                routes,
                stats,
                max_redirects,
                access: Arc::new(access),
            })),
        }
    }

    fn table(&self) -> Arc<Table> {
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.table().stats.clone()
    }

    /// Stops what the backends run (managed FastCGI children), gracefully.
    pub async fn shutdown(&self) {
        self.table().shutdown().await;
    }

    /// Takes over `next`'s routes for new requests (reload). Requests in flight finish on
    /// the old table; once the last has, its backends are shut down (managed children
    /// drained), within `grace` at most.
    pub async fn replace(&self, next: Dispatcher, grace: std::time::Duration) {
        let next = next.table();
        let old = match self.current.write() {
            Ok(mut t) => std::mem::replace(&mut *t, next),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), next),
        };
        let end = Instant::now() + grace;
        while Arc::strong_count(&old) > 1 && Instant::now() < end {
            crate::rt::sleep(std::time::Duration::from_millis(50)).await;
        }
        old.shutdown().await;
    }

    /// Serves one request; never fails: errors become error responses.
    ///
    /// The request is boxed once here and goes down the layers below as a pointer: an
    /// async fn keeps its arguments in its state for as long as it runs, so a `Request`
    /// (464 bytes) passed by value sat in every layer's state, some twice, and made each
    /// request's future 4.6 KiB, copied whole whenever a layer's future was moved (14% of
    /// the instructions of an echo request were `memcpy`, callgrind).
    pub fn dispatch(&self, req: Request) -> impl Future<Output = Response> + Send + use<> {
        let table = self.table();
        let req = Box::new(req);
        async move { table.dispatch(req).await }
    }
}

impl Table {
    async fn shutdown(&self) {
        for r in &self.routes {
            r.backend.shutdown().await;
        }
    }

    async fn dispatch(&self, req: Box<Request>) -> Response {
        // The access-log line is only put together when there is a log to write.
        let log = match &*self.access {
            AccessSink::Off => None,
            _ => Some(LogLine::of(&req)),
        };
        let mut account = Account::new(self, log);
        let resp = self.serve(req, &mut account.route).await;
        account.status = resp.status.as_u16();
        match account.log.take() {
            None => resp,
            Some(log) => log.attach(resp, self.access.clone()),
        }
    }

    /// Finds the route and calls its backend, following local redirects; `route` is the
    /// route of the answer (none when no route matched), for [`Account`].
    async fn serve(&self, mut req: Box<Request>, route: &mut Option<usize>) -> Response {
        let mut hops = 0u8;
        loop {
            *route = None;
            let Some(m) = self.router.find(&req.path) else {
                log::info!(target: "portico::dispatch", "{} {}: no route", req.method, String::from_utf8_lossy(&req.target));
                return error_page(StatusCode::NOT_FOUND);
            };
            let Some(entry) = self.routes.get(m.index) else {
                return error_page(StatusCode::INTERNAL_SERVER_ERROR);
            };
            *route = Some(m.index);
            let route_in_flight = self
                .stats
                .routes
                .get(m.index)
                .map(|r| InFlight::new(&r.in_flight));
            let rm = RouteMatch {
                name: entry.name.clone(),
                base: req.path.slice(..m.base_len.min(req.path.len())),
            };
            let method = req.method.clone();
            let target = req.target.clone();
            let query = req.query.clone();
            // Only backends that answer in CGI form can ask for a local redirect; the
            // copy of the request it needs is made for them alone.
            let template = entry
                .backend
                .may_redirect()
                .then(|| Box::new(redirect_template(&req)));
            let result = entry.backend.call(req, &rm).await;
            drop(route_in_flight);
            match result {
                Ok(Reply::Response(resp)) => {
                    log::debug!(target: "portico::dispatch", "{method} {} -> {} via {}", String::from_utf8_lossy(&target), resp.status, entry.name);
                    return resp;
                }
                Ok(Reply::LocalRedirect(location)) => {
                    hops += 1;
                    if hops > self.max_redirects {
                        log::warn!(target: "portico::dispatch", "{method} {}: more than {} local redirects", String::from_utf8_lossy(&target), self.max_redirects);
                        return error_page(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                    log::debug!(target: "portico::dispatch", "local redirect to {}", String::from_utf8_lossy(&location));
                    // CGI-AMB-5: the redirected request is a GET without a body; the
                    // original URL is kept for REDIRECT_URL.
                    let Some(mut next) = template else {
                        return error_page(StatusCode::INTERNAL_SERVER_ERROR);
                    };
                    let (path, q) = split_target(&location);
                    next.target = location;
                    next.path = path;
                    next.query = q;
                    next.redirected = Some(Redirected {
                        url: target,
                        query,
                        hops,
                    });
                    req = next;
                }
                Err(e) => {
                    let status = status_of(&e);
                    if status.is_server_error() {
                        log::warn!(target: "portico::dispatch", "{method} {} via {}: {e}", String::from_utf8_lossy(&target), entry.name);
                    } else {
                        log::info!(target: "portico::dispatch", "{method} {} via {}: {e}", String::from_utf8_lossy(&target), entry.name);
                    }
                    return error_page(status);
                }
            }
        }
    }
}

/// The status a request has until its answer comes: the one it is counted and logged
/// with when its client went away first (nginx's 499, "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// One request's accounting in `status` and the access log, done when dropped: in flight
/// while it lives, then counted with its status on its route. Dropped midway (its client
/// closed the connection, which also stops its backend work), the request keeps status
/// 499 and its access-log line, still here, is written as such; at the normal end the
/// line has been taken to go with the body, and is written when the body ends.
struct Account<'a> {
    table: &'a Table,
    start: Instant,
    route: Option<usize>,
    status: u16,
    log: Option<LogLine>,
}

impl<'a> Account<'a> {
    fn new(table: &'a Table, log: Option<LogLine>) -> Account<'a> {
        table.stats.in_flight.fetch_add(1, Relaxed);
        Account {
            table,
            start: Instant::now(),
            route: None,
            status: CLIENT_CLOSED,
            log,
        }
    }
}

impl Drop for Account<'_> {
    fn drop(&mut self) {
        let stats = &self.table.stats;
        stats.in_flight.fetch_sub(1, Relaxed);
        if std::thread::panicking() {
            return;
        }
        stats.finish(self.route, self.status, self.start.elapsed());
        if let Some(line) = self.log.take() {
            write_line(&self.table.access, &line, self.status, 0);
        }
    }
}

/// Counts a request on a route's in-flight gauge until dropped: also when the request's
/// future is dropped midway because its client went away (the gauge stayed up for good
/// when only the end of the request took it down).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a AtomicU64) -> InFlight<'a> {
        gauge.fetch_add(1, Relaxed);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The status each backend error becomes (ARCHITECTURE §6).
pub fn status_of(e: &BackendError) -> StatusCode {
    match e {
        BackendError::NotFound(_) => StatusCode::NOT_FOUND,
        BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
        BackendError::BadRequest(_) => StatusCode::BAD_REQUEST,
        BackendError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BackendError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        BackendError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        BackendError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        BackendError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A small text error response.
pub fn error_page(status: StatusCode) -> Response {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    Response::text(status, text)
}

fn redirect_template(req: &Request) -> Request {
    let mut next = Request::new(Method::GET, b"/");
    next.version = req.version;
    next.headers = req.headers.clone();
    next.headers.remove(http::header::CONTENT_LENGTH);
    next.headers.remove(http::header::CONTENT_TYPE);
    next.headers.remove(http::header::TRANSFER_ENCODING);
    next.local = req.local.clone();
    next.peer = req.peer.clone();
    next.tls = req.tls;
    next.params = req.params.clone();
    next.stderr = req.stderr.clone();
    next.body = Body::empty_unframed();
    next
}

/// The parts of a Combined Log Format line known before the response.
struct LogLine {
    host: String,
    user: String,
    time: String,
    request: String,
    referer: String,
    agent: String,
}

impl LogLine {
    fn of(req: &Request) -> LogLine {
        let hdr = |h: http::header::HeaderName| {
            req.headers
                .get(h)
                .map(|v| clf_escape(v.as_bytes()))
                .unwrap_or_else(|| "-".into())
        };
        LogLine {
            host: if req.peer.addr.is_empty() {
                "-".into()
            } else {
                req.peer.addr.to_string()
            },
            user: req
                .param(b"REMOTE_USER")
                .map(|u| clf_escape(u))
                .unwrap_or_else(|| "-".into()),
            time: clf_time(SystemTime::now()),
            request: format!(
                "{} {} {:?}",
                req.method,
                clf_escape(&req.target),
                req.version
            ),
            referer: hdr(http::header::REFERER),
            agent: hdr(http::header::USER_AGENT),
        }
    }

    /// Wraps the body so the line is written when it ends (or is dropped), with the
    /// number of body bytes actually sent.
    fn attach(self, resp: Response, sink: Arc<AccessSink>) -> Response {
        let status = resp.status.as_u16();
        let len = resp.body.len();
        let counting = Counting {
            inner: resp.body,
            sent: 0,
            line: Some(self),
            status,
            sink,
        };
        Response {
            status: resp.status,
            headers: resp.headers,
            body: Body::from_stream(len, counting),
        }
    }
}

struct Counting {
    inner: Body,
    sent: u64,
    line: Option<LogLine>,
    status: u16,
    sink: Arc<AccessSink>,
}

impl futures_lite::Stream for Counting {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = self.inner.poll_chunk(cx);
        match &r {
            Poll::Ready(Some(Ok(b))) => self.sent += b.len() as u64,
            Poll::Ready(_) => self.write(),
            Poll::Pending => {}
        }
        r
    }
}

impl Counting {
    fn write(&mut self) {
        let Some(l) = self.line.take() else { return };
        write_line(&self.sink, &l, self.status, self.sent);
    }
}

/// Writes one Combined Log Format line: `l` with the status and the body bytes sent.
fn write_line(sink: &AccessSink, l: &LogLine, status: u16, sent: u64) {
    let bytes = if sent == 0 {
        "-".to_string()
    } else {
        sent.to_string()
    };
    let text = format!(
        "{} - {} [{}] \"{}\" {} {} \"{}\" \"{}\"\n",
        l.host, l.user, l.time, l.request, status, bytes, l.referer, l.agent
    );
    match sink {
        AccessSink::Off => {}
        AccessSink::Stderr => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        AccessSink::File(f) => {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.write();
    }
}

fn clf_escape(b: &[u8]) -> String {
    let mut o = String::with_capacity(b.len());
    for &c in b {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            o.push_str(&format!("\\x{c:02x}"));
        } else {
            o.push(c as char);
        }
    }
    o
}

/// `10/Oct/2000:13:55:36 +0000` in UTC.
fn clf_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize % 12],
        y,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_time_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(971_186_136);
        assert_eq!(clf_time(t), "10/Oct/2000:13:55:36 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn clf_escapes_quotes_and_controls() {
        assert_eq!(clf_escape(b"a\"b\n"), "a\\x22b\\x0a");
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(
            status_of(&BackendError::Timeout("x".into())),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status_of(&BackendError::BadGateway("x".into())),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status_of(&BackendError::Busy("x".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(&BackendError::BodyTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
