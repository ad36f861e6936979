//! The `refresh_tokens` table: one row per issued token, grouped in login families.

use sqlx::{FromRow, PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, FromRow)]
pub struct RefreshToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub rotated_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

pub struct NewRefreshToken<'a> {
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub token_hash: &'a [u8],
    pub expires_at: OffsetDateTime,
}

pub async fn insert(
    conn: &mut PgConnection,
    token: NewRefreshToken<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(token.user_id)
    .bind(token.family_id)
    .bind(token.token_hash)
    .bind(token.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The token with this hash, locked until the transaction ends so that two refreshes of one
/// token are serialised.
pub async fn lock_by_hash(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshToken>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, rotated_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

pub async fn mark_rotated(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke_family(conn: &mut PgConnection, family_id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Revokes the login family the token with this hash belongs to (logout). Unknown hashes are a no-op.
pub async fn revoke_family_of(pool: &PgPool, token_hash: &[u8]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE revoked_at IS NULL
           AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(token_hash)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes the tokens that expired before `before`: no answer depends on them any more (an
/// expired token is refused whatever its state). Returns how many went.
pub async fn purge_expired(pool: &PgPool, before: OffsetDateTime) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
