//! `stackctl config`: the effective configuration.

/// Print the effective configuration (defaults, file and STACKCTL_* variables merged, with the
/// counts `scale` set, or a rollback's configuration while it holds) as TOML. Secrets are not
/// part of it; `stackctl secrets show` prints those.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl config\n  STACKCTL_HTTPS_PORT=8443 stackctl config\n  stackctl -f prod.toml config"
)]
pub struct Args {}

pub fn run(_args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    print!("{}", toml::to_string_pretty(&config)?);
    if let Some(pin) = ctx.rollback()? {
        println!(
            "\n# release {} runs, rolled back at {} ({}); the configuration file's settings return with its next change (or `up --roll-forward`)",
            pin.release,
            pin.at.format("%Y-%m-%d %H:%M UTC"),
            pin.reason
        );
    }
    println!(
        "\n# secrets: {} (0600, never printed here)",
        ctx.state.path("secrets.json").display()
    );
    Ok(())
}
