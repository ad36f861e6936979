//! Prometheus metrics: every request by route template and status, its latency and the requests
//! in flight, the database pool, the process, and what a service registers of its own. They are
//! served on a listener of their own (`METRICS_PORT`) that the edge never routes to, so the
//! public API cannot reach them whatever path it is sent.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, PullingGauge, Registry,
    TextEncoder, core::Collector,
};
use sqlx::PgPool;

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
    http: Http,
}

#[derive(Clone)]
struct Http {
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new();
        let http = Http {
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
        };
        let metrics = Self { registry, http };
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
        router.layer(middleware::from_fn_with_state(self.http.clone(), record))
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

async fn record(State(http): State<Http>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let res = {
        let _in_flight = InFlight::enter(&http.in_flight);
        next.run(req).await
    };
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    http.latency
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    http.requests
        .with_label_values(&[route, method.as_str(), res.status().as_str()])
        .inc();
    res
}

/// A request being answered, until dropped (also when the client goes away mid-request).
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
