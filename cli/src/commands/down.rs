//! `stackctl down`: stops and removes the stack's containers.

use crate::{
    docker::Engine,
    stack::{self, NETWORK, Service},
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
    let engine = Engine::connect().await?;
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
        for image in engine.stack_images().await? {
            ctx.ui.step(&format!("deleting image {image}"));
            engine.remove_image(&image).await?;
        }
    }
    ctx.ui.done();
    Ok(())
}
