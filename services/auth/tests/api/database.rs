use std::time::Duration;

use serde_json::json;
use sqlx::{
    Connection, PgConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use svc_common::startup::guarded_pool;
use svc_test_support::Relay;

use crate::helpers::{TestApp, assert_error_envelope};

/// Ends every other session of the test's database, as a database restart does.
async fn drop_sessions(connect: &PgConnectOptions) {
    let mut admin = PgConnection::connect_with(connect).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn dropped_connections_fail_no_request(options: PgPoolOptions, connect: PgConnectOptions) {
    let pool = guarded_pool(options.max_connections(5), connect.clone());
    let app = TestApp::spawn(pool).await;
    let (access, refresh) = app.signed_up("kept@example.com", "+256772123456").await;
    // Fill the pool with idle connections, then have the server drop all of them.
    let warm: Vec<_> = (0..5).map(|_| app.me(&access)).collect();
    for res in futures_util::future::join_all(warm).await {
        assert_eq!(res.status, 200);
    }
    drop_sessions(&connect).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..3 {
        let me = app.me(&access).await;
        assert_eq!(me.status, 200, "{}", me.body);
        let login = app
            .login("kept@example.com", crate::helpers::PASSWORD)
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
    }
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn an_unreachable_database_is_503_and_its_return_fails_nothing(
    options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    let (relay, pool) = Relay::pool(options, &connect).await;
    let app = TestApp::spawn(pool).await;
    let (access, _) = app.signed_up("kept@example.com", "+256772123456").await;
    assert_eq!(app.me(&access).await.status, 200);

    relay.set(false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cases = [
        app.post_json(
            "/auth/register",
            &json!({"email": "a@example.com", "phone": "+256772123457", "password": "long enough"}),
        )
        .await,
        app.login("kept@example.com", crate::helpers::PASSWORD)
            .await,
        app.refresh("x".repeat(43).as_str()).await,
    ];
    for res in cases {
        assert_error_envelope(&res, 503);
        assert_eq!(res.headers["retry-after"], "1");
        assert_eq!(
            res.body["message"],
            "Database unavailable, try again shortly"
        );
    }
    let health = app.get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["data"]["database"], "down");

    relay.set(true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..5 {
        let login = app
            .login("kept@example.com", crate::helpers::PASSWORD)
            .await;
        assert_eq!(login.status, 200, "{}", login.body);
    }
}
