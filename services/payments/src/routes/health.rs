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

/// Reports whether the service, its database and the auth service are up. Only the database
/// decides the status code: an auth outage is reported in the body, and must not make every
/// payment instance unhealthy (webhooks need no auth, and reads resume as soon as it is back).
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "The instance and its database are up; `status` is `degraded` while the auth service is down", body = Envelope<HealthView>),
        (status = 503, description = "Database unreachable", body = Envelope<HealthView>)
    )
)]
pub async fn health(state: State) -> Response {
    let (db_up, auth_up) = tokio::join!(
        state.db_probe.check(|| health::database_up(&state.pool)),
        state.auth_probe.check(|| state.auth.reachable()),
    );
    health::respond(
        db_up,
        HealthView {
            status: if db_up && auth_up { "ok" } else { "degraded" },
            database: health::up_down(db_up),
            auth: health::up_down(auth_up),
            version: env!("CARGO_PKG_VERSION"),
            instance: state.instance.clone(),
        },
    )
}
