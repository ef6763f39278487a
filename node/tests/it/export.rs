//! `ExportFeatures` through one node of an in-process cluster: every key answered as of
//! its time whatever shard it falls in (read here or forwarded to a replica elsewhere),
//! in order, equal to a brute-force oracle of the produced history; a bad chunk ends the
//! stream with an error naming the problem; a replica that stops mid-way is replaced.

use std::collections::{BTreeMap, BTreeSet};

use quiver_proto::Partitioner;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, AsOf, FeatureStatus, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse, ResponseEncoding,
};
use serde_json::json;

use crate::cluster::{SHARDS, assert_every_replica_serves, start_cluster, wait_placed};
use crate::harness::{Kafka, TestNode};
use crate::ingest::{key, now_ms};

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "scores"
entity = "user"
history = "30d"
[view.source]
topic = "scores"
event_time_field = "ts"
[[view.feature]]
name = "score"
type = "int64"
"#;

const KEYS: i64 = 40;
/// Versions per key, `STEP_MS` apart.
const VERSIONS: i64 = 3;
const STEP_MS: i64 = 10_000;

/// One label row: a key and the time it is read as of (ms).
#[derive(Clone, Copy)]
struct Label {
    key: i64,
    t_ms: i64,
}

/// What key `k` had as of `t_ms` (brute force over what was produced): version v was
/// stamped `base + v × STEP_MS` with score `k × 10 + v`.
fn oracle(base: i64, k: i64, t_ms: i64) -> Option<i64> {
    (0..VERSIONS)
        .filter(|v| base + v * STEP_MS <= t_ms)
        .max()
        .map(|v| k * 10 + v)
}

fn chunk(labels: &[Label], exclude_late: bool) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: vec!["scores:score".into()],
        entity_keys: labels.iter().map(|l| key(&format!("u{}", l.key))).collect(),
        include_event_times: true,
        as_of: Some(AsOf {
            time_micros: 0,
            key_times_micros: labels.iter().map(|l| l.t_ms * 1_000).collect(),
            exclude_late_arrivals: exclude_late,
        }),
        ..Default::default()
    }
}

async fn export(
    node: &TestNode,
    chunks: Vec<GetOnlineFeaturesRequest>,
) -> (Vec<GetOnlineFeaturesResponse>, Option<tonic::Status>) {
    let mut stream = node
        .features
        .clone()
        .export_features(futures::stream::iter(chunks))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut answers = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(a)) => answers.push(a),
            Ok(None) => return (answers, None),
            Err(e) => return (answers, Some(e)),
        }
    }
}

/// Every label of `labels` (chunked by `size`) equals the oracle, in order.
fn check(base: i64, labels: &[Label], answers: &[GetOnlineFeaturesResponse], size: usize) {
    assert_eq!(
        answers.len(),
        labels.len().div_ceil(size),
        "one answer per chunk"
    );
    for (ci, (part, answer)) in labels.chunks(size).zip(answers).enumerate() {
        assert_eq!(answer.row_count as usize, part.len(), "chunk {ci}");
        let col = &answer.packed_columns[0];
        assert_eq!(col.name, "scores:score");
        for (i, l) in part.iter().enumerate() {
            let want = oracle(base, l.key, l.t_ms);
            match want {
                Some(v) => {
                    assert_eq!(
                        (col.status_at(i), col.int64s[i]),
                        (FeatureStatus::Present, v),
                        "chunk {ci} row {i}: u{} as of {}",
                        l.key,
                        l.t_ms
                    );
                    let version = v - l.key * 10;
                    assert_eq!(col.event_time_at(i), (base + version * STEP_MS) * 1_000);
                }
                None => assert_eq!(
                    col.status_at(i),
                    FeatureStatus::NotFound,
                    "chunk {ci} row {i}"
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_exports_every_shard_as_of_each_rows_time() {
    let kafka = Kafka::new(&[("scores", SHARDS as i32)]);
    let mut cluster = start_cluster(&kafka.bootstrap, 3).await;
    let all: BTreeSet<u64> = cluster.nodes.keys().copied().collect();
    let map = wait_placed(&cluster, 2, &all).await;
    cluster.nodes[&1]
        .admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let base = now_ms() - 60_000;
    let mut latest = BTreeMap::new();
    for v in 0..VERSIONS {
        for k in 0..KEYS {
            let ts = base + v * STEP_MS;
            kafka
                .send_json(
                    "scores",
                    &format!("u{k}"),
                    json!({"ts": ts, "score": k * 10 + v}),
                )
                .await;
            latest.insert(format!("u{k}"), k * 10 + v);
        }
    }
    assert_every_replica_serves(&cluster, &map, &latest, Kind::Int64Value).await;

    // Node 1 lacks some shards (4 shards × R = 2 over 3 nodes): their keys are forwarded.
    let held_by = |node: u64| -> BTreeSet<u32> {
        map.shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.node_id == node))
            .map(|s| s.shard)
            .collect()
    };
    let forwarded = (0..KEYS)
        .filter(|k| {
            let shard = Partitioner::Murmur2
                .shard_for_key(format!("u{k}").as_bytes(), SHARDS)
                .0;
            !held_by(1).contains(&shard)
        })
        .count();
    assert!(
        forwarded > 0,
        "node 1 holds every shard: nothing would be forwarded"
    );

    // Labels: every key at times before, between and after its versions, shuffled.
    let mut labels = Vec::new();
    for k in 0..KEYS {
        for t in [base - 1, base, base + 5_000, base + STEP_MS, base + 25_000] {
            labels.push(Label { key: k, t_ms: t });
        }
    }
    let mut rng = 0x9e37_79b9_u64;
    for i in (1..labels.len()).rev() {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        labels.swap(i, (rng >> 33) as usize % (i + 1));
    }
    const SIZE: usize = 37;
    let chunks = labels.chunks(SIZE).map(|c| chunk(c, false)).collect();
    let (answers, error) = export(&cluster.nodes[&1], chunks).await;
    assert!(error.is_none(), "{error:?}");
    check(base, &labels, &answers, SIZE);

    // As served: every version arrived after these times, so nothing had arrived by then.
    let (answers, error) = export(&cluster.nodes[&2], vec![chunk(&labels[..50], true)]).await;
    assert!(error.is_none(), "{error:?}");
    let col = &answers[0].packed_columns[0];
    assert!((0..50).all(|i| col.status_at(i) == FeatureStatus::NotFound));

    // A chunk answered in the per-cell form when it asks for it.
    let mut cells = chunk(&labels[..10], false);
    cells.encoding = ResponseEncoding::Cells as i32;
    let (answers, _) = export(&cluster.nodes[&3], vec![cells]).await;
    for (i, l) in labels[..10].iter().enumerate() {
        let want = oracle(base, l.key, l.t_ms).map(Kind::Int64Value);
        assert_eq!(answers[0].columns[0].values[i].kind, want, "cells row {i}");
    }

    // A bad chunk ends the stream with an error naming it; answers before it stand.
    let mut bad = chunk(&labels[..5], false);
    bad.features = vec!["scores:nope".into()];
    let good = || chunk(&labels[..5], false);
    let (answers, error) = export(&cluster.nodes[&1], vec![good(), bad, good()]).await;
    assert_eq!(answers.len(), 1);
    let error = error.expect("the bad chunk fails the stream");
    assert!(error.message().contains("nope"), "{error:?}");
    // A time older than the history is refused naming the retention.
    let mut old = chunk(&labels[..5], false);
    old.as_of.as_mut().unwrap().key_times_micros[0] = (base - 40 * 86_400_000) * 1_000;
    let (answers, error) = export(&cluster.nodes[&1], vec![old]).await;
    assert!(answers.is_empty());
    let error = error.expect("too old");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    // A replica holding shards node 1 lacks stops: its shards are read from their other
    // replicas (the map still lists it for a while), and every answer is still exact.
    let victim = *all
        .iter()
        .find(|&&n| n != 1 && !held_by(n).is_subset(&held_by(1)))
        .expect("a node holding a shard node 1 lacks");
    cluster.nodes.remove(&victim).unwrap().stop().await;
    let chunks = labels.chunks(SIZE).map(|c| chunk(c, false)).collect();
    let (answers, error) = export(&cluster.nodes[&1], chunks).await;
    assert!(error.is_none(), "{error:?}");
    check(base, &labels, &answers, SIZE);
}
