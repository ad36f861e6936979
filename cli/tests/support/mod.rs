//! What the end-to-end tests share: load generators that count every failed request.
#![allow(clippy::unwrap_used, dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The stackctl the tests run: a release build, since the images it starts hold it and a debug
/// build's services are too slow for the loads. Built once per test binary, beside this one.
pub fn stackctl() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = cargo()
            .args(["build", "--release", "--locked", "-p", "stackctl"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --release -p stackctl");
        let debug = Path::new(env!("CARGO_BIN_EXE_stackctl"));
        debug
            .parent()
            .unwrap()
            .with_file_name("release")
            .join("stackctl")
    })
}

/// Cargo in the checkout, without the variables cargo gives a test of its package: build
/// scripts (ring's) would take those for a change and build again what a build outside the
/// tests made.
pub fn cargo() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(source_dir());
    let given = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if given.iter().any(|prefix| key.starts_with(prefix)) {
            cargo.env_remove(&*key);
        }
    }
    cargo
}

/// Sends `signal` (`-INT`, `-TERM`) to a child process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// wrk running `setup/load.lua` against the stack until [`Load::finish`].
pub struct Load {
    child: std::process::Child,
}

impl Load {
    /// `connection`: `close` (a connection per request) or `keep-alive` (reused connections).
    /// Two loads at once need different `instance`s (0, 1): they register different users.
    pub fn start(base: &str, token: &str, reference: &str, connection: &str, instance: u8) -> Self {
        let child = Command::new("wrk")
            .args(["-t2", "-c4", "-d30m", "--timeout", "10s", "-s"])
            .arg(source_dir().join("setup/load.lua"))
            .arg(base)
            .env("LOAD_TOKEN", token)
            .env("LOAD_REFERENCE", reference)
            .env("LOAD_CONNECTION", connection)
            .env("LOAD_INSTANCE", instance.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("wrk is installed by setup/setup.sh");
        Self { child }
    }

    /// Stops wrk (SIGINT makes it report) and returns its counters.
    pub fn finish(self) -> LoadCounts {
        signal(&self.child, "-INT");
        let out = self.child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stdout
            .lines()
            .find(|l| l.starts_with("LOAD "))
            .unwrap_or_else(|| panic!("no LOAD line from wrk:\n{stdout}\n{stderr}"));
        let counters = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect();
        eprintln!("{line}\n{stderr}");
        LoadCounts {
            counters,
            failures: stderr,
        }
    }
}

/// What a [`Load`] counted, and the first failed answers as wrk's script wrote them.
#[derive(Debug)]
pub struct LoadCounts {
    pub counters: std::collections::BTreeMap<String, u64>,
    pub failures: String,
}

impl std::ops::Index<&str> for LoadCounts {
    type Output = u64;

    fn index(&self, key: &str) -> &u64 {
        &self.counters[key]
    }
}

/// What h2load runs counted, summed.
#[derive(Debug, Default)]
pub struct H2Counts {
    pub runs: u64,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
}

impl H2Counts {
    /// Every finished request succeeded and every answer was a 2xx. A run's end can cut a
    /// stream after its headers: its 2xx is counted, though the request is not finished.
    pub fn all_served(&self) -> bool {
        (self.failed, self.errored, self.timeout) == (0, 0, 0)
            && self.succeeded == self.requests
            && self.status_2xx >= self.requests
            && self.status_3xx + self.status_4xx + self.status_5xx == 0
    }
}

/// h2load, an HTTP/2 client, paced, in back-to-back runs of 5 s (each holds its connections
/// open throughout) until [`H2Load::finish`]: reads, or payment creations with `body`.
pub struct H2Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<H2Counts>,
}

impl H2Load {
    pub fn start(base: &str, token: &str, paths: &[String], body: Option<&Path>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut args: Vec<String> = ["--rps", "20", "-c", "2", "-m", "1", "-D", "5"]
            .map(str::to_owned)
            .to_vec();
        args.extend(["-H".to_owned(), format!("authorization: Bearer {token}")]);
        if let Some(body) = body {
            args.extend(["-H".to_owned(), "content-type: application/json".to_owned()]);
            args.extend(["-d".to_owned(), body.display().to_string()]);
        }
        args.extend(paths.iter().map(|p| format!("{base}{p}")));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut counts = H2Counts::default();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = Command::new("h2load")
                        .args(&args)
                        .output()
                        .expect("h2load is installed by setup/setup.sh");
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        text.contains("Application protocol: h2"),
                        "an HTTP/2 run:\n{text}"
                    );
                    let numbers = |prefix: &str| -> Vec<u64> {
                        let line = text
                            .lines()
                            .find(|l| l.starts_with(prefix))
                            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}"));
                        line[prefix.len()..]
                            .split(',')
                            .filter_map(|f| f.split_whitespace().next()?.parse().ok())
                            .collect()
                    };
                    // total, started, done, succeeded, failed, errored, timeout
                    let requests = numbers("requests: ");
                    // 2xx, 3xx, 4xx, 5xx
                    let statuses = numbers("status codes: ");
                    counts.runs += 1;
                    counts.requests += requests[2];
                    counts.succeeded += requests[3];
                    counts.failed += requests[4];
                    counts.errored += requests[5];
                    counts.timeout += requests[6];
                    counts.status_2xx += statuses[0];
                    counts.status_3xx += statuses[1];
                    counts.status_4xx += statuses[2];
                    counts.status_5xx += statuses[3];
                }
                counts
            }
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> H2Counts {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let counts = self.thread.join().unwrap();
        eprintln!("h2load: {counts:?}");
        counts
    }
}

/// No request of a load failed: every one answered 2xx.
pub fn assert_all_served(counts: &LoadCounts) {
    assert!(counts["requests"] > 500, "a steady load ran: {counts:?}");
    for key in ["failed", "connect", "read", "write", "timeout"] {
        assert_eq!(counts[key], 0, "{key}: {counts:?}");
    }
    assert_eq!(counts["ok"], counts["requests"], "{counts:?}");
}

/// A webhook receiver on loopback, in a thread of its own: answers 500 to the first POST (so
/// the sender's retry shows) and 200 to the others, and keeps every JSON body.
pub struct Receiver {
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    pub fn start() -> Self {
        use axum::{Json, extract::State, http::StatusCode, routing::post};
        type Bodies = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;
        let bodies: Bodies = Default::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = bodies.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new()
                    .route(
                        "/hook",
                        post(|State(bodies): State<Bodies>, Json(body): Json<serde_json::Value>| async move {
                            let mut bodies = bodies.lock().unwrap();
                            bodies.push(body);
                            if bodies.len() == 1 {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            }
                        }),
                    )
                    .with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { url, bodies }
    }

    /// Every body received so far, the refused first one included.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A local S3-compatible store over TLS (`setup/s3-server.sh`), stopped when dropped.
pub struct S3Store {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl S3Store {
    pub fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(source_dir().join("setup/s3-server.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, endpoint }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// `curl` against the store; the test server takes unsigned requests.
    fn curl(&self, args: &[&str], path: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(self.ca_file())
            .args(args)
            .arg(format!("{}/{path}", self.endpoint))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.curl(&["-X", "PUT"], bucket);
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let file = self.dir.path().join("upload");
        std::fs::write(&file, bytes).unwrap();
        let data = format!("@{}", file.display());
        self.curl(
            &[
                "-X",
                "PUT",
                "-H",
                "content-type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            &format!("{bucket}/{key}"),
        );
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> std::collections::BTreeSet<String> {
        let listing = self.curl(&[], &format!("{bucket}?list-type=2&prefix={prefix}"));
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>"))
            .map(|(key, _)| key.to_owned())
            .collect()
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(source_dir().join("setup/s3-server.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
