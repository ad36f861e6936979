use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_error_envelope, config, error_fields};

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_by_email_or_phone_returns_a_token_pair(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("carol@example.com", "+256772000010", PASSWORD)
        .await;
    for identifier in [
        "carol@example.com",
        " CAROL@example.com",
        "+256 772 000 010",
    ] {
        let res = app.login(identifier, PASSWORD).await;
        assert_eq!(res.status, 200, "{identifier}: {}", res.body);
        assert_eq!(res.data("tokenType"), "Bearer");
        assert_eq!(res.body["data"]["expiresIn"], 900);
        assert_eq!(res.data("accessToken").split('.').count(), 3);
        assert!(
            res.data("refreshToken").len() >= 43,
            "256-bit refresh token"
        );
        assert_eq!(res.headers["cache-control"], "no-store");
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_with_neither_an_email_nor_a_phone_is_400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for identifier in ["' OR '1'='1", "alice", "not@an@address", "12", "   "] {
        let res = app.login(identifier, PASSWORD).await;
        assert_error_envelope(&res, 400);
        assert_eq!(error_fields(&res.body), ["identifier"], "{identifier:?}");
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_upgrades_a_hash_of_another_cost(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("gus@example.com", "+256772000013", PASSWORD)
        .await;
    let cost = || async {
        let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        hash.split('$').nth(2).unwrap().to_owned()
    };
    assert_eq!(cost().await, "04");
    let older = bcrypt::hash(PASSWORD, 5).unwrap();
    sqlx::query("UPDATE users SET password_hash = $1")
        .bind(&older)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_error_envelope(&app.login("gus@example.com", "wrong password").await, 401);
    assert_eq!(cost().await, "05", "a failed log-in changes nothing");
    assert_eq!(app.login("gus@example.com", PASSWORD).await.status, 200);
    assert_eq!(cost().await, "04", "rehashed at the configured cost");
    assert_eq!(app.login("gus@example.com", PASSWORD).await.status, 200);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_wrong_password_and_unknown_user_get_the_same_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("dave@example.com", "+256772000011", PASSWORD)
        .await;
    let wrong = app.login("dave@example.com", "not the password").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let unknown_phone = app.login("+256772999999", PASSWORD).await;
    let too_long = app.login("dave@example.com", &"x".repeat(100)).await;
    for res in [&wrong, &unknown, &unknown_phone, &too_long] {
        assert_error_envelope(res, 401);
        assert_eq!(res.body["message"], "Invalid credentials");
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_missing_fields_returns_400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.post_json("/auth/login", &json!({})).await;
    assert_error_envelope(&res, 400);
    assert_eq!(error_fields(&res.body), ["identifier", "password"]);
}

/// An unknown identifier must cost a bcrypt verification too; without it the answer would come
/// back an order of magnitude faster than for a wrong password.
#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn login_unknown_user_takes_as_long_as_wrong_password(pool: PgPool) {
    let mut cfg = config();
    cfg.bcrypt_cost = 10;
    let app = TestApp::spawn_with(pool, cfg).await;
    app.register("erin@example.com", "+256772000012", PASSWORD)
        .await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        app.login("erin@example.com", "wrong password!").await;
        known.push(t.elapsed());
        let t = Instant::now();
        app.login("ghost@example.com", "wrong password!").await;
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[2], unknown[2]);
    assert!(
        unknown * 2 > known && known * 2 > unknown,
        "median wrong password {known:?} vs unknown user {unknown:?}"
    );
    assert!(
        known > Duration::from_millis(5),
        "bcrypt cost 10 really ran"
    );
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn repeated_failures_lock_the_identifier_for_a_while(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("hal@example.com", "+256772000014", PASSWORD)
        .await;
    app.register("ivy@example.com", "+256772000015", PASSWORD)
        .await;
    for _ in 0..auth_svc::db::login_failures::FREE_FAILURES {
        let res = app.login("HAL@example.com", "not the password").await;
        assert_error_envelope(&res, 401);
    }
    // Locked now, whichever form of the identifier, even with the right password.
    for identifier in ["hal@example.com", " Hal@Example.com"] {
        let res = app.login(identifier, PASSWORD).await;
        assert_error_envelope(&res, 429);
        let wait: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&wait), "{wait}");
    }
    // An unknown identifier is counted and locked alike: no telling them apart.
    for _ in 0..auth_svc::db::login_failures::FREE_FAILURES {
        assert_error_envelope(&app.login("nobody@example.com", PASSWORD).await, 401);
    }
    assert_error_envelope(&app.login("nobody@example.com", PASSWORD).await, 429);
    // Others are untouched.
    assert_eq!(app.login("ivy@example.com", PASSWORD).await.status, 200);

    sqlx::query("UPDATE login_failures SET locked_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.login("hal@example.com", PASSWORD).await.status, 200);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures WHERE identifier = 'hal@example.com'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "a successful log-in forgets the failures");
}
