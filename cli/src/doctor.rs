//! What `stackctl doctor` checks: the facts it reads from this machine (backups, the last
//! backup attempts, the certificate) and what an operator must hear of, one finding each. Pure:
//! tested by exact output.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    backup::{self, Checksum, Kind},
    stack::App,
    state::{StateDir, write_with_mode},
};

/// A certificate that expires within this many days is a finding.
pub const CERT_WARN_DAYS: i64 = 14;
const ATTEMPTS_FILE: &str = "backup-attempts.json";

/// How the last backup of a database went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// Records a backup attempt of `app` for `doctor`: now, and why it failed (`None`: it did not).
pub fn record(state: &StateDir, app: App, error: Option<String>) -> anyhow::Result<()> {
    let mut attempts = attempts(state)?;
    attempts.insert(
        app.service().label().to_owned(),
        Attempt {
            at: Utc::now(),
            error,
        },
    );
    state.ensure()?;
    write_with_mode(
        &state.path(ATTEMPTS_FILE),
        serde_json::to_string_pretty(&attempts)?.as_bytes(),
        0o644,
    )
}

fn attempts(state: &StateDir) -> anyhow::Result<BTreeMap<String, Attempt>> {
    let path = state.path(ATTEMPTS_FILE);
    match std::fs::read_to_string(&path) {
        // A damaged record is not worth failing a backup for: the next attempt rewrites it.
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What `doctor` knows of one database.
#[derive(Debug, Clone)]
pub struct DatabaseFacts {
    pub app: App,
    /// When its newest backup whose checksum verifies was taken (UTC).
    pub newest_good: Option<NaiveDateTime>,
    pub last_attempt: Option<Attempt>,
    /// The newest drill of one of its backups, when it failed: when, and which backup.
    pub failed_drill: Option<FailedDrill>,
    /// `None` when not read (the engine did not answer, or only files were read).
    pub archiver: Option<Archiver>,
    /// Why the archiver could not be read when it was tried (the database is not running,
    /// the engine does not answer).
    pub unchecked: Option<String>,
}

/// How a database's WAL archiving goes, as PostgreSQL's `pg_stat_archiver` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archiver {
    /// The last segment archived, or when the statistics began if none was.
    pub since: Option<DateTime<Utc>>,
    /// The last failed attempt, and the segment it was.
    pub last_failed: Option<(DateTime<Utc>, String)>,
    /// The copy in `backup.copy_to` holds another cluster's backups, so none of this one's
    /// leave the host.
    pub copy_held_back: bool,
}

/// WAL archiving that has failed this long, with no success since, is a finding.
pub const ARCHIVE_FAILING_MINUTES: i64 = 5;

/// A drill that failed.
#[derive(Debug, Clone)]
pub struct FailedDrill {
    pub at: DateTime<Utc>,
    pub file: String,
}

/// Everything `doctor` judges.
#[derive(Debug, Clone)]
pub struct Facts {
    pub databases: Vec<DatabaseFacts>,
    /// When the edge's certificate expires, if there is one.
    pub cert_expires: Option<DateTime<Utc>>,
}

/// Reads the facts from the backup folder and the state folder.
pub fn gather(state: &StateDir, backup_root: &Path) -> anyhow::Result<Facts> {
    let attempts = attempts(state)?;
    let proofs = crate::drill::proofs(state)?;
    let mut databases = Vec::new();
    for app in App::ALL {
        let failed_drill = proofs
            .iter()
            .filter(|(file, _)| backup::parse_name(app, file).is_some())
            .max_by_key(|(_, proof)| proof.at)
            .filter(|(_, proof)| !proof.ok)
            .map(|(file, proof)| FailedDrill {
                at: proof.at,
                file: file.clone(),
            });
        let mut newest_good = None;
        for b in backup::list(backup_root, app)?.into_iter().rev() {
            if b.kind == Kind::Backup && backup::checksum(&b.path)? == Checksum::Verified {
                newest_good = Some(b.taken);
                break;
            }
        }
        databases.push(DatabaseFacts {
            app,
            newest_good,
            last_attempt: attempts.get(app.service().label()).cloned(),
            failed_drill,
            archiver: None,
            unchecked: None,
        });
    }
    let cert_expires =
        crate::certs::expires(state)?.and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), 0));
    Ok(Facts {
        databases,
        cert_expires,
    })
}

/// One thing an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is: `backup_failed`, `no_backup`, `backup_stale`, `certificate_expiring`,
    /// `certificate_expired` (the event of its alert).
    pub event: &'static str,
    /// What it is about: `auth`, `payments`, `certificate`.
    pub subject: &'static str,
    pub message: String,
}

/// The findings, in a fixed order: each database, then the certificate.
pub fn judge(facts: &Facts, now: DateTime<Utc>, max_backup_age_hours: u32) -> Vec<Finding> {
    let mut findings = Vec::new();
    for db in &facts.databases {
        let subject = db.app.service().label();
        let mut say = |event, message: String| {
            findings.push(Finding {
                event,
                subject,
                message,
            });
        };
        if let Some(Attempt {
            at,
            error: Some(error),
        }) = &db.last_attempt
        {
            say(
                "backup_failed",
                format!(
                    "the last backup failed at {}: {error}",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            );
        }
        if let Some(drill) = &db.failed_drill {
            say(
                "drill_failed",
                format!(
                    "the last restore drill failed at {}: {} would not restore soundly (stackctl backup verify {})",
                    drill.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    drill.file,
                    subject
                ),
            );
        }
        if let Some(Archiver {
            since,
            last_failed: Some((failed_at, segment)),
            ..
        }) = &db.archiver
            && since.is_none_or(|since| since < *failed_at)
            && since.is_some_and(|since| now - since > TimeDelta::minutes(ARCHIVE_FAILING_MINUTES))
        {
            say(
                "archive_failing",
                format!(
                    "WAL archiving has failed since {} UTC (last at {} UTC, segment {segment}): restore --to cannot reach past it; see stackctl logs {subject}-db",
                    since.map_or_else(String::new, |s| s.format("%Y-%m-%d %H:%M:%S").to_string()),
                    failed_at.format("%Y-%m-%d %H:%M:%S")
                ),
            );
        }
        if let Some(reason) = &db.unchecked {
            say(
                "archive_unchecked",
                format!(
                    "WAL archiving could not be checked ({reason}); a database that is not running archives nothing and takes no backup: see stackctl ps"
                ),
            );
        }
        if db.archiver.as_ref().is_some_and(|a| a.copy_held_back) {
            say(
                "copy_held_back",
                format!(
                    "the copy in backup.copy_to holds the backups of another {subject} database, so nothing of this one leaves the host: `stackctl restore {subject} --to latest --from copy` brings that one back (or move the copy's folder away, then stackctl up)"
                ),
            );
        }
        match db.newest_good {
            None => say(
                "no_backup",
                "no backup whose checksum verifies (stackctl backup)".to_owned(),
            ),
            Some(taken) => {
                let age = now.naive_utc() - taken;
                if age > TimeDelta::hours(i64::from(max_backup_age_hours)) {
                    say(
                        "backup_stale",
                        format!(
                            "the newest good backup is {} h old, taken {} UTC (backup.max_age_hours = {max_backup_age_hours})",
                            age.num_hours(),
                            taken.format("%Y-%m-%d %H:%M")
                        ),
                    );
                }
            }
        }
    }
    if let Some(expires) = facts.cert_expires {
        let left = expires - now;
        if left <= TimeDelta::zero() {
            findings.push(Finding {
                event: "certificate_expired",
                subject: "certificate",
                message: format!(
                    "the edge's certificate expired on {} (stackctl certs --force)",
                    expires.format("%Y-%m-%d")
                ),
            });
        } else if left < TimeDelta::days(CERT_WARN_DAYS) {
            findings.push(Finding {
                event: "certificate_expiring",
                subject: "certificate",
                message: format!(
                    "the edge's certificate expires in {} days, on {} (stackctl up renews it, or stackctl certs --force)",
                    left.num_days(),
                    expires.format("%Y-%m-%d")
                ),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn lines(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .map(|f| format!("{} {}: {}", f.event, f.subject, f.message))
            .collect()
    }

    #[test]
    fn a_healthy_stack_has_nothing_to_say() {
        let now = at("2026-11-26T12:00:00Z");
        let facts = Facts {
            databases: App::ALL
                .into_iter()
                .map(|app| DatabaseFacts {
                    app,
                    newest_good: Some(at("2026-11-26T02:00:00Z").naive_utc()),
                    last_attempt: Some(Attempt {
                        at: at("2026-11-26T02:00:00Z"),
                        error: None,
                    }),
                    failed_drill: None,
                    archiver: Some(Archiver {
                        since: Some(at("2026-11-26T11:59:00Z")),
                        last_failed: Some((
                            at("2026-11-26T11:00:00Z"),
                            "00000001000000000000000A".to_owned(),
                        )),
                        copy_held_back: false,
                    }),
                    unchecked: None,
                })
                .collect(),
            cert_expires: Some(at("2027-06-01T00:00:00Z")),
        };
        assert_eq!(judge(&facts, now, 26), []);
    }

    #[test]
    fn old_missing_and_failed_backups_and_a_certificate_near_its_end_are_each_one_line() {
        let now = at("2026-11-26T12:00:00Z");
        let facts = Facts {
            databases: vec![
                DatabaseFacts {
                    app: App::Auth,
                    newest_good: Some(at("2026-11-25T02:00:00Z").naive_utc()),
                    last_attempt: Some(Attempt {
                        at: at("2026-11-26T02:00:00Z"),
                        error: Some("auth-db is not running".to_owned()),
                    }),
                    failed_drill: None,
                    // Failing, but for less than five minutes.
                    archiver: Some(Archiver {
                        since: Some(at("2026-11-26T11:56:00Z")),
                        last_failed: Some((
                            at("2026-11-26T11:59:30Z"),
                            "000000010000000000000003".to_owned(),
                        )),
                        copy_held_back: false,
                    }),
                    unchecked: None,
                },
                DatabaseFacts {
                    app: App::Payments,
                    newest_good: None,
                    last_attempt: None,
                    failed_drill: Some(FailedDrill {
                        at: at("2026-11-26T04:00:00Z"),
                        file: "payments_20261126_020000.sql.gz".to_owned(),
                    }),
                    archiver: Some(Archiver {
                        since: Some(at("2026-11-26T11:40:00Z")),
                        last_failed: Some((
                            at("2026-11-26T11:59:50Z"),
                            "000000010000000000000007".to_owned(),
                        )),
                        copy_held_back: true,
                    }),
                    unchecked: None,
                },
            ],
            cert_expires: Some(at("2026-12-06T00:00:00Z")),
        };
        assert_eq!(
            lines(&judge(&facts, now, 26)),
            [
                "backup_failed auth: the last backup failed at 2026-11-26 02:00:00 UTC: auth-db is not running",
                "backup_stale auth: the newest good backup is 34 h old, taken 2026-11-25 02:00 UTC (backup.max_age_hours = 26)",
                "drill_failed payments: the last restore drill failed at 2026-11-26 04:00:00 UTC: payments_20261126_020000.sql.gz would not restore soundly (stackctl backup verify payments)",
                "archive_failing payments: WAL archiving has failed since 2026-11-26 11:40:00 UTC (last at 2026-11-26 11:59:50 UTC, segment 000000010000000000000007): restore --to cannot reach past it; see stackctl logs payments-db",
                "copy_held_back payments: the copy in backup.copy_to holds the backups of another payments database, so nothing of this one leaves the host: `stackctl restore payments --to latest --from copy` brings that one back (or move the copy's folder away, then stackctl up)",
                "no_backup payments: no backup whose checksum verifies (stackctl backup)",
                "certificate_expiring certificate: the edge's certificate expires in 9 days, on 2026-12-06 (stackctl up renews it, or stackctl certs --force)",
            ]
        );
        let expired = Facts {
            cert_expires: Some(at("2026-11-20T00:00:00Z")),
            databases: vec![DatabaseFacts {
                app: App::Auth,
                newest_good: Some(at("2026-11-26T02:00:00Z").naive_utc()),
                last_attempt: None,
                failed_drill: None,
                archiver: None,
                unchecked: Some("No such container: auth-db".to_owned()),
            }],
        };
        assert_eq!(
            lines(&judge(&expired, now, 26)),
            [
                "archive_unchecked auth: WAL archiving could not be checked (No such container: auth-db); a database that is not running archives nothing and takes no backup: see stackctl ps",
                "certificate_expired certificate: the edge's certificate expired on 2026-11-20 (stackctl certs --force)"
            ]
        );
    }
}
