//! `stackctl history`, and the line each change of what runs adds to it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;

use crate::{
    docker::{Engine, LABEL_SERVICE},
    history::{self, Entry, Release},
    stack, swarm,
};

/// List the changes made to what runs (`up` that changed something, `down`, `scale`,
/// `restart`, `restore`, `certs --force`), oldest first: when, who, the command, its result, each service's
/// instances and image, and the configuration's hash. Kept in `.stackctl/history.jsonl`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl history\n  stackctl history --json | jq '.[-1].release'"
)]
pub struct Args {
    /// Print JSON for scripts: every entry as recorded.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let entries = history::read(&ctx.state)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if entries.is_empty() {
        ctx.ui.step(
            "no change recorded yet (up, down, scale, restart, restore and certs --force are)",
        );
    } else {
        print!("{}", history::render(&entries));
    }
    Ok(())
}

/// Which runs of a command are recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// When what runs differs from the last entry, or it failed (`up`: often it changes nothing).
    IfChanged,
    Always,
}

/// Adds the line of a command that has just finished with `outcome`, with what runs now.
pub async fn record(
    ctx: &super::Ctx,
    recorded: Recorded,
    outcome: &anyhow::Result<()>,
) -> anyhow::Result<()> {
    let release = release(ctx).await?;
    let entry = Entry {
        at: Utc::now(),
        user: user(),
        host: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        release,
        error: outcome.as_ref().err().map(|e| format!("{e:#}")),
    };
    let entries = history::read(&ctx.state)?;
    if recorded == Recorded::Always || history::changed(entries.last(), &entry) {
        history::append(&ctx.state, &entry)?;
    }
    Ok(())
}

/// Who ran stackctl: the user `sudo` was run by, else the login name, else the uid.
fn user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// What runs now: on one host the stack's running containers, on a cluster its services.
async fn release(ctx: &super::Ctx) -> anyhow::Result<Release> {
    // A configuration that does not load (the command failed on it) has no hash.
    let config = ctx.config().ok();
    let config_hash = match &config {
        Some(config) => history::keep_config(&ctx.state, config)?,
        None => String::new(),
    };
    let project = match &config {
        Some(config) => config.project.clone(),
        None => crate::config::StackConfig::default().project,
    };
    let mut images: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut instances: BTreeMap<String, u32> = BTreeMap::new();
    match config.as_ref().and_then(|c| c.cluster.as_ref()) {
        None => {
            let engine = Engine::connect_stack(&project).await?;
            for c in stack::containers(&engine, &project).await? {
                let (Some(service), true) = (c.service, c.running) else {
                    continue;
                };
                let label = service.label().to_owned();
                images.entry(label.clone()).or_default().insert(c.image_id);
                *instances.entry(label).or_default() += 1;
            }
        }
        Some(cluster) => {
            let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
            for service in nodes.manager().services(&project).await? {
                let spec = service.spec.unwrap_or_default();
                let Some(label) = spec.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE)) else {
                    continue;
                };
                let image = spec
                    .task_template
                    .and_then(|t| t.container_spec)
                    .and_then(|c| c.image)
                    .unwrap_or_default();
                let replicas = spec
                    .mode
                    .and_then(|m| m.replicated)
                    .and_then(|r| r.replicas)
                    .unwrap_or(1);
                images.entry(label.clone()).or_default().insert(image);
                *instances.entry(label.clone()).or_default() +=
                    u32::try_from(replicas).unwrap_or(0);
            }
        }
    }
    Ok(Release {
        images: images
            .into_iter()
            .map(|(service, ids)| (service, ids.into_iter().collect::<Vec<_>>().join(",")))
            .collect(),
        instances,
        config_hash,
    })
}
