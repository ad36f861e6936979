//! `auth-svc`: serve (the default) or probe a running instance's health.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    auth_svc::main(std::env::args_os()).await
}
