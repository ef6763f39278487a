//! Aggregation views against plain views, side by side in one run (docs/AGGREGATIONS.md,
//! docs/PERFORMANCE.md "Aggregation views"):
//!
//! - ingest: decode + apply (with its `WriteBatch`) per record, for a plain view of six
//!   float64 features and an aggregation view of six windowed features (1 h, 24 h and
//!   7 d windows), in steady state: each store is first filled with seven days of
//!   history (an event per entity per hour), and the measured records continue it;
//! - lookup: 100 keys × the six features of each view (plan, reads, answer assembly),
//!   measured first, on the filled stores (both flushed to files, read through the
//!   block cache).
//!
//! Run: `cargo bench -p quiver-bench --bench aggregations`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver_node::config::NodeConfigFile;
use quiver_node::ingest::decode::{RawRecord, decode_record};
use quiver_node::registry::{FeatureView, KeyType, Registry};
use quiver_node::serve::lookup::{ExecError, ReadMode, execute, replicas_for};
use quiver_node::serve::plan::{PlanCache, plan_keys};
use quiver_node::storage::row_codec::encode_row;
use quiver_node::storage::{
    AggEvent, IngestBatch, RowWrite, ShardStore, StorageConfig, StorageEngine, TopicProgress, keys,
};
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::v1::{EntityKey, GetOnlineFeaturesRequest};
use quiver_proto::{Partitioner, ShardId};

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "plain"
entity = "user"
[view.source]
topic = "plain"
event_time_field = "ts"
[[view.feature]]
name = "f0"
type = "float64"
[[view.feature]]
name = "f1"
type = "float64"
[[view.feature]]
name = "f2"
type = "float64"
[[view.feature]]
name = "f3"
type = "float64"
[[view.feature]]
name = "f4"
type = "float64"
[[view.feature]]
name = "f5"
type = "float64"

[[view]]
name = "aggs"
entity = "user"
[view.source]
topic = "raw"
event_time_field = "ts"
[view.aggregation]
allowed_lateness = "1h"
[[view.input]]
name = "amount"
type = "float64"
[[view.input]]
name = "merchant"
type = "string"
[[view.feature]]
name = "n_1h"
function = "count"
window = "1h"
[[view.feature]]
name = "sum_1h"
function = "sum"
input = "amount"
window = "1h"
[[view.feature]]
name = "avg_24h"
function = "avg"
input = "amount"
window = "24h"
[[view.feature]]
name = "max_24h"
function = "max"
input = "amount"
window = "24h"
[[view.feature]]
name = "sum_7d"
function = "sum"
input = "amount"
window = "7d"
[[view.feature]]
name = "merchants_7d"
function = "count_distinct"
input = "merchant"
window = "7d"
"#;

const ENTITIES: u64 = 2_000;
const BATCH: u64 = 500;
const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn user(i: u64) -> String {
    format!("user-{:06}", i % ENTITIES)
}

/// Record `i`: entity `i % ENTITIES`, stamped `start + i × step` ms.
fn record(plain: bool, i: u64, ts: i64) -> Vec<u8> {
    if plain {
        let v = (i % 1000) as f64 * 0.25;
        format!(
            r#"{{"ts": {ts}, "f0": {v}, "f1": {}, "f2": 1.5, "f3": 2.5, "f4": {}, "f5": 7.0}}"#,
            v + 1.0,
            v * 2.0
        )
        .into_bytes()
    } else {
        format!(
            r#"{{"ts": {ts}, "amount": {}, "merchant": "m{}"}}"#,
            (i % 1000) as f64 * 0.25,
            i % 97
        )
        .into_bytes()
    }
}

/// Decodes records `first..first + n` for `view` and applies them as one batch: what a
/// shard's ingest loop does per poll, minus the Kafka poll (the same for both views).
fn ingest(store: &ShardStore, view: &Arc<FeatureView>, first: u64, n: u64, start: i64, step: i64) {
    let plain = view.aggregation.is_none();
    let mut batch = IngestBatch {
        progress: vec![TopicProgress {
            topic: view.source.topic.clone(),
            next_offset: (first + n) as i64,
            consumed: n,
            malformed: 0,
        }],
        ..Default::default()
    };
    let mut buf = Vec::new();
    for i in first..first + n {
        let key = user(i);
        let payload = record(plain, i, start + i as i64 * step);
        let raw = RawRecord {
            key: Some(key.as_bytes()),
            payload: Some(&payload),
            timestamp_millis: Some(now_ms()),
        };
        let rec = decode_record(view.record_view(), KeyType::String, &raw).expect("valid");
        if plain {
            let vals = rec.values.expect("not a tombstone");
            encode_row(rec.event_time_micros, &vals, &mut buf);
            batch.writes.push(RowWrite {
                topic: 0,
                key: keys::row_key(&view.name, view.version, &rec.entity_key),
                event_time_micros: rec.event_time_micros,
                value: Some(buf.clone()),
                history: None,
            });
        } else {
            batch.events.push(AggEvent {
                topic: 0,
                view: view.clone(),
                key: keys::tile_key(&view.name, view.version, &rec.entity_key),
                event_time_micros: rec.event_time_micros,
                values: rec.values,
                history: None,
            });
        }
    }
    store.apply(&batch).expect("applied");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        StorageEngine::new(StorageConfig::for_test(dir.path().to_path_buf())).expect("engine");
    let registry = Registry::in_memory();
    registry.apply_toml(DEFS, false).expect("valid");
    let snap = registry.snapshot();
    // Seven days of history ending now, per entity an event every `every` hours: `dense`
    // fills every hourly tile of the 7-day windows (the worst case), `typical` (every 6
    // hours, 4 a day) is closer to a card holder's transactions.
    let mut cases = Vec::new();
    for (density, every) in [("dense", 1i64), ("typical", 6)] {
        for name in ["plain", "aggs"] {
            let view = snap.views[name].clone();
            let history = 7 * 24 * ENTITIES / every as u64;
            let step = every * HOUR_MS / ENTITIES as i64;
            let start = now_ms() - 7 * 24 * HOUR_MS;
            let store = Arc::new(
                engine
                    .open_shard(ShardId(cases.len() as u32), 1, Partitioner::Murmur2)
                    .expect("open"),
            );
            for first in (0..history).step_by(2_000) {
                ingest(&store, &view, first, 2_000, start, step);
            }
            store.flush().expect("flushed");
            cases.push((
                format!("{name}-{density}"),
                view,
                store,
                history,
                start,
                step,
            ));
        }
    }

    let limits = NodeConfigFile::default()
        .validate()
        .expect("defaults")
        .limits;
    let mut g = c.benchmark_group("lookup_100_keys_6_features");
    g.throughput(Throughput::Elements(100));
    for (id, view, store, ..) in &cases {
        let req = LookupRequest::from(GetOnlineFeaturesRequest {
            features: vec![format!("{}:*", view.name)],
            entity_keys: (0..100)
                .map(|i| EntityKey::from(user(i * 13).as_str()))
                .collect(),
            ..Default::default()
        });
        let plans = PlanCache::default();
        let local = std::collections::HashMap::from([(ShardId(0), store.clone())]);
        g.bench_function(BenchmarkId::new(id.clone(), 100), |b| {
            b.iter(|| {
                let compiled = plans.plan(&req, &snap, &limits).expect("valid");
                let plan =
                    plan_keys(&req, compiled, &limits, Partitioner::Murmur2, 1).expect("valid");
                let replicas = replicas_for(&plan, &local, 0).expect("local");
                let now = now_ms() * 1000;
                let resp = match execute(&plan, &replicas, now, ReadMode::CachedOnly) {
                    Err(ExecError::NeedsIo) => execute(&plan, &replicas, now, ReadMode::Full),
                    other => other,
                };
                black_box(resp.expect("lookup"))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ingest_per_record");
    g.throughput(Throughput::Elements(BATCH));
    for (id, view, store, history, start, step) in &cases {
        // Continues the history at the same rate.
        let mut next = *history;
        g.bench_function(BenchmarkId::new(id.clone(), BATCH), |b| {
            b.iter(|| {
                ingest(store, view, next, BATCH, *start, *step);
                next += BATCH;
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = aggregations;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(aggregations);
