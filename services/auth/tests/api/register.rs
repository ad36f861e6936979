use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, assert_error_envelope, error_fields};

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn register_valid_user_returns_201_with_normalised_fields(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let res = app
        .register("  Alice@Example.COM ", "+256 772 123 456", PASSWORD)
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["success"], true);
    assert_eq!(res.data("email"), "alice@example.com");
    assert_eq!(res.data("phone"), "+256772123456");
    assert!(uuid::Uuid::parse_str(res.data("id")).is_ok());
    assert!(
        time::OffsetDateTime::parse(
            res.data("createdAt"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert!(res.body["data"].get("password").is_none());
    assert!(res.body["data"].get("passwordHash").is_none());

    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$2"), "stored as a bcrypt hash");
    assert!(!stored.contains(PASSWORD));
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn register_taken_email_or_phone_returns_409(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(
        app.register("bob@example.com", "+256772000001", PASSWORD)
            .await
            .status,
        201
    );
    for (label, email, phone) in [
        ("same email, other case", "BOB@example.com", "+256772000002"),
        (
            "same phone, other format",
            "other@example.com",
            "+256 772 000 001",
        ),
    ] {
        let res = app.register(email, phone, PASSWORD).await;
        assert_error_envelope(&res, 409);
        assert_eq!(res.body["message"], "User already exists", "{label}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn register_invalid_fields_returns_400_listing_each(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let over = format!("{}a", "é".repeat(36)); // 73 bytes in 37 characters
    let cases = [
        (
            "everything missing",
            json!({}),
            vec!["email", "phone", "password"],
        ),
        (
            "all three invalid",
            json!({"email": "not-an-email", "phone": "12345", "password": "short"}),
            vec!["email", "phone", "password"],
        ),
        (
            "73-byte multibyte password",
            json!({"email": "c@example.com", "phone": "+256772000003", "password": over}),
            vec!["password"],
        ),
        (
            "injection-looking email",
            json!({"email": "x'; DROP TABLE users; --", "phone": "+256772000004", "password": PASSWORD}),
            vec!["email"],
        ),
        (
            "injection-looking phone",
            json!({"email": "d@example.com", "phone": "+1 OR 1=1", "password": PASSWORD}),
            vec!["phone"],
        ),
        (
            "nulls",
            json!({"email": null, "phone": null, "password": null}),
            vec!["email", "phone", "password"],
        ),
        (
            "empty strings",
            json!({"email": "", "phone": " ", "password": ""}),
            vec!["email", "phone", "password"],
        ),
    ];
    for (label, body, fields) in cases {
        let res = app.post_json("/auth/register", &body).await;
        assert_error_envelope(&res, 400);
        assert_eq!(error_fields(&res.body), fields, "{label}: {}", res.body);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "no invalid request may write");
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn register_72_byte_multibyte_password_is_accepted_and_logs_in(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let password = "é".repeat(36); // exactly 72 bytes
    let res = app
        .register("e@example.com", "+256772000005", &password)
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(app.login("e@example.com", &password).await.status, 200);
    // The 71-byte prefix must not match: nothing was truncated.
    let prefix: String = password.chars().take(35).collect::<String>() + "x";
    assert_eq!(app.login("e@example.com", &prefix).await.status, 401);
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn register_twenty_concurrent_same_email_creates_exactly_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let requests = (0..20).map(|i| {
        let phone = format!("+2567720001{i:02}");
        let app = &app;
        async move { app.register("race@example.com", &phone, PASSWORD).await }
    });
    let results = join_all(requests).await;
    let mut statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}
