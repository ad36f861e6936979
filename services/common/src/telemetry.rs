//! Logging: JSON lines when stdout is not a terminal (containers), readable text when it is.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::io::stdout().is_terminal() {
        fmt().with_env_filter(filter).init();
    } else {
        fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init();
    }
}
