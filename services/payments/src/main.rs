//! `payment-svc`: serve (the default) or probe a running instance's health.

use std::process::ExitCode;

use payment_svc::{config::Config, startup};

#[tokio::main]
async fn main() -> ExitCode {
    svc_common::startup::main(
        "payment-svc",
        "The payment service of the stack. With no command it serves, configured by the environment.",
        &[("database_url", "DATABASE_URL"), ("webhook_secret", "WEBHOOK_SECRET")],
        |config: Config| async move {
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
