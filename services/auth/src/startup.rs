//! Wiring: database pool and migrations, state, router, listener.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use sqlx::{PgPool, postgres::PgPoolOptions};
use svc_common::health::{self, Probe};
use tokio::net::TcpListener;

use crate::{
    config::Config,
    passwords::Passwords,
    routes::{self, AppState},
    tokens::AccessTokens,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long start-up waits for the database before giving up.
const DATABASE_WAIT: Duration = Duration::from_secs(60);

/// A pool that connects on first use, so the service can start before its database.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(config.database_url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")
}

/// Applies the embedded migrations, retrying while the database is still starting. Concurrent
/// instances are serialised by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DATABASE_WAIT;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e))
                if is_transient(&e) && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %e, "database not ready, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("apply database migrations"),
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        // 57P03: the database system is starting up.
        .is_some_and(|code| code == "57P03")
}

pub struct App {
    listener: TcpListener,
    router: Router,
}

impl App {
    /// Migrates, builds the state and binds the listener (port 0 picks a free one).
    pub async fn build(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        migrate(&pool).await?;
        let state = AppState {
            pool,
            passwords: Passwords::new(config.bcrypt_cost).await?,
            access_tokens: AccessTokens::new(
                config.jwt_secret.expose().as_bytes(),
                &config.jwt_issuer,
                config.access_token_ttl_secs,
            ),
            refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
            db_probe: Probe::default(),
            instance: health::instance_name(),
        };
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is PORT already in use?)"))?;
        Ok(Self {
            listener,
            router: routes::router(Arc::new(state)),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until SIGTERM or Ctrl-C; in-flight requests finish first.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "auth-svc listening");
        svc_common::http::serve(self.listener, self.router)
            .await
            .context("serve HTTP")
    }
}
