//! Configuration, read from the environment at start-up and validated once.

use std::net::IpAddr;

use anyhow::bail;
use svc_common::config::Secret;

/// Webhook keys shorter than this are refused.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;
/// Longest allowed lifetime of a cached token check.
pub const MAX_AUTH_CACHE_SECS: u64 = 30;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL URL, e.g. postgres://payments:PASSWORD@payments-db:5432/payments (environment only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// HMAC-SHA256 key that payment providers sign webhooks with (environment only).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Secret,
    /// Base URL of the auth service, e.g. http://app_a1:3000.
    #[arg(long, env = "AUTH_SERVICE_URL")]
    pub auth_service_url: String,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 4000)]
    pub port: u16,
    /// Milliseconds to wait for the auth service before answering 503.
    #[arg(long, env = "AUTH_TIMEOUT_MS", default_value_t = 2000)]
    pub auth_timeout_ms: u64,
    /// Seconds a positive token check is reused (0 turns the cache off; at most 30).
    #[arg(long, env = "AUTH_CACHE_SECS", default_value_t = 5)]
    pub auth_cache_secs: u64,
    /// Tokens remembered by the cache at most.
    #[arg(long, env = "AUTH_CACHE_CAPACITY", default_value_t = 10_000)]
    pub auth_cache_capacity: usize,
    /// Seconds a webhook timestamp may be away from now.
    #[arg(long, env = "WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub webhook_tolerance_secs: u64,
    /// Maximum PostgreSQL connections of this instance.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Port of the metrics listener (`GET /metrics`, Prometheus text format) on HOST, or `off`
    /// (nothing served, nothing counted). The edge routes only to PORT, never to this one.
    #[arg(long, env = "METRICS_PORT", default_value = "9400")]
    pub metrics_port: svc_common::config::MetricsPort,
    #[command(flatten)]
    pub leaving: svc_common::config::Leaving,
}

impl Config {
    /// Refuses settings the service must not run with, naming the variable at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.webhook_secret.expose().len() < MIN_WEBHOOK_SECRET_BYTES {
            bail!("WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes long");
        }
        let url = self.auth_service_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            bail!("AUTH_SERVICE_URL must be an http(s) URL such as http://app_a1:3000");
        }
        if self.auth_cache_secs > MAX_AUTH_CACHE_SECS {
            bail!("AUTH_CACHE_SECS must be at most {MAX_AUTH_CACHE_SECS}");
        }
        if self.auth_timeout_ms == 0 {
            bail!("AUTH_TIMEOUT_MS must be greater than 0");
        }
        if self.database_max_connections == 0 {
            bail!("DATABASE_MAX_CONNECTIONS must be greater than 0");
        }
        Ok(())
    }
}
