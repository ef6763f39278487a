//! Process-level tests: a real Tansu broker process, a real librdkafka producer and real
//! `quiver-node` processes (killed with SIGKILL mid-ingest, stopped with SIGTERM).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod aggregations;
mod cluster;
mod drain;
mod fidelity;
mod history;
mod observability;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_proto::Partitioner;
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, GetOnlineFeaturesRequest, GetStatusRequest, GetStatusResponse,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use quiver_testkit::{Broker, NodeProcess};

const SHARDS: u32 = 8;
const KEYS: usize = 10_000;
const RECORDS: usize = 100_000;

const DEFS: &str = r#"
[[entity]]
name = "account"
key_type = "string"

[[view]]
name = "account_stats"
entity = "account"
[view.source]
topic = "TOPIC"
event_time_field = "ts"
[[view.feature]]
name = "seq"
type = "int64"
[[view.feature]]
name = "label"
type = "string"
"#;

/// What was produced: the expected latest row per key and the end offset per partition.
#[derive(Default)]
struct Produced {
    latest: HashMap<String, (i64, i64)>,
    end_offsets: BTreeMap<i32, i64>,
}

/// Produces `RECORDS` records over `KEYS` keys with a real librdkafka producer using
/// `partitioner`; event times are a permutation of the production order, so most keys
/// see out-of-order events.
async fn produce(bootstrap: &str, topic: &str, partitioner: Partitioner) -> Produced {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", partitioner.librdkafka_name())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let mut produced = Produced::default();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(2_000) {
        let sends = chunk.iter().map(|&i| {
            let key = format!("acct-{:05}", (i * 31) % KEYS);
            // gcd(7919, RECORDS) = 1: distinct event times, shuffled against send order.
            let ts = base + ((i * 7919) % RECORDS) as i64;
            let payload = format!(r#"{{"ts": {ts}, "seq": {i}, "label": "v{i}"}}"#);
            let producer = producer.clone();
            let topic = topic.to_owned();
            async move {
                let rec = FutureRecord::to(&topic)
                    .key(key.as_bytes())
                    .payload(payload.as_bytes());
                let d = producer
                    .send(rec, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
                (key, ts, i as i64, d.partition, d.offset)
            }
        });
        for (key, ts, seq, partition, offset) in futures::future::join_all(sends).await {
            assert_eq!(
                partition as u32,
                partitioner.shard_for_key(key.as_bytes(), SHARDS).0,
                "{partitioner}: {key}"
            );
            let end = produced.end_offsets.entry(partition).or_default();
            *end = (*end).max(offset + 1);
            let slot = produced.latest.entry(key).or_insert((i64::MIN, 0));
            if ts > slot.0 {
                *slot = (ts, seq);
            }
        }
    }
    produced
}

fn write_config(
    dir: &std::path::Path,
    bootstrap: &str,
    topic: &str,
    partitioner: Partitioner,
) -> std::path::PathBuf {
    let defs = dir.join("defs.toml");
    std::fs::write(&defs, DEFS.replace("TOPIC", topic)).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
node_id = 1
data_dir = "{data}"
[cluster]
shard_count = {SHARDS}
partitioner = "{partitioner}"
[kafka]
bootstrap_servers = "{bootstrap}"
[ingest]
max_batch_records = 500
poll_timeout = "50ms"
[registry]
definition_files = ["{defs}"]
[auth]
enabled = false
"#,
            data = dir.join("data").display(),
            defs = defs.display(),
        ),
    )
    .unwrap();
    cfg
}

async fn status(endpoint: &str) -> Option<GetStatusResponse> {
    let mut admin = AdminServiceClient::connect(endpoint.to_owned())
        .await
        .ok()?;
    Some(
        admin
            .get_status(GetStatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

fn consumed(s: &GetStatusResponse) -> u64 {
    s.shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_consumed)
        .sum()
}

/// Waits until every partition's next offset reached what was produced (partition EOF and
/// offsets, not the broker's high watermark, which Tansu under-reports).
async fn wait_all_consumed(node: &NodeProcess, produced: &Produced) -> GetStatusResponse {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(s) = status(&node.endpoint()).await {
            let next: BTreeMap<i32, i64> = s
                .shards
                .iter()
                .flat_map(|sh| {
                    sh.partitions
                        .iter()
                        .map(move |p| (sh.shard as i32, p.next_offset))
                })
                .collect();
            if produced
                .end_offsets
                .iter()
                .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
            {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node did not consume everything:\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that every key is served with exactly its latest-by-event-time value.
async fn verify_all_keys(node: &NodeProcess, produced: &Produced) {
    let mut client = FeatureServiceClient::connect(node.endpoint())
        .await
        .unwrap();
    let keys: Vec<&String> = produced.latest.keys().collect();
    assert_eq!(keys.len(), KEYS);
    for chunk in keys.chunks(1_000) {
        let req = GetOnlineFeaturesRequest {
            features: vec!["account_stats:seq".into(), "account_stats:label".into()],
            entity_keys: chunk.iter().map(|k| EntityKey::from(k.as_str())).collect(),
            // The per-cell form: these checks read `columns`.
            encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
            ..Default::default()
        };
        let resp = client.get_online_features(req).await.unwrap().into_inner();
        for (row, key) in chunk.iter().enumerate() {
            let (ts, seq) = produced.latest[*key];
            assert_eq!(
                resp.columns[0].statuses[row],
                FeatureStatus::Present as i32,
                "{key}"
            );
            assert_eq!(
                resp.columns[0].values[row].kind,
                Some(Kind::Int64Value(seq)),
                "{key}"
            );
            assert_eq!(
                resp.columns[1].values[row].kind,
                Some(Kind::StringValue(format!("v{seq}"))),
                "{key}"
            );
            assert_eq!(resp.columns[0].event_times_micros[row], ts * 1000, "{key}");
        }
    }
}

fn scrape_metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur2_ingest_survives_kill_9_mid_ingest_exactly() {
    let broker = Broker::start();
    broker.create_topic("accounts", SHARDS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &broker.bootstrap(),
        "accounts",
        Partitioner::Murmur2,
    );
    let node = NodeProcess::start(&cfg, dir.path(), 1);

    // Produce while the node ingests, and kill it with SIGKILL part-way.
    let bootstrap = broker.bootstrap();
    let producing =
        tokio::spawn(async move { produce(&bootstrap, "accounts", Partitioner::Murmur2).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        if let Some(s) = status(&node.endpoint()).await
            && consumed(&s) >= 20_000
        {
            break consumed(&s);
        }
        assert!(
            Instant::now() < deadline,
            "node did not ingest:\n{}",
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    node.kill_9();
    eprintln!("killed quiver-node with SIGKILL after {at_kill} of {RECORDS} records");
    assert!(
        at_kill < RECORDS as u64,
        "the kill must land mid-ingest (consumed {at_kill})"
    );

    let node = NodeProcess::start(&cfg, dir.path(), 2);
    let produced = producing.await.unwrap();
    let s = wait_all_consumed(&node, &produced).await;
    eprintln!(
        "after restart: consumed {} records, end offsets {:?}",
        consumed(&s),
        produced.end_offsets
    );
    // Offsets are stored in the same write batch as the rows: every record counted once.
    assert_eq!(
        consumed(&s),
        RECORDS as u64,
        "no record lost, none applied twice"
    );
    let applied: u64 = s
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_applied)
        .sum();
    let malformed: u64 = s
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_malformed)
        .sum();
    assert_eq!(malformed, 0);
    assert!(
        applied < RECORDS as u64,
        "out-of-order events must have been superseded"
    );
    verify_all_keys(&node, &produced).await;

    // A running node process answers the standard health check and exports metrics.
    let channel = tonic::transport::Endpoint::from_shared(node.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "quiver.v1.FeatureService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let metrics = scrape_metrics(node.metrics_port);
    assert!(metrics.contains("quiver_ingest_records_total"), "{metrics}");
    assert!(
        metrics.contains("quiver_serve_request_duration_seconds_bucket"),
        "{metrics}"
    );
    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc32_partitioner_end_to_end() {
    let broker = Broker::start();
    broker.create_topic("accounts_crc", SHARDS);
    let dir = tempfile::tempdir().unwrap();
    let produced = produce(&broker.bootstrap(), "accounts_crc", Partitioner::Crc32).await;
    let cfg = write_config(
        dir.path(),
        &broker.bootstrap(),
        "accounts_crc",
        Partitioner::Crc32,
    );
    let started = Instant::now();
    let node = NodeProcess::start(&cfg, dir.path(), 1);
    let s = wait_all_consumed(&node, &produced).await;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "quiver-node process ingested {RECORDS} records from Tansu in {secs:.2} s ({:.0} records/s, incl. start-up)",
        RECORDS as f64 / secs
    );
    assert_eq!(consumed(&s), RECORDS as u64);
    assert_eq!(s.partitioner, "crc32");
    verify_all_keys(&node, &produced).await;
    node.terminate();
}
