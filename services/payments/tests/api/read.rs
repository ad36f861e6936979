use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error, error_fields};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn get_returns_the_payment_with_its_history_to_its_owner_only(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let owner = app.user("dan").await;
    let other = app.user("eve").await;
    let reference = app.payment(&owner).await;

    let res = app.get(&owner, &format!("/payments/{reference}")).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let p = res.data_value("payment");
    assert_eq!(p["reference"], reference.as_str());
    let history = p["transactions"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["status"], "INITIATED");
    assert_eq!(history[0]["source"], "api");
    assert_eq!(history[0]["amount"], "12.50");
    assert_eq!(history[0]["currency"], "USD");

    assert_error(
        &app.get(&other, &format!("/payments/{reference}")).await,
        404,
    );
    assert_error(&app.set_status(&other, &reference, "PENDING").await, 404);
    assert_error(&app.get(&owner, "/payments/PAY-0-NOSUCHTHNG").await, 404);
    let res = app.get(&owner, &format!("/payments/{reference}")).await;
    assert_eq!(
        res.data_value("payment")["state"],
        "INITIATED",
        "the other user changed nothing"
    );
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn list_pages_own_payments_newest_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let owner = app.user("fin").await;
    let other = app.user("gil").await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.payment(&owner).await);
    }
    app.payment(&other).await;
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/payments?limit=2".to_owned();
    loop {
        let res = app.get(&owner, &path).await;
        assert_eq!(res.status, 200, "{}", res.body);
        let page = res.body["data"]["payments"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|p| p["reference"].as_str().unwrap().to_owned()),
        );
        match res.body["data"]["nextCursor"].as_str() {
            Some(cursor) => path = format!("/payments?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, created, "every own payment once, newest first");

    let res = app.get(&owner, "/payments").await;
    assert_eq!(res.body["data"]["payments"].as_array().unwrap().len(), 5);
    assert!(res.body["data"]["nextCursor"].is_null());

    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=not-a-cursor",
        "limit=-1",
    ] {
        let res = app.get(&owner, &format!("/payments?{query}")).await;
        assert_error(&res, 400);
        assert_eq!(error_fields(&res.body).len(), 1, "{query}: {}", res.body);
    }
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn health_docs_and_envelope_conventions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("hal").await;
    let res = app.get(&token, "/health").await;
    assert_eq!(res.status, 200, "{}", res.body);
    for (key, value) in [("status", "ok"), ("database", "up"), ("auth", "up")] {
        assert_eq!(res.body["data"][key], value);
    }
    let spec = app.get(&token, "/docs/openapi.json").await;
    assert_eq!(spec.body["openapi"], "3.1.0");
    for path in [
        "/payments",
        "/payments/{reference}",
        "/payments/{reference}/status",
        "/payments/webhook",
        "/health",
    ] {
        assert!(spec.body["paths"].get(path).is_some(), "{path} missing");
    }
    // The validators' rules are in the schemas, so a client generated from them sends nothing
    // the service refuses for its form.
    let schemas = &spec.body["components"]["schemas"];
    let create = &schemas["CreatePaymentRequest"]["allOf"][0]["properties"];
    // The amount's decimals follow the currency: one branch per number of decimals.
    let by_currency = &schemas["CreatePaymentRequest"]["allOf"][1]["oneOf"];
    assert_eq!(
        by_currency[0]["properties"]["currency"]["enum"],
        json!(["UGX", "RWF", "JPY"])
    );
    assert_eq!(
        by_currency[0]["properties"]["amount"]["anyOf"][0]["pattern"],
        r"^(?:0*[1-9][0-9]{0,14}(\.0+)?)$"
    );
    assert_eq!(
        by_currency[1]["properties"]["currency"]["enum"],
        json!(["USD", "EUR", "GBP", "KES", "TZS", "NGN"])
    );
    assert_eq!(
        create["currency"]["pattern"],
        "^(UGX|RWF|JPY|USD|EUR|GBP|KES|TZS|NGN)$"
    );
    assert_eq!(
        create["paymentMethod"]["pattern"],
        "^(MOBILE_MONEY|CARD|BANK_TRANSFER)$"
    );
    assert_eq!(create["description"]["maxLength"], 500);
    let status = &schemas["UpdateStatusRequest"]["properties"];
    assert_eq!(
        status["status"]["pattern"],
        "^(INITIATED|PENDING|SUCCESS|FAILED)$"
    );
    assert_eq!(status["reason"]["maxLength"], 500);
    let list = spec.body["paths"]["/payments"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].clone(),
            limit["schema"]["maximum"].clone()
        ),
        (serde_json::json!(1), serde_json::json!(100))
    );
    let docs = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .unwrap()
            .contains(r#"<base href="docs/" />"#)
    );
    assert_error(&app.get(&token, "/nope").await, 404);
    let res = app
        .send(app.client.delete(format!("{}/payments", app.base)))
        .await;
    assert_error(&res, 405);
}
