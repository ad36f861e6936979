//! The edge's balancer, `templates/images/nginx/stack_routes.lua`, in a real nginx with Debian's
//! lua module (installed by `setup/setup.sh`), outside any container: routes replaced through
//! its socket, round robin, retries, the passive health check, refused documents, no instance.
#![allow(clippy::unwrap_used)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

const BALANCER: &str = include_str!("../../templates/images/nginx/stack_routes.lua");

/// A port nothing listens on (the listener is closed again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Edge {
    dir: tempfile::TempDir,
    front: u16,
}

impl Edge {
    /// nginx proxying `/` to the `auth` routes, with two backends answering their own port.
    fn start(backends: [u16; 2]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("lua")).unwrap();
        std::fs::write(root.join("lua/stack_routes.lua"), BALANCER).unwrap();
        let front = free_port();
        let [one, two] = backends;
        let conf = format!(
            r#"load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
  log_format tried '$upstream_addr';
  lua_package_path "{root}/lua/?.lua;;";
  lua_shared_dict stack_routes 1m;
  init_by_lua_block {{ require("stack_routes").init("{root}/routes.json") }}
  upstream service_a {{
    server 127.0.0.1:9 down;
    balancer_by_lua_block {{ require("stack_routes").balance("auth") }}
    keepalive 8;
  }}
  server {{
    listen unix:{root}/routes.sock;
    access_log off;
    location = /routes {{ content_by_lua_block {{ require("stack_routes").put() }} }}
  }}
  server {{
    listen 127.0.0.1:{one};
    listen 127.0.0.1:{two};
    access_log off;
    location / {{ return 200 "$server_port"; }}
  }}
  server {{
    listen 127.0.0.1:{front};
    access_log {root}/tried.log tried;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 2;
    location / {{ proxy_pass http://service_a; }}
  }}
}}
"#,
            root = root.display()
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let edge = Self { dir, front };
        edge.nginx(&[]);
        edge
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn nginx(&self, args: &[&str]) {
        let out = Command::new("nginx")
            .arg("-c")
            .arg(self.root().join("nginx.conf"))
            .arg("-p")
            .arg(self.root())
            .args(args)
            .output()
            .expect("nginx with Debian's lua module is installed by setup/setup.sh");
        assert!(
            out.status.success(),
            "nginx {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The master has started or signalled its workers; give them a moment.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    /// PUT /routes; the status and the body.
    fn put(&self, document: &str) -> (u16, String) {
        let socket: PathBuf = self.root().join("routes.sock");
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", "PUT", "--unix-socket"])
            .arg(&socket)
            .args(["--data-binary", document, "http://edge/routes"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_owned())
    }

    /// GET / through the balancer: the status and the backend's port when it answered.
    fn get(&self) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}/", self.front))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_owned())
    }

    /// How many times requests were sent to `port` so far.
    fn attempts(&self, port: u16) -> usize {
        std::fs::read_to_string(self.root().join("tried.log"))
            .unwrap_or_default()
            .matches(&format!("127.0.0.1:{port}"))
            .count()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(self.root().join("nginx.conf"))
            .arg("-p")
            .arg(self.root())
            .args(["-s", "stop"])
            .output();
    }
}

fn routes(ports: &[u16]) -> String {
    let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!("{{\"auth\":[{}],\"payments\":[]}}", peers.join(","))
}

#[test]
fn routes_change_without_a_reload_and_the_balancer_spreads_retries_and_rests() {
    let (one, two, dead) = (free_port(), free_port(), free_port());
    let edge = Edge::start([one, two]);

    // Before any routes: no instance, 502 (the site makes it a 503).
    assert_eq!(edge.get().0, 502);

    assert_eq!(edge.put(&routes(&[one, two])).0, 204);
    let answers: Vec<String> = (0..8).map(|_| edge.get()).map(|(_, port)| port).collect();
    for port in [one, two] {
        assert_eq!(
            answers.iter().filter(|a| **a == port.to_string()).count(),
            4,
            "round robin: {answers:?}"
        );
    }

    // Documents that are not routes are refused, and the routes stay.
    for (document, why) in [
        ("not json", "not a JSON object"),
        (
            r#"{"auth":["127.0.0.1:80","app_a1:3000"]}"#,
            "auth: address 2",
        ),
        (r#"{"auth":["300.0.0.1:80"]}"#, "auth: address 1"),
        (r#"{"nginx":[]}"#, "unknown service nginx"),
        (r#"{"auth":"127.0.0.1:80"}"#, "auth: not a list"),
    ] {
        let (status, body) = edge.put(document);
        assert_eq!(status, 400, "{document}");
        assert!(body.contains(why), "{document}: {body}");
    }
    assert_eq!(edge.get().0, 200, "the routes stayed");

    // An instance that refuses connections: every request is retried on the other one, and
    // after three failures the balancer leaves it out.
    assert_eq!(edge.put(&routes(&[dead, one])).0, 204);
    for _ in 0..30 {
        assert_eq!(edge.get(), (200, one.to_string()));
    }
    let attempts = edge.attempts(dead);
    assert!(
        (1..=3).contains(&attempts),
        "{attempts} attempts on the dead instance"
    );

    // A reload starts from the routes last handed over (stack-edge keeps them in the file).
    std::fs::write(edge.root().join("routes.json"), routes(&[two])).unwrap();
    edge.nginx(&["-s", "reload"]);
    for _ in 0..4 {
        assert_eq!(edge.get(), (200, two.to_string()));
    }

    // No instance routed: 502, and the next routes serve again at once.
    assert_eq!(edge.put(&routes(&[])).0, 204);
    assert_eq!(edge.get().0, 502);
    assert_eq!(edge.put(&routes(&[one])).0, 204);
    assert_eq!(edge.get(), (200, one.to_string()));
}
