//! The `auth-svc` binary itself: configuration checks, JSON logs, health probe, SIGTERM.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{JWT_SECRET, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_auth-svc");

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn refuses_short_jwt_secret_naming_the_variable() {
    let out = run(
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("JWT_SECRET", "too-short"),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JWT_SECRET must be at least 32 bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret itself is never printed"
    );
}

#[test]
fn refuses_missing_jwt_secret_and_low_bcrypt_cost() {
    let out = run(&[("DATABASE_URL", "postgres://x@127.0.0.1:1/x")], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));

    let out = run(
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("JWT_SECRET", JWT_SECRET),
            ("BCRYPT_COST", "8"),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BCRYPT_COST must be at least 10"));
}

#[test]
fn refuses_secrets_given_as_flags() {
    let out = run(
        &[("DATABASE_URL", "postgres://x@127.0.0.1:1/x")],
        &["serve", "--jwt-secret", JWT_SECRET],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("through the environment"), "{stderr}");
}

#[test]
fn takes_secrets_from_files_named_by_var_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("jwt");
    std::fs::write(&short, "too-short\n").unwrap();
    let short = short.to_str().unwrap();
    for args in [&[][..], &["serve"][..]] {
        let out = run(
            &[
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
                ("JWT_SECRET_FILE", short),
            ],
            args,
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("JWT_SECRET must be at least 32 bytes"),
            "{args:?}: the file's content is the secret: {stderr}"
        );
        assert!(!stderr.contains("too-short"), "{stderr}");
    }
    let out = run(
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("JWT_SECRET_FILE", "/nonexistent/jwt"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JWT_SECRET_FILE: cannot read /nonexistent/jwt"),
        "{stderr}"
    );
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn serves_with_every_secret_from_a_file(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    let jwt_file = dir.path().join("jwt");
    std::fs::write(&url_file, format!("{}\n", database_url(&pool).await)).unwrap();
    std::fs::write(&jwt_file, JWT_SECRET).unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL_FILE", &url_file)
        .env("JWT_SECRET_FILE", &jwt_file)
        .env("PORT", port.to_string())
        .env("METRICS_PORT", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Ready only once it has reached the database through the URL read from the file.
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .map(|r| r.status().as_u16());
        if ready.as_ref().is_ok_and(|s| *s == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "auth-svc did not become ready: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn the_metrics_command_prints_what_the_instance_counted(pool: PgPool) {
    let metrics_port = free_port().to_string();
    let (_child, _, port) = start(&pool, &[("METRICS_PORT", &metrics_port)]).await;
    reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    let out = run(&[("METRICS_PORT", &metrics_port)], &["metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains(r#"route="/health""#)
            && l.contains(r#"status="200""#)),
        "{text}"
    );

    let out = run(&[("METRICS_PORT", "off")], &["metrics"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics are off"));
    let out = run(&[("METRICS_PORT", "ninety")], &["metrics"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a port number nor `off`"));
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = free_port();
    let out = run(&[("PORT", &port.to_string())], &["healthcheck"]);
    assert_eq!(out.status.code(), Some(1));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn database_url(pool: &PgPool) -> String {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{db}")
}

/// auth-svc serving on a free port of loopback with `pool`'s database, once it answers.
async fn start(pool: &PgPool, env: &[(&str, &str)]) -> (tokio::process::Child, String, u16) {
    let port = free_port();
    let url = database_url(pool).await;
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("JWT_SECRET", JWT_SECRET)
        .env("PORT", port.to_string())
        .env("METRICS_PORT", free_port().to_string())
        .env("BCRYPT_COST", "12")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{base}/health")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "auth-svc did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, url, port)
}

fn terminate(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn serves_json_logs_and_finishes_in_flight_requests_on_sigterm(pool: PgPool) {
    let (mut child, url, port) = start(&pool, &[]).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let probe = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PORT", port.to_string())
        .arg("healthcheck")
        .status()
        .await
        .unwrap();
    assert!(probe.success());

    let res = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "sig@example.com", "phone": "+256772000040", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // A login at cost 12 takes a few hundred milliseconds: SIGTERM arrives while it runs.
    let login = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .post(format!("{base}/auth/login"))
                .json(&json!({"identifier": "sig@example.com", "password": PASSWORD}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    terminate(&child);
    let res = login.await.unwrap().expect("in-flight login completes");
    assert_eq!(res.status(), 200);

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("auth-svc exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "user logged in"));
    assert!(lines.iter().any(|l| l["span"]["request_id"].is_string()));
    for secret in [JWT_SECRET, PASSWORD, url.as_str()] {
        assert!(!stdout.contains(secret), "a secret reached the log");
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn takes_new_requests_for_the_stop_delay_after_sigterm(pool: PgPool) {
    let (mut child, _, port) = start(&pool, &[("STOP_DELAY_MS", "1500")]).await;
    let terminated = Instant::now();
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A new connection, as the edge opens to an instance it still routes to.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("still listening during the stop delay");
    assert_eq!(res.status(), 200);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("auth-svc exits after the stop delay")
        .unwrap();
    assert!(status.success(), "{status}");
    let stopped = terminated.elapsed();
    assert!(
        stopped >= Duration::from_millis(1500) && stopped < Duration::from_secs(5),
        "{stopped:?}"
    );
}

#[test]
fn refuses_a_stop_delay_over_ten_seconds() {
    let out = run(
        &[
            ("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
            ("JWT_SECRET", JWT_SECRET),
            ("STOP_DELAY_MS", "60000"),
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("STOP_DELAY_MS") || stderr.contains("stop-delay-ms"),
        "{stderr}"
    );
    assert!(stderr.contains("10000"), "{stderr}");
}
