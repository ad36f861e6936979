use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_error_envelope, error_fields};

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn refresh_rotates_and_the_old_token_stops_working(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, first) = app.signed_up("ida@example.com", "+256772000030").await;
    let res = app.refresh(&first).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let second = res.data("refreshToken").to_owned();
    assert_ne!(second, first);
    assert_eq!(app.me(res.data("accessToken")).await.status, 200);

    // The alias and the old field name work for the current token.
    let res = app
        .post_json("/auth/refresh-token", &json!({"oldRefreshToken": second}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let third = res.data("refreshToken").to_owned();

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && *h != third.as_bytes()),
        "only SHA-256 hashes are stored"
    );
    assert_eq!(app.refresh(&third).await.status, 200);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn reusing_a_rotated_token_revokes_its_family_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, stolen) = app.signed_up("jon@example.com", "+256772000031").await;
    let other_login = app.login("jon@example.com", PASSWORD).await;
    let other = other_login.data("refreshToken").to_owned();

    let current = app.refresh(&stolen).await.data("refreshToken").to_owned();
    let reuse = app.refresh(&stolen).await;
    assert_error_envelope(&reuse, 401);
    assert_eq!(reuse.body["message"], "Invalid refresh token");
    assert_error_envelope(&app.refresh(&current).await, 401);
    assert_eq!(
        app.refresh(&other).await.status,
        200,
        "another login of the same user is untouched"
    );
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn refresh_rejects_missing_unknown_and_expired_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app.post_json("/auth/refresh", &json!({})).await;
    assert_error_envelope(&res, 400);
    assert_eq!(error_fields(&res.body), ["refreshToken"]);
    assert_error_envelope(&app.refresh("made-up-token").await, 401);

    let (access, refresh) = app.signed_up("kim@example.com", "+256772000032").await;
    assert_error_envelope(&app.refresh(&access).await, 401);
    sqlx::query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_error_envelope(&app.refresh(&refresh).await, 401);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn expired_refresh_tokens_are_purged_and_live_ones_kept(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, old) = app.signed_up("max@example.com", "+256772000034").await;
    let (_, live) = app.signed_up("nia@example.com", "+256772000035").await;
    let refreshed = app.refresh(&live).await;
    assert_eq!(refreshed.headers["cache-control"], "no-store");
    let live = refreshed.data("refreshToken").to_owned();
    sqlx::query(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 day'
         WHERE user_id = (SELECT id FROM users WHERE email = 'max@example.com')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let purged =
        auth_svc::db::refresh_tokens::purge_expired(&app.pool, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
    assert_eq!(purged, 1);
    assert_error_envelope(&app.refresh(&old).await, 401);
    assert_eq!(app.refresh(&live).await.status, 200);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn logout_revokes_the_login_and_is_quiet_about_unknown_tokens(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, refresh) = app.signed_up("lea@example.com", "+256772000033").await;
    let rotated = app.refresh(&refresh).await.data("refreshToken").to_owned();
    let res = app.logout(&rotated).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["message"], "Logged out successfully");
    assert_error_envelope(&app.refresh(&rotated).await, 401);

    for token in [rotated.as_str(), "never-issued"] {
        let res = app.logout(token).await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.body["message"], "Logged out successfully");
    }
    let res = app.post_json("/auth/logout", &json!({})).await;
    assert_error_envelope(&res, 400);
}
