use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use svc_test_support::Relay;

use crate::helpers::{TestApp, assert_error, event, valid_payment};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn an_unreachable_database_is_503_and_its_return_fails_nothing(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let (relay, pool) = Relay::pool(options, &connect).await;
    let app = TestApp::spawn(pool).await;
    let token = app.user("dee").await;
    let reference = app.payment(&token).await;

    relay.set(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cases = [
        app.create(&token, &valid_payment()).await,
        app.get(&token, &format!("/payments/{reference}")).await,
        app.get(&token, "/payments").await,
        app.set_status(&token, &reference, "PENDING").await,
        app.webhook(&event(&reference, "PENDING", "tx-down")).await,
    ];
    for res in cases {
        assert_error(&res, 503);
        assert_eq!(res.headers["retry-after"], "1");
        assert_eq!(
            res.body["message"],
            "Database unavailable, try again shortly"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let health = app.get(&token, "/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["data"]["database"], "down");

    relay.set(true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        let created = app.create(&token, &valid_payment()).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let read = app.get(&token, &format!("/payments/{reference}")).await;
        assert_eq!(read.status, 200, "{}", read.body);
    }
    assert_eq!(
        app.set_status(&token, &reference, "PENDING").await.status,
        200
    );
}
