//! `auth-svc`: serve (the default) or probe a running instance's health.

use std::process::ExitCode;

use auth_svc::{
    config::Config,
    startup::{self, App},
};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use svc_common::config::{HealthcheckArgs, from_env, secrets_from_env_only};

/// The auth service of the stack. With no command it serves, configured by the environment.
#[derive(Parser)]
#[command(name = "auth-svc", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve(Config),
    /// Exit 0 when the instance on this host answers GET /health with 200 (container health check).
    Healthcheck(HealthcheckArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = match cli.command {
        Some(Command::Healthcheck(args)) => return args.run().await,
        Some(Command::Serve(config)) => {
            let serve = matches.subcommand_matches("serve");
            let secrets = [
                ("database_url", "DATABASE_URL"),
                ("jwt_secret", "JWT_SECRET"),
            ];
            if let Err(msg) = serve.map_or(Ok(()), |m| secrets_from_env_only(m, &secrets)) {
                eprintln!("auth-svc: {msg}");
                return ExitCode::from(2);
            }
            config
        }
        None => match from_env::<Config>("auth-svc") {
            Ok(config) => config,
            Err(e) => e.exit(),
        },
    };
    svc_common::telemetry::init();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "auth-svc failed");
            eprintln!("auth-svc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let pool = startup::pool(&config)?;
    let app = App::build(&config, pool).await?;
    app.run_until_stopped().await
}
