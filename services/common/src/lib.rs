//! Plumbing shared by the stack's HTTP services. Holds no domain rules.

pub mod config;
pub mod contact;
pub mod docs;
pub mod envelope;
pub mod error;
pub mod health;
pub mod http;
pub mod json;
pub mod metrics;
pub mod request_id;
pub mod startup;
pub mod telemetry;
