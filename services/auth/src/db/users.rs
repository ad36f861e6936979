//! The `users` table.

use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub phone: String,
    pub created_at: OffsetDateTime,
}

#[derive(FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub password_hash: String,
}

pub async fn insert(
    pool: &PgPool,
    id: Uuid,
    email: &str,
    phone: &str,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (id, email, phone, password_hash) VALUES ($1, $2, $3, $4)
         RETURNING id, email, phone, created_at",
    )
    .bind(id)
    .bind(email)
    .bind(phone)
    .bind(password_hash)
    .fetch_one(pool)
    .await
}

/// Credentials of the user whose e-mail or phone is `identifier` (already normalised).
pub async fn find_credentials(
    pool: &PgPool,
    identifier: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, password_hash FROM users WHERE email = $1 OR phone = $1")
        .bind(identifier)
        .fetch_optional(pool)
        .await
}

pub async fn find_by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, phone, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Replaces a user's password hash (the same password at another bcrypt cost).
pub async fn set_password_hash(pool: &PgPool, id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}
