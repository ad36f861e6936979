//! One module per subcommand: `Args` and `run`.

use std::path::{Path, PathBuf};

use crate::{
    config::StackConfig,
    database,
    docker::{Engine, Located},
    stack::App,
    state::StateDir,
    swarm,
    ui::Ui,
};

pub mod backup;
pub mod certs;
pub mod cluster;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod down;
pub mod events;
pub mod history;
pub mod logs;
pub mod prune;
pub mod ps;
pub mod psql;
pub mod restart;
pub mod restore;
pub mod rollback;
pub mod scale;
pub mod secrets;
pub mod serve;
pub mod status;
pub mod up;

/// What every command gets: where the configuration is, and the output.
pub struct Ctx {
    pub config_file: PathBuf,
    explicit: bool,
    pub state: StateDir,
    pub ui: Ui,
}

impl Ctx {
    pub fn new(config_file: PathBuf, explicit: bool, quiet: bool) -> Self {
        Self {
            state: StateDir::beside(&config_file),
            config_file,
            explicit,
            ui: Ui::new(quiet),
        }
    }

    /// The effective configuration: the instance counts `scale` set, and a rollback's
    /// configuration while it holds; a bad file is an error that names the key.
    pub fn config(&self) -> anyhow::Result<StackConfig> {
        let mut config = self.configured()?;
        self.state.scale()?.apply(&mut config);
        match self.rollback()? {
            Some(pin) => pin.config(&self.state, &config),
            None => Ok(config),
        }
    }

    /// The rollback that holds over the configuration file, if one does.
    pub fn rollback(&self) -> anyhow::Result<Option<crate::rollback::Pin>> {
        let configured = crate::history::config_hash(&self.configured()?)?;
        Ok(crate::rollback::read(&self.state)?.filter(|pin| pin.holds_over(&configured)))
    }

    /// The configuration as the file and environment give it, without what `scale` set.
    pub fn configured(&self) -> anyhow::Result<StackConfig> {
        StackConfig::load(&self.config_file, self.explicit)
    }

    /// Where relative paths of the configuration start: the configuration file's folder.
    pub fn base_dir(&self) -> &Path {
        self.state.root().parent().unwrap_or(Path::new("."))
    }
}

/// Where the stack runs: the local engine, or the nodes of a swarm.
pub enum Site {
    Local(Engine),
    Cluster(swarm::Nodes),
}

impl Site {
    pub async fn connect(ctx: &Ctx, config: &StackConfig) -> anyhow::Result<Self> {
        Ok(match &config.cluster {
            Some(cluster) => Self::Cluster(swarm::Nodes::connect(cluster, ctx.base_dir()).await?),
            None => Self::Local(Engine::connect_stack(&config.project).await?),
        })
    }

    /// The container of `app`'s database, on the engine that runs it.
    pub async fn database(&self, app: App) -> anyhow::Result<Located<'_>> {
        match self {
            Self::Local(engine) => Ok(Located::local(engine, database::of(app).container)),
            Self::Cluster(nodes) => {
                swarm::running_container(nodes, swarm::service_name(app.database())).await
            }
        }
    }
}

/// What a command refused before it changed anything (bad input, nothing to do it on): no
/// change, so no line in the history.
#[derive(Debug)]
pub struct Refused(pub anyhow::Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Refused {}

/// Refuses a command that reads one host's engine when the stack runs on a cluster, saying
/// what to use there instead.
pub fn on_one_host(config: &StackConfig, command: &str, instead: &str) -> anyhow::Result<()> {
    if config.cluster.is_some() {
        anyhow::bail!(
            "{command} reads one host's engine and the stack here runs on a cluster: {instead}"
        );
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, listened for from its making on: one that comes while the command is
/// busy elsewhere is not lost, and neither ends the process before it has put things back.
pub struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    pub fn listen() -> anyhow::Result<Self> {
        use anyhow::Context;
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listen for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
        })
    }

    /// Resolves when either has come.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Asks `question` on the terminal; refuses when there is none, so scripts must pass `--yes`.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} needs confirmation: pass --yes to proceed without a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
