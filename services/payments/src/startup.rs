//! Wiring: migrations, state, router, listener, and the idempotency-key sweeper.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use svc_common::{
    health::{self, Probe},
    metrics::Metrics,
    startup::App,
};

use crate::{
    auth_client::AuthClient,
    config::Config,
    routes::{self, AppState},
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often stored idempotency answers past their retention are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Migrates, builds the state and binds the listener (port 0 picks a free one).
pub async fn build(config: &Config, pool: PgPool) -> anyhow::Result<App> {
    migrate(&pool).await?;
    tokio::spawn(sweep_idempotency_keys(pool.clone()));
    let metrics = Metrics::new()?;
    metrics.watch_pool(&pool)?;
    let auth = AuthClient::new(
        &config.auth_service_url,
        Duration::from_millis(config.auth_timeout_ms),
        config.auth_cache_secs,
        config.auth_cache_capacity,
    )?;
    auth.register_metrics(&metrics)?;
    let state = AppState {
        auth,
        pool,
        webhook_secret: config.webhook_secret.expose().as_bytes().to_vec(),
        webhook_tolerance_secs: config.webhook_tolerance_secs,
        db_probe: Probe::default(),
        auth_probe: Probe::default(),
        instance: health::instance_name(),
    };
    let router = routes::router(Arc::new(state));
    App::bind(
        "payment-svc",
        SocketAddr::new(config.host, config.port),
        router,
        metrics,
        config.metrics_port,
    )
    .await
}

/// Applies the embedded migrations, waiting for the database if it is still starting.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    svc_common::startup::migrate(pool, &MIGRATOR).await
}

async fn sweep_idempotency_keys(pool: PgPool) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        match crate::db::idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete expired idempotency keys"),
        }
    }
}
