//! What `stackctl events` prints: the engine's events of the stack's containers, less the
//! noise of health-check probes, and stackctl's own changes as the history records them.

use bollard::models::{EventMessage, EventMessageTypeEnum};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{docker::Naming, history::Entry};

/// One thing that happened to the stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    /// `engine` (a container's life and health, the edge's reloads) or `stackctl`.
    pub source: &'static str,
    /// The container, or who ran stackctl and where.
    pub subject: String,
    /// What happened: the engine's word (`start`, `die`, `health_status: healthy`, `reload`)
    /// or the command with its result.
    pub action: String,
}

/// The event worth showing of an engine's message about one of the stack's containers, which
/// it names by its plain name. Execs are the health checks' probes, every few seconds, and
/// stackctl's own commands: of those only the edge's reloads and route changes are shown.
pub fn from_engine(message: &EventMessage, naming: &Naming) -> Option<Event> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let action = message.action.as_deref()?;
    let action = match action.split_once(": ") {
        Some(("exec_start", command)) => match command.trim() {
            "stack-edge reload" => "reload".to_owned(),
            "stack-edge routes" => "routes".to_owned(),
            _ => return None,
        },
        _ if action.starts_with("exec_") => return None,
        _ => action.to_owned(),
    };
    let attributes = message.actor.as_ref()?.attributes.as_ref()?;
    let mut subject = naming.plain(attributes.get("name")?).to_owned();
    if action == "die"
        && let Some(code) = attributes.get("exitCode")
    {
        subject = format!("{subject} (exit {code})");
    }
    let time = match message.time_nano {
        Some(nanos) => DateTime::from_timestamp_nanos(nanos),
        None => DateTime::from_timestamp(message.time?, 0)?,
    };
    Some(Event {
        time,
        source: "engine",
        subject,
        action,
    })
}

/// A line of the history as an event.
pub fn from_history(entry: &Entry) -> Event {
    Event {
        time: entry.at,
        source: "stackctl",
        subject: format!("{}@{}", entry.user, entry.host),
        action: match &entry.error {
            None => format!("{}: ok", entry.command),
            Some(e) => format!("{}: failed: {e}", entry.command),
        },
    }
}

/// `07:30:00.123  engine    app_a1  health_status: healthy`
pub fn line(e: &Event) -> String {
    format!(
        "{}  {:<8}  {}  {}",
        e.time.format("%Y-%m-%d %H:%M:%S%.3f"),
        e.source,
        e.subject,
        e.action
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::EventActor;

    use super::*;

    fn message(action: &str, attributes: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("0123".to_owned()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                ),
            }),
            time: Some(1_796_022_000),
            time_nano: Some(1_796_022_000_123_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn container_life_health_and_reloads_are_shown_and_probes_are_not() {
        let plain = Naming::of(crate::config::DEFAULT_PROJECT);
        let shown = |action, attributes: &[(&str, &str)]| {
            from_engine(&message(action, attributes), &plain).map(|e| line(&e))
        };
        assert_eq!(
            shown("health_status: healthy", &[("name", "app_a1")]).as_deref(),
            Some("2026-11-30 07:00:00.123  engine    app_a1  health_status: healthy")
        );
        assert_eq!(
            shown("die", &[("name", "app_b2"), ("exitCode", "137")]).as_deref(),
            Some("2026-11-30 07:00:00.123  engine    app_b2 (exit 137)  die")
        );
        assert_eq!(
            shown("exec_start: stack-edge reload", &[("name", "nginx-proxy")]).as_deref(),
            Some("2026-11-30 07:00:00.123  engine    nginx-proxy  reload")
        );
        assert_eq!(
            shown(
                "exec_start: /stackctl serve auth healthcheck",
                &[("name", "app_a1")]
            ),
            None
        );
        assert_eq!(
            shown(
                "exec_create: /stackctl serve auth healthcheck",
                &[("name", "app_a1")]
            ),
            None
        );
        assert_eq!(shown("exec_die", &[("name", "app_a1")]), None);
        let mut network = message("connect", &[("name", "app-network")]);
        network.typ = Some(EventMessageTypeEnum::NETWORK);
        assert_eq!(from_engine(&network, &plain), None);
    }

    #[test]
    fn another_projects_containers_are_named_as_in_their_network() {
        let healthy = message("health_status: healthy", &[("name", "staging-app_a1")]);
        let event = from_engine(&healthy, &Naming::of("staging")).unwrap();
        assert_eq!(event.subject, "app_a1");
    }
}
