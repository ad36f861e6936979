//! Configuration, read from the environment at start-up and validated once.

use std::net::IpAddr;

use anyhow::bail;
use svc_common::config::Secret;

/// The minimum bcrypt cost outside test mode.
pub const MIN_BCRYPT_COST: u32 = 10;
/// HS256 keys shorter than this are refused.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL URL, e.g. postgres://auth:PASSWORD@auth-db:5432/nest (environment only).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,
    /// HMAC key of the access tokens, at least 32 bytes (environment only).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Secret,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// `iss` claim written into and required of access tokens.
    #[arg(long, env = "JWT_ISSUER", default_value = "stackctl-auth")]
    pub jwt_issuer: String,
    /// Access token lifetime in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// bcrypt cost factor (10 or more unless AUTH_TEST_MODE is set).
    #[arg(long, env = "BCRYPT_COST", default_value_t = 12)]
    pub bcrypt_cost: u32,
    /// Allows a bcrypt cost under 10. For test suites only.
    #[arg(long, env = "AUTH_TEST_MODE", default_value_t = false)]
    pub test_mode: bool,
    /// Milliseconds a user looked up by `/auth/me` is reused (0 turns the cache off; at most 5000).
    /// Bounds how long a deleted user's still-valid token keeps working.
    #[arg(long, env = "USER_CACHE_MS", default_value_t = 1000)]
    pub user_cache_ms: u64,
    /// Maximum PostgreSQL connections of this instance.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Port of the metrics listener (`GET /metrics`, Prometheus text format) on HOST, or `off`
    /// (nothing served, nothing counted). The edge routes only to PORT, never to this one.
    #[arg(long, env = "METRICS_PORT", default_value = "9300")]
    pub metrics_port: svc_common::config::MetricsPort,
    #[command(flatten)]
    pub leaving: svc_common::config::Leaving,
}

impl Config {
    /// Refuses settings the service must not run with, naming the variable at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.jwt_secret.expose().len() < MIN_JWT_SECRET_BYTES {
            bail!("JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long");
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            bail!("BCRYPT_COST must be between 4 and 31");
        }
        if self.bcrypt_cost < MIN_BCRYPT_COST && !self.test_mode {
            bail!(
                "BCRYPT_COST must be at least {MIN_BCRYPT_COST} (lower costs need AUTH_TEST_MODE=true, for tests only)"
            );
        }
        if self.access_token_ttl_secs == 0 {
            bail!("ACCESS_TOKEN_TTL_SECS must be greater than 0");
        }
        if self.refresh_token_ttl_secs == 0 {
            bail!("REFRESH_TOKEN_TTL_SECS must be greater than 0");
        }
        if self.user_cache_ms > 5000 {
            bail!("USER_CACHE_MS must be at most 5000");
        }
        if self.database_max_connections == 0 {
            bail!("DATABASE_MAX_CONNECTIONS must be greater than 0");
        }
        Ok(())
    }
}
