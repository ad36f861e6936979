//! `stackctl`: stands up and operates the auth + payments stack.

use clap::Parser;

/// Stands up and runs the auth and payment services, their PostgreSQL databases and the nginx
/// TLS edge on the local Docker engine.
#[derive(Parser)]
#[command(name = "stackctl", version)]
struct Cli {}

fn main() {
    Cli::parse();
}
