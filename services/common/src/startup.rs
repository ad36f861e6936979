//! What every service does to start: a lazy pool, migrations that wait for the database,
//! the listener, and the command line (`serve`, the default, or `healthcheck`).

use std::{future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use axum::Router;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};
use tokio::net::TcpListener;

use crate::config::{HealthcheckArgs, Secret, from_env, secrets_from_env_only};

/// How long start-up waits for the database before giving up.
const DATABASE_WAIT: Duration = Duration::from_secs(60);

/// A pool that connects on first use, so the service can start before its database.
pub fn pool(url: &Secret, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        // The default pings every connection on every acquire: a second round trip for each
        // query. A connection that broke is closed by the pool when its query fails instead.
        .test_before_acquire(false)
        .connect_lazy(url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")
}

/// Applies the embedded migrations, retrying while the database is still starting. Concurrent
/// instances are serialised by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DATABASE_WAIT;
    loop {
        match migrator.run(pool).await {
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
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
        || e.as_database_error()
            .and_then(|d| d.code())
            // 57P03: the database system is starting up.
            .is_some_and(|code| code == "57P03")
}

/// A router bound to its listener.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    router: Router,
}

impl App {
    /// Binds `addr` (port 0 picks a free one).
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is PORT already in use?)"))?;
        Ok(Self {
            name,
            listener,
            router,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serves until SIGTERM or Ctrl-C; in-flight requests finish first.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), "{} listening", self.name);
        crate::http::serve(self.listener, self.router)
            .await
            .context("serve HTTP")
    }
}

#[derive(Parser)]
struct Cli<C: clap::Args> {
    #[command(subcommand)]
    command: Option<Command<C>>,
}

#[derive(Subcommand)]
enum Command<C: clap::Args> {
    /// Serve HTTP (the default).
    Serve(C),
    /// Exit 0 when the instance on this host answers GET /health with 200 (container health check).
    Healthcheck(HealthcheckArgs),
}

/// The whole `main` of a service: parses the command line, refuses secrets given as flags
/// (`secrets` pairs argument ids with variable names), starts logging and runs `serve`.
pub async fn main<C, F, Fut>(
    name: &'static str,
    about: &'static str,
    secrets: &[(&str, &str)],
    serve: F,
) -> ExitCode
where
    C: clap::Args + FromArgMatches,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let matches = Cli::<C>::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let cli = match Cli::<C>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match cli.command {
        Some(Command::Healthcheck(args)) => return args.run().await,
        Some(Command::Serve(config)) => {
            let flags = matches.subcommand_matches("serve");
            if let Err(msg) = flags.map_or(Ok(()), |m| secrets_from_env_only(m, secrets)) {
                eprintln!("{name}: {msg}");
                return ExitCode::from(2);
            }
            config
        }
        None => match from_env::<C>(name) {
            Ok(config) => config,
            Err(e) => e.exit(),
        },
    };
    crate::telemetry::init();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
