//! The payment service: payments with exact money, a guarded state machine, idempotency keys
//! and signed provider webhooks.

pub mod auth_client;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod routes;
pub mod startup;
pub mod transition;
pub mod webhook_signature;
