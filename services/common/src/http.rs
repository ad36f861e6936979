//! The layers every service wraps its routes in, and serving until SIGTERM.

use std::{any::Any, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
};

use crate::{error::ErrorResponse, json::BODY_LIMIT, request_id};

/// How long one request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Adds the envelope fallbacks (404, 405), the body limit, the timeout, panic capture and request
/// ids around `router`.
pub fn finish(router: Router) -> Router {
    let request_id = HeaderName::from_static(request_id::HEADER);
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_request(request_id::drop_invalid))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(request_id::scope))
                .layer(CatchPanicLayer::custom(panicked))
                .layer(middleware::from_fn_with_state(REQUEST_TIMEOUT, timeout))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
}

async fn not_found() -> ErrorResponse {
    ErrorResponse::new(StatusCode::NOT_FOUND, "Route not found")
}

async fn method_not_allowed() -> ErrorResponse {
    ErrorResponse::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::error!(timeout_s = limit.as_secs(), "request timed out");
            ErrorResponse::new(StatusCode::SERVICE_UNAVAILABLE, "Request timed out").into_response()
        }
    }
}

fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "handler panicked");
    ErrorResponse::internal().into_response()
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Serves `router` on `listener` until SIGTERM or Ctrl-C and `stop_delay` after it, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop_delay: std::time::Duration,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            if !stop_delay.is_zero() {
                tracing::info!(
                    ms = stop_delay.as_millis(),
                    "taking requests a while longer: the edge may not know yet that this instance leaves"
                );
                tokio::time::sleep(stop_delay).await;
            }
            tracing::info!("finishing in-flight requests");
        })
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
