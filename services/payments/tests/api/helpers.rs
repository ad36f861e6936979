//! `TestApp`: the payment service on a free loopback port over its own database, beside a real
//! `auth-svc` process with a database of its own.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use payment_svc::{config::Config, startup, webhook_signature};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use svc_common::config::{Leaving, MetricsPort};
pub use svc_test_support::{TestResponse, assert_error_envelope, error_fields};
use tokio::process::{Child, Command};

pub const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef";
const JWT_SECRET: &str = "payments-test-jwt-secret-0123456789";

pub struct TestApp {
    pub base: String,
    /// The metrics listener's base URL.
    pub metrics: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    auth: Child,
    auth_base: String,
}

/// The `auth-svc` binary that `cargo test --workspace` builds beside this test.
fn auth_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("auth-svc");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p auth-svc; setup/test.sh does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `auth-svc` over a new database of its own and waits until it is healthy.
async fn start_auth() -> (Child, String) {
    let admin_url = std::env::var("DATABASE_URL").unwrap();
    let admin = PgPool::connect(&admin_url).await.unwrap();
    let db = format!("auth_for_payments_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    let port = free_port();
    let child = Command::new(auth_binary())
        .env_clear()
        .env("DATABASE_URL", format!("{server}/{db}"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("PORT", port.to_string())
        .env("METRICS_PORT", "off")
        .env("HOST", "127.0.0.1")
        .env("BCRYPT_COST", "4")
        .env("AUTH_TEST_MODE", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !reqwest::get(format!("{base}/health"))
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "auth-svc did not start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (child, base)
}

pub fn config(auth_base: &str) -> Config {
    Config {
        database_url: "postgres://unused".into(),
        webhook_secret: WEBHOOK_SECRET.into(),
        auth_service_url: auth_base.to_owned(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        auth_timeout_ms: 1000,
        auth_cache_secs: 0,
        auth_cache_capacity: 100,
        webhook_tolerance_secs: 300,
        database_max_connections: 10,
        metrics_port: MetricsPort::On(0),
        leaving: Leaving::default(),
    }
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    /// The service with its configuration changed by `adjust`.
    pub async fn spawn_with(pool: PgPool, adjust: impl FnOnce(&mut Config)) -> Self {
        let (auth, auth_base) = start_auth().await;
        let mut config = config(&auth_base);
        adjust(&mut config);
        let app = startup::build(&config, pool.clone()).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let metrics = app
            .metrics_port()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .unwrap_or_default();
        tokio::spawn(async move { app.run_until_stopped(&Leaving::default()).await });
        Self {
            base,
            metrics,
            client: reqwest::Client::new(),
            pool,
            auth,
            auth_base,
        }
    }

    /// Kills the auth service, as a crash would.
    pub async fn stop_auth(&mut self) {
        self.auth.kill().await.unwrap();
    }

    /// Registers a user with the auth service and returns an access token.
    pub async fn user(&self, name: &str) -> String {
        let email = format!("{name}@example.com");
        let phone = format!("+2567720{:05}", next_phone_suffix());
        let res = self
            .client
            .post(format!("{}/auth/register", self.auth_base))
            .json(&json!({"email": email, "phone": phone, "password": "password-123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let res: Value = self
            .client
            .post(format!("{}/auth/login", self.auth_base))
            .json(&json!({"identifier": email, "password": "password-123"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        res["data"]["accessToken"].as_str().unwrap().to_owned()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        svc_test_support::send(req).await
    }

    pub async fn create(&self, token: &str, body: &Value) -> TestResponse {
        self.send(
            self.client
                .post(format!("{}/payments", self.base))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    pub async fn create_with_key(&self, token: &str, key: &str, body: &Value) -> TestResponse {
        self.send(
            self.client
                .post(format!("{}/payments", self.base))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    /// Creates a valid payment and returns its reference.
    pub async fn payment(&self, token: &str) -> String {
        let res = self.create(token, &valid_payment()).await;
        assert_eq!(res.status, 201, "{}", res.body);
        res.data_value("payment")["reference"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> TestResponse {
        self.send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn set_status(&self, token: &str, reference: &str, status: &str) -> TestResponse {
        self.send(
            self.client
                .patch(format!("{}/payments/{reference}/status", self.base))
                .bearer_auth(token)
                .json(&json!({"status": status, "reason": "test"})),
        )
        .await
    }

    /// Sends `body` to the webhook, signed at `timestamp` (unix seconds).
    pub async fn webhook_at(&self, body: &Value, timestamp: i64) -> TestResponse {
        let raw = body.to_string();
        let signature =
            webhook_signature::sign(WEBHOOK_SECRET.as_bytes(), timestamp, raw.as_bytes());
        self.webhook_raw(&raw, Some(&signature)).await
    }

    pub async fn webhook(&self, body: &Value) -> TestResponse {
        self.webhook_at(body, now()).await
    }

    pub async fn webhook_raw(&self, raw: &str, signature: Option<&str>) -> TestResponse {
        let mut req = self
            .client
            .post(format!("{}/payments/webhook", self.base))
            .header("content-type", "application/json")
            .body(raw.to_owned());
        if let Some(sig) = signature {
            req = req.header("X-Webhook-Signature", sig);
        }
        self.send(req).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// Distinct phone numbers for the users of one test.
fn next_phone_suffix() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(10_000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn valid_payment() -> Value {
    json!({
        "amount": "12.50",
        "currency": "USD",
        "paymentMethod": "MOBILE_MONEY",
        "customerPhone": "+256772123456",
        "customerEmail": "buyer@example.com",
        "description": "Order 42"
    })
}

pub fn event(reference: &str, status: &str, provider_tx: &str) -> Value {
    json!({
        "paymentReference": reference,
        "status": status,
        "providerTransactionId": provider_tx,
        "timestamp": "2026-11-25T12:00:00Z",
        "providerName": "MTN"
    })
}

/// Asserts the error envelope (the shared check, under the name these tests use).
pub fn assert_error(res: &TestResponse, status: u16) {
    assert_error_envelope(res, status);
}
