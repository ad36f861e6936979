//! What every service does to start: a lazy pool, migrations that wait for the database,
//! the listener, and the command line (`serve`, the default, or `healthcheck`).

use std::{
    future::Future,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::Router;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::net::TcpListener;

use crate::{
    config::{
        HealthcheckArgs, MetricsArgs, MetricsPort, Secret, SecretFiles, from_env,
        secrets_from_env_only,
    },
    metrics::Metrics,
};

/// How long start-up waits for the database before giving up.
const DATABASE_WAIT: Duration = Duration::from_secs(60);

/// A pool that connects on first use, so the service can start before its database, and hands
/// out no connection the database dropped (see [`guarded_pool`]). Call it inside the runtime.
pub fn pool(url: &Secret, max_connections: u32) -> anyhow::Result<PgPool> {
    let connect: PgConnectOptions = url
        .expose()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    Ok(guarded_pool(
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3)),
        connect,
    ))
}

/// A lazy pool whose idle connections are not handed out once the database has been seen to
/// drop connections after they were opened (a restart, a crash, a failover): a connection of
/// its own waits on the server and notes the moment it is lost, and connections older than
/// that are discarded when acquired. So after a database restart no request is sent on a dead
/// connection, without a ping before every query (a second round trip for each).
pub fn guarded_pool(options: PgPoolOptions, connect: PgConnectOptions) -> PgPool {
    let lost = Arc::new(LostAt::default());
    let seen = lost.clone();
    let pool = options
        .test_before_acquire(false)
        .before_acquire(move |_, meta| {
            let usable = seen.opened_since(meta.age);
            Box::pin(async move { Ok(usable) })
        })
        .connect_lazy_with(connect.clone());
    tokio::spawn(watch_server(connect, lost));
    pool
}

/// When the database last dropped a connection, as nanoseconds after `epoch` (0: never).
struct LostAt {
    epoch: Instant,
    nanos: AtomicU64,
}

impl Default for LostAt {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }
}

impl LostAt {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn mark(&self) {
        self.nanos.store(self.now(), Ordering::Release);
    }

    /// Whether a connection opened `age` ago was opened after the last loss.
    fn opened_since(&self, age: Duration) -> bool {
        let opened = self
            .now()
            .saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
        opened > self.nanos.load(Ordering::Acquire)
    }
}

/// Holds one connection to the database and marks every moment it is lost or cannot be made.
async fn watch_server(connect: PgConnectOptions, lost: Arc<LostAt>) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(connect);
    let mut listener = None;
    loop {
        let listening = match listener.as_mut() {
            Some(l) => l,
            None => match PgListener::connect_with(&own).await {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    lost.mark();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        match listening.try_recv().await {
            // Nobody sends it notifications; anything else means the connection went.
            Ok(Some(_)) => {}
            Ok(None) => lost.mark(),
            Err(_) => {
                lost.mark();
                listener = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
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

/// A router bound to its listener, and the metrics to theirs.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    metrics: Option<(TcpListener, Router)>,
}

impl App {
    /// Binds `addr`, and `metrics_port` on the same host unless it is off, in which case the
    /// requests are not counted either (port 0 picks a free one).
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        metrics: Arc<Metrics>,
        metrics_port: MetricsPort,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is PORT already in use?)"))?;
        let (router, metrics) = match metrics_port {
            MetricsPort::Off => (router, None),
            MetricsPort::On(port) => {
                let at = SocketAddr::new(addr.ip(), port);
                let listener = TcpListener::bind(at).await.with_context(|| {
                    format!("cannot listen on {at} (is METRICS_PORT already in use?)")
                })?;
                let router = metrics.instrument(router);
                (router, Some((listener, metrics.router())))
            }
        };
        Ok(Self {
            name,
            listener,
            router,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// The metrics listener's port, when it is on.
    pub fn metrics_port(&self) -> Option<u16> {
        let (listener, _) = self.metrics.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// Serves until SIGTERM or Ctrl-C, and as long again as `leaving` says; in-flight requests
    /// finish first.
    pub async fn run_until_stopped(self, leaving: &crate::config::Leaving) -> anyhow::Result<()> {
        tracing::info!(
            port = self.port(),
            metrics_port = self.metrics_port(),
            "{} listening",
            self.name
        );
        // The metrics are answered until the service itself has finished.
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let served = crate::http::serve(self.listener, self.router, leaving.stop_delay())
            .await
            .context("serve HTTP");
        if let Some(task) = metrics {
            task.abort();
        }
        served
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
    /// Print the metrics of the instance on this host (Prometheus text format).
    Metrics(MetricsArgs),
}

/// The whole `main` of a service: parses the command line `args` (the program's name first:
/// `auth-svc`, or `stackctl serve auth`, which carries the services), refuses secrets given as
/// flags (`secrets` pairs argument ids with variable names) and takes them from `VAR_FILE`
/// files, starts logging and runs `serve`.
pub async fn main<C, F, Fut>(
    name: &'static str,
    about: &'static str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    secrets: &[(&str, &str)],
    serve: F,
) -> ExitCode
where
    C: clap::Args + FromArgMatches,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let files = match SecretFiles::read(secrets) {
        Ok(files) => files,
        Err(msg) => {
            eprintln!("{name}: {msg}");
            return ExitCode::from(2);
        }
    };
    let matches = Cli::<C>::command()
        .name(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .mut_subcommand("serve", |serve| files.apply(serve))
        .get_matches_from(args);
    let cli = match Cli::<C>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match cli.command {
        Some(Command::Healthcheck(args)) => return args.run().await,
        Some(Command::Metrics(args)) => return args.run().await,
        Some(Command::Serve(config)) => {
            let flags = matches.subcommand_matches("serve");
            if let Err(msg) = flags.map_or(Ok(()), |m| secrets_from_env_only(m, secrets)) {
                eprintln!("{name}: {msg}");
                return ExitCode::from(2);
            }
            config
        }
        None => match from_env::<C>(name, &files) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_older_than_the_last_loss_are_not_used() {
        let lost = LostAt::default();
        assert!(lost.opened_since(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        assert!(lost.opened_since(Duration::from_millis(1)), "never lost");
        lost.mark();
        assert!(
            !lost.opened_since(Duration::from_millis(2)),
            "opened before"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(lost.opened_since(Duration::from_millis(1)), "opened after");
    }
}
