//! `ApiError`: every way an auth request can fail, and the response each one gets.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use svc_common::error::ErrorResponse;

use crate::passwords::Busy;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A response already shaped by the shared plumbing (validation, bad JSON).
    #[error("{}", .0.message)]
    Response(ErrorResponse),
    #[error("User already exists")]
    UserExists,
    #[error("Invalid credentials")]
    InvalidCredentials,
    #[error("Invalid or expired access token")]
    InvalidAccessToken,
    #[error("Missing bearer token")]
    MissingAccessToken,
    #[error("Invalid refresh token")]
    InvalidRefreshToken,
    #[error("Too many failed log-ins, try again later")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("Internal server error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Response(r) => r.status,
            Self::UserExists => StatusCode::CONFLICT,
            Self::InvalidCredentials
            | Self::InvalidAccessToken
            | Self::MissingAccessToken
            | Self::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            Self::Internal(cause) if cause.is::<Busy>() => {
                svc_common::error::respond(StatusCode::SERVICE_UNAVAILABLE, cause.to_string())
            }
            Self::Internal(cause) => svc_common::error::internal(&cause),
            Self::TooManyAttempts { retry_after_secs } => {
                let mut res = svc_common::error::respond(self.status(), self.to_string());
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                res
            }
            other => svc_common::error::respond(other.status(), other.to_string()),
        }
    }
}
