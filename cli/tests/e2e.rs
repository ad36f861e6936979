//! `stackctl` end to end against this machine's Docker engine: bad input first, then `up`, the
//! whole API over HTTPS through nginx, `ps`, `logs`, a second `up`, `down`/`up` keeping data, the
//! rate limit, and `down --volumes`. Slow (it builds images), so it is ignored by default:
//! `cargo test -p stackctl --test e2e -- --ignored` (setup/test.sh runs it).
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const BIN: &str = env!("CARGO_BIN_EXE_stackctl");
const CONFIG: &str = r#"project = "e2e"
[ports]
http = 18080
https = 18443
auth_db = 15432
payments_db = 15433
[services.auth]
bcrypt_cost = 10
"#;
/// The functional checks send more than the default rate limit allows; it is tested last.
const RAISED_LIMIT: &str = "[nginx]\nrate_limit_per_minute = 6000\nrate_limit_burst = 500\n";

/// The end-to-end tests share the engine and the machine's two cores: one at a time.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Stack {
    dir: tempfile::TempDir,
    https_port: i64,
}

/// Removes the stack, data included, when the test ends, passed or not.
impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--volumes", "--yes"]);
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: Value,
}

impl Stack {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.toml"), config).unwrap();
        let https_port = config
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("ports")?.get("https")?.as_integer())
            .unwrap_or(443);
        Self { dir, https_port }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .current_dir(self.path())
            .env("STACKCTL_SOURCE_DIR", source_dir())
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stackctl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn cert(&self) -> PathBuf {
        self.path().join(".stackctl/tls/cert.pem")
    }

    fn curl(&self, url: &str, extra: &[&str]) -> Reply {
        let out = Command::new("curl")
            .args(["-s", "-D", "-", "--cacert"])
            .arg(self.cert())
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            headers: headers.to_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        }
    }

    fn https(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut args = vec!["-X".to_owned(), method.to_owned()];
        if let Some(t) = token {
            args.extend(["-H".to_owned(), format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            args.extend([
                "-H".to_owned(),
                "Content-Type: application/json".to_owned(),
                "--data".to_owned(),
                b.to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(
            &format!("https://localhost:{}{path}", self.https_port),
            &args,
        )
    }

    fn containers(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["ps", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ids(stack: &Stack) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = stack
        .containers()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// Names of the engine's volumes and networks, through bollard.
fn engine_leftovers() -> (Vec<String>, Vec<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_defaults().unwrap();
        let volumes = docker
            .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
            .await
            .unwrap()
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let networks = docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|n| n.name)
            .collect();
        (volumes, networks)
    })
}

/// Headless Chromium on `url`, after its scripts ran; returns what it printed.
fn chromium(url: &str, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
        ])
        .arg("--virtual-time-budget=10000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is installed by setup/setup.sh");
    assert!(
        out.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sign(secret: &str, body: &str) -> String {
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

const ALL: [&str; 7] = [
    "auth-db",
    "payments-db",
    "app_a1",
    "app_a2",
    "app_b1",
    "app_b2",
    "nginx-proxy",
];

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn whole_stack_end_to_end() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    // Bad input changes nothing.
    let broken = Stack::new("[ports]\nhtp = 80\n");
    let out = broken.run(&["up"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("htp"),
        "names the key"
    );
    let stack = Stack::new(&format!("{CONFIG}{RAISED_LIMIT}"));
    // Whatever an interrupted earlier run left behind belongs to other secrets.
    stack.ok(&["down", "--volumes", "--yes"]);
    let out = stack.run(&["logs", "nosuch"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses an unknown service"
    );
    {
        let _taken = std::net::TcpListener::bind("0.0.0.0:18080").unwrap();
        let out = stack.run(&["up"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ports.http") && stderr.contains("18080"),
            "{stderr}"
        );
        assert!(stack.containers().is_empty(), "nothing half-started");
    }

    stack.ok(&["up"]);
    let ps = stack.containers();
    assert_eq!(ps.len(), 7, "{ps:?}");
    assert!(ps.iter().all(|c| c["health"] == "healthy"), "{ps:?}");
    let cert_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(stack.path().join(".stackctl/tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(cert_mode & 0o777, 0o600);

    // The API through the edge, over TLS verified against the generated certificate.
    let reg = stack.https(
        "POST",
        "/a/auth/register",
        None,
        Some(&json!({"email": "e2e@example.com", "phone": "+256772555000", "password": "e2e-password"})),
    );
    assert_eq!(reg.status, 201, "{}", reg.body);
    for header in [
        "strict-transport-security",
        "x-content-type-options: nosniff",
        "x-frame-options",
        "referrer-policy",
        "x-request-id",
    ] {
        assert!(
            reg.headers.contains(header),
            "{header} missing: {}",
            reg.headers
        );
    }
    let login = stack.https(
        "POST",
        "/a/auth/login",
        None,
        Some(&json!({"identifier": "e2e@example.com", "password": "e2e-password"})),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stack.https("GET", "/a/auth/me", Some(&token), None).status,
        200
    );
    let created = stack.https(
        "POST",
        "/b/payments",
        Some(&token),
        Some(&json!({"amount": 1500, "currency": "KES", "paymentMethod": "MOBILE_MONEY", "customerPhone": "+254712345678"})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let reference = created.body["data"]["payment"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(created.body["data"]["payment"]["amount"], "1500.00");
    let got = stack.https(
        "GET",
        &format!("/b/payments/{reference}"),
        Some(&token),
        None,
    );
    assert_eq!(got.status, 200);
    let patched = stack.https(
        "PATCH",
        &format!("/b/payments/{reference}/status"),
        Some(&token),
        Some(&json!({"status": "PENDING"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let secret = stack
        .ok(&["secrets", "show", "webhook_secret"])
        .trim()
        .to_owned();
    let event = json!({"paymentReference": reference, "status": "SUCCESS", "providerTransactionId": "e2e-1", "timestamp": "2026-11-25T12:00:00Z"}).to_string();
    let signature = sign(&secret, &event);
    let hook = stack.curl(
        "https://localhost:18443/b/payments/webhook",
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("X-Webhook-Signature: {signature}"),
            "--data",
            &event,
        ],
    );
    assert_eq!(hook.status, 200, "{}", hook.body);
    assert_eq!(hook.body["data"]["processed"], true);

    // Health through the edge, and both instances of each service answer.
    for (path, instances) in [
        ("/a/health", ["app_a1", "app_a2"]),
        ("/b/health", ["app_b1", "app_b2"]),
    ] {
        let seen: BTreeSet<String> = (0..12)
            .map(|_| {
                stack.https("GET", path, None, None).body["data"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            seen,
            instances.iter().map(|s| (*s).to_owned()).collect(),
            "{path}"
        );
    }
    for path in ["/health/service_a", "/health/service_b"] {
        let res = stack.https("GET", path, None, None);
        assert_eq!(res.status, 200, "{path}: {}", res.body);
        assert_eq!(res.body["data"]["status"], "ok");
    }
    for path in ["/a/docs", "/b/docs"] {
        let res = stack.https("GET", path, None, None);
        assert_eq!(res.status, 200, "{path}");
        assert!(
            res.body.as_str().unwrap_or_default().contains("swagger"),
            "{path}"
        );
        assert_eq!(
            stack
                .https("GET", &format!("{path}/openapi.json"), None, None)
                .status,
            200
        );
    }
    // The interactive docs render in a real browser behind the prefixes and list the operations.
    let artifacts = source_dir().join("target/e2e-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (prefix, operation) in [("a", "/auth/register"), ("b", "/payments/{reference}")] {
        let url = format!("https://localhost:18443/{prefix}/docs");
        let dom = chromium(&url, &["--dump-dom"]);
        assert!(
            dom.contains(&format!("data-path=\"{operation}\"")),
            "{url} does not list {operation}"
        );
        let shot = artifacts.join(format!("{prefix}-docs.png"));
        chromium(
            &url,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,1600",
            ],
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{}",
            shot.display()
        );
    }
    let missing = stack.https("GET", "/nope", None, None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["success"], false);
    let redirect = stack.curl("http://localhost:18080/a/health", &[]);
    assert_eq!(redirect.status, 301);
    assert!(
        redirect
            .headers
            .contains("location: https://localhost:18443/a/health"),
        "{}",
        redirect.headers
    );

    // Logs of every container.
    let logs = stack.ok(&["logs", "--tail", "20"]);
    for name in ALL {
        assert!(
            logs.lines().any(|l| l.starts_with(name)),
            "no log line from {name}"
        );
    }

    // A second `up` recreates nothing.
    let before = ids(&stack);
    assert_eq!(before.len(), 7);
    stack.ok(&["up"]);
    assert_eq!(ids(&stack), before, "same containers after a second up");

    // Back to the default rate limit: only the edge's configuration changes, and it is
    // reloaded in place.
    std::fs::write(stack.path().join("stack.toml"), CONFIG).unwrap();
    stack.ok(&["up"]);
    assert_eq!(ids(&stack), before, "a rate limit change recreates nothing");
    let replies: Vec<Reply> = (0..40)
        .map(|_| stack.https("GET", "/health/service_a", None, None))
        .collect();
    let limited = replies
        .iter()
        .find(|r| r.status == 429)
        .expect("100/min with a burst of 20 limits 40 quick requests");
    assert!(
        limited.headers.contains("retry-after"),
        "{}",
        limited.headers
    );
    assert_eq!(limited.body["success"], false);
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429));

    // A setting of one service recreates that service's containers only.
    std::fs::write(
        stack.path().join("stack.toml"),
        CONFIG.replace("bcrypt_cost = 10", "bcrypt_cost = 11"),
    )
    .unwrap();
    stack.ok(&["up"]);
    let after = ids(&stack);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        if name.starts_with("app_a") {
            assert_ne!(old, new, "{name} runs with the new cost");
        } else {
            assert_eq!(old, new, "{name} is untouched by an auth setting");
        }
    }

    // Data survives down + up.
    stack.ok(&["down"]);
    assert!(stack.containers().is_empty());
    std::thread::sleep(std::time::Duration::from_secs(1));
    stack.ok(&["up"]);
    let again = stack.https(
        "POST",
        "/a/auth/login",
        None,
        Some(&json!({"identifier": "e2e@example.com", "password": "e2e-password"})),
    );
    assert_eq!(
        again.status, 200,
        "the user survived down/up: {}",
        again.body
    );

    stack.ok(&["down", "--volumes", "--yes"]);
    assert!(stack.containers().is_empty());
    let (volumes, networks) = engine_leftovers();
    assert!(
        !volumes.iter().any(|v| v.starts_with("e2e_")),
        "{volumes:?}"
    );
    assert!(!networks.iter().any(|n| n == "app-network"), "{networks:?}");
}

const SCALE_CONFIG: &str = r#"project = "e2e-scale"
[ports]
http = 19080
https = 19443
auth_db = 19432
payments_db = 19433
[services.auth]
bcrypt_cost = 10
[nginx]
rate_limit_per_minute = 600000
rate_limit_burst = 10000
"#;

/// wrk running `setup/load.lua` against the stack until [`Load::finish`].
struct Load {
    child: std::process::Child,
}

impl Load {
    fn start(stack: &Stack, token: &str, reference: &str) -> Self {
        let child = Command::new("wrk")
            .args(["-t2", "-c4", "-d30m", "--timeout", "10s", "-s"])
            .arg(source_dir().join("setup/load.lua"))
            .arg(format!("https://localhost:{}", stack.https_port))
            .env("LOAD_TOKEN", token)
            .env("LOAD_REFERENCE", reference)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("wrk is installed by setup/setup.sh");
        Self { child }
    }

    /// Stops wrk (SIGINT makes it report) and returns its counters.
    fn finish(self) -> std::collections::BTreeMap<String, u64> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = self.child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("LOAD "))
            .unwrap_or_else(|| {
                panic!(
                    "no LOAD line from wrk:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let counters = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect();
        eprintln!("{line}\n{}", String::from_utf8_lossy(&out.stderr));
        counters
    }
}

/// The instance names that answered `n` health checks of a service through the edge.
fn answering(stack: &Stack, service: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let reply = stack.https("GET", &format!("/health/{service}"), None, None);
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body["data"]["instance"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The running instances of a service, from `ps`.
fn running(stack: &Stack, prefix: &str) -> BTreeSet<String> {
    stack
        .containers()
        .iter()
        .filter(|c| c["state"] == "running")
        .filter_map(|c| c["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// The instances the rendered upstream of a service lists.
fn upstream(stack: &Stack, service: &str) -> BTreeSet<String> {
    let site = std::fs::read_to_string(stack.path().join(".stackctl/nginx/stack.conf")).unwrap();
    let block = site
        .split(&format!("upstream {service} {{"))
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn scale_and_rolling_replacement_fail_no_request() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = Stack::new(SCALE_CONFIG);
    stack.ok(&["down", "--volumes", "--yes"]);

    // Refused before anything is touched.
    for (args, why) in [
        (["scale", "auth", "0"], "0 is not in 1..=16"),
        (["scale", "auth", "17"], "17 is not in 1..=16"),
        (["scale", "nginx", "2"], "invalid value 'nginx'"),
    ] {
        let out = stack.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }

    stack.ok(&["up"]);
    let reg = stack.https(
        "POST",
        "/a/auth/register",
        None,
        Some(&json!({"email": "scale@example.com", "phone": "+256772555001", "password": "scale-password"})),
    );
    assert_eq!(reg.status, 201, "{}", reg.body);
    let login = stack.https(
        "POST",
        "/a/auth/login",
        None,
        Some(&json!({"identifier": "scale@example.com", "password": "scale-password"})),
    );
    let token = login.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = stack.https(
        "POST",
        "/b/payments",
        Some(&token),
        Some(&json!({"amount": "99.00", "currency": "USD", "paymentMethod": "CARD", "customerPhone": "+254712345678"})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let reference = created.body["data"]["payment"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();

    // The plan alone changes nothing.
    let plan = stack.ok(&["scale", "auth", "3", "--dry-run"]);
    assert!(plan.contains("start app_a3"), "{plan}");
    assert!(
        plan.contains("route auth to app_a1, app_a2, app_a3"),
        "{plan}"
    );
    assert_eq!(running(&stack, "app_a"), set(&["app_a1", "app_a2"]));

    let load = Load::start(&stack, &token, &reference);
    std::thread::sleep(std::time::Duration::from_secs(2));

    stack.ok(&["scale", "auth", "3"]);
    assert_eq!(
        running(&stack, "app_a"),
        set(&["app_a1", "app_a2", "app_a3"])
    );
    assert_eq!(upstream(&stack, "service_a"), running(&stack, "app_a"));
    assert!(
        answering(&stack, "service_a", 12).contains("app_a3"),
        "the new instance serves"
    );

    // A template nginx rejects: the old configuration keeps serving, the new instance goes.
    let site_before =
        std::fs::read_to_string(stack.path().join(".stackctl/nginx/stack.conf")).unwrap();
    let broken = std::fs::read_to_string(source_dir().join("templates/nginx/site.conf.j2"))
        .unwrap()
        .replace("keepalive 32;", "keepalive 32;\n    no_such_directive on;");
    std::fs::write(stack.path().join("broken.j2"), broken).unwrap();
    let out = stack.run_with(
        &["scale", "auth", "4"],
        &[("STACKCTL_NGINX_SITE_TEMPLATE", "broken.j2")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nginx rejected") && stderr.contains("no_such_directive"),
        "{stderr}"
    );
    assert_eq!(
        running(&stack, "app_a"),
        set(&["app_a1", "app_a2", "app_a3"]),
        "app_a4 removed"
    );
    assert_eq!(
        std::fs::read_to_string(stack.path().join(".stackctl/nginx/stack.conf")).unwrap(),
        site_before
    );
    assert_eq!(
        answering(&stack, "service_a", 12),
        set(&["app_a1", "app_a2", "app_a3"])
    );

    stack.ok(&["scale", "auth", "1"]);
    assert_eq!(running(&stack, "app_a"), set(&["app_a1"]));
    assert_eq!(upstream(&stack, "service_a"), set(&["app_a1"]));
    assert_eq!(
        answering(&stack, "service_a", 8),
        set(&["app_a1"]),
        "removed instances get none"
    );
    stack.ok(&["scale", "auth", "2"]);
    assert_eq!(upstream(&stack, "service_a"), set(&["app_a1", "app_a2"]));

    stack.ok(&["scale", "payments", "1"]);
    assert_eq!(running(&stack, "app_b"), set(&["app_b1"]));
    stack.ok(&["scale", "payments", "3"]);
    assert_eq!(
        running(&stack, "app_b"),
        set(&["app_b1", "app_b2", "app_b3"])
    );
    assert_eq!(upstream(&stack, "service_b"), running(&stack, "app_b"));

    // Rolling replacement: every instance is a new container, the count is unchanged.
    let before = ids(&stack);
    stack.ok(&["restart", "auth"]);
    stack.ok(&["restart", "payments"]);
    let after = ids(&stack);
    for (name, id) in &after {
        if name.starts_with("app_") {
            assert!(
                !before.contains(&(name.clone(), id.clone())),
                "{name} was replaced"
            );
        }
    }
    assert_eq!(running(&stack, "app_a"), set(&["app_a1", "app_a2"]));
    assert_eq!(
        running(&stack, "app_b"),
        set(&["app_b1", "app_b2", "app_b3"])
    );

    // A later `up` keeps the scaled counts.
    stack.ok(&["up"]);
    assert_eq!(
        running(&stack, "app_b"),
        set(&["app_b1", "app_b2", "app_b3"])
    );

    std::thread::sleep(std::time::Duration::from_secs(2));
    let counters = load.finish();
    assert!(
        counters["requests"] > 500,
        "a steady load ran: {counters:?}"
    );
    for key in ["failed", "connect", "read", "write", "timeout"] {
        assert_eq!(counters[key], 0, "{key}: {counters:?}");
    }
    assert_eq!(counters["ok"], counters["requests"], "{counters:?}");
}
