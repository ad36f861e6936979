//! `/docs`: Swagger UI served from the binary, working both directly and behind a stripped
//! path prefix (nginx's `/a/`, `/b/`), so every URL it loads is relative.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::Config;

use crate::error::ErrorResponse;

/// Declares the `bearer` security scheme that authenticated operations refer to.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Routes `/docs`, `/docs/`, `/docs/openapi.json` and the UI's assets.
pub fn router(spec: OpenApi) -> Router {
    let spec = Arc::new(spec);
    let config = Arc::new(Config::new(["openapi.json"]));
    let asset_config = Arc::clone(&config);
    Router::new()
        .route("/docs", get(index_without_slash))
        .route(
            "/docs/",
            get(move || asset(String::new(), Arc::clone(&config))),
        )
        .route(
            "/docs/openapi.json",
            get(move || {
                let spec = Arc::clone(&spec);
                async move { Json(spec.as_ref().clone()) }
            }),
        )
        .route(
            "/docs/{*file}",
            get(move |Path(file): Path<String>| asset(file, Arc::clone(&asset_config))),
        )
}

/// `/docs` without the slash: the index page with a `<base>` so relative URLs resolve under
/// `<prefix>/docs/` whatever the prefix is, instead of an absolute redirect that loses it.
async fn index_without_slash() -> Response {
    let config = Arc::new(Config::new(["openapi.json"]));
    match utoipa_swagger_ui::serve("index.html", config) {
        Ok(Some(file)) => {
            let html = String::from_utf8_lossy(&file.bytes).replacen(
                "<head>",
                "<head>\n    <base href=\"docs/\" />",
                1,
            );
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                html,
            )
                .into_response()
        }
        _ => missing(),
    }
}

async fn asset(file: String, config: Arc<Config<'static>>) -> Response {
    match utoipa_swagger_ui::serve(&file, config) {
        Ok(Some(file)) => {
            let content_type = HeaderValue::from_str(&file.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut res = (
                [(header::CONTENT_TYPE, content_type)],
                file.bytes.into_owned(),
            )
                .into_response();
            if file.gzpipped {
                res.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            res
        }
        Ok(None) => missing(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve docs asset");
            ErrorResponse::internal().into_response()
        }
    }
}

fn missing() -> Response {
    ErrorResponse::new(StatusCode::NOT_FOUND, "Route not found").into_response()
}
