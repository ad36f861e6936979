use futures_util::future::join_all;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, WEBHOOK_SECRET, assert_error, event, now};

async fn pending_payment(app: &TestApp) -> (String, String) {
    let token = app.user("ops").await;
    let reference = app.payment(&token).await;
    assert_eq!(
        app.set_status(&token, &reference, "PENDING").await.status,
        200
    );
    (token, reference)
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn signed_event_applies_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (token, reference) = pending_payment(&app).await;
    let mut body = event(&reference, "SUCCESS", "mtn-tx-1");
    body["amount"] = json!("12.50");
    body["currency"] = json!("USD");
    let res = app.webhook(&body).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["processed"], true);

    let again = app.webhook(&body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["data"]["processed"], false);
    assert_eq!(again.body["message"], "Webhook already processed");

    let p = app.get(&token, &format!("/payments/{reference}")).await;
    assert_eq!(p.data_value("payment")["state"], "SUCCESS");
    assert_eq!(p.data_value("payment")["providerName"], "MTN");
    let last = p.data_value("payment")["transactions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "webhook");
    assert_eq!(last["providerName"], "MTN");
    assert_eq!(last["providerTransactionId"], "mtn-tx-1");
    assert_eq!(app.count("webhook_deliveries").await, 1);
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn twenty_concurrent_duplicate_deliveries_process_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, reference) = pending_payment(&app).await;
    let body = event(&reference, "SUCCESS", "dup-1");
    let results = join_all((0..20).map(|_| app.webhook(&body))).await;
    let processed = results
        .iter()
        .filter(|r| r.status == 200 && r.body["data"]["processed"] == true)
        .count();
    let duplicates = results
        .iter()
        .filter(|r| r.status == 200 && r.body["data"]["processed"] == false)
        .count();
    assert_eq!((processed, duplicates), (1, 19));
    assert_eq!(app.count("webhook_deliveries").await, 1);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_transactions WHERE source = 'webhook'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn bad_signatures_are_401_and_write_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, reference) = pending_payment(&app).await;
    let body = event(&reference, "SUCCESS", "sig-1").to_string();
    let good =
        payment_svc::webhook_signature::sign(WEBHOOK_SECRET.as_bytes(), now(), body.as_bytes());
    let tampered = body.replace("SUCCESS", "FAILED");
    let old = payment_svc::webhook_signature::sign(
        WEBHOOK_SECRET.as_bytes(),
        now() - 301,
        body.as_bytes(),
    );
    let future = payment_svc::webhook_signature::sign(
        WEBHOOK_SECRET.as_bytes(),
        now() + 301,
        body.as_bytes(),
    );
    let wrong_key =
        payment_svc::webhook_signature::sign(b"not-the-secret-at-all", now(), body.as_bytes());
    for (label, raw, sig) in [
        ("tampered body", tampered.as_str(), Some(good.as_str())),
        ("old timestamp", body.as_str(), Some(old.as_str())),
        ("future timestamp", body.as_str(), Some(future.as_str())),
        ("wrong key", body.as_str(), Some(wrong_key.as_str())),
        ("garbage", body.as_str(), Some("t=1,v1=zz")),
        ("missing", body.as_str(), None),
    ] {
        let res = app.webhook_raw(raw, sig).await;
        assert_error(&res, 401);
        assert!(!res.body["message"].as_str().unwrap().is_empty(), "{label}");
    }
    assert_eq!(app.count("webhook_deliveries").await, 0);
    assert_eq!(
        app.count("payment_transactions").await,
        2,
        "creation and PENDING only"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM payments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "PENDING");
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn mismatches_unknown_references_and_bad_payloads_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, reference) = pending_payment(&app).await;
    let with = |key: &str, value: serde_json::Value| {
        let mut body = event(&reference, "SUCCESS", "m-1");
        body[key] = value;
        body
    };
    assert_error(&app.webhook(&with("amount", json!("99.00"))).await, 409);
    assert_error(&app.webhook(&with("currency", json!("EUR"))).await, 409);
    assert_error(&app.webhook(&with("status", json!("INITIATED"))).await, 400);
    assert_error(
        &app.webhook(&with("timestamp", json!("yesterday"))).await,
        400,
    );
    assert_error(&app.webhook(&with("extra", json!(1))).await, 400);
    assert_error(
        &app.webhook(&with("paymentReference", json!("PAY-0-UNKNOWN000")))
            .await,
        404,
    );
    assert_eq!(
        app.count("webhook_deliveries").await,
        0,
        "refusals record nothing"
    );

    // A mismatch did not burn the provider transaction id: the correct event still applies.
    let res = app.webhook(&with("amount", json!(12.5))).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["data"]["processed"], true);
    // SUCCESS is final: a later FAILED event is an invalid transition.
    let res = app.webhook(&event(&reference, "FAILED", "m-2")).await;
    assert_error(&res, 409);
}
