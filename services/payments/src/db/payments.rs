//! The `payments` table.

use rust_decimal::Decimal;
use sqlx::{FromRow, PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::transactions::Transaction;
use crate::domain::{Currency, PaymentMethod, PaymentState};

const COLUMNS: &str = "id, reference, user_id, amount, currency, payment_method, customer_phone, \
     customer_email, description, state, provider_name, created_at, updated_at";

#[derive(Debug, Clone, FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub reference: String,
    pub user_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub payment_method: PaymentMethod,
    pub customer_phone: String,
    pub customer_email: Option<String>,
    pub description: Option<String>,
    pub state: PaymentState,
    pub provider_name: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

pub struct NewPayment<'a> {
    pub reference: &'a str,
    pub user_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub payment_method: PaymentMethod,
    pub customer_phone: &'a str,
    pub customer_email: Option<&'a str>,
    pub description: Option<&'a str>,
    pub state: PaymentState,
}

/// Inserts the payment and the first row of its history in one statement (one round trip,
/// atomic on its own).
pub async fn insert(conn: &mut PgConnection, p: NewPayment<'_>) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH created AS (
             INSERT INTO payments (id, reference, user_id, amount, currency, payment_method,
                 customer_phone, customer_email, description, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             RETURNING {COLUMNS}
         ), history AS (
             INSERT INTO payment_transactions (id, payment_id, status, source, amount, currency)
             SELECT $11, id, state, 'api', amount, currency FROM created
         )
         SELECT {COLUMNS} FROM created"
    )))
    .bind(Uuid::now_v7())
    .bind(p.reference)
    .bind(p.user_id)
    .bind(p.amount)
    .bind(p.currency)
    .bind(p.payment_method)
    .bind(p.customer_phone)
    .bind(p.customer_email)
    .bind(p.description)
    .bind(p.state)
    .bind(Uuid::now_v7())
    .fetch_one(conn)
    .await
}

#[derive(FromRow)]
struct PaymentWithTransaction {
    #[sqlx(flatten)]
    payment: Payment,
    t_id: Option<Uuid>,
    t_status: Option<PaymentState>,
    t_source: Option<String>,
    t_provider_name: Option<String>,
    t_provider_transaction_id: Option<String>,
    t_amount: Option<Decimal>,
    t_currency: Option<Currency>,
    t_reason: Option<String>,
    t_created_at: Option<OffsetDateTime>,
}

/// The user's payment with this reference and its history, oldest first, in one round trip;
/// another user's payment is as good as missing.
pub async fn find_for_user(
    pool: &PgPool,
    reference: &str,
    user_id: Uuid,
) -> Result<Option<(Payment, Vec<Transaction>)>, sqlx::Error> {
    let rows: Vec<PaymentWithTransaction> = sqlx::query_as(
        "SELECT p.id, p.reference, p.user_id, p.amount, p.currency, p.payment_method,
             p.customer_phone, p.customer_email, p.description, p.state, p.provider_name,
             p.created_at, p.updated_at,
             t.id AS t_id, t.status AS t_status, t.source AS t_source,
             t.provider_name AS t_provider_name,
             t.provider_transaction_id AS t_provider_transaction_id, t.amount AS t_amount,
             t.currency AS t_currency, t.reason AS t_reason, t.created_at AS t_created_at
         FROM payments p
         LEFT JOIN payment_transactions t ON t.payment_id = p.id
         WHERE p.reference = $1 AND p.user_id = $2
         ORDER BY t.id",
    )
    .bind(reference)
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let payment = first.payment.clone();
    let history = rows
        .into_iter()
        .filter_map(|r| {
            Some(Transaction {
                id: r.t_id?,
                status: r.t_status?,
                source: r.t_source?,
                provider_name: r.t_provider_name,
                provider_transaction_id: r.t_provider_transaction_id,
                amount: r.t_amount?,
                currency: r.t_currency?,
                reason: r.t_reason,
                created_at: r.t_created_at?,
            })
        })
        .collect();
    Ok(Some((payment, history)))
}

/// The payment with this reference (of `user_id` when given), locked until the transaction
/// ends, so that concurrent state changes are serialised.
pub async fn lock(
    conn: &mut PgConnection,
    reference: &str,
    user_id: Option<Uuid>,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payments
         WHERE reference = $1 AND ($2::uuid IS NULL OR user_id = $2)
         FOR UPDATE"
    )))
    .bind(reference)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_state(
    conn: &mut PgConnection,
    id: Uuid,
    state: PaymentState,
    provider_name: Option<&str>,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE payments
         SET state = $2, provider_name = COALESCE($3, provider_name), updated_at = now()
         WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(state)
    .bind(provider_name)
    .fetch_one(conn)
    .await
}

/// Up to `limit` of the user's payments older than `before` (all when `None`), newest first.
pub async fn list_for_user(
    pool: &PgPool,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payments
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC
         LIMIT $3"
    )))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
