use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, valid_payment};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn same_key_same_body_replays_and_other_body_is_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("kai").await;
    let first = app
        .create_with_key(&token, "order-42", &valid_payment())
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(!first.headers.contains_key("idempotent-replayed"));

    let again = app
        .create_with_key(&token, "order-42", &valid_payment())
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.body, first.body,
        "the original response, byte for byte"
    );

    let mut other = valid_payment();
    other["amount"] = json!("13.00");
    let res = app.create_with_key(&token, "order-42", &other).await;
    assert_error(&res, 422);
    assert_eq!(app.count("payments").await, 1);

    // Keys belong to their user.
    let someone = app.user("lou").await;
    let theirs = app
        .create_with_key(&someone, "order-42", &valid_payment())
        .await;
    assert_eq!(theirs.status, 201);
    assert!(!theirs.headers.contains_key("idempotent-replayed"));
    assert_eq!(app.count("payments").await, 2);

    // A failed validation is not remembered: the corrected request goes through.
    let mut bad = valid_payment();
    bad["currency"] = json!("XYZ");
    assert_error(&app.create_with_key(&token, "fix-me", &bad).await, 400);
    assert_eq!(
        app.create_with_key(&token, "fix-me", &valid_payment())
            .await
            .status,
        201
    );

    for key in ["", &"k".repeat(256), "has space"] {
        assert_error(
            &app.create_with_key(&token, key, &valid_payment()).await,
            400,
        );
    }
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn expired_key_is_forgotten_after_24_hours(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("max").await;
    app.create_with_key(&token, "old", &valid_payment()).await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let res = app.create_with_key(&token, "old", &valid_payment()).await;
    assert_eq!(res.status, 201);
    assert!(!res.headers.contains_key("idempotent-replayed"));
    assert_eq!(app.count("payments").await, 2);
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn twenty_concurrent_requests_with_one_key_create_one_payment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("ned").await;
    let body = valid_payment();
    let results = join_all((0..20).map(|_| app.create_with_key(&token, "burst", &body))).await;
    let mut ids = Vec::new();
    for res in &results {
        match res.status.as_u16() {
            201 => ids.push(res.data_value("payment")["id"].as_str().unwrap().to_owned()),
            409 => assert_error(res, 409),
            other => panic!("unexpected {other}: {}", res.body),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every 201 is the same payment: {ids:?}");
    assert_eq!(app.count("payments").await, 1);
}
