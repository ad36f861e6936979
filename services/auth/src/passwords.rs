//! bcrypt hashing off the async runtime, bounded to one hash per core so a burst of logins queues
//! instead of starving every other request of CPU.

use std::sync::Arc;

use anyhow::Context;
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

pub struct Passwords {
    cost: u32,
    slots: Arc<Semaphore>,
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
            dummy_hash,
        })
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
        let _slot = self
            .slots
            .acquire()
            .await
            .context("password hashing pool closed")?;
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
