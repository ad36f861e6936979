//! `StrictJson`: the JSON body extractor whose every rejection is an enveloped 4xx.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::{StatusCode, header},
};
use serde::de::DeserializeOwned;

use crate::error::{ErrorResponse, FieldError};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body: `application/json` (or `+json`) only, at most [`BODY_LIMIT`] bytes, unknown
/// fields rejected by the DTO's `deny_unknown_fields`.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<T, S> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ErrorResponse::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse(&bytes).map(StrictJson)
    }
}

/// Parses a JSON body the way [`StrictJson`] does, for handlers that also need the raw bytes.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ErrorResponse> {
    // Syntax first, so a malformed document is told apart from a well-formed one of the wrong shape.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ErrorResponse::new(StatusCode::BAD_REQUEST, format!("Malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        ));
    }
    deserialize_listing_every_field(value)
}

/// Deserializes `value`, reporting every unknown or wrongly typed top-level field rather than
/// the first: each offending key is recorded, dropped, and the rest tried again.
fn deserialize_listing_every_field<T: DeserializeOwned>(
    mut value: serde_json::Value,
) -> Result<T, ErrorResponse> {
    let mut errors = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(parsed) if errors.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(e) => e,
        };
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let (field, message) = match unknown_field(&inner) {
            Some(name) => (name, "is not allowed".to_owned()),
            None => (path, inner),
        };
        let top_level = field
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_owned();
        let removed = value
            .as_object_mut()
            .and_then(|object| object.remove(&top_level))
            .is_some();
        errors.push(FieldError::new(field, message));
        if !removed {
            break;
        }
    }
    Err(ErrorResponse::new(StatusCode::BAD_REQUEST, "Invalid request body").with_errors(errors))
}

/// serde names an unknown field in its message; pull the name out so it lands in `field`.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// Maps a body read failure: over the limit is 413, anything else 400.
pub fn body_rejection(rejection: BytesRejection) -> ErrorResponse {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorResponse::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds {} KiB", BODY_LIMIT / 1024),
        )
    } else {
        ErrorResponse::new(StatusCode::BAD_REQUEST, "Could not read request body")
    }
}
