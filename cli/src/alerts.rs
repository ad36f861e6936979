//! Alerts: a JSON POST to `[alerts] webhook` when something needs an operator. Each one is sent
//! from a task of its own and retried, so a slow or failing receiver never holds up the backup
//! that raised it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::{doctor::Finding, ui::log};

/// Tries per alert, and the wait before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(8)];
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a receiver gets.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The stack's project.
    pub stack: String,
    /// The machine stackctl runs on.
    pub host: String,
    /// What happened: `backup_failed`, `backup_stale`, `no_backup`, `certificate_expiring`.
    pub event: &'static str,
    /// What it is about: `auth`, `payments`, `certificate`.
    pub subject: &'static str,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Where alerts go; without a webhook, nowhere.
pub struct Alerter {
    target: Option<Target>,
    sending: JoinSet<()>,
}

struct Target {
    url: hyper::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Alerter {
    /// `webhook` empty: alerts are only logged.
    pub fn new(webhook: &str) -> anyhow::Result<Self> {
        let target = if webhook.is_empty() {
            None
        } else {
            let url = parse_webhook(webhook)?;
            // Explicit: the process may hold more than one rustls provider.
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))
                .context("alerts.webhook: cannot load this machine's root certificates")?
                .https_or_http()
                .enable_http1()
                .build();
            Some(Target {
                url,
                client: Client::builder(TokioExecutor::new()).build(https),
            })
        };
        Ok(Self {
            target,
            sending: JoinSet::new(),
        })
    }

    /// Logs the alert and sends it in the background.
    pub fn raise(&mut self, alert: Alert) {
        log(&format!(
            "ALERT {} {}: {}",
            alert.event, alert.subject, alert.message
        ));
        let Some(target) = &self.target else {
            return;
        };
        let (url, client) = (target.url.clone(), target.client.clone());
        self.sending.spawn(async move {
            let body = match serde_json::to_vec(&alert) {
                Ok(body) => Bytes::from(body),
                Err(e) => return log(&format!("alert not sent: {e}")),
            };
            let mut waits = BACKOFF.iter();
            loop {
                match post(&client, &url, body.clone()).await {
                    Ok(()) => return,
                    Err(e) => match waits.next() {
                        Some(wait) => {
                            log(&format!(
                                "alert {} {} not delivered ({e:#}); again in {} s",
                                alert.event,
                                alert.subject,
                                wait.as_secs()
                            ));
                            tokio::time::sleep(*wait).await;
                        }
                        None => {
                            return log(&format!(
                                "alert {} {} not delivered after {} tries: {e:#}",
                                alert.event,
                                alert.subject,
                                BACKOFF.len() + 1
                            ));
                        }
                    },
                }
            }
        });
    }

    /// Waits for the alerts still being sent, at most `within`.
    pub async fn flush(mut self, within: Duration) {
        let all = async { while self.sending.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            log("alerts still unsent at exit were dropped");
        }
    }
}

/// A finding that lasts is alerted again after this long.
const REPEAT_AFTER: TimeDelta = TimeDelta::hours(24);

/// Which findings to alert: new ones, a failed backup each time it fails again, and one that
/// lasts once a day.
#[derive(Default)]
pub struct Repeats {
    /// When each (event, subject) was last alerted, and what it said.
    raised: HashMap<(&'static str, &'static str), (DateTime<Utc>, String)>,
}

impl Repeats {
    /// Whether `finding` is to be alerted at `now`; if so, it counts as alerted.
    pub fn due(&mut self, finding: &Finding, now: DateTime<Utc>) -> bool {
        let key = (finding.event, finding.subject);
        let due = match self.raised.get(&key) {
            None => true,
            // Its message holds the attempt's time: a new message is a new failure.
            Some((_, said)) if finding.event == "backup_failed" => *said != finding.message,
            Some((at, _)) => now - *at >= REPEAT_AFTER,
        };
        if due {
            self.raised.insert(key, (now, finding.message.clone()));
        }
        due
    }
}

/// An `http://` or `https://` URL with a host.
pub fn parse_webhook(webhook: &str) -> anyhow::Result<hyper::Uri> {
    // The URL is not repeated: a webhook's path is often its secret.
    let wrong = "alerts.webhook: give an http:// or https:// URL with a host";
    let url: hyper::Uri = webhook.parse().context(wrong)?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        bail!(wrong);
    }
    Ok(url)
}

async fn post(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &hyper::Uri,
    body: Bytes,
) -> anyhow::Result<()> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "stackctl")
        .body(Full::new(body))
        .context("build the request")?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", TIMEOUT.as_secs()))?
        .context("send")?;
    let status = response.status();
    if !status.is_success() {
        bail!("the receiver answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(event: &'static str, message: &str) -> Finding {
        Finding {
            event,
            subject: "payments",
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_lasting_finding_is_alerted_daily_and_each_failed_backup_once() {
        let mut repeats = Repeats::default();
        let t0 = DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z")
            .unwrap()
            .to_utc();
        let hours = |h| t0 + TimeDelta::hours(h);
        let stale = finding("backup_stale", "27 h old");
        assert!(repeats.due(&stale, t0));
        assert!(!repeats.due(&finding("backup_stale", "28 h old"), hours(1)));
        assert!(!repeats.due(&stale, hours(23)));
        assert!(repeats.due(&stale, hours(24)));
        let failed = finding("backup_failed", "failed at 02:00");
        assert!(repeats.due(&failed, t0));
        assert!(!repeats.due(&failed, hours(1)), "the same failure");
        assert!(repeats.due(&finding("backup_failed", "failed at 03:00"), hours(1)));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_webhooks() {
        assert!(parse_webhook("https://hooks.example.com/T0/B0").is_ok());
        assert!(parse_webhook("http://127.0.0.1:9000/alerts").is_ok());
        for bad in [
            "ftp://example.com/x",
            "example.com/hook",
            "https://",
            "not a url",
        ] {
            let err = parse_webhook(bad).unwrap_err().to_string();
            assert!(err.starts_with("alerts.webhook:"), "{bad}: {err}");
        }
    }
}
