//! `stackctl events`: what happens to the stack, as it happens.

use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;

use crate::{
    docker::Engine,
    events::{self, Event},
    history,
};

/// Follow the stack: its containers being created, started, stopped, dying (with the exit
/// code) and their health changing, the edge reloading, and stackctl's own changes (the lines
/// `history` lists), until Ctrl-C.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl events\n  stackctl events --json | jq -c 'select(.action | startswith(\"health_status\"))'"
)]
pub struct Args {
    /// One JSON object per line: time, source (engine or stackctl), subject, action.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    super::on_one_host(&config, "events", "`stackctl ps` shows its tasks")?;
    let engine = Engine::connect_stack(&config.project).await?;
    let mut engine_events = engine.events(&config.project);
    let print = |event: &Event| -> anyhow::Result<()> {
        if args.json {
            println!("{}", serde_json::to_string(event)?);
        } else {
            println!("{}", events::line(event));
        }
        Ok(())
    };
    // The history is read again every second: only what is added after this start is shown.
    let mut shown = history::read(&ctx.state)?.len();
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut stop = super::Stop::listen()?;
    ctx.ui.step(&format!(
        "following stack '{}' (Ctrl-C to stop)",
        config.project
    ));
    loop {
        tokio::select! {
            message = engine_events.next() => match message {
                Some(message) => {
                    if let Some(event) = events::from_engine(&message?, engine.naming()) {
                        print(&event)?;
                    }
                }
                None => bail!("the engine ended its event stream"),
            },
            _ = every_second.tick() => {
                let entries = history::read(&ctx.state)?;
                for entry in entries.iter().skip(shown) {
                    print(&events::from_history(entry))?;
                }
                shown = entries.len();
            }
            () = stop.requested() => return Ok(()),
        }
    }
}
