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
use support::{H2Load, Load, assert_all_served, signal, source_dir, stackctl};

mod support;

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
const RAISED_LIMIT: &str = "[nginx]\nrate_limit_per_minute = 6000\nrate_limit_burst = 500\nlogin_rate_limit_per_minute = 6000\nlogin_rate_limit_burst = 500\n";

/// The end-to-end tests share the engine and the machine's two cores: one at a time.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Stack {
    dir: tempfile::TempDir,
    https_port: i64,
    project: String,
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
        let table = config.parse::<toml::Table>().unwrap();
        let https_port = table
            .get("ports")
            .and_then(|p| p.get("https")?.as_integer())
            .unwrap_or(443);
        let project = table
            .get("project")
            .and_then(|p| p.as_str())
            .unwrap_or("stackctl")
            .to_owned();
        Self {
            dir,
            https_port,
            project,
        }
    }

    /// A container's name on the engine: its plain name behind the project's (but the
    /// default project's).
    fn on_engine(&self, plain: &str) -> String {
        if self.project == "stackctl" {
            plain.to_owned()
        } else {
            format!("{}-{plain}", self.project)
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(stackctl())
            .current_dir(self.path())
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap()
    }

    /// `backup schedule ARGS` for `secs` seconds, then SIGTERM: its log, once it exited 0.
    fn schedule(&self, args: &[&str], env: &[(&str, &str)], secs: u64) -> String {
        let scheduler = Command::new(stackctl())
            .current_dir(self.path())
            .args(["backup", "schedule"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(secs));
        signal(&scheduler, "-TERM");
        let out = scheduler.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
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

    /// Where the edge answers, for load generators.
    fn base(&self) -> String {
        format!("https://localhost:{}", self.https_port)
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

    /// Registers a user through the edge and logs in: its access token.
    fn signed_up(&self, email: &str, phone: &str, password: &str) -> String {
        let registered = self.https(
            "POST",
            "/a/auth/register",
            None,
            Some(&json!({"email": email, "phone": phone, "password": password})),
        );
        assert_eq!(registered.status, 201, "{}", registered.body);
        let login = self.https(
            "POST",
            "/a/auth/login",
            None,
            Some(&json!({"identifier": email, "password": password})),
        );
        login.body["data"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {}", login.body))
            .to_owned()
    }

    /// Creates a payment of `amount` USD through the edge: its reference.
    fn paid(&self, token: &str, amount: &str) -> String {
        let reply = self.https(
            "POST",
            "/b/payments",
            Some(token),
            Some(&json!({"amount": amount, "currency": "USD", "paymentMethod": "CARD", "customerPhone": "+254712345678"})),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["data"]["payment"]["reference"]
            .as_str()
            .unwrap()
            .to_owned()
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

/// `stackctl history`'s entries, oldest first.
fn history(stack: &Stack) -> Vec<Value> {
    serde_json::from_str(&stack.ok(&["history", "--json"])).unwrap()
}

/// `docker ARGS`' output, once it succeeded.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A tag moved to another image, until dropped (passed or not: the other tests build on it).
struct Retagged {
    tag: String,
    image: String,
}

impl Retagged {
    /// `tag` on an image built `FROM image` with `dockerfile` after it.
    fn build(image: &str, dockerfile: &str, tag: &str) -> Self {
        build_from(image, dockerfile, tag);
        Self {
            tag: tag.to_owned(),
            image: image.to_owned(),
        }
    }
}

impl Drop for Retagged {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["tag", &self.image, &self.tag])
            .status();
    }
}

/// Builds an image `FROM from` with `dockerfile` after it, tagged `tag`.
fn build_from(from: &str, dockerfile: &str, tag: &str) {
    let mut build = Command::new("docker")
        .args(["build", "--quiet", "--tag", tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut build.stdin.take().unwrap(),
        format!("FROM {from}\n{dockerfile}\n").as_bytes(),
    )
    .unwrap();
    assert!(build.wait().unwrap().success());
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

/// stackctl in a real terminal of 80×24 (a tmux session of its own), then `exit status N`.
struct Terminal {
    session: String,
}

impl Terminal {
    fn start(stack: &Stack, args: &str) -> Self {
        // A server of its own each: a new one on the socket of one shutting down can fail.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("stackctl-e2e-{}-{n}", std::process::id());
        let shell = format!(
            "cd {} && {} {args}; echo \"exit status $?\"; sleep 600",
            stack.path().display(),
            stackctl().display()
        );
        let term = Self { session };
        term.tmux(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            &term.session,
            &shell,
        ]);
        term
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.session])
            .args(args)
            .output()
            .expect("tmux is installed by setup/setup.sh");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses `keys` (tmux key names: `C-c`, `Enter`), waits `secs` and returns the screen.
    fn screen_after(&self, keys: &[&str], secs: u64) -> String {
        for key in keys {
            self.tmux(&["send-keys", "-t", &self.session, key]);
        }
        std::thread::sleep(std::time::Duration::from_secs(secs));
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Types `line` as it is, then Enter; waits `secs` and returns the screen.
    fn screen_after_line(&self, line: &str, secs: u64) -> String {
        self.tmux(&["send-keys", "-t", &self.session, "-l", line]);
        self.screen_after(&["Enter"], secs)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.session, "kill-server"])
            .output();
    }
}

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
    // The instances' metrics are served on a port of their own, which the edge never routes to.
    for path in ["/a/metrics", "/b/metrics"] {
        let res = stack.https("GET", path, None, None);
        assert_eq!(res.status, 404, "{path}: {}", res.body);
        assert_eq!(res.body["message"], "Route not found", "{path}");
    }
    // `status` counts what the edge answered: the 12 health checks of each instance pair above
    // at least, each instance's share, and the instances' own figures.
    let status: Value = serde_json::from_str(&stack.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["schema"], 1);
    for (i, service) in ["auth", "payments"].into_iter().enumerate() {
        let s = &status["services"][i];
        assert_eq!(s["service"], service);
        assert!(s["traffic"]["requests"].as_u64().unwrap() >= 14, "{s}");
        assert!(s["traffic"]["per_sec"].as_f64().unwrap() > 0.0, "{s}");
        assert_eq!(s["traffic"]["share_5xx"], 0.0, "{s}");
        assert_eq!(s["instances"].as_array().unwrap().len(), 2, "{s}");
        for instance in s["instances"].as_array().unwrap() {
            assert_eq!(instance["health"], "healthy", "{instance}");
            assert!(
                instance["traffic"]["requests"].as_u64().unwrap() >= 6,
                "{instance}"
            );
            assert!(
                instance["traffic"]["p99_ms"].as_f64().is_some(),
                "{instance}"
            );
            assert!(
                instance["metrics"]["pool_max"].as_u64().unwrap() > 0,
                "{instance}"
            );
            assert!(
                instance["metrics"]["memory_bytes"].as_u64().unwrap() > 1_000_000,
                "{instance}"
            );
        }
    }
    assert!(status["edge"]["connections"].as_u64().is_some(), "{status}");
    for db in status["databases"].as_array().unwrap() {
        assert_eq!(db["health"], "healthy", "{db}");
        assert!(db["size_bytes"].as_u64().unwrap() > 1_000_000, "{db}");
        assert!(db["connections"].as_u64().unwrap() > 0, "{db}");
    }
    assert!(status["certificate"]["days_left"].as_i64().unwrap() > 300);
    let screen = stack.ok(&["status"]);
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("auth ") && l.contains("(all)")),
        "{screen}"
    );
    // In a real terminal: status --watch redraws until Ctrl-C and gives the screen back; psql
    // takes what is typed.
    let term = Terminal::start(&stack, "status --watch --every 1");
    let screen = term.screen_after(&[], 4);
    assert!(screen.contains("SERVICE  INSTANCE"), "{screen}");
    assert!(screen.contains("every 1 s, Ctrl-C to quit"), "{screen}");
    let screen = term.screen_after(&["C-c"], 2);
    assert!(screen.contains("exit status 0"), "{screen}");
    assert!(
        !screen.contains("SERVICE"),
        "the alternate screen is gone: {screen}"
    );
    drop(term);
    let term = Terminal::start(&stack, "psql payments");
    let screen = term.screen_after(&[], 3);
    assert!(screen.contains("payments=#"), "{screen}");
    // `\g`, not a semicolon: tmux takes a final `;` for the end of its own command.
    let screen = term.screen_after_line("SELECT 6 * 7 AS answer \\g", 2);
    assert!(
        screen.contains("answer") && screen.contains(" 42"),
        "{screen}"
    );
    let screen = term.screen_after_line("\\q", 2);
    assert!(screen.contains("exit status 0"), "{screen}");
    drop(term);
    // Without a terminal, psql reads standard input.
    let mut piped = Command::new(stackctl())
        .current_dir(stack.path())
        .args(["psql", "payments"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut piped.stdin.take().unwrap(),
        b"SELECT count(*) AS made FROM payments;\n",
    )
    .unwrap();
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("made") && text.lines().any(|l| l.trim() == "1"),
        "{text}"
    );
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
    // Log-ins have a stricter limit of their own: 10/min with a burst of 5.
    let logins: Vec<Reply> = (0..10)
        .map(|_| {
            stack.https(
                "POST",
                "/a/auth/login",
                None,
                Some(&json!({"identifier": "+256772000999", "password": "not-the-password"})),
            )
        })
        .collect();
    // (The service itself locks the identifier after five failures: its 429 says so.)
    let limited = logins
        .iter()
        .find(|r| r.status == 429 && r.body["message"] == "Too many log-in attempts, slow down")
        .expect("10/min with a burst of 5 limits 10 quick log-ins");
    assert!(
        limited.headers.contains("retry-after: 6"),
        "{}",
        limited.headers
    );
    assert!(logins.iter().all(|r| r.status == 401 || r.status == 429));
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
    // `status` shows the share of the service's requests the edge limited.
    let status: Value = serde_json::from_str(&stack.ok(&["status", "--json"])).unwrap();
    let limited_share = status["services"][0]["traffic"]["share_429"]
        .as_f64()
        .unwrap();
    assert!(limited_share > 0.0, "{}", status["services"][0]);

    // A setting of one service recreates that service's containers only, and `events` follows
    // it: the instances replaced and their health, the up itself, none of the probes.
    std::fs::write(
        stack.path().join("stack.toml"),
        CONFIG.replace("bcrypt_cost = 10", "bcrypt_cost = 11"),
    )
    .unwrap();
    let follower = Command::new(stackctl())
        .current_dir(stack.path())
        .args(["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    stack.ok(&["up"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    signal(&follower, "-INT");
    let followed = follower.wait_with_output().unwrap();
    assert!(followed.status.success(), "{followed:?}");
    let events: Vec<Value> = String::from_utf8_lossy(&followed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen = |subject: &str, action: &str| {
        events
            .iter()
            .any(|e| e["subject"].as_str().unwrap().starts_with(subject) && e["action"] == action)
    };
    for instance in ["app_a1", "app_a2"] {
        for action in ["destroy", "create", "start", "health_status: healthy"] {
            assert!(seen(instance, action), "{instance} {action}: {events:#?}");
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e["source"] == "stackctl" && e["action"] == "up: ok"),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["action"].as_str().unwrap().contains("exec")),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["subject"] == "auth-db"),
        "{events:#?}"
    );
    let after = ids(&stack);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        if name.starts_with("app_a") {
            assert_ne!(old, new, "{name} runs with the new cost");
        } else {
            assert_eq!(old, new, "{name} is untouched by an auth setting");
        }
    }

    // Each change of what runs is in the history, with what ran after it: the first down, the up
    // refused for its port, the first up, the rate limit's edge change and the new bcrypt cost;
    // not the up that changed nothing.
    let before_down = history(&stack);
    let commands: Vec<&str> = before_down
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["down --volumes --yes", "up", "up", "up", "up"]);
    assert!(
        before_down[1]["error"].is_string(),
        "the refused up is recorded"
    );
    let last = &before_down[before_down.len() - 1];
    assert_eq!(last["error"], Value::Null);
    assert_eq!(last["release"]["instances"]["auth"], 2);
    assert!(
        last["release"]["images"]["auth"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_ne!(
        before_down[before_down.len() - 2]["release"]["config_hash"],
        last["release"]["config_hash"],
        "the bcrypt cost changed the configuration"
    );

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
    let after_up = history(&stack);
    assert_eq!(
        after_up[..before_down.len()],
        before_down[..],
        "down keeps the history"
    );
    let commands: Vec<&str> = after_up[before_down.len()..]
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        ["down", "up"],
        "down and the up after it are changes"
    );
    assert_eq!(
        after_up[before_down.len()]["release"]["instances"],
        json!({})
    );

    // prune deletes an image of the stack's repositories that no release ran, and keeps those
    // the containers and the recorded releases use.
    let images = |repository: &str| -> BTreeSet<String> {
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Tag}}", repository])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let running = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &stack.on_engine("app_a1"),
    ]);
    build_from(&running, "LABEL stale=yes", "stackctl/auth-svc:stale");
    let dry = stack.run(&["prune", "--dry-run"]);
    let said = String::from_utf8_lossy(&dry.stderr);
    assert!(
        said.contains("would delete image stackctl/auth-svc:stale"),
        "{said}"
    );
    assert!(!said.contains(&running), "{said}");
    assert!(
        images("stackctl/auth-svc").contains("stale"),
        "a dry run deletes nothing"
    );
    stack.ok(&["prune"]);
    let left = images("stackctl/auth-svc");
    assert!(!left.contains("stale"), "{left:?}");
    assert!(
        left.contains(running.rsplit(':').next().unwrap()),
        "{left:?}"
    );

    stack.ok(&["down", "--volumes", "--yes"]);
    assert!(stack.containers().is_empty());
    let (volumes, networks) = engine_leftovers();
    assert!(
        !volumes.iter().any(|v| v.starts_with("e2e_")),
        "{volumes:?}"
    );
    assert!(
        !networks
            .iter()
            .any(|n| *n == stack.on_engine("app-network")),
        "{networks:?}"
    );
}

/// A stack for the tests under load: its own project and ports (`PREFIX080`, `PREFIX443`,
/// `PREFIX432`, `PREFIX433`), bcrypt at its cheapest, the rate limit out of the way.
fn loaded_config(project: &str, prefix: u16) -> String {
    format!(
        "project = \"{project}\"\n[ports]\nhttp = {prefix}080\nhttps = {prefix}443\nauth_db = {prefix}432\npayments_db = {prefix}433\n[services.auth]\nbcrypt_cost = 10\n[nginx]\nrate_limit_per_minute = 600000\nrate_limit_burst = 10000\nlogin_rate_limit_per_minute = 600000\nlogin_rate_limit_burst = 10000\n"
    )
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

/// The instances the routes file gives a service (`auth`, `payments`).
fn routed(stack: &Stack, service: &str) -> BTreeSet<String> {
    let routes = std::fs::read_to_string(stack.path().join(".stackctl/nginx/routes")).unwrap();
    routes
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{service} ")))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|entry| entry.split(':').next())
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
    let stack = Stack::new(&loaded_config("e2e-scale", 19));
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
    let token = stack.signed_up("scale@example.com", "+256772555001", "scale-password");
    let reference = stack.paid(&token, "99.00");

    // The plan alone changes nothing.
    let plan = stack.ok(&["scale", "auth", "3", "--dry-run"]);
    assert!(plan.contains("start app_a3"), "{plan}");
    assert!(
        plan.contains("route auth to app_a1, app_a2, app_a3"),
        "{plan}"
    );
    assert_eq!(running(&stack, "app_a"), set(&["app_a1", "app_a2"]));

    // Three kinds of client at once: a connection per request, reused HTTP/1.1 connections,
    // and HTTP/2.
    let load = Load::start(&stack.base(), &token, &reference, "close", 0);
    let kept_alive = Load::start(&stack.base(), &token, &reference, "keep-alive", 1);
    let reads = H2Load::start(
        &stack.base(),
        &token,
        &[
            format!("/b/payments/{reference}"),
            "/a/health".to_owned(),
            "/b/payments?limit=5".to_owned(),
        ],
        None,
    );
    let body = stack.path().join("payment.json");
    std::fs::write(
        &body,
        r#"{"amount":"3.00","currency":"KES","paymentMethod":"MOBILE_MONEY","customerPhone":"+254712345678"}"#,
    )
    .unwrap();
    let writes = H2Load::start(
        &stack.base(),
        &token,
        &["/b/payments".to_owned()],
        Some(&body),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));

    stack.ok(&["scale", "auth", "3"]);
    assert_eq!(
        running(&stack, "app_a"),
        set(&["app_a1", "app_a2", "app_a3"])
    );
    assert_eq!(routed(&stack, "auth"), running(&stack, "app_a"));
    assert!(
        answering(&stack, "service_a", 12).contains("app_a3"),
        "the new instance serves"
    );

    stack.ok(&["scale", "auth", "1"]);
    assert_eq!(running(&stack, "app_a"), set(&["app_a1"]));
    assert_eq!(routed(&stack, "auth"), set(&["app_a1"]));
    assert_eq!(
        answering(&stack, "service_a", 8),
        set(&["app_a1"]),
        "removed instances get none"
    );
    stack.ok(&["scale", "auth", "2"]);
    assert_eq!(routed(&stack, "auth"), set(&["app_a1", "app_a2"]));

    stack.ok(&["scale", "payments", "1"]);
    assert_eq!(running(&stack, "app_b"), set(&["app_b1"]));
    stack.ok(&["scale", "payments", "3"]);
    assert_eq!(
        running(&stack, "app_b"),
        set(&["app_b1", "app_b2", "app_b3"])
    );
    assert_eq!(routed(&stack, "payments"), running(&stack, "app_b"));

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

    // A later `up` keeps the scaled counts, and changes no route.
    stack.ok(&["up"]);
    assert_eq!(
        running(&stack, "app_b"),
        set(&["app_b1", "app_b2", "app_b3"])
    );

    // A site nginx rejects: `up` fails, the old configuration keeps serving and nothing changes.
    let site_path = stack.path().join(".stackctl/nginx/stack.conf");
    let site_before = std::fs::read_to_string(&site_path).unwrap();
    let broken = std::fs::read_to_string(source_dir().join("templates/nginx/site.conf.j2"))
        .unwrap()
        .replace("keepalive 32;", "keepalive 32;\n    no_such_directive on;");
    std::fs::write(stack.path().join("broken.j2"), broken).unwrap();
    let out = stack.run_with(&["up"], &[("STACKCTL_NGINX_SITE_TEMPLATE", "broken.j2")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nginx rejected") && stderr.contains("no_such_directive"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&site_path).unwrap(), site_before);
    assert_eq!(
        answering(&stack, "service_a", 12),
        set(&["app_a1", "app_a2"])
    );

    std::thread::sleep(std::time::Duration::from_secs(2));
    let (one_per_request, reused) = (load.finish(), kept_alive.finish());
    let h2_counts = [reads.finish(), writes.finish()];
    assert_all_served(&one_per_request);
    assert_all_served(&reused);
    for h2 in h2_counts {
        assert!(h2.runs >= 10 && h2.requests > 1000, "{h2:?}");
        assert!(h2.all_served(), "{h2:?}");
    }
}

/// `psql -Atc` in a database container.
fn sql(container: &str, user: &str, db: &str, query: &str) -> String {
    let out = Command::new("docker")
        .args([
            "exec", "-u", "postgres", container, "psql", "-U", user, "-d", db, "-Atc", query,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every row of a database as sorted INSERT statements: equal row sets compare equal.
fn rows(container: &str, user: &str, db: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "exec", "-u", "postgres", container, "pg_dump", "-U", user, "-d", db,
        ])
        .args(["--data-only", "--inserts", "--rows-per-insert=1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("INSERT"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn auth_rows(stack: &Stack) -> Vec<String> {
    rows(&stack.on_engine("auth-db"), "auth", "nest")
}

fn payment_rows(stack: &Stack) -> Vec<String> {
    rows(&stack.on_engine("payments-db"), "payments", "payments")
}

/// The backup files (not checksums) under a folder.
fn backup_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(backup_files(&path));
        } else if !path.to_string_lossy().ends_with(".sha256") {
            found.insert(path);
        }
    }
    found
}

fn with_checksum(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let digest = hex::encode(<Sha256 as sha2::Digest>::digest(bytes));
    std::fs::write(
        format!("{}.sha256", path.display()),
        format!("{digest}  x\n"),
    )
    .unwrap();
}

/// A tmpfs mounted for the test (read-only, or a few KiB), unmounted when dropped.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (as setup/test.sh runs)"
        );
        Self(dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn backup_and_restore_round_trip() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = Stack::new(&loaded_config("e2e-backup", 20));
    stack.ok(&["down", "--volumes", "--yes"]);
    stack.ok(&["up"]);

    let register = |email: &str, phone: &str| {
        let reply = stack.https(
            "POST",
            "/a/auth/register",
            None,
            Some(&json!({"email": email, "phone": phone, "password": "backup-password"})),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
    };
    let login = |email: &str| {
        stack.https(
            "POST",
            "/a/auth/login",
            None,
            Some(&json!({"identifier": email, "password": "backup-password"})),
        )
    };
    let pay = |token: &str| stack.paid(token, "42.00");
    register("kept@example.com", "+256772555101");
    let logged_in = login("kept@example.com");
    let token = logged_in.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh_at_backup = logged_in.body["data"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = pay(&token);
    let patched = stack.https(
        "PATCH",
        &format!("/b/payments/{kept}/status"),
        Some(&token),
        Some(&json!({"status": "PENDING"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);

    stack.ok(&["backup", "all"]);
    let backups = stack.path().join("backups");
    let files = backup_files(&backups);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let listed: Value = serde_json::from_str(&stack.ok(&["backup", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["checksum"] == "verified"),
        "{listed}"
    );
    let (auth_at_backup, payments_at_backup) = (auth_rows(&stack), payment_rows(&stack));

    // Writes, updates and deletes after the backup.
    register("late@example.com", "+256772555102");
    let late = pay(&token);
    let patched = stack.https(
        "PATCH",
        &format!("/b/payments/{kept}/status"),
        Some(&token),
        Some(&json!({"status": "SUCCESS"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    sql(
        &stack.on_engine("auth-db"),
        "auth",
        "nest",
        "DELETE FROM refresh_tokens",
    );
    assert_ne!(auth_rows(&stack), auth_at_backup);
    assert_ne!(payment_rows(&stack), payments_at_backup);

    // Damaged files are refused before anything is touched.
    let auth_backup = files
        .iter()
        .find(|f| f.to_string_lossy().contains("/auth/"))
        .unwrap();
    let good = std::fs::read(auth_backup).unwrap();
    let bad = tempfile::tempdir().unwrap();
    let truncated = bad.path().join("truncated.sql.gz");
    with_checksum(&truncated, &good[..good.len() / 2]);
    let flipped = bad.path().join("flipped.sql.gz");
    let mut damaged = good.clone();
    damaged[good.len() / 2] ^= 0x01;
    std::fs::write(&flipped, &damaged).unwrap();
    std::fs::copy(
        format!("{}.sha256", auth_backup.display()),
        format!("{}.sha256", flipped.display()),
    )
    .unwrap();
    let plain = bad.path().join("plain.sql.gz");
    with_checksum(&plain, b"DROP TABLE users;\n");
    let (auth_now, ids_now) = (auth_rows(&stack), ids(&stack));
    for (file, why) in [
        (&truncated, "not a complete gzip stream"),
        (&flipped, "does not match its checksum"),
        (&plain, "not a complete gzip stream"),
    ] {
        let out = stack.run(&["restore", "auth", file.to_str().unwrap(), "--yes"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{}: {stderr}", file.display());
        assert_eq!(
            auth_rows(&stack),
            auth_now,
            "{} changed nothing",
            file.display()
        );
        assert_eq!(ids(&stack), ids_now, "no container was touched");
    }

    // Back to the backup point, exactly, and the API works with it.
    stack.ok(&["restore", "auth", "latest", "--yes"]);
    stack.ok(&["restore", "payments", "latest", "--yes"]);
    // Every login the backup brought back is revoked with it; the rest is the backup exactly.
    assert_eq!(
        sql(
            &stack.on_engine("auth-db"),
            "auth",
            "nest",
            "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"
        )
        .trim(),
        "0"
    );
    let refreshed = stack.https(
        "POST",
        "/a/auth/refresh",
        None,
        Some(&json!({"refreshToken": refresh_at_backup})),
    );
    assert_eq!(refreshed.status, 401, "{}", refreshed.body);
    let unrevoked = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| !r.contains("refresh_tokens"))
            .collect()
    };
    assert_eq!(
        unrevoked(auth_rows(&stack)),
        unrevoked(auth_at_backup.clone())
    );
    assert_eq!(payment_rows(&stack), payments_at_backup);
    assert_eq!(login("kept@example.com").status, 200);
    assert_eq!(login("late@example.com").status, 401);
    let got = stack.https("GET", &format!("/b/payments/{kept}"), Some(&token), None);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["data"]["payment"]["state"], "PENDING");
    let gone = stack.https("GET", &format!("/b/payments/{late}"), Some(&token), None);
    assert_eq!(gone.status, 404);
    // Each restore kept a safety backup of what it replaced.
    assert_eq!(backup_files(&backups).len(), 4);

    // A backup taken while a writer inserts restores to a consistent state.
    let load = Load::start(&stack.base(), &token, &kept, "close", 0);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before = backup_files(&backups);
    stack.ok(&["backup", "payments"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let counters = load.finish();
    assert_eq!(counters["failed"], 0, "{counters:?}");
    let during = backup_files(&backups)
        .difference(&before)
        .next()
        .unwrap()
        .clone();
    stack.ok(&["restore", "payments", during.to_str().unwrap(), "--yes"]);
    let dangling = sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "SELECT count(*) FROM payment_transactions t LEFT JOIN payments p ON p.id = t.payment_id WHERE p.id IS NULL",
    );
    assert_eq!(dangling.trim(), "0");
    let without_history = sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM payment_transactions t WHERE t.payment_id = p.id)",
    );
    assert_eq!(
        without_history.trim(),
        "0",
        "every payment has its creation row"
    );
    assert!(
        sql(
            &stack.on_engine("payments-db"),
            "payments",
            "payments",
            "SELECT count(*) FROM payments"
        )
        .trim()
        .parse::<u64>()
        .unwrap()
            > 10
    );

    // A read-only or full destination fails clearly and leaves nothing behind.
    let read_only = Mount::new("ro");
    let out = stack.run_with(
        &["backup", "auth"],
        &[("STACKCTL_BACKUP_DIR", read_only.0.path().to_str().unwrap())],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let full = Mount::new("size=4k");
    let out = stack.run_with(
        &["backup", "payments"],
        &[("STACKCTL_BACKUP_DIR", full.0.path().to_str().unwrap())],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("No space left") && stderr.contains("nothing was kept"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(full.0.path().join("payments"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // `doctor` names the failed attempt, one line, and exits 1; auth's last attempt (the
    // read-only folder) failed too.
    let out = stack.run_with(&["doctor"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert!(
        lines[0].starts_with("auth: the last backup failed at ")
            && lines[0].contains("Read-only file system"),
        "{said}"
    );
    assert!(
        lines[1].starts_with("payments: the last backup failed at ")
            && lines[1].contains("No space left"),
        "{said}"
    );

    // The scheduler makes backups every few seconds and stops cleanly on SIGTERM.
    let before = backup_files(&backups).len();
    // A run takes a few seconds: a dump and a physical backup of each database.
    let log = stack.schedule(&["--cron", "*/3 * * * * *"], &[], 20);
    assert!(
        log.contains("backup run done") && log.contains("scheduler stopped"),
        "{log}"
    );
    let after = backup_files(&backups);
    assert!(
        after.len() >= before + 4,
        "two runs or more, two files each: {log}"
    );
    assert!(
        after
            .iter()
            .all(|f| !f.to_string_lossy().ends_with(".partial")),
        "{after:?}"
    );
    // The scheduled runs succeeded: nothing left to report.
    let out = stack.run_with(&["doctor", "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(findings, serde_json::json!([]));

    // Scheduled runs that cannot write (a read-only folder) alert a webhook: each failed run
    // once, and that there is no backup there, once; the receiver refuses the first POST and
    // gets it again.
    let receiver = support::Receiver::start();
    let log = stack.schedule(
        &["--cron", "*/3 * * * * *"],
        &[
            ("STACKCTL_BACKUP_DIR", read_only.0.path().to_str().unwrap()),
            ("STACKCTL_ALERTS_WEBHOOK", &receiver.url),
        ],
        8,
    );
    assert!(
        log.contains("not delivered") && log.contains("again in 2 s"),
        "{log}"
    );
    let bodies = receiver.bodies();
    let of = |event: &str, subject: &str| {
        bodies
            .iter()
            .filter(|b| b["event"] == event && b["subject"] == subject)
            .count()
    };
    assert_eq!(
        of("no_backup", "auth") + of("no_backup", "payments"),
        3,
        "one each at start, the refused one sent again: {bodies:?}"
    );
    assert!(
        of("backup_failed", "auth") >= 2,
        "one per failed run: {bodies:?}"
    );
    assert!(
        bodies.iter().all(|b| b["stack"] == "e2e-backup"
            && b["message"].as_str().is_some_and(|m| !m.is_empty())
            && b["host"].as_str().is_some_and(|h| !h.is_empty())),
        "{bodies:?}"
    );
    assert!(
        !log.contains(&receiver.url),
        "the webhook's URL is not logged: {log}"
    );

    // A restore drill proves the latest payments backup: replayed into a throwaway container,
    // checked, removed, and recorded.
    let out = stack.run_with(&["backup", "verify", "payments"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n{progress}");
    for check in [
        "payments replay     ok",
        "payments migrations ok     all ",
        "payments tables     ok     _sqlx_migrations ",
        "payments indexes    ok",
    ] {
        assert!(said.contains(check), "{check}:\n{said}");
    }
    assert!(
        said.contains("(live "),
        "row counts beside the live ones: {said}"
    );
    assert!(progress.contains("proven in"), "{progress}");
    let listed: Value = serde_json::from_str(&stack.ok(&["backup", "list", "--json"])).unwrap();
    let newest = listed
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["database"] == "payments" && r["kind"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(newest["drill"]["ok"], true, "{newest}");
    let drills = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=e2e-backup_drill"])
        .output()
        .unwrap();
    assert!(drills.stdout.is_empty(), "the drill's container is gone");

    // The schedule runs drills too (here every two seconds, and no backup).
    let log = stack.schedule(
        &["--cron", "0 0 0 1 1 *", "--drill-cron", "*/2 * * * * *"],
        &[],
        12,
    );
    assert!(
        log.contains("next restore drill at")
            && log.contains("restore drill done: every latest backup restores"),
        "{log}"
    );

    // A backup whose migrations table lost its rows (its checksum rewritten to match) replays
    // but fails the drill; doctor reports it.
    let good = stack.path().join(newest["file"].as_str().unwrap());
    let damaged = good.with_file_name("payments_20200101_000000.sql.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&good).unwrap()),
        &mut text,
    )
    .unwrap();
    let mut kept = Vec::new();
    let mut in_migrations = false;
    for line in text.lines() {
        if line.starts_with("COPY public._sqlx_migrations ") {
            in_migrations = true;
        } else if line == "\\." {
            in_migrations = false;
        } else if in_migrations {
            continue;
        }
        kept.push(line);
    }
    assert!(
        kept.len() < text.lines().count(),
        "the dump has migrations rows"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, (kept.join("\n") + "\n").as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&damaged, &bytes).unwrap();
    std::fs::write(
        damaged.with_extension("gz.sha256"),
        format!(
            "{}  payments_20200101_000000.sql.gz\n",
            hex::encode(<Sha256 as sha2::Digest>::digest(&bytes))
        ),
    )
    .unwrap();
    let out = stack.run_with(&["backup", "verify", damaged.to_str().unwrap()], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("payments migrations FAILED missing "),
        "{said}"
    );
    assert!(err.contains("the drill failed for payments"), "{err}");
    let out = stack.run_with(&["doctor"], &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("payments: the last restore drill failed at ")
            && said.contains("payments_20200101_000000.sql.gz"),
        "{said}"
    );
}

/// What identifies the payments table's contents and its constraints, cheaply on many rows.
fn payments_fingerprint(stack: &Stack) -> String {
    sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "SELECT (SELECT count(*) FROM payments) || ' ' || \
         (SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM payments) || ' ' || \
         (SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'payments'::regclass)",
    )
    .trim()
    .to_owned()
}

/// Sessions of an interrupted restore still in the payments database.
fn restoring_sessions(stack: &Stack) -> u32 {
    sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stackctl-restore'",
    )
    .trim()
    .parse()
    .unwrap()
}

/// A `stackctl restore payments latest --yes` that gets `sig` once it has replayed for a while;
/// returns its exit status and everything it wrote to stderr.
fn restore_interrupted(stack: &Stack, sig: &str) -> (std::process::ExitStatus, String) {
    interrupted(
        stack,
        &["restore", "payments", "latest", "--yes"],
        "==> restoring payments",
        2000,
        sig,
    )
}

/// `stackctl ARGS` that gets `sig` `after_ms` after it printed a line holding `at`; returns its
/// exit status and everything it wrote to stderr.
fn interrupted(
    stack: &Stack,
    args: &[&str],
    at: &str,
    after_ms: u64,
    sig: &str,
) -> (std::process::ExitStatus, String) {
    interrupted_when(stack, args, at, &|| true, after_ms, sig)
}

/// Whether pgBackRest takes a backup in `container` at this moment.
fn pgbackrest_backing_up(container: &str) -> bool {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c"])
        .arg("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("pgbackrest backup")
}

/// As [`interrupted`], once `until` holds after the line (asked every 100 ms, for a minute).
fn interrupted_when(
    stack: &Stack,
    args: &[&str],
    at: &str,
    until: &dyn Fn() -> bool,
    after_ms: u64,
    sig: &str,
) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    let mut child = Command::new(stackctl())
        .current_dir(stack.path())
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let at = at.to_owned();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(&at) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("stackctl {args:?} did not reach its step to interrupt"));
    let mut tries = 0;
    while !until() {
        tries += 1;
        assert!(
            tries < 600,
            "stackctl {args:?}: what it waits for never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(after_ms));
    signal(&child, sig);
    let status = child.wait().unwrap();
    (status, reader.join().unwrap())
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn interrupted_restores_and_a_missing_instance_lose_nothing() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = Stack::new(&loaded_config("e2e-restore", 22));
    let started = std::time::Instant::now();
    let mark = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    stack.ok(&["down", "--volumes", "--yes"]);
    stack.ok(&["up"]);
    mark("up");

    // A million payments: a replay of several seconds, long enough to be cut short.
    sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "INSERT INTO payments (id, reference, user_id, amount, currency, payment_method, customer_phone, \
                               customer_email, description, state, created_at, updated_at) \
         SELECT gen_random_uuid(), 'PAY-' || (1764000000000 + i) || '-' || upper(substr(md5(i::text), 1, 10)), \
                ('00000000-0000-4000-8000-' || lpad(to_hex(i % 5000), 12, '0'))::uuid, 12.50, 'USD', 'CARD', \
                '+254712345678', NULL, NULL, 'SUCCESS', now(), now() \
         FROM generate_series(1, 1000000) AS i",
    );
    mark("filled");
    // A backup killed mid-dump leaves nothing that counts, and the next one sweeps it.
    let folder = stack.path().join("backups/payments");
    let mut backup = Command::new(stackctl())
        .current_dir(stack.path())
        .args(["backup", "payments"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial_written = || {
        std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".partial")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    for _ in 0..200 {
        if partial_written() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(partial_written(), "the dump was under way");
    backup.kill().unwrap();
    backup.wait().unwrap();
    let listed: Value = serde_json::from_str(&stack.ok(&["backup", "list", "--json"])).unwrap();
    assert_eq!(listed, json!([]), "a killed backup is no backup");
    stack.ok(&["backup", "payments"]);
    let left: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "one backup and its checksum: {left:?}");
    assert!(left.iter().all(|n| !n.ends_with(".partial")), "{left:?}");
    mark("backed up (the first one killed)");
    let at_backup = payments_fingerprint(&stack);
    sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "DELETE FROM payments WHERE reference < 'PAY-1764000001000'",
    );
    let current = payments_fingerprint(&stack);
    assert_ne!(current, at_backup);

    // Killed outright mid-replay: nothing of the dump is committed, the edge still answers.
    let (status, log) = restore_interrupted(&stack, "-KILL");
    mark("killed restore");
    assert!(!status.success(), "{log}");
    for _ in 0..100 {
        if restoring_sessions(&stack) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        restoring_sessions(&stack),
        0,
        "psql ended when stackctl died"
    );
    assert_eq!(payments_fingerprint(&stack), current, "{log}");
    let down = stack.https("GET", "/health/service_b", None, None);
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["success"], false);
    assert!(down.headers.contains("retry-after: 5"), "{}", down.headers);
    assert_eq!(answering(&stack, "service_a", 4).len(), 2);
    // The next command recovers.
    stack.ok(&["up"]);
    mark("up again");
    assert_eq!(answering(&stack, "service_b", 4).len(), 2);

    // Ctrl-C mid-replay: rolled back, said so, and the instances serve again.
    let (status, log) = restore_interrupted(&stack, "-INT");
    mark("interrupted restore");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("restore interrupted (Ctrl-C); the payments database is as it was and its instances run again"),
        "{log}"
    );
    assert_eq!(payments_fingerprint(&stack), current);
    assert_eq!(answering(&stack, "service_b", 4).len(), 2);

    // Uninterrupted, it is exactly the backup; safety copies are listed apart and never latest.
    stack.ok(&["restore", "payments", "latest", "--yes"]);
    mark("restored");
    assert_eq!(payments_fingerprint(&stack), at_backup);
    let listed: Value = serde_json::from_str(&stack.ok(&["backup", "list", "--json"])).unwrap();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "pre-restore").count(),
        3,
        "{listed}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "backup").count(), 1);
    let out = stack.run(&["restore", "payments", "latest", "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let backups = backup_files(&stack.path().join("backups/payments"));
    let original = backups
        .iter()
        .find(|f| !f.to_string_lossy().contains("pre-restore"))
        .unwrap();
    assert!(
        stderr.contains(&format!("restoring payments from {}", original.display()))
            || stderr.contains(&format!(
                "restoring payments from ./{}",
                original.strip_prefix(stack.path()).unwrap().display()
            )),
        "latest is the backup, not a safety copy: {stderr}"
    );
    assert_eq!(payments_fingerprint(&stack), at_backup);

    // One stopped instance does not keep the edge from starting, and is taken back when it runs.
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    };
    docker(&["stop", &stack.on_engine("app_a2")]);
    docker(&["restart", &stack.on_engine("nginx-proxy")]);
    let healthy = |name: &str| {
        stack
            .containers()
            .iter()
            .any(|c| c["name"] == name && c["health"] == "healthy")
    };
    for _ in 0..60 {
        if healthy("nginx-proxy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(healthy("nginx-proxy"), "the edge started without app_a2");
    assert_eq!(answering(&stack, "service_a", 6), set(&["app_a1"]));
    assert_eq!(answering(&stack, "service_b", 4).len(), 2);
    docker(&["start", &stack.on_engine("app_a2")]);
    let mut back = BTreeSet::new();
    for _ in 0..60 {
        back.extend(answering(&stack, "service_a", 4));
        if back.contains("app_a2") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(back.contains("app_a2"), "app_a2 is routed again: {back:?}");
    mark("a missing instance");
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn the_edge_answers_errors_in_the_envelope_and_owns_the_request_id() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = Stack::new(&loaded_config("e2e-edge", 23));
    stack.ok(&["down", "--volumes", "--yes"]);
    stack.ok(&["up"]);
    let base = format!("https://localhost:{}", stack.https_port);
    let envelope = |reply: &Reply, status: u16| {
        assert_eq!(reply.status, status, "{} {}", reply.headers, reply.body);
        assert_eq!(reply.body["success"], false, "{}", reply.body);
        assert!(reply.body["message"].is_string(), "{}", reply.body);
        let id = reply.body["requestId"].as_str().unwrap();
        assert!(
            reply
                .headers
                .contains(&format!("x-request-id: {}", id.to_lowercase())),
            "{}",
            reply.headers
        );
        assert!(reply.headers.contains("content-type: application/json"));
        assert!(reply.headers.contains("strict-transport-security"));
    };

    let big = format!(
        r#"{{"identifier":"{}","password":"x"}}"#,
        "a".repeat(70 * 1024)
    );
    let too_large = stack.curl(
        &format!("{base}/a/auth/login"),
        &["-H", "Content-Type: application/json", "--data", &big],
    );
    envelope(&too_large, 413);
    let long_uri = stack.curl(&format!("{base}/a/{}", "u".repeat(10_000)), &["--http1.1"]);
    envelope(&long_uri, 414);
    let huge_header = format!("X-Big: {}", "h".repeat(10_000));
    let headers_too_large = stack.curl(
        &format!("{base}/a/health"),
        &["--http1.1", "-H", &huge_header],
    );
    envelope(&headers_too_large, 431);
    let bad = stack.curl(
        &format!("{base}/a/auth/login"),
        &["--http1.1", "-X", "POST", "-H", "Content-Length: nope"],
    );
    envelope(&bad, 400);

    // A forged id cannot add keys to the JSON; an oversized one gets a new id, not a 502.
    let forged = r#"x","success":true,"a":""#;
    let reply = stack.curl(
        &format!("{base}/nope"),
        &["-H", &format!("X-Request-Id: {forged}")],
    );
    envelope(&reply, 404);
    assert_ne!(reply.body["requestId"], forged);
    let oversized = format!("X-Request-Id: {}", "i".repeat(6000));
    let reply = stack.curl(&format!("{base}/a/health"), &["-H", &oversized]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers.matches("x-request-id:").count(),
        1,
        "{}",
        reply.headers
    );
    assert!(!reply.headers.contains("iiiiiiii"));
    // A good one is kept; the service got the edge's id, and the access log has the same.
    let reply = stack.curl(
        &format!("{base}/a/nope"),
        &["-H", "X-Request-Id: trace-e2e-7"],
    );
    envelope(&reply, 404);
    assert_eq!(reply.body["requestId"], "trace-e2e-7");
    let reply = stack.curl(
        &format!("{base}/a/nope"),
        &["-H", &format!("X-Request-Id: {forged}")],
    );
    envelope(&reply, 404);
    let made = reply.body["requestId"].as_str().unwrap().to_owned();
    assert_ne!(made, forged);
    let nginx_log = stack.ok(&["logs", "nginx", "--tail", "50"]);
    for id in ["trace-e2e-7", made.as_str()] {
        assert!(
            nginx_log.contains(&format!(r#""request_id":"{id}""#)),
            "{id}: {nginx_log}"
        );
    }

    // Least privilege: each service connects as a role that owns its schema and nothing more.
    for (plain, superuser, db, role) in [
        ("auth-db", "auth", "nest", "auth_app"),
        ("payments-db", "payments", "payments", "payments_app"),
    ] {
        let container = &*stack.on_engine(plain);
        let query = |q: &str| sql(container, superuser, db, q).trim().to_owned();
        assert_eq!(
            query(&format!(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = '{role}'"
            )),
            "f"
        );
        assert_eq!(
            query("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"),
            role
        );
        assert_eq!(
            query(
                "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ),
            role
        );
        let out = Command::new("docker")
            .args([
                "exec", "-u", "postgres", container, "psql", "-U", role, "-d", db,
            ])
            .args(["-c", "COPY (SELECT 1) TO PROGRAM 'id'"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("must be superuser"),
            "{out:?}"
        );
    }
    // Every container: read-only root, no new privileges, capabilities dropped, limits.
    for name in ALL {
        let out = Command::new("docker")
            .args(["inspect", "-f"])
            .arg(
                "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} \
                 {{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}} {{.HostConfig.CpuShares}}",
            )
            .arg(stack.on_engine(name))
            .output()
            .unwrap();
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields[0], "true", "{name}: {seen}");
        assert!(
            fields[1].parse::<u64>().unwrap() >= 64 << 20,
            "{name}: {seen}"
        );
        assert_eq!(fields[2], "512", "{name}: {seen}");
        assert_eq!(fields[3], r#"["ALL"]"#, "{name}: {seen}");
        assert_eq!(fields[4], r#"["no-new-privileges"]"#, "{name}: {seen}");
        let shares = if name.starts_with("app_a") {
            "512"
        } else {
            "0"
        };
        assert_eq!(fields[5], shares, "{name}: {seen}");
    }

    // With no instance of a service running, the edge answers 503 with Retry-After.
    let stop = Command::new("docker")
        .args([
            "stop",
            &stack.on_engine("app_b1"),
            &stack.on_engine("app_b2"),
        ])
        .output()
        .unwrap();
    assert!(stop.status.success());
    // The edge notices within a second that their names no longer resolve.
    std::thread::sleep(std::time::Duration::from_secs(2));
    for path in ["/b/payments/PAY-1", "/health/service_b"] {
        let reply = stack.curl(&format!("{base}{path}"), &[]);
        envelope(&reply, 503);
        assert!(
            reply.headers.contains("retry-after: 5"),
            "{}",
            reply.headers
        );
    }
    assert_eq!(
        stack.https("GET", "/health/service_a", None, None).status,
        200
    );
}

/// The references of the payments the payments database holds.
fn references(stack: &Stack) -> BTreeSet<String> {
    sql(
        &stack.on_engine("payments-db"),
        "payments",
        "payments",
        "SELECT reference FROM payments",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// A payment made through the edge, and when its 201 came back.
struct Acked {
    reference: String,
    at: chrono::DateTime<chrono::Utc>,
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn point_in_time_recovery_after_losing_the_database_and_its_volume() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    const ARCHIVE_TIMEOUT_SECS: i64 = 2;
    let offsite = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[backup]\narchive_timeout_secs = {ARCHIVE_TIMEOUT_SECS}\ncopy_to = \"{}\"\n",
        loaded_config("e2e-pitr", 24),
        offsite.path().display()
    );
    let stack = Stack::new(&config);
    stack.ok(&["down", "--volumes", "--yes"]);
    let up = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(up.status.success(), "{said}");
    assert!(
        said.contains(
            "payments database: WAL archiving on, first full physical backup taken (archive, copy)"
        ),
        "{said}"
    );

    let token = stack.signed_up("pitr@example.com", "+256772555301", "pitr-password");
    let pay = |stack: &Stack| -> Option<Acked> {
        let reply = stack.https(
            "POST",
            "/b/payments",
            Some(&token),
            Some(&json!({"amount": "7.00", "currency": "USD", "paymentMethod": "CARD", "customerPhone": "+254712345678"})),
        );
        (reply.status == 201).then(|| Acked {
            reference: reply.body["data"]["payment"]["reference"]
                .as_str()
                .unwrap()
                .to_owned(),
            at: chrono::Utc::now(),
        })
    };
    let before: Vec<Acked> = (0..15).filter_map(|_| pay(&stack)).collect();
    assert_eq!(before.len(), 15);
    // A moment with no write around it: a restore to it keeps exactly the writes before.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let moment = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after: Vec<Acked> = (0..15).filter_map(|_| pay(&stack)).collect();
    assert_eq!(after.len(), 15);
    let listed = stack.ok(&["backup", "list"]);
    assert!(
        listed.contains("payments: restore --to reaches any moment from"),
        "{listed}"
    );

    // A writer goes on while the database's container is killed and its volume deleted.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, killed_at) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut acked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                acked.extend(pay(&stack));
            }
            acked
        });
        std::thread::sleep(std::time::Duration::from_secs(8));
        let killed_at = chrono::Utc::now();
        let killed = Command::new("docker")
            .args(["rm", "-f", &stack.on_engine("payments-db")])
            .output()
            .unwrap();
        assert!(killed.status.success());
        std::thread::sleep(std::time::Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (writer.join().unwrap(), killed_at)
    });
    let removed = Command::new("docker")
        .args(["volume", "rm", "e2e-pitr_payments-db-data"])
        .output()
        .unwrap();
    assert!(removed.status.success());
    assert!(acked.len() > 20, "the writer ran: {}", acked.len());

    let started = std::time::Instant::now();
    let restored = stack.run(&["restore", "payments", "--to", "latest", "--yes"]);
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{said}");
    assert!(said.contains("no safety backup"), "{said}");
    let recovery_secs = started.elapsed().as_secs_f64();
    let present = references(&stack);
    for a in before.iter().chain(&after) {
        assert!(present.contains(&a.reference), "{} lost", a.reference);
    }
    let lost: Vec<&Acked> = acked
        .iter()
        .filter(|a| !present.contains(&a.reference))
        .collect();
    // The timeout, and the time the last segment takes to reach both repositories.
    let horizon = killed_at - chrono::TimeDelta::seconds(ARCHIVE_TIMEOUT_SECS + 2);
    for a in &lost {
        assert!(
            a.at > horizon,
            "{} was acknowledged {:.1} s before the kill and is lost",
            a.reference,
            (killed_at - a.at).as_seconds_f64()
        );
    }
    let oldest_lost = lost.iter().map(|a| a.at).min();
    eprintln!(
        "restore --to latest after the volume was lost: {recovery_secs:.1} s; lost {} of {} payments acknowledged while the writer ran, the oldest of them {:.1} s before the kill",
        lost.len(),
        acked.len(),
        oldest_lost.map_or(0.0, |at| (killed_at - at).as_seconds_f64())
    );
    let got = stack.https(
        "GET",
        &format!("/b/payments/{}", after[0].reference),
        Some(&token),
        None,
    );
    assert_eq!(got.status, 200, "{}", got.body);

    // Killed while it restores the files: the same command again finishes it, the instances
    // the first one stopped run again, and nothing is lost.
    let (status, log) = interrupted(
        &stack,
        &["restore", "payments", "--to", "latest", "--yes"],
        "restoring the payments database's files",
        200,
        "-KILL",
    );
    assert!(!status.success(), "{log}");
    stack.ok(&["restore", "payments", "--to", "latest", "--yes"]);
    assert_eq!(
        references(&stack),
        present,
        "the second restore lost nothing"
    );
    let got = stack.https(
        "GET",
        &format!("/b/payments/{}", after[0].reference),
        Some(&token),
        None,
    );
    assert_eq!(got.status, 200, "{}", got.body);

    // Back to the quiet moment: exactly the payments acknowledged before it.
    let out = stack.run(&["restore", "payments", "--to", &moment.to_rfc3339(), "--yes"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("safety backup of the current data"), "{said}");
    let present = references(&stack);
    let expected: BTreeSet<String> = before.iter().map(|a| a.reference.clone()).collect();
    assert_eq!(present, expected);
    let gone = stack.https(
        "GET",
        &format!("/b/payments/{}", after[0].reference),
        Some(&token),
        None,
    );
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert!(pay(&stack).is_some(), "the restored database takes writes");

    // The copy off the host alone: the archive volume is lost too. A backup copies its dumps
    // there; the archive's copy is encrypted (its index is not readable text, the archive's is).
    let said = stack.ok(&["backup", "payments"]);
    let copy = offsite.path().join("e2e-pitr/payments-db");
    let dumps: Vec<PathBuf> = std::fs::read_dir(copy.join("dumps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dumps.len(), 2, "a dump and its checksum: {dumps:?} {said}");
    for dump in &dumps {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dump).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", dump.display());
    }
    let index = |root: &Path| std::fs::read(root.join("backup/main/backup.info")).unwrap();
    assert!(!String::from_utf8_lossy(&index(&copy.join("archive"))).contains("[backup:current]"));
    let plain = Command::new("docker")
        .args([
            "exec",
            &stack.on_engine("payments-db"),
            "cat",
            "/var/lib/pgbackrest/backup/main/backup.info",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&plain.stdout).contains("[backup:current]"));
    let last = pay(&stack).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(
        ARCHIVE_TIMEOUT_SECS as u64 + 3,
    ));
    let kept = references(&stack);
    assert!(kept.contains(&last.reference));
    assert!(
        Command::new("docker")
            .args(["rm", "-f", &stack.on_engine("payments-db")])
            .output()
            .unwrap()
            .status
            .success()
    );
    for volume in ["e2e-pitr_payments-db-data", "e2e-pitr_payments-db-archive"] {
        assert!(
            Command::new("docker")
                .args(["volume", "rm", volume])
                .output()
                .unwrap()
                .status
                .success()
        );
    }
    let out = stack.run(&[
        "restore", "payments", "--to", "latest", "--from", "copy", "--yes",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        references(&stack),
        kept,
        "the copy brought back every payment"
    );

    // The host is lost: a new one has the configuration, the secrets kept from `secrets show`
    // and the copy, nothing else. Its first `up` leaves the copy alone; restoring from it
    // brings both databases back, and the old host's tokens are still good.
    let last = pay(&stack).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(
        ARCHIVE_TIMEOUT_SECS as u64 + 3,
    ));
    let kept = references(&stack);
    assert!(kept.contains(&last.reference));
    let listing = stack.ok(&["secrets", "show"]);
    stack.ok(&["down", "--volumes", "--yes"]);
    let new_host = Stack::new(&config);
    let keep = |name: &str, text: &str| {
        let path = new_host.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let damaged = keep("damaged.env", &listing.replace("jwt_secret=", "jwt_secre="));
    let out = new_host.run(&["secrets", "import", &damaged]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("no secret is named \"jwt_secre\""), "{said}");
    assert!(!new_host.path().join(".stackctl/secrets.json").exists());
    let kept_secrets = keep("old-host.env", &listing);
    new_host.ok(&["secrets", "import", &kept_secrets]);
    let up = new_host.run(&["up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(up.status.success(), "{said}");
    for db in ["auth", "payments"] {
        assert!(
            said.contains(&format!(
                "the {db} database's copy holds the backups of another {db} database"
            )),
            "{said}"
        );
    }
    assert!(references(&stack).is_empty(), "a new, empty database");
    let doctor = new_host.run(&["doctor"]);
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(!doctor.status.success(), "{said}");
    for db in ["auth", "payments"] {
        assert!(
            said.contains(&format!(
                "{db}: the copy in backup.copy_to holds the backups of another"
            )),
            "{said}"
        );
    }
    let other = keep("other.env", &listing.replace("jwt_secret=", "jwt_secret=x"));
    let out = new_host.run(&["secrets", "import", &other]);
    assert!(!out.status.success(), "secrets in use are never replaced");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds other secrets already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for db in ["payments", "auth"] {
        let out = new_host.run(&["restore", db, "--to", "latest", "--from", "copy", "--yes"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains(&format!(
                "the archive's backups of another {db} database (system "
            )),
            "{said}"
        );
    }
    assert_eq!(references(&stack), kept, "the new host has every payment");
    let got = new_host.https(
        "GET",
        &format!("/b/payments/{}", last.reference),
        Some(&token),
        None,
    );
    assert_eq!(got.status, 200, "the old host's token: {}", got.body);
    let login = new_host.https(
        "POST",
        "/a/auth/login",
        None,
        Some(&json!({"identifier": "pitr@example.com", "password": "pitr-password"})),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    // Archiving goes on to both repositories of the restored clusters.
    let out = new_host.run(&["backup", "payments"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("in the copy"), "{said}");
    // Retention and the sweep of a killed copy apply to the copy's dumps too.
    let dumps = copy.join("dumps");
    let old = dumps.join("payments_20200101_000000.sql.gz");
    with_checksum(&old, b"an old dump");
    let stray = dumps.join("payments_20261126_000000.sql.gz.partial");
    std::fs::write(&stray, b"cut short").unwrap();
    let kept_dumps = backup_files(&dumps);
    let out = new_host.run(&["backup", "prune"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("deleted {}", old.display())),
        "{said}"
    );
    assert!(!old.exists() && !stray.exists(), "{said}");
    let mut expected = kept_dumps;
    expected.remove(&old);
    expected.remove(&stray);
    assert_eq!(backup_files(&dumps), expected, "the rest is kept: {said}");
    let said = String::from_utf8_lossy(&new_host.run(&["doctor"]).stdout).into_owned();
    assert!(
        !said.contains("the copy in backup.copy_to holds")
            && !said.contains("WAL archiving has failed"),
        "{said}"
    );

    // A moment to come, or not a moment, is refused before anything changes.
    for (to, why) in [
        ("2999-01-01 00:00:00", "has not come yet"),
        ("yesterday", "give `latest`"),
    ] {
        let out = new_host.run(&["restore", "payments", "--to", to, "--yes"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
    }
}

/// The containers and volumes of a project.
fn project_leftovers(project: &str) -> (String, String) {
    let list = |what: &[&str]| {
        let out = Command::new("docker")
            .args(what)
            .arg("--filter")
            .arg(format!("label=stackctl.project={project}"))
            .args(["--format", "{{.Names}}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    (
        list(&["ps", "-a"]),
        Command::new("docker")
            .args(["volume", "ls", "-q", "--filter"])
            .arg(format!("name={project}_"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap(),
    )
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn a_copy_in_an_s3_store_brings_a_database_back_after_both_its_volumes_are_lost() {
    use std::os::unix::fs::PermissionsExt;
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let store = support::S3Store::start(25900);
    let copy = |bucket: &str| {
        format!(
            "{}[backup]\narchive_timeout_secs = 2\ncopy_to = \"s3://{bucket}/offsite\"\n[backup.s3]\nendpoint = \"{}\"\npath_style = true\nca_file = \"{}\"\ncredentials = \"{}\"\n",
            loaded_config("e2e-s3", 25),
            store.endpoint,
            store.ca_file().display(),
            store.credentials().display()
        )
    };
    let stack = Stack::new(&copy("stk-e2e"));
    stack.ok(&["down", "--volumes", "--yes"]);

    // Bad input changes nothing: keys others can read, a bucket that is not there.
    let keys = store.credentials();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let up = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success() && said.contains("chmod 600"), "{said}");
    assert!(!said.contains("AWS_SECRET_ACCESS_KEY="), "{said}");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let up = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(
        !up.status.success() && said.contains("the bucket stk-e2e does not exist"),
        "{said}"
    );
    assert_eq!(
        project_leftovers("e2e-s3"),
        (String::new(), String::new()),
        "a refused up made nothing"
    );

    store.create_bucket("stk-e2e");
    // Killed while it takes the first full backups: pgBackRest's goes on in the container and
    // holds its lock; the next up waits for it, then takes what is still missing.
    let (status, log) = interrupted_when(
        &stack,
        &["up"],
        "auth database: WAL archiving on",
        &|| pgbackrest_backing_up(&stack.on_engine("payments-db")),
        0,
        "-KILL",
    );
    assert!(!status.success(), "{log}");
    let up = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(up.status.success(), "{said}");
    assert!(
        said.contains("payments database: WAL archiving on, first full physical backup taken ("),
        "{said}"
    );
    eprintln!(
        "up after one killed in its first full backups: {}",
        if said.contains("still going; waiting for it") {
            "waited for the killed run's backup"
        } else {
            "the killed run's backup had ended"
        }
    );
    let root = "offsite/e2e-s3/payments-db";
    assert!(
        store
            .keys("stk-e2e", &format!("{root}/archive/archive/main/"))
            .contains(&format!("{root}/archive/archive/main/archive.info")),
        "the archive's copy is in the store"
    );

    let token = stack.signed_up("s3@example.com", "+256772555302", "s3-copy-password");
    let pay = || stack.paid(&token, "9.00");
    let mut made: BTreeSet<String> = (0..10).map(|_| pay()).collect();

    let backup = stack.run(&["backup", "payments"]);
    let said = String::from_utf8_lossy(&backup.stderr);
    assert!(backup.status.success(), "{said}");
    assert!(said.contains("in the copy"), "{said}");
    let dumps = format!("{root}/dumps/");
    let copied = store.keys("stk-e2e", &dumps);
    assert_eq!(copied.len(), 2, "{copied:?}");
    let dump = copied
        .iter()
        .find(|k| k.ends_with(".sql.gz"))
        .unwrap()
        .clone();
    assert!(copied.contains(&format!("{dump}.sha256")), "{copied:?}");
    assert!(
        said.contains(&format!("copied to s3://stk-e2e/{dump}")),
        "{said}"
    );

    // Killed during its physical backup: pgBackRest's backup goes on in the container and
    // holds its lock; the next backup waits for it, then takes its own in both repositories.
    let (status, log) = interrupted_when(
        &stack,
        &["backup", "payments"],
        "==> payments: ./backups/payments/",
        &|| pgbackrest_backing_up(&stack.on_engine("payments-db")),
        0,
        "-KILL",
    );
    assert!(!status.success(), "{log}");
    let again = stack.run(&["backup", "payments"]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("in the archive") && said.contains("in the copy"),
        "{said}"
    );
    eprintln!(
        "backup after one killed in its physical backup: {}",
        if said.contains("still going; waiting for it") {
            "waited for the killed run's backup"
        } else {
            "the killed run's backup had ended"
        }
    );

    made.extend((0..10).map(|_| pay()));
    // Archived at least every 2 s; time for the last segment to reach the store.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let removed = Command::new("docker")
        .args(["rm", "-f", &stack.on_engine("payments-db")])
        .output()
        .unwrap();
    assert!(removed.status.success());
    let removed = Command::new("docker")
        .args([
            "volume",
            "rm",
            "e2e-s3_payments-db-data",
            "e2e-s3_payments-db-archive",
        ])
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );

    let started = std::time::Instant::now();
    let restored = stack.run(&[
        "restore", "payments", "--to", "latest", "--from", "copy", "--yes",
    ]);
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(restored.status.success(), "{said}");
    eprintln!(
        "restore --to latest --from copy (S3) after both volumes were lost: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        references(&stack),
        made,
        "every payment is back from the store"
    );
    let listed = stack.https("GET", "/b/payments", Some(&token), None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let backup = stack.run(&["backup", "payments"]);
    let said = String::from_utf8_lossy(&backup.stderr);
    assert!(backup.status.success(), "{said}");
    assert!(
        said.contains("in the archive") && said.contains("in the copy"),
        "{said}"
    );

    // Retention and the sweep apply in the store as in a folder: an old dump goes, so does a
    // checksum whose dump a killed copy never sent; nothing else.
    let kept = store.keys("stk-e2e", &dumps);
    let old = format!("{dumps}payments_20250105_020000.sql.gz");
    store.put("stk-e2e", &old, b"old");
    store.put("stk-e2e", &format!("{old}.sha256"), b"old");
    store.put(
        "stk-e2e",
        &format!("{dumps}payments_20250106_020000.sql.gz.sha256"),
        b"x",
    );
    let foreign = format!("{dumps}notes.txt");
    store.put("stk-e2e", &foreign, b"mine");
    let pruned = stack.run(&["backup", "prune"]);
    let said = String::from_utf8_lossy(&pruned.stderr);
    assert!(pruned.status.success(), "{said}");
    let mut expected = kept.clone();
    expected.insert(foreign);
    assert_eq!(store.keys("stk-e2e", &dumps), expected, "{said}");
    assert_eq!(kept.len(), 8, "four dumps and their checksums: {kept:?}");
}

/// The image ids the running instances of a service (`app_a`, `app_b`) run.
fn images_of(stack: &Stack, prefix: &str) -> BTreeSet<String> {
    running(stack, prefix)
        .iter()
        .map(|name| docker(&["inspect", "--format", "{{.Image}}", &stack.on_engine(name)]))
        .collect()
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn a_failing_release_is_rolled_back_and_rollback_goes_back() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let config = format!(
        "{}[rollout]\nwatch_secs = 15\n",
        loaded_config("e2e-rollback", 26)
    );
    let stack = Stack::new(&config);
    let write = |config: &str| std::fs::write(stack.path().join("stack.toml"), config).unwrap();
    stack.ok(&["down", "--volumes", "--yes"]);
    stack.ok(&["up"]);
    let token = stack.signed_up("rollback@example.com", "+256772555002", "rollback-password");
    let reference = stack.paid(&token, "12.00");
    let good = history(&stack).last().unwrap()["release"].clone();
    let good_image = |service: &str| good["images"][service].as_str().unwrap().to_owned();
    let tag = |name: &str| {
        docker(&[
            "inspect",
            "--format",
            "{{.Config.Image}}",
            &stack.on_engine(name),
        ])
    };
    let (auth_tag, payments_tag) = (tag("app_a1"), tag("app_b1"));
    let rolled_back_to_good = |stack: &Stack, why: &str| {
        let last = history(stack).last().unwrap().clone();
        assert!(
            last["error"].as_str().unwrap().contains(why),
            "{}",
            last["error"]
        );
        assert_eq!(last["release"]["images"], good["images"]);
        assert_eq!(last["release"]["config_hash"], good["config_hash"]);
        assert_eq!(images_of(stack, "app_a"), set(&[&good_image("auth")]));
        assert_eq!(images_of(stack, "app_b"), set(&[&good_image("payments")]));
    };

    // A release whose auth instances cannot start: the service refuses a setting at start.
    let bad = Retagged::build(
        &good_image("auth"),
        r#"CMD ["serve", "--bcrypt-cost", "3"]"#,
        &auth_tag,
    );
    let longer_tokens = config.replace(
        "bcrypt_cost = 10\n",
        "bcrypt_cost = 10\naccess_token_ttl_secs = 901\n",
    );
    write(&longer_tokens);
    let out = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("rolling back to release") && said.contains("rolled back to release"),
        "{said}"
    );
    rolled_back_to_good(&stack, "app_a3");
    let shown = stack.ok(&["config"]);
    assert!(
        shown.contains("access_token_ttl_secs = 900")
            && shown.contains("# release 2 runs, rolled back at"),
        "{shown}"
    );
    // `up` again (a timer's, say) keeps the release rolled back to.
    let before = ids(&stack);
    let out = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("as rolled back at"), "{said}");
    assert_eq!(ids(&stack), before, "nothing was replaced");
    // The sources fixed and the configuration as before: up rolls forward.
    drop(bad);
    write(&config);
    let said = stack.run(&["up"]);
    assert!(said.status.success());
    assert!(String::from_utf8_lossy(&said.stderr).contains("rolling forward"));
    assert!(!stack.path().join(".stackctl/rollback.json").exists());

    // A release that answers 5xx on a route under load: payments pointed at no auth service.
    let bad = Retagged::build(
        &good_image("payments"),
        r#"CMD ["serve", "--auth-service-url", "http://127.0.0.1:9"]"#,
        &payments_tag,
    );
    let shorter_cache = format!("{config}[services.payments]\nauth_cache_secs = 4\n");
    write(&shorter_cache);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let reads = H2Load::start(
        &stack.base(),
        &token,
        &[format!("/b/payments/{reference}")],
        None,
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = stack.run(&["up"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let counts = reads.finish();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("payments answered 5xx"), "{said}");
    rolled_back_to_good(&stack, "payments answered 5xx");
    // No request failed but those the bad release answered itself: no connection error, no
    // timeout, and every 5xx the edge logged is a 503 an instance answered (the auth check it
    // could not make), none of nginx's own.
    assert_eq!((counts.errored, counts.timeout), (0, 0), "{counts:?}");
    assert_eq!(counts.failed, counts.status_5xx, "{counts:?}");
    assert_eq!(counts.status_3xx + counts.status_4xx, 0, "{counts:?}");
    assert!(counts.status_5xx > 0 && counts.status_2xx > 0, "{counts:?}");
    let log = Command::new("docker")
        .args(["logs", "--since", &since, &stack.on_engine("nginx-proxy")])
        .output()
        .unwrap();
    let failed: Vec<Value> = String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["status"].as_u64().is_some_and(|s| s >= 500))
        .collect();
    assert!(!failed.is_empty());
    for line in &failed {
        assert_eq!(line["status"], 503, "{line}");
        assert!(
            line["upstream"].as_str().is_some_and(|u| u.contains(':')),
            "{line}"
        );
    }
    drop(bad);
    write(&config);
    stack.ok(&["up"]);

    // By hand: a change that works, then back to the release before it, under load.
    write(&config.replace("bcrypt_cost = 10\n", "bcrypt_cost = 11\n"));
    stack.ok(&["up"]);
    let releases = history(&stack);
    let n = releases.len();
    let (before, changed) = (&releases[n - 2]["release"], &releases[n - 1]["release"]);
    assert_ne!(before["config_hash"], changed["config_hash"]);
    for (args, code, why) in [
        (
            &["rollback", "--to", "0"][..],
            1,
            "--to 0: `stackctl history` lists releases 1 to",
        ),
        (&["rollback", "--to", "999"][..], 1, "--to 999"),
        (
            &["rollback", "--to", "3"][..],
            1,
            "--to 3: release 3 failed",
        ),
        (&["rollback", "nginx"][..], 2, "invalid value 'nginx'"),
    ] {
        let out = stack.run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    assert_eq!(
        history(&stack).len(),
        n,
        "a refused rollback changes nothing"
    );
    let load = Load::start(&stack.base(), &token, &reference, "close", 0);
    let kept_alive = Load::start(&stack.base(), &token, &reference, "keep-alive", 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    stack.ok(&["rollback", "auth"]);
    let last = history(&stack).last().unwrap().clone();
    assert_eq!(last["command"], "rollback auth");
    assert_eq!(last["release"]["images"], before["images"]);
    assert_eq!(last["release"]["config_hash"], before["config_hash"]);
    assert!(stack.ok(&["config"]).contains("bcrypt_cost = 10"));
    let to = n.to_string();
    stack.ok(&["rollback", "auth", "--to", &to]);
    let last = history(&stack).last().unwrap().clone();
    assert_eq!(last["release"]["images"], changed["images"]);
    assert_eq!(last["release"]["config_hash"], changed["config_hash"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_all_served(&load.finish());
    assert_all_served(&kept_alive.finish());
    stack.ok(&["down", "--volumes", "--yes"]);
}

/// The target folder the tests' stackctl was built in.
fn target_dir() -> PathBuf {
    let built = stackctl();
    built.ancestors().nth(3).unwrap().to_owned()
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn an_installed_stackctl_brings_the_stack_up_from_an_empty_folder_and_no_images() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    // Installed as a user installs it, from the release build the other tests run.
    let root = tempfile::tempdir().unwrap();
    let install = support::cargo()
        .args(["install", "--locked", "--offline", "--path"])
        .arg(source_dir().join("cli"))
        .arg("--root")
        .arg(root.path())
        .arg("--target-dir")
        .arg(target_dir())
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let installed = root.path().join("bin/stackctl");
    // A PATH with the host's programs and no Rust toolchain.
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    assert!(
        std::env::split_paths(path).all(|dir| !dir.join("cargo").exists()),
        "cargo is on {path}"
    );
    let empty = tempfile::tempdir().unwrap();
    let ports = [
        ("STACKCTL_PROJECT", "e2e-install"),
        ("STACKCTL_HTTP_PORT", "27080"),
        ("STACKCTL_HTTPS_PORT", "27443"),
        ("STACKCTL_AUTH_DB_PORT", "27432"),
        ("STACKCTL_PAYMENTS_DB_PORT", "27433"),
    ];
    let run = |args: &[&str], path: &str| {
        Command::new(&installed)
            .current_dir(empty.path())
            .env_clear()
            .env("PATH", path)
            .envs(ports)
            .args(args)
            .output()
            .unwrap()
    };
    let version = String::from_utf8(run(&["--version"], path).stdout).unwrap();
    let carried = |service: &str| format!("{service} {}", env!("CARGO_PKG_VERSION"));
    assert!(
        version.contains(&carried("auth-svc")) && version.contains(&carried("payment-svc")),
        "{version}"
    );
    run(&["down", "--volumes", "--yes", "--images"], path);
    assert_eq!(
        docker(&["images", "--quiet", "stackctl/*"]),
        "",
        "no image of stackctl is left"
    );

    // Without mmdebstrap, one line says what to install, and nothing is made.
    let nowhere = tempfile::tempdir().unwrap();
    let out = run(&["up"], nowhere.path().to_str().unwrap());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let error: Vec<&str> = said.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{said}");
    assert!(error[0].contains("apt-get install mmdebstrap"), "{said}");
    assert_eq!(
        project_leftovers("e2e-install"),
        (String::new(), String::new())
    );

    let started = std::time::Instant::now();
    let out = run(&["up"], path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "cold up of the installed stackctl: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ps: Vec<Value> = serde_json::from_slice(&run(&["ps", "--json"], path).stdout).unwrap();
    assert_eq!(ps.len(), 7, "{ps:#?}");
    assert!(ps.iter().all(|c| c["health"] == "healthy"), "{ps:#?}");
    let cert = empty.path().join(".stackctl/tls/cert.pem");
    for service in ["service_a", "service_b"] {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&cert)
            .arg(format!("https://localhost:27443/health/{service}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // The services' images hold the installed program itself, and nothing else runs it.
    let sizes = docker(&[
        "images",
        "--format",
        "{{.Repository}} {{.Size}}",
        "stackctl/*",
    ]);
    eprintln!("images:\n{sizes}");
    let out = run(&["down", "--volumes", "--yes"], path);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        project_leftovers("e2e-install"),
        (String::new(), String::new())
    );
}

#[test]
#[ignore = "needs the Docker engine and builds images; setup/test.sh runs it"]
fn two_projects_run_side_by_side_and_each_touches_only_its_own() {
    let _engine = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let one = Stack::new(&loaded_config("e2e-one", 29));
    let two = Stack::new(&loaded_config("e2e-two", 30));
    for stack in [&one, &two] {
        stack.ok(&["down", "--volumes", "--yes"]);
    }
    // Both at once: their images are shared, their names are not.
    let ups: Vec<std::process::Child> = [&one, &two]
        .iter()
        .map(|stack| {
            Command::new(stackctl())
                .current_dir(stack.path())
                .arg("up")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for up in ups {
        let out = up.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for stack in [&one, &two] {
        let names: BTreeSet<String> = stack
            .containers()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ALL.iter().map(|n| (*n).to_owned()).collect());
        for name in ALL {
            let on_engine = stack.on_engine(name);
            assert_eq!(
                docker(&["inspect", "--format", "{{.Name}}", &on_engine]),
                format!("/{on_engine}")
            );
        }
    }
    let token = one.signed_up("one@example.com", "+256772555301", "one-password");
    let reference = one.paid(&token, "7.00");
    // The other project has users, secrets and payments of its own.
    let login = json!({"identifier": "one@example.com", "password": "one-password"});
    let refused = two.https("POST", "/a/auth/login", None, Some(&login));
    assert_eq!(refused.status, 401, "{}", refused.body);
    let elsewhere = two.https(
        "GET",
        &format!("/b/payments/{reference}"),
        Some(&token),
        None,
    );
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.body);
    let two_token = two.signed_up("two@example.com", "+256772555302", "two-password");
    let two_reference = two.paid(&two_token, "8.00");

    one.ok(&["down", "--volumes", "--yes"]);
    assert_eq!(project_leftovers("e2e-one"), (String::new(), String::new()));
    assert!(!engine_leftovers().1.contains(&one.on_engine("app-network")));
    let (containers, volumes) = project_leftovers("e2e-two");
    assert_eq!(containers.lines().count(), 7, "{containers}");
    assert_eq!(volumes.lines().count(), 4, "{volumes}");
    let kept = two.https(
        "GET",
        &format!("/b/payments/{two_reference}"),
        Some(&two_token),
        None,
    );
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert!(
        two.containers().iter().all(|c| c["health"] == "healthy"),
        "the other project serves on"
    );
    let gone = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(one.cert())
        .arg(format!("{}/b/payments/{reference}", one.base()))
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "nothing answers for the project taken down"
    );
}
