//! What `stackctl status` reports, and how it is worked out: request rates, latencies and error
//! shares from the edge's access log over the last minute (the edge sees every request, those it
//! answers itself too: 429s, 503s), the instances' own metrics, the databases, the backups and
//! the certificate. Gathering is the command's; this module only counts and lays out.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use comfy_table::{CellAlignment, Table, presets::NOTHING};
use serde::{Deserialize, Serialize};

use crate::stack::App;

/// The version of `status --json`'s shape; raised when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

/// The span the traffic figures cover.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One request the edge answered, read from its access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub at: DateTime<Utc>,
    /// The service its path routes to; `None` for the edge's own paths.
    pub app: Option<App>,
    pub status: u16,
    /// The whole request as the edge timed it.
    pub secs: f64,
    /// The instance that answered last (`ip:port`), when one did.
    pub upstream: Option<String>,
    pub upstream_secs: Option<f64>,
}

/// The fields of the edge's log line (nginx.conf's `log_format stack`) that are read.
#[derive(Deserialize)]
struct LogLine {
    time: DateTime<Utc>,
    request: String,
    status: u16,
    request_time: f64,
    upstream: String,
    upstream_response_time: String,
}

impl Answered {
    /// A line of the edge's output; `None` for what is not an access log line (nginx's own
    /// messages share the stream).
    pub fn parse(line: &str) -> Option<Self> {
        let line: LogLine = serde_json::from_str(line.trim()).ok()?;
        let path = line.request.split(' ').nth(1).unwrap_or_default();
        // After retries and internal redirects nginx lists every attempt: "a, b" or "a : b".
        let last = |list: &str| {
            list.rsplit([',', ' '])
                .find(|s| !s.is_empty() && *s != ":")
                .map(str::to_owned)
        };
        let upstream = last(&line.upstream);
        Some(Self {
            at: line.time,
            app: route_of(path),
            status: line.status,
            secs: line.request_time,
            upstream_secs: upstream
                .as_ref()
                .and_then(|_| last(&line.upstream_response_time)?.parse().ok()),
            upstream,
        })
    }
}

/// The service a public path goes to (site.conf.j2's locations).
fn route_of(path: &str) -> Option<App> {
    if path.starts_with("/a/") || path == "/health/service_a" {
        Some(App::Auth)
    } else if path.starts_with("/b/") || path == "/health/service_b" {
        Some(App::Payments)
    } else {
        None
    }
}

/// Requests over the window: how many, how fast answered, how many failed or were limited.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Traffic {
    pub requests: u64,
    pub per_sec: f64,
    /// Milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Shares of the requests, 0 to 1.
    pub share_5xx: f64,
    pub share_429: f64,
}

impl Traffic {
    /// The figures of `(status, seconds)` pairs seen over `window`.
    pub fn of(answers: impl IntoIterator<Item = (u16, f64)>, window: Duration) -> Self {
        let mut ms = Vec::new();
        let (mut failed, mut limited) = (0u64, 0u64);
        for (status, secs) in answers {
            ms.push(secs * 1000.0);
            failed += u64::from(status >= 500);
            limited += u64::from(status == 429);
        }
        let requests = ms.len() as u64;
        if requests == 0 {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            // Nearest rank: the smallest value with at least q of them at or below it.
            let i = (q * ms.len() as f64).ceil() as usize;
            ms.get(i.clamp(1, ms.len()) - 1).copied()
        };
        Self {
            requests,
            per_sec: requests as f64 / window.as_secs_f64(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            share_5xx: failed as f64 / requests as f64,
            share_429: limited as f64 / requests as f64,
        }
    }
}

/// Everything `status` shows; `status --json` prints it as it is (see the README).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: u32,
    pub project: String,
    pub at: DateTime<Utc>,
    pub window_secs: u64,
    pub edge: Edge,
    pub services: Vec<ServiceStatus>,
    pub databases: Vec<DatabaseStatus>,
    pub certificate: Option<Certificate>,
    pub backups: BackupPlace,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub container: String,
    pub health: String,
    /// Every request, the edge's own paths included.
    pub traffic: Traffic,
    /// Client connections open now (nginx's stub_status), when it could be read.
    pub connections: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// Every request routed to the service, those the edge answered for it (429, 503) too.
    pub traffic: Traffic,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub health: String,
    /// The requests it answered, timed from the edge to its answer.
    pub traffic: Traffic,
    /// From its metrics, when they could be read.
    pub metrics: Option<InstanceMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceMetrics {
    pub in_flight: u64,
    pub pool_in_use: u64,
    pub pool_max: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    pub service: String,
    pub container: String,
    pub health: String,
    pub size_bytes: Option<u64>,
    pub connections: Option<u64>,
    pub newest_backup: Option<NewestBackup>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewestBackup {
    pub file: String,
    pub taken: DateTime<Utc>,
    /// Its checksum matches the dump.
    pub intact: bool,
    /// When a drill restored it and found every check passing (`backup verify`), if one did.
    pub verified: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    pub expires: DateTime<Utc>,
    pub days_left: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupPlace {
    pub dir: String,
    /// Free to this user on the file system holding it.
    pub free_bytes: Option<u64>,
}

/// The figures shown of an instance's metrics (the Prometheus text its `metrics` command
/// prints); `None` when one is missing.
pub fn instance_metrics(text: &str) -> Option<InstanceMetrics> {
    use openmetrics_parser::PrometheusValue;
    let parsed = openmetrics_parser::prometheus::parse_prometheus(text).ok()?;
    let value = |name: &str| {
        let sample = parsed.families.get(name)?.iter_samples().next()?;
        match &sample.value {
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
            PrometheusValue::Counter(c) => Some(c.value.as_f64()),
            _ => None,
        }
    };
    let whole = |v: f64| v.max(0.0) as u64;
    let open = value("db_pool_connections")?;
    let idle = value("db_pool_idle_connections")?;
    Some(InstanceMetrics {
        in_flight: whole(value("http_requests_in_flight")?),
        pool_in_use: whole(open - idle),
        pool_max: whole(value("db_pool_max_connections")?),
        memory_bytes: whole(value("process_resident_memory_bytes")?),
    })
}

/// Client connections open at the edge, from nginx's stub_status page.
pub fn edge_connections(stub_status: &str) -> Option<u64> {
    stub_status
        .lines()
        .find_map(|l| l.strip_prefix("Active connections:"))?
        .trim()
        .parse()
        .ok()
}

/// Each service's and instance's traffic from what the edge answered in the window. `instances`
/// names the instances by address (`ip:port`), those of each service in order.
pub fn traffic(
    answered: &[Answered],
    instances: &HashMap<String, String>,
    window: Duration,
) -> (Traffic, HashMap<App, Traffic>, HashMap<String, Traffic>) {
    let all = Traffic::of(answered.iter().map(|a| (a.status, a.secs)), window);
    let by_app = App::ALL
        .into_iter()
        .map(|app| {
            let own = answered.iter().filter(|a| a.app == Some(app));
            (app, Traffic::of(own.map(|a| (a.status, a.secs)), window))
        })
        .collect();
    let mut by_instance: HashMap<String, Vec<(u16, f64)>> = HashMap::new();
    for a in answered {
        let (Some(addr), Some(secs)) = (&a.upstream, a.upstream_secs) else {
            continue;
        };
        if let Some(name) = instances.get(addr) {
            by_instance
                .entry(name.clone())
                .or_default()
                .push((a.status, secs));
        }
    }
    let by_instance = by_instance
        .into_iter()
        .map(|(name, seen)| (name, Traffic::of(seen, window)))
        .collect();
    (all, by_app, by_instance)
}

/// The screen: services and instances, then databases, then the certificate and the backups'
/// disk, within 80 columns.
pub fn render(s: &Status) -> String {
    let mut out = format!(
        "stack '{}' at {} UTC, requests of the last {} s\n",
        s.project,
        s.at.format("%Y-%m-%d %H:%M:%S"),
        s.window_secs
    );
    let mut services = table(&[
        "SERVICE", "INSTANCE", "HEALTH", "REQ/S", "P50ms", "P95ms", "P99ms", "5XX", "429", "POOL",
        "MEM",
    ]);
    services.add_row(traffic_row(
        "edge",
        &s.edge.container,
        &s.edge.health,
        &s.edge.traffic,
        true,
    ));
    for service in &s.services {
        services.add_row(traffic_row(
            &service.service,
            "(all)",
            "",
            &service.traffic,
            true,
        ));
        for i in &service.instances {
            let mut row = traffic_row("", &i.name, &i.health, &i.traffic, false);
            if let Some(m) = &i.metrics {
                row[9] = format!("{}/{}", m.pool_in_use, m.pool_max);
                row[10] = bytes(m.memory_bytes);
            }
            services.add_row(row);
        }
    }
    right_align(&mut services, 3..11);
    out.push_str(&lines_of(&services));

    let mut databases = table(&[
        "DATABASE",
        "HEALTH",
        "SIZE",
        "CONNS",
        "NEWEST BACKUP",
        "DRILL",
    ]);
    for d in &s.databases {
        let (newest, drill) = match &d.newest_backup {
            None => ("none".to_owned(), String::new()),
            Some(b) => (
                format!(
                    "{} ago{}",
                    age(s.at - b.taken),
                    if b.intact { "" } else { ", checksum bad" }
                ),
                b.verified.map_or_else(
                    || "not verified".to_owned(),
                    |at| format!("passed {} ago", age(s.at - at)),
                ),
            ),
        };
        databases.add_row(vec![
            d.container.clone(),
            d.health.clone(),
            d.size_bytes.map(bytes).unwrap_or_default(),
            d.connections.map(|c| c.to_string()).unwrap_or_default(),
            newest,
            drill,
        ]);
    }
    right_align(&mut databases, 2..4);
    out.push_str(&lines_of(&databases));

    let certificate = s.certificate.as_ref().map_or_else(
        || "no certificate".to_owned(),
        |c| format!("certificate: {} days left", c.days_left),
    );
    let connections = s
        .edge
        .connections
        .map(|c| format!(", connections open at the edge: {c}"))
        .unwrap_or_default();
    let free = s.backups.free_bytes.map_or_else(
        || "free space unknown".to_owned(),
        |f| format!("{} free", bytes(f)),
    );
    out.push_str(&format!(
        "{certificate}{connections}\nbackups: {} ({free})\n",
        s.backups.dir
    ));
    out
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.to_vec());
    // One space between columns, none before the first: eleven columns in 80.
    for c in t.column_iter_mut() {
        c.set_padding((0, 1));
    }
    t
}

/// The table's lines without the spaces that pad the last column.
fn lines_of(t: &Table) -> String {
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

fn right_align(t: &mut Table, columns: std::ops::Range<usize>) {
    for i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// A row of the services' table, with the columns the instance's metrics fill left empty.
fn traffic_row(
    service: &str,
    instance: &str,
    health: &str,
    t: &Traffic,
    with_429: bool,
) -> Vec<String> {
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    let share = |v: f64| {
        if t.requests == 0 {
            String::new()
        } else {
            format!("{:.1}%", v * 100.0)
        }
    };
    vec![
        service.to_owned(),
        instance.to_owned(),
        health.to_owned(),
        format!("{:.1}", t.per_sec),
        ms(t.p50_ms),
        ms(t.p95_ms),
        ms(t.p99_ms),
        share(t.share_5xx),
        if with_429 {
            share(t.share_429)
        } else {
            String::new()
        },
        String::new(),
        String::new(),
    ]
}

/// 1536 → "1.5K", in powers of 1024.
fn bytes(n: u64) -> String {
    let mut value = n as f64;
    for unit in ["B", "K", "M", "G", "T"] {
        if value < 1024.0 || unit == "T" {
            return if unit == "B" {
                format!("{n}B")
            } else {
                format!("{value:.1}{unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{n}B")
}

/// "42s", "17m", "5h", "3d".
fn age(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str, status: u16, secs: f64, upstream: &str, upstream_time: &str) -> String {
        format!(
            r#"{{"time":"2026-11-27T07:00:00+00:00","client":"127.0.0.1","request":"GET {path} HTTP/1.1","status":{status},"bytes":10,"request_time":{secs},"upstream":"{upstream}","upstream_status":"","upstream_connect_time":"","upstream_response_time":"{upstream_time}","request_id":"x"}}"#
        )
    }

    #[test]
    fn log_lines_name_the_service_and_the_instance_that_answered_last() {
        let a =
            Answered::parse(&line("/a/auth/me", 200, 0.004, "172.18.0.5:3000", "0.003")).unwrap();
        assert_eq!(a.app, Some(App::Auth));
        assert_eq!(a.upstream.as_deref(), Some("172.18.0.5:3000"));
        assert_eq!(a.upstream_secs, Some(0.003));
        let retried = Answered::parse(&line(
            "/b/payments",
            201,
            0.5,
            "172.18.0.7:4000, 172.18.0.8:4000",
            "0.100, 0.200",
        ))
        .unwrap();
        assert_eq!(retried.app, Some(App::Payments));
        assert_eq!(retried.upstream.as_deref(), Some("172.18.0.8:4000"));
        assert_eq!(retried.upstream_secs, Some(0.2));
        let limited = Answered::parse(&line("/a/auth/login", 429, 0.0, "", "")).unwrap();
        assert_eq!((limited.app, limited.upstream), (Some(App::Auth), None));
        let redirected = Answered::parse(&line(
            "/b/x",
            503,
            0.0,
            "127.0.0.1:9 : 172.18.0.7:4000",
            "0.000 : 0.001",
        ))
        .unwrap();
        assert_eq!(redirected.upstream.as_deref(), Some("172.18.0.7:4000"));
        assert_eq!(
            Answered::parse(&line("/edge/ping", 200, 0.0, "", ""))
                .unwrap()
                .app,
            None
        );
        assert_eq!(
            Answered::parse("2026/11/27 07:00:00 [warn] 7#7: an nginx message"),
            None
        );
    }

    #[test]
    fn instance_metrics_and_edge_connections_are_read_from_their_text() {
        let text = "\
# HELP db_pool_connections Connections the pool holds open, in use or idle.
# TYPE db_pool_connections gauge
db_pool_connections 4
# TYPE db_pool_idle_connections gauge
db_pool_idle_connections 1
# TYPE db_pool_max_connections gauge
db_pool_max_connections 10
# TYPE http_requests_in_flight gauge
http_requests_in_flight 2
# TYPE http_requests_total counter
http_requests_total{method=\"GET\",route=\"/payments/{reference}\",status=\"200\"} 7
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 19922944
";
        assert_eq!(
            instance_metrics(text),
            Some(InstanceMetrics {
                in_flight: 2,
                pool_in_use: 3,
                pool_max: 10,
                memory_bytes: 19_922_944,
            })
        );
        assert_eq!(instance_metrics("http_requests_in_flight 2\n"), None);
        let stub = "Active connections: 12 \nserver accepts handled requests\n 40 40 95 \nReading: 0 Writing: 1 Waiting: 11 \n";
        assert_eq!(edge_connections(stub), Some(12));
        assert_eq!(edge_connections("curl: (7) Failed to connect"), None);
    }

    #[test]
    fn traffic_counts_rates_nearest_rank_percentiles_and_shares() {
        let answers = (1..=100).map(|ms| {
            let status = match ms {
                1..=2 => 503,
                3..=7 => 429,
                _ => 200,
            };
            (status, f64::from(ms) / 1000.0)
        });
        let t = Traffic::of(answers, Duration::from_secs(50));
        assert_eq!(
            t,
            Traffic {
                requests: 100,
                per_sec: 2.0,
                p50_ms: Some(50.0),
                p95_ms: Some(95.0),
                p99_ms: Some(99.0),
                share_5xx: 0.02,
                share_429: 0.05,
            }
        );
        assert_eq!(Traffic::of([], WINDOW), Traffic::default());
        assert_eq!(Traffic::of([(200, 0.007)], WINDOW).p99_ms, Some(7.0));
    }

    #[test]
    fn instances_are_found_by_address_and_the_edge_answers_count_for_the_service() {
        let answered: Vec<Answered> = [
            line("/a/auth/me", 200, 0.002, "10.0.0.2:3000", "0.001"),
            line("/a/auth/me", 200, 0.004, "10.0.0.3:3000", "0.003"),
            line("/a/auth/login", 429, 0.0, "", ""),
            line("/edge/ping", 200, 0.0, "", ""),
        ]
        .iter()
        .filter_map(|l| Answered::parse(l))
        .collect();
        let names = HashMap::from([
            ("10.0.0.2:3000".to_owned(), "app_a1".to_owned()),
            ("10.0.0.3:3000".to_owned(), "app_a2".to_owned()),
        ]);
        let (all, apps, instances) = traffic(&answered, &names, Duration::from_secs(1));
        assert_eq!(all.requests, 4);
        assert_eq!(apps[&App::Auth].requests, 3);
        assert_eq!(apps[&App::Auth].share_429, 1.0 / 3.0);
        assert_eq!(apps[&App::Payments], Traffic::default());
        assert_eq!(instances["app_a1"].p50_ms, Some(1.0));
        assert_eq!(instances["app_a2"].p50_ms, Some(3.0));
        assert_eq!(instances.len(), 2);
    }

    #[test]
    fn the_screen_fits_80_columns() {
        let at: DateTime<Utc> = "2026-11-27T07:00:00Z".parse().unwrap();
        let busy = Traffic {
            requests: 7230,
            per_sec: 120.5,
            p50_ms: Some(1.2),
            p95_ms: Some(3.4),
            p99_ms: Some(18.1),
            share_5xx: 0.0,
            share_429: 0.021,
        };
        let instance = |name: &str, per_sec: f64| InstanceStatus {
            name: name.to_owned(),
            health: "healthy".to_owned(),
            traffic: Traffic {
                per_sec,
                ..busy.clone()
            },
            metrics: Some(InstanceMetrics {
                in_flight: 1,
                pool_in_use: 2,
                pool_max: 10,
                memory_bytes: 19 * 1024 * 1024,
            }),
        };
        let status = Status {
            schema: SCHEMA,
            project: "stack".to_owned(),
            at,
            window_secs: 60,
            edge: Edge {
                container: "nginx-proxy".to_owned(),
                health: "healthy".to_owned(),
                traffic: busy.clone(),
                connections: Some(12),
            },
            services: vec![
                ServiceStatus {
                    service: "auth".to_owned(),
                    traffic: busy.clone(),
                    instances: vec![instance("app_a1", 60.1), instance("app_a2", 60.4)],
                },
                ServiceStatus {
                    service: "payments".to_owned(),
                    traffic: Traffic::default(),
                    instances: vec![InstanceStatus {
                        name: "app_b1".to_owned(),
                        health: "starting".to_owned(),
                        traffic: Traffic::default(),
                        metrics: None,
                    }],
                },
            ],
            databases: vec![DatabaseStatus {
                service: "auth".to_owned(),
                container: "auth-db".to_owned(),
                health: "healthy".to_owned(),
                size_bytes: Some(8_500_000),
                connections: Some(6),
                newest_backup: Some(NewestBackup {
                    file: "auth-20261127T040000Z.sql.gz".to_owned(),
                    taken: "2026-11-27T04:00:00Z".parse().unwrap(),
                    intact: true,
                    verified: Some("2026-11-27T05:10:00Z".parse().unwrap()),
                }),
            }],
            certificate: Some(Certificate {
                expires: "2027-11-26T07:00:00Z".parse().unwrap(),
                days_left: 364,
            }),
            backups: BackupPlace {
                dir: "/srv/stack/backups".to_owned(),
                free_bytes: Some(52 * 1024 * 1024 * 1024),
            },
        };
        let screen = render(&status);
        let expected = "\
stack 'stack' at 2026-11-27 07:00:00 UTC, requests of the last 60 s
SERVICE  INSTANCE    HEALTH   REQ/S P50ms P95ms P99ms  5XX  429 POOL   MEM
edge     nginx-proxy healthy  120.5   1.2   3.4  18.1 0.0% 2.1%
auth     (all)                120.5   1.2   3.4  18.1 0.0% 2.1%
         app_a1      healthy   60.1   1.2   3.4  18.1 0.0%      2/10 19.0M
         app_a2      healthy   60.4   1.2   3.4  18.1 0.0%      2/10 19.0M
payments (all)                  0.0
         app_b1      starting   0.0
DATABASE HEALTH  SIZE CONNS NEWEST BACKUP DRILL
auth-db  healthy 8.1M     6 3h ago        passed 1h ago
certificate: 364 days left, connections open at the edge: 12
backups: /srv/stack/backups (52.0G free)
";
        assert_eq!(screen, expected, "\n{screen}");
        assert!(screen.lines().all(|l| l.chars().count() <= 80));
    }
}
