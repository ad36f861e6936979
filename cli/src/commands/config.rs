//! `stackctl config`: the effective configuration.

/// Print the effective configuration (defaults, file and STACKCTL_* variables merged) as TOML.
/// Secrets are not part of it; `stackctl secrets show` prints those.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    print!("{}", toml::to_string_pretty(&config)?);
    println!(
        "\n# secrets: {} (0600, never printed here)",
        ctx.state.path("secrets.json").display()
    );
    Ok(())
}
