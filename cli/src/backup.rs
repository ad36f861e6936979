//! Backups of the two databases. `pg_dump` runs in the database container and its output is
//! gzipped while it streams out, into `<dir>/<db>/<db>_YYYYmmdd_HHMMSS.sql.gz.partial`, renamed
//! only when `pg_dump` succeeded, with the SHA-256 beside it (`sha256sum -c` reads it). Times
//! in names are UTC. Restores check the checksum and the whole gzip stream before anything is
//! touched and replay the dump with `psql` in one transaction.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use chrono::{NaiveDateTime, TimeDelta, Utc};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use sha2::{Digest, Sha256};

use crate::{
    docker::{Engine, Health},
    stack::App,
    state::write_with_mode,
    ui::Ui,
};

const SUFFIX: &str = ".sql.gz";
const PARTIAL: &str = ".partial";
const CHECKSUM: &str = ".sha256";
const TIME_FORMAT: &str = "%Y%m%d_%H%M%S";
/// The last line `pg_dump` writes: a dump without it was cut short.
const DUMP_END: &[u8] = b"-- PostgreSQL database dump complete";
const CHUNK: usize = 256 * 1024;

/// Where a service's database lives: container, user, database.
pub fn database(app: App) -> (&'static str, &'static str, &'static str) {
    match app {
        App::Auth => ("auth-db", "auth", "nest"),
        App::Payments => ("payments-db", "payments", "payments"),
    }
}

/// One backup file this tool wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
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

/// The time in a name this tool writes (`auth_20261125_020000.sql.gz`), for that service.
pub fn parse_name(app: App, name: &str) -> Option<NaiveDateTime> {
    let stamp = name
        .strip_prefix(app.service().label())?
        .strip_prefix('_')?
        .strip_suffix(SUFFIX)?;
    // `parse_from_str` accepts a few variants; only the exact form counts as ours.
    let taken = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?;
    (taken.format(TIME_FORMAT).to_string() == stamp).then_some(taken)
}

/// The service's backups under `root`, oldest first. Files of other names are not ours.
pub fn list(root: &Path, app: App) -> anyhow::Result<Vec<Backup>> {
    let dir = root.join(app.service().label());
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let Some(taken) = name.to_str().and_then(|n| parse_name(app, n)) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            found.push(Backup {
                path: entry.path(),
                taken,
                size: meta.len(),
            });
        }
    }
    found.sort_by_key(|b| b.taken);
    Ok(found)
}

/// Deletes the backups taken before `now - keep_days`, never the newest one of the service
/// and never a file this tool did not name. Returns what it deleted (or would, `dry_run`).
pub fn prune(
    root: &Path,
    app: App,
    keep_days: u32,
    now: NaiveDateTime,
    dry_run: bool,
) -> anyhow::Result<Vec<Backup>> {
    let mut backups = list(root, app)?;
    backups.pop();
    let cutoff = now - TimeDelta::days(i64::from(keep_days));
    let old: Vec<Backup> = backups.into_iter().filter(|b| b.taken < cutoff).collect();
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
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hashing = Hashing::new(std::io::sink());
    std::io::copy(&mut file, &mut hashing)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(if hex::encode(hashing.hasher.finalize()) == expected {
        Checksum::Verified
    } else {
        Checksum::Mismatch
    })
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

/// Takes a backup of the service's database into `root/<db>/`.
pub async fn take(engine: &Engine, root: &Path, app: App, ui: &Ui) -> anyhow::Result<Backup> {
    let label = app.service().label();
    let (container, _, _) = database(app);
    if engine.health(container).await? != Health::Healthy {
        bail!("{container} is not running and healthy; start the stack with `stackctl up`");
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
        let name = format!("{label}_{}{SUFFIX}", taken.format(TIME_FORMAT));
        if !dir.join(&name).exists() {
            break (taken, name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let path = dir.join(&name);
    let partial = dir.join(format!("{name}{PARTIAL}"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let finished = async {
        let digest = dump(engine, app, file, ui).await?;
        write_with_mode(
            &checksum_path(&path),
            format!("{digest}  {name}\n").as_bytes(),
            0o644,
        )?;
        fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))
    }
    .await;
    if let Err(e) = finished {
        // Nothing that looks like a backup stays behind.
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(checksum_path(&path));
        return Err(e.context(format!(
            "backup of the {label} database failed; nothing was kept"
        )));
    }
    let size = fs::metadata(&path)?.len();
    Ok(Backup { path, taken, size })
}

/// Streams `pg_dump` through gzip into `file`; returns the SHA-256 of what was written.
async fn dump(engine: &Engine, app: App, file: File, ui: &Ui) -> anyhow::Result<String> {
    let (container, user, db) = database(app);
    let mut gz = GzEncoder::new(Hashing::new(BufWriter::new(file)), Compression::default());
    let bar = ui.bytes(&format!("pg_dump {db}"));
    let (code, stderr) = engine
        .exec_out(
            container,
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

/// Replays a verified backup into the service's database with `psql` in one transaction that
/// stops at the first error: it applies completely or not at all.
pub async fn replay(engine: &Engine, app: App, path: &Path) -> anyhow::Result<()> {
    let (container, user, db) = database(app);
    let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<u8>>>(8);
    let source = path.to_owned();
    // Decompression is blocking work: a thread of its own feeds the exec's standard input.
    let reader = std::thread::spawn(move || {
        let mut gz = match File::open(&source) {
            Ok(f) => GzDecoder::new(f),
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        loop {
            let mut buf = vec![0; CHUNK];
            match gz.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
        }
    });
    let result = engine
        .exec_in(
            container,
            "postgres",
            &[
                "psql",
                "--username",
                user,
                "--dbname",
                db,
                "--single-transaction",
                "--set",
                "ON_ERROR_STOP=1",
                "--no-psqlrc",
                "--quiet",
            ],
            rx,
        )
        .await;
    let _ = reader.join();
    let (code, out) = result?;
    if code != 0 {
        bail!(
            "psql in {container} exited with {code}; the transaction was rolled back, the database is as it was:\n{}",
            out.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days_ago: i64, now: NaiveDateTime) -> NaiveDateTime {
        now - TimeDelta::days(days_ago) + TimeDelta::minutes(1)
    }

    fn touch(root: &Path, app: App, taken: NaiveDateTime) -> PathBuf {
        let label = app.service().label();
        let dir = root.join(label);
        fs::create_dir_all(&dir).unwrap();
        let name = format!("{label}_{}{SUFFIX}", taken.format(TIME_FORMAT));
        fs::write(dir.join(&name), b"x").unwrap();
        fs::write(dir.join(format!("{name}{CHECKSUM}")), b"y").unwrap();
        dir.join(name)
    }

    #[test]
    fn names_are_read_strictly() {
        let t = parse_name(App::Auth, "auth_20261125_020000.sql.gz").unwrap();
        assert_eq!(t.to_string(), "2026-11-25 02:00:00");
        for other in [
            "payments_20261125_020000.sql.gz",
            "auth_20261125_020000.sql.gz.partial",
            "auth_2026112_020000.sql.gz",
            "auth_20261125_020000.sql",
            "auth-copy_20261125_020000.sql.gz",
            "auth_20261325_020000.sql.gz",
        ] {
            assert!(parse_name(App::Auth, other).is_none(), "{other}");
        }
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

        let would = prune(root.path(), App::Auth, 7, now, true).unwrap();
        assert_eq!(would.len(), 3, "8, 9 and 10 days old");
        assert!(
            paths.iter().all(|p| p.exists()),
            "a dry run deletes nothing"
        );

        let gone = prune(root.path(), App::Auth, 7, now, false).unwrap();
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
        prune(root.path(), App::Payments, 7, now, false).unwrap();
        assert!(!old.exists());
        assert!(newest.exists());
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
