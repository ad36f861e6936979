//! `stackctl restore`: a database back to a backup, all or nothing.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures_util::future::try_join_all;

use crate::{
    backup,
    docker::Engine,
    rollout,
    stack::{self, App, STOP_GRACE},
};

/// Restore a service's database from a backup. The file's checksum and its whole gzip stream
/// are checked before anything is touched; then a safety backup is taken, the service's
/// instances stop (nginx keeps serving the other service), `psql` replays the dump in one
/// transaction that stops at the first error, and the instances start again. A failed restore
/// leaves the database as it was.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl restore auth latest\n  stackctl restore payments backups/payments/payments_20261125_020000.sql.gz --yes"
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

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let app = args.service;
    let label = app.service().label();
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let path = if args.file == "latest" {
        backup::list(&root, app)?
            .pop()
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

    let _lock = ctx.state.lock()?;
    let engine = Engine::connect().await?;
    // The safety backup also checks that the database container runs.
    let safety = backup::take(&engine, &root, app, &ctx.ui).await?;
    ctx.ui.step(&format!(
        "safety backup of the current data: {}",
        safety.path.display()
    ));

    let instances: Vec<String> = rollout::instances(&engine, &config.project, app)
        .await?
        .into_iter()
        .filter(|i| i.running)
        .map(|i| i.name)
        .collect();
    ctx.ui.step(&format!("stopping {}", instances.join(", ")));
    try_join_all(instances.iter().map(|n| engine.stop(n, STOP_GRACE))).await?;

    ctx.ui
        .step(&format!("restoring {label} from {}", path.display()));
    let replay_started = std::time::Instant::now();
    let restored = backup::replay(&engine, app, &path).await;
    let replay_secs = replay_started.elapsed().as_secs_f64();

    // Whatever happened, the instances run again.
    ctx.ui.step(&format!("starting {}", instances.join(", ")));
    let restarted = async {
        try_join_all(instances.iter().map(|n| engine.start(n))).await?;
        stack::wait_healthy(&engine, &instances, &ctx.ui).await?;
        // A restarted container may have a new address; nginx resolves names when it loads.
        rollout::reload_proxy(&engine, &ctx.ui).await
    }
    .await;
    match (restored, restarted) {
        (Ok(()), Ok(())) => {
            ctx.ui.step(&format!(
                "restored the {label} database from {} (replayed in {replay_secs:.1}s); what it held before is in {}",
                path.display(),
                safety.path.display()
            ));
            ctx.ui.done();
            Ok(())
        }
        (Err(e), Ok(())) => Err(e.context(format!(
            "restore failed; the {label} database is unchanged and its instances run again"
        ))),
        (restored, Err(e)) => Err(e.context(format!(
            "the {label} instances did not come back ({}); see stackctl logs {label}, then stackctl up",
            match restored {
                Ok(()) => "the restore itself succeeded".to_owned(),
                Err(r) => format!("the restore failed too: {r:#}"),
            }
        ))),
    }
}
