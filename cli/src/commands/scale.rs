//! `stackctl scale`: more or fewer instances of a service, with zero failed requests.

use crate::{
    config::{MAX_INSTANCES, StackConfig},
    docker::{Engine, Health},
    images, nginx,
    rollout::{self, Replace, Rollout},
    stack::{App, PROXY, Plan},
    swarm,
};

/// Set how many instances of a service run, without failing a request: new instances start and
/// pass their health check before nginx routes to them; leaving ones (highest numbers first) are
/// taken out of nginx, drained and removed. The count is kept, so a later `up` keeps it (until
/// the configuration names another count).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl scale auth 3              add a third auth instance (app_a3)\n  stackctl scale payments 1          down to one payment instance\n  stackctl scale auth 4 --dry-run    print the steps, change nothing"
)]
pub struct Args {
    /// The service to scale.
    service: App,
    /// How many instances should run (1 to 16).
    #[arg(value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_INSTANCES)))]
    instances: u32,
    /// Print the steps without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let app = args.service;
    let label = app.service().label();
    let mut config = ctx.config()?;
    let from = config.instances(app);
    config.set_instances(app, args.instances);
    let _lock = if args.dry_run {
        None
    } else {
        Some(ctx.state.lock()?)
    };
    if let Some(cluster) = &config.cluster {
        let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
        let change = swarm::Change::Scale(args.instances);
        let running = swarm::change(
            nodes.manager(),
            &config.project,
            app,
            change,
            args.dry_run,
            &ctx.ui,
        )
        .await?;
        if !running && args.dry_run {
            println!(
                "the stack is not running: `stackctl up` would start {} {label} instances",
                args.instances
            );
        }
        if running && !args.dry_run {
            swarm::wait_routed(&nodes, app, &ctx.ui).await?;
        }
        if !args.dry_run {
            save(ctx, app, args.instances)?;
            ctx.ui
                .step(&format!("{label}: {} instances", args.instances));
            ctx.ui.done();
        }
        return Ok(());
    }
    let engine = Engine::connect_stack(&config.project).await?;
    if engine.health(PROXY).await? == Health::Down {
        if args.dry_run {
            println!(
                "the stack is not running: `stackctl up` would start {} {label} instances",
                args.instances
            );
            return Ok(());
        }
        save(ctx, app, args.instances)?;
        ctx.ui.step(&format!(
            "the stack is not running; saved {label} = {} instances for `stackctl up`",
            args.instances
        ));
        return Ok(());
    }
    change(ctx, &engine, &config, app, Replace::Stopped, args.dry_run).await?;
    if !args.dry_run {
        save(ctx, app, args.instances)?;
        ctx.ui
            .step(&format!("{label}: {from} → {} instances", args.instances));
        ctx.ui.done();
    }
    Ok(())
}

fn save(ctx: &super::Ctx, app: App, instances: u32) -> anyhow::Result<()> {
    let configured = ctx.configured()?.instances(app);
    let mut scale = ctx.state.scale()?;
    scale.set(app, instances, configured);
    ctx.state.save_scale(&scale)
}

/// Brings `app`'s instances of the running stack to what `config` says, replacing what
/// `replace` says, with the images the stack runs now. `dry_run` prints the steps instead.
pub(super) async fn change(
    ctx: &super::Ctx,
    engine: &Engine,
    config: &StackConfig,
    app: App,
    replace: Replace,
    dry_run: bool,
) -> anyhow::Result<()> {
    let images = images::running(engine, &config.project).await?;
    let secrets = ctx.state.existing_secrets()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no secrets: this stack was never started here; run `stackctl up` first",
            ctx.state.root().display()
        )
    })?;
    let plan = Plan::new(config, &images, &secrets, ctx.state.root())?;
    let current = rollout::instances(engine, &config.project, app).await?;
    let routes_path = ctx.state.path(nginx::ROUTES_FILE);
    let routed = nginx::routed_now(&routes_path)?;
    let steps = rollout::plan(app, plan.app(app), &current, routed.of(app), replace);
    if steps.is_empty() {
        ctx.ui.step(&format!(
            "{} already runs {} instances; nothing to do",
            app.service().label(),
            config.instances(app)
        ));
        return Ok(());
    }
    if dry_run {
        for (i, step) in steps.iter().enumerate() {
            println!("{}. {step}", i + 1);
        }
        return Ok(());
    }
    let mut rollout = Rollout::new(engine, routes_path, routed, &ctx.ui);
    rollout.run(steps).await
}
