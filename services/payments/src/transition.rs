//! Moving a payment through its state machine: the one sequence the API and webhooks share.

use sqlx::PgConnection;

use crate::{
    db::{self, payments::Payment, transactions::NewTransaction},
    domain::PaymentState,
    error::ApiError,
};

/// Who changes a payment's state, and what they say about it.
pub struct Change<'a> {
    /// `api` or `webhook`.
    pub source: &'a str,
    pub provider_name: Option<&'a str>,
    pub provider_transaction_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// Moves `payment`, locked by the caller in this transaction, to `next` when its state machine
/// allows it, and appends the change to its history; the caller commits. A transition it does
/// not allow is refused with nothing written.
pub async fn apply(
    tx: &mut PgConnection,
    payment: &Payment,
    next: PaymentState,
    change: Change<'_>,
) -> Result<Payment, ApiError> {
    if !payment.state.can_become(next) {
        return Err(ApiError::InvalidTransition {
            from: payment.state,
            to: next,
        });
    }
    let updated = db::payments::set_state(tx, payment.id, next, change.provider_name).await?;
    db::transactions::insert(
        tx,
        NewTransaction {
            payment_id: payment.id,
            status: next,
            source: change.source,
            provider_name: change.provider_name,
            provider_transaction_id: change.provider_transaction_id,
            amount: payment.amount,
            currency: payment.currency,
            reason: change.reason,
        },
    )
    .await?;
    Ok(updated)
}
