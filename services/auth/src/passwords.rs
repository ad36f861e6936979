//! bcrypt hashing off the async runtime, bounded to one hash per core so a burst of logins queues
//! instead of starving every other request of CPU.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::domain::{Password, password::MAX_BYTES};

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
    /// answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        if password.len() > MAX_BYTES {
            // No stored password is that long, and bcrypt would compare a truncated copy.
            return Ok(false);
        }
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let matched = self
            .blocking(move || bcrypt::verify(password, &hash))
            .await?
            .context("verify password")?;
        Ok(matched && known)
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
