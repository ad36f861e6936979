//! The auth service over real HTTP against a real PostgreSQL, one database per test.
#![allow(clippy::unwrap_used)]

mod binary;
mod conventions;
mod database;
mod health_docs;
mod helpers;
mod login;
mod me;
mod metrics;
mod refresh;
mod register;
