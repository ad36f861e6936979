//! bcrypt hashing off the async runtime, bounded to one hash per core so a burst of logins queues
//! instead of starving every other request of CPU, and a bounded queue so that past it a log-in
//! is refused at once (503, retry) instead of waiting out the request timeout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use prometheus::{Histogram, HistogramOpts};
use svc_common::metrics::Metrics;
use tokio::sync::Semaphore;

use crate::domain::{Password, password::MAX_BYTES};

/// The outcome of a password check.
#[derive(Debug, Default)]
pub struct Checked {
    pub matched: bool,
    /// The password hashed at the configured cost, when it matched a hash of another cost.
    pub rehashed: Option<String>,
}

/// The cost a bcrypt hash was made at (`$2b$12$…` → 12).
fn cost_of(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// Hashes that may wait for a core, per core: about 4 s of work at the default cost.
const QUEUE_PER_CORE: usize = 16;

/// Every core is hashing and the queue is full.
#[derive(Debug, thiserror::Error)]
#[error("Too many log-ins at once, try again shortly")]
pub struct Busy;

pub struct Passwords {
    cost: u32,
    slots: Arc<Semaphore>,
    /// Hashes running or waiting, and how many may.
    queued: Arc<AtomicUsize>,
    queue_limit: usize,
    /// Seconds each hash or check took on its core, the wait for the core left out.
    hash_time: Histogram,
    /// Verified against when the user does not exist, so that answer takes as long as a wrong password.
    dummy_hash: String,
}

impl Passwords {
    /// Computes the dummy hash once, at the configured cost.
    pub async fn new(cost: u32) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let dummy_hash =
            tokio::task::spawn_blocking(move || bcrypt::hash("timing-equaliser-password", cost))
                .await
                .context("dummy hash task")?
                .context("compute dummy hash")?;
        Ok(Self {
            cost,
            slots: Arc::new(Semaphore::new(cores)),
            queued: Arc::new(AtomicUsize::new(0)),
            queue_limit: cores * (1 + QUEUE_PER_CORE),
            hash_time: Histogram::with_opts(
                HistogramOpts::new(
                    "bcrypt_hash_seconds",
                    "Time one password hash or check took on its core.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )?,
            dummy_hash,
        })
    }

    /// Publishes the queue's depth and the hashes' times.
    pub fn register_metrics(&self, metrics: &Metrics) -> anyhow::Result<()> {
        let queued = self.queued.clone();
        metrics.gauge(
            "bcrypt_queue_depth",
            "Password hashes running or waiting for a core.",
            move || queued.load(Ordering::Acquire) as f64,
        )?;
        metrics.register(self.hash_time.clone())
    }

    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        let cost = self.cost;
        // `Password` holds at most 72 bytes, all of which bcrypt reads. The crate's
        // `non_truncating_*` refuse 72 itself (no room for the NUL), which the contract allows.
        self.blocking(move || bcrypt::hash(password.into_inner(), cost))
            .await?
            .context("hash password")
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it does the same work and
    /// answers false. A matching hash made at another cost comes back rehashed at this one, so
    /// that stored hashes follow the configured cost (and the dummy's).
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<Checked> {
        if password.len() > MAX_BYTES {
            // No stored password is that long, and bcrypt would compare a truncated copy.
            return Ok(Checked::default());
        }
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let stale = cost_of(&hash) != Some(self.cost);
        let cost = self.cost;
        let (matched, rehashed) = self
            .blocking(move || -> anyhow::Result<(bool, Option<String>)> {
                let matched = bcrypt::verify(&password, &hash).context("verify password")?;
                let rehashed = (matched && stale)
                    .then(|| bcrypt::hash(&password, cost).context("rehash password"))
                    .transpose()?;
                Ok((matched, rehashed))
            })
            .await??;
        Ok(Checked {
            matched: matched && known,
            rehashed: rehashed.filter(|_| known),
        })
    }

    async fn blocking<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _queued = Queued::enter(&self.queued, self.queue_limit)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .context("password hashing pool closed")?;
        let hash_time = self.hash_time.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let done = work();
            hash_time.observe(started.elapsed().as_secs_f64());
            done
        })
        .await
        .context("password hashing task")
    }
}

/// A place in the queue, left when dropped (also when the request is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(queued: &'a AtomicUsize, limit: usize) -> Result<Self, Busy> {
        if queued.fetch_add(1, Ordering::AcqRel) >= limit {
            queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        Ok(Self(queued))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_queue_a_hash_is_refused_at_once() {
        let passwords = Arc::new(Passwords::new(4).await.unwrap());
        let limit = passwords.queue_limit;
        let hash = bcrypt::hash("correct horse", 10).unwrap();
        let attempts: Vec<_> = (0..limit * 3)
            .map(|_| {
                let (passwords, hash) = (passwords.clone(), hash.clone());
                tokio::spawn(async move {
                    passwords
                        .verify("correct horse".to_owned(), Some(hash))
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(checked) => assert!(checked.matched),
                Err(e) => {
                    assert!(e.is::<Busy>(), "{e:#}");
                    busy += 1;
                }
            }
        }
        assert!(busy >= limit, "{busy} of {} refused", limit * 3);
        assert_eq!(passwords.queued.load(Ordering::Acquire), 0);
        assert!(
            passwords
                .verify("correct horse".to_owned(), Some(hash))
                .await
                .is_ok(),
            "the queue empties again"
        );
    }

    #[tokio::test]
    async fn a_hash_of_another_cost_is_upgraded_on_a_match_only() {
        let passwords = Passwords::new(5).await.unwrap();
        let old = bcrypt::hash("correct horse", 4).unwrap();
        assert_eq!(cost_of(&old), Some(4));
        let wrong = passwords
            .verify("wrong horse".to_owned(), Some(old.clone()))
            .await
            .unwrap();
        assert!(!wrong.matched && wrong.rehashed.is_none());
        let right = passwords
            .verify("correct horse".to_owned(), Some(old))
            .await
            .unwrap();
        assert!(right.matched);
        let new = right.rehashed.unwrap();
        assert_eq!(cost_of(&new), Some(5));
        assert!(bcrypt::verify("correct horse", &new).unwrap());
        let current = passwords
            .verify("correct horse".to_owned(), Some(new))
            .await
            .unwrap();
        assert!(current.matched && current.rehashed.is_none());
        let unknown = passwords
            .verify("timing-equaliser-password".to_owned(), None)
            .await
            .unwrap();
        assert!(!unknown.matched && unknown.rehashed.is_none());
    }
}
