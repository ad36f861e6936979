//! `stackctl`: stands up and operates the auth + payments stack.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

mod alerts;
mod archive;
mod backup;
mod certs;
mod cluster;
mod commands;
mod config;
mod database;
mod docker;
mod doctor;
mod drill;
mod events;
mod history;
mod images;
mod nginx;
mod rollback;
mod rollout;
mod s3;
mod stack;
mod state;
mod status;
mod swarm;
mod ui;

/// Stands up and runs the auth and payment services, their PostgreSQL databases and the nginx
/// TLS edge on the local Docker engine, with no registry needed.
#[derive(Parser)]
#[command(
    name = "stackctl",
    version = version(),
    after_help = "Examples:\n  stackctl up                    start (or update) the whole stack\n  stackctl ps                    what runs, and whether it is healthy\n  stackctl logs auth -f          follow both auth instances\n  stackctl -f prod.toml config   the effective configuration of prod.toml\n  stackctl down                  stop and remove the containers, keep the data"
)]
struct Cli {
    /// The stack's configuration file (give it before the command: `stackctl -f prod.toml up`).
    #[arg(
        short = 'f',
        long = "file",
        default_value = "stack.toml",
        env = "STACKCTL_FILE"
    )]
    file: PathBuf,
    /// Print only errors and data.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Up(commands::up::Args),
    Down(commands::down::Args),
    Ps(commands::ps::Args),
    Status(commands::status::Args),
    History(commands::history::Args),
    Events(commands::events::Args),
    Psql(commands::psql::Args),
    Prune(commands::prune::Args),
    Scale(commands::scale::Args),
    Restart(commands::restart::Args),
    Rollback(commands::rollback::Args),
    Backup(commands::backup::Args),
    Restore(commands::restore::Args),
    Logs(commands::logs::Args),
    Certs(commands::certs::Args),
    Doctor(commands::doctor::Args),
    Cluster(commands::cluster::Args),
    Secrets(commands::secrets::Args),
    Config(commands::config::Args),
    Completions(commands::completions::Args),
    Serve(commands::serve::Args),
}

/// This program's version and those of the services it carries, which are what `up` runs.
fn version() -> String {
    format!(
        "{} (auth-svc {}, payment-svc {})",
        env!("CARGO_PKG_VERSION"),
        auth_svc::VERSION,
        payment_svc::VERSION
    )
}

impl Command {
    /// Whether a run of it goes into the release history: those that change what runs.
    fn recorded(&self) -> Option<commands::history::Recorded> {
        use commands::history::Recorded;
        match self {
            Self::Up(_) => Some(Recorded::IfChanged),
            Self::Down(_) => Some(Recorded::Always),
            Self::Scale(args) if !args.dry_run => Some(Recorded::Always),
            Self::Restart(args) if !args.dry_run => Some(Recorded::Always),
            Self::Restore(_) | Self::Rollback(_) => Some(Recorded::Always),
            Self::Certs(args) if args.force => Some(Recorded::Always),
            _ => None,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit = cli.file != Path::new("stack.toml");
    let ctx = commands::Ctx::new(cli.file, explicit, cli.quiet);
    let recorded = cli.command.recorded();
    let result = match cli.command {
        Command::Up(args) => commands::up::run(args, &ctx).await,
        Command::Down(args) => commands::down::run(args, &ctx).await,
        Command::Ps(args) => commands::ps::run(args, &ctx).await,
        Command::Status(args) => commands::status::run(args, &ctx).await,
        Command::History(args) => commands::history::run(args, &ctx),
        Command::Events(args) => commands::events::run(args, &ctx).await,
        Command::Psql(args) => commands::psql::run(args, &ctx).await,
        Command::Prune(args) => commands::prune::run(args, &ctx).await,
        Command::Scale(args) => commands::scale::run(args, &ctx).await,
        Command::Restart(args) => commands::restart::run(args, &ctx).await,
        Command::Rollback(args) => commands::rollback::run(args, &ctx).await,
        Command::Backup(args) => commands::backup::run(args, &ctx).await,
        Command::Restore(args) => commands::restore::run(args, &ctx).await,
        Command::Logs(args) => commands::logs::run(args, &ctx).await,
        Command::Certs(args) => commands::certs::run(args, &ctx).await,
        Command::Doctor(args) => commands::doctor::run(args, &ctx).await,
        Command::Cluster(args) => commands::cluster::run(args, &ctx).await,
        Command::Secrets(args) => commands::secrets::run(args, &ctx),
        Command::Config(args) => commands::config::run(args, &ctx),
        Command::Completions(args) => {
            commands::completions::run::<Cli>(args);
            Ok(())
        }
        // A service, not a command of the stack's: it ends with its own exit status.
        Command::Serve(args) => return commands::serve::run(args).await,
    };
    let refused = result.as_ref().is_err_and(|e| e.is::<commands::Refused>());
    if let Some(recorded) = recorded.filter(|_| !refused)
        && let Err(e) = commands::history::record(&ctx, recorded, &result).await
    {
        eprintln!(
            "{} this change is not in the history: {e:#}",
            console::style("warning:").bold().yellow()
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {e:#}", console::style("error:").bold().red());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
