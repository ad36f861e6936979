//! Backups of the two databases. `pg_dump` runs in the database container and its output is
//! gzipped while it streams out, into `<dir>/<db>/<db>_YYYYmmdd_HHMMSS.sql.gz.partial`; its
//! SHA-256 goes to `<file>.sha256.partial` (`sha256sum -c` reads it). Both are synced, then the
//! backup and its checksum are renamed in place and the folder synced; a run killed in between
//! is finished or swept by the next command ([`sweep`]). Times in names are UTC. Safety backups,
//! taken by `restore` of what it replaces, are named `<db>_<time>.pre-restore.sql.gz` and never
//! count as a database's latest backup. Restores check the checksum and the whole gzip stream
//! before anything is touched and replay the dump in one transaction that only the end of the
//! dump commits.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use sha2::{Digest, Sha256};

use crate::{
    database::{self, Database},
    docker::{Health, Located},
    s3::Store,
    stack::App,
    ui::Ui,
};

const SUFFIX: &str = ".sql.gz";
const SAFETY_MARK: &str = ".pre-restore";
const PARTIAL: &str = ".partial";
const CHECKSUM: &str = ".sha256";
const TIME_FORMAT: &str = "%Y%m%d_%H%M%S";
/// The last line `pg_dump` writes: a dump without it was cut short.
const DUMP_END: &[u8] = b"-- PostgreSQL database dump complete";
const CHUNK: usize = 256 * 1024;

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `stackctl backup` or the schedule.
    Backup,
    /// What a restore replaced, taken by the restore itself.
    PreRestore,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::PreRestore => "pre-restore",
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Self::Backup => "",
            Self::PreRestore => SAFETY_MARK,
        }
    }
}

/// One backup file this tool wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub kind: Kind,
    /// When it was taken (UTC), from its name.
    pub taken: NaiveDateTime,
    pub size: u64,
}

/// What the checksum beside a backup says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Verified,
    Mismatch,
    Missing,
}

/// The kind and time in a name this tool writes (`auth_20261125_020000.sql.gz`,
/// `auth_20261125_020000.pre-restore.sql.gz`), for that service.
pub fn parse_name(app: App, name: &str) -> Option<(Kind, NaiveDateTime)> {
    let stamp = name
        .strip_prefix(app.service().label())?
        .strip_prefix('_')?
        .strip_suffix(SUFFIX)?;
    let (kind, stamp) = match stamp.strip_suffix(SAFETY_MARK) {
        Some(stamp) => (Kind::PreRestore, stamp),
        None => (Kind::Backup, stamp),
    };
    // `parse_from_str` accepts a few variants; only the exact form counts as ours.
    let taken = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?;
    (taken.format(TIME_FORMAT).to_string() == stamp).then_some((kind, taken))
}

fn file_name(app: App, kind: Kind, taken: NaiveDateTime) -> String {
    format!(
        "{}_{}{}{SUFFIX}",
        app.service().label(),
        taken.format(TIME_FORMAT),
        kind.mark()
    )
}

/// The folder of the service's backups under `root`.
pub fn folder(root: &Path, app: App) -> PathBuf {
    root.join(app.service().label())
}

/// The service's backups under `root`, oldest first. Files of other names are not ours.
pub fn list(root: &Path, app: App) -> anyhow::Result<Vec<Backup>> {
    list_in(&folder(root, app), app)
}

/// The service's backups in `dir` (its folder under the backup root, or its copy's), oldest
/// first.
fn list_in(dir: &Path, app: App) -> anyhow::Result<Vec<Backup>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let Some((kind, taken)) = name.to_str().and_then(|n| parse_name(app, n)) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            found.push(Backup {
                path: entry.path(),
                kind,
                taken,
                size: meta.len(),
            });
        }
    }
    found.sort_by_key(|b| b.taken);
    Ok(found)
}

/// The service's newest backup that is not a safety copy: what `restore SVC latest` takes.
pub fn latest(root: &Path, app: App) -> anyhow::Result<Option<Backup>> {
    Ok(list(root, app)?
        .into_iter()
        .rfind(|b| b.kind == Kind::Backup))
}

/// Which backups are kept: every one of the last `days` days, the newest of each of the last
/// `weeks` calendar weeks (Monday to Sunday, this one included) and of the last `months`
/// calendar months; always the newest of each kind. Safety copies go by `days` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub weeks: u32,
    pub months: u32,
}

/// Why a backup is kept: the first tier that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest of its kind.
    Newest,
    /// Taken within the last `days` days.
    Recent,
    /// The newest of the week that starts on this Monday.
    Week(NaiveDate),
    /// The newest of this month (its first day).
    Month(NaiveDate),
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Newest => write!(f, "newest"),
            Self::Recent => write!(f, "recent"),
            Self::Week(monday) => write!(f, "week of {monday}"),
            Self::Month(first) => write!(f, "month {}", first.format("%Y-%m")),
        }
    }
}

/// A backup and whether the retention keeps it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub backup: Backup,
    pub keep: Option<Keep>,
}

/// What `retention` keeps of `backups` (oldest first, as [`list`] gives them) at `now`.
pub fn judge(backups: Vec<Backup>, retention: Retention, now: NaiveDateTime) -> Vec<Verdict> {
    let cutoff = now - TimeDelta::days(i64::from(retention.days));
    let monday = |t: NaiveDateTime| {
        t.date() - TimeDelta::days(i64::from(t.weekday().num_days_from_monday()))
    };
    let first_of_month = |t: NaiveDateTime| t.date().with_day(1).unwrap_or(t.date());
    let months_ago = |t: NaiveDateTime| {
        (i64::from(now.year()) * 12 + i64::from(now.month()))
            - (i64::from(t.year()) * 12 + i64::from(t.month()))
    };
    let weeks_ago = |t: NaiveDateTime| (monday(now) - monday(t)).num_days() / 7;
    let newest_of = |kind: Kind| backups.iter().rposition(|b| b.kind == kind);
    let newest = [newest_of(Kind::Backup), newest_of(Kind::PreRestore)];
    backups
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // Newest first within each week and month: the next one in the list is newer.
            let next = backups[i + 1..].iter().find(|n| n.kind == b.kind);
            let last_of = |bucket: &dyn Fn(NaiveDateTime) -> NaiveDate| {
                next.is_none_or(|n| bucket(n.taken) != bucket(b.taken))
            };
            let keep = if newest.contains(&Some(i)) {
                Some(Keep::Newest)
            } else if b.taken >= cutoff {
                Some(Keep::Recent)
            } else if b.kind == Kind::PreRestore {
                None
            } else if weeks_ago(b.taken) < i64::from(retention.weeks) && last_of(&monday) {
                Some(Keep::Week(monday(b.taken)))
            } else if months_ago(b.taken) < i64::from(retention.months) && last_of(&first_of_month)
            {
                Some(Keep::Month(first_of_month(b.taken)))
            } else {
                None
            };
            Verdict {
                backup: b.clone(),
                keep,
            }
        })
        .collect()
}

/// What `retention` does not keep of `backups` (oldest first) at `now`.
fn unkept(backups: Vec<Backup>, retention: Retention, now: NaiveDateTime) -> Vec<Backup> {
    judge(backups, retention, now)
        .into_iter()
        .filter(|v| v.keep.is_none())
        .map(|v| v.backup)
        .collect()
}

/// Deletes the backups `retention` does not keep in the service's folder `dir` (under the
/// backup root, or the copy's), never a file this tool did not name. Returns what it deleted
/// (or would, `dry_run`).
pub fn prune(
    dir: &Path,
    app: App,
    retention: Retention,
    now: NaiveDateTime,
    dry_run: bool,
) -> anyhow::Result<Vec<Backup>> {
    let old = unkept(list_in(dir, app)?, retention, now);
    if !dry_run {
        for b in &old {
            fs::remove_file(&b.path)
                .with_context(|| format!("cannot delete {}", b.path.display()))?;
            remove_if_exists(&checksum_path(&b.path))?;
        }
    }
    Ok(old)
}

fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CHECKSUM);
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Compares the file with the SHA-256 written beside it.
pub fn checksum(path: &Path) -> anyhow::Result<Checksum> {
    let expected = match fs::read_to_string(checksum_path(path)) {
        Ok(text) => text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checksum::Missing),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the checksum of {}", path.display()));
        }
    };
    Ok(if digest_of(path)? == expected {
        Checksum::Verified
    } else {
        Checksum::Mismatch
    })
}

/// The SHA-256 of a file, in hex.
fn digest_of(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hashing = Hashing::new(std::io::sink());
    std::io::copy(&mut file, &mut hashing)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Checks a backup end to end before a restore: its checksum, then the whole gzip stream, which
/// must hold a complete `pg_dump`. Nothing is touched.
pub fn verify(path: &Path) -> anyhow::Result<()> {
    match checksum(path)? {
        Checksum::Verified => {}
        Checksum::Missing => bail!(
            "{} has no checksum file beside it ({}); only backups that stackctl wrote can be restored",
            path.display(),
            checksum_path(path).display()
        ),
        Checksum::Mismatch => bail!(
            "{} does not match its checksum: it changed after it was written (damaged or edited); pick another backup (stackctl backup list)",
            path.display()
        ),
    }
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gz = GzDecoder::new(file);
    let mut buf = vec![0; CHUNK];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = gz
            .read(&mut buf)
            .with_context(|| format!("{} is not a complete gzip stream", path.display()))?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        let keep = tail.len().saturating_sub(256);
        tail.drain(..keep);
    }
    if !tail.windows(DUMP_END.len()).any(|w| w == DUMP_END) {
        bail!(
            "{} does not hold a complete pg_dump (its last line is missing)",
            path.display()
        );
    }
    Ok(())
}

/// Takes a backup of the service's database into `root/<db>/`. The caller holds the stack's
/// lock, so no other backup of this stack is under way.
pub async fn take(
    db: &Located<'_>,
    root: &Path,
    app: App,
    kind: Kind,
    ui: &Ui,
) -> anyhow::Result<Backup> {
    let label = app.service().label();
    if db.engine.health(&db.container).await? != Health::Healthy {
        bail!(
            "{} is not running and healthy; start the stack with `stackctl up`",
            database::of(app).container
        );
    }
    let dir = root.join(label);
    // Dumps hold personal data and password hashes: for the owner's eyes only.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the backup folder {}", dir.display()))?;
    // One backup a second at most: names carry the second.
    let (taken, name) = loop {
        let taken = Utc::now().naive_utc();
        let name = file_name(app, kind, taken);
        if !dir.join(&name).exists() {
            break (taken, name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let path = dir.join(&name);
    let partial = partial_path(&path);
    let sum = checksum_path(&path);
    let sum_partial = partial_path(&sum);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let finished = async {
        let digest = dump(db, app, file, ui).await?;
        write_synced(&sum_partial, format!("{digest}  {name}\n").as_bytes())?;
        // The backup's rename is the commit; a checksum left partial by a crash right after
        // it is finished by `sweep`.
        rename(&partial, &path)?;
        rename(&sum_partial, &sum)?;
        sync_dir(&dir)
    }
    .await;
    if let Err(e) = finished {
        // Nothing that looks like a backup stays behind.
        for leftover in [&partial, &sum_partial, &path, &sum] {
            let _ = fs::remove_file(leftover);
        }
        return Err(e.context(format!(
            "backup of the {label} database failed; nothing was kept"
        )));
    }
    let size = fs::metadata(&path)?.len();
    Ok(Backup {
        path,
        kind,
        taken,
        size,
    })
}

/// Finishes or removes what a killed backup or copy left in the service's folder `dir`: a backup whose
/// checksum was not renamed yet gets it (when it matches), partial files go, and so do
/// checksums without their backup. Only names this tool writes are touched. Call it under the
/// stack's lock, so no backup is under way. Returns one line per file it changed.
pub fn sweep(dir: &Path, app: App) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let ours = |backup: &str| parse_name(app, backup).is_some();
    let mut done = Vec::new();
    // Checksums waiting for their rename first, so their backups are not taken for orphans.
    for name in &names {
        let Some(backup) = name
            .strip_suffix(PARTIAL)
            .and_then(|n| n.strip_suffix(CHECKSUM))
        else {
            continue;
        };
        if !ours(backup) {
            continue;
        }
        let path = dir.join(backup);
        let sum = checksum_path(&path);
        let sum_partial = dir.join(name);
        if path.is_file() && !sum.exists() {
            rename(&sum_partial, &sum)?;
            if checksum(&path)? == Checksum::Verified {
                done.push(format!("finished {} (its checksum)", path.display()));
            } else {
                // A checksum that does not match is no checksum: restore will refuse the file.
                remove_if_exists(&sum)?;
                done.push(format!(
                    "{} does not match the checksum written with it; left without one",
                    path.display()
                ));
            }
        } else {
            remove_if_exists(&sum_partial)?;
            done.push(format!("removed {}", sum_partial.display()));
        }
    }
    for name in &names {
        let path = dir.join(name);
        let stale = match name.strip_suffix(PARTIAL) {
            Some(backup) => ours(backup),
            None => name
                .strip_suffix(CHECKSUM)
                .is_some_and(|backup| ours(backup) && !dir.join(backup).exists()),
        };
        if stale && path.exists() {
            remove_if_exists(&path)?;
            done.push(format!("removed {}", path.display()));
        }
    }
    if !done.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

/// Copies a backup and its checksum into `dir` (the copy off the host): each written as
/// `.partial`, synced, checked against the checksum, then renamed, the backup last; a copy cut
/// short leaves only partial files there. Returns the copy's path.
pub fn copy_to(backup: &Backup, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = backup
        .path
        .file_name()
        .context("a backup without a file name")?;
    let to = dir.join(name);
    let sum_to = checksum_path(&to);
    let (partial, sum_partial) = (partial_path(&to), partial_path(&sum_to));
    for leftover in [&partial, &sum_partial] {
        remove_if_exists(leftover)?;
    }
    let sum = fs::read_to_string(checksum_path(&backup.path))
        .with_context(|| format!("cannot read the checksum of {}", backup.path.display()))?;
    fs::copy(&backup.path, &partial)
        .and_then(|_| File::open(&partial)?.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    if sum.split_whitespace().next() != Some(digest_of(&partial)?.as_str()) {
        bail!(
            "the copy {} does not match the checksum of {}",
            partial.display(),
            backup.path.display()
        );
    }
    write_synced(&sum_partial, sum.as_bytes())?;
    rename(&sum_partial, &sum_to)?;
    rename(&partial, &to)?;
    sync_dir(dir)?;
    Ok(to)
}

/// The service's dumps in the copy's S3 store: `<prefix>/<name>`, as in a folder. An object
/// appears whole or not at all, so nothing is written `.partial`; the checksum goes first and
/// the dump last, and a checksum without its dump is what a killed copy or prune left.
pub struct StoreFolder {
    pub store: Store,
    pub bucket: String,
    /// The folder's key prefix, without a slash at the end.
    pub prefix: String,
}

impl StoreFolder {
    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }

    /// The names right under the prefix, with their sizes.
    async fn names(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let within = format!("{}/", self.prefix);
        Ok(self
            .store
            .list(&within)
            .await?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(&within)?;
                (!name.contains('/')).then(|| (name.to_owned(), o.size))
            })
            .collect())
    }

    /// Copies a backup and its checksum there. Returns where the copy is.
    pub async fn copy(&self, backup: &Backup) -> anyhow::Result<String> {
        let name = backup
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .context("a backup without a file name")?;
        let sum = checksum_path(&backup.path);
        self.store
            .put(&self.key(&format!("{name}{CHECKSUM}")), &sum)
            .await?;
        self.store.put(&self.key(name), &backup.path).await?;
        let copied = self.names().await?;
        if !copied.contains(&(name.to_owned(), backup.size)) {
            bail!(
                "the copy {} is not the size of {} after its upload",
                self.url(name),
                backup.path.display()
            );
        }
        Ok(self.url(name))
    }

    /// Removes what a killed copy or prune left: checksums without their dump. Returns one
    /// line per object removed.
    pub async fn sweep(&self, app: App) -> anyhow::Result<Vec<String>> {
        let names = self.names().await?;
        let mut done = Vec::new();
        for (name, _) in &names {
            let orphan = name.strip_suffix(CHECKSUM).is_some_and(|backup| {
                parse_name(app, backup).is_some() && !names.iter().any(|(n, _)| n == backup)
            });
            if orphan {
                self.store.delete(&self.key(name)).await?;
                done.push(format!("removed {}", self.url(name)));
            }
        }
        Ok(done)
    }

    /// Deletes the dumps `retention` does not keep, as [`prune`] does in a folder.
    pub async fn prune(
        &self,
        app: App,
        retention: Retention,
        now: NaiveDateTime,
        dry_run: bool,
    ) -> anyhow::Result<Vec<Backup>> {
        let mut found: Vec<Backup> = self
            .names()
            .await?
            .into_iter()
            .filter_map(|(name, size)| {
                let (kind, taken) = parse_name(app, &name)?;
                Some(Backup {
                    path: PathBuf::from(self.url(&name)),
                    kind,
                    taken,
                    size,
                })
            })
            .collect();
        found.sort_by_key(|b| b.taken);
        let old = unkept(found, retention, now);
        if !dry_run {
            for b in &old {
                let name = b
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                // The dump first: a prune killed in between leaves a checksum that `sweep` removes.
                self.store.delete(&self.key(name)).await?;
                self.store
                    .delete(&self.key(&format!("{name}{CHECKSUM}")))
                    .await?;
            }
        }
        Ok(old)
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL);
    PathBuf::from(name)
}

fn write_synced(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("cannot write {}", to.display()))
}

/// Makes the folder's entries (new names, renames) durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Streams `pg_dump` through gzip into `file`; returns the SHA-256 of what was written.
async fn dump(at: &Located<'_>, app: App, file: File, ui: &Ui) -> anyhow::Result<String> {
    let Database {
        container,
        superuser: user,
        name: db,
        ..
    } = database::of(app);
    let mut gz = GzEncoder::new(Hashing::new(BufWriter::new(file)), Compression::default());
    let bar = ui.bytes(&format!("pg_dump {db}"));
    let (code, stderr) = at
        .engine
        .exec_out(
            &at.container,
            "postgres",
            &[
                "pg_dump",
                "--username",
                user,
                "--dbname",
                db,
                "--clean",
                "--if-exists",
                "--no-password",
            ],
            |chunk| {
                bar.inc(chunk.len() as u64);
                gz.write_all(chunk).context("cannot write the backup")
            },
        )
        .await?;
    bar.finish_and_clear();
    if code != 0 {
        bail!(
            "pg_dump in {container} exited with {code}: {}",
            stderr.trim()
        );
    }
    let hashing = gz.finish().context("cannot write the backup")?;
    let digest = hex::encode(hashing.hasher.finalize());
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write the backup")?;
    file.sync_all().context("cannot write the backup")?;
    Ok(digest)
}

/// Passes bytes through and hashes them on the way.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The `application_name` of a restoring session, so that the end of an interrupted one can be
/// seen.
const RESTORE_SESSION: &str = "stackctl-restore";
/// What psql prints once the dump's transaction has committed: the only proof of a commit.
const COMMITTED: &str = "stackctl: restore committed";
/// What psql prints before the dump with the id of its transaction.
const TRANSACTION: &str = "stackctl: restore transaction ";
/// Opens the dump's transaction and names it; psql itself commits nothing.
const OPENING: &[u8] =
    b"BEGIN;\nSELECT 'stackctl: restore transaction ' || pg_current_xact_id();\n";
/// Sent only after the whole dump: the commit, then the proof of it.
const CLOSING: &str = "\nCOMMIT;\n\\echo 'stackctl: restore committed'\n";

/// What a restore of the service's database also does, in the same transaction: the service's
/// role owns what the dump made (a dump from before it existed names the superuser). And for
/// auth: refresh tokens revoked or rotated since the backup would be valid again, so every login
/// the backup brings back is revoked, and its users log in again.
fn restore_also(app: App) -> String {
    let revoke = match app {
        App::Auth => {
            "UPDATE public.refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL;\n"
        }
        App::Payments => "",
    };
    format!("\n{}{revoke}", database::of(app).ownership_sql())
}

/// Replays a verified backup into the service's database with `psql`, all or nothing. The dump
/// runs in a transaction that only its own last lines commit: when the stream stops before them
/// (stackctl interrupted or killed, the Docker connection lost, a read error) psql reads end of
/// file with the transaction open and PostgreSQL rolls it back, as it does at the first error.
/// `transaction` gets the id of the replay's transaction as soon as it has one, so that
/// [`settle`] can tell what became of it whenever the replay stopped.
pub async fn replay(
    at: &Located<'_>,
    app: App,
    path: &Path,
    transaction: &std::sync::Mutex<Option<u64>>,
) -> anyhow::Result<()> {
    let Database {
        container,
        superuser: user,
        name: db,
        ..
    } = database::of(app);
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<u8>>>(8);
    let source = path.to_owned();
    // Decompression is blocking work: a thread of its own feeds the exec's standard input.
    let reader = std::thread::spawn(move || {
        let closing = format!("{}{CLOSING}", restore_also(app));
        let fed = feed(&source, closing.as_bytes(), |chunk| {
            tx.blocking_send(Ok(chunk)).is_ok()
        });
        if let Err(e) = fed {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let session = format!("dbname={db} application_name={RESTORE_SESSION}");
    let result = at
        .engine
        .exec_in(
            &at.container,
            "postgres",
            &[
                "psql",
                "--username",
                user,
                "--dbname",
                &session,
                "--set",
                "ON_ERROR_STOP=1",
                "--no-psqlrc",
                "--quiet",
            ],
            rx,
            |out| {
                if let Ok(mut id) = transaction.lock()
                    && id.is_none()
                {
                    *id = transaction_id(out);
                }
            },
        )
        .await;
    let _ = reader.join();
    let (code, out) = result?;
    let committed = out.lines().any(|l| l.trim() == COMMITTED);
    if code != 0 || !committed {
        bail!(
            "psql in {container} exited with {code} before the end of the dump; the transaction was rolled back, the database is as it was:\n{}",
            out.trim()
        );
    }
    Ok(())
}

/// Hands `send` the opening, the decompressed dump and, only once all of it was read, the
/// `closing` lines. Stops early when `send` says the other side is gone.
fn feed(
    source: &Path,
    closing: &[u8],
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> anyhow::Result<()> {
    let file = File::open(source).with_context(|| format!("cannot read {}", source.display()))?;
    let mut gz = GzDecoder::new(file);
    if !send(OPENING.to_vec()) {
        return Ok(());
    }
    loop {
        let mut buf = vec![0; CHUNK];
        let n = gz
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", source.display()))?;
        if n == 0 {
            send(closing.to_vec());
            return Ok(());
        }
        buf.truncate(n);
        if !send(buf) {
            return Ok(());
        }
    }
}

fn transaction_id(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(TRANSACTION)?.parse().ok())
}

/// What became of a replay that stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Its transaction committed: the database holds the backup.
    Committed,
    /// Nothing of it is in the database.
    RolledBack,
}

/// Waits until the replay's session has ended (after an interruption psql may still be reading
/// its last input; PostgreSQL rolls back when it ends), then tells whether its transaction
/// committed.
pub async fn settle(
    at: &Located<'_>,
    app: App,
    transaction: Option<u64>,
) -> anyhow::Result<Replayed> {
    let open = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{RESTORE_SESSION}'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out) = query(at, app, &open).await?;
        if code == 0 && out.trim() == "0" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "a restoring session is still open in {} after 60 s ({})",
                database::of(app).container,
                out.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(id) = transaction else {
        return Ok(Replayed::RolledBack);
    };
    let (code, out) = query(at, app, &format!("SELECT pg_xact_status('{id}')")).await?;
    match (code, out.trim()) {
        (0, "committed") => Ok(Replayed::Committed),
        (0, "aborted") => Ok(Replayed::RolledBack),
        _ => bail!(
            "cannot tell whether restore transaction {id} committed: {}",
            out.trim()
        ),
    }
}

/// Runs `sql` with psql as the database's superuser; its exit code and unaligned output.
pub async fn query(at: &Located<'_>, app: App, sql: &str) -> anyhow::Result<(i64, String)> {
    let db = database::of(app);
    at.engine
        .exec_as(
            &at.container,
            "postgres",
            &[
                "psql",
                "--username",
                db.superuser,
                "--dbname",
                db.name,
                "--no-psqlrc",
                "-Atc",
                sql,
            ],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days_ago: i64, now: NaiveDateTime) -> NaiveDateTime {
        now - TimeDelta::days(days_ago) + TimeDelta::minutes(1)
    }

    fn touch(root: &Path, app: App, taken: NaiveDateTime) -> PathBuf {
        touch_kind(root, app, Kind::Backup, taken)
    }

    fn touch_kind(root: &Path, app: App, kind: Kind, taken: NaiveDateTime) -> PathBuf {
        let dir = root.join(app.service().label());
        fs::create_dir_all(&dir).unwrap();
        let name = file_name(app, kind, taken);
        fs::write(dir.join(&name), b"x").unwrap();
        fs::write(dir.join(format!("{name}{CHECKSUM}")), b"y").unwrap();
        dir.join(name)
    }

    #[test]
    fn names_are_read_strictly() {
        let (kind, t) = parse_name(App::Auth, "auth_20261125_020000.sql.gz").unwrap();
        assert_eq!(kind, Kind::Backup);
        assert_eq!(t.to_string(), "2026-11-25 02:00:00");
        let (kind, t) = parse_name(App::Auth, "auth_20261125_020000.pre-restore.sql.gz").unwrap();
        assert_eq!(kind, Kind::PreRestore);
        assert_eq!(
            file_name(App::Auth, kind, t),
            "auth_20261125_020000.pre-restore.sql.gz"
        );
        for other in [
            "payments_20261125_020000.sql.gz",
            "auth_20261125_020000.sql.gz.partial",
            "auth_2026112_020000.sql.gz",
            "auth_20261125_020000.sql",
            "auth-copy_20261125_020000.sql.gz",
            "auth_20261325_020000.sql.gz",
            "auth_20261125_020000.pre-restore.sql.gz.partial",
            "auth_20261125_020000.post-restore.sql.gz",
        ] {
            assert!(parse_name(App::Auth, other).is_none(), "{other}");
        }
    }

    const DAYS_ONLY: Retention = Retention {
        days: 7,
        weeks: 0,
        months: 0,
    };

    #[test]
    fn the_tiers_keep_the_recent_days_then_the_newest_of_each_week_and_month() {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let daily: Vec<Backup> = (0..330)
            .map(|d| {
                let taken = (start + TimeDelta::days(d)).and_hms_opt(2, 0, 0).unwrap();
                Backup {
                    path: PathBuf::from(file_name(App::Payments, Kind::Backup, taken)),
                    kind: Kind::Backup,
                    taken,
                    size: 1,
                }
            })
            .collect();
        // A Thursday, after its 02:00 backup.
        let now = NaiveDate::from_ymd_opt(2026, 11, 26)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        let retention = Retention {
            days: 7,
            weeks: 4,
            months: 6,
        };
        let kept: Vec<String> = judge(daily, retention, now)
            .into_iter()
            .filter_map(|v| Some(format!("{} {}", v.backup.taken.date(), v.keep?)))
            .collect();
        assert_eq!(
            kept,
            [
                "2026-06-30 month 2026-06",
                "2026-07-31 month 2026-07",
                "2026-08-31 month 2026-08",
                "2026-09-30 month 2026-09",
                "2026-10-31 month 2026-10",
                "2026-11-08 week of 2026-11-02",
                "2026-11-15 week of 2026-11-09",
                "2026-11-20 recent",
                "2026-11-21 recent",
                "2026-11-22 recent",
                "2026-11-23 recent",
                "2026-11-24 recent",
                "2026-11-25 recent",
                "2026-11-26 newest",
            ]
        );
    }

    #[test]
    fn without_weeks_and_months_the_newest_of_a_long_silence_is_all_that_stays() {
        let taken = |d: u32| {
            NaiveDate::from_ymd_opt(2026, 3, d)
                .unwrap()
                .and_hms_opt(2, 0, 0)
                .unwrap()
        };
        let backups: Vec<Backup> = [
            (1, Kind::Backup),
            (2, Kind::PreRestore),
            (3, Kind::Backup),
            (4, Kind::PreRestore),
        ]
        .into_iter()
        .map(|(d, kind)| Backup {
            path: PathBuf::from(file_name(App::Auth, kind, taken(d))),
            kind,
            taken: taken(d),
            size: 1,
        })
        .collect();
        let now = taken(28);
        let verdicts: Vec<Option<Keep>> = judge(backups.clone(), DAYS_ONLY, now)
            .into_iter()
            .map(|v| v.keep)
            .collect();
        assert_eq!(
            verdicts,
            [None, None, Some(Keep::Newest), Some(Keep::Newest)]
        );
        let monthly = Retention {
            months: 1,
            ..DAYS_ONLY
        };
        let verdicts: Vec<Option<Keep>> = judge(backups, monthly, now)
            .into_iter()
            .map(|v| v.keep)
            .collect();
        assert_eq!(
            verdicts,
            [None, None, Some(Keep::Newest), Some(Keep::Newest)],
            "the month's newest backup is already kept, and safety copies have no tiers"
        );
    }

    #[test]
    fn prune_keeps_the_last_days_and_never_foreign_files() {
        let root = tempfile::tempdir().unwrap();
        let now = Utc::now().naive_utc();
        let paths: Vec<PathBuf> = (0..=10)
            .map(|d| touch(root.path(), App::Auth, at(d, now)))
            .collect();
        let foreign = root.path().join("auth/notes.txt");
        fs::write(&foreign, b"mine").unwrap();
        let other_app = touch(root.path(), App::Payments, at(30, now));

        let would = prune(
            &folder(root.path(), App::Auth),
            App::Auth,
            DAYS_ONLY,
            now,
            true,
        )
        .unwrap();
        assert_eq!(would.len(), 3, "8, 9 and 10 days old");
        assert!(
            paths.iter().all(|p| p.exists()),
            "a dry run deletes nothing"
        );

        let gone = prune(
            &folder(root.path(), App::Auth),
            App::Auth,
            DAYS_ONLY,
            now,
            false,
        )
        .unwrap();
        assert_eq!(gone.len(), 3);
        for (days, path) in paths.iter().enumerate() {
            assert_eq!(path.exists(), days <= 7, "{days} days old");
            assert_eq!(checksum_path(path).exists(), days <= 7);
        }
        assert!(foreign.exists());
        assert!(
            other_app.exists(),
            "another service's backups are left alone"
        );
    }

    #[test]
    fn prune_never_deletes_the_newest_backup() {
        let root = tempfile::tempdir().unwrap();
        let now = Utc::now().naive_utc();
        let old = touch(root.path(), App::Payments, at(20, now));
        let newest = touch(root.path(), App::Payments, at(9, now));
        prune(
            &folder(root.path(), App::Payments),
            App::Payments,
            DAYS_ONLY,
            now,
            false,
        )
        .unwrap();
        assert!(!old.exists());
        assert!(newest.exists());
    }

    #[test]
    fn safety_copies_are_never_latest_and_keep_their_newest() {
        let root = tempfile::tempdir().unwrap();
        let now = Utc::now().naive_utc();
        let backup = touch(root.path(), App::Auth, at(20, now));
        let old_safety = touch_kind(root.path(), App::Auth, Kind::PreRestore, at(12, now));
        let safety = touch_kind(root.path(), App::Auth, Kind::PreRestore, at(10, now));
        let newest = latest(root.path(), App::Auth).unwrap().unwrap();
        assert_eq!(
            newest.path, backup,
            "the newer safety copies are not latest"
        );
        let gone = prune(
            &folder(root.path(), App::Auth),
            App::Auth,
            DAYS_ONLY,
            now,
            false,
        )
        .unwrap();
        let gone: Vec<PathBuf> = gone.into_iter().map(|b| b.path).collect();
        assert_eq!(gone, [old_safety]);
        assert!(backup.exists() && safety.exists());
        let only_safety = tempfile::tempdir().unwrap();
        touch_kind(only_safety.path(), App::Auth, Kind::PreRestore, now);
        assert!(latest(only_safety.path(), App::Auth).unwrap().is_none());
    }

    /// A backup file and its checksum, each either final or still `.partial`.
    fn leftover(dir: &Path, name: &str, bytes: &[u8], data_done: bool, sum: Option<&str>) {
        let data = dir.join(name);
        fs::write(
            if data_done {
                data.clone()
            } else {
                partial_path(&data)
            },
            bytes,
        )
        .unwrap();
        if let Some(digest) = sum {
            fs::write(
                partial_path(&checksum_path(&data)),
                format!("{digest}  {name}\n"),
            )
            .unwrap();
        }
    }

    #[test]
    fn sweep_finishes_or_removes_what_a_killed_backup_left() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("payments");
        fs::create_dir_all(&dir).unwrap();
        let bytes = b"a finished dump";
        let digest = hex::encode(Sha256::digest(bytes));
        // Killed before the commit: both still partial.
        leftover(
            &dir,
            "payments_20261125_010000.sql.gz",
            bytes,
            false,
            Some(&digest),
        );
        // Killed while dumping: the data partial alone.
        leftover(&dir, "payments_20261125_020000.sql.gz", bytes, false, None);
        // Killed between the two renames: finished with its checksum.
        leftover(
            &dir,
            "payments_20261125_030000.sql.gz",
            bytes,
            true,
            Some(&digest),
        );
        // A checksum that does not match what was written is dropped, the data kept.
        leftover(
            &dir,
            "payments_20261125_040000.sql.gz",
            bytes,
            true,
            Some("00"),
        );
        // A checksum without its backup.
        fs::write(dir.join("payments_20261125_050000.sql.gz.sha256"), "x").unwrap();
        // Not ours: untouched.
        for foreign in [
            "notes.partial",
            "mine.sql.gz.sha256",
            "payments-x.sql.gz.partial",
        ] {
            fs::write(dir.join(foreign), "keep").unwrap();
        }

        let lines = sweep(&folder(root.path(), App::Payments), App::Payments).unwrap();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "mine.sql.gz.sha256",
                "notes.partial",
                "payments-x.sql.gz.partial",
                "payments_20261125_030000.sql.gz",
                "payments_20261125_030000.sql.gz.sha256",
                "payments_20261125_040000.sql.gz",
            ]
        );
        assert_eq!(
            checksum(&dir.join("payments_20261125_030000.sql.gz")).unwrap(),
            Checksum::Verified
        );
        assert!(
            sweep(&folder(root.path(), App::Payments), App::Payments)
                .unwrap()
                .is_empty()
        );
    }

    fn gzipped(text: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(text).unwrap();
        gz.finish().unwrap()
    }

    fn fed(path: &Path) -> (anyhow::Result<()>, Vec<u8>) {
        let mut sent = Vec::new();
        let result = feed(path, CLOSING.as_bytes(), |chunk| {
            sent.extend_from_slice(&chunk);
            true
        });
        (result, sent)
    }

    #[test]
    fn the_commit_is_sent_only_after_the_whole_dump() {
        let dir = tempfile::tempdir().unwrap();
        let dump = vec![b'x'; 3 * CHUNK + 17];
        let whole = dir.path().join("whole.sql.gz");
        fs::write(&whole, gzipped(&dump)).unwrap();
        let (result, sent) = fed(&whole);
        result.unwrap();
        assert_eq!(sent, [OPENING, &dump, CLOSING.as_bytes()].concat());

        let bytes = gzipped(&dump);
        let cut = dir.path().join("cut.sql.gz");
        fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
        let (result, sent) = fed(&cut);
        assert!(result.is_err());
        assert!(sent.starts_with(OPENING));
        assert!(
            !sent.ends_with(CLOSING.as_bytes()),
            "a stream that fails ends without the commit"
        );

        let mut calls = 0;
        feed(&whole, CLOSING.as_bytes(), |_| {
            calls += 1;
            calls < 2
        })
        .unwrap();
        assert_eq!(calls, 2, "nothing more is read once the other side is gone");
    }

    #[test]
    fn the_transaction_id_is_read_from_the_output() {
        let out = " set_config \n------------\n \nstackctl: restore transaction 7421\n";
        assert_eq!(transaction_id(out), Some(7421));
        assert_eq!(transaction_id("stackctl: restore transaction "), None);
        assert_eq!(transaction_id(""), None);
    }

    #[test]
    fn verify_refuses_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("auth_20261125_020000.sql.gz");
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(b"CREATE TABLE t ();\n--\n-- PostgreSQL database dump complete\n--\n")
            .unwrap();
        let bytes = gz.finish().unwrap();
        let write = |path: &Path, bytes: &[u8]| {
            fs::write(path, bytes).unwrap();
            let digest = hex::encode(Sha256::digest(bytes));
            fs::write(checksum_path(path), format!("{digest}  x\n")).unwrap();
        };
        write(&good, &bytes);
        verify(&good).unwrap();

        let truncated = dir.path().join("truncated.sql.gz");
        write(&truncated, &bytes[..bytes.len() / 2]);
        let flipped = dir.path().join("flipped.sql.gz");
        write(&flipped, &bytes);
        let mut damaged = bytes.clone();
        damaged[bytes.len() / 2] ^= 0x10;
        fs::write(&flipped, &damaged).unwrap();
        let plain = dir.path().join("plain.sql.gz");
        write(&plain, b"CREATE TABLE t ();\n");
        let unsigned = dir.path().join("unsigned.sql.gz");
        fs::write(&unsigned, &bytes).unwrap();
        for (path, why) in [
            (&truncated, "not a complete gzip stream"),
            (&flipped, "does not match its checksum"),
            (&plain, "not a complete gzip stream"),
            (&unsigned, "no checksum file"),
        ] {
            let err = format!("{:#}", verify(path).unwrap_err());
            assert!(err.contains(why), "{}: {err}", path.display());
        }
    }
}
