//! `ApiError`: every way a payment request can fail, and the response each one gets.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use svc_common::error::ErrorResponse;

use crate::{domain::PaymentState, webhook_signature::SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A response already shaped by the shared plumbing (validation, bad JSON).
    #[error("{}", .0.message)]
    Response(ErrorResponse),
    #[error("Missing bearer token")]
    MissingToken,
    #[error("Invalid or expired access token")]
    InvalidToken,
    #[error("Authentication service unavailable, try again shortly")]
    AuthUnavailable,
    #[error("Payment not found")]
    NotFound,
    #[error("Invalid status transition from {from} to {to}")]
    InvalidTransition {
        from: PaymentState,
        to: PaymentState,
    },
    #[error("A request with this Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    #[error("This Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    WebhookMismatch(String),
    #[error("Internal server error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Response(r) => r.status,
            Self::MissingToken | Self::InvalidToken | Self::Signature(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidTransition { .. }
            | Self::IdempotencyInFlight
            | Self::WebhookMismatch(_) => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ErrorResponse> for ApiError {
    fn from(r: ErrorResponse) -> Self {
        Self::Response(r)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Response(r) => r.into_response(),
            Self::Internal(cause) => svc_common::error::internal(&cause),
            other => svc_common::error::respond(other.status(), other.to_string()),
        }
    }
}
