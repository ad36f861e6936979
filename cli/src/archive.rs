//! Continuous archiving with pgBackRest: each database sends its WAL to a repository in a volume
//! of its own (`<project>_<db>-archive`), beside physical backups of the whole cluster, so it can
//! be restored to any moment from its oldest physical backup to its last archived WAL.

use std::{fmt, time::Duration};

use anyhow::{Context, bail};
use bollard::models::{ContainerCreateBody, HostConfig};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::{
    backup,
    config::{CopyPlace, StackConfig},
    docker::{Engine, Located},
    doctor,
    stack::{self, App, Service},
    ui::Ui,
};

/// A full backup older than this makes the next physical backup a full one; the others are
/// differential (only what changed since that full).
const FULL_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);
/// pgBackRest's error when another of its processes holds the stanza's backup lock.
const LOCK_HELD: &str = "ERROR: [050]:";
/// The longest a backup waits for one an interrupted run left going.
const LOCK_WAIT: Duration = Duration::from_secs(3600);
/// How long a database may take to replay the archived WAL after a restore.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The moment `restore --to` brings a database back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Up to the last archived WAL.
    Latest,
    /// Every transaction committed before this moment, none after.
    Time(DateTime<Utc>),
}

impl Target {
    /// `latest`, an RFC 3339 time, or `YYYY-MM-DD HH:MM[:SS]` in UTC.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text == "latest" {
            return Ok(Self::Latest);
        }
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self::Time(at.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
            if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
                return Ok(Self::Time(Utc.from_utc_datetime(&at)));
            }
        }
        bail!(
            "--to {text:?}: give `latest`, a time in UTC as \"2026-11-26 10:15:00\", or one with its offset as 2026-11-26T12:15:00+02:00"
        )
    }

    /// The arguments of the image's `postgres-recover`.
    fn recover_args(self) -> Vec<String> {
        match self {
            Self::Latest => vec!["latest".to_owned()],
            Self::Time(at) => vec![
                "time".to_owned(),
                at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            ],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("the last archived moment"),
            Self::Time(at) => write!(f, "{}", at.format("%Y-%m-%d %H:%M:%S%.3f UTC")),
        }
    }
}

/// Runs pgBackRest in the database's container as the database's OS user.
/// What is said while [`pgbackrest_when_free`] waits.
pub fn waiting_line(app: App) -> String {
    format!(
        "{}: a pgBackRest backup that an interrupted run started is still going; waiting for it",
        app.service().label()
    )
}

/// Runs pgBackRest once the lock it needs is free. stackctl's own lock keeps two of its runs
/// apart, so a held lock is a pgBackRest process that an interrupted run left going in the
/// container (an exec outlives its client); it ends by itself. Calls `waiting` once when it
/// has to wait.
async fn pgbackrest_when_free(
    at: &Located<'_>,
    args: &[&str],
    waiting: &dyn Fn(),
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match pgbackrest(at, args).await {
            Err(e)
                if format!("{e}").contains(LOCK_HELD) && tokio::time::Instant::now() < deadline =>
            {
                if !said {
                    waiting();
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            done => return done,
        }
    }
}

async fn pgbackrest(at: &Located<'_>, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = vec!["pgbackrest"];
    cmd.extend_from_slice(args);
    as_postgres(at, &cmd, &format!("pgbackrest {} failed", args.join(" "))).await
}

/// Runs `cmd` as postgres in the database container; its output, or an error that starts
/// with `failure` and holds the output.
async fn as_postgres(at: &Located<'_>, cmd: &[&str], failure: &str) -> anyhow::Result<String> {
    let (code, out) = at.engine.exec_as(&at.container, "postgres", cmd).await?;
    if code != 0 {
        bail!("{failure}: {}", out.trim());
    }
    Ok(out)
}

/// A physical backup in a repository.
#[derive(Debug, Clone)]
pub struct Physical {
    pub repo: Repo,
    pub label: String,
    pub full: bool,
    pub stopped: DateTime<Utc>,
}

/// What `pgbackrest info` says of one repository.
#[derive(Debug)]
struct Held {
    repo: Repo,
    /// The system identifier of the database cluster it archives; `None` before its stanza.
    system: Option<u64>,
    /// Its physical backups, oldest first.
    backups: Vec<Physical>,
}

impl Held {
    /// The other cluster whose backups it holds, when they are not `system`'s.
    fn other_than(&self, system: u64) -> Option<u64> {
        self.system.filter(|held| *held != system)
    }
}

async fn held(at: &Located<'_>, repo: Repo) -> anyhow::Result<Held> {
    let out = pgbackrest(at, &["info", "--output=json", repo.flag()]).await?;
    parse_info(&out, repo)
}

/// The physical backups in `repo`, oldest first.
async fn physical_backups(at: &Located<'_>, repo: Repo) -> anyhow::Result<Vec<Physical>> {
    Ok(held(at, repo).await?.backups)
}

fn parse_info(json: &str, repo: Repo) -> anyhow::Result<Held> {
    let doc: Value = serde_json::from_str(json).context("pgbackrest info: not JSON")?;
    let stanza = doc.as_array().and_then(|stanzas| stanzas.first());
    let list = |key: &str| {
        stanza
            .and_then(|stanza| stanza[key].as_array())
            .cloned()
            .unwrap_or_default()
    };
    // The newest entry of the history is the cluster the repository archives now.
    let system = list("db")
        .iter()
        .max_by_key(|db| db["id"].as_u64())
        .and_then(|db| db["system-id"].as_u64());
    let backups = list("backup")
        .iter()
        .map(|b| {
            let stop = b["timestamp"]["stop"]
                .as_i64()
                .context("pgbackrest info: a backup without its stop time")?;
            Ok(Physical {
                repo,
                label: b["label"].as_str().unwrap_or_default().to_owned(),
                full: b["type"] == "full",
                stopped: Utc
                    .timestamp_opt(stop, 0)
                    .single()
                    .context("pgbackrest info: a stop time out of range")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Held {
        repo,
        system,
        backups,
    })
}

/// The identifier PostgreSQL gave the database cluster when it was made: a repository holds
/// the backups of one cluster only.
async fn system_id(at: &Located<'_>, app: App) -> anyhow::Result<u64> {
    let (code, out) =
        backup::query(at, app, "SELECT system_identifier FROM pg_control_system()").await?;
    if code != 0 {
        bail!(
            "cannot read the database's system identifier: {}",
            out.trim()
        );
    }
    out.trim()
        .parse()
        .with_context(|| format!("a system identifier that is not a number: {out:?}"))
}

/// The running database's cluster, and what each of its repositories holds.
struct Survey {
    system: u64,
    repos: Vec<Held>,
}

async fn survey(at: &Located<'_>, app: App) -> anyhow::Result<Survey> {
    let system = system_id(at, app).await?;
    let mut repos = Vec::new();
    for repo in configured(at).await? {
        repos.push(held(at, repo).await?);
    }
    Ok(Survey { system, repos })
}

/// Makes the repositories know the database (idempotent), and takes the first full backup in
/// each: the archived WAL is of use only from a physical backup on. Says what it did, and what
/// it left alone: a repository that holds another cluster's backups (the copy of a lost host's
/// database, before `restore --from copy` brings it back) is never written to.
pub async fn ensure(at: &Located<'_>, app: App, waiting: &dyn Fn()) -> anyhow::Result<Vec<String>> {
    let label = app.service().label();
    let Survey { system, repos } = survey(at, app).await?;
    let (foreign, usable): (Vec<&Held>, Vec<&Held>) = repos
        .iter()
        .partition(|held| held.other_than(system).is_some());
    let mut lines = Vec::new();
    for held in &foreign {
        lines.push(format!(
            "the {label} database's {} holds the backups of another {label} database (system {}), left as they are and not archived to: `stackctl restore {label} --to latest --from {}` brings that one back",
            held.repo.name(),
            held.system.unwrap_or_default(),
            held.repo.name()
        ));
    }
    let foreign_repos: Vec<Repo> = foreign.iter().map(|held| held.repo).collect();
    hold_back_copy(at, foreign_repos.contains(&Repo::Copy)).await?;
    match foreign_repos.as_slice() {
        [] => {
            pgbackrest_when_free(at, &["stanza-create"], waiting).await?;
        }
        [Repo::Copy] => {
            // stanza-create works on every repository configured: the copy's settings are
            // left out of its environment.
            as_postgres(
                at,
                &[
                    "sh",
                    "-c",
                    "unset $(env | sed -n 's/^\\(PGBACKREST_REPO2_[A-Z0-9_]*\\)=.*/\\1/p'); exec pgbackrest stanza-create",
                ],
                "pgbackrest stanza-create failed",
            )
            .await?;
        }
        // The archive itself is another cluster's: nothing to archive to.
        _ => return Ok(lines),
    }
    let mut started = Vec::new();
    for held in usable {
        if held.backups.is_empty() {
            pgbackrest_when_free(at, &["backup", "--type=full", held.repo.flag()], waiting).await?;
            started.push(held.repo.name());
        }
    }
    if !started.is_empty() {
        lines.push(format!(
            "{label} database: WAL archiving on, first full physical backup taken ({})",
            started.join(", ")
        ));
    }
    Ok(lines)
}

/// After a restore: moves the backups of another cluster out of the way of the restored one's
/// (into `archive/main.<system>.<time>` and `backup/main.<system>.<time>` in the same
/// repository, where nothing reads or prunes them), so that it archives to every repository.
/// Says where each went.
pub async fn set_aside_foreign(at: &Located<'_>, app: App) -> anyhow::Result<Vec<String>> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S");
    let Survey { system, repos } = survey(at, app).await?;
    let mut lines = Vec::new();
    for held in &repos {
        let Some(other) = held.other_than(system) else {
            continue;
        };
        if held.repo == Repo::Copy && copy_in_store(at).await? {
            lines.push(format!(
                "the copy holds the backups of another {} database (system {other}) and is in an S3 store, where stackctl moves nothing: it stays held back until its archive/ and backup/ folders are moved aside there",
                app.service().label(),
            ));
            continue;
        }
        let root = held.repo.path();
        let aside = format!("main.{other}.{stamp}");
        // Both in one go: a repository with only one of the two is one pgBackRest cannot read.
        as_postgres(
            at,
            &[
                "sh",
                "-c",
                "for kind in archive backup; do [ ! -e \"$1/$kind/main\" ] || mv -T \"$1/$kind/main\" \"$1/$kind/$2\" || exit; done",
                "sh",
                root,
                &aside,
            ],
            &format!("cannot move the backups in {root} aside"),
        )
        .await?;
        lines.push(format!(
            "the {}'s backups of another {} database (system {other}) are kept aside in it, as archive/{aside} and backup/{aside}",
            held.repo.name(),
            app.service().label(),
        ));
    }
    Ok(lines)
}

/// Takes a physical backup in each repository: full when its newest full one is older than a
/// week, differential otherwise.
pub async fn backup(at: &Located<'_>, waiting: &dyn Fn()) -> anyhow::Result<Vec<Physical>> {
    let mut taken = Vec::new();
    for repo in repos(at).await? {
        let before = physical_backups(at, repo).await?;
        let recent_full =
            before.iter().rev().find(|b| b.full).is_some_and(|b| {
                (Utc::now() - b.stopped).to_std().unwrap_or_default() < FULL_EVERY
            });
        let kind = if recent_full {
            "--type=diff"
        } else {
            "--type=full"
        };
        pgbackrest_when_free(at, &["backup", kind, repo.flag()], waiting).await?;
        let newest = physical_backups(at, repo)
            .await?
            .pop()
            .context("pgbackrest backup ended, yet the repository lists no backup")?;
        taken.push(newest);
    }
    Ok(taken)
}

/// From when to when a database can be restored to any moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    /// The last WAL archived; `None` before the first.
    pub to: Option<DateTime<Utc>>,
}

pub async fn window(at: &Located<'_>, app: App) -> anyhow::Result<Option<Window>> {
    let Some(oldest) = physical_backups(at, Repo::Archive)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let (code, out) = backup::query(
        at,
        app,
        "SELECT extract(epoch FROM last_archived_time)::bigint FROM pg_stat_archiver",
    )
    .await?;
    if code != 0 {
        bail!("cannot read the archiver's progress: {}", out.trim());
    }
    let to = out
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single());
    Ok(Some(Window {
        from: oldest.stopped,
        to,
    }))
}

/// How archiving goes, from PostgreSQL's `pg_stat_archiver`.
pub async fn archiver(at: &Located<'_>, app: App) -> anyhow::Result<doctor::Archiver> {
    let (code, out) = backup::query(
        at,
        app,
        "SELECT coalesce(extract(epoch FROM coalesce(last_archived_time, stats_reset))::bigint::text, ''), \
                coalesce(extract(epoch FROM last_failed_time)::bigint::text, ''), \
                coalesce(last_failed_wal, '') \
         FROM pg_stat_archiver",
    )
    .await?;
    if code != 0 {
        bail!("cannot read the archiver's progress: {}", out.trim());
    }
    Ok(doctor::Archiver {
        copy_held_back: copy_held_back(at).await?,
        ..parse_archiver(out.trim())
    })
}

fn parse_archiver(row: &str) -> doctor::Archiver {
    let mut fields = row.split('|');
    let mut time = || {
        fields
            .next()
            .and_then(|f| f.parse::<i64>().ok())
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
    };
    let since = time();
    let failed_at = time();
    let segment = fields.next().unwrap_or_default().to_owned();
    doctor::Archiver {
        since,
        last_failed: failed_at.map(|at| (at, segment)),
        copy_held_back: false,
    }
}

/// Which of a database's repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Repo {
    /// The archive volume beside the data's.
    Archive,
    /// The encrypted copy in `backup.copy_to`.
    Copy,
}

impl Repo {
    pub fn name(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Copy => "copy",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Archive => "--repo=1",
            Self::Copy => "--repo=2",
        }
    }

    /// Where the database's container sees it.
    fn path(self) -> &'static str {
        match self {
            Self::Archive => stack::ARCHIVE_PATH,
            Self::Copy => stack::ARCHIVE_COPY_PATH,
        }
    }
}

/// Makes the folder of `service`'s copies (`backup.copy_to`), for its owner only, when the
/// copy is a folder: Docker would make a missing one readable by all.
pub fn prepare_copy(config: &StackConfig, service: Service) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(CopyPlace::Folder(dir)) = config.backup.copy_place(&config.project, service) else {
        return Ok(());
    };
    for folder in [dir.join("archive"), dir.join("dumps")] {
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("backup.copy_to: cannot create {}", folder.display()))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("backup.copy_to: cannot restrict {}", dir.display()))
}

/// Where the marker of a copy held back lives (in the archive's volume, never in the data that
/// a backup copies); the image's `pgbackrest-archive-push` reads it.
const COPY_HELD_BACK: &str = "/var/lib/pgbackrest/copy-held-back";

/// The repositories of the database in `at`: the archive, and its copy when its container
/// has one.
async fn configured(at: &Located<'_>) -> anyhow::Result<Vec<Repo>> {
    let (code, _) = at
        .engine
        .exec(&at.container, &["printenv", "PGBACKREST_REPO2_PATH"])
        .await?;
    Ok(if code == 0 {
        vec![Repo::Archive, Repo::Copy]
    } else {
        vec![Repo::Archive]
    })
}

/// The repositories that take the database's backups: the configured ones but a copy held
/// back because it holds another cluster's.
async fn repos(at: &Located<'_>) -> anyhow::Result<Vec<Repo>> {
    let held_back = copy_held_back(at).await?;
    Ok(configured(at)
        .await?
        .into_iter()
        .filter(|repo| !(held_back && *repo == Repo::Copy))
        .collect())
}

/// Whether the copy is in an S3 store rather than a folder.
async fn copy_in_store(at: &Located<'_>) -> anyhow::Result<bool> {
    let (code, out) = at
        .engine
        .exec(&at.container, &["printenv", "PGBACKREST_REPO2_TYPE"])
        .await?;
    Ok(code == 0 && out.trim() == "s3")
}

async fn copy_held_back(at: &Located<'_>) -> anyhow::Result<bool> {
    let (code, _) = at
        .engine
        .exec(&at.container, &["test", "-e", COPY_HELD_BACK])
        .await?;
    Ok(code == 0)
}

/// Marks the copy held back, or not: archiving leaves out a copy that holds another
/// cluster's backups.
async fn hold_back_copy(at: &Located<'_>, hold: bool) -> anyhow::Result<()> {
    let cmd: &[&str] = if hold {
        &["touch", COPY_HELD_BACK]
    } else {
        &["rm", "-f", COPY_HELD_BACK]
    };
    as_postgres(at, cmd, "cannot mark whether the copy is held back").await?;
    Ok(())
}

/// Restores the data volume of the database whose container `database` describes (named
/// `name`) from `repo` to `target`, in a container of its own with the same image, volumes and
/// settings, on the engine that holds the volumes; the database must be stopped or gone. It
/// replays the WAL when it starts next ([`wait_recovered`]).
pub async fn recover(
    engine: &Engine,
    project: &str,
    name: &str,
    database: &ContainerCreateBody,
    repo: Repo,
    target: Target,
) -> anyhow::Result<()> {
    let name = format!("{project}_recover-{name}");
    let mut cmd = vec![
        "/usr/local/bin/postgres-recover".to_owned(),
        repo.flag().to_owned(),
    ];
    cmd.extend(target.recover_args());
    let host = database.host_config.clone().unwrap_or_default();
    // A copy in an S3 store is reached over the network; the volumes and a folder need none.
    let in_store = repo == Repo::Copy
        && database
            .env
            .iter()
            .flatten()
            .any(|e| e == "PGBACKREST_REPO2_TYPE=s3");
    let body = ContainerCreateBody {
        image: database.image.clone(),
        env: database.env.clone(),
        entrypoint: Some(cmd),
        labels: Some(std::collections::HashMap::from([(
            crate::docker::LABEL_PROJECT.to_owned(),
            project.to_owned(),
        )])),
        network_disabled: Some(!in_store),
        host_config: Some(HostConfig {
            binds: host.binds,
            cap_drop: host.cap_drop,
            cap_add: host.cap_add,
            security_opt: host.security_opt,
            tmpfs: host.tmpfs,
            readonly_rootfs: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (code, out) = engine.run_once(&name, body).await?;
    if code != 0 {
        bail!("pgBackRest could not restore: {}", out.trim());
    }
    Ok(())
}

/// Waits until the database has replayed the WAL up to its target and takes writes.
pub async fn wait_recovered(at: &Located<'_>, app: App, ui: &Ui) -> anyhow::Result<()> {
    let spinner = ui.spinner(&format!(
        "the {} database replays the archived WAL",
        app.service().label()
    ));
    let deadline = tokio::time::Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let (code, out) = backup::query(at, app, "SELECT pg_is_in_recovery()").await?;
        if code == 0 && out.trim() == "f" {
            spinner.finish_and_clear();
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            bail!(
                "the {} database still replays WAL after {} minutes: {}",
                app.service().label(),
                RECOVERY_TIMEOUT.as_secs() / 60,
                at.engine.last_lines(&at.container, 10).await.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_latest_or_a_moment_in_utc() {
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 10, 15, 0).unwrap();
        assert_eq!(
            Target::parse("2026-11-26 10:15:00").unwrap(),
            Target::Time(at)
        );
        assert_eq!(Target::parse("2026-11-26 10:15").unwrap(), Target::Time(at));
        assert_eq!(
            Target::parse("2026-11-26T12:15:00+02:00").unwrap(),
            Target::Time(at)
        );
        assert_eq!(
            Target::Time(at).recover_args(),
            ["time", "2026-11-26 10:15:00.000000+00"]
        );
        let err = Target::parse("yesterday").unwrap_err().to_string();
        assert!(err.contains("latest") && err.contains("UTC"), "{err}");
    }

    #[test]
    fn the_archiver_row_gives_the_last_success_and_the_last_failure() {
        let ok = parse_archiver("1795687003||");
        assert_eq!(ok.since.map(|t| t.timestamp()), Some(1795687003));
        assert_eq!(ok.last_failed, None);
        let failing = parse_archiver("1795687003|1795687300|000000010000000000000004");
        let (at, segment) = failing.last_failed.unwrap();
        assert_eq!(at.timestamp(), 1795687300);
        assert_eq!(segment, "000000010000000000000004");
    }

    #[test]
    fn a_repository_holds_the_cluster_of_its_newest_history_entry() {
        let json = r#"[{"name":"main","backup":[],"db":[
            {"id":1,"repo-key":2,"system-id":7441000000000000001,"version":"15"},
            {"id":2,"repo-key":2,"system-id":7441000000000000002,"version":"15"}
        ],"status":{"code":0}}]"#;
        let held = parse_info(json, Repo::Copy).unwrap();
        assert_eq!(held.system, Some(7441000000000000002));
        assert_eq!(held.other_than(7441000000000000002), None);
        assert_eq!(
            held.other_than(7441000000000000001),
            Some(7441000000000000002)
        );
        let missing = r#"[{"name":"main","backup":[],"db":[],"status":{"code":1,"message":"missing stanza path"}}]"#;
        let held = parse_info(missing, Repo::Copy).unwrap();
        assert_eq!(held.system, None);
        assert_eq!(held.other_than(1), None, "an empty repository is anyone's");
        assert!(parse_info("ERROR", Repo::Copy).is_err());
    }

    #[test]
    fn the_repository_lists_its_backups_oldest_first() {
        let json = r#"[{"name":"main","backup":[
            {"label":"20261126-101500F","type":"full","timestamp":{"start":1795687000,"stop":1795687003}},
            {"label":"20261126-101500F_20261126-111500D","type":"diff","timestamp":{"start":1795690600,"stop":1795690602}}
        ],"status":{"code":0}}]"#;
        let backups = parse_info(json, Repo::Archive).unwrap().backups;
        assert_eq!(backups.len(), 2);
        assert!(backups[0].full && !backups[1].full);
        assert_eq!(backups[1].stopped.timestamp(), 1795690602);
        assert!(
            parse_info(
                r#"[{"name":"main","backup":[],"status":{"code":2}}]"#,
                Repo::Archive
            )
            .unwrap()
            .backups
            .is_empty()
        );
    }
}
