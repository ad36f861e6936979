//! The error envelope and the errors every service shares (bad JSON, 404, 405, timeouts).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_id;

/// One offending input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `{"success": false, "message": …, "errors": […]?, "requestId": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub success: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    pub request_id: String,
}

/// An error response: status, public message and field errors. The request id comes from the
/// request being answered.
#[derive(Debug)]
pub struct ErrorResponse {
    pub status: StatusCode,
    pub message: String,
    pub errors: Vec<FieldError>,
}

impl ErrorResponse {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            message: self.message,
            errors: (!self.errors.is_empty()).then_some(self.errors),
            request_id: request_id::current().unwrap_or_default(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The response to an expected failure: the public message in the envelope, plus
/// `WWW-Authenticate` on 401 and `Retry-After` on 503.
pub fn respond(status: StatusCode, message: String) -> Response {
    let mut res = ErrorResponse::new(status, message).into_response();
    let headers = res.headers_mut();
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    res
}

/// The response to an unexpected failure: the cause goes to the log (inside the request's span,
/// so with its request id), the client gets a bare 500, or a 503 with `Retry-After` when the
/// cause is that the database cannot be reached.
pub fn internal(cause: &anyhow::Error) -> Response {
    if database_unavailable(cause) {
        tracing::warn!(error = format!("{cause:#}"), "database unavailable");
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "Database unavailable, try again shortly".to_owned(),
        );
    }
    tracing::error!(error = format!("{cause:#}"), "request failed");
    ErrorResponse::internal().into_response()
}

/// Whether `cause` is the database being out of reach (down, restarting, refusing
/// connections), which a retry a moment later can cure, rather than a fault of the request.
pub fn database_unavailable(cause: &anyhow::Error) -> bool {
    cause
        .chain()
        .filter_map(|e| e.downcast_ref::<sqlx::Error>())
        .any(|e| match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exceptions; 57P01-03: shut down, crashed, starting up;
            // 53300: too many connections.
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        })
}

/// Collects the failures of several field checks so that one response lists them all.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records the error of `result` under `field` and returns the value when there is one.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.0.push(FieldError::new(field, message));
                None
            }
        }
    }

    /// The collected failures as a 400 validation error.
    pub fn into_error(self) -> ErrorResponse {
        validation_failed(self.0)
    }
}

/// A field that must be present: `None` becomes "is required".
pub fn required<T>(value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| "is required".to_owned())
}

/// 400 `Validation failed` with the offending fields.
pub fn validation_failed(errors: Vec<FieldError>) -> ErrorResponse {
    ErrorResponse::new(StatusCode::BAD_REQUEST, "Validation failed").with_errors(errors)
}
