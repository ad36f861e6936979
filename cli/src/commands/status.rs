//! `stackctl status`: how the stack is doing, on one screen.

use std::{collections::HashMap, io::IsTerminal, path::Path, time::Duration};

use anyhow::bail;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, future::join_all};

use crate::{
    backup::{self, Checksum, Kind},
    config::StackConfig,
    database,
    docker::Engine,
    drill,
    stack::{self, App, NETWORK, PROXY},
    status::{
        self, Answered, BackupPlace, Certificate, DatabaseStatus, Edge, InstanceStatus,
        NewestBackup, SCHEMA, ServiceStatus, Status, WINDOW,
    },
};

/// Show how the stack is doing: per service and instance the health, requests per second,
/// latency percentiles and the shares of 5xx and 429 answers over the last minute (from the
/// edge's access log), the instances' database pool and memory (from their metrics), each
/// database's size, connections and newest backup, the certificate and the backups' free disk.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl status\n  stackctl status --watch               redraws every 2 s until Ctrl-C\n  stackctl status --json | jq '.services[] | {service, rps: .traffic.per_sec}'\n\n`--json` prints the same figures with a \"schema\" version (see the README)."
)]
pub struct Args {
    /// Redraw every few seconds until Ctrl-C (needs a terminal).
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    every: u64,
    /// Print JSON for scripts and monitoring.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    super::on_one_host(
        &config,
        "status",
        "`stackctl ps` shows its tasks, `stackctl logs nginx` its requests",
    )?;
    let engine = Engine::connect_stack(&config.project).await?;
    if args.watch {
        return watch(ctx, &config, &engine, Duration::from_secs(args.every)).await;
    }
    let status = gather(ctx, &config, &engine).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status::render(&status));
    }
    Ok(())
}

/// The screen again every `every`, in the terminal's alternate screen, until Ctrl-C.
async fn watch(
    ctx: &super::Ctx,
    config: &StackConfig,
    engine: &Engine,
    every: Duration,
) -> anyhow::Result<()> {
    use crossterm::{
        cursor::{Hide, MoveTo, Show},
        execute,
        terminal::{Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen},
    };
    let mut out = std::io::stdout();
    if !out.is_terminal() {
        bail!(
            "--watch redraws a terminal and there is none: use `stackctl status --json` in scripts"
        );
    }
    let mut stop = super::Stop::listen()?;
    execute!(out, EnterAlternateScreen, Hide)?;
    let shown = async {
        loop {
            let read = tokio::select! {
                read = gather(ctx, config, engine) => read,
                () = stop.requested() => return anyhow::Ok(()),
            };
            let screen = match read {
                Ok(status) => status::render(&status),
                Err(e) => format!("cannot read the stack: {e:#}\n"),
            };
            execute!(out, MoveTo(0, 0), Clear(ClearType::All))?;
            println!("{screen}every {} s, Ctrl-C to quit", every.as_secs());
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.requested() => return anyhow::Ok(()),
            }
        }
    };
    let result = shown.await;
    execute!(out, Show, LeaveAlternateScreen)?;
    result
}

/// Reads everything the screen shows.
async fn gather(ctx: &super::Ctx, config: &StackConfig, engine: &Engine) -> anyhow::Result<Status> {
    let at = Utc::now();
    let containers = stack::containers(engine, &config.project).await?;
    if containers.is_empty() {
        bail!(
            "stack '{}' has no containers (stackctl up starts it)",
            config.project
        );
    }
    let health = |name: String| async move {
        engine
            .health(&name)
            .await
            .map_or("unknown", |h| h.label())
            .to_owned()
    };

    let mut instances: Vec<(App, String)> = Vec::new();
    for app in App::ALL {
        let mut numbered: Vec<(u32, String)> = containers
            .iter()
            .filter_map(|c| Some((c.instance_of(app)?, c.name.clone())))
            .collect();
        numbered.sort();
        instances.extend(numbered.into_iter().map(|(_, name)| (app, name)));
    }
    let mut addresses = HashMap::new();
    for (app, name) in &instances {
        if let Some(ip) = address(engine, name).await? {
            addresses.insert(format!("{ip}:{}", app.port()), name.clone());
        }
    }

    let answered = edge_answers(engine, at - WINDOW).await;
    let (edge_traffic, by_app, by_instance) = status::traffic(&answered, &addresses, WINDOW);
    let seen: Vec<(App, InstanceStatus)> = join_all(instances.into_iter().map(|(app, name)| {
        let traffic = by_instance.get(&name).cloned().unwrap_or_default();
        async move {
            let metrics = match engine
                .exec(&name, &stack::service_command(app, "metrics"))
                .await
            {
                Ok((0, text)) => status::instance_metrics(&text),
                _ => None,
            };
            let health = health(name.clone()).await;
            let instance = InstanceStatus {
                name,
                health,
                traffic,
                metrics,
            };
            (app, instance)
        }
    }))
    .await;
    let services = App::ALL
        .into_iter()
        .map(|app| ServiceStatus {
            service: app.service().label().to_owned(),
            traffic: by_app.get(&app).cloned().unwrap_or_default(),
            instances: seen
                .iter()
                .filter(|(of, _)| *of == app)
                .map(|(_, i)| i.clone())
                .collect(),
        })
        .collect();

    let connections = match engine.exec(PROXY, &["stack-edge", "status"]).await {
        Ok((0, text)) => status::edge_connections(&text),
        _ => None,
    };
    let root = ctx.base_dir().join(&config.backup.dir);
    let mut databases = Vec::new();
    for app in App::ALL {
        databases.push(database_status(engine, &root, ctx, app, health).await?);
    }
    let certificate = crate::certs::expires(&ctx.state)?
        .and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), 0))
        .map(|expires| Certificate {
            expires,
            days_left: (expires - at).num_days(),
        });
    Ok(Status {
        schema: SCHEMA,
        project: config.project.clone(),
        at,
        window_secs: WINDOW.as_secs(),
        edge: Edge {
            container: PROXY.to_owned(),
            health: health(PROXY.to_owned()).await,
            traffic: edge_traffic,
            connections,
        },
        services,
        databases,
        certificate,
        backups: BackupPlace {
            dir: root.display().to_string(),
            free_bytes: free_bytes(&root),
        },
    })
}

/// The container's address on the stack's network, which the edge's log names it by.
pub(super) async fn address(engine: &Engine, name: &str) -> anyhow::Result<Option<String>> {
    Ok(engine
        .inspect(name)
        .await?
        .and_then(|c| {
            c.network_settings?
                .networks?
                .remove(&*engine.on_engine(NETWORK))?
                .ip_address
        })
        .filter(|ip| !ip.is_empty()))
}

/// What the edge answered from `since` on, from its access log.
pub(super) async fn edge_answers(engine: &Engine, since: DateTime<Utc>) -> Vec<Answered> {
    engine
        .logs(PROXY, false, None, Some(since.timestamp()))
        .filter_map(|chunk| async move { chunk.ok() })
        .map(|chunk| {
            chunk
                .lines()
                .filter_map(Answered::parse)
                .filter(|a| a.at >= since)
                .collect::<Vec<_>>()
        })
        .concat()
        .await
}

async fn database_status<F, Fut>(
    engine: &Engine,
    root: &Path,
    ctx: &super::Ctx,
    app: App,
    health: F,
) -> anyhow::Result<DatabaseStatus>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = String>,
{
    let container = database::of(app).container.to_owned();
    let at = crate::docker::Located::local(engine, &container);
    let sizes = backup::query(
        &at,
        app,
        "SELECT pg_database_size(current_database()), \
         (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())",
    )
    .await;
    let (size_bytes, connections) = match sizes {
        Ok((0, out)) => {
            let mut fields = out.trim().split('|').map(|f| f.parse::<u64>().ok());
            (fields.next().flatten(), fields.next().flatten())
        }
        _ => (None, None),
    };
    let newest = backup::list(root, app)?
        .into_iter()
        .rev()
        .find(|b| b.kind == Kind::Backup);
    let proofs = drill::proofs(&ctx.state)?;
    let newest_backup = match newest {
        None => None,
        Some(b) => {
            let file = drill::file_name(&b.path);
            Some(NewestBackup {
                intact: backup::checksum(&b.path)? == Checksum::Verified,
                verified: proofs.get(&file).filter(|p| p.ok).map(|p| p.at),
                taken: b.taken.and_utc(),
                file,
            })
        }
    };
    Ok(DatabaseStatus {
        service: app.service().label().to_owned(),
        health: health(container.clone()).await,
        container,
        size_bytes,
        connections,
        newest_backup,
    })
}

/// Bytes this user may still write on the file system holding `dir` (or its nearest existing
/// parent: the folder is made by the first backup).
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
