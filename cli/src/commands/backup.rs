//! `stackctl backup`: dumps of the databases, their list, retention and schedule.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use chrono::{Local, Utc};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::{
    backup::{self, Checksum, Kind},
    config::{StackConfig, parse_cron},
    stack::App,
};

use super::Site;

/// Back up the databases: `pg_dump` in each database container, gzipped while it streams, into
/// `<backup.dir>/<db>/<db>_YYYYmmdd_HHMMSS.sql.gz` (UTC) with a `.sha256` beside it. A file
/// appears only when the dump succeeded.
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
    /// Run `backup all` then `prune` on a schedule, in the foreground (for systemd); every run
    /// is logged, a failed run does not stop it, SIGTERM lets a running backup finish.
    Schedule {
        /// Cron expression with seconds, in local time (default: backup.cron, "0 0 2 * * *").
        #[arg(long)]
        cron: Option<String>,
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
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    match args.command {
        None => {
            let _lock = ctx.state.lock()?;
            let site = Site::connect(ctx, &config).await?;
            for app in args.target.apps() {
                for line in backup::sweep(&root, app)? {
                    ctx.ui.detail(&line);
                }
                let started = Instant::now();
                let db = site.database(app).await?;
                let b = backup::take(&db, &root, app, Kind::Backup, &ctx.ui).await?;
                ctx.ui.step(&format!(
                    "{}: {} ({}, {:.1}s)",
                    app.service().label(),
                    b.path.display(),
                    HumanBytes(b.size),
                    started.elapsed().as_secs_f64()
                ));
            }
            Ok(())
        }
        Some(Command::List { json }) => list(&root, config.backup.retention(), json),
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
            let now = Utc::now().naive_utc();
            let _lock = ctx.state.lock()?;
            for app in App::ALL {
                if !dry_run {
                    for line in backup::sweep(&root, app)? {
                        ctx.ui.detail(&line);
                    }
                }
                for b in backup::prune(&root, app, keep, now, dry_run)? {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    ctx.ui.step(&format!("{verb} {}", b.path.display()));
                }
            }
            Ok(())
        }
        Some(Command::Schedule { cron }) => {
            let expr = cron.unwrap_or_else(|| config.backup.cron.clone());
            schedule(ctx, &config, &expr).await
        }
    }
}

fn list(root: &std::path::Path, retention: backup::Retention, json: bool) -> anyhow::Result<()> {
    let now = Utc::now().naive_utc();
    let mut rows = Vec::new();
    for app in App::ALL {
        for verdict in backup::judge(backup::list(root, app)?, retention, now) {
            let b = verdict.backup;
            rows.push(Row {
                kept: verdict
                    .keep
                    .map_or_else(|| "next prune".to_owned(), |k| k.to_string()),
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
            r.file.display().to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Backs up both databases then prunes, at every time `expr` names, until SIGTERM or SIGINT.
async fn schedule(ctx: &super::Ctx, config: &StackConfig, expr: &str) -> anyhow::Result<()> {
    let cron = parse_cron(expr).with_context(|| format!("--cron {expr:?}"))?;
    let root = ctx.base_dir().join(&config.backup.dir);
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
    while !stopping.load(Ordering::SeqCst) {
        let now = Local::now();
        let next = cron
            .find_next_occurrence(&now, false)
            .with_context(|| format!("{expr:?} names no future time"))?;
        log(&format!(
            "next run at {}",
            next.format("%Y-%m-%d %H:%M:%S %Z")
        ));
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.notified() => break,
        }
        // A signal from here on lets this run finish; the loop ends after it.
        match run_once(ctx, config, &root).await {
            Ok(summary) => log(&summary),
            Err(e) => log(&format!("backup run FAILED: {e:#}; the scheduler goes on")),
        }
    }
    log("backup scheduler stopped");
    Ok(())
}

async fn run_once(
    ctx: &super::Ctx,
    config: &StackConfig,
    root: &std::path::Path,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let _lock = ctx.state.lock()?;
    let site = Site::connect(ctx, config).await?;
    let mut parts = Vec::new();
    for app in App::ALL {
        for line in backup::sweep(root, app)? {
            log(&line);
        }
        let db = site.database(app).await?;
        let b = backup::take(&db, root, app, Kind::Backup, &ctx.ui).await?;
        parts.push(format!(
            "{} {} ({})",
            app.service().label(),
            HumanBytes(b.size),
            b.path.display()
        ));
    }
    let mut pruned = 0;
    for app in App::ALL {
        pruned += backup::prune(
            root,
            app,
            config.backup.retention(),
            Utc::now().naive_utc(),
            false,
        )?
        .len();
    }
    Ok(format!(
        "backup run done in {:.1}s: {}; pruned {pruned}",
        started.elapsed().as_secs_f64(),
        parts.join(", ")
    ))
}

fn log(message: &str) {
    eprintln!("{} {message}", Local::now().format("%Y-%m-%dT%H:%M:%S%:z"));
}
