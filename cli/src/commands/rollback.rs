//! `stackctl rollback`: runs an earlier release again, failing no request.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::{
    config::StackConfig,
    docker::{Engine, Health},
    history,
    rollback::{self, Pin},
    stack::{App, PROXY},
};

/// Go back to an earlier release of the services: its images and its configuration, through the
/// same switch as `restart` (each new instance healthy before nginx routes to it, each old one
/// drained). With a service, only that service's image and `[services.*]` settings go back.
/// Without `--to`, the newest release before the last that ran healthy and differently. `up`
/// keeps the release gone back to until the configuration file or the sources change (or
/// `up --roll-forward`). One host only.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl rollback                 both services, to the release before\n  stackctl rollback auth            auth alone\n  stackctl history                  the releases, numbered\n  stackctl rollback payments --to 4 payments as release 4 ran it"
)]
pub struct Args {
    /// The service to roll back; both when left out.
    service: Option<App>,
    /// The release to go back to, numbered as `stackctl history` lists them.
    #[arg(long, value_name = "N")]
    to: Option<usize>,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let (current, engine, target) = refusals(&args, ctx).await.map_err(super::Refused)?;
    let Target { n, kept, images } = target;
    let _lock = ctx.state.lock()?;
    let apps: Vec<App> = args.service.map_or(App::ALL.to_vec(), |app| vec![app]);
    let config = match args.service {
        None => kept,
        Some(app) => {
            let mut config = current.clone();
            config.set_service_settings(app, &kept);
            config
        }
    };
    let (_, over) = super::up::built(ctx, &engine, &config).await?;
    // A service not rolled back keeps what a rollback that holds made it run.
    let mut pinned = rollback::read(&ctx.state)?
        .filter(|pin| pin.over == over)
        .map(|pin| pin.images)
        .unwrap_or_default();
    for app in &apps {
        let label = app.service().label().to_owned();
        if let Some(id) = images.get(&label) {
            pinned.insert(label, id.clone());
        }
    }
    let pin = Pin {
        release: n,
        reason: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        at: Utc::now(),
        config_hash: history::keep_config(&ctx.state, &config)?,
        images: pinned,
        over,
    };
    rollback::save(&ctx.state, &pin)?;
    super::up::local(ctx, &engine).await
}

/// The release a rollback goes back to, as the history has it.
struct Target {
    /// Its number in the history.
    n: usize,
    /// Its configuration.
    kept: StackConfig,
    /// Its image ids, by service.
    images: BTreeMap<String, String>,
}

/// What a rollback needs, or why it cannot be made: the current configuration, the engine and
/// the release to go back to.
async fn refusals(args: &Args, ctx: &super::Ctx) -> anyhow::Result<(StackConfig, Engine, Target)> {
    let current = ctx.config()?;
    super::on_one_host(
        &current,
        "rollback",
        "bring back the earlier configuration and run `stackctl up`",
    )?;
    let apps: Vec<App> = args.service.map_or(App::ALL.to_vec(), |app| vec![app]);
    let entries = history::read(&ctx.state)?;
    let n = rollback::target(&entries, &apps, args.to)?;
    let release = &entries[n - 1].release;
    let kept = history::kept_config(&ctx.state, &release.config_hash)?.ok_or_else(|| {
        anyhow::anyhow!(
            "release {n}'s configuration was not kept (it was recorded before releases were); go back to a later one"
        )
    })?;
    if kept.project != current.project {
        anyhow::bail!(
            "release {n} ran project '{}', and this stack is project '{}'",
            kept.project,
            current.project
        );
    }
    let engine = Engine::connect_stack(&current.project).await?;
    if engine.health(PROXY).await? == Health::Down {
        anyhow::bail!(
            "stack '{}' is not running; start it with `stackctl up`",
            current.project
        );
    }
    let images = release.images.clone();
    Ok((current, engine, Target { n, kept, images }))
}
