//! `stackctl secrets show [NAME]`: the only command that prints a secret; `secrets import`
//! takes a lost host's on a new one.

use std::io::Read;

use anyhow::{Context, bail};

use crate::state::Secrets;

/// Print the generated secrets, e.g. the webhook secret a payment provider must be given, or
/// take another host's. Keep a copy of `secrets show` apart from this machine: a lost host is
/// brought back on a new one from the copy in backup.copy_to with them, and only with them
/// (that copy is encrypted with archive_cipher_pass).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl secrets show                  all, as NAME=VALUE\n  stackctl secrets show webhook_secret   one, for a payment provider\n  stackctl secrets show > old-host.env   kept somewhere safe, apart from this host\n  stackctl secrets import old-host.env   on a new host, before its first up; then\n                                         stackctl up\n                                         stackctl restore payments --to latest --from copy\n                                         stackctl restore auth --to latest --from copy"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print one secret (jwt_secret, webhook_secret, auth_db_password, payments_db_password,
    /// auth_app_password, payments_app_password, archive_cipher_pass) or all.
    Show { name: Option<String> },
    /// Take the secrets of another host (all of them, as `secrets show` prints them) as this
    /// stack's, before its first `up`; FILE `-` reads standard input. Existing secrets are never
    /// replaced.
    Import { file: String },
}

pub fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let name = match args.command {
        Command::Show { name } => name,
        Command::Import { file } => return import(&file, ctx),
    };
    let Some(secrets) = ctx.state.existing_secrets()? else {
        bail!("no secrets yet: `stackctl up` generates them");
    };
    match name {
        Some(name) => match secrets.entries().into_iter().find(|(n, _)| *n == name) {
            Some((_, value)) => println!("{value}"),
            None => {
                let names: Vec<_> = secrets.entries().iter().map(|(n, _)| *n).collect();
                bail!(
                    "no secret named {name}; the secrets are {}",
                    names.join(", ")
                );
            }
        },
        None => {
            for (name, value) in secrets.entries() {
                println!("{name}={value}");
            }
        }
    }
    Ok(())
}

fn import(file: &str, ctx: &super::Ctx) -> anyhow::Result<()> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the secrets from standard input")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    }
    let secrets = Secrets::from_listing(&text).with_context(|| {
        format!("{file}: not the secrets `stackctl secrets show` prints; nothing was imported")
    })?;
    let _lock = ctx.state.lock()?;
    if ctx.state.import_secrets(&secrets)? {
        ctx.ui.step(&format!(
            "imported {} secrets into {} (readable by you only); {file} holds them in clear: keep it apart from this host, or delete it",
            secrets.entries().len(),
            ctx.state.path("secrets.json").display()
        ));
    } else {
        ctx.ui
            .step("this stack has exactly these secrets already: nothing changed");
    }
    Ok(())
}
