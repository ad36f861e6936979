//! The release history: each change stackctl makes to what runs, as one JSON line appended to
//! `.stackctl/history.jsonl` (never rewritten, kept by `down`), with what ran after it.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    config::StackConfig,
    stack::App,
    state::{StateDir, write_private},
};

pub const FILE: &str = "history.jsonl";

/// One command that changed, or tried to change, what runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// Who ran it, and on which host.
    pub user: String,
    pub host: String,
    /// Its arguments, as typed after `stackctl`.
    pub command: String,
    /// What ran once it had finished.
    pub release: Release,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// What runs: each service's image and instance count, and the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The image id each service's containers run, by service (`auth`, `auth-db`, `nginx` …);
    /// several when a change was cut short, comma-separated.
    pub images: BTreeMap<String, String>,
    /// Instances running, by service.
    pub instances: BTreeMap<String, u32>,
    /// SHA-256 of the effective configuration (`stackctl config`) but its instance counts,
    /// first 12 hex digits.
    pub config_hash: String,
}

/// The hash a release records of `config`. Instance counts are left out: they are recorded
/// on their own, and a rollback keeps them.
pub fn config_hash(config: &StackConfig) -> anyhow::Result<String> {
    let mut settings = config.clone();
    for app in App::ALL {
        settings.set_instances(app, 0);
    }
    let text = toml::to_string(&settings).context("serialise the configuration")?;
    Ok(hex::encode(Sha256::digest(text.as_bytes()))[..12].to_owned())
}

/// The history, oldest first. A line that does not parse (cut short by a crash) is skipped.
pub fn read(state: &StateDir) -> anyhow::Result<Vec<Entry>> {
    let path = state.path(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Appends `entry` in one write, synced to disk. After a line cut short without its newline
/// (a full disk) the entry starts a line of its own, so only the cut one is lost.
pub fn append(state: &StateDir, entry: &Entry) -> anyhow::Result<()> {
    state.ensure()?;
    let path = state.path(FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut line = Vec::new();
    if !ends_a_line(&mut file).with_context(|| format!("cannot read {}", path.display()))? {
        line.push(b'\n');
    }
    serde_json::to_writer(&mut line, entry)?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Whether the file is empty or its last byte is a newline.
fn ends_a_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.seek(SeekFrom::End(0))? == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Where the configuration each release ran with is kept, by its hash: what a rollback goes
/// back to. Private, like the configuration's webhook address.
const RELEASES: &str = "releases";

/// Keeps `config` as the configuration of the releases with its hash; returns the hash.
pub fn keep_config(state: &StateDir, config: &StackConfig) -> anyhow::Result<String> {
    let hash = config_hash(config)?;
    let path = state.path(&format!("{RELEASES}/{hash}.toml"));
    if !path.exists() {
        write_private(&path, toml::to_string(config)?.as_bytes())?;
    }
    Ok(hash)
}

/// The configuration kept for `hash`; `None` when none was (a release recorded before they
/// were kept).
pub fn kept_config(state: &StateDir, hash: &str) -> anyhow::Result<Option<StackConfig>> {
    let path = state.path(&format!("{RELEASES}/{hash}.toml"));
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether `entry` is worth recording after `previous`: a failure, or a change of what runs.
/// An `up` that found everything as it should be changed nothing.
pub fn changed(previous: Option<&Entry>, entry: &Entry) -> bool {
    entry.error.is_some() || previous.is_none_or(|p| p.release != entry.release)
}

/// The history as a table, numbered from 1 (the numbers `rollback --to` takes).
pub fn render(entries: &[Entry]) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(vec![
        "N",
        "WHEN (UTC)",
        "WHO",
        "COMMAND",
        "RESULT",
        "AUTH",
        "PAYMENTS",
        "CONFIG",
    ]);
    for c in t.column_iter_mut() {
        c.set_padding((0, 1));
    }
    for (n, e) in entries.iter().enumerate() {
        let service = |name: &str| {
            let count = e.release.instances.get(name).copied().unwrap_or(0);
            let image = e.release.images.get(name).map_or("-", |id| short(id));
            format!("{count}× {image}")
        };
        t.add_row(vec![
            (n + 1).to_string(),
            e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{}@{}", e.user, e.host),
            e.command.clone(),
            e.error.as_ref().map_or("ok", |_| "failed").to_owned(),
            service("auth"),
            service("payments"),
            e.release.config_hash.clone(),
        ]);
    }
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

/// The image ids the newest `keep` releases of each service ran, newest first: what `prune`
/// keeps beside what containers use, so that a rollback finds them.
pub fn recent_images(entries: &[Entry], keep: usize) -> BTreeSet<String> {
    let mut kept: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for entry in entries.iter().rev() {
        for (service, ids) in &entry.release.images {
            let seen = kept.entry(service).or_default();
            for id in ids.split(',').filter(|id| !id.is_empty()) {
                if seen.len() < keep && !seen.contains(&id) {
                    seen.push(id);
                }
            }
        }
    }
    kept.into_values().flatten().map(str::to_owned).collect()
}

/// An image id's first 12 hex digits (`sha256:` left out).
fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Entries for the tests of what reads the history.
#[cfg(test)]
pub mod sample {
    use super::*;

    /// `command`'s entry: auth's instances, auth's and payments' images, the configuration.
    pub fn entry(
        command: &str,
        auth: u32,
        images: [&str; 2],
        config_hash: &str,
        error: Option<&str>,
    ) -> Entry {
        Entry {
            at: "2026-11-27T07:00:00Z".parse().unwrap(),
            user: "ops".to_owned(),
            host: "edge1".to_owned(),
            command: command.to_owned(),
            release: Release {
                images: BTreeMap::from([
                    ("auth".to_owned(), images[0].to_owned()),
                    ("payments".to_owned(), images[1].to_owned()),
                ]),
                instances: BTreeMap::from([("auth".to_owned(), auth), ("payments".to_owned(), 2)]),
                config_hash: config_hash.to_owned(),
            },
            error: error.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &str, auth: u32, image: &str, error: Option<&str>) -> Entry {
        let image = format!("sha256:{image}");
        sample::entry(
            command,
            auth,
            [&image, "sha256:0123456789abcdef"],
            "9f86d081884c",
            error,
        )
    }

    #[test]
    fn only_changes_and_failures_are_worth_a_line() {
        let first = entry("up", 2, "aaaaaaaaaaaaaaaa", None);
        assert!(changed(None, &first));
        assert!(!changed(
            Some(&first),
            &entry("up", 2, "aaaaaaaaaaaaaaaa", None)
        ));
        assert!(changed(
            Some(&first),
            &entry("scale auth 3", 3, "aaaaaaaaaaaaaaaa", None)
        ));
        assert!(changed(
            Some(&first),
            &entry("up", 2, "bbbbbbbbbbbbbbbb", None)
        ));
        assert!(changed(
            Some(&first),
            &entry("up", 2, "aaaaaaaaaaaaaaaa", Some("port 80 taken"))
        ));
    }

    #[test]
    fn the_newest_releases_of_each_service_keep_their_images() {
        let entries: Vec<Entry> = ["a1", "a2", "a2", "a3", "a4", "a5", "a6"]
            .into_iter()
            .map(|image| entry("up", 2, image, None))
            .collect();
        let kept = recent_images(&entries, 3);
        let expected: BTreeSet<String> = [
            "sha256:a6",
            "sha256:a5",
            "sha256:a4",
            "sha256:0123456789abcdef",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(kept, expected);
        // A change cut short ran two images at once: both count, the newer first.
        let mut mixed = entry("up", 2, "b2", Some("cut short"));
        mixed
            .release
            .images
            .insert("auth".to_owned(), "sha256:b2,sha256:a6".to_owned());
        let mut with_mixed = entries.clone();
        with_mixed.push(mixed);
        let kept = recent_images(&with_mixed, 2);
        assert!(
            kept.contains("sha256:b2") && kept.contains("sha256:a6"),
            "{kept:?}"
        );
        assert!(!kept.contains("sha256:a5"), "{kept:?}");
        assert!(recent_images(&[], 5).is_empty());
    }

    #[test]
    fn entries_survive_a_line_cut_short_and_list_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&dir.path().join("stack.toml"));
        assert_eq!(read(&state).unwrap(), Vec::new());
        let first = entry("up", 2, "aaaaaaaaaaaaaaaa", None);
        let second = entry(
            "scale auth 3",
            3,
            "aaaaaaaaaaaaaaaa",
            Some("app_a3 did not become healthy"),
        );
        append(&state, &first).unwrap();
        // A crash in the middle of a write leaves part of a line: it is skipped.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(state.path(FILE))
            .unwrap();
        file.write_all(b"{\"at\":\"2026-11-27T07:0").unwrap();
        file.write_all(b"\n").unwrap();
        append(&state, &second).unwrap();
        // A full disk can cut a line before its newline: the next entry still gets its own.
        file.write_all(b"{\"at\":\"2026-11-27T07:1").unwrap();
        let third = entry("up", 2, "bbbbbbbbbbbbbbbb", None);
        append(&state, &third).unwrap();
        let read = read(&state).unwrap();
        assert_eq!(read, vec![first, second, third]);
        assert_eq!(
            render(&read[..2]),
            "\
N WHEN (UTC)          WHO       COMMAND      RESULT AUTH            PAYMENTS        CONFIG
1 2026-11-27 07:00:00 ops@edge1 up           ok     2× aaaaaaaaaaaa 2× 0123456789ab 9f86d081884c
2 2026-11-27 07:00:00 ops@edge1 scale auth 3 failed 3× aaaaaaaaaaaa 2× 0123456789ab 9f86d081884c
"
        );
    }
}
