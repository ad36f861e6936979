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

/// Adds to every operation of `spec` the answers the shared plumbing can give on any route, so
/// that a client generated from the document knows them: 400 (malformed JSON, unknown fields),
/// 413 and 415 where there is a body, 503 with `Retry-After` (database unreachable, request over
/// 30 s) and 500. Answers an operation documents itself are kept.
pub fn add_common_responses(spec: &mut OpenApi) {
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder, path::Operation, schema::Type,
    };
    let retry_after = || {
        HeaderBuilder::new()
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer),
            ))
            .description(Some("Seconds to wait before trying again"))
            .build()
    };
    let error = |description: &str, retry: bool| {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if retry {
            response = response.header("Retry-After", retry_after());
        }
        response.build()
    };
    let add = |op: &mut Operation| {
        let mut common = vec![
            (
                "503",
                error(
                    "Unavailable for a moment: the database (or a service this one needs) cannot be reached, or the request took over 30 s",
                    true,
                ),
            ),
            (
                "500",
                error(
                    "Internal server error (details in the log under the request id)",
                    false,
                ),
            ),
        ];
        if op.request_body.is_some() {
            common.extend([
                ("400", error("Malformed JSON, or unknown or wrongly typed fields (each listed in `errors`)", false)),
                ("413", error("Request body over 64 KiB", false)),
                ("415", error("Content-Type is not application/json", false)),
            ]);
        }
        for (status, response) in common {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| response.into());
        }
        // Every 429 and 503 carries Retry-After, also those an operation documents itself.
        for status in ["429", "503"] {
            if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| retry_after().into());
            }
        }
    };
    for item in spec.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add(op);
        }
    }
}
