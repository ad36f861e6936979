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

/// A port, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsPort {
    Off,
    On(u16),
}

impl FromStr for MetricsPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::On)
            .map_err(|_| format!("{s:?} is neither a port number nor `off`"))
    }
}

/// `stackctl status` and anyone on the instance's host: prints what its metrics listener serves.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Port of the metrics listener.
    #[arg(long, env = "METRICS_PORT")]
    pub port: MetricsPort,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

impl MetricsArgs {
    /// Prints the metrics; exit status 1, with the reason, when there are none.
    pub async fn run(&self) -> std::process::ExitCode {
        let MetricsPort::On(port) = self.port else {
            eprintln!("metrics are off (METRICS_PORT=off)");
            return std::process::ExitCode::FAILURE;
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(self.timeout))
                .build()?;
            client
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        };
        match text.await {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                std::process::ExitCode::FAILURE
            }
        }
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
