//! `stackctl doctor`: what needs an operator, one line each, for cron and monitoring.

use chrono::Utc;

use crate::doctor;

/// Check the backups and the certificate; exit 1 with one line per finding, 0 when all is well.
/// Reads only this machine's files: it works while the engine is down too.
#[derive(clap::Args)]
#[command(
    after_help = "Checks:\n  each database's last backup attempt failed\n  no backup whose checksum verifies, or the newest is older than backup.max_age_hours (26)\n  the edge's certificate expires within 14 days\n\nExamples:\n  stackctl doctor                       one line per finding, exit 1 if any\n  stackctl doctor --json                the findings as a JSON array\n  */15 * * * * stackctl -f /srv/stack/stack.toml doctor || notify-ops"
)]
pub struct Args {
    /// Print the findings as JSON (an empty array when all is well).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let facts = doctor::gather(&ctx.state, &root)?;
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
