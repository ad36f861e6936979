//! The auth service: registration, login, JWT access tokens and rotating refresh tokens.

pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod passwords;
pub mod routes;
pub mod startup;
pub mod tokens;
pub mod user_cache;
