//! The `webhook_deliveries` table: which provider events were applied.

use sqlx::PgConnection;
use uuid::Uuid;

/// Records a delivery; `false` when this provider transaction was already recorded. A concurrent
/// duplicate waits on the primary key until the first transaction ends.
pub async fn record(
    conn: &mut PgConnection,
    provider_name: &str,
    provider_transaction_id: &str,
    payment_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (provider_name, provider_transaction_id, payment_id)
         VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(provider_name)
    .bind(provider_transaction_id)
    .bind(payment_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
