//! The metrics listener: every request counted once by route template and status, and never
//! reachable on the API's own port.

use serde_json::json;
use sqlx::PgPool;
use svc_test_support::Scraped;

use crate::helpers::{PASSWORD, TestApp};

fn requests(route: &str, method: &str, status: &str) -> [(&'static str, String); 3] {
    [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_owned()),
    ]
}

fn count(scraped: &Scraped, labels: &[(&'static str, String)]) -> f64 {
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    scraped.value("http_requests_total", &labels)
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn requests_are_counted_by_route_template_and_status(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status, 200);
    }
    let user = json!({"email": "m@example.com", "phone": "+256772000090", "password": PASSWORD});
    assert_eq!(app.post_json("/auth/register", &user).await.status, 201);
    assert_eq!(
        app.post_json("/auth/register", &json!({})).await.status,
        400
    );
    let login = |password: &str| json!({"identifier": "m@example.com", "password": password});
    assert_eq!(
        app.post_json("/auth/login", &login(PASSWORD)).await.status,
        200
    );
    assert_eq!(
        app.post_json("/auth/login", &login("wrong-password"))
            .await
            .status,
        401
    );
    // The metrics are not on the API's port, and an unknown path is not a label of its own.
    assert_eq!(app.get("/metrics").await.status, 404);
    assert_eq!(app.get("/no/such/route").await.status, 404);
    let delete = app.client.delete(format!("{}/health", app.base));
    assert_eq!(app.send(delete).await.status, 405);

    let m = Scraped::from(&app.metrics).await;
    assert_eq!(count(&m, &requests("/health", "GET", "200")), 3.0);
    assert_eq!(count(&m, &requests("/auth/register", "POST", "201")), 1.0);
    assert_eq!(count(&m, &requests("/auth/register", "POST", "400")), 1.0);
    assert_eq!(count(&m, &requests("/auth/login", "POST", "200")), 1.0);
    assert_eq!(count(&m, &requests("/auth/login", "POST", "401")), 1.0);
    assert_eq!(count(&m, &requests("unmatched", "GET", "404")), 2.0);
    assert_eq!(count(&m, &requests("/health", "DELETE", "405")), 1.0);
    // Timed by route whatever the method: the three GETs and the DELETE.
    assert_eq!(
        m.value("http_request_duration_seconds", &[("route", "/health")]),
        4.0
    );
    assert_eq!(m.value("http_requests_in_flight", &[]), 0.0);
    // One hash for the registration, one check per log-in.
    assert_eq!(m.value("bcrypt_hash_seconds", &[]), 3.0);
    assert_eq!(m.value("bcrypt_queue_depth", &[]), 0.0);
    assert_eq!(
        m.value("db_pool_max_connections", &[]),
        f64::from(app.pool.options().get_max_connections())
    );
    assert!(m.value("db_pool_connections", &[]) >= 1.0);
    assert!(m.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.has("process_cpu_seconds_total"));

    // Scraping is not a request of the API.
    let again = Scraped::from(&app.metrics).await;
    assert_eq!(count(&again, &requests("/health", "GET", "200")), 3.0);
}
