//! What the services' integration tests share.
#![allow(clippy::unwrap_used)]

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// An answer of a service: status, headers and the JSON body (every answer is JSON).
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// A string field of `data`.
    pub fn data(&self, key: &str) -> &str {
        self.body["data"][key].as_str().unwrap_or_default()
    }

    /// A field of `data`, whatever it holds.
    pub fn data_value(&self, key: &str) -> &Value {
        &self.body["data"][key]
    }
}

/// Sends the request; the answer must be JSON and carry an `X-Request-Id`.
pub async fn send(req: reqwest::RequestBuilder) -> TestResponse {
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("response to a request was not JSON: {text:?}"));
    assert!(
        headers.contains_key("x-request-id"),
        "{status} without X-Request-Id: {text}"
    );
    TestResponse {
        status,
        headers,
        body,
    }
}

/// The names of the fields listed in an error body's `errors`.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the error envelope: the status, success false, a message, and the request id of
/// the `X-Request-Id` header.
pub fn assert_error_envelope(res: &TestResponse, status: u16) {
    assert_eq!(res.status.as_u16(), status, "{}", res.body);
    assert_eq!(res.body["success"], false, "{}", res.body);
    assert!(res.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = res.body["requestId"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "missing requestId: {}", res.body);
    assert_eq!(
        res.headers["x-request-id"].to_str().unwrap(),
        id,
        "requestId must match the X-Request-Id header"
    );
}

/// A TCP relay to the test's database that can be cut (connections dropped, new ones refused)
/// and restored, as a database restart or a lost network does.
pub struct Relay {
    pub port: u16,
    up: watch::Sender<bool>,
}

impl Relay {
    /// A pool made as the services make theirs (small, quick to give up waiting) whose
    /// connections go through a new relay.
    pub async fn pool(options: PgPoolOptions, connect: &PgConnectOptions) -> (Self, PgPool) {
        let relay = Self::start(connect).await;
        let pool = svc_common::startup::guarded_pool(
            options
                .max_connections(5)
                .acquire_timeout(std::time::Duration::from_millis(500)),
            relay.options(connect),
        );
        (relay, pool)
    }

    /// Options that reach the same database through the relay.
    pub fn options(&self, connect: &PgConnectOptions) -> PgConnectOptions {
        connect.clone().host("127.0.0.1").port(self.port)
    }

    pub async fn start(connect: &PgConnectOptions) -> Self {
        let target = format!("{}:{}", connect.get_host(), connect.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, seen) = watch::channel(true);
        tokio::spawn(relay(Some(listener), port, target, seen));
        Self { port, up }
    }

    /// Up: connections pass. Down: open ones are dropped and new ones refused.
    pub fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn relay(
    mut listener: Option<TcpListener>,
    port: u16,
    target: String,
    mut up: watch::Receiver<bool>,
) {
    loop {
        if let Some(l) = &listener {
            tokio::select! {
                accepted = l.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(pipe(client, target.clone(), up.clone()));
                    }
                }
                _ = up.changed() => {}
            }
        } else if up.changed().await.is_err() {
            return;
        }
        let wanted = *up.borrow();
        if wanted != listener.is_some() {
            listener = if wanted {
                Some(TcpListener::bind(("127.0.0.1", port)).await.unwrap())
            } else {
                None
            };
        }
    }
}

async fn pipe(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let cut = async {
        while *up.borrow_and_update() {
            if up.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = cut => {}
    }
}

/// What an instance's metrics listener serves, parsed.
pub struct Scraped(MetricsExposition<PrometheusType, PrometheusValue>);

impl Scraped {
    /// `GET {base}/metrics`, which must answer 200 in the Prometheus text format.
    pub async fn from(base: &str) -> Self {
        let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        Self(openmetrics_parser::prometheus::parse_prometheus(&text).unwrap())
    }

    /// The value of the counter or gauge `name` whose labels are `labels`, or the count of the
    /// histogram; 0 when there is none (a counter not yet incremented has no sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(family) = self.0.families.get(name) else {
            return 0.0;
        };
        let found = family.iter_samples().find(|s| {
            s.get_labelset().is_ok_and(|set| {
                set.iter().count() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
        });
        match found.map(|s| &s.value) {
            None => 0.0,
            Some(PrometheusValue::Counter(c)) => c.value.as_f64(),
            Some(PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n)) => n.as_f64(),
            Some(PrometheusValue::Histogram(h)) => h.count.unwrap_or_default() as f64,
            Some(PrometheusValue::Summary(_)) => panic!("{name} is a summary"),
        }
    }

    /// Whether a metric named `name` is there at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.families.contains_key(name)
    }
}
