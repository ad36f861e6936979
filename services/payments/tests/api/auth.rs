use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, valid_payment};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn missing_or_rejected_tokens_get_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app
        .send(
            app.client
                .post(format!("{}/payments", app.base))
                .json(&valid_payment()),
        )
        .await;
    assert_error(&res, 401);
    for token in ["garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        assert_error(&app.create(token, &valid_payment()).await, 401);
        assert_error(&app.get(token, "/payments").await, 401);
    }
    assert_eq!(app.count("payments").await, 0);
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn auth_service_down_gives_503_and_writes_nothing(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    let token = app.user("cat").await;
    let reference = app.payment(&token).await;
    let health = app.get(&token, "/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["data"]["auth"], "up");

    app.stop_auth().await;
    let res = app.create(&token, &valid_payment()).await;
    assert_error(&res, 503);
    assert!(res.headers.contains_key("retry-after"));
    assert_error(&app.set_status(&token, &reference, "PENDING").await, 503);
    assert_error(
        &app.get(&token, &format!("/payments/{reference}")).await,
        503,
    );
    assert_eq!(app.count("payments").await, 1);
    assert_eq!(app.count("payment_transactions").await, 1);

    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let health = app.get(&token, "/health").await;
    assert_eq!(
        health.status, 200,
        "an auth outage is no reason to restart payments"
    );
    assert_eq!(health.body["data"]["status"], "degraded");
    assert_eq!(health.body["data"]["auth"], "down");
    assert_eq!(health.body["data"]["database"], "up");
}
