//! `stackctl cluster init|status`: the swarm the `[cluster]` nodes form.

use anyhow::{Context, bail};
use bollard::models::{LocalNodeState, Node, NodeSpecRoleEnum, NodeState, Reachability, SwarmInfo};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures_util::future::join_all;
use serde::Serialize;

use crate::{
    cluster::{self, Cluster, Member, Membership, NodeLabel, Step},
    docker::{Engine, SWARM_PORT},
};

/// Form the Docker Swarm cluster that `[cluster]` lists, and see how it is doing.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Init(InitArgs),
    Status(StatusArgs),
}

/// Put every node of `[cluster]` in one swarm (a new one on the first node, or the one some of
/// them are in already), three of them managers, and label them as configured. Safe to run
/// again: what is in place is left alone.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  stackctl cluster init\n  stackctl -f prod.toml cluster init")]
struct InitArgs {}

/// List the swarm's nodes: role, availability, whether they answer, their labels and what of the
/// stack runs on each.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl cluster status\n  stackctl cluster status --json | jq -r '.[] | select(.state != \"ready\") | .hostname'"
)]
struct StatusArgs {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    match args.command {
        Command::Init(_) => init(ctx).await,
        Command::Status(args) => status(args, ctx).await,
    }
}

fn configured(ctx: &super::Ctx) -> anyhow::Result<Cluster> {
    ctx.config()?.cluster.with_context(|| {
        format!(
            "{} has no [cluster] table: list the nodes' engines there first (README: \"More than one machine\")",
            ctx.config_file.display()
        )
    })
}

/// Every node's engine, or why it cannot be reached, in `[cluster]`'s order.
async fn connect_all(cluster: &Cluster, ctx: &super::Ctx) -> Vec<anyhow::Result<Engine>> {
    join_all(
        cluster
            .nodes
            .iter()
            .map(|node| Engine::connect_node(node, ctx.base_dir())),
    )
    .await
}

fn membership(info: &SwarmInfo) -> Membership {
    match info.local_node_state {
        None | Some(LocalNodeState::INACTIVE | LocalNodeState::EMPTY) => Membership::Inactive,
        Some(LocalNodeState::ACTIVE) => Membership::Member(Member {
            node_id: info.node_id.clone().unwrap_or_default(),
            cluster_id: info.cluster.as_ref().and_then(|c| c.id.clone()),
            manager: info.control_available == Some(true),
            managers: info
                .remote_managers
                .iter()
                .flatten()
                .filter_map(|p| p.node_id.clone())
                .collect(),
        }),
        Some(other) => Membership::Stuck(match &info.error {
            Some(e) if !e.is_empty() => format!("{other} ({e})"),
            _ => other.to_string(),
        }),
    }
}

async fn init(ctx: &super::Ctx) -> anyhow::Result<()> {
    let cluster = configured(ctx)?;
    let _lock = ctx.state.lock()?;
    let ui = &ctx.ui;
    let mut engines = Vec::new();
    let mut unreachable = Vec::new();
    for (i, engine) in connect_all(&cluster, ctx).await.into_iter().enumerate() {
        match engine {
            Ok(engine) => engines.push(engine),
            Err(e) => unreachable.push(format!("node {}: {e:#}", i + 1)),
        }
    }
    if !unreachable.is_empty() {
        bail!(
            "nothing was changed; every node must answer:\n  {}",
            unreachable.join("\n  ")
        );
    }
    let mut seen = Vec::new();
    for engine in &engines {
        seen.push(membership(&engine.swarm().await?));
    }
    let steps = cluster::plan(&seen, cluster.managers())?;
    // The manager new nodes join through: one already in the swarm, or the one that starts it.
    let mut manager = seen
        .iter()
        .position(|m| matches!(m, Membership::Member(member) if member.manager));
    for step in &steps {
        let spinner = ui.spinner(&step.to_string());
        match *step {
            Step::Init { node } => {
                engines[node]
                    .init_swarm(cluster.nodes[node].advertise())
                    .await
                    .with_context(|| {
                        format!("node {} ({})", node + 1, cluster.nodes[node].engine)
                    })?;
                manager = Some(node);
            }
            Step::Join {
                node,
                manager: as_manager,
            } => {
                let via = manager.context("no manager to join through")?;
                let tokens = engines[via].join_tokens().await?;
                let token = if as_manager {
                    tokens.manager
                } else {
                    tokens.worker
                };
                let address = engines[via].swarm().await?.node_addr.unwrap_or_default();
                engines[node]
                    .join_swarm(
                        &format!("{address}:{SWARM_PORT}"),
                        &token.unwrap_or_default(),
                        cluster.nodes[node].advertise(),
                    )
                    .await
                    .with_context(|| {
                        format!("node {} ({})", node + 1, cluster.nodes[node].engine)
                    })?;
            }
        }
        spinner.finish_and_clear();
        ui.step(&step.to_string());
    }
    let via = manager.context("no node is a manager of the swarm")?;
    label(&cluster, &engines, &engines[via], ui).await?;
    ui.done();
    Ok(())
}

/// Sets each node's labels as configured and promotes nodes until the swarm has its managers.
async fn label(
    cluster: &Cluster,
    engines: &[Engine],
    manager: &Engine,
    ui: &crate::ui::Ui,
) -> anyhow::Result<()> {
    let nodes = manager.nodes().await?;
    let mut ids = Vec::new();
    for engine in engines {
        ids.push(engine.swarm().await?.node_id.unwrap_or_default());
    }
    let is_manager =
        |n: &Node| n.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER);
    let mut managers = ids
        .iter()
        .filter(|id| {
            nodes
                .iter()
                .any(|n| n.id.as_ref() == Some(id) && is_manager(n))
        })
        .count();
    for (i, id) in ids.iter().enumerate() {
        let node = nodes
            .iter()
            .find(|n| n.id.as_ref() == Some(id))
            .with_context(|| format!("node {} is not among the swarm's nodes", i + 1))?;
        let promote = !is_manager(node) && managers < cluster.managers();
        managers += usize::from(promote);
        let current = node.spec.clone().unwrap_or_default();
        if let Some(spec) = cluster::node_spec(&current, &cluster.nodes[i].labels, promote) {
            manager.update_node(node, spec).await?;
            let labels: Vec<&str> = cluster.nodes[i].labels.iter().map(|l| l.name()).collect();
            ui.step(&format!(
                "node {}: labels {}{}",
                i + 1,
                if labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels.join(", ")
                },
                if promote { ", promoted to manager" } else { "" }
            ));
        }
    }
    Ok(())
}

/// One node as `cluster status` shows it.
#[derive(Debug, Serialize)]
struct Row {
    /// Its place in `[cluster]` counted from 1, when it is listed there.
    node: Option<usize>,
    engine: Option<String>,
    hostname: String,
    address: String,
    /// `manager` or `worker`; empty for a node outside the swarm.
    role: String,
    availability: String,
    /// The swarm's view: `ready`, `down`, `disconnected`; or `not in the swarm`.
    state: String,
    /// A manager's place in the control plane: `leader`, `reachable`, `unreachable`.
    manager: String,
    /// Whether stackctl's connection to its engine answered.
    engine_answers: bool,
    labels: Vec<String>,
    /// The stack's tasks on it, as `service (state)`.
    runs: Vec<String>,
}

async fn status(args: StatusArgs, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let cluster = configured(ctx)?;
    let engines = connect_all(&cluster, ctx).await;
    let mut ids: Vec<Option<String>> = Vec::new();
    let mut manager = None;
    for engine in &engines {
        let info = match engine {
            Ok(engine) => engine.swarm().await.ok(),
            Err(_) => None,
        };
        let info = info.unwrap_or_default();
        if manager.is_none() && info.control_available == Some(true) {
            manager = engine.as_ref().ok();
        }
        ids.push(
            info.node_id.filter(|id| {
                !id.is_empty() && info.local_node_state == Some(LocalNodeState::ACTIVE)
            }),
        );
    }
    let mut rows = Vec::new();
    if let Some(manager) = manager {
        let tasks = manager.stack_tasks(&config.project).await?;
        for node in manager.nodes().await? {
            let id = node.id.clone().unwrap_or_default();
            let address = node
                .status
                .as_ref()
                .and_then(|s| s.addr.clone())
                .unwrap_or_default();
            // By the id its engine gave; for an engine that does not answer, by its address.
            let index = ids
                .iter()
                .position(|i| i.as_deref() == Some(&id))
                .or_else(|| {
                    cluster
                        .nodes
                        .iter()
                        .position(|n| n.advertise().is_some_and(|a| a.to_string() == address))
                });
            let spec = node.spec.clone().unwrap_or_default();
            let labels = spec.labels.clone().unwrap_or_default();
            rows.push(Row {
                node: index.map(|i| i + 1),
                engine: index.map(|i| cluster.nodes[i].engine.clone()),
                hostname: node
                    .description
                    .as_ref()
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_default(),
                address,
                role: spec.role.map(|r| r.to_string()).unwrap_or_default(),
                availability: spec.availability.map(|a| a.to_string()).unwrap_or_default(),
                state: node
                    .status
                    .as_ref()
                    .and_then(|s| s.state)
                    .unwrap_or(NodeState::UNKNOWN)
                    .to_string(),
                manager: match &node.manager_status {
                    Some(m) if m.leader == Some(true) => "leader".to_owned(),
                    Some(m) => m.reachability.unwrap_or(Reachability::UNKNOWN).to_string(),
                    None => String::new(),
                },
                engine_answers: index.is_some_and(|i| engines[i].is_ok()),
                labels: NodeLabel::ALL
                    .iter()
                    .filter(|l| labels.contains_key(l.key()))
                    .map(|l| l.name().to_owned())
                    .collect(),
                runs: tasks
                    .iter()
                    .filter(|t| t.node_id == id)
                    .map(|t| format!("{} ({})", t.service, t.state))
                    .collect(),
            });
        }
    }
    // Listed nodes the swarm does not know of (or no manager answered).
    for (i, node) in cluster.nodes.iter().enumerate() {
        if rows.iter().any(|r| r.node == Some(i + 1)) {
            continue;
        }
        rows.push(Row {
            node: Some(i + 1),
            engine: Some(node.engine.clone()),
            hostname: String::new(),
            address: node.advertise().map(|a| a.to_string()).unwrap_or_default(),
            role: String::new(),
            availability: String::new(),
            state: if manager.is_some() {
                "not in the swarm".to_owned()
            } else {
                "no manager answers".to_owned()
            },
            manager: String::new(),
            engine_answers: engines[i].is_ok(),
            labels: node.labels.iter().map(|l| l.name().to_owned()).collect(),
            runs: Vec::new(),
        });
    }
    rows.sort_by_key(|r| (r.node.is_none(), r.node, r.hostname.clone()));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "NODE",
        "HOST",
        "ADDRESS",
        "ROLE",
        "AVAILABILITY",
        "STATE",
        "MANAGER",
        "ENGINE",
        "LABELS",
        "RUNS",
    ]);
    for r in &rows {
        table.add_row([
            r.node.map_or_else(|| "-".to_owned(), |i| i.to_string()),
            r.hostname.clone(),
            r.address.clone(),
            r.role.clone(),
            r.availability.clone(),
            r.state.clone(),
            r.manager.clone(),
            match (&r.engine, r.engine_answers) {
                (None, _) => "not in [cluster]".to_owned(),
                (Some(_), true) => "answers".to_owned(),
                (Some(_), false) => "unreachable".to_owned(),
            },
            r.labels.join(", "),
            r.runs.join(", "),
        ]);
    }
    println!("{table}");
    if manager.is_none() {
        ctx.ui
            .step("no node answers as a swarm manager; `stackctl cluster init` forms the swarm");
    }
    Ok(())
}
