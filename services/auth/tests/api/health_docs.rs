use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::TestApp;

async fn set_connections_allowed(db: &str, allowed: bool) {
    let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS {allowed}"#
    )))
    .execute(&admin)
    .await
    .unwrap();
    if !allowed {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .execute(&admin)
            .await
            .unwrap();
    }
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn health_reports_database_down_then_recovers_without_restart(pool: PgPool) {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(pool).await;
    let res = app.get("/health").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["message"], "OK");
    assert_eq!(res.data("status"), "ok");
    assert_eq!(res.data("database"), "up");
    assert_eq!(res.data("version"), env!("CARGO_PKG_VERSION"));
    assert!(!res.data("instance").is_empty());

    set_connections_allowed(&db, false).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = app.get("/health").await;
    assert_eq!(res.status, 503, "{}", res.body);
    assert_eq!(res.data("status"), "degraded");
    assert_eq!(res.data("database"), "down");

    set_connections_allowed(&db, true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let res = app.get("/health").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.data("database"), "up");
}

#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn docs_are_served_from_the_binary_with_relative_urls(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let page = |path: &str| {
        let url = format!("{}{path}", app.base);
        let client = app.client.clone();
        async move {
            let res = client.get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, index) = page("/docs").await;
    assert_eq!(status, 200);
    assert!(index.contains(r#"<base href="docs/" />"#), "{index}");
    assert!(
        !index.contains("http://") && !index.contains("https://"),
        "no CDN: {index}"
    );
    let (status, slash) = page("/docs/").await;
    assert_eq!(status, 200);
    assert!(slash.contains("swagger-ui"));
    let (status, init) = page("/docs/swagger-initializer.js").await;
    assert_eq!(status, 200);
    assert!(
        init.contains(r#""url": "openapi.json""#) || init.contains(r#""url":"openapi.json""#),
        "{init}"
    );
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"] {
        assert_eq!(page(asset).await.0, 200, "{asset}");
    }
    assert_eq!(page("/docs/nope.js").await.0, 404);

    let spec = app.get("/docs/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.1.0");
    let paths = spec.body["paths"].as_object().unwrap();
    for path in [
        "/auth/register",
        "/auth/login",
        "/auth/me",
        "/auth/refresh",
        "/auth/refresh-token",
        "/auth/logout",
        "/health",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the spec");
    }
    assert!(paths["/auth/me"].get("get").is_some() && paths["/auth/me"].get("post").is_some());
    // Every answer a route can give is documented, the shared plumbing's included.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        statuses("/auth/login", "post"),
        ["200", "400", "401", "413", "415", "429", "500", "503"]
    );
    assert_eq!(statuses("/auth/me", "get"), ["200", "401", "500", "503"]);
    let unavailable = &paths["/auth/login"]["post"]["responses"]["503"];
    assert!(
        unavailable["headers"].get("Retry-After").is_some(),
        "{unavailable}"
    );
}

#[sqlx::test(migrations = false)]
async fn migrations_are_safe_when_two_instances_start_together(pool: PgPool) {
    let (a, b) = tokio::join!(
        auth_svc::startup::migrate(&pool),
        auth_svc::startup::migrate(&pool)
    );
    a.unwrap();
    b.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users', 'refresh_tokens')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 2);
}

/// Behind a real nginx that strips the `/a/` prefix, as the stack's edge does.
#[sqlx::test(migrator = "auth_svc::startup::MIGRATOR")]
async fn docs_work_behind_a_prefix_stripping_proxy(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = app.base.trim_start_matches("http://");
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n\
             location /a/ {{ proxy_pass http://{upstream}/; }}\n  }}\n}}\n",
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let _nginx = tokio::process::Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx is installed by setup/setup.sh");
    let client = reqwest::Client::new();
    let edge = format!("http://127.0.0.1:{port}/a");
    let mut index = None;
    for _ in 0..100 {
        if let Ok(res) = client.get(format!("{edge}/docs")).send().await {
            index = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let index = index.expect("nginx answers");
    assert_eq!(index.status(), 200);
    let html = index.text().await.unwrap();
    // The browser resolves every relative URL of the page against <base href="docs/"> from
    // /a/docs, that is under /a/docs/: fetch exactly those.
    let base = format!("{edge}/docs/");
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
        "openapi.json",
    ] {
        if asset != "openapi.json" {
            assert!(html.contains(asset), "{asset} is referenced by the page");
        }
        let res = client.get(format!("{base}{asset}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{base}{asset}");
    }
}
