//! `stackctl ps`: the stack's containers.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::docker::{Engine, LABEL_SERVICE, container_name};

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
    for c in engine.containers(&config.project).await? {
        let name = container_name(&c);
        let health = engine
            .inspect(&name)
            .await?
            .and_then(|i| i.state)
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        let mut ports: Vec<String> = c
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(format!(
                    "{}:{}->{}",
                    p.ip.unwrap_or_default(),
                    p.public_port?,
                    p.private_port
                ))
            })
            .collect();
        ports.sort();
        ports.dedup();
        rows.push(Row {
            service: c
                .labels
                .unwrap_or_default()
                .get(LABEL_SERVICE)
                .cloned()
                .unwrap_or_default(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            id: c.id.unwrap_or_default(),
            health,
            ports,
            name,
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
