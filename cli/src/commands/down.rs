//! `stackctl down`: stops and removes the stack's containers.

use std::time::{Duration, Instant};

use crate::{
    cluster::Cluster,
    docker::Engine,
    stack::{self, NETWORK, Service},
    swarm,
};

/// Stop and remove the stack's containers and network. Data volumes are kept unless --volumes.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl down                    containers and network go, data stays\n  stackctl down --volumes          also the databases (asks first)\n  stackctl down --volumes --yes    the same, for scripts"
)]
pub struct Args {
    /// Also delete the databases' volumes (all data), after confirmation.
    #[arg(long)]
    volumes: bool,
    /// Also delete the images stackctl built (the next `up` builds them again).
    #[arg(long)]
    images: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let _lock = ctx.state.lock()?;
    if args.volumes
        && !args.yes
        && !super::confirm(&format!(
            "delete every container AND the data volumes of stack '{}'?",
            config.project
        ))?
    {
        anyhow::bail!("nothing was removed");
    }
    if let Some(cluster) = &config.cluster {
        return down_cluster(&args, ctx, &config.project, cluster).await;
    }
    let engine = Engine::connect_stack(&config.project).await?;
    let containers = stack::containers(&engine, &config.project).await?;
    // The edge first, so nothing is routed to instances on their way out; databases last.
    // Containers of no known service (another version's) go with the edge.
    let order = [
        None,
        Some(Service::Nginx),
        Some(Service::Payments),
        Some(Service::Auth),
        Some(Service::PaymentsDb),
        Some(Service::AuthDb),
    ];
    for service in order {
        for c in containers.iter().filter(|c| c.service == service) {
            ctx.ui.step(&format!("removing {}", c.name));
            engine.remove(&c.name, stack::STOP_GRACE).await?;
        }
    }
    engine.remove_network(NETWORK, &config.project).await?;
    if args.volumes {
        for volume in engine.volumes(&config.project).await? {
            ctx.ui.step(&format!("deleting volume {volume}"));
            engine.remove_volume(&volume).await?;
        }
    }
    if args.images {
        // Images are shared by content: those another project's containers use stay, and so
        // do the root file systems beneath them (listed last).
        let in_use = engine.images_in_use().await?;
        let mut kept = false;
        for image in engine.stack_images().await? {
            let why = if in_use.contains(&image.id) {
                Some("another project's containers use it")
            } else if kept && image.is_base() {
                Some("the images kept rest on it")
            } else {
                None
            };
            if let Some(why) = why {
                kept = true;
                ctx.ui
                    .detail(&format!("keeping image {}: {why}", image.tag));
                continue;
            }
            ctx.ui.step(&format!("deleting image {}", image.tag));
            engine.remove_image(&image.tag).await?;
        }
    }
    ctx.ui.done();
    Ok(())
}

/// `down` on a swarm: the services (edge first, databases last), then, once their containers
/// have left every node, the network, secrets and configs, and what `--volumes` and `--images`
/// ask for on every node.
async fn down_cluster(
    args: &Args,
    ctx: &super::Ctx,
    project: &str,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    let ui = &ctx.ui;
    let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
    let manager = nodes.manager();
    for service in [
        Service::Nginx,
        Service::Payments,
        Service::Auth,
        Service::PaymentsDb,
        Service::AuthDb,
    ] {
        let name = swarm::service_name(service);
        if manager
            .tasks(name, false)
            .await
            .is_ok_and(|t| !t.is_empty())
        {
            ui.step(&format!("removing service {name}"));
        }
        manager.remove_service(name).await?;
    }
    let spinner = ui.spinner("waiting for the services' containers to stop on every node");
    let deadline = Instant::now() + stack::STOP_GRACE + Duration::from_secs(30);
    for (i, engine) in nodes.reachable() {
        while !engine.containers(project).await?.is_empty() {
            if Instant::now() > deadline {
                spinner.finish_and_clear();
                anyhow::bail!(
                    "containers of the stack still run on node {} after {} s; run `stackctl down` again",
                    i + 1,
                    (stack::STOP_GRACE + Duration::from_secs(30)).as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    spinner.finish_and_clear();
    manager.remove_network(NETWORK, project).await?;
    for config in [false, true] {
        for (name, id) in manager.swarm_objects(project, config).await? {
            if !manager.remove_swarm_object(&id, config).await? {
                ui.detail(&format!(
                    "{name} is still in use; run `stackctl down` again"
                ));
            }
        }
    }
    for (i, engine) in nodes.reachable() {
        swarm::remove_edge_volumes(engine, project).await?;
        if args.volumes {
            for volume in engine.volumes(project).await? {
                ui.step(&format!("node {}: deleting volume {volume}", i + 1));
                engine.remove_volume(&volume).await?;
            }
        }
        if args.images {
            for image in engine.stack_images().await? {
                ui.step(&format!("node {}: deleting image {}", i + 1, image.tag));
                engine.remove_image(&image.tag).await?;
            }
        }
    }
    if args.images {
        // Where they were built.
        let local = Engine::connect().await?;
        for image in local.stack_images().await? {
            ui.step(&format!("deleting image {}", image.tag));
            local.remove_image(&image.tag).await?;
        }
    }
    for (i, why) in nodes.unreachable() {
        ui.detail(&format!(
            "node {} does not answer; what it holds stays until `stackctl down` reaches it ({why})",
            i + 1
        ));
    }
    ui.done();
    Ok(())
}
