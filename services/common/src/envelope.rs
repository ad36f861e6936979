//! The success envelope every JSON response carries.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// `{"success": true, "message": …, "data": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// A success response with `status`, `message` and `data` in the envelope.
pub fn reply<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    respond(status, true, message, data)
}

/// A failure that still carries data (a degraded health report).
pub fn degraded<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    respond(status, false, message, data)
}

fn respond<T: Serialize>(status: StatusCode, success: bool, message: &str, data: T) -> Response {
    let body = Envelope {
        success,
        message: message.to_owned(),
        data: Some(data),
    };
    (status, Json(body)).into_response()
}

/// `200 OK` with the envelope.
pub fn ok<T: Serialize>(message: &str, data: T) -> Response {
    reply(StatusCode::OK, message, data)
}

/// `200 OK` with only a message, no `data`.
pub fn message(message: &str) -> Response {
    let body = Envelope::<()> {
        success: true,
        message: message.to_owned(),
        data: None,
    };
    (StatusCode::OK, Json(body)).into_response()
}
