//! One module per subcommand: `Args` and `run`.

use std::path::{Path, PathBuf};

use crate::{config::StackConfig, state::StateDir, ui::Ui};

pub mod backup;
pub mod certs;
pub mod cluster;
pub mod completions;
pub mod config;
pub mod down;
pub mod logs;
pub mod ps;
pub mod restart;
pub mod restore;
pub mod scale;
pub mod secrets;
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

    /// The effective configuration, with the instance counts `scale` set; a bad file is an
    /// error that names the key.
    pub fn config(&self) -> anyhow::Result<StackConfig> {
        let mut config = self.configured()?;
        self.state.scale()?.apply(&mut config);
        Ok(config)
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

/// Refuses a command that does not run on a `[cluster]` stack yet, before it changes anything.
pub fn single_host_only(config: &StackConfig, command: &str) -> anyhow::Result<()> {
    if config.cluster.is_some() {
        anyhow::bail!(
            "`stackctl {command}` does not run on a [cluster] stack yet; on a cluster, `up`, `ps`, `scale`, `restart`, `down` and `cluster` do"
        );
    }
    Ok(())
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
