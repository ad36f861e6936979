//! The metrics listener: requests by route template, and the token cache's hits and misses.

use sqlx::PgPool;
use svc_test_support::Scraped;

use crate::helpers::TestApp;

#[sqlx::test(migrator = "payment_svc::startup::MIGRATOR")]
async fn routes_are_counted_by_template_and_token_checks_by_cache_outcome(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.auth_cache_secs = 5).await;
    let token = app.user("mia").await;
    // The first check goes to the auth service; the next three are answered by the cache.
    let reference = app.payment(&token).await;
    for _ in 0..2 {
        let res = app.get(&token, &format!("/payments/{reference}")).await;
        assert_eq!(res.status, 200, "{}", res.body);
    }
    assert_eq!(
        app.get(&token, "/payments/PAY-0-NOSUCHTHNG").await.status,
        404
    );
    assert_eq!(app.get("not-a-token", "/payments").await.status, 401);

    let m = Scraped::from(&app.metrics).await;
    let requests = |route, method, status| {
        m.value(
            "http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("/payments", "POST", "201"), 1.0);
    assert_eq!(requests("/payments/{reference}", "GET", "200"), 2.0);
    assert_eq!(requests("/payments/{reference}", "GET", "404"), 1.0);
    assert_eq!(requests("/payments", "GET", "401"), 1.0);
    let lookups = |result| m.value("auth_cache_lookups_total", &[("result", result)]);
    // The unreadable token is a miss too: the auth service refused it.
    assert_eq!(lookups("miss"), 2.0);
    assert_eq!(lookups("hit"), 3.0);
    assert_eq!(
        m.value("db_pool_max_connections", &[]),
        f64::from(app.pool.options().get_max_connections())
    );
}
