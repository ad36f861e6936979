//! The payment service: payments with exact money, a guarded state machine, idempotency keys
//! and signed provider webhooks.

pub mod auth_client;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod routes;
pub mod startup;
pub mod transition;
pub mod webhook_signature;

/// The version of the service, as `--version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The program: serve (with no command), or probe a running instance (`healthcheck`,
/// `metrics`). `args` is the command line, the program's name first; `payment-svc` and
/// `stackctl serve payments` both run this.
pub async fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    svc_common::startup::main(
        "payment-svc",
        "The payment service of the stack. With no command it serves, configured by the environment.",
        args,
        &[("database_url", "DATABASE_URL"), ("webhook_secret", "WEBHOOK_SECRET")],
        |config: config::Config| async move {
            config.validate()?;
            let pool =
                svc_common::startup::pool(&config.database_url, config.database_max_connections)?;
            startup::build(&config, pool)
                .await?
                .run_until_stopped(&config.leaving)
                .await
        },
    )
    .await
}
