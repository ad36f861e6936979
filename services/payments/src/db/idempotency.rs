//! The `idempotency_keys` table: stored answers of `POST /payments`, per user and key.

use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// How long a key's answer is kept and replayed.
pub const RETENTION: &str = "24 hours";

#[derive(Debug, FromRow)]
pub struct Stored {
    pub request_hash: Vec<u8>,
    pub status_code: i32,
    pub response_body: serde_json::Value,
}

/// Takes the key's transaction-scoped lock without waiting; `false` while another request with
/// the same key holds it (that request is still in flight).
pub async fn try_lock(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(user_id.to_string())
        .bind(key)
        .fetch_one(conn)
        .await
}

/// The stored answer for the key, if one younger than the retention exists.
pub async fn find(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT request_hash, status_code, response_body FROM idempotency_keys
         WHERE user_id = $1 AND key = $2 AND created_at > now() - interval '{RETENTION}'"
    )))
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Stores the answer, replacing an expired one under the same key.
pub async fn save(
    conn: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    request_hash: &[u8],
    status_code: i32,
    response_body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response_body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, key) DO UPDATE
         SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code,
             response_body = EXCLUDED.response_body, created_at = now()",
    )
    .bind(user_id)
    .bind(key)
    .bind(request_hash)
    .bind(status_code)
    .bind(response_body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes answers past the retention.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM idempotency_keys WHERE created_at <= now() - interval '{RETENTION}'"
    )))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
