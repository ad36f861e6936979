//! `stackctl logs`: the logs of one service's containers, or of all, multiplexed.

use anyhow::bail;
use futures_util::{StreamExt, stream::select_all};

use crate::{
    docker::{Engine, LABEL_SERVICE},
    stack::Service,
};

/// Show the logs of a service (all its instances) or of the whole stack, each line prefixed
/// with its container, like `docker compose logs`. nginx's access log is its stdout.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl logs                    everything so far\n  stackctl logs auth -f            follow app_a1 and app_a2\n  stackctl logs nginx --since 10m  the access log of the last ten minutes\n  stackctl logs payments --tail 50"
)]
pub struct Args {
    /// auth, payments, auth-db, payments-db or nginx; all when omitted.
    service: Option<Service>,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of each container.
    #[arg(long)]
    tail: Option<u64>,
    /// Only lines newer than this: seconds ago (`90`), or with a unit (`10m`, `2h`).
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
}

fn parse_since(raw: &str) -> Result<i64, String> {
    let (digits, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration such as 90, 10m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{raw}': use s, m, h or d")),
    };
    Ok(time::OffsetDateTime::now_utc().unix_timestamp() - secs)
}

const COLOURS: [console::Color; 6] = [
    console::Color::Cyan,
    console::Color::Green,
    console::Color::Yellow,
    console::Color::Magenta,
    console::Color::Blue,
    console::Color::Red,
];

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    super::single_host_only(&config, "logs")?;
    let engine = Engine::connect().await?;
    let mut names: Vec<String> = engine
        .containers(&config.project)
        .await?
        .into_iter()
        .filter(|c| {
            args.service.is_none_or(|s| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SERVICE))
                    .is_some_and(|v| v == s.label())
            })
        })
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no containers{} in stack '{}' (is it up? see stackctl ps)",
            args.service
                .map(|s| format!(" of {}", s.label()))
                .unwrap_or_default(),
            config.project
        );
    }
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let streams = names.iter().enumerate().map(|(i, name)| {
        let prefix = console::style(format!("{name:width$} |"))
            .fg(COLOURS[i % COLOURS.len()])
            .to_string();
        engine
            .logs(name, args.follow, args.tail, args.since)
            .map(move |chunk| chunk.map(|text| (prefix.clone(), text)))
            .boxed()
    });
    let mut merged = select_all(streams);
    while let Some(item) = merged.next().await {
        let (prefix, text) = item?;
        for line in text.lines() {
            println!("{prefix} {line}");
        }
    }
    Ok(())
}
