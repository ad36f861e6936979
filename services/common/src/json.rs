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

/// How many offending fields a response lists; the message counts the rest.
pub const MAX_FIELD_ERRORS: usize = 20;

/// Reports the unknown or wrongly typed top-level fields rather than the first. serde names the
/// fields the DTO knows in its unknown-field message, so every other key is found in one pass;
/// each wrongly typed field is dropped and the rest tried again (at most once per known field,
/// on what is left of the body).
fn list_every_field<T: DeserializeOwned>(
    mut value: serde_json::Value,
    first: serde_path_to_error::Error<serde_json::Error>,
) -> ErrorResponse {
    let mut errors = Vec::new();
    let mut next = Some(first);
    while let Some(error) = next.take() {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        let Some(object) = value.as_object_mut() else {
            break;
        };
        let removed = match unknown_field(&inner) {
            // At the top level the path is the unknown key itself.
            Some((name, known)) if path == name || path == "." => {
                let unknown: Vec<String> = object
                    .keys()
                    .filter(|k| !known.contains(k))
                    .cloned()
                    .collect();
                for key in &unknown {
                    object.remove(key);
                }
                errors.extend(
                    unknown
                        .into_iter()
                        .map(|key| FieldError::new(key, "is not allowed")),
                );
                true
            }
            found => {
                let message = match found {
                    Some(_) => "is not allowed".to_owned(),
                    None => strip_position(&inner),
                };
                let field = path;
                let top_level = field
                    .split(['.', '['])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                errors.push(FieldError::new(field, message));
                object.remove(&top_level).is_some()
            }
        };
        if removed {
            next = serde_json::to_vec(&value)
                .ok()
                .and_then(|bytes| deserialize::<T>(&bytes).err());
        }
    }
    let unlisted = errors.len().saturating_sub(MAX_FIELD_ERRORS);
    errors.truncate(MAX_FIELD_ERRORS);
    let message = if unlisted == 0 {
        "Invalid request body".to_owned()
    } else {
        format!("Invalid request body; {unlisted} more fields are not listed")
    };
    ErrorResponse::new(StatusCode::BAD_REQUEST, message).with_errors(errors)
}

/// serde_json ends its messages with " at line L column C", which says nothing to an API client.
fn strip_position(message: &str) -> String {
    message
        .find(" at line ")
        .map_or(message, |i| &message[..i])
        .to_owned()
}

/// serde names an unknown field in its message, then the fields it expected
/// (``unknown field `x`, expected one of `a`, `b` ``): the name, and the expected names.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let known = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((rest[..end].to_owned(), known))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        identifier: Option<String>,
        password: Option<String>,
        count: Option<u32>,
    }

    fn fields(e: &ErrorResponse) -> Vec<&str> {
        e.errors.iter().map(|f| f.field.as_str()).collect()
    }

    #[test]
    fn unknown_and_mistyped_fields_are_all_listed() {
        let e = parse::<Login>(br#"{"a":1,"identifier":5,"b":2,"count":"x","password":"p"}"#)
            .unwrap_err();
        assert_eq!(e.message, "Invalid request body");
        let mut listed = fields(&e);
        listed.sort_unstable();
        assert_eq!(listed, ["a", "b", "count", "identifier"]);
    }

    #[test]
    fn thousands_of_unknown_fields_are_found_at_once_and_capped() {
        let keys: Vec<String> = (0..5200).map(|i| format!(r#""k{i}":1"#)).collect();
        let body = format!(r#"{{"identifier":"a",{}}}"#, keys.join(","));
        let started = std::time::Instant::now();
        let e = parse::<Login>(body.as_bytes()).unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.errors.len(), MAX_FIELD_ERRORS);
        assert_eq!(
            e.message,
            format!(
                "Invalid request body; {} more fields are not listed",
                5200 - MAX_FIELD_ERRORS
            )
        );
        assert!(e.errors.iter().all(|f| f.message == "is not allowed"));
        // One pass: this took hundreds of milliseconds when each key cost a re-serialisation.
        assert!(took < std::time::Duration::from_millis(100), "{took:?}");
    }

    #[test]
    fn unknown_field_messages_are_read() {
        assert_eq!(
            unknown_field("unknown field `x`, expected one of `a`, `b`"),
            Some(("x".to_owned(), vec!["a".to_owned(), "b".to_owned()]))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `a`"),
            Some(("x".to_owned(), vec!["a".to_owned()]))
        );
        assert_eq!(
            unknown_field("unknown field `x`, there are no fields"),
            Some(("x".to_owned(), vec![]))
        );
        assert_eq!(unknown_field("invalid type: string"), None);
    }
}
