//! `stackctl doctor`: what needs an operator, one line each, for cron and monitoring.

use chrono::Utc;

use super::Site;
use crate::{archive, config::StackConfig, doctor};

/// Check the backups and the certificate; exit 1 with one line per finding, 0 when all is well.
/// Reads this machine's files, so it works while the engine is down too, and asks the databases
/// how their WAL archiving goes when the engine answers.
#[derive(clap::Args)]
#[command(
    after_help = "Checks:\n  each database's last backup attempt failed\n  no backup whose checksum verifies, or the newest is older than backup.max_age_hours (26)\n  the edge's certificate expires within 14 days\n  a database's WAL archiving has failed for over 5 minutes\n\nExamples:\n  stackctl doctor                       one line per finding, exit 1 if any\n  stackctl doctor --json                the findings as a JSON array\n  */15 * * * * stackctl -f /srv/stack/stack.toml doctor || notify-ops"
)]
pub struct Args {
    /// Print the findings as JSON (an empty array when all is well).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let mut facts = doctor::gather(&ctx.state, &root)?;
    read_archivers(ctx, &config, &mut facts).await;
    let findings = doctor::judge(&facts, Utc::now(), config.backup.max_age_hours);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else if findings.is_empty() {
        println!("all well: backups are recent and verified, the certificate is not due");
    } else {
        for f in &findings {
            println!("{}: {}", f.subject, f.message);
        }
    }
    if findings.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} finding{} (above)",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        )
    }
}

/// Fills in how each database's WAL archiving goes, where the engine answers within 20 s, and
/// why not where it does not.
pub async fn read_archivers(ctx: &super::Ctx, config: &StackConfig, facts: &mut doctor::Facts) {
    let read = async {
        let site = Site::connect(ctx, config).await?;
        for db in &mut facts.databases {
            let read = async {
                let at = site.database(db.app).await?;
                archive::archiver(&at, db.app).await
            };
            match read.await {
                Ok(archiver) => db.archiver = Some(archiver),
                Err(e) => db.unchecked = Some(format!("{e:#}")),
            }
        }
        anyhow::Ok(())
    };
    let failed = match tokio::time::timeout(std::time::Duration::from_secs(20), read).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => "the engine did not answer within 20 s".to_owned(),
    };
    for db in &mut facts.databases {
        if db.archiver.is_none() && db.unchecked.is_none() {
            db.unchecked = Some(failed.clone());
        }
    }
}
