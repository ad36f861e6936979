//! Restore drills: a backup replayed into a throwaway database container with no network, then
//! checked (the services' migrations, every table readable, B-tree indexes sound by `amcheck`,
//! row counts beside the live database's), and the container removed. What a drill proved is
//! recorded beside the stack's state, for `backup list` and `doctor`.

use std::{collections::BTreeMap, path::Path, time::Instant};

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    backup,
    database::{self, Database},
    docker::{Engine, Located, project_labels},
    stack::{self, App},
    state::{StateDir, write_with_mode},
    ui::Ui,
};

const RECORD_FILE: &str = "drills.json";

/// One check of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a drill of one backup found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proof {
    pub at: DateTime<Utc>,
    pub ok: bool,
    /// From the command to a checked database: the recovery time a restore of it can expect.
    pub secs: f64,
    pub checks: Vec<Check>,
}

/// The database a backup is checked against, when it runs.
pub struct Live<'a> {
    pub at: Located<'a>,
}

/// Replays `path` (a backup of `app`) into a throwaway container on `engine` and checks it.
/// The container is removed whatever happens; a failed check is a proof that says so, not an
/// error.
pub async fn run(
    engine: &Engine,
    project: &str,
    image: &str,
    app: App,
    path: &Path,
    live: Option<Live<'_>>,
    ui: &Ui,
) -> anyhow::Result<Proof> {
    let started = Instant::now();
    let name = container_name(project, app);
    // One left by a drill that was killed.
    engine.remove(&name, stack::STOP_GRACE).await?;
    let checks = match backup::verify(path) {
        Err(e) => vec![failed("file", format!("{e:#}"))],
        Ok(()) => {
            let drilled = drill(engine, project, image, app, path, live, ui).await;
            engine.remove(&name, stack::STOP_GRACE).await?;
            drilled?
        }
    };
    Ok(Proof {
        at: Utc::now(),
        ok: checks.iter().all(|c| c.ok),
        secs: started.elapsed().as_secs_f64(),
        checks,
    })
}

fn passed(name: &str, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: true,
        detail,
    }
}

fn failed(name: &str, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: false,
        detail,
    }
}

/// The throwaway container of a drill of `app`'s backups.
fn container_name(project: &str, app: App) -> String {
    format!("{project}_drill-{}", app.service().label())
}

async fn drill(
    engine: &Engine,
    project: &str,
    image: &str,
    app: App,
    path: &Path,
    live: Option<Live<'_>>,
    ui: &Ui,
) -> anyhow::Result<Vec<Check>> {
    let Database {
        superuser,
        name: db,
        ..
    } = database::of(app);
    let name = &container_name(project, app);
    let password = hex::encode(rand::random::<[u8; 16]>());
    engine
        .create_and_start(
            name,
            ContainerCreateBody {
                image: Some(image.to_owned()),
                env: Some(vec![
                    format!("POSTGRES_USER={superuser}"),
                    format!("POSTGRES_PASSWORD={password}"),
                    format!("POSTGRES_DB={db}"),
                ]),
                labels: Some(project_labels(project)),
                network_disabled: Some(true),
                healthcheck: Some(stack::health(
                    &[
                        "CMD",
                        "pg_isready",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        superuser,
                        "-d",
                        db,
                    ],
                    30,
                    60,
                )),
                host_config: Some(HostConfig {
                    shm_size: Some(256 * 1024 * 1024),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    stack::wait_healthy(engine, &[name.to_owned()], ui).await?;
    let at = Located::local(engine, name);
    // The dump gives objects to the service's role: it must exist, as in the live database.
    database::of(app)
        .ensure_app_role(engine, name, &password)
        .await?;
    let mut checks = Vec::new();
    ui.step(&format!("replaying {} into {name}", path.display()));
    if let Err(e) = backup::replay(&at, app, path, &std::sync::Mutex::new(None)).await {
        checks.push(failed("replay", format!("{e:#}")));
        return Ok(checks);
    }
    checks.push(passed(
        "replay",
        "the whole dump, in one transaction".to_owned(),
    ));
    checks.push(migrations(&at, live.as_ref(), app).await?);
    checks.push(tables(&at, live.as_ref(), app).await?);
    checks.push(indexes(&at, app).await?);
    Ok(checks)
}

/// Runs one query as the superuser; its rows, one per line (`a|b`), or why it failed.
async fn rows(
    at: &Located<'_>,
    app: App,
    sql: &str,
) -> anyhow::Result<Result<Vec<String>, String>> {
    let (code, out) = backup::query(at, app, sql).await?;
    Ok(if code == 0 {
        Ok(out.lines().map(str::to_owned).collect())
    } else {
        Err(out.trim().to_owned())
    })
}

const MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";

/// The services' migrations: all those the live database has applied (or, without one, some).
async fn migrations(at: &Located<'_>, live: Option<&Live<'_>>, app: App) -> anyhow::Result<Check> {
    let restored = match rows(at, app, MIGRATIONS).await? {
        Ok(versions) => versions,
        Err(why) => return Ok(failed("migrations", why)),
    };
    let expected = match live {
        Some(live) => rows(&live.at, app, MIGRATIONS).await?.ok(),
        None => None,
    };
    Ok(match expected {
        Some(expected) => {
            let missing: Vec<&String> = expected.iter().filter(|v| !restored.contains(v)).collect();
            Check {
                name: "migrations".to_owned(),
                ok: missing.is_empty(),
                detail: if missing.is_empty() {
                    format!("all {} of the live database", expected.len())
                } else {
                    format!(
                        "missing {} that the live database has applied",
                        missing
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            }
        }
        None => Check {
            name: "migrations".to_owned(),
            ok: !restored.is_empty(),
            detail: format!("{} applied (no live database to compare)", restored.len()),
        },
    })
}

/// Every table of the public schema, counted (so read to its end).
const TABLES: &str = "SELECT format('SELECT %L || ''|'' || count(*) FROM public.%I', tablename, tablename) \
     FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename";

async fn counts(
    at: &Located<'_>,
    app: App,
) -> anyhow::Result<Result<BTreeMap<String, String>, String>> {
    let selects = match rows(at, app, TABLES).await? {
        Ok(selects) => selects,
        Err(why) => return Ok(Err(why)),
    };
    if selects.is_empty() {
        return Ok(Err("no table".to_owned()));
    }
    Ok(rows(at, app, &selects.join(" UNION ALL "))
        .await?
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.split_once('|'))
                .map(|(t, n)| (t.to_owned(), n.to_owned()))
                .collect()
        }))
}

/// Every table read, with its rows beside the live database's (which has moved on since).
async fn tables(at: &Located<'_>, live: Option<&Live<'_>>, app: App) -> anyhow::Result<Check> {
    let restored = match counts(at, app).await? {
        Ok(counts) => counts,
        Err(why) => return Ok(failed("tables", why)),
    };
    let live = match live {
        Some(live) => counts(&live.at, app).await?.unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let detail = restored
        .iter()
        .map(|(table, n)| match live.get(table) {
            Some(now) => format!("{table} {n} rows (live {now})"),
            None => format!("{table} {n} rows"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(passed("tables", detail))
}

/// `amcheck` on every B-tree index of the public schema, heap included.
async fn indexes(at: &Located<'_>, app: App) -> anyhow::Result<Check> {
    let sql = "CREATE EXTENSION IF NOT EXISTS amcheck; \
         SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE a.amname = 'btree' AND n.nspname = 'public') checked";
    Ok(match rows(at, app, sql).await? {
        Ok(lines) => passed(
            "indexes",
            format!(
                "{} B-tree indexes sound (amcheck)",
                lines.last().map_or("0", String::as_str)
            ),
        ),
        Err(why) => failed("indexes", why),
    })
}

/// The proofs recorded so far, by backup file name.
pub fn proofs(state: &StateDir) -> anyhow::Result<BTreeMap<String, Proof>> {
    let path = state.path(RECORD_FILE);
    match std::fs::read_to_string(&path) {
        // A damaged record only loses what it said: the next drill writes it anew.
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records what a drill of the backup at `path` found.
pub fn record(state: &StateDir, path: &Path, proof: &Proof) -> anyhow::Result<()> {
    let mut all = proofs(state)?;
    all.insert(file_name(path), proof.clone());
    state.ensure()?;
    write_with_mode(
        &state.path(RECORD_FILE),
        serde_json::to_string_pretty(&all)?.as_bytes(),
        0o644,
    )
}

/// How a backup is named in the record.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
