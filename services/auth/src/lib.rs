//! The auth service: registration, login, JWT access tokens and rotating refresh tokens.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod passwords;
pub mod routes;
pub mod startup;
pub mod tokens;
pub mod user_cache;

/// The version of the service, as `--version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The program: serve (with no command), or probe a running instance (`healthcheck`,
/// `metrics`). `args` is the command line, the program's name first; `auth-svc` and
/// `stackctl serve auth` both run this.
pub async fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> std::process::ExitCode {
    svc_common::startup::main(
        "auth-svc",
        "The auth service of the stack. With no command it serves, configured by the environment.",
        args,
        &[
            ("database_url", "DATABASE_URL"),
            ("jwt_secret", "JWT_SECRET"),
        ],
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
