//! `stackctl backup`: dumps of the databases, their list, retention and schedule.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{Local, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::{
    alerts::{Alert, Alerter, Repeats},
    archive,
    backup::{self, Checksum, Kind},
    config::{CopyPlace, StackConfig, parse_cron},
    docker::{Engine, Health},
    doctor, drill, images, s3,
    stack::App,
    ui::log,
};

use super::Site;

/// Back up the databases: `pg_dump` in each database container, gzipped while it streams, into
/// `<backup.dir>/<db>/<db>_YYYYmmdd_HHMMSS.sql.gz` (UTC) with a `.sha256` beside it. A file
/// appears only when the dump succeeded. Then a physical backup of each database into its WAL
/// archive (differential; full once a week), what `restore --to` starts from; with
/// `backup.copy_to`, the dump and a physical backup go to the copy too.
#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  stackctl backup                  both databases\n  stackctl backup payments\n  stackctl backup list --json\n  stackctl backup prune --keep-days 7 --dry-run\n  stackctl backup schedule         02:00 every day (backup.cron), in the foreground"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which database.
    #[arg(value_enum, default_value = "all")]
    target: Target,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Target {
    Auth,
    Payments,
    All,
}

impl Target {
    fn apps(self) -> Vec<App> {
        match self {
            Self::Auth => vec![App::Auth],
            Self::Payments => vec![App::Payments],
            Self::All => App::ALL.to_vec(),
        }
    }
}

#[derive(clap::Subcommand)]
enum Command {
    /// The backups with kind, time, size, age and whether each matches its checksum; safety
    /// copies that `restore` took of what it replaced are of kind `pre-restore`.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete the backups the retention does not keep: it keeps every backup of the last
    /// keep_days days, the newest of each of the last keep_weeks weeks (Monday to Sunday) and
    /// keep_months months, the newest of each database always; never a file stackctl did not
    /// name. `backup list` shows why each backup is kept.
    Prune {
        /// Days of which every backup is kept (default: backup.keep_days).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep_days: Option<u32>,
        /// Weeks of which the newest backup is kept (default: backup.keep_weeks).
        #[arg(long)]
        keep_weeks: Option<u32>,
        /// Months of which the newest backup is kept (default: backup.keep_months).
        #[arg(long)]
        keep_months: Option<u32>,
        /// Print what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prove backups restore: replay each into a throwaway database container with no network,
    /// check it (the live database's migrations all there, every table read, amcheck on the
    /// B-tree indexes, row counts beside the live ones), remove it, and record the result and
    /// how long it took (`backup list`, `doctor`). Exit 1 when a drill fails.
    Verify {
        /// auth, payments, all (their latest backups), or a backup file.
        #[arg(default_value = "all")]
        what: String,
    },
    /// Run `backup all` then `prune` on a schedule, in the foreground (for systemd); every run
    /// is logged, a failed run does not stop it, SIGTERM lets a running backup finish.
    Schedule {
        /// Cron expression with seconds, in local time (default: backup.cron, "0 0 2 * * *").
        #[arg(long)]
        cron: Option<String>,
        /// When to run a restore drill of each database's latest backup (default:
        /// backup.drill_cron, "0 0 4 * * SUN"; "" for never).
        #[arg(long)]
        drill_cron: Option<String>,
    },
}

#[derive(Serialize)]
struct Row {
    database: &'static str,
    kind: Kind,
    file: PathBuf,
    taken_utc: String,
    size_bytes: u64,
    age_hours: i64,
    checksum: &'static str,
    /// Why the retention keeps it (`recent`, `week of 2026-11-09`), or `next prune`.
    kept: String,
    /// What its last drill (`backup verify`) found.
    drill: Option<drill::Proof>,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    match args.command {
        None => {
            let _lock = ctx.state.lock()?;
            let site = Site::connect(ctx, &config)
                .await
                .map_err(|e| failed(ctx, &args.target.apps(), e))?;
            for app in args.target.apps() {
                for place in dump_places(&config, &root, app)? {
                    for line in place.sweep(app).await? {
                        ctx.ui.detail(&line);
                    }
                }
                let started = Instant::now();
                let b = recorded(ctx, app, take(&site, &config, &root, app, ctx).await)?;
                ctx.ui.step(&format!(
                    "{}: {} ({}, {:.1}s)",
                    app.service().label(),
                    b.path.display(),
                    HumanBytes(b.size),
                    started.elapsed().as_secs_f64()
                ));
                let physical = recorded(ctx, app, take_physical(&site, app, ctx).await)?;
                ctx.ui.step(&physical);
            }
            Ok(())
        }
        Some(Command::List { json }) => {
            list(ctx, &root, config.backup.retention(), json)?;
            if !json {
                windows(ctx, &config).await;
            }
            Ok(())
        }
        Some(Command::Prune {
            keep_days,
            keep_weeks,
            keep_months,
            dry_run,
        }) => {
            let default = config.backup.retention();
            let keep = backup::Retention {
                days: keep_days.unwrap_or(default.days),
                weeks: keep_weeks.unwrap_or(default.weeks),
                months: keep_months.unwrap_or(default.months),
            };
            let _lock = ctx.state.lock()?;
            for app in App::ALL {
                for place in dump_places(&config, &root, app)? {
                    if !dry_run {
                        for line in place.sweep(app).await? {
                            ctx.ui.detail(&line);
                        }
                    }
                    for b in place.prune(app, keep, dry_run).await? {
                        let verb = if dry_run { "would delete" } else { "deleted" };
                        ctx.ui.step(&format!("{verb} {}", b.path.display()));
                    }
                }
            }
            Ok(())
        }
        Some(Command::Verify { what }) => verify(ctx, &config, &root, &what).await,
        Some(Command::Schedule { cron, drill_cron }) => {
            let expr = cron.unwrap_or_else(|| config.backup.cron.clone());
            let drill_expr = drill_cron.unwrap_or_else(|| config.backup.drill_cron.clone());
            schedule(ctx, &config, &expr, &drill_expr).await
        }
    }
}

fn list(
    ctx: &super::Ctx,
    root: &std::path::Path,
    retention: backup::Retention,
    json: bool,
) -> anyhow::Result<()> {
    let now = Utc::now().naive_utc();
    let proofs = drill::proofs(&ctx.state)?;
    let mut rows = Vec::new();
    for app in App::ALL {
        for verdict in backup::judge(backup::list(root, app)?, retention, now) {
            let b = verdict.backup;
            rows.push(Row {
                kept: verdict
                    .keep
                    .map_or_else(|| "next prune".to_owned(), |k| k.to_string()),
                drill: proofs.get(&drill::file_name(&b.path)).cloned(),
                database: app.service().label(),
                kind: b.kind,
                taken_utc: b.taken.format("%Y-%m-%d %H:%M:%S").to_string(),
                size_bytes: b.size,
                age_hours: (now - b.taken).num_hours(),
                checksum: match backup::checksum(&b.path)? {
                    Checksum::Verified => "verified",
                    Checksum::Mismatch => "MISMATCH",
                    Checksum::Missing => "missing",
                },
                file: b.path,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no backups in {} (stackctl backup makes one)",
            root.display()
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "DATABASE",
        "KIND",
        "TAKEN (UTC)",
        "SIZE",
        "AGE",
        "CHECKSUM",
        "KEPT AS",
        "PROVEN",
        "FILE",
    ]);
    for r in rows {
        let age = if r.age_hours < 48 {
            format!("{} h", r.age_hours)
        } else {
            format!("{} d", r.age_hours / 24)
        };
        table.add_row([
            r.database.to_owned(),
            r.kind.label().to_owned(),
            r.taken_utc,
            HumanBytes(r.size_bytes).to_string(),
            age,
            r.checksum.to_owned(),
            r.kept,
            r.drill.map_or_else(String::new, |p| {
                format!(
                    "{} {} ({:.1} s)",
                    if p.ok { "ok" } else { "FAILED" },
                    p.at.format("%Y-%m-%d"),
                    p.secs
                )
            }),
            r.file.display().to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Below the table: the moments `restore --to` can reach, per database, as its archive says.
async fn windows(ctx: &super::Ctx, config: &StackConfig) {
    let site = match Site::connect(ctx, config).await {
        Ok(site) => site,
        Err(e) => {
            println!("archives: not read ({e:#})");
            return;
        }
    };
    let when = |at: chrono::DateTime<Utc>| at.format("%Y-%m-%d %H:%M:%S").to_string();
    for app in App::ALL {
        let label = app.service().label();
        let window = match site.database(app).await {
            Ok(db) => archive::window(&db, app).await,
            Err(e) => Err(e),
        };
        match window {
            Ok(Some(w)) => println!(
                "{label}: restore --to reaches any moment from {} to {} UTC (WAL archived at least every {} s)",
                when(w.from),
                w.to.map_or_else(|| "its first archived WAL".to_owned(), when),
                config.backup.archive_timeout_secs
            ),
            Ok(None) => println!(
                "{label}: no physical backup in the archive yet (stackctl up or backup takes one)"
            ),
            Err(e) => println!("{label}: archive not read ({e:#})"),
        }
    }
}

/// The backups `what` names: each database's latest, or one file (its database from its name).
fn drill_targets(root: &std::path::Path, what: &str) -> anyhow::Result<Vec<Drilled>> {
    let apps = match what {
        "auth" => vec![App::Auth],
        "payments" => vec![App::Payments],
        "all" => App::ALL.to_vec(),
        file => {
            let path = PathBuf::from(file);
            let name = drill::file_name(&path);
            let app = App::ALL
                .into_iter()
                .find(|app| backup::parse_name(*app, &name).is_some())
                .with_context(|| {
                    format!(
                        "{file} is neither auth, payments nor all, nor a backup stackctl named (auth_YYYYmmdd_HHMMSS.sql.gz)"
                    )
                })?;
            return Ok(vec![Drilled { app, path }]);
        }
    };
    let mut targets = Vec::new();
    for app in apps {
        let latest = backup::latest(root, app)?.with_context(|| {
            format!(
                "no {} backup in {} (stackctl backup)",
                app.service().label(),
                root.display()
            )
        })?;
        targets.push(Drilled {
            app,
            path: latest.path,
        });
    }
    Ok(targets)
}

/// A backup to drill, and its database.
struct Drilled {
    app: App,
    path: PathBuf,
}

/// `backup verify`: a drill of each backup `what` names, on this machine's engine.
async fn verify(
    ctx: &super::Ctx,
    config: &StackConfig,
    root: &std::path::Path,
    what: &str,
) -> anyhow::Result<()> {
    let targets = drill_targets(root, what)?;
    let engine = Engine::connect().await?;
    let image = images::ensure_postgres(&engine, config, &ctx.ui).await?;
    // The live databases, to compare with; a drill goes on without them.
    let site = Site::connect(ctx, config).await.ok();
    let mut failed = Vec::new();
    for Drilled { app, path } in targets {
        let label = app.service().label();
        ctx.ui
            .step(&format!("{label}: drill of {}", path.display()));
        let live = match &site {
            Some(site) => match site.database(app).await {
                Ok(at) if at.engine.health(&at.container).await? == Health::Healthy => {
                    Some(drill::Live { at })
                }
                _ => None,
            },
            None => None,
        };
        let proof = drill::run(&engine, &config.project, &image, app, &path, live, &ctx.ui).await?;
        drill::record(&ctx.state, &path, &proof)?;
        for check in &proof.checks {
            println!(
                "{label} {:<10} {:<6} {}",
                check.name,
                if check.ok { "ok" } else { "FAILED" },
                check.detail
            );
        }
        if proof.ok {
            ctx.ui.step(&format!(
                "{label}: {} restores, proven in {:.1} s",
                path.display(),
                proof.secs
            ));
        } else {
            failed.push(format!("{label} ({})", path.display()));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "the drill failed for {}: that backup would not give back a sound database (above)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Backs up both databases then prunes, at every time `expr` names, until SIGTERM or SIGINT;
/// at its start and after each run, what `doctor` finds is alerted.
async fn schedule(
    ctx: &super::Ctx,
    config: &StackConfig,
    expr: &str,
    drill_expr: &str,
) -> anyhow::Result<()> {
    let cron = parse_cron(expr).with_context(|| format!("--cron {expr:?}"))?;
    let drill_cron = (!drill_expr.is_empty())
        .then(|| parse_cron(drill_expr).with_context(|| format!("--drill-cron {drill_expr:?}")))
        .transpose()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let mut watch = Watch {
        alerter: Alerter::new(&config.alerts.webhook)?,
        repeats: Repeats::default(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    };
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(tokio::sync::Notify::new());
    {
        let (stopping, stop) = (stopping.clone(), stop.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listen for SIGTERM")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stopping.store(true, Ordering::SeqCst);
            stop.notify_one();
        });
    }
    log(&format!(
        "backup scheduler started: {expr} (local time), keeping {} days, {} weeks and {} months in {}",
        config.backup.keep_days,
        config.backup.keep_weeks,
        config.backup.keep_months,
        root.display()
    ));
    watch.check(ctx, config, &root).await;
    while !stopping.load(Ordering::SeqCst) {
        let now = Local::now();
        let next_backup = cron
            .find_next_occurrence(&now, false)
            .with_context(|| format!("{expr:?} names no future time"))?;
        let next_drill = drill_cron
            .as_ref()
            .map(|c| c.find_next_occurrence(&now, false))
            .transpose()
            .with_context(|| format!("{drill_expr:?} names no future time"))?;
        let next = next_drill.map_or(next_backup, |d| d.min(next_backup));
        let (backup_due, drill_due) = (next_backup == next, next_drill == Some(next));
        log(&format!(
            "next {} at {}",
            match (backup_due, drill_due) {
                (true, true) => "backup run and restore drill",
                (false, true) => "restore drill",
                _ => "backup run",
            },
            next.format("%Y-%m-%d %H:%M:%S %Z")
        ));
        let due = tokio::time::sleep((next - now).to_std().unwrap_or_default());
        tokio::pin!(due);
        // Between runs, what cannot wait for the next one (WAL archiving failing) is watched.
        let mut watching =
            tokio::time::interval_at(tokio::time::Instant::now() + WATCH_EVERY, WATCH_EVERY);
        loop {
            tokio::select! {
                () = &mut due => break,
                () = stop.notified() => break,
                _ = watching.tick() => watch.check(ctx, config, &root).await,
            }
        }
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        // A signal from here on lets this run finish; the loop ends after it.
        if backup_due {
            match run_once(ctx, config, &root).await {
                Ok(summary) => log(&summary),
                Err(e) => log(&format!("backup run FAILED: {e:#}; the scheduler goes on")),
            }
        }
        if drill_due {
            match verify(ctx, config, &root, "all").await {
                Ok(()) => log("restore drill done: every latest backup restores"),
                Err(e) => log(&format!(
                    "restore drill FAILED: {e:#}; the scheduler goes on"
                )),
            }
        }
        watch.check(ctx, config, &root).await;
    }
    watch.alerter.flush(Duration::from_secs(20)).await;
    log("backup scheduler stopped");
    Ok(())
}

/// How often the scheduler checks between runs.
const WATCH_EVERY: Duration = Duration::from_secs(60);

/// What the scheduler alerts, and where.
struct Watch {
    alerter: Alerter,
    repeats: Repeats,
    /// This machine's name, in every alert.
    host: String,
}

impl Watch {
    /// Alerts each finding of `doctor` that is due.
    async fn check(&mut self, ctx: &super::Ctx, config: &StackConfig, root: &std::path::Path) {
        let mut facts = match doctor::gather(&ctx.state, root) {
            Ok(facts) => facts,
            Err(e) => return log(&format!("cannot check the backups for alerts: {e:#}")),
        };
        super::doctor::read_archivers(ctx, config, &mut facts).await;
        let now = Utc::now();
        let findings = doctor::judge(&facts, now, config.backup.max_age_hours);
        for finding in findings {
            if self.repeats.due(&finding, now) {
                self.alerter.raise(Alert {
                    stack: config.project.clone(),
                    host: self.host.clone(),
                    event: finding.event,
                    subject: finding.subject,
                    message: finding.message,
                    at: now,
                });
            }
        }
    }
}

async fn run_once(
    ctx: &super::Ctx,
    config: &StackConfig,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let _lock = ctx.state.lock()?;
    let site = Site::connect(ctx, config)
        .await
        .map_err(|e| failed(ctx, &App::ALL, e))?;
    let mut parts = Vec::new();
    for app in App::ALL {
        for place in dump_places(config, root, app)? {
            for line in place.sweep(app).await? {
                log(&line);
            }
        }
        let b = recorded(ctx, app, take(&site, config, root, app, ctx).await)?;
        parts.push(format!(
            "{} {} ({})",
            app.service().label(),
            HumanBytes(b.size),
            b.path.display()
        ));
        log(&recorded(ctx, app, take_physical(&site, app, ctx).await)?);
    }
    let mut pruned = 0;
    for app in App::ALL {
        for place in dump_places(config, root, app)? {
            pruned += place
                .prune(app, config.backup.retention(), false)
                .await?
                .len();
        }
    }
    Ok(format!(
        "backup run done in {:.1}s: {}; pruned {pruned}",
        started.elapsed().as_secs_f64(),
        parts.join(", ")
    ))
}

/// Where `app`'s dumps are kept: a folder (under the backup root, or the copy's), or the
/// copy's S3 store. Retention and the sweep of what a killed run left apply to each alike.
enum Dumps {
    Folder(PathBuf),
    Store(Box<backup::StoreFolder>),
}

impl Dumps {
    async fn sweep(&self, app: App) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Folder(dir) => backup::sweep(dir, app),
            Self::Store(store) => store.sweep(app).await,
        }
    }

    async fn prune(
        &self,
        app: App,
        retention: backup::Retention,
        dry_run: bool,
    ) -> anyhow::Result<Vec<backup::Backup>> {
        let now = Utc::now().naive_utc();
        match self {
            Self::Folder(dir) => backup::prune(dir, app, retention, now, dry_run),
            Self::Store(store) => store.prune(app, retention, now, dry_run).await,
        }
    }
}

/// `app`'s dumps in `backup.copy_to`, when there is a copy.
fn copy_dumps(config: &StackConfig, app: App) -> anyhow::Result<Option<Dumps>> {
    Ok(
        match config.backup.copy_place(&config.project, app.database()) {
            None => None,
            Some(CopyPlace::Folder(dir)) => Some(Dumps::Folder(dir.join("dumps"))),
            Some(CopyPlace::S3 { bucket, prefix }) => {
                Some(Dumps::Store(Box::new(backup::StoreFolder {
                    store: s3::Store::new(&config.backup.s3, &bucket)?,
                    bucket,
                    prefix: format!("{prefix}/dumps"),
                })))
            }
        },
    )
}

/// Every place of `app`'s dumps: under the backup root, and in the copy.
fn dump_places(config: &StackConfig, root: &Path, app: App) -> anyhow::Result<Vec<Dumps>> {
    let mut places = vec![Dumps::Folder(backup::folder(root, app))];
    places.extend(copy_dumps(config, app)?);
    Ok(places)
}

/// A dump of `app`'s database where it runs, and its copy in `backup.copy_to`.
async fn take(
    site: &Site,
    config: &StackConfig,
    root: &std::path::Path,
    app: App,
    ctx: &super::Ctx,
) -> anyhow::Result<backup::Backup> {
    let db = site.database(app).await?;
    let dump = backup::take(&db, root, app, Kind::Backup, &ctx.ui).await?;
    let copied = match copy_dumps(config, app)? {
        None => return Ok(dump),
        Some(Dumps::Folder(dir)) => {
            archive::prepare_copy(config, app.database())?;
            backup::copy_to(&dump, &dir).map(|copy| copy.display().to_string())
        }
        Some(Dumps::Store(store)) => store.copy(&dump).await,
    };
    let copy = copied.with_context(|| {
        format!(
            "the dump {} was taken, its copy in backup.copy_to was not",
            dump.path.display()
        )
    })?;
    ctx.ui.detail(&format!("copied to {copy}"));
    Ok(dump)
}

/// A physical backup of `app`'s database into its archive and its copy, after its dump: a
/// line to say.
async fn take_physical(site: &Site, app: App, ctx: &super::Ctx) -> anyhow::Result<String> {
    let label = app.service().label();
    let started = Instant::now();
    let db = site.database(app).await?;
    let spinner = ctx
        .ui
        .spinner(&format!("{label}: physical backup into the archive"));
    let taken = archive::backup(&db, &|| {
        spinner.suspend(|| ctx.ui.detail(&archive::waiting_line(app)));
    })
    .await;
    spinner.finish_and_clear();
    let taken = taken.map_err(|e| {
        let hint = if format!("{e:#}").contains("stanza-create") {
            " (a stack made before archiving needs `stackctl up` once)"
        } else {
            ""
        };
        e.context(format!("the physical backup into the archive failed{hint}"))
    })?;
    let said: Vec<String> = taken
        .iter()
        .map(|p| {
            format!(
                "{} {} in the {}",
                if p.full { "full" } else { "differential" },
                p.label,
                p.repo.name()
            )
        })
        .collect();
    Ok(format!(
        "{label}: physical backup {} ({:.1}s)",
        said.join(", "),
        started.elapsed().as_secs_f64()
    ))
}

/// Passes `outcome` on, after recording it as the last backup attempt of `app`.
fn recorded<T>(ctx: &super::Ctx, app: App, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
    note(
        ctx,
        app,
        outcome.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")),
    );
    outcome
}

/// Records a failure that stopped the backups of `apps` before they began.
fn failed(ctx: &super::Ctx, apps: &[App], error: anyhow::Error) -> anyhow::Error {
    for app in apps {
        note(ctx, *app, Err(format!("{error:#}")));
    }
    error
}

/// Records a backup attempt for `stackctl doctor`; a record that cannot be written is said,
/// not fatal.
fn note(ctx: &super::Ctx, app: App, outcome: Result<(), String>) {
    if let Err(e) = doctor::record(&ctx.state, app, outcome.err()) {
        ctx.ui
            .detail(&format!("could not record the backup attempt: {e:#}"));
    }
}
