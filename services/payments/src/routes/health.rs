//! `GET /health`.

use axum::response::Response;
use serde::Serialize;
use svc_common::{envelope::Envelope, health};
use utoipa::ToSchema;

use super::State;

#[derive(Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`, or `degraded` when the database or the auth service is down.
    status: &'static str,
    /// `up` or `down`.
    database: &'static str,
    /// `up` or `down`: whether the auth service answers its health check.
    auth: &'static str,
    version: &'static str,
    /// Host name of the instance that answered.
    instance: String,
}

/// Reports whether the service, its database and the auth service are up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "Healthy", body = Envelope<HealthView>),
        (status = 503, description = "Database or auth service unreachable", body = Envelope<HealthView>)
    )
)]
pub async fn health(state: State) -> Response {
    let (db_up, auth_up) = tokio::join!(
        state.db_probe.check(|| health::database_up(&state.pool)),
        state.auth_probe.check(|| state.auth.reachable()),
    );
    let healthy = db_up && auth_up;
    health::respond(
        healthy,
        HealthView {
            status: if healthy { "ok" } else { "degraded" },
            database: health::up_down(db_up),
            auth: health::up_down(auth_up),
            version: env!("CARGO_PKG_VERSION"),
            instance: state.instance.clone(),
        },
    )
}
