//! Prometheus metrics: every request by route template and status, its latency and the requests
//! in flight, the database pool, the process, and what a service registers of its own. They are
//! served on a listener of their own (`METRICS_PORT`) that the edge never routes to, so the
//! public API cannot reach them whatever path it is sent.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context as TaskContext, Poll, ready},
    time::Instant,
};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use pin_project_lite::pin_project;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, PullingGauge, Registry,
    TextEncoder,
    core::Collector,
    local::{LocalHistogramVec, LocalIntCounterVec},
};
use sqlx::PgPool;
use tower::{Layer, Service};

/// The route label of a request that matched no route (its path is not used: any client could
/// make up paths without end).
const UNMATCHED: &str = "unmatched";

/// Request latency buckets, in seconds: a fraction of a millisecond up to the 30 s timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A service's registry and the request metrics every service has.
pub struct Metrics {
    registry: Registry,
    /// Lives as long as the process: what every request is handed is a pointer, not a count
    /// that every thread writes.
    http: &'static Http,
}

/// The request metrics. Each runtime thread counts into a [`Shard`] of its own, added into
/// these when they are asked for: on two cores a counter every thread writes costs as much as
/// the rest of a cheap request, while a thread's own shard stays in its cache.
struct Http {
    /// Tells this set's shards from another's in a thread's list (tests run several services
    /// in one process).
    id: u64,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
}

/// What one thread counted since the last scrape.
struct Shard {
    requests: LocalIntCounterVec,
    latency: LocalHistogramVec,
    /// Requests begun less those ended on this thread: below 0 when requests moved here from
    /// another thread; the sum over the shards is what is in flight.
    in_flight: i64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static OWN_SHARDS: RefCell<Vec<(u64, Arc<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
}

impl Http {
    /// Runs `f` on this thread's shard, made on first use.
    fn with_shard<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        OWN_SHARDS.with_borrow_mut(|own| {
            let i = match own.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    let shard = Arc::new(Mutex::new(Shard {
                        requests: self.requests.local(),
                        latency: self.latency.local(),
                        in_flight: 0,
                    }));
                    lock(&self.shards).push(shard.clone());
                    own.push((self.id, shard));
                    own.len() - 1
                }
            };
            f(&mut lock(&own[i].1))
        })
    }

    /// Adds what the shards counted into the registry's metrics.
    fn gather(&self) {
        let mut in_flight = 0;
        for shard in lock(&self.shards).iter() {
            let shard = lock(shard);
            shard.requests.flush();
            shard.latency.flush();
            in_flight += shard.in_flight;
        }
        self.in_flight.set(in_flight);
    }
}

/// A shard's lock: only its thread and the scrape take it, and a panic under it leaves counts
/// that are still counts.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new();
        let http = Http {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "Requests answered, by route template, method and status.",
                ),
                &["route", "method", "status"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to answer a request, by route template.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
            in_flight: IntGauge::new("http_requests_in_flight", "Requests being answered now.")?,
            shards: Mutex::new(Vec::new()),
        };
        let metrics = Self {
            registry,
            http: Box::leak(Box::new(http)),
        };
        metrics.register(metrics.http.requests.clone())?;
        metrics.register(metrics.http.latency.clone())?;
        metrics.register(metrics.http.in_flight.clone())?;
        metrics.register(prometheus::process_collector::ProcessCollector::for_self())?;
        Ok(Arc::new(metrics))
    }

    /// Adds a service's own metric.
    pub fn register(&self, collector: impl Collector + 'static) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(collector))
            .context("register a metric")
    }

    /// A gauge read when the metrics are asked for.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        self.register(PullingGauge::new(name, help, Box::new(value))?)
    }

    /// The pool's open and idle connections and its limit.
    pub fn watch_pool(&self, pool: &PgPool) -> anyhow::Result<()> {
        let open = pool.clone();
        self.gauge(
            "db_pool_connections",
            "Connections the pool holds open, in use or idle.",
            move || f64::from(open.size()),
        )?;
        let idle = pool.clone();
        self.gauge(
            "db_pool_idle_connections",
            "Open connections no request is using.",
            move || idle.num_idle() as f64,
        )?;
        let max = f64::from(pool.options().get_max_connections());
        self.gauge(
            "db_pool_max_connections",
            "The most connections the pool opens; past it requests wait for one.",
            move || max,
        )
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> anyhow::Result<String> {
        self.http.gather();
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .context("encode the metrics")?;
        Ok(text)
    }

    /// `router` with every request counted and timed. A layer of the router wraps each route
    /// (where the route template is known) and the fallback, outside the layers `finish` adds:
    /// so it also counts what reached no route (404, 405) and what those layers answered
    /// (timeouts, panics).
    pub fn instrument(&self, router: Router) -> Router {
        router.layer(Record { http: self.http })
    }

    /// The metrics listener's router: `GET /metrics`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(exposition))
            .with_state(self)
    }
}

async fn exposition(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The layer `instrument` adds: each request counted and timed around the route (or fallback)
/// it wraps. A service of its own rather than `middleware::from_fn`, which clones the route and
/// boxes a future for every request: that alone cost more than the counting.
#[derive(Clone)]
struct Record {
    http: &'static Http,
}

impl<S> Layer<S> for Record {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            http: self.http,
            inner,
        }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    http: &'static Http,
    inner: S,
}

impl<S> Service<Request> for Recorded<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recording<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let method = req.method().clone();
        // A copy, not a clone of the shared `Arc<str>`: its count would be written by every
        // thread.
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_owned());
        Recording {
            in_flight: InFlight::enter(self.http),
            started: Instant::now(),
            method,
            route,
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// A request on its way through the route: recorded when the route answers.
    struct Recording<F> {
        #[pin]
        inner: F,
        in_flight: InFlight<'static>,
        started: Instant,
        method: Method,
        route: Option<String>,
    }
}

impl<F, E> Future for Recording<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        let secs = this.started.elapsed().as_secs_f64();
        let route = this.route.as_deref().unwrap_or(UNMATCHED);
        let method = this.method.as_str();
        this.in_flight.leave(|shard| {
            if let Ok(res) = &answered {
                shard.latency.with_label_values(&[route]).observe(secs);
                shard
                    .requests
                    .with_label_values(&[route, method, res.status().as_str()])
                    .inc();
            }
        });
        Poll::Ready(answered)
    }
}

/// A request being answered, until it leaves or is dropped (the client went away mid-request).
struct InFlight<'a>(Option<&'a Http>);

impl<'a> InFlight<'a> {
    fn enter(http: &'a Http) -> Self {
        http.with_shard(|shard| shard.in_flight += 1);
        Self(Some(http))
    }

    /// Ends it and records it with `f`, under one take of the shard.
    fn leave(&mut self, f: impl FnOnce(&mut Shard)) {
        if let Some(http) = self.0.take() {
            http.with_shard(|shard| {
                shard.in_flight -= 1;
                f(shard);
            });
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(http) = self.0 {
            http.with_shard(|shard| shard.in_flight -= 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// Requests answered on both threads of a runtime land in the same figures, exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_thread_counts_into_the_same_figures() {
        let metrics = Metrics::new().unwrap();
        let router = metrics.instrument(Router::new().route("/items/{id}", get(|| async { "ok" })));
        let requests: Vec<_> = (0..400)
            .map(|i| {
                let router = router.clone();
                let uri = if i % 4 == 0 {
                    "/nowhere".to_owned()
                } else {
                    format!("/items/{i}")
                };
                tokio::spawn(async move {
                    let request = Request::get(uri).body(Body::empty()).unwrap();
                    router.oneshot(request).await.unwrap().status()
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        for _ in 0..2 {
            let text = metrics.render().unwrap();
            for line in [
                r#"http_requests_total{method="GET",route="/items/{id}",status="200"} 300"#,
                r#"http_requests_total{method="GET",route="unmatched",status="404"} 100"#,
                r#"http_request_duration_seconds_count{route="/items/{id}"} 300"#,
                "http_requests_in_flight 0",
            ] {
                assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
            }
        }
    }
}
