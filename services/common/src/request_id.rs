//! Request ids: taken from `X-Request-Id` when the caller sent one, else generated; echoed on the
//! response, attached to the request's log span and to every error body.

use axum::{extract::Request, middleware::Next, response::Response};
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
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
