//! `stackctl psql`: an interactive psql in a database's container.

use crate::{database, stack::App};

use super::Site;

/// Open psql on a service's database, as its superuser, in the database's container: an
/// interactive terminal when this is one, else SQL read from standard input (for scripts).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl psql payments\n  echo 'SELECT count(*) FROM payments' | stackctl psql payments\n\nThe exit status is psql's."
)]
pub struct Args {
    /// Whose database.
    #[arg(value_enum)]
    app: App,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let site = Site::connect(ctx, &config).await?;
    let at = site.database(args.app).await?;
    let db = database::of(args.app);
    let code = at
        .engine
        .exec_attached(
            &at.container,
            "postgres",
            &["psql", "--username", db.superuser, "--dbname", db.name],
        )
        .await?;
    if code != 0 {
        anyhow::bail!("psql exited with status {code}");
    }
    Ok(())
}
