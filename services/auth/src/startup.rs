//! Wiring: migrations, state, router, listener.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sqlx::PgPool;
use svc_common::{
    health::{self, Probe},
    metrics::Metrics,
    startup::App,
};
use time::OffsetDateTime;

use crate::{
    config::Config,
    db,
    passwords::Passwords,
    routes::{self, AppState},
    tokens::AccessTokens,
    user_cache::UserCache,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often expired refresh tokens are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Migrates, builds the state and binds the listener (port 0 picks a free one).
pub async fn build(config: &Config, pool: PgPool) -> anyhow::Result<App> {
    migrate(&pool).await?;
    tokio::spawn(purge_expired(pool.clone()));
    let metrics = Metrics::new()?;
    metrics.watch_pool(&pool)?;
    let passwords = Passwords::new(config.bcrypt_cost).await?;
    passwords.register_metrics(&metrics)?;
    let state = AppState {
        pool,
        passwords,
        access_tokens: AccessTokens::new(
            config.jwt_secret.expose().as_bytes(),
            &config.jwt_issuer,
            config.access_token_ttl_secs,
        ),
        refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
        users: UserCache::new(Duration::from_millis(config.user_cache_ms)),
        db_probe: Probe::default(),
        instance: health::instance_name(),
    };
    let router = routes::router(Arc::new(state));
    App::bind(
        "auth-svc",
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

/// Deletes expired refresh tokens and old log-in failures now and then, so the tables do not
/// grow with every log-in forever. Every instance does it; the statements are the same whoever
/// runs them.
async fn purge_expired(pool: PgPool) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        let purged = async {
            let tokens =
                db::refresh_tokens::purge_expired(&pool, OffsetDateTime::now_utc()).await?;
            let failures = db::login_failures::purge(&pool).await?;
            Ok::<_, sqlx::Error>((tokens, failures))
        };
        match purged.await {
            Ok((0, 0)) => {}
            Ok((tokens, failures)) => tracing::info!(
                tokens,
                failures,
                "expired refresh tokens and log-in failures purged"
            ),
            Err(e) => tracing::warn!(error = %e, "purging expired rows failed"),
        }
    }
}
