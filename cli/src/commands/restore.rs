//! `stackctl restore`: a database back to a backup, all or nothing.

use std::{path::PathBuf, sync::Mutex, time::Instant};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;

use crate::{
    backup::{self, Backup, Kind, Replayed},
    database,
    docker::{Engine, Health},
    nginx,
    rollout::{self, Rollout, Step},
    stack::{self, App, STOP_GRACE},
};

/// Restore a service's database from a backup. The file's checksum and its whole gzip stream
/// are checked before anything is touched; then nginx stops routing to the service, its
/// instances stop (nginx keeps serving the other service), a safety backup of what the
/// database holds is taken, and `psql` replays the dump in one transaction that only the end
/// of the dump commits. Then the instances start and nginx routes to them again. Interrupted
/// or failed at any point, the database is exactly as it was or exactly the backup, and the
/// command says which.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl restore auth latest\n  stackctl restore payments backups/payments/payments_20261125_020000.sql.gz --yes\n\n`latest` is the newest backup of that database, never a pre-restore safety copy; restore one of\nthose by its file name (stackctl backup list shows them)."
)]
pub struct Args {
    /// Whose database.
    service: App,
    /// A backup file, or `latest` for the newest backup of that database.
    file: String,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

/// How the part of a restore that changes things ended.
enum Outcome {
    Done { safety: Backup, replay_secs: f64 },
    Failed(anyhow::Error),
    Interrupted(&'static str),
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let app = args.service;
    let label = app.service().label();
    let config = ctx.config()?;
    super::single_host_only(&config, "restore")?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let _lock = ctx.state.lock()?;
    for line in backup::sweep(&root, app)? {
        ctx.ui.detail(&line);
    }
    let path = if args.file == "latest" {
        backup::latest(&root, app)?
            .with_context(|| {
                format!(
                    "no {label} backup in {} (stackctl backup list)",
                    root.display()
                )
            })?
            .path
    } else {
        PathBuf::from(&args.file)
    };
    if !path.is_file() {
        bail!(
            "{} is not a file (stackctl backup list shows the backups)",
            path.display()
        );
    }
    ctx.ui.step(&format!(
        "checking {}: checksum and the whole gzip stream",
        path.display()
    ));
    backup::verify(&path)?;
    if !args.yes
        && !super::confirm(&format!(
            "replace the {label} database with {}? its instances stop meanwhile",
            path.display()
        ))?
    {
        bail!("nothing was restored");
    }

    let engine = Engine::connect().await?;
    let container = database::of(app).container;
    if engine.health(container).await? != Health::Healthy {
        bail!("{container} is not running and healthy; start the stack with `stackctl up`");
    }
    // A restore killed a moment ago may still be rolling back.
    backup::settle(&engine, app, None).await?;

    let instances: Vec<String> = rollout::instances(&engine, &config.project, app)
        .await?
        .into_iter()
        .filter(|i| i.running)
        .map(|i| i.name)
        .collect();
    let routes_path = ctx.state.path(nginx::ROUTES_FILE);
    let routed = nginx::routed_now(&routes_path)?;
    let mut rollout = Rollout::new(&engine, routes_path, routed, &ctx.ui);
    let transaction = Mutex::new(None);
    let replace = async {
        rollout.run(vec![Step::Route(app, Vec::new())]).await?;
        ctx.ui.step(&format!("stopping {}", instances.join(", ")));
        try_join_all(instances.iter().map(|n| engine.stop(n, STOP_GRACE))).await?;
        // Taken with the writers stopped, so no write falls between it and the restore.
        let safety = backup::take(&engine, &root, app, Kind::PreRestore, &ctx.ui).await?;
        ctx.ui.step(&format!(
            "safety backup of the current data: {}",
            safety.path.display()
        ));
        ctx.ui
            .step(&format!("restoring {label} from {}", path.display()));
        let started = Instant::now();
        backup::replay(&engine, app, &path, &transaction).await?;
        anyhow::Ok((safety, started.elapsed().as_secs_f64()))
    };
    let outcome = tokio::select! {
        done = replace => match done {
            Ok((safety, replay_secs)) => Outcome::Done { safety, replay_secs },
            Err(e) => Outcome::Failed(e),
        },
        signal = interrupted() => Outcome::Interrupted(signal),
    };
    // The replay may have ended any way: ask the database what became of it.
    let replayed = match &outcome {
        Outcome::Done { .. } => Ok(Replayed::Committed),
        Outcome::Failed(_) | Outcome::Interrupted(_) => {
            if let Outcome::Interrupted(signal) = &outcome {
                ctx.ui.step(&format!(
                    "interrupted ({signal}); finishing: the instances start again (the same signal again leaves them stopped)"
                ));
                tokio::spawn(async {
                    let signal = interrupted().await;
                    eprintln!(
                        "error: interrupted again ({signal}); the instances may still be stopped: run stackctl up"
                    );
                    std::process::exit(130);
                });
            }
            let id = transaction.lock().ok().and_then(|id| *id);
            backup::settle(&engine, app, id).await
        }
    };
    let state = match &replayed {
        Ok(Replayed::Committed) => format!("the {label} database holds {}", path.display()),
        Ok(Replayed::RolledBack) => format!("the {label} database is as it was"),
        Err(e) => format!("the state of the {label} database is unknown ({e:#})"),
    };

    // Whatever happened, the instances run again and nginx routes to them.
    ctx.ui.step(&format!("starting {}", instances.join(", ")));
    let restarted = async {
        try_join_all(instances.iter().map(|n| engine.start(n))).await?;
        stack::wait_healthy(&engine, &instances, &ctx.ui).await?;
        rollout.run(vec![Step::Route(app, instances.clone())]).await
    }
    .await;
    if let Err(e) = restarted {
        return Err(e.context(format!(
            "{state}, but its instances did not come back; see stackctl logs {label}, then stackctl up"
        )));
    }
    match outcome {
        Outcome::Done {
            safety,
            replay_secs,
        } => {
            ctx.ui.step(&format!(
                "restored the {label} database from {} (replayed in {replay_secs:.1}s); what it held before is in {}",
                path.display(),
                safety.path.display()
            ));
            ctx.ui.done();
            Ok(())
        }
        Outcome::Failed(e) => Err(e.context(format!(
            "restore failed; {state} and its instances run again"
        ))),
        Outcome::Interrupted(signal) => {
            bail!("restore interrupted ({signal}); {state} and its instances run again")
        }
    }
}

/// Resolves at the first Ctrl-C or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
