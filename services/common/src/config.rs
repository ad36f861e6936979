//! Configuration pieces both services read from the environment.

use std::{fmt, path::Path, str::FromStr};

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

/// Parses a service configuration from the environment alone (the service run with no
/// arguments), with the secrets given as files.
pub fn from_env<C: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    files: &SecretFiles,
) -> Result<C, clap::Error> {
    let matches = files
        .apply(C::augment_args(clap::Command::new(name)))
        .try_get_matches_from([name])?;
    C::from_arg_matches(&matches)
}

/// Secrets given as files: `VAR_FILE` names a file (a Docker swarm secret under /run/secrets,
/// say) whose content, less a final newline, is the value of `VAR` when `VAR` itself is not
/// set. The value reaches clap as the argument's default, never the environment, so no child
/// process and no /proc/PID/environ sees it.
#[derive(Default)]
pub struct SecretFiles {
    /// Argument id and value.
    values: Vec<(String, Secret)>,
}

impl SecretFiles {
    /// Reads the files of `secrets` (argument ids paired with variable names).
    pub fn read(secrets: &[(&str, &str)]) -> Result<Self, String> {
        let mut values = Vec::new();
        for (id, var) in secrets {
            if std::env::var_os(var).is_some() {
                continue;
            }
            let Some(path) = std::env::var_os(format!("{var}_FILE")) else {
                continue;
            };
            let path = Path::new(&path);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{var}_FILE: cannot read {}: {e}", path.display()))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            values.push(((*id).to_owned(), Secret::from(value)));
        }
        Ok(Self { values })
    }

    /// `cmd` with each secret read from a file as its argument's value.
    pub fn apply(&self, mut cmd: clap::Command) -> clap::Command {
        for (id, value) in &self.values {
            let value = value.expose().to_owned();
            cmd = cmd.mut_arg(id, |arg| {
                arg.default_value(value)
                    .hide_default_value(true)
                    .required(false)
            });
        }
        cmd
    }
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

/// How an instance leaves when it is told to stop.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Leaving {
    /// Milliseconds to go on taking new requests after SIGTERM before the listener closes (at
    /// most 10000). On a swarm the edge learns that an instance leaves from Docker's DNS, which
    /// other nodes hear of by gossip, possibly after the engine's own two seconds of grace.
    #[arg(long, env = "STOP_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub stop_delay_ms: u64,
}

impl Leaving {
    pub fn stop_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stop_delay_ms)
    }
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
