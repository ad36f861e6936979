//! Request ids: taken from `X-Request-Id` when the caller sent a well-formed one, else generated;
//! echoed on the response, attached to the request's log span and to every error body.

use axum::{extract::Request, middleware::Next, response::Response};
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Whether a caller's id may be kept: 1 to 64 of `[A-Za-z0-9._-]`, as the edge accepts. Ids are
/// written into JSON bodies, headers and logs, so anything else is replaced by a new one.
pub fn is_valid(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Drops an `X-Request-Id` that is not [`is_valid`], so that a new id is made for the request.
pub async fn drop_invalid(mut req: Request) -> Request {
    let valid = req
        .headers()
        .get(HEADER)
        .is_none_or(|v| v.to_str().is_ok_and(is_valid));
    if !valid {
        req.headers_mut().remove(HEADER);
    }
    req
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs the rest of the stack inside the request's id scope and log span.
pub async fn scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = std::time::Instant::now();
    REQUEST_ID
        .scope(id, async move {
            let res = next.run(req).await;
            tracing::debug!(
                status = res.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            );
            res
        })
        .instrument(span)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        for ok in ["a", "trace-me-42", "A.b_C-9", &"x".repeat(64)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "x\",\"success\":true,\"a\":\"",
            "has space",
            "new\nline",
            "é",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
