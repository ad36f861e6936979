//! Configuration pieces both services read from the environment.

use std::{fmt, str::FromStr};

/// A value that must never reach a log line or an error message.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Parses a service configuration from the environment alone (the service run with no arguments).
pub fn from_env<C: clap::Args + clap::FromArgMatches>(
    name: &'static str,
) -> Result<C, clap::Error> {
    let matches = C::augment_args(clap::Command::new(name)).try_get_matches_from([name])?;
    C::from_arg_matches(&matches)
}

/// Refuses secrets given as command-line flags: they would show in `ps` to every user of the host.
pub fn secrets_from_env_only(
    matches: &clap::ArgMatches,
    ids: &[(&str, &str)],
) -> Result<(), String> {
    for (id, var) in ids {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return Err(format!(
                "pass {var} through the environment, not as a flag: command lines are visible in `ps`"
            ));
        }
    }
    Ok(())
}

/// The container health probe: `GET http://127.0.0.1:<port>/health` must answer 200.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Port the service listens on.
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

impl HealthcheckArgs {
    /// Exit status for the container runtime: 0 healthy, 1 not.
    pub async fn run(&self) -> std::process::ExitCode {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(self.timeout))
            .build();
        let status = match client {
            Ok(client) => client.get(&url).send().await.map(|r| r.status()),
            Err(e) => Err(e),
        };
        match status {
            Ok(s) if s.is_success() => std::process::ExitCode::SUCCESS,
            Ok(s) => {
                eprintln!("unhealthy: {url} answered {s}");
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("unhealthy: {url}: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}
