use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, error_fields, valid_payment};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn create_returns_201_with_exact_amounts(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("ann").await;
    let res = app.create(&token, &valid_payment()).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let p = res.data_value("payment");
    assert_eq!(p["amount"], "12.50");
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["state"], "INITIATED");
    assert_eq!(p["paymentMethod"], "MOBILE_MONEY");
    assert_eq!(p["customerPhone"], "+256772123456");
    assert_eq!(p["customerEmail"], "buyer@example.com");
    assert_eq!(p["description"], "Order 42");
    assert!(p["providerName"].is_null());
    let reference = p["reference"].as_str().unwrap();
    let parts: Vec<&str> = reference.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[2].len()),
        (3, "PAY", 10),
        "{reference}"
    );
    assert!(parts[1].parse::<u64>().is_ok());

    for (amount, currency, shown) in [
        (json!(10000), "UGX", "10000"),
        (json!("10000"), "RWF", "10000"),
        (json!(12.5), "EUR", "12.50"),
        (json!(0.01), "KES", "0.01"),
        (json!("999999999999999.99"), "NGN", "999999999999999.99"),
        (json!(500), "JPY", "500"),
    ] {
        let mut body = valid_payment();
        body["amount"] = amount.clone();
        body["currency"] = json!(currency);
        let res = app.create(&token, &body).await;
        assert_eq!(res.status, 201, "{amount} {currency}: {}", res.body);
        assert_eq!(
            res.data_value("payment")["amount"],
            shown,
            "{amount} {currency}"
        );
    }
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn create_refuses_bad_input_and_writes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("bea").await;
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid_payment();
        body[field] = value;
        body
    };
    let cases = [
        (
            "three decimals",
            with("amount", json!(12.345)),
            vec!["amount"],
        ),
        (
            "decimals for UGX",
            {
                let mut b = with("amount", json!(100.5));
                b["currency"] = json!("UGX");
                b
            },
            vec!["amount"],
        ),
        ("negative", with("amount", json!(-5)), vec!["amount"]),
        ("zero", with("amount", json!(0)), vec!["amount"]),
        ("huge", with("amount", json!(1e20)), vec!["amount"]),
        (
            "huge exact",
            with("amount", json!("12345678901234567.89")),
            vec!["amount"],
        ),
        ("NaN string", with("amount", json!("NaN")), vec!["amount"]),
        (
            "exponent string",
            with("amount", json!("1e2")),
            vec!["amount"],
        ),
        (
            "amount as bool",
            with("amount", json!(true)),
            vec!["amount"],
        ),
        (
            "unknown currency",
            with("currency", json!("XYZ")),
            vec!["currency"],
        ),
        (
            "lower-case currency",
            with("currency", json!("usd")),
            vec!["currency"],
        ),
        (
            "unknown method",
            with("paymentMethod", json!("CASH")),
            vec!["paymentMethod"],
        ),
        (
            "bad phone",
            with("customerPhone", json!("0772123456")),
            vec!["customerPhone"],
        ),
        (
            "bad email",
            with("customerEmail", json!("nope")),
            vec!["customerEmail"],
        ),
        (
            "long description",
            with("description", json!("x".repeat(501))),
            vec!["description"],
        ),
        (
            "unknown field",
            with("userId", json!("someone-else")),
            vec!["userId"],
        ),
        ("wrong type", with("currency", json!(840)), vec!["currency"]),
        (
            "empty",
            json!({}),
            vec!["currency", "amount", "paymentMethod", "customerPhone"],
        ),
    ];
    for (label, body, fields) in cases {
        let res = app.create(&token, &body).await;
        assert_error(&res, 400);
        assert_eq!(error_fields(&res.body), fields, "{label}: {}", res.body);
    }
    for (label, raw) in [
        ("malformed", r#"{"amount": "#),
        ("NaN literal", r#"{"amount": NaN, "currency": "USD"}"#),
        ("array", "[]"),
    ] {
        let res = app
            .send(
                app.client
                    .post(format!("{}/payments", app.base))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(raw),
            )
            .await;
        assert_error(&res, 400);
        assert!(res.body["message"].as_str().is_some(), "{label}");
    }
    let res = app
        .send(
            app.client
                .post(format!("{}/payments", app.base))
                .bearer_auth(&token)
                .header("content-type", "text/plain")
                .body(valid_payment().to_string()),
        )
        .await;
    assert_error(&res, 415);
    assert_eq!(app.count("payments").await, 0);
    assert_eq!(app.count("payment_transactions").await, 0);
}
