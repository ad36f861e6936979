//! Token checks against the auth service's `POST /auth/me`, with a short, bounded cache of
//! positive answers.

use std::time::{Duration, Instant};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prometheus::{IntCounter, IntCounterVec, Opts};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};
use svc_common::metrics::Metrics;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the auth service rejected the token")]
    Rejected,
    #[error("the auth service is unavailable: {0}")]
    Unavailable(String),
}

pub struct AuthClient {
    http: reqwest::Client,
    /// The same client without a connection pool, for the retry: its connection is new, made
    /// to an address resolved now.
    fresh: reqwest::Client,
    me_url: String,
    health_url: String,
    cache: Option<TokenCache>,
}

struct TokenCache {
    entries: Cache<[u8; 32], (Instant, Uuid)>,
    ttl: Duration,
    lookups: IntCounterVec,
    hits: IntCounter,
    misses: IntCounter,
}

impl AuthClient {
    /// `cache_secs == 0` turns the cache off.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        cache_secs: u64,
        cache_capacity: usize,
    ) -> anyhow::Result<Self> {
        let base = base_url.trim_end_matches('/');
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .timeout(timeout)
        };
        let http = builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .context("build the auth service client")?;
        let fresh = builder()
            .pool_max_idle_per_host(0)
            .build()
            .context("build the auth service client")?;
        let cache = (cache_secs > 0 && cache_capacity > 0)
            .then(|| {
                let lookups = IntCounterVec::new(
                    Opts::new(
                        "auth_cache_lookups_total",
                        "Token checks answered from the cache (hit) or sent to the auth service (miss).",
                    ),
                    &["result"],
                )?;
                Ok::<_, prometheus::Error>(TokenCache {
                    entries: Cache::new(cache_capacity),
                    ttl: Duration::from_secs(cache_secs),
                    hits: lookups.with_label_values(&["hit"]),
                    misses: lookups.with_label_values(&["miss"]),
                    lookups,
                })
            })
            .transpose()
            .context("make the token cache's metrics")?;
        Ok(Self {
            http,
            fresh,
            me_url: format!("{base}/auth/me"),
            health_url: format!("{base}/health"),
            cache,
        })
    }

    /// Publishes the token cache's hits and misses (when the cache is on).
    pub fn register_metrics(&self, metrics: &Metrics) -> anyhow::Result<()> {
        match &self.cache {
            Some(cache) => metrics.register(cache.lookups.clone()),
            None => Ok(()),
        }
    }

    /// The id of the user the access token belongs to, as the auth service says.
    pub async fn authenticate(&self, token: &str) -> Result<Uuid, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &self.cache {
            match cache.entries.get(&key) {
                Some((expires, user)) if Instant::now() < expires => {
                    cache.hits.inc();
                    return Ok(user);
                }
                Some(_) => {
                    cache.entries.remove(&key);
                    cache.misses.inc();
                }
                None => cache.misses.inc(),
            }
        }

        let res = self.ask_me(token).await?;
        match res.status().as_u16() {
            200 => {}
            401 | 403 => return Err(AuthError::Rejected),
            other => return Err(AuthError::Unavailable(format!("/auth/me answered {other}"))),
        }
        let body: serde_json::Value = res
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("unreadable /auth/me answer: {e}")))?;
        let user = body["data"]["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| AuthError::Unavailable("/auth/me answered without a user id".into()))?;

        if let Some(cache) = &self.cache
            && let Some(expires) = cache_until(token, cache.ttl)
        {
            cache.entries.insert(key, (expires, user));
        }
        Ok(user)
    }

    /// Sends `POST /auth/me`. A connection the auth instance closed under us (it is being
    /// replaced, or closed an idle keep-alive connection just as it was reused) is retried once
    /// on a new connection, never a pooled one (the pool may hold more connections to the
    /// leaving instance): the call only reads, so a retry is safe. A timeout is not retried.
    async fn ask_me(&self, token: &str) -> Result<reqwest::Response, AuthError> {
        let mut retried = false;
        loop {
            let client = if retried { &self.fresh } else { &self.http };
            let mut req = client.post(&self.me_url).bearer_auth(token);
            if let Some(id) = svc_common::request_id::current() {
                req = req.header(svc_common::request_id::HEADER, id);
            }
            match req.send().await {
                Ok(res) => return Ok(res),
                Err(e) if !retried && !e.is_timeout() => {
                    tracing::warn!(error = %e.without_url(), "auth service call failed; retrying once");
                    retried = true;
                }
                Err(e) => return Err(AuthError::Unavailable(e.without_url().to_string())),
            }
        }
    }

    /// Whether the auth service answers its health check.
    pub async fn reachable(&self) -> bool {
        match self.http.get(&self.health_url).send().await {
            Ok(res) => res.status().is_success(),
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "auth service health probe failed");
                false
            }
        }
    }
}

/// When a positive answer for `token` stops being reusable: after `ttl`, and never past the
/// token's own `exp`. `None` when the expiry cannot be read (then it is not cached).
fn cache_until(token: &str, ttl: Duration) -> Option<Instant> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims["exp"].as_i64()?;
    let left = exp - time::OffsetDateTime::now_utc().unix_timestamp();
    let left = Duration::from_secs(u64::try_from(left).ok()?);
    Some(Instant::now() + ttl.min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_expiring_in(secs: i64) -> String {
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + secs;
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"x","exp":{exp}}}"#));
        format!("e30.{payload}.sig")
    }

    #[test]
    fn cache_never_outlives_the_token() {
        let ttl = Duration::from_secs(30);
        let long = cache_until(&token_expiring_in(600), ttl).unwrap();
        assert!(long <= Instant::now() + ttl);
        let short = cache_until(&token_expiring_in(3), ttl).unwrap();
        assert!(short <= Instant::now() + Duration::from_secs(3));
        assert!(cache_until(&token_expiring_in(-5), ttl).is_none());
        assert!(cache_until("not-a-jwt", ttl).is_none());
    }
}
