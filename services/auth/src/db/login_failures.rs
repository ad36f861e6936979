//! The `login_failures` table: failed log-ins per identifier within a window, and until when
//! that identifier is refused.

use sqlx::PgPool;

/// Failures allowed in a window before each further one locks the identifier for a while.
pub const FREE_FAILURES: i32 = 5;

/// Seconds the identifier is still refused for, if it is.
pub async fn locked_for(pool: &PgPool, identifier: &str) -> Result<Option<u64>, sqlx::Error> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM locked_until - now())::float8 FROM login_failures
         WHERE identifier = $1 AND locked_until > now()",
    )
    .bind(identifier)
    .fetch_optional(pool)
    .await?;
    Ok(secs.map(|s| s.ceil().max(1.0) as u64))
}

/// Counts a failure (a window lasts 15 minutes from its first one). From the `FREE_FAILURES`th
/// on, each locks the identifier: 30 s, then twice as long each time, at most 15 minutes.
pub async fn record(pool: &PgPool, identifier: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_failures AS f (identifier, failures, window_start)
         VALUES ($1, 1, now())
         ON CONFLICT (identifier) DO UPDATE SET
             failures = CASE WHEN f.window_start < now() - interval '15 minutes'
                             THEN 1 ELSE f.failures + 1 END,
             window_start = CASE WHEN f.window_start < now() - interval '15 minutes'
                                 THEN now() ELSE f.window_start END",
    )
    .bind(identifier)
    .execute(pool)
    .await?;
    sqlx::query(
        "UPDATE login_failures SET locked_until = now() + least(
             interval '30 seconds' * power(2, failures - $2), interval '15 minutes')
         WHERE identifier = $1 AND failures >= $2",
    )
    .bind(identifier)
    .bind(FREE_FAILURES)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the failures of an identifier that logged in.
pub async fn clear(pool: &PgPool, identifier: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE identifier = $1")
        .bind(identifier)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes windows that ended a day ago and lock nothing any more.
pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM login_failures WHERE window_start < now() - interval '1 day'
         AND (locked_until IS NULL OR locked_until < now())",
    )
    .execute(pool)
    .await?
    .rows_affected())
}
