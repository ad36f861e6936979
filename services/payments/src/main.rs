//! `payment-svc`: serve (the default) or probe a running instance's health.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    payment_svc::main(std::env::args_os()).await
}
