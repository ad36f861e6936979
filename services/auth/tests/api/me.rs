use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{ISSUER, JWT_SECRET, TestApp, assert_error_envelope};

fn sign(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn me_answers_the_tokens_user_on_get_and_post(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = app.signed_up("fay@example.com", "+256772000020").await;
    for res in [app.me(&access).await, app.me_get(&access).await] {
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.data("email"), "fay@example.com");
        assert_eq!(res.data("phone"), "+256772000020");
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn me_rejects_every_kind_of_bad_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, refresh) = app.signed_up("gus@example.com", "+256772000021").await;
    let user_id = app.me(&access).await.data("id").to_owned();
    let claims =
        |iat: i64, exp: i64, iss: &str| json!({"sub": user_id, "iat": iat, "exp": exp, "iss": iss});

    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    let (head, rest) = access.split_once('.').unwrap();
    let payload = rest.split('.').next().unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{payload}.");
    let swapped_payload = {
        let forged = URL_SAFE_NO_PAD.encode(
            json!({"sub": uuid::Uuid::nil(), "iat": now(), "exp": now() + 600, "iss": ISSUER})
                .to_string(),
        );
        let sig = access.rsplit('.').next().unwrap();
        format!("{head}.{forged}.{sig}")
    };
    let cases = [
        ("tampered signature", tampered),
        ("alg none", alg_none),
        ("payload swapped", swapped_payload),
        (
            "expired",
            sign(&claims(now() - 1000, now() - 10, ISSUER), JWT_SECRET),
        ),
        (
            "other issuer",
            sign(&claims(now(), now() + 600, "evil"), JWT_SECRET),
        ),
        (
            "other key",
            sign(
                &claims(now(), now() + 600, ISSUER),
                "another-secret-another-secret-12345",
            ),
        ),
        (
            "no exp",
            sign(
                &json!({"sub": user_id, "iat": now(), "iss": ISSUER}),
                JWT_SECRET,
            ),
        ),
        ("refresh token as access token", refresh),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (label, token) in cases {
        let res = app.me(&token).await;
        assert_error_envelope(&res, 401);
        assert!(res.headers.contains_key("www-authenticate"), "{label}");
    }
    let res = app
        .send(app.client.post(format!("{}/auth/me", app.base)))
        .await;
    assert_error_envelope(&res, 401);
    let res = app
        .send(
            app.client
                .post(format!("{}/auth/me", app.base))
                .header("authorization", format!("Basic {access}")),
        )
        .await;
    assert_error_envelope(&res, 401);
    assert_eq!(
        app.me(&access).await.status,
        200,
        "the real token still works"
    );
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn me_rejects_token_of_deleted_user(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (access, _) = app.signed_up("hal@example.com", "+256772000022").await;
    sqlx::query("DELETE FROM users")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_error_envelope(&app.me(&access).await, 401);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn cached_user_expires_so_a_deleted_users_token_stops_working(pool: PgPool) {
    let mut cfg = crate::helpers::config();
    cfg.user_cache_ms = 200;
    let app = TestApp::spawn_with(pool, cfg).await;
    let (access, _) = app.signed_up("ivo@example.com", "+256772000023").await;
    assert_eq!(app.me(&access).await.status, 200);
    sqlx::query("DELETE FROM users")
        .execute(&app.pool)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_error_envelope(&app.me(&access).await, 401);
}
