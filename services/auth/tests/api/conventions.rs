use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error_envelope, error_fields};

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn malformed_or_misdeclared_bodies_get_enveloped_4xx(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let big = format!(r#"{{"email":"{}"}}"#, "a".repeat(70 * 1024));
    let cases = [
        (
            "malformed JSON",
            Some("application/json"),
            r#"{"email": "#,
            400,
        ),
        ("not an object", Some("application/json"), "[1, 2]", 400),
        ("text/plain", Some("text/plain"), "{}", 415),
        ("no content type", None, "{}", 415),
        (
            "form encoded",
            Some("application/x-www-form-urlencoded"),
            "a=b",
            415,
        ),
        ("over 64 KiB", Some("application/json"), big.as_str(), 413),
    ];
    for (label, content_type, body, status) in cases {
        let res = app.post_raw("/auth/register", content_type, body).await;
        assert_error_envelope(&res, status);
        assert!(!res.body["message"].as_str().unwrap().is_empty(), "{label}");
    }
    let res = app
        .post_raw("/auth/login", Some("application/json; charset=utf-8"), "{}")
        .await;
    assert_eq!(res.status, 400, "a charset parameter is fine: {}", res.body);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn unknown_fields_and_wrong_types_are_all_listed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app
        .post_json(
            "/auth/register",
            &json!({"email": 5, "phone": ["+256772000001"], "password": "secret123", "role": "admin", "isAdmin": true}),
        )
        .await;
    assert_error_envelope(&res, 400);
    let mut fields = error_fields(&res.body);
    fields.sort();
    assert_eq!(fields, ["email", "isAdmin", "phone", "role"]);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn unknown_route_is_404_and_wrong_method_405_in_the_envelope(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_error_envelope(&app.get("/nope").await, 404);
    assert_error_envelope(&app.get("/auth/register").await, 405);
    let res = app
        .send(app.client.delete(format!("{}/health", app.base)))
        .await;
    assert_error_envelope(&res, 405);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn request_id_is_echoed_or_generated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app
        .send(
            app.client
                .get(format!("{}/nope", app.base))
                .header("x-request-id", "trace-me-42"),
        )
        .await;
    assert_eq!(res.headers["x-request-id"], "trace-me-42");
    assert_eq!(res.body["requestId"], "trace-me-42");

    for bad in [
        r#"x","success":true,"a":""#.to_owned(),
        "y".repeat(6000),
        "has space".to_owned(),
    ] {
        let res = app
            .send(
                app.client
                    .get(format!("{}/nope", app.base))
                    .header("x-request-id", bad.as_str()),
            )
            .await;
        assert_eq!(res.status, 404);
        assert_eq!(res.body["success"], false);
        let id = res.headers["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{bad:.20}: a new id");
        assert_eq!(res.body["requestId"], id);
    }

    let a = app.get("/health").await;
    let b = app.get("/health").await;
    let id_a = a.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id_a).is_ok());
    assert_ne!(id_a, b.headers["x-request-id"].to_str().unwrap());
}
