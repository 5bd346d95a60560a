//! Counters the `status` handler reports: requests served and in flight, per-route counts
//! and latency, children running. Lock-free counters; the per-route table is fixed at
//! startup.
//!
//! Must not import rt, listen or backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Figures for one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// The route's name.
    pub name: String,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Responses by class: 1xx..5xx at indexes 0..4.
    pub by_class: [AtomicU64; 5],
    /// Sum of latencies in microseconds.
    pub latency_us_sum: AtomicU64,
    /// Largest latency in microseconds.
    pub latency_us_max: AtomicU64,
}

/// Process-wide figures.
#[derive(Debug)]
pub struct Stats {
    /// When the server started.
    pub started: Instant,
    /// Requests answered (all routes, including 404s).
    pub requests: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Child processes running now (CGI scripts, managed FastCGI children).
    pub children: AtomicU64,
    /// Child processes spawned since start.
    pub spawned: AtomicU64,
    /// One entry per configured route, in config order.
    pub routes: Vec<RouteStats>,
    /// FastCGI and SCGI pools, by route name (filled as backends are built).
    pub pools: std::sync::Mutex<Vec<Arc<PoolStats>>>,
}

/// php-fpm-style figures for one FastCGI or SCGI pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// The route's name.
    pub name: String,
    /// `fastcgi` or `scgi`; `children` for managed FastCGI children.
    pub kind: String,
    /// Requests accepted by the pool.
    pub accepted: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Requests waiting for a connection or child (php-fpm's listen queue).
    pub queued: AtomicU64,
    /// Most requests ever waiting at once.
    pub max_queued: AtomicU64,
    /// Idle children (managed pools) or idle kept connections (upstreams).
    pub idle: AtomicU64,
    /// Busy children or connections in use.
    pub busy: AtomicU64,
    /// Times a request found every child busy and none could be added.
    pub max_children_reached: AtomicU64,
    /// Requests slower than the route's `slow_request`.
    pub slow_requests: AtomicU64,
    /// Requests refused with 503 after waiting `queue_timeout`.
    pub rejected: AtomicU64,
    /// Requests that failed with 502/504.
    pub failed: AtomicU64,
    /// Children spawned (managed pools).
    pub spawned: AtomicU64,
    /// Children that exited on their own with a failure (managed pools).
    pub crashed: AtomicU64,
    /// Children recycled after `max_requests` or their own request limit.
    pub recycled: AtomicU64,
}

impl Stats {
    /// Fresh counters for routes named `names`.
    pub fn new(names: impl IntoIterator<Item = String>) -> Arc<Stats> {
        Arc::new(Stats {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            children: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            routes: names
                .into_iter()
                .map(|name| RouteStats {
                    name,
                    ..RouteStats::default()
                })
                .collect(),
            pools: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Registers a pool's figures.
    pub fn add_pool(&self, name: &str, kind: &str) -> Arc<PoolStats> {
        let p = Arc::new(PoolStats {
            name: name.to_owned(),
            kind: kind.to_owned(),
            ..PoolStats::default()
        });
        if let Ok(mut pools) = self.pools.lock() {
            pools.push(p.clone());
        }
        p
    }

    /// Records that a child process started; the guard records its end when dropped.
    pub fn child_started(self: &Arc<Self>) -> ChildGuard {
        self.children.fetch_add(1, Relaxed);
        self.spawned.fetch_add(1, Relaxed);
        ChildGuard(self.clone())
    }

    /// Records a request's end on `route` (if one matched).
    pub fn finish(&self, route: Option<usize>, status: u16, took: Duration) {
        self.requests.fetch_add(1, Relaxed);
        if let Some(r) = route.and_then(|i| self.routes.get(i)) {
            r.requests.fetch_add(1, Relaxed);
            let class = usize::from(status / 100).clamp(1, 5) - 1;
            r.by_class[class].fetch_add(1, Relaxed);
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            r.latency_us_sum.fetch_add(us, Relaxed);
            r.latency_us_max.fetch_max(us, Relaxed);
        }
    }
}

/// Decrements the running-children count when dropped.
#[derive(Debug)]
pub struct ChildGuard(Arc<Stats>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.0.children.fetch_sub(1, Relaxed);
    }
}
