//! Observability for real: a single-node cluster on Tansu serves lookups and ingests
//! records (one malformed), a real Prometheus (Debian's `prometheus`, on loopback) scrapes
//! it, and the test queries Prometheus's API for the key series. Every metric named by
//! the shipped dashboard and alert rules must exist in the node's exposition, and
//! `promtool` must accept the rules.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{ApplyDefinitionsRequest, EntityKey, GetOnlineFeaturesRequest, PushRequest};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use quiver_testkit::{Broker, ClusterSettings, NodeProcess, free_port, initial_members};

const P: u32 = 4;
const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "clicks"
entity = "user"
[view.source]
topic = "clicks"
event_time_field = "ts"
[[view.feature]]
name = "n"
type = "int64"
[[view]]
name = "clicks_aggs"
entity = "user"
[view.source]
topic = "clicks"
event_time_field = "ts"
[view.aggregation]
[[view.input]]
name = "n"
type = "int64"
[[view.feature]]
name = "n_1h"
function = "count"
window = "1h"
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A plain HTTP/1.0 GET on loopback; the body.
fn http_get(port: u16, path_and_query: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant query, if it has exactly one series.
fn query_scalar(port: u16, q: &str) -> Option<f64> {
    let body = http_get(port, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Polls `q` until `ok(value)` or the deadline; the last value seen.
fn wait_query(port: u16, q: &str, ok: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = query_scalar(port, q);
        if last.is_some_and(&ok) {
            return last.unwrap();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("prometheus query {q:?} did not satisfy the check within {timeout:?}; last: {last:?}");
}

/// Metric families in a Prometheus exposition (histogram suffixes folded).
fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| fold_suffix(n).to_string())
        .collect()
}

fn fold_suffix(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every `quiver_*` / `process_*` identifier in `text` (dashboard JSON, alert rules).
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &text[i..];
        if starts_word && (rest.starts_with("quiver_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.insert(fold_suffix(&rest[..end]).to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dashboard_and_alert_names_are_found_by_the_scanner() {
    let names = referenced_names(
        r#"{"expr":"rate(quiver_serve_requests_total{code!=\"ok\"}[1m]) / process_cpu_seconds_total","x":"histogram_quantile(0.99, quiver_a_seconds_bucket)"} my_quiver_x"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "process_cpu_seconds_total",
            "quiver_a_seconds",
            "quiver_serve_requests_total"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_series_the_dashboard_and_alerts_use() {
    let broker = Broker::start();
    broker.create_topic("clicks", P);
    broker.create_topic("clicks-dead", 1);
    let root = tempfile::tempdir().unwrap();
    let mut settings = ClusterSettings::new(broker.bootstrap());
    settings.shard_count = P;
    settings.replication_factor = 1;
    let member = initial_members(root.path(), 1, &settings).remove(0);
    // Malformed records go to a dead-letter topic (its counter is on the dashboard).
    let config = std::fs::read_to_string(&member.config).unwrap().replace(
        "[kafka]\n",
        "[kafka]\ndead_letter_topic = \"clicks-dead\"\n",
    );
    // A small push quota, so one push below is refused and the shed counter (on the
    // dashboard) exists.
    let config = config.replace(
        "[limits]\n",
        "[limits]\nmax_push_rows = 10\nmax_push_rows_per_second = 10\n",
    );
    std::fs::write(&member.config, config).unwrap();
    let node = NodeProcess::start_member(&member, 1, None);

    // Register the view once the control plane has a leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = async {
            let mut admin = AdminServiceClient::connect(node.endpoint()).await.ok()?;
            admin
                .apply_definitions(ApplyDefinitionsRequest {
                    toml: VIEWS.into(),
                    dry_run: false,
                })
                .await
                .ok()
        }
        .await;
        if applied.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "view not registered: {}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        // The cluster's partitioner (librdkafka's default is crc32-based).
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..200i64 {
        let key = format!("u{}", i % 50);
        let payload = format!(r#"{{"ts":{},"n":{i}}}"#, now_ms + i);
        producer
            .send(
                FutureRecord::to("clicks").key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    producer
        .send(
            FutureRecord::to("clicks").key("u1").payload("not json"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Lookups until the ingested values are served, then some more; one push.
    let mut features = FeatureServiceClient::connect(node.endpoint())
        .await
        .unwrap();
    let req = || GetOnlineFeaturesRequest {
        features: vec!["clicks:n".into()],
        entity_keys: (0..50).map(|k| EntityKey::from(format!("u{k}"))).collect(),
        // The per-cell form: these checks read `columns`.
        encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = features
            .get_online_features(req())
            .await
            .map(|r| {
                r.into_inner().columns[0]
                    .values
                    .iter()
                    .filter(|v| v.kind.is_some())
                    .count()
            })
            .unwrap_or(0);
        if served == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "values not served: {}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        features.get_online_features(req()).await.unwrap();
    }
    // The aggregation view over the same records counts them (its series are on the
    // dashboard too): u1 has 4 of the 200 records over 50 keys.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let aggs = features
            .get_online_features(GetOnlineFeaturesRequest {
                features: vec!["clicks_aggs:n_1h".into()],
                entity_keys: vec![EntityKey::from("u1")],
                encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let n = aggs.columns[0].values[0].kind.clone();
        if n == Some(quiver_proto::v1::value::Kind::Int64Value(4)) {
            break;
        }
        assert!(Instant::now() < deadline, "u1 counted {n:?}, want 4");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    features
        .push(PushRequest {
            view: "clicks".into(),
            rows: vec![quiver_proto::v1::PushRow {
                entity_key: Some(EntityKey::from("u1")),
                features: [("n".to_string(), quiver_proto::v1::Value::from(7i64))].into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let over = features
        .push(PushRequest {
            view: "clicks".into(),
            rows: (0..10)
                .map(|i| quiver_proto::v1::PushRow {
                    entity_key: Some(EntityKey::from(format!("q{i}"))),
                    features: [("n".to_string(), quiver_proto::v1::Value::from(i))].into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");

    // A real Prometheus scraping the node every second.
    let prom_port = free_port();
    let prom_dir = root.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: quiver\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            member.metrics
        ),
    )
    .unwrap();
    let log = std::fs::File::create(prom_dir.join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "start prometheus (Debian package `prometheus`, installed by scripts/setup.sh)",
            ),
    );

    let t = Duration::from_secs(60);
    wait_query(prom_port, r#"up{job="quiver"}"#, |v| v == 1.0, t);
    let ok = wait_query(
        prom_port,
        r#"sum(quiver_serve_requests_total{rpc="get_online_features",code="ok"})"#,
        |v| v >= 21.0,
        t,
    );
    assert!(ok >= 21.0);
    // Every executed lookup was admitted first, and its admission wait recorded: the
    // waits' count is the executions' (inline or on the blocking pool).
    let executed = wait_query(
        prom_port,
        "sum(quiver_serve_lookup_executions_total)",
        |v| v >= 21.0,
        t,
    );
    wait_query(
        prom_port,
        r#"sum(quiver_serve_lookup_wait_seconds_count{stage="admission"})"#,
        |v| v == executed,
        t,
    );
    // Lag per shard: one series per shard, each caught up.
    wait_query(
        prom_port,
        "count(quiver_ingest_lag_records)",
        |v| v == f64::from(P),
        t,
    );
    wait_query(prom_port, "max(quiver_ingest_lag_records)", |v| v == 0.0, t);
    wait_query(
        prom_port,
        r#"sum(quiver_ingest_records_total)"#,
        |v| v >= 201.0,
        t,
    );
    // The one malformed record, counted once per view reading its topic (two).
    wait_query(
        prom_port,
        "sum(quiver_ingest_malformed_records_total)",
        |v| v == 2.0,
        t,
    );
    wait_query(
        prom_port,
        r#"count(quiver_replica_state{state="serving"} == 1)"#,
        |v| v == f64::from(P),
        t,
    );
    wait_query(prom_port, "max(quiver_control_is_leader)", |v| v == 1.0, t);
    wait_query(prom_port, "max(quiver_node_ready)", |v| v == 1.0, t);
    // Freshness of the view: its newest event is the newest produced (or pushed) one.
    let age = wait_query(
        prom_port,
        r#"time() - max by (view) (quiver_view_newest_event_timestamp_seconds{view="clicks"})"#,
        |v| v < 600.0,
        t,
    );
    assert!(age > -5.0, "freshness {age}");

    // Every metric the dashboard and the alert rules use is in the exposition.
    let exposition = http_get(member.metrics, "/metrics").expect("scrape the node");
    let exposed = exposed_names(&exposition);
    let deploy = repo_root().join("deploy");
    for file in ["grafana/quiver.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let used = referenced_names(&text);
        assert!(used.len() > 5, "{file} names only {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the node does not expose: {missing:?}"
        );
    }

    // promtool accepts the shipped rules.
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(deploy.join("prometheus/alerts.yml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.terminate();
}
