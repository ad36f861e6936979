//! `stackctl ps`: the stack's containers.

use std::collections::HashMap;

use bollard::models::TaskState;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::{
    cluster::{self, Cluster},
    docker::{Engine, LABEL_SERVICE},
    stack, swarm,
};

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
    /// The swarm node it runs on (`null` on one host).
    node: Option<String>,
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
    let mut rows = match &config.cluster {
        Some(cluster) => cluster_rows(ctx, &config.project, cluster).await?,
        None => local_rows(&config.project).await?,
    };
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
    let clustered = config.cluster.is_some();
    let mut header = vec!["NAME", "SERVICE", "STATE", "HEALTH", "PORTS", "STATUS"];
    if clustered {
        header.insert(1, "NODE");
    }
    table.set_header(header);
    for r in rows {
        let mut row = vec![
            r.name,
            r.service,
            r.state,
            r.health,
            r.ports.join(", "),
            r.status,
        ];
        if clustered {
            row.insert(1, r.node.unwrap_or_default());
        }
        table.add_row(row);
    }
    println!("{table}");
    Ok(())
}

async fn local_rows(project: &str) -> anyhow::Result<Vec<Row>> {
    let engine = Engine::connect_stack(project).await?;
    let mut rows = Vec::new();
    for c in stack::containers(&engine, project).await? {
        let health = engine
            .inspect(&c.name)
            .await?
            .and_then(|i| i.state)
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        rows.push(Row {
            node: None,
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
    Ok(rows)
}

/// The tasks of the stack's services that should run, or still do, on whichever node.
async fn cluster_rows(
    ctx: &super::Ctx,
    project: &str,
    cluster: &Cluster,
) -> anyhow::Result<Vec<Row>> {
    let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
    let manager = nodes.manager();
    let swarm_nodes = manager.nodes().await?;
    let hosts: HashMap<String, String> = swarm_nodes
        .iter()
        .filter_map(|n| Some((n.id.clone()?, n.description.as_ref()?.hostname.clone()?)))
        .collect();
    let addresses: HashMap<String, String> = swarm_nodes
        .iter()
        .filter_map(|n| Some((n.id.clone()?, n.status.as_ref()?.addr.clone()?)))
        .collect();
    let mut rows = Vec::new();
    for service in manager.services(project).await? {
        let spec = service.spec.unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let label = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE))
            .cloned()
            .unwrap_or_default();
        let published: Vec<(i64, i64)> = spec
            .endpoint_spec
            .and_then(|e| e.ports)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.published_port?, p.target_port?)))
            .collect();
        for task in manager.tasks(&name, false).await? {
            let status = task.status.clone().unwrap_or_default();
            let state = status.state.map(|s| s.to_string()).unwrap_or_default();
            let wanted = task.desired_state == Some(TaskState::RUNNING);
            if !wanted && status.state != Some(TaskState::RUNNING) {
                continue;
            }
            let node = task.node_id.clone().unwrap_or_default();
            let host = hosts.get(&node).cloned().unwrap_or(node.clone());
            let address = addresses.get(&node).cloned().unwrap_or_default();
            rows.push(Row {
                name: match task.slot {
                    Some(slot) => format!("{name}.{slot}"),
                    None => format!("{name}.{host}"),
                },
                node: Some(host),
                id: status
                    .container_status
                    .as_ref()
                    .and_then(|c| c.container_id.clone())
                    .map(|id| cluster::short(&id).to_owned())
                    .unwrap_or_default(),
                service: label.clone(),
                // A task runs once its health check passed.
                health: match status.state {
                    Some(TaskState::RUNNING) => "healthy".to_owned(),
                    Some(TaskState::STARTING) => "starting".to_owned(),
                    _ => "none".to_owned(),
                },
                ports: published
                    .iter()
                    .map(|(public, private)| format!("{address}:{public}->{private}"))
                    .collect(),
                status: match (&status.err, wanted) {
                    (Some(err), _) if !err.is_empty() => err.clone(),
                    (_, false) => format!("{} (leaving)", status.message.unwrap_or_default()),
                    _ => status.message.unwrap_or_default(),
                },
                image: spec
                    .task_template
                    .as_ref()
                    .and_then(|t| t.container_spec.as_ref())
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(swarm::LABEL_IMAGE))
                    .cloned()
                    .unwrap_or_default(),
                state,
            });
        }
    }
    Ok(rows)
}
