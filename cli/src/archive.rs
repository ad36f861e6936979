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
    config::StackConfig,
    docker::{Engine, Located},
    doctor,
    stack::{self, App, Service},
    ui::Ui,
};

/// A full backup older than this makes the next physical backup a full one; the others are
/// differential (only what changed since that full).
const FULL_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);
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
async fn pgbackrest(at: &Located<'_>, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = vec!["pgbackrest"];
    cmd.extend_from_slice(args);
    let (code, out) = at.engine.exec_as(&at.container, "postgres", &cmd).await?;
    if code != 0 {
        bail!("pgbackrest {} failed: {}", args.join(" "), out.trim());
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

/// The physical backups in `repo`, oldest first.
async fn physical_backups(at: &Located<'_>, repo: Repo) -> anyhow::Result<Vec<Physical>> {
    let out = pgbackrest(at, &["info", "--output=json", repo.flag()]).await?;
    parse_info(&out, repo)
}

fn parse_info(json: &str, repo: Repo) -> anyhow::Result<Vec<Physical>> {
    let doc: Value = serde_json::from_str(json).context("pgbackrest info: not JSON")?;
    let backups = doc
        .as_array()
        .and_then(|stanzas| stanzas.first())
        .and_then(|stanza| stanza["backup"].as_array())
        .cloned()
        .unwrap_or_default();
    backups
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
        .collect()
}

/// Makes the repositories know the database (idempotent), and takes the first full backup in
/// each: the archived WAL is of use only from a physical backup on. `Some(line)` when it took
/// one.
pub async fn ensure(at: &Located<'_>, app: App) -> anyhow::Result<Option<String>> {
    let label = app.service().label();
    pgbackrest(at, &["stanza-create"]).await.with_context(|| {
        format!(
            "the {label} database's archive: does a repository belong to another database cluster?"
        )
    })?;
    let mut started = Vec::new();
    for repo in repos(at).await? {
        if physical_backups(at, repo).await?.is_empty() {
            pgbackrest(at, &["backup", "--type=full", repo.flag()]).await?;
            started.push(repo.name());
        }
    }
    Ok((!started.is_empty()).then(|| {
        format!(
            "{label} database: WAL archiving on, first full physical backup taken ({})",
            started.join(", ")
        )
    }))
}

/// Takes a physical backup in each repository: full when its newest full one is older than a
/// week, differential otherwise.
pub async fn backup(at: &Located<'_>) -> anyhow::Result<Vec<Physical>> {
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
        pgbackrest(at, &["backup", kind, repo.flag()]).await?;
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
    Ok(parse_archiver(out.trim()))
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
}

/// Makes the folder of `service`'s copies (`backup.copy_to`), for its owner only, when there is
/// a copy: Docker would make a missing one readable by all.
pub fn prepare_copy(config: &StackConfig, service: Service) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = config.backup.copy_dir(&config.project, service) else {
        return Ok(());
    };
    for folder in [dir.join("archive"), dir.join("dumps")] {
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("backup.copy_to: cannot create {}", folder.display()))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("backup.copy_to: cannot restrict {}", dir.display()))
}

/// The repositories of the database in `at`: the archive, and its copy when its container
/// has one.
async fn repos(at: &Located<'_>) -> anyhow::Result<Vec<Repo>> {
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

/// Restores the data volume of the database `spec` makes from `repo` to `target`, in a
/// container of its own with the same volumes and settings; the database's container must be
/// stopped or gone. The database replays the WAL when it starts next ([`wait_recovered`]).
pub async fn recover(
    engine: &Engine,
    project: &str,
    spec: &stack::Spec,
    repo: Repo,
    target: Target,
) -> anyhow::Result<()> {
    let name = format!("{project}_recover-{}", spec.name);
    let mut cmd = vec![
        "/usr/local/bin/postgres-recover".to_owned(),
        repo.flag().to_owned(),
    ];
    cmd.extend(target.recover_args());
    let database = spec.body.host_config.clone().unwrap_or_default();
    let body = ContainerCreateBody {
        image: spec.body.image.clone(),
        env: spec.body.env.clone(),
        entrypoint: Some(cmd),
        labels: Some(std::collections::HashMap::from([(
            crate::docker::LABEL_PROJECT.to_owned(),
            project.to_owned(),
        )])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            binds: database.binds,
            cap_drop: database.cap_drop,
            cap_add: database.cap_add,
            security_opt: database.security_opt,
            tmpfs: database.tmpfs,
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
    fn the_repository_lists_its_backups_oldest_first() {
        let json = r#"[{"name":"main","backup":[
            {"label":"20261126-101500F","type":"full","timestamp":{"start":1795687000,"stop":1795687003}},
            {"label":"20261126-101500F_20261126-111500D","type":"diff","timestamp":{"start":1795690600,"stop":1795690602}}
        ],"status":{"code":0}}]"#;
        let backups = parse_info(json, Repo::Archive).unwrap();
        assert_eq!(backups.len(), 2);
        assert!(backups[0].full && !backups[1].full);
        assert_eq!(backups[1].stopped.timestamp(), 1795690602);
        assert!(
            parse_info(
                r#"[{"name":"main","backup":[],"status":{"code":2}}]"#,
                Repo::Archive
            )
            .unwrap()
            .is_empty()
        );
    }
}
