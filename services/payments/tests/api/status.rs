use futures_util::future::join_all;
use sqlx::PgPool;

use crate::helpers::{TestApp, assert_error};

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn state_machine_allows_only_documented_transitions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("ivy").await;
    let reference = app.payment(&token).await;
    assert_error(&app.set_status(&token, &reference, "SUCCESS").await, 409);
    assert_error(&app.set_status(&token, &reference, "INITIATED").await, 409);
    let res = app.set_status(&token, &reference, "PENDING").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data_value("payment")["state"], "PENDING");
    assert_eq!(
        app.set_status(&token, &reference, "SUCCESS").await.status,
        200
    );
    let res = app.set_status(&token, &reference, "FAILED").await;
    assert_error(&res, 409);
    assert_eq!(
        res.body["message"],
        "Invalid status transition from SUCCESS to FAILED"
    );

    let history = app.get(&token, &format!("/payments/{reference}")).await;
    let states: Vec<&str> = history.data_value("payment")["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["INITIATED", "PENDING", "SUCCESS"]);

    let cancel = app.payment(&token).await;
    assert_eq!(app.set_status(&token, &cancel, "FAILED").await.status, 200);
    let res = app
        .send(
            app.client
                .patch(format!("{}/payments/{cancel}/status", app.base))
                .bearer_auth(&token)
                .json(&serde_json::json!({"status": "DONE"})),
        )
        .await;
    assert_error(&res, 400);
}

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn concurrent_success_and_failure_exactly_one_wins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let token = app.user("jay").await;
    for _ in 0..5 {
        let reference = app.payment(&token).await;
        assert_eq!(
            app.set_status(&token, &reference, "PENDING").await.status,
            200
        );
        let results =
            join_all(["SUCCESS", "FAILED"].map(|to| app.set_status(&token, &reference, to))).await;
        let mut statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409]);
        let winner = results.iter().find(|r| r.status == 200).unwrap();
        let final_state = winner.data_value("payment")["state"]
            .as_str()
            .unwrap()
            .to_owned();
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payment_transactions t JOIN payments p ON p.id = t.payment_id
             WHERE p.reference = $1 AND t.status IN ('SUCCESS', 'FAILED')",
        )
        .bind(&reference)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(rows, 1, "exactly one history row for the race");
        let stored = app.get(&token, &format!("/payments/{reference}")).await;
        assert_eq!(stored.data_value("payment")["state"], final_state.as_str());
    }
}
