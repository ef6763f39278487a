//! Ingest semantics: every type, event-time LWW, tombstones, TTL, malformed records.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    DoubleList, EntityKey, FeatureRow, FeatureStatus, FloatVector, Int64List, StringList, Value,
};
use quiver_proto::{Partitioner, ShardId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;

use crate::harness::{Kafka, TestNode, config, eventually};

pub const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[entity]]
name = "card"
key_type = "int64"

[[view]]
name = "profile"
entity = "user"
ttl = "1h"
[view.source]
topic = "profile"
event_time_field = "ts"
[[view.feature]]
name = "b"
type = "bool"
[[view.feature]]
name = "i"
type = "int64"
[[view.feature]]
name = "f"
type = "float64"
[[view.feature]]
name = "s"
type = "string"
[[view.feature]]
name = "y"
type = "bytes"
[[view.feature]]
name = "v"
type = "float32_vector"
[[view.feature]]
name = "il"
type = "int64_list"
[[view.feature]]
name = "fl"
type = "float64_list"
[[view.feature]]
name = "sl"
type = "string_list"

[[view]]
name = "card_pb"
entity = "card"
[view.source]
topic = "cards"
format = "protobuf"
[[view.feature]]
name = "amount"
type = "float64"
[[view.feature]]
name = "tags"
type = "string_list"

[[feature_service]]
name = "svc"
features = ["profile:i", "profile:s"]
"#;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn key(s: &str) -> EntityKey {
    EntityKey::from(s)
}

pub const ALL: [&str; 9] = [
    "profile:b",
    "profile:i",
    "profile:f",
    "profile:s",
    "profile:y",
    "profile:v",
    "profile:il",
    "profile:fl",
    "profile:sl",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_type_round_trips_json_and_protobuf() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let ts = now_ms();
    kafka
        .send_json(
            "profile",
            "alice",
            json!({"ts": ts, "b": true, "i": -42, "f": 1.5, "s": "héllo", "y": "AAH/",
            "v": [0.25, -1.0], "il": [1, 2, 3], "fl": [2.5], "sl": ["x", "y"]}),
        )
        .await;
    let mut features = HashMap::new();
    features.insert(
        "amount".to_owned(),
        Value {
            kind: Some(Kind::Float64Value(99.5)),
        },
    );
    features.insert(
        "tags".to_owned(),
        Value {
            kind: Some(Kind::StringList(StringList {
                values: vec!["vip".into()],
            })),
        },
    );
    let row = FeatureRow {
        event_time_micros: ts * 1000,
        features,
    }
    .encode_to_vec();
    kafka
        .send("cards", Some(b"1234567890123"), Some(&row), None)
        .await;
    node.wait_consumed("profile", 1).await;
    node.wait_consumed("cards", 1).await;

    let resp = node
        .lookup(&ALL, vec![key("alice"), key("bob")])
        .await
        .unwrap();
    let want = [
        Kind::BoolValue(true),
        Kind::Int64Value(-42),
        Kind::Float64Value(1.5),
        Kind::StringValue("héllo".into()),
        Kind::BytesValue(vec![0, 1, 255]),
        Kind::Float32Vector(FloatVector {
            values: vec![0.25, -1.0],
        }),
        Kind::Int64List(Int64List {
            values: vec![1, 2, 3],
        }),
        Kind::Float64List(DoubleList { values: vec![2.5] }),
        Kind::StringList(StringList {
            values: vec!["x".into(), "y".into()],
        }),
    ];
    assert_eq!(resp.columns.len(), 9);
    for (col, w) in resp.columns.iter().zip(want) {
        assert_eq!(col.values[0].kind.as_ref(), Some(&w), "{}", col.name);
        assert_eq!(col.statuses[0], FeatureStatus::Present as i32);
        assert_eq!(col.event_times_micros[0], ts * 1000);
        assert_eq!(
            col.statuses[1],
            FeatureStatus::NotFound as i32,
            "bob was never written"
        );
        assert_eq!(col.values[1].kind, None);
    }
    // The watermark of the answering shard covers the record.
    let shard = Partitioner::Murmur2.shard_for_key(b"alice", 4);
    let wm = resp
        .watermarks
        .iter()
        .find(|w| w.shard == shard.0)
        .expect("watermark of alice's shard");
    assert!(
        wm.offsets
            .iter()
            .any(|o| o.topic == "profile" && o.next_offset >= 1)
    );

    let resp = node
        .lookup(
            &["card_pb:amount", "card_pb:tags"],
            vec![EntityKey::from(1_234_567_890_123i64)],
        )
        .await
        .unwrap();
    assert_eq!(
        resp.columns[0].values[0].kind,
        Some(Kind::Float64Value(99.5))
    );
    assert_eq!(
        resp.columns[1].values[0].kind,
        Some(Kind::StringList(StringList {
            values: vec!["vip".into()]
        }))
    );

    // A feature service resolves to its features; view:* to every feature.
    let req = quiver_proto::v1::GetOnlineFeaturesRequest {
        feature_service: "svc".into(),
        entity_keys: vec![key("alice")],
        // The per-cell form: these checks read `columns`.
        encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
        ..Default::default()
    };
    let resp = node
        .features
        .clone()
        .get_online_features(req)
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = resp.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["profile:i", "profile:s"]);
    assert_eq!(
        node.lookup(&["profile:*"], vec![key("alice")])
            .await
            .unwrap()
            .columns
            .len(),
        9
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_last_write_wins_and_tombstones() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let t = now_ms();
    // Out of order: the newer event arrives first; the older one must not overwrite it.
    kafka
        .send_json("profile", "a", json!({"ts": t, "i": 2}))
        .await;
    kafka
        .send_json("profile", "a", json!({"ts": t - 1000, "i": 1}))
        .await;
    // In order: the later event wins.
    kafka
        .send_json("profile", "b", json!({"ts": t - 1000, "i": 1}))
        .await;
    kafka
        .send_json("profile", "b", json!({"ts": t, "i": 2}))
        .await;
    // Tombstone (null payload, timed by the Kafka timestamp), then an older event: stays deleted.
    kafka
        .send_json("profile", "c", json!({"ts": t - 5000, "i": 1}))
        .await;
    kafka
        .send("profile", Some(b"c"), None, Some(t - 2000))
        .await;
    kafka
        .send_json("profile", "c", json!({"ts": t - 3000, "i": 9}))
        .await;
    // Tombstone then a newer event: present again.
    kafka
        .send("profile", Some(b"d"), None, Some(t - 2000))
        .await;
    kafka
        .send_json("profile", "d", json!({"ts": t, "i": 4}))
        .await;
    // JSON null payload is a tombstone too.
    kafka
        .send_json("profile", "e", json!({"ts": t - 5000, "i": 1}))
        .await;
    kafka
        .send("profile", Some(b"e"), Some(b"null"), Some(t - 1000))
        .await;
    node.wait_consumed("profile", 11).await;

    let resp = node
        .lookup(&["profile:i"], ["a", "b", "c", "d", "e"].map(key).to_vec())
        .await
        .unwrap();
    let col = &resp.columns[0];
    assert_eq!(
        col.values[0].kind,
        Some(Kind::Int64Value(2)),
        "older event must not overwrite newer"
    );
    assert_eq!(col.values[1].kind, Some(Kind::Int64Value(2)));
    assert_eq!(
        col.statuses[2],
        FeatureStatus::NotFound as i32,
        "tombstone deletes; older event must not resurrect"
    );
    assert_eq!(col.values[3].kind, Some(Kind::Int64Value(4)));
    assert_eq!(
        col.statuses[4],
        FeatureStatus::NotFound as i32,
        "JSON null is a tombstone"
    );
    assert_eq!(col.event_times_micros[0], t * 1000);

    let status = node.status().await;
    let applied: u64 = status
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_applied)
        .sum();
    let consumed: u64 = status
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_consumed)
        .sum();
    assert_eq!(consumed, 11);
    assert_eq!(
        applied, 9,
        "two superseded records (a's older event, c's older event)"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_enforced_at_read_and_expired_rows_are_removed() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, DEFS);
    cfg.ttl_sweep_interval = Some(Duration::from_millis(200));
    let node = TestNode::start(cfg).await;
    let t = now_ms();
    kafka
        .send_json("profile", "old", json!({"ts": t - 2 * 3_600_000, "i": 1}))
        .await;
    kafka
        .send_json("profile", "new", json!({"ts": t, "i": 2}))
        .await;
    node.wait_consumed("profile", 2).await;

    let resp = node
        .lookup(&["profile:i"], vec![key("old"), key("new")])
        .await;
    // The sweep may already have removed the expired row; both outcomes never serve it.
    let col = &resp.unwrap().columns[0];
    assert!(
        col.statuses[0] == FeatureStatus::Expired as i32
            || col.statuses[0] == FeatureStatus::NotFound as i32,
        "an expired value is never served as present"
    );
    assert_eq!(col.values[0].kind, None);
    assert_eq!(col.statuses[1], FeatureStatus::Present as i32);

    // The sweep (a compaction with the TTL filter) removes the expired row physically.
    let shard = node
        .node()
        .shard(Partitioner::Murmur2.shard_for_key(b"old", 4))
        .unwrap();
    let new_shard = Partitioner::Murmur2.shard_for_key(b"new", 4);
    let expected_left = u64::from(new_shard == shard.shard());
    eventually(
        Duration::from_secs(20),
        "expired row removed by the ttl sweep",
        || {
            let shard = shard.clone();
            async move { (shard.count_raw_rows().unwrap() == expected_left).then_some(()) }
        },
    )
    .await;
    let col = node
        .lookup(&["profile:i"], vec![key("old"), key("new")])
        .await
        .unwrap()
        .columns
        .remove(0);
    assert_eq!(col.statuses[0], FeatureStatus::NotFound as i32);
    assert_eq!(col.statuses[1], FeatureStatus::Present as i32);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_read_as_expired_before_any_sweep() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, DEFS);
    cfg.ttl_sweep_interval = None;
    let node = TestNode::start(cfg).await;
    let t = now_ms();
    kafka
        .send_json("profile", "old", json!({"ts": t - 2 * 3_600_000, "i": 1}))
        .await;
    node.wait_consumed("profile", 1).await;
    let col = node
        .lookup(&["profile:i"], vec![key("old")])
        .await
        .unwrap()
        .columns
        .remove(0);
    assert_eq!(col.statuses[0], FeatureStatus::Expired as i32);
    assert_eq!(col.values[0].kind, None, "an expired value is not served");
    assert_eq!(col.event_times_micros[0], (t - 2 * 3_600_000) * 1000);
    assert_eq!(
        node.node()
            .shard(ShardId(Partitioner::Murmur2.shard_for_key(b"old", 4).0))
            .unwrap()
            .count_raw_rows()
            .unwrap(),
        1
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_skipped_counted_and_dead_lettered() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4), ("dlq", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, DEFS);
    cfg.ingest.dead_letter_topic = Some("dlq".into());
    let node = TestNode::start(cfg).await;
    let t = now_ms();
    kafka
        .send_json("profile", "k1", json!({"ts": t, "i": 1}))
        .await;
    kafka
        .send("profile", Some(b"k1"), Some(b"{broken"), None)
        .await;
    kafka
        .send_json("profile", "k1", json!({"ts": t + 1, "i": "seven"}))
        .await;
    kafka
        .send("profile", None, Some(br#"{"ts": 1, "i": 1}"#), None)
        .await;
    kafka
        .send("cards", Some(b"not-a-number"), Some(b""), None)
        .await;
    kafka
        .send_json("profile", "k2", json!({"ts": t, "i": 2}))
        .await;
    node.wait_consumed("profile", 5).await;
    node.wait_consumed("cards", 1).await;

    let col = node
        .lookup(&["profile:i"], vec![key("k1"), key("k2")])
        .await
        .unwrap()
        .columns
        .remove(0);
    assert_eq!(
        col.values[0].kind,
        Some(Kind::Int64Value(1)),
        "the malformed newer record was skipped"
    );
    assert_eq!(
        col.values[1].kind,
        Some(Kind::Int64Value(2)),
        "records after malformed ones are applied"
    );
    let status = node.status().await;
    let malformed: u64 = status
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_malformed)
        .sum();
    assert_eq!(malformed, 4);

    // Each malformed record went to the dead-letter topic with its coordinates.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dlq", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reasons.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m.headers().expect("dead letters carry headers");
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            assert!(get("quiver-source-offset").is_some());
            assert!(get("quiver-source-topic").is_some());
            reasons.push(get("quiver-error").unwrap());
        }
    }
    assert_eq!(reasons.len(), 4, "dead letters: {reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("expected int64")),
        "{reasons:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioners_match_a_real_librdkafka_producer() {
    // Records produced by librdkafka with each partitioner land on the partition our
    // function computes, so a node configured with it finds them.
    for partitioner in [Partitioner::Murmur2, Partitioner::Crc32] {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 7, 1).unwrap();
        let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("partitioner", partitioner.librdkafka_name())
            .create()
            .unwrap();
        for i in 0..300 {
            let k = format!("entity-{i}-{}", "x".repeat(i % 9));
            let d = producer
                .send(
                    rdkafka::producer::FutureRecord::<_, [u8]>::to("t")
                        .key(k.as_bytes())
                        .payload(b"1"),
                    Duration::from_secs(5),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            assert_eq!(
                d.partition as u32,
                partitioner.shard_for_key(k.as_bytes(), 7).0,
                "{partitioner} key {k}"
            );
        }
    }
}
