//! Queries, one function per statement.

pub mod idempotency;
pub mod payments;
pub mod transactions;
pub mod webhooks;
