//! `TestApp`: the auth service on a free loopback port, over its own database.

use std::net::{IpAddr, Ipv4Addr};

use auth_svc::{config::Config, startup};
use serde_json::{Value, json};
use sqlx::PgPool;
use svc_common::config::{Leaving, MetricsPort};
pub use svc_test_support::{TestResponse, assert_error_envelope, error_fields};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const ISSUER: &str = "stackctl-auth";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub base: String,
    /// The metrics listener's base URL.
    pub metrics: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
}

pub fn config() -> Config {
    Config {
        database_url: "postgres://unused".into(),
        jwt_secret: JWT_SECRET.into(),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        jwt_issuer: ISSUER.to_owned(),
        access_token_ttl_secs: 900,
        refresh_token_ttl_secs: 3600,
        bcrypt_cost: 4,
        test_mode: true,
        user_cache_ms: 0,
        database_max_connections: 5,
        metrics_port: MetricsPort::On(0),
        leaving: Leaving::default(),
    }
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, config()).await
    }

    pub async fn spawn_with(pool: PgPool, config: Config) -> Self {
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
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        svc_test_support::send(req).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> TestResponse {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn register(&self, email: &str, phone: &str, password: &str) -> TestResponse {
        self.post_json(
            "/auth/register",
            &json!({"email": email, "phone": phone, "password": password}),
        )
        .await
    }

    pub async fn login(&self, identifier: &str, password: &str) -> TestResponse {
        self.post_json(
            "/auth/login",
            &json!({"identifier": identifier, "password": password}),
        )
        .await
    }

    /// Registers a user and logs in: returns (access token, refresh token).
    pub async fn signed_up(&self, email: &str, phone: &str) -> (String, String) {
        assert_eq!(self.register(email, phone, PASSWORD).await.status, 201);
        let res = self.login(email, PASSWORD).await;
        assert_eq!(res.status, 200, "{}", res.body);
        (
            res.data("accessToken").to_owned(),
            res.data("refreshToken").to_owned(),
        )
    }

    pub async fn me(&self, token: &str) -> TestResponse {
        self.send(
            self.client
                .post(format!("{}/auth/me", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn me_get(&self, token: &str) -> TestResponse {
        self.send(
            self.client
                .get(format!("{}/auth/me", self.base))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> TestResponse {
        self.post_json("/auth/refresh", &json!({"refreshToken": refresh_token}))
            .await
    }

    pub async fn logout(&self, refresh_token: &str) -> TestResponse {
        self.post_json("/auth/logout", &json!({"refreshToken": refresh_token}))
            .await
    }
}
