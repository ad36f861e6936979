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
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse(&bytes).map(StrictJson)
    }
}

/// The raw bytes of a JSON body, with the same content-type and size checks as [`StrictJson`],
/// for handlers that hash or sign the body as sent. Parse it with [`parse`].
#[derive(Debug)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ErrorResponse::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(body_rejection)
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
    // From the bytes, not the `Value`, so that fields taken raw (`RawValue`, exact amounts)
    // see the text as sent.
    match deserialize::<T>(bytes) {
        Ok(parsed) => Ok(parsed),
        Err(first) => Err(list_every_field::<T>(value, first)),
    }
}

fn deserialize<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
}

/// Reports every unknown or wrongly typed top-level field rather than the first: each offending
/// key is recorded, dropped, and the rest tried again.
fn list_every_field<T: DeserializeOwned>(
    mut value: serde_json::Value,
    first: serde_path_to_error::Error<serde_json::Error>,
) -> ErrorResponse {
    let mut errors = Vec::new();
    let mut next = Some(first);
    while let Some(error) = next.take() {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let (field, message) = match unknown_field(&inner) {
            Some(name) => (name, "is not allowed".to_owned()),
            None => (path, strip_position(&inner)),
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
        if removed {
            next = serde_json::to_vec(&value)
                .ok()
                .and_then(|bytes| deserialize::<T>(&bytes).err());
        }
    }
    ErrorResponse::new(StatusCode::BAD_REQUEST, "Invalid request body").with_errors(errors)
}

/// serde_json ends its messages with " at line L column C", which says nothing to an API client.
fn strip_position(message: &str) -> String {
    message
        .find(" at line ")
        .map_or(message, |i| &message[..i])
        .to_owned()
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
fn body_rejection(rejection: BytesRejection) -> ErrorResponse {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ErrorResponse::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds {} KiB", BODY_LIMIT / 1024),
        )
    } else {
        ErrorResponse::new(StatusCode::BAD_REQUEST, "Could not read request body")
    }
}
