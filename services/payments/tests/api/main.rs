//! The payment service over real HTTP, against a real auth-svc process and a real PostgreSQL.
#![allow(clippy::unwrap_used)]

mod auth;
mod create;
mod database;
mod helpers;
mod idempotency;
mod metrics;
mod read;
mod status;
mod webhook;
