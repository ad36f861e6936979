//! `.stackctl/`: what stackctl generates and keeps beside the configuration (secrets,
//! certificate, rendered nginx configuration) and the lock against concurrent runs.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::{config::StackConfig, stack::App};

pub struct StateDir {
    root: PathBuf,
}

/// Generated once and kept: the stack's credentials.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    pub jwt_secret: String,
    pub webhook_secret: String,
    /// Passwords of the databases' superusers (backups, restores, administration).
    pub auth_db_password: String,
    pub payments_db_password: String,
    /// Passwords of the roles the services connect as (missing in files from before them).
    #[serde(default)]
    pub auth_app_password: String,
    #[serde(default)]
    pub payments_app_password: String,
    /// Encrypts the archives' copy off the host (`backup.copy_to`): without it the copy cannot
    /// be read, so it must be kept apart from this machine too.
    #[serde(default)]
    pub archive_cipher_pass: String,
}

impl Secrets {
    fn generate() -> Self {
        Self {
            jwt_secret: random_secret(48),
            webhook_secret: random_secret(32),
            auth_db_password: random_secret(24),
            payments_db_password: random_secret(24),
            auth_app_password: random_secret(24),
            payments_app_password: random_secret(24),
            archive_cipher_pass: random_secret(48),
        }
    }

    /// Generates the secrets a file from an earlier version lacks; whether it did.
    fn complete(&mut self) -> bool {
        let mut added = false;
        for password in [&mut self.auth_app_password, &mut self.payments_app_password] {
            if password.is_empty() {
                *password = random_secret(24);
                added = true;
            }
        }
        if self.archive_cipher_pass.is_empty() {
            self.archive_cipher_pass = random_secret(48);
            added = true;
        }
        added
    }

    /// The password of the role a service connects as.
    pub fn app_password(&self, app: App) -> &str {
        match app {
            App::Auth => &self.auth_app_password,
            App::Payments => &self.payments_app_password,
        }
    }

    /// Name and value of each secret, for `secrets show`.
    pub fn entries(&self) -> [(&'static str, &str); 7] {
        [
            ("jwt_secret", &self.jwt_secret),
            ("webhook_secret", &self.webhook_secret),
            ("auth_db_password", &self.auth_db_password),
            ("payments_db_password", &self.payments_db_password),
            ("auth_app_password", &self.auth_app_password),
            ("payments_app_password", &self.payments_app_password),
            ("archive_cipher_pass", &self.archive_cipher_pass),
        ]
    }
}

impl Secrets {
    /// Reads the `NAME=VALUE` lines `secrets show` prints (blank lines and `#` comments
    /// aside): every secret, once each, nothing else. Errors name lines and secrets, never a
    /// value.
    pub fn from_listing(text: &str) -> anyhow::Result<Self> {
        let names: Vec<&str> = Self::default().entries().iter().map(|(n, _)| *n).collect();
        let mut values = serde_json::Map::new();
        for (number, line) in text.lines().enumerate() {
            let number = number + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                bail!("line {number}: not NAME=VALUE");
            };
            let name = name.trim();
            if !names.contains(&name) {
                bail!(
                    "line {number}: no secret is named {name:?}; the secrets are {}",
                    names.join(", ")
                );
            }
            if value.is_empty() || value.contains(char::is_whitespace) {
                bail!("line {number}: {name} is empty or has blanks in it");
            }
            if values
                .insert(name.to_owned(), value.to_owned().into())
                .is_some()
            {
                bail!("line {number}: {name} a second time");
            }
        }
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !values.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            bail!("{} missing", missing.join(", "));
        }
        Ok(serde_json::from_value(values.into())?)
    }

    fn same_as(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

fn random_secret(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Instance counts set by `stackctl scale`, kept so that `up` keeps them. Each remembers the
/// configured count it was set over: once the configuration names another count, that wins.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Scale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Scaled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Scaled>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Scaled {
    pub instances: u32,
    pub configured: u32,
}

impl Scale {
    fn entry(&mut self, app: App) -> &mut Option<Scaled> {
        match app {
            App::Auth => &mut self.auth,
            App::Payments => &mut self.payments,
        }
    }

    /// Records `instances` for `app` over the configured count.
    pub fn set(&mut self, app: App, instances: u32, configured: u32) {
        *self.entry(app) = (instances != configured).then_some(Scaled {
            instances,
            configured,
        });
    }

    /// `config` with the counts `scale` set, where the configuration has not changed since.
    pub fn apply(mut self, config: &mut StackConfig) {
        for app in App::ALL {
            if let Some(scaled) = *self.entry(app)
                && scaled.configured == config.instances(app)
            {
                config.set_instances(app, scaled.instances);
            }
        }
    }
}

/// Held while a command changes the stack; released on drop.
pub struct Lock {
    _file: File,
}

impl StateDir {
    /// `.stackctl/` beside the configuration file.
    pub fn beside(config_file: &Path) -> Self {
        let dir = config_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self {
            root: dir.join(".stackctl"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the folder (0700: it holds secrets).
    pub fn ensure(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", self.root.display()))
    }

    /// Takes the lock, or says who to wait for.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        self.ensure()?;
        let path = self.path("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another stackctl command is changing this stack (lock {}); wait for it to finish",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// The stack's secrets, generated and written (0600) on first use.
    pub fn secrets(&self) -> anyhow::Result<Secrets> {
        let path = self.path("secrets.json");
        if path.exists() {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut secrets: Secrets = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is damaged; restore it from a copy (deleting it makes new secrets that the existing databases will not accept)",
                    path.display()
                )
            })?;
            if secrets.complete() {
                write_private(&path, serde_json::to_string_pretty(&secrets)?.as_bytes())?;
            }
            return Ok(secrets);
        }
        self.ensure()?;
        let secrets = Secrets::generate();
        write_private(&path, serde_json::to_string_pretty(&secrets)?.as_bytes())?;
        Ok(secrets)
    }

    /// The counts `scale` set (none when it never ran).
    pub fn scale(&self) -> anyhow::Result<Scale> {
        let path = self.path("scale.json");
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is damaged; delete it to go back to the configured instance counts",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Scale::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save_scale(&self, scale: &Scale) -> anyhow::Result<()> {
        self.ensure()?;
        write_with_mode(
            &self.path("scale.json"),
            serde_json::to_string_pretty(scale)?.as_bytes(),
            0o644,
        )
    }

    /// Takes `secrets` (another host's, from `secrets show`) as the stack's, before it has any:
    /// existing secrets are what its databases and clients accept, so they are never replaced.
    /// Whether they were new (importing the same ones again changes nothing).
    pub fn import_secrets(&self, secrets: &Secrets) -> anyhow::Result<bool> {
        let path = self.path("secrets.json");
        if let Some(existing) = self.existing_secrets()? {
            if existing.same_as(secrets) {
                return Ok(false);
            }
            bail!(
                "{} holds other secrets already, which this stack's databases and clients use; import is for a new host, before its first `stackctl up` (to start this one again from the imported ones: `stackctl down --volumes`, delete that file, import, then up and restore)",
                path.display()
            );
        }
        self.ensure()?;
        write_private(&path, serde_json::to_string_pretty(secrets)?.as_bytes())?;
        Ok(true)
    }

    /// The secrets if they were generated already.
    pub fn existing_secrets(&self) -> anyhow::Result<Option<Secrets>> {
        if self.path("secrets.json").exists() {
            self.secrets().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Writes a file readable by its owner only, atomically (temporary file, then rename).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file atomically with the given mode.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_secrets_are_every_one_once_and_never_replace_others() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        let other = tempfile::tempdir().unwrap();
        let lost = StateDir::beside(&other.path().join("stack.toml"))
            .secrets()
            .unwrap();
        let listing: String = lost
            .entries()
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        let read = Secrets::from_listing(&format!("# from the old host\n\n{listing}")).unwrap();
        assert!(read.same_as(&lost));
        assert!(state.import_secrets(&read).unwrap());
        assert!(state.secrets().unwrap().same_as(&lost));
        let mode = fs::metadata(state.path("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!state.import_secrets(&read).unwrap(), "the same again");

        let mut changed = read.clone();
        changed.jwt_secret.push('x');
        let err = state.import_secrets(&changed).unwrap_err().to_string();
        assert!(err.contains("holds other secrets already"), "{err}");
        assert!(!err.contains(&changed.jwt_secret), "{err}");
        assert!(state.secrets().unwrap().same_as(&lost), "unchanged");

        let without = listing.replace(&format!("jwt_secret={}\n", lost.jwt_secret), "");
        for (text, why) in [
            (without.clone(), "jwt_secret missing"),
            (
                format!("{listing}jwt_secret=again\n"),
                "line 8: jwt_secret a second time",
            ),
            (
                format!("{listing}api_key=abc\n"),
                "line 8: no secret is named \"api_key\"",
            ),
            (
                format!("{without}jwt_secret=\n"),
                "line 7: jwt_secret is empty",
            ),
            (format!("{without}jwt_secret=a b\n"), "has blanks"),
            ("jwt_secret\n".to_owned(), "line 1: not NAME=VALUE"),
        ] {
            let err = Secrets::from_listing(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
            assert!(!err.contains(&lost.webhook_secret), "{err}");
        }
    }

    #[test]
    fn secrets_are_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        assert!(state.existing_secrets().unwrap().is_none());
        let first = state.secrets().unwrap();
        let again = state.secrets().unwrap();
        assert_eq!(first.jwt_secret, again.jwt_secret);
        assert!(first.jwt_secret.len() >= 32);
        let mode = fs::metadata(state.path("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{first:?}").contains(&first.jwt_secret));
    }

    #[test]
    fn a_secrets_file_from_before_the_app_roles_is_completed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        state.ensure().unwrap();
        let old = r#"{"jwt_secret":"j","webhook_secret":"w","auth_db_password":"a","payments_db_password":"p"}"#;
        write_private(&state.path("secrets.json"), old.as_bytes()).unwrap();
        let first = state.secrets().unwrap();
        assert_eq!(
            (first.jwt_secret.as_str(), first.auth_db_password.as_str()),
            ("j", "a")
        );
        assert!(first.auth_app_password.len() >= 32);
        assert_ne!(first.auth_app_password, first.payments_app_password);
        let again = state.secrets().unwrap();
        assert_eq!(again.app_password(App::Auth), first.auth_app_password);
        assert_eq!(
            again.app_password(App::Payments),
            first.payments_app_password
        );
        let mode = fs::metadata(state.path("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_scaled_count_holds_until_the_configuration_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        let mut scale = state.scale().unwrap();
        scale.set(App::Auth, 3, 2);
        state.save_scale(&scale).unwrap();

        let mut config = StackConfig::default();
        state.scale().unwrap().apply(&mut config);
        assert_eq!(config.services.auth.instances, 3);
        assert_eq!(config.services.payments.instances, 2);

        let mut edited = StackConfig::default();
        edited.services.auth.instances = 4;
        state.scale().unwrap().apply(&mut edited);
        assert_eq!(edited.services.auth.instances, 4);
    }

    #[test]
    fn second_lock_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        let held = state.lock().unwrap();
        assert!(state.lock().is_err());
        drop(held);
        assert!(state.lock().is_ok());
    }
}
