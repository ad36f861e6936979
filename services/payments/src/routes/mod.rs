//! The HTTP surface: routes, shared state, the authenticated user and the OpenAPI document.

use std::sync::Arc;

use axum::{Router, extract::FromRequestParts, http::request::Parts};
use sqlx::PgPool;
use svc_common::{docs::BearerAuth, health::Probe, http::bearer_token};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth_client::{AuthClient, AuthError},
    error::ApiError,
};

pub mod health;
pub mod payments;
pub mod webhook;

pub struct AppState {
    pub pool: PgPool,
    pub auth: AuthClient,
    pub webhook_secret: Vec<u8>,
    pub webhook_tolerance_secs: u64,
    pub db_probe: Probe,
    pub auth_probe: Probe,
    pub instance: String,
}

pub type State = axum::extract::State<Arc<AppState>>;

/// The caller, as the auth service vouches for the bearer token.
pub struct AuthUser(pub Uuid);

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::MissingToken)?;
        match state.auth.authenticate(token).await {
            Ok(user) => Ok(Self(user)),
            Err(AuthError::Rejected) => Err(ApiError::InvalidToken),
            Err(AuthError::Unavailable(why)) => {
                tracing::error!(reason = %why, "cannot validate token");
                Err(ApiError::AuthUnavailable)
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payment-svc",
        description = "Payments with exact decimal amounts, a guarded state machine \
            (INITIATED → PENDING → SUCCESS | FAILED, INITIATED → FAILED), Stripe-style \
            idempotency keys and HMAC-signed provider webhooks. Every response is a JSON \
            envelope `{success, message, data?}`; errors add `errors` and `requestId`. \
            Bearer tokens are validated with the auth service: a rejected token is 401, an \
            unreachable auth service 503.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "payments", description = "The caller's payments"),
        (name = "webhooks", description = "Provider events, authenticated by signature"),
        (name = "health", description = "Liveness, database and auth reachability")
    )
)]
struct ApiDoc;

/// The service's complete router, docs and shared layers included.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, mut spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(payments::create_payment, payments::list_payments))
        .routes(routes!(payments::get_payment))
        .routes(routes!(payments::update_status))
        .routes(routes!(webhook::receive))
        .routes(routes!(health::health))
        .with_state(state)
        .split_for_parts();
    svc_common::docs::add_common_responses(&mut spec);
    payments::document_amount_rules(&mut spec);
    svc_common::http::finish(router.merge(svc_common::docs::router(spec)))
}
