//! stackctl against a real three-node swarm: three Docker engines, each in a network namespace
//! of its own (`setup/cluster.sh`). Forming the swarm, running `init` again, adopting a node that
//! left, refusing a node of another swarm, a node's engine stopped and started; and the stack on
//! it: `up`, the API through the edge node over TLS, `ps`, `down --volumes` leaving nothing.
//! Needs root and the Docker engine (and builds images), so it is ignored by default:
//! `cargo test -p stackctl --test cluster -- --ignored` (setup/test.sh runs it).
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{H2Load, Load, assert_all_served, stackctl};

mod support;

/// The nodes' namespaces and addresses are fixed: one cluster at a time.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../setup/cluster.sh")
}

/// The nodes and a stack.toml that lists them; everything is removed when the test ends.
struct Nodes {
    dir: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.nodes_dir())
            .status();
    }
}

impl Nodes {
    /// The nodes, with a stack.toml of `settings` and their `[cluster]` table.
    fn start(settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = Self { dir };
        nodes.script(&["start"]);
        let table = std::fs::read_to_string(nodes.nodes_dir().join("cluster.toml")).unwrap();
        std::fs::write(
            nodes.dir.path().join("stack.toml"),
            format!("{settings}\n{table}"),
        )
        .unwrap();
        nodes
    }

    fn nodes_dir(&self) -> PathBuf {
        self.dir.path().join("nodes")
    }

    fn script(&self, args: &[&str]) {
        let (first, rest) = args.split_first().unwrap();
        let status = Command::new("bash")
            .arg(script())
            .arg(first)
            .arg(self.nodes_dir())
            .args(rest)
            .status()
            .unwrap();
        assert!(status.success(), "cluster.sh {args:?}");
    }

    fn stackctl(&self, args: &[&str]) -> Output {
        Command::new(stackctl())
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// stackctl running, its standard error piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(stackctl())
            .current_dir(self.dir.path())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs stackctl and kills it (SIGKILL) `after` it said a line holding `at`; what it said
    /// until then.
    fn killed_at(&self, args: &[&str], at: &str, after: Duration) -> String {
        let mut child = self.spawn(args);
        let progress = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        for line in std::io::BufRead::lines(progress) {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(at) {
                break;
            }
        }
        std::thread::sleep(after);
        support::signal(&child, "-KILL");
        child.wait().unwrap();
        seen
    }

    /// stackctl's standard error (its progress), after it succeeded.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.stackctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "stackctl {args:?} failed:\n{stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.stackctl(args);
        assert!(!out.status.success(), "stackctl {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn status(&self) -> Vec<Value> {
        let (json, _) = self.ok(&["cluster", "status", "--json"]);
        serde_json::from_str::<Value>(&json)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `docker` against node `n`'s engine.
    fn docker(&self, n: u32, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!(
                "unix://{}/stk-n{n}.sock",
                self.nodes_dir().display()
            ))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} on node {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn swarm_id(&self, n: u32) -> String {
        self.docker(n, &["info", "-f", "{{.Swarm.Cluster.ID}}"])
    }

    /// Polls `status` until `check` holds for node `n`'s row; returns the seconds it took.
    fn until(&self, n: u64, what: &str, check: impl Fn(&Value) -> bool) -> f64 {
        let started = Instant::now();
        loop {
            let rows = self.status();
            let row = rows.iter().find(|r| r["node"] == n).unwrap().clone();
            if check(&row) {
                return started.elapsed().as_secs_f64();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {n} not {what} after 60 s: {row}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn texts(row: &Value, key: &str) -> Vec<String> {
    row[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs root and the Docker engine; setup/test.sh runs it"]
fn the_swarm_is_formed_adopted_and_watched() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::start("project = \"cluster-e2e\"");

    // Before: three engines that answer, in no swarm.
    let rows = nodes.status();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["state"], "no manager answers", "{row}");
        assert_eq!(row["engine_answers"], true, "{row}");
    }

    let (_, said) = nodes.ok(&["cluster", "init"]);
    for line in [
        "node 1: start a new swarm, as its manager",
        "node 2: join the swarm as a manager",
        "node 3: join the swarm as a manager",
        "node 1: labels edge, auth-db",
        "node 2: labels payments-db",
    ] {
        assert!(said.contains(line), "{line:?} not in:\n{said}");
    }
    let swarm = nodes.swarm_id(1);
    assert!(!swarm.is_empty());
    let rows = nodes.status();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["node"], i + 1, "{row}");
        assert_eq!(row["hostname"], format!("stk-n{}", i + 1), "{row}");
        assert_eq!(row["address"], format!("192.168.200.{}", 11 + i), "{row}");
        assert_eq!(row["role"], "manager", "{row}");
        assert_eq!(row["state"], "ready", "{row}");
        assert_eq!(row["availability"], "active", "{row}");
    }
    assert_eq!(rows[0]["manager"], "leader");
    assert_eq!(texts(&rows[0], "labels"), ["edge", "auth-db"]);
    assert_eq!(texts(&rows[1], "labels"), ["payments-db"]);
    assert!(texts(&rows[2], "labels").is_empty());

    // Again: nothing to do, the same swarm.
    let (_, said) = nodes.ok(&["cluster", "init"]);
    assert!(
        !said.contains("node "),
        "a second init changed something:\n{said}"
    );
    assert_eq!(nodes.swarm_id(2), swarm);

    // Labels changed by hand and a node that left are put back.
    nodes.docker(
        1,
        &["node", "update", "--label-rm", "stackctl.edge", "stk-n1"],
    );
    nodes.docker(
        1,
        &[
            "node",
            "update",
            "--label-add",
            "stackctl.payments-db=true",
            "stk-n3",
        ],
    );
    nodes.docker(1, &["node", "demote", "stk-n3"]);
    nodes.docker(3, &["swarm", "leave"]);
    nodes.until(3, "down", |r| r["state"] == "down");
    nodes.docker(1, &["node", "rm", "stk-n3"]);
    let (_, said) = nodes.ok(&["cluster", "init"]);
    assert!(
        said.contains("node 3: join the swarm as a manager"),
        "{said}"
    );
    assert!(said.contains("node 1: labels edge, auth-db"), "{said}");
    assert_eq!(nodes.swarm_id(3), swarm);
    let rows = nodes.status();
    assert_eq!(texts(&rows[0], "labels"), ["edge", "auth-db"]);
    assert!(texts(&rows[2], "labels").is_empty(), "{}", rows[2]);
    assert_eq!(rows[2]["role"], "manager");

    // A node in a swarm of its own is refused, and left as it was.
    nodes.docker(1, &["node", "demote", "stk-n3"]);
    nodes.docker(3, &["swarm", "leave"]);
    nodes.docker(3, &["swarm", "init", "--advertise-addr", "192.168.200.13"]);
    let other = nodes.swarm_id(3);
    let err = nodes.fails(&["cluster", "init"]);
    assert!(err.contains("different swarms"), "{err}");
    assert_eq!(nodes.swarm_id(3), other);
    nodes.docker(3, &["swarm", "leave", "--force"]);
    nodes.until(3, "down", |r| r["state"] == "down");
    nodes.docker(1, &["node", "rm", "stk-n3"]);
    nodes.ok(&["cluster", "init"]);
    assert_eq!(nodes.swarm_id(3), swarm);

    // A lost node: init refuses to change anything, status shows it, and it comes back.
    nodes.script(&["stop-node", "3"]);
    let err = nodes.fails(&["cluster", "init"]);
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("node 3: cannot reach the engine"), "{err}");
    let down = nodes.until(3, "down", |r| {
        r["state"] == "down" && r["engine_answers"] == false && r["manager"] == "unreachable"
    });
    eprintln!("node 3 seen down {down:.1} s after its engine stopped");
    let rows = nodes.status();
    assert_eq!(
        rows[0]["state"], "ready",
        "the others serve on: {}",
        rows[0]
    );
    nodes.script(&["start-node", "3"]);
    let back = nodes.until(3, "back", |r| {
        r["state"] == "ready" && r["engine_answers"] == true && r["manager"] == "reachable"
    });
    eprintln!("node 3 ready again {back:.1} s after its engine started");
    assert_eq!(nodes.swarm_id(3), swarm);
}

#[test]
fn a_bad_cluster_table_is_refused_before_any_engine_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    for (table, says) in [
        (
            "[cluster]\nnodes = [{ engine = \"unix:///nowhere.sock\", labels = [\"edge\"] }]\n",
            "exactly one node \"auth-db\"",
        ),
        (
            "[cluster]\nnodes = [{ engine = \"docker://x\", labels = [\"edge\", \"auth-db\", \"payments-db\"] }]\n",
            "cluster.nodes[0].engine",
        ),
    ] {
        std::fs::write(dir.path().join("stack.toml"), table).unwrap();
        let out = Command::new(stackctl())
            .current_dir(dir.path())
            .args(["cluster", "init"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(says), "{err}");
    }
    std::fs::write(dir.path().join("stack.toml"), "project = \"x\"\n").unwrap();
    let out = Command::new(stackctl())
        .current_dir(dir.path())
        .args(["cluster", "status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("has no [cluster] table"), "{err}");
}

/// One health check through the edge, and when it was sent.
#[derive(Debug)]
struct Sample {
    at: Duration,
    ok: bool,
}

/// Health checks of both services through the edge, ten a second, each on a connection of its
/// own, until [`Probe::finish`].
struct Probe {
    started: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Probe {
    fn start(nodes: &Nodes) -> Self {
        let started = Instant::now();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = format!("https://{}:28443", nodes.edge());
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut samples = Vec::new();
                for path in ["/a/health", "/b/health"].iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let at = started.elapsed();
                    let out = Command::new("curl")
                        .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
                        .args(["--max-time", "10"])
                        .arg(format!("{base}{path}"))
                        .output()
                        .unwrap();
                    samples.push(Sample {
                        at,
                        ok: out.stdout == b"200",
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
                samples
            }
        });
        Self {
            started,
            stop,
            thread,
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// An answer of the API through the edge.
struct Reply {
    status: u16,
    body: Value,
}

impl Nodes {
    /// Where node 1's published ports answer.
    fn edge(&self) -> String {
        std::fs::read_to_string(self.nodes_dir().join("edge-address"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A request to the edge on node 1, over TLS verified against the stack's certificate
    /// (issued for localhost).
    fn https(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "-X", method])
            .arg("--resolve")
            .arg(format!("localhost:28443:{}", self.edge()))
            .arg("--cacert")
            .arg(self.dir.path().join(".stackctl/tls/cert.pem"));
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data",
                &b.to_string(),
            ]);
        }
        let out = cmd
            .arg(format!("https://localhost:28443{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            status: status.trim().parse().unwrap_or(0),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        }
    }

    /// The edge's access log lines of requests that did not get a 2xx, and the services'
    /// warnings and errors.
    fn failures(&self) -> String {
        let (edge, _) = self.ok(&["logs", "nginx"]);
        let (services, _) = self.ok(&["logs"]);
        edge.lines()
            .filter(|l| l.contains("\"status\":") && !l.contains("\"status\":2"))
            .chain(
                services.lines().filter(|l| {
                    l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")
                }),
            )
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A payment read through the edge.
    fn payment(&self, reference: &str, token: &str) -> Reply {
        self.https(
            "GET",
            &format!("/b/payments/{reference}"),
            Some(token),
            None,
        )
    }

    /// The id of the edge's container on node 1.
    fn edge_container(&self) -> String {
        let id = self.docker(
            1,
            &[
                "ps",
                "-q",
                "--filter",
                "label=stackctl.project=cluster-stack",
                "--filter",
                "label=stackctl.service=nginx",
            ],
        );
        assert!(!id.is_empty() && !id.contains('\n'), "{id}");
        id
    }

    fn ps(&self) -> Vec<Value> {
        let (json, _) = self.ok(&["ps", "--json"]);
        serde_json::from_str::<Value>(&json)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// What node `n` still holds of the stack: containers, volumes, networks, services,
    /// secrets and configs labelled with its project.
    fn leftovers(&self, n: u32) -> Vec<String> {
        let label = "label=stackctl.project=cluster-stack";
        let mut left = Vec::new();
        for what in [
            vec!["ps", "-a", "-q", "--filter", label],
            vec!["volume", "ls", "-q", "--filter", label],
            vec!["network", "ls", "-q", "--filter", label],
            vec!["service", "ls", "-q", "--filter", label],
            vec!["secret", "ls", "-q", "--filter", label],
            vec!["config", "ls", "-q", "--filter", label],
        ] {
            let listed = self.docker(n, &what);
            left.extend(listed.lines().map(|l| format!("{} {l}", what[0])));
        }
        left
    }
}

const STACK: &str = "project = \"cluster-stack\"
[ports]
http = 28080
https = 28443
[services.auth]
bcrypt_cost = 10
[nginx]
rate_limit_per_minute = 600000
rate_limit_burst = 10000
login_rate_limit_per_minute = 600000
login_rate_limit_burst = 10000
";

#[test]
#[ignore = "needs root and the Docker engine, and builds images; setup/test.sh runs it"]
fn the_stack_runs_on_the_swarm_and_leaves_nothing_behind() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::start(STACK);
    let err = nodes.fails(&["up"]);
    assert!(err.contains("run `stackctl cluster init` first"), "{err}");
    nodes.ok(&["cluster", "init"]);

    let started = Instant::now();
    let (_, said) = nodes.ok(&["up"]);
    eprintln!(
        "cold up on three nodes: {:.1} s\n{said}",
        started.elapsed().as_secs_f64()
    );
    for n in 1..=3 {
        assert!(said.contains(&format!("node {n}: loaded")), "{said}");
    }

    // Where it runs: each database on its labelled node, the edge on node 1, the instances
    // spread over more than one node; every task healthy.
    let tasks = nodes.ps();
    let on = |service: &str| -> Vec<String> {
        tasks
            .iter()
            .filter(|t| t["service"] == service)
            .map(|t| t["node"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(on("auth-db"), ["stk-n1"], "{tasks:?}");
    assert_eq!(on("payments-db"), ["stk-n2"], "{tasks:?}");
    assert_eq!(on("nginx"), ["stk-n1"], "{tasks:?}");
    for service in ["auth", "payments"] {
        let mut hosts = on(service);
        assert_eq!(hosts.len(), 2, "{service}: {tasks:?}");
        hosts.dedup();
        assert_eq!(
            hosts.len(),
            2,
            "{service} instances share a node: {tasks:?}"
        );
    }
    for task in &tasks {
        assert_eq!(task["health"], "healthy", "{task}");
    }

    // The API through the edge node, over TLS.
    let reg = nodes.https(
        "POST",
        "/a/auth/register",
        None,
        Some(&json!({"email": "swarm@example.com", "phone": "+256772555100", "password": "swarm-password"})),
    );
    assert_eq!(reg.status, 201, "{}", reg.body);
    let login = nodes.https(
        "POST",
        "/a/auth/login",
        None,
        Some(&json!({"identifier": "swarm@example.com", "password": "swarm-password"})),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.body["data"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = nodes.https(
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
    let got = nodes.payment(&reference, &token);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["data"]["payment"]["amount"], "1500.00");
    // Both instances of each service answer through the edge.
    for (path, service) in [("/a/health", "app_a"), ("/b/health", "app_b")] {
        let seen: std::collections::BTreeSet<String> = (0..12)
            .map(|_| {
                nodes.https("GET", path, None, None).body["data"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let expected: std::collections::BTreeSet<String> =
            [1, 2].iter().map(|i| format!("{service}.{i}")).collect();
        assert_eq!(seen, expected, "{path}");
    }
    for path in ["/health/service_a", "/health/service_b"] {
        let res = nodes.https("GET", path, None, None);
        assert_eq!(res.status, 200, "{path}: {}", res.body);
    }

    // Scale and restart under load, one connection per request, reused connections and HTTP/2:
    // no request fails.
    let base = format!("https://{}:28443", nodes.edge());
    let load = Load::start(&base, &token, &reference, "close", 0);
    let kept_alive = Load::start(&base, &token, &reference, "keep-alive", 1);
    let reads = H2Load::start(
        &base,
        &token,
        &["/a/auth/me".to_owned(), format!("/b/payments/{reference}")],
        None,
    );
    std::thread::sleep(Duration::from_secs(3));
    for args in [
        &["scale", "auth", "3"][..],
        &["scale", "payments", "1"],
        &["restart", "auth"],
        &["restart", "payments"],
        &["scale", "payments", "2"],
        &["scale", "auth", "2"],
    ] {
        let started = Instant::now();
        nodes.ok(args);
        eprintln!(
            "{args:?} under load: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let one_per_request = load.finish();
    let reused = kept_alive.finish();
    let h2 = reads.finish();
    let failed = one_per_request["ok"] != one_per_request["requests"]
        || reused["ok"] != reused["requests"]
        || !h2.all_served();
    assert!(
        !failed,
        "requests failed while instances changed: one per connection {one_per_request:?}, \
         kept alive {reused:?}, HTTP/2 {h2:?}; what failed, as the edge and the services \
         logged it:\n{}",
        nodes.failures()
    );
    assert_all_served(&one_per_request);
    assert_all_served(&reused);
    assert!(h2.requests > 100, "{h2:?}");
    assert!(h2.all_served(), "{h2:?}");
    let tasks = nodes.ps();
    for (service, n) in [("auth", 2), ("payments", 2)] {
        let running = tasks
            .iter()
            .filter(|t| t["service"] == service && t["state"] == "running");
        assert_eq!(running.count(), n, "{service}: {tasks:?}");
    }

    // Losing an app node under load: its instances come back on the others, and the edge stops
    // sending requests to the lost ones.
    let tasks = nodes.ps();
    let lost: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["node"] == "stk-n3" && (t["service"] == "auth" || t["service"] == "payments"))
        .collect();
    assert!(!lost.is_empty(), "an instance runs on node 3: {tasks:?}");
    let probe = Probe::start(&nodes);
    std::thread::sleep(Duration::from_secs(2));
    let lost_at = probe.elapsed();
    nodes.script(&["stop-node", "3"]);
    let replaced = Instant::now();
    loop {
        let tasks = nodes.ps();
        let serving = |service: &str| {
            tasks
                .iter()
                .filter(|t| {
                    t["service"] == service && t["node"] != "stk-n3" && t["health"] == "healthy"
                })
                .count()
        };
        if serving("auth") == 2 && serving("payments") == 2 {
            break;
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(120),
            "node 3's instances not replaced after 120 s: {tasks:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let replaced = replaced.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(10));
    let samples = probe.finish();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= lost_at).collect();
    let failed: Vec<&&Sample> = after.iter().filter(|s| !s.ok).collect();
    let last_failure = failed
        .last()
        .map_or(0.0, |s| (s.at - lost_at).as_secs_f64());
    eprintln!(
        "node 3 lost under load: {} of {} requests failed, none failed after {last_failure:.1} s; its instances ran healthy elsewhere after {replaced:.1} s",
        failed.len(),
        after.len()
    );
    let end = samples.last().unwrap().at;
    assert!(
        failed.iter().all(|s| end - s.at > Duration::from_secs(8)),
        "requests still failed in the last 8 s: {failed:?}"
    );
    let status = nodes.status();
    assert_eq!(status[2]["state"], "down", "{}", status[2]);
    assert_eq!(status[2]["engine_answers"], false, "{}", status[2]);
    nodes.script(&["start-node", "3"]);
    nodes.until(3, "back", |r| r["state"] == "ready");

    // A backup and a restore, run on whichever node holds the database; the files land here.
    let (_, said) = nodes.ok(&["backup"]);
    assert!(
        said.contains("payments: ./backups/payments/payments_"),
        "{said}"
    );
    let dumps: Vec<PathBuf> = std::fs::read_dir(nodes.dir.path().join("backups/payments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".sql.gz"))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let sums = std::fs::read_to_string(dumps[0].with_extension("gz.sha256")).unwrap();
    let digest = Command::new("sha256sum").arg(&dumps[0]).output().unwrap();
    assert_eq!(
        sums.split_whitespace().next(),
        String::from_utf8_lossy(&digest.stdout)
            .split_whitespace()
            .next(),
        "the checksum beside the backup is the file's"
    );
    let later = nodes.https(
        "POST",
        "/b/payments",
        Some(&token),
        Some(&json!({"amount": 700, "currency": "KES", "paymentMethod": "MOBILE_MONEY", "customerPhone": "+254712345678"})),
    );
    assert_eq!(later.status, 201, "{}", later.body);
    let later = later.body["data"]["payment"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    // A moment between that payment and the restore, with no write around it.
    std::thread::sleep(Duration::from_millis(1500));
    let before_restore = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, said) = nodes.ok(&["restore", "payments", "latest", "--yes"]);
    assert!(said.contains("restored the payments database"), "{said}");
    let gone = nodes.https("GET", &format!("/b/payments/{later}"), Some(&token), None);
    assert_eq!(
        gone.status, 404,
        "a payment made after the backup: {}",
        gone.body
    );
    let kept = nodes.payment(&reference, &token);
    assert_eq!(kept.status, 200, "{}", kept.body);
    let (logs, _) = nodes.ok(&["logs", "payments", "--tail", "3"]);
    assert!(logs.contains("app_b.1 on node "), "{logs}");

    // That restore undone from the archive: the database as it was before it, on its node.
    // A backup first: its physical part waits until the WAL of the restore is archived.
    // Killed (SIGKILL) while it restores the files, with the database's service and the
    // instances scaled to none, the same command again finishes it.
    nodes.ok(&["backup"]);
    let moment = before_restore.to_rfc3339();
    let to_moment = ["restore", "payments", "--to", moment.as_str(), "--yes"];
    let seen = nodes.killed_at(
        &to_moment,
        "restoring the payments database's files from its archive",
        Duration::from_millis(300),
    );
    assert!(seen.contains("safety backup of the current data"), "{seen}");
    let (_, said) = nodes.ok(&to_moment);
    assert!(said.contains("no safety backup"), "{said}");
    assert!(said.contains("the payments database is back at"), "{said}");
    let back = nodes.https("GET", &format!("/b/payments/{later}"), Some(&token), None);
    assert_eq!(
        back.status, 200,
        "the payment the restore removed: {}",
        back.body
    );
    let kept = nodes.payment(&reference, &token);
    assert_eq!(kept.status, 200, "{}", kept.body);

    // A restore killed (SIGKILL: nothing of it runs on) once it scaled payments to no task:
    // the database holds one whole dump or the other, and the next `up` brings the instances
    // back.
    let seen = nodes.killed_at(
        &["restore", "payments", "latest", "--yes"],
        "safety backup of the current data",
        Duration::ZERO,
    );
    assert!(seen.contains("stopping the 2 tasks of app_b"), "{seen}");
    assert_eq!(
        nodes.https("GET", "/b/health", None, None).status,
        503,
        "payments have no instance after the kill"
    );
    let (_, said) = nodes.ok(&["up"]);
    assert!(said.contains("app_b"), "up brought payments back: {said}");
    let kept = nodes.payment(&reference, &token);
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(
        nodes
            .ps()
            .iter()
            .filter(|t| t["service"] == "payments" && t["health"] == "healthy")
            .count(),
        2
    );

    // Losing the node of a database: that service answers 503 and the other serves on; when
    // the node is back, `up` brings the database back.
    nodes.script(&["stop-node", "2"]);
    let lost = Instant::now();
    loop {
        let payment = nodes.payment(&reference, &token);
        if payment.status == 503 {
            break;
        }
        assert!(
            lost.elapsed() < Duration::from_secs(90),
            "payments still answer {} without their database",
            payment.status
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "payments answered 503 {:.1} s after their database's node was lost",
        lost.elapsed().as_secs_f64()
    );
    assert_eq!(
        nodes.https("GET", "/a/auth/me", Some(&token), None).status,
        200
    );
    nodes.script(&["start-node", "2"]);
    nodes.until(2, "back", |r| r["state"] == "ready");
    nodes.ok(&["up"]);
    let back = nodes.payment(&reference, &token);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(
        nodes
            .ps()
            .iter()
            .filter(|t| t["service"] == "payments-db" && t["health"] == "healthy")
            .count(),
        1
    );

    // A second up changes nothing.
    let started = Instant::now();
    let (_, said) = nodes.ok(&["up"]);
    eprintln!(
        "warm up on three nodes: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for word in ["loaded", "created", "updated", "removing", "reloaded"] {
        assert!(!said.contains(word), "a second up did {word}:\n{said}");
    }

    // A new certificate: the running edge reloads it in place (no connection refused), and
    // answers with it, verified against the new file.
    let edge_before = nodes.edge_container();
    let probe = Probe::start(&nodes);
    let (said, progress) = nodes.ok(&["certs", "--force"]);
    std::thread::sleep(Duration::from_secs(2));
    let samples = probe.finish();
    let failed = samples.iter().filter(|s| !s.ok).count();
    eprintln!(
        "certs --force with one edge node: {failed} of {} health checks failed",
        samples.len()
    );
    assert!(said.contains("sha256:"), "{said}");
    assert!(
        progress.contains("node 1: the edge reloaded its site and certificate"),
        "{progress}"
    );
    assert_eq!(failed, 0, "{:?}", samples);
    assert_eq!(
        nodes.edge_container(),
        edge_before,
        "the edge task was kept"
    );
    let served = nodes.https("GET", "/health/service_a", None, None);
    assert_eq!(
        served.status, 200,
        "the edge serves the new certificate: {}",
        served.body
    );

    // A site nginx refuses (a custom template with an unknown directive): `up` says why, and
    // the edge keeps serving the site and certificate it had, without a failed request.
    let settings = nodes.dir.path().join("stack.toml");
    let good = std::fs::read_to_string(&settings).unwrap();
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/nginx/site.conf.j2"),
    )
    .unwrap();
    std::fs::write(
        nodes.dir.path().join("bad-site.conf.j2"),
        format!("{template}\nno_such_directive on;\n"),
    )
    .unwrap();
    std::fs::write(
        &settings,
        good.replace(
            "[nginx]\n",
            "[nginx]\nsite_template = \"bad-site.conf.j2\"\n",
        ),
    )
    .unwrap();
    let probe = Probe::start(&nodes);
    let err = nodes.fails(&["up"]);
    let samples = probe.finish();
    assert!(err.contains("refused the new site"), "{err}");
    assert!(err.contains("no_such_directive"), "{err}");
    assert_eq!(samples.iter().filter(|s| !s.ok).count(), 0, "{samples:?}");
    assert_eq!(
        nodes.https("GET", "/health/service_a", None, None).status,
        200
    );
    std::fs::write(&settings, good).unwrap();
    let (_, said) = nodes.ok(&["up"]);
    assert!(!said.contains("reloaded"), "{said}");
    assert_eq!(nodes.edge_container(), edge_before);

    nodes.ok(&["down", "--volumes", "--yes"]);
    for n in 1..=3 {
        assert_eq!(nodes.leftovers(n), Vec::<String>::new(), "node {n}");
    }
}
