//! Queries, one function per statement.

pub mod login_failures;
pub mod refresh_tokens;
pub mod users;

/// Whether `e` is a unique-constraint violation (SQLSTATE 23505).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}
