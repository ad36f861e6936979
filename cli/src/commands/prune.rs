//! `stackctl prune`: the images of old releases.

use crate::{docker::Engine, history};

/// Delete the images stackctl built that no container of any project uses and that none of
/// the newest releases in `stackctl history` ran. Those are kept (5 of each service by
/// default), so that the releases before this one can run again; the Debian root file systems
/// are kept too (the PostgreSQL and nginx images derive from them; `down --images` deletes
/// them).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  stackctl prune --dry-run\n  stackctl prune --keep 2")]
pub struct Args {
    /// Releases of each service whose images are kept, newest first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    keep: u64,
    /// Say what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    super::on_one_host(
        &config,
        "prune",
        "`stackctl down --images` deletes the images there",
    )?;
    let _lock = ctx.state.lock()?;
    let engine = Engine::connect().await?;
    // Another project's containers may run the same images.
    let in_use = engine.images_in_use().await?;
    let keep = usize::try_from(args.keep).unwrap_or(usize::MAX);
    let recent = history::recent_images(&history::read(&ctx.state)?, keep);
    let mut deleted = 0;
    for image in engine.stack_images().await? {
        if image.is_base() || in_use.contains(&image.id) || recent.contains(&image.id) {
            continue;
        }
        deleted += 1;
        if args.dry_run {
            ctx.ui.step(&format!("would delete image {}", image.tag));
        } else {
            ctx.ui.step(&format!("deleting image {}", image.tag));
            engine.remove_image(&image.tag).await?;
        }
    }
    if deleted == 0 {
        ctx.ui.step(&format!(
            "nothing to delete: every image is in use or among the newest {keep} releases of its service"
        ));
    }
    Ok(())
}
