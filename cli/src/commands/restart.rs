//! `stackctl restart`: replaces a service's instances one at a time, failing no request.

use crate::{
    docker::{Engine, Health},
    rollout::Replace,
    stack::{App, PROXY},
    swarm,
};

/// Replace every instance of a service with a fresh one of the same image, one at a time: an
/// extra instance serves meanwhile, each new instance passes its health check before nginx
/// routes to it, and each old one is taken out of nginx and drained before it stops.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl restart auth             fresh auth instances, no failed request\n  stackctl restart payments --dry-run"
)]
pub struct Args {
    /// The service to restart.
    service: App,
    /// Print the steps without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let _lock = if args.dry_run {
        None
    } else {
        Some(ctx.state.lock()?)
    };
    if let Some(cluster) = &config.cluster {
        let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
        let change = swarm::Change::Restart;
        let project = &config.project;
        if !swarm::change(
            nodes.manager(),
            project,
            args.service,
            change,
            args.dry_run,
            &ctx.ui,
        )
        .await?
        {
            anyhow::bail!("stack '{project}' is not running; start it with `stackctl up`");
        }
        if !args.dry_run {
            swarm::wait_routed(&nodes, args.service, &ctx.ui).await?;
            ctx.ui.done();
        }
        return Ok(());
    }
    let engine = Engine::connect_stack(&config.project).await?;
    if engine.health(PROXY).await? == Health::Down {
        anyhow::bail!(
            "stack '{}' is not running; start it with `stackctl up`",
            config.project
        );
    }
    super::scale::change(
        ctx,
        &engine,
        &config,
        args.service,
        Replace::All,
        args.dry_run,
    )
    .await?;
    if !args.dry_run {
        ctx.ui.done();
    }
    Ok(())
}
