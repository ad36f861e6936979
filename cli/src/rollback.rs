//! Going back to an earlier release. A [`Pin`] (`.stackctl/rollback.json`) makes the stack run
//! a kept configuration and the services' image ids instead of what the configuration file and
//! this stackctl give, until either of those changes: then `up` rolls forward. So an `up` run
//! again, by hand or by a timer, never brings back the release that was rolled back.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    config::StackConfig,
    history::{self, Entry},
    stack::App,
    state::{StateDir, write_with_mode},
};

pub const FILE: &str = "rollback.json";

/// What runs instead of what the configuration file and this stackctl say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// The history entry gone back to, numbered as `history` lists them.
    pub release: usize,
    /// Why: the command as typed, or what the watch of a change saw.
    pub reason: String,
    pub at: DateTime<Utc>,
    /// The configuration that runs, kept under this hash ([`history::kept_config`]).
    pub config_hash: String,
    /// The image id each application service runs, by service (`auth`, `payments`).
    pub images: BTreeMap<String, String>,
    /// What the pin holds over.
    pub over: Inputs,
}

/// What `up` makes of the configuration file and this stackctl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// [`history::config_hash`] of the configuration file (and environment).
    pub config_hash: String,
    /// The image ids built from this stackctl, by application service.
    pub images: BTreeMap<String, String>,
}

impl Pin {
    /// Whether the pin still holds over the configuration file's hash `configured`.
    pub fn holds_over(&self, configured: &str) -> bool {
        self.over.config_hash == configured
    }

    /// The image `app` runs while pinned.
    pub fn image(&self, app: App) -> Option<&str> {
        self.images.get(app.service().label()).map(String::as_str)
    }

    /// The configuration to run: the kept one, with `current`'s instance counts (`scale`'s
    /// business, not a release's).
    pub fn config(&self, state: &StateDir, current: &StackConfig) -> anyhow::Result<StackConfig> {
        let mut config = history::kept_config(state, &self.config_hash)?.with_context(|| {
            format!(
                "the configuration of the release rolled back to ({}) is gone from {}; delete {} to run what the configuration file says",
                self.config_hash,
                state.path("releases").display(),
                state.path(FILE).display()
            )
        })?;
        for app in App::ALL {
            config.set_instances(app, current.instances(app));
        }
        Ok(config)
    }
}

pub fn read(state: &StateDir) -> anyhow::Result<Option<Pin>> {
    let path = state.path(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is damaged; delete it to run what the configuration file says",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn save(state: &StateDir, pin: &Pin) -> anyhow::Result<()> {
    write_with_mode(
        &state.path(FILE),
        serde_json::to_string_pretty(pin)?.as_bytes(),
        0o644,
    )
}

/// Removes the pin; whether there was one.
pub fn clear(state: &StateDir) -> anyhow::Result<bool> {
    let path = state.path(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The entry (numbered from 1) a rollback of `apps` goes back to: `to` when given, else the
/// newest before the last that ran them healthy on other images or another configuration.
pub fn target(entries: &[Entry], apps: &[App], to: Option<usize>) -> anyhow::Result<usize> {
    let Some(current) = entries.last() else {
        bail!("the history is empty: there is no release to go back to");
    };
    if let Some(n) = to {
        let entry = n
            .checked_sub(1)
            .and_then(|i| entries.get(i))
            .ok_or_else(|| {
                anyhow!(
                    "--to {n}: `stackctl history` lists releases 1 to {}",
                    entries.len()
                )
            })?;
        usable(entry, apps).map_err(|why| anyhow!("--to {n}: release {n} {why}"))?;
        return Ok(n);
    }
    entries[..entries.len() - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, e)| usable(e, apps).is_ok() && differs(e, current, apps))
        .map(|(i, _)| i + 1)
        .ok_or_else(|| {
            anyhow!(
                "no earlier release ran {} healthy and differently from now; `stackctl history` lists them, `--to N` picks one",
                labels(apps)
            )
        })
}

/// Why `entry` cannot be gone back to for `apps`, if it cannot.
fn usable(entry: &Entry, apps: &[App]) -> Result<(), String> {
    if entry.error.is_some() {
        return Err("failed: go back to one that succeeded".to_owned());
    }
    for app in apps {
        let label = app.service().label();
        let running = entry.release.instances.get(label).copied().unwrap_or(0) > 0;
        match entry.release.images.get(label) {
            Some(id) if running && !id.contains(',') => {}
            _ => return Err(format!("did not leave {label} running on one image")),
        }
    }
    Ok(())
}

fn differs(entry: &Entry, current: &Entry, apps: &[App]) -> bool {
    entry.release.config_hash != current.release.config_hash
        || apps.iter().any(|app| {
            let label = app.service().label();
            entry.release.images.get(label) != current.release.images.get(label)
        })
}

fn labels(apps: &[App]) -> String {
    apps.iter()
        .map(|a| a.service().label())
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &str, auth: &str, payments: &str, config: &str, ok: bool) -> Entry {
        let error = (!ok).then_some("app_a3 exited");
        history::sample::entry(command, 2, [auth, payments], config, error)
    }

    #[test]
    fn the_default_is_the_newest_healthy_release_that_ran_the_service_differently() {
        let both = [App::Auth, App::Payments];
        let history = [
            entry("up", "a1", "p1", "c1", true),
            entry("up", "a2", "p1", "c1", true),
            entry("scale auth 3", "a2", "p1", "c1", true),
            entry("up", "a3", "p2", "c2", false),
            entry("up", "a3", "p2", "c2", true),
        ];
        // The failed one and the one that equals what runs are skipped.
        assert_eq!(target(&history, &both, None).unwrap(), 3);
        assert_eq!(target(&history, &[App::Payments], None).unwrap(), 3);
        // Only payments changed last: going back on auth alone finds the release before a2.
        let history = [
            entry("up", "a1", "p1", "c1", true),
            entry("up", "a2", "p1", "c1", true),
            entry("up", "a2", "p2", "c1", true),
        ];
        assert_eq!(target(&history, &[App::Auth], None).unwrap(), 1);
        assert_eq!(target(&history, &[App::Payments], None).unwrap(), 2);
        let err = target(&history[..1], &both, None).unwrap_err().to_string();
        assert!(
            err.contains("no earlier release ran auth and payments"),
            "{err}"
        );
        let err = target(&[], &both, None).unwrap_err().to_string();
        assert!(err.contains("history is empty"), "{err}");
    }

    #[test]
    fn to_names_a_release_that_succeeded_with_the_service_running() {
        let mut down = entry("down", "", "", "c1", true);
        down.release.images.clear();
        down.release.instances.clear();
        let history = [
            entry("up", "a1", "p1", "c1", true),
            entry("up", "a2", "p1", "c2", false),
            down,
            entry("up", "a1,a2", "p1", "c2", true),
            entry("up", "a2", "p1", "c2", true),
        ];
        assert_eq!(target(&history, &[App::Auth], Some(1)).unwrap(), 1);
        assert_eq!(target(&history, &[App::Auth], Some(5)).unwrap(), 5);
        for (n, why) in [
            (0, "--to 0: `stackctl history` lists releases 1 to 5"),
            (6, "--to 6: `stackctl history` lists releases 1 to 5"),
            (2, "--to 2: release 2 failed: go back to one that succeeded"),
            (
                3,
                "--to 3: release 3 did not leave auth running on one image",
            ),
            (
                4,
                "--to 4: release 4 did not leave auth running on one image",
            ),
        ] {
            let err = target(&history, &[App::Auth], Some(n)).unwrap_err();
            assert_eq!(err.to_string(), why);
        }
    }

    #[test]
    fn a_pin_runs_its_kept_configuration_with_the_counts_of_now() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        let mut then = StackConfig::default();
        then.services.auth.bcrypt_cost = 11;
        then.set_instances(App::Auth, 3);
        let hash = history::keep_config(&state, &then).unwrap();
        let pin = Pin {
            release: 1,
            reason: "rollback".to_owned(),
            at: "2026-11-27T07:00:00Z".parse().unwrap(),
            config_hash: hash.clone(),
            images: BTreeMap::from([("auth".to_owned(), "sha256:a1".to_owned())]),
            over: Inputs {
                config_hash: "c2".to_owned(),
                images: BTreeMap::new(),
            },
        };
        assert_eq!(read(&state).unwrap(), None);
        save(&state, &pin).unwrap();
        assert_eq!(read(&state).unwrap().as_ref(), Some(&pin));
        let now = StackConfig::default();
        let config = pin.config(&state, &now).unwrap();
        assert_eq!(config.services.auth.bcrypt_cost, 11);
        assert_eq!(config.instances(App::Auth), 2);
        assert_eq!(history::config_hash(&config).unwrap(), hash);
        assert_eq!(pin.image(App::Auth), Some("sha256:a1"));
        assert_eq!(pin.image(App::Payments), None);
        assert!(pin.holds_over("c2") && !pin.holds_over("c3"));
        assert!(clear(&state).unwrap());
        assert!(!clear(&state).unwrap());
    }
}
