//! A short, bounded cache of users found by id, so that `/auth/me` (called by the payment
//! service on every request) does not cost a database round trip each time.

use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, users::User};

const CAPACITY: usize = 10_000;

pub struct UserCache {
    entries: Option<Cache<Uuid, (Instant, User)>>,
    ttl: Duration,
}

impl UserCache {
    /// `ttl` of zero turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: (!ttl.is_zero()).then(|| Cache::new(CAPACITY)),
            ttl,
        }
    }

    /// The user with this id; a found user is remembered for `ttl`, a missing one never.
    pub async fn find(&self, pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        let Some(entries) = &self.entries else {
            return db::users::find_by_id(pool, id).await;
        };
        if let Some((expires, user)) = entries.get(&id)
            && Instant::now() < expires
        {
            return Ok(Some(user));
        }
        let user = db::users::find_by_id(pool, id).await?;
        match &user {
            Some(found) => entries.insert(id, (Instant::now() + self.ttl, found.clone())),
            None => {
                entries.remove(&id);
            }
        }
        Ok(user)
    }
}
