//! `stackctl secrets show [NAME]`: the only command that prints a secret.

use anyhow::bail;

/// Print the generated secrets, e.g. the webhook secret a payment provider must be given.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl secrets show                  all, as NAME=VALUE\n  stackctl secrets show webhook_secret   one, for a payment provider"
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
}

pub fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let Command::Show { name } = args.command;
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
