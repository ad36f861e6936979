//! The `payment_transactions` table: a payment's history.

use rust_decimal::Decimal;
use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Currency, PaymentState};

#[derive(Debug, Clone, FromRow)]
pub struct Transaction {
    pub id: Uuid,
    pub status: PaymentState,
    pub source: String,
    pub provider_name: Option<String>,
    pub provider_transaction_id: Option<String>,
    pub amount: Decimal,
    pub currency: Currency,
    pub reason: Option<String>,
    pub created_at: OffsetDateTime,
}

pub struct NewTransaction<'a> {
    pub payment_id: Uuid,
    pub status: PaymentState,
    pub source: &'a str,
    pub provider_name: Option<&'a str>,
    pub provider_transaction_id: Option<&'a str>,
    pub amount: Decimal,
    pub currency: Currency,
    pub reason: Option<&'a str>,
}

pub async fn insert(conn: &mut PgConnection, t: NewTransaction<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_transactions (id, payment_id, status, source, provider_name,
             provider_transaction_id, amount, currency, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(t.payment_id)
    .bind(t.status)
    .bind(t.source)
    .bind(t.provider_name)
    .bind(t.provider_transaction_id)
    .bind(t.amount)
    .bind(t.currency)
    .bind(t.reason)
    .execute(conn)
    .await?;
    Ok(())
}
