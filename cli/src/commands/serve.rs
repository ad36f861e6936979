//! `stackctl serve auth|payments`: a service this program carries, as its containers run it.

use std::{ffi::OsString, process::ExitCode};

use crate::stack::App;

/// Run a service in the foreground, configured by the environment as its image runs it;
/// `healthcheck` and `metrics` probe an instance. Options after the service are the service's:
/// `stackctl serve auth --help` lists its settings, `stackctl help serve` shows this.
#[derive(clap::Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  stackctl serve auth --help                 the auth service's settings\n  DATABASE_URL=… JWT_SECRET_FILE=… stackctl serve auth\n  stackctl serve payments healthcheck        exit 0 when the instance here is healthy"
)]
pub struct Args {
    service: App,
    /// The service's command line: nothing to serve, `healthcheck`, `metrics`, `--help`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

pub async fn run(args: Args) -> ExitCode {
    let program = OsString::from(format!("stackctl serve {}", args.service.service().label()));
    let command_line = std::iter::once(program).chain(args.args);
    match args.service {
        App::Auth => auth_svc::main(command_line).await,
        App::Payments => payment_svc::main(command_line).await,
    }
}
