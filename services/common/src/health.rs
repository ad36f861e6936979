//! Health probing with a short cache, so a load balancer polling `/health` cannot flood the
//! database, and a probe that hangs cannot hang the endpoint.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use axum::{http::StatusCode, response::Response};
use sqlx::PgPool;

use crate::envelope;

/// How long a probe result is reused.
pub const PROBE_TTL: Duration = Duration::from_millis(500);
/// How long a single probe may take before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A cached, single-flight up/down check.
#[derive(Debug)]
pub struct Probe {
    epoch: Instant,
    ttl: Duration,
    /// Milliseconds since `epoch` at which `up` was last written, plus one (0 = never checked).
    checked_at: AtomicU64,
    up: AtomicBool,
    in_flight: tokio::sync::Mutex<()>,
}

impl Probe {
    pub fn new(ttl: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            ttl,
            checked_at: AtomicU64::new(0),
            up: AtomicBool::new(false),
            in_flight: tokio::sync::Mutex::new(()),
        }
    }

    /// The last result while it is fresh; otherwise runs `check` (one caller at a time) and
    /// remembers its answer.
    pub async fn check<F, Fut>(&self, check: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        if let Some(up) = self.fresh() {
            return up;
        }
        let _guard = self.in_flight.lock().await;
        if let Some(up) = self.fresh() {
            return up;
        }
        let up = tokio::time::timeout(PROBE_TIMEOUT, check())
            .await
            .unwrap_or(false);
        self.up.store(up, Ordering::Release);
        self.checked_at.store(self.now_ms() + 1, Ordering::Release);
        up
    }

    fn fresh(&self) -> Option<bool> {
        let at = self.checked_at.load(Ordering::Acquire);
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        (at != 0 && self.now_ms() + 1 < at.saturating_add(ttl_ms))
            .then(|| self.up.load(Ordering::Acquire))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new(PROBE_TTL)
    }
}

/// Whether PostgreSQL answers a trivial query.
pub async fn database_up(pool: &PgPool) -> bool {
    match sqlx::query("SELECT 1").execute(pool).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "database health probe failed");
            false
        }
    }
}

/// `"up"` / `"down"`, as the health body spells it.
pub fn up_down(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// 200 `OK` when healthy, else 503 `Service degraded`; both carry `data`, so a degraded answer
/// still says which dependency is down.
pub fn respond<T: serde::Serialize>(healthy: bool, data: T) -> Response {
    if healthy {
        envelope::ok("OK", data)
    } else {
        envelope::degraded(StatusCode::SERVICE_UNAVAILABLE, "Service degraded", data)
    }
}

/// The host name, which in a container is the instance name.
pub fn instance_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
