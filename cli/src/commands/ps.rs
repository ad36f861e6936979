//! `stackctl ps`: the stack's containers.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::{docker::Engine, stack};

/// List the stack's containers with state, health, ports and uptime.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl ps\n  stackctl ps --json | jq -r '.[] | select(.health != \"healthy\") | .name'"
)]
pub struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    id: String,
    service: String,
    state: String,
    health: String,
    ports: Vec<String>,
    status: String,
    image: String,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let engine = Engine::connect().await?;
    let mut rows = Vec::new();
    for c in stack::containers(&engine, &config.project).await? {
        let health = engine
            .inspect(&c.name)
            .await?
            .and_then(|i| i.state)
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        rows.push(Row {
            service: c.service.map(|s| s.label().to_owned()).unwrap_or_default(),
            name: c.name,
            id: c.id,
            state: c.state,
            health,
            ports: c.ports,
            status: c.status,
            image: c.image,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        ctx.ui.step(&format!(
            "stack '{}' has no containers (stackctl up starts it)",
            config.project
        ));
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["NAME", "SERVICE", "STATE", "HEALTH", "PORTS", "STATUS"]);
    for r in rows {
        table.add_row([
            r.name,
            r.service,
            r.state,
            r.health,
            r.ports.join(", "),
            r.status,
        ]);
    }
    println!("{table}");
    Ok(())
}
