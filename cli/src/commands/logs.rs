//! `stackctl logs`: the logs of one service's containers, or of all, multiplexed.

use anyhow::bail;
use futures_util::{StreamExt, stream::select_all};

use super::Site;
use crate::{
    docker::Engine,
    stack::{self, Service, StackContainer},
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

/// One container whose log lines are shown, and the name they are prefixed with.
struct Source<'a> {
    name: String,
    engine: &'a Engine,
    container: String,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let site = Site::connect(ctx, &config).await?;
    let wanted = |c: &StackContainer| args.service.is_none_or(|s| c.service == Some(s));
    let mut sources = Vec::new();
    match &site {
        Site::Local(engine) => {
            for c in stack::containers(engine, &config.project).await? {
                if wanted(&c) {
                    sources.push(Source {
                        name: c.name.clone(),
                        engine,
                        container: c.name,
                    });
                }
            }
        }
        // The running tasks' containers, on every node that answers (`app_a.2.<task id>`
        // shows as `app_a.2 on node 3`).
        Site::Cluster(nodes) => {
            for (i, engine) in nodes.reachable() {
                for c in stack::containers(engine, &config.project).await? {
                    if wanted(&c) && c.running {
                        let task = c.name.rsplit_once('.').map_or(c.name.as_str(), |(t, _)| t);
                        sources.push(Source {
                            name: format!("{task} on node {}", i + 1),
                            engine,
                            container: c.name.clone(),
                        });
                    }
                }
            }
        }
    }
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    if sources.is_empty() {
        bail!(
            "no containers{} in stack '{}' (is it up? see stackctl ps)",
            args.service
                .map(|s| format!(" of {}", s.label()))
                .unwrap_or_default(),
            config.project
        );
    }
    let width = sources.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let streams = sources.iter().enumerate().map(|(i, source)| {
        let prefix = console::style(format!("{:width$} |", source.name))
            .fg(COLOURS[i % COLOURS.len()])
            .to_string();
        source
            .engine
            .logs(&source.container, args.follow, args.tail, args.since)
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
