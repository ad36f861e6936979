//! The HTTP surface: routes, shared state and the OpenAPI document.

use std::{sync::Arc, time::Duration};

use axum::Router;
use sqlx::PgPool;
use svc_common::{docs::BearerAuth, health::Probe};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{passwords::Passwords, tokens::AccessTokens, user_cache::UserCache};

pub mod auth;
pub mod health;

pub struct AppState {
    pub pool: PgPool,
    pub passwords: Passwords,
    pub access_tokens: AccessTokens,
    pub refresh_ttl: Duration,
    pub users: UserCache,
    pub db_probe: Probe,
    pub instance: String,
}

pub type State = axum::extract::State<Arc<AppState>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "auth-svc",
        description = "Registration, login, JWT access tokens and rotating refresh tokens. \
            Every response is a JSON envelope `{success, message, data?}`; errors add `errors` \
            (one entry per invalid field) and `requestId`.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "health", description = "Liveness and database reachability")
    )
)]
struct ApiDoc;

/// The service's complete router, docs and shared layers included.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, mut spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::me_get, auth::me_post))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::refresh_token))
        .routes(routes!(auth::logout))
        .routes(routes!(health::health))
        .with_state(state)
        .split_for_parts();
    svc_common::docs::add_common_responses(&mut spec);
    svc_common::http::finish(router.merge(svc_common::docs::router(spec)))
}
