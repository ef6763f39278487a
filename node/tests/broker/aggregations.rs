//! Aggregation views against the real broker and node processes: a replica killed with
//! SIGKILL mid-ingest and restarted answers exactly what an uninterrupted replica of the
//! same log answers (every feature, bit for bit, at the same watermark), and both equal
//! an oracle of the documented lateness rule for the lifetime count and sum.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_proto::Partitioner;
use quiver_proto::packed::ValueRef;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use quiver_testkit::{Broker, NodeProcess};

use super::{Produced, consumed, status, wait_all_consumed};

const AGG_SHARDS: u32 = 4;
const USERS: usize = 300;
const EVENTS: usize = 30_000;
const LATENESS_MS: i64 = 10 * 60 * 1000;

const AGG_DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "txn_aggs"
entity = "user"
[view.source]
topic = "raw_txns"
event_time_field = "ts"
[view.aggregation]
allowed_lateness = "10m"
leading_edge = "event_time"
[[view.input]]
name = "amount"
type = "int64"
[[view.input]]
name = "merchant"
type = "string"
[[view.feature]]
name = "n_1h"
function = "count"
window = "1h"
[[view.feature]]
name = "amount_sum_1h"
function = "sum"
input = "amount"
window = "1h"
[[view.feature]]
name = "amount_avg_24h"
function = "avg"
input = "amount"
window = "24h"
[[view.feature]]
name = "amount_max_7d"
function = "max"
input = "amount"
window = "7d"
[[view.feature]]
name = "merchants_24h"
function = "count_distinct"
input = "merchant"
window = "24h"
[[view.feature]]
name = "last_merchants"
function = "last_n"
input = "merchant"
window = "1h"
n = 5
[[view.feature]]
name = "n_life"
function = "count"
window = "lifetime"
[[view.feature]]
name = "amount_sum_life"
function = "sum"
input = "amount"
window = "lifetime"
"#;

fn config(dir: &std::path::Path, bootstrap: &str) -> std::path::PathBuf {
    let defs = dir.join("defs.toml");
    std::fs::write(&defs, AGG_DEFS).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
node_id = 1
data_dir = "{data}"
[cluster]
shard_count = {AGG_SHARDS}
partitioner = "murmur2"
[kafka]
bootstrap_servers = "{bootstrap}"
[ingest]
max_batch_records = 300
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

/// One produced event: (partition, offset, user, event time ms, amount).
type Sent = (i32, i64, String, i64, i64);

/// Produces raw events: times move forward ~0.3 s per event with most stamped up to 4
/// minutes early and one in 25 up to 40 minutes early (beyond the lateness, if the
/// shard has seen later events).
async fn produce_events(bootstrap: &str) -> (Produced, Vec<Sent>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", Partitioner::Murmur2.librdkafka_name())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 4 * 3_600_000;
    let mut produced = Produced::default();
    let mut sent = Vec::with_capacity(EVENTS);
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(1_000) {
        let sends = chunk.iter().map(|&i| {
            let user = format!("u{:03}", (i * 37) % USERS);
            let jitter = if i % 25 == 0 {
                (i * 7919) % 2_400_000
            } else {
                (i * 104_729) % 240_000
            };
            let ts = base + (i as i64) * 300 - jitter as i64;
            let amount = ((i * 31) % 5_000) as i64 - 100;
            let payload = format!(
                r#"{{"ts": {ts}, "amount": {amount}, "merchant": "m{}"}}"#,
                i % 37
            );
            let producer = producer.clone();
            async move {
                let rec = FutureRecord::to("raw_txns")
                    .key(user.as_bytes())
                    .payload(payload.as_bytes());
                let d = producer
                    .send(rec, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
                (d.partition, d.offset, user, ts, amount)
            }
        });
        for s in futures::future::join_all(sends).await {
            let end = produced.end_offsets.entry(s.0).or_default();
            *end = (*end).max(s.1 + 1);
            sent.push(s);
        }
    }
    (produced, sent)
}

/// The lateness rule replayed in log order per partition: lifetime count and sum per user.
fn oracle(sent: &[Sent]) -> HashMap<String, (i64, i64)> {
    let mut by_partition: BTreeMap<i32, Vec<&Sent>> = BTreeMap::new();
    for s in sent {
        by_partition.entry(s.0).or_default().push(s);
    }
    let mut out: HashMap<String, (i64, i64)> = HashMap::new();
    for events in by_partition.values_mut() {
        events.sort_by_key(|s| s.1);
        let mut wm: Option<i64> = None;
        for (_, _, user, ts, amount) in events.iter() {
            if wm.is_some_and(|w| *ts < w - LATENESS_MS) {
                continue;
            }
            wm = Some(wm.map_or(*ts, |w| w.max(*ts)));
            let e = out.entry(user.clone()).or_default();
            e.0 += 1;
            e.1 += amount;
        }
    }
    out
}

async fn read_all(node: &NodeProcess) -> GetOnlineFeaturesResponse {
    let mut client = FeatureServiceClient::connect(node.endpoint())
        .await
        .unwrap();
    let req = GetOnlineFeaturesRequest {
        features: vec!["txn_aggs:*".into()],
        entity_keys: (0..USERS)
            .map(|u| EntityKey::from(format!("u{u:03}").as_str()))
            .collect(),
        include_event_times: true,
        ..Default::default()
    };
    client.get_online_features(req).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_survive_kill_9_exactly_and_replicas_agree() {
    let broker = Broker::start();
    broker.create_topic("raw_txns", AGG_SHARDS);
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let cfg_a = config(dir_a.path(), &broker.bootstrap());
    let cfg_b = config(dir_b.path(), &broker.bootstrap());
    let a = NodeProcess::start(&cfg_a, dir_a.path(), 1);

    let bootstrap = broker.bootstrap();
    let producing = tokio::spawn(async move { produce_events(&bootstrap).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        if let Some(s) = status(&a.endpoint()).await
            && consumed(&s) >= 6_000
        {
            break consumed(&s);
        }
        assert!(
            Instant::now() < deadline,
            "node did not ingest:\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    a.kill_9();
    eprintln!("killed replica A with SIGKILL after {at_kill} of {EVENTS} events");
    assert!(at_kill < EVENTS as u64, "the kill must land mid-ingest");
    let a = NodeProcess::start(&cfg_a, dir_a.path(), 2);
    let (produced, sent) = producing.await.unwrap();
    // B reads the same log from the start, uninterrupted.
    let b = NodeProcess::start(&cfg_b, dir_b.path(), 1);
    let sa = wait_all_consumed(&a, &produced).await;
    wait_all_consumed(&b, &produced).await;
    assert_eq!(
        consumed(&sa),
        EVENTS as u64,
        "no event lost or applied twice"
    );

    let (ra, rb) = (read_all(&a).await, read_all(&b).await);
    assert_eq!(ra.watermarks, rb.watermarks, "same log position");
    assert_eq!(ra.packed_columns.len(), 8);
    assert_eq!(ra.packed_columns, rb.packed_columns, "identical aggregates");

    let want = oracle(&sent);
    let late = EVENTS as i64 - want.values().map(|(n, _)| n).sum::<i64>();
    eprintln!("{late} of {EVENTS} events were later than the allowed lateness");
    assert!(late > 0, "the stream must exercise the lateness rule");
    let col = |name: &str| {
        ra.packed_columns
            .iter()
            .find(|c| c.name == format!("txn_aggs:{name}"))
            .unwrap()
    };
    let (n_life, sum_life, n_1h) = (col("n_life"), col("amount_sum_life"), col("n_1h"));
    let mut recent = 0;
    for u in 0..USERS {
        let user = format!("u{u:03}");
        let (n, sum) = want[&user];
        assert_eq!(n_life.value(u), Some(ValueRef::Int64(n)), "{user}");
        assert_eq!(sum_life.value(u), Some(ValueRef::Int64(sum)), "{user}");
        if n_1h.status_at(u) == FeatureStatus::Present {
            recent += 1;
        }
    }
    assert!(
        recent > USERS / 2,
        "the 1-hour window holds most users ({recent})"
    );
    a.terminate();
    b.terminate();
}
