//! `GET /health`.

use axum::response::Response;
use serde::Serialize;
use svc_common::{envelope::Envelope, health};
use utoipa::ToSchema;

use super::State;

#[derive(Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `degraded`.
    status: &'static str,
    /// `up` or `down`.
    database: &'static str,
    version: &'static str,
    /// Host name of the instance that answered.
    instance: String,
}

/// Reports whether the service and its database are up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "Healthy", body = Envelope<HealthView>),
        (status = 503, description = "Database unreachable", body = Envelope<HealthView>)
    )
)]
pub async fn health(state: State) -> Response {
    let db_up = state
        .db_probe
        .check(|| health::database_up(&state.pool))
        .await;
    health::respond(
        db_up,
        HealthView {
            status: if db_up { "ok" } else { "degraded" },
            database: health::up_down(db_up),
            version: env!("CARGO_PKG_VERSION"),
            instance: state.instance.clone(),
        },
    )
}
