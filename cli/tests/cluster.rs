//! `stackctl cluster` against a real three-node swarm: three Docker engines, each in a network
//! namespace of its own (`setup/cluster.sh`). Forming the swarm, running `init` again, adopting a
//! node that left, refusing a node of another swarm, and a node's engine stopped and started.
//! Needs root and the Docker engine, so it is ignored by default:
//! `cargo test -p stackctl --test cluster -- --ignored` (setup/test.sh runs it).
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stackctl");

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
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes = Self { dir };
        nodes.script(&["start"]);
        let table = std::fs::read_to_string(nodes.nodes_dir().join("cluster.toml")).unwrap();
        std::fs::write(
            nodes.dir.path().join("stack.toml"),
            format!("project = \"cluster-e2e\"\n{table}"),
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
        Command::new(BIN)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
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
    let nodes = Nodes::start();

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
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .args(["cluster", "init"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(says), "{err}");
    }
    std::fs::write(dir.path().join("stack.toml"), "project = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["cluster", "status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("has no [cluster] table"), "{err}");
}
