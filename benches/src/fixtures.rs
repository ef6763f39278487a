//! Fixtures for the criterion micro-benchmarks: a feature view with ten features of mixed
//! types, records in both source formats, and shard stores filled with rows.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use quiver_node::registry::Registry;
use quiver_node::storage::row_codec::encode_row;
use quiver_node::storage::{
    IngestBatch, RowWrite, ShardStore, StorageConfig, StorageEngine, TopicProgress, keys,
};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{FeatureRow, FloatVector, StringList, Value};
use quiver_proto::{Partitioner, ShardId};

/// Shard count of the fixtures.
pub const SHARDS: u32 = 4;

/// The ten features, as `[[view.feature]]` tables.
const FEATURES: &str = r#"
[[view.feature]]
name = "c1h"
type = "int64"
[[view.feature]]
name = "c24h"
type = "int64"
[[view.feature]]
name = "sum24h"
type = "float64"
[[view.feature]]
name = "avg7d"
type = "float64"
[[view.feature]]
name = "max7d"
type = "float64"
[[view.feature]]
name = "merchants"
type = "int64"
[[view.feature]]
name = "country"
type = "string"
[[view.feature]]
name = "new_device"
type = "bool"
[[view.feature]]
name = "categories"
type = "string_list"
[[view.feature]]
name = "embedding"
type = "float32_vector"
"#;

/// A view of ten features from a JSON source and the same features from a protobuf source.
pub fn definitions() -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "stats"
entity = "user"
ttl = "30d"
[view.source]
topic = "stats"
event_time_field = "ts"
{FEATURES}
[[view]]
name = "stats_pb"
entity = "user"
[view.source]
topic = "stats_pb"
format = "protobuf"
{FEATURES}"#
    )
}

/// The fixture registry.
pub fn registry() -> Registry {
    let r = Registry::in_memory();
    r.apply_toml(&definitions(), false)
        .expect("fixture definitions are valid");
    r
}

/// The ten feature values of entity `i`.
pub fn values(i: u64) -> Vec<Option<Kind>> {
    vec![
        Some(Kind::Int64Value((i % 20) as i64)),
        Some(Kind::Int64Value((i % 200) as i64)),
        Some(Kind::Float64Value(i as f64 * 1.25)),
        Some(Kind::Float64Value(42.5)),
        Some(Kind::Float64Value(1999.99)),
        Some(Kind::Int64Value(7)),
        Some(Kind::StringValue("DE".into())),
        Some(Kind::BoolValue(i.is_multiple_of(2))),
        Some(Kind::StringList(StringList {
            values: vec!["grocery".into(), "travel".into()],
        })),
        Some(Kind::Float32Vector(FloatVector {
            values: vec![0.125; 8],
        })),
    ]
}

/// A JSON record of entity `i`.
pub fn json_record(i: u64) -> Vec<u8> {
    format!(
        r#"{{"ts": 1760000000000, "c1h": {}, "c24h": {}, "sum24h": {}, "avg7d": 42.5, "max7d": 1999.99, "merchants": 7,
            "country": "DE", "new_device": {}, "categories": ["grocery", "travel"], "embedding": [0.125,0.125,0.125,0.125,0.125,0.125,0.125,0.125]}}"#,
        i % 20,
        i % 200,
        i as f64 * 1.25,
        i.is_multiple_of(2)
    )
    .into_bytes()
}

/// A protobuf `FeatureRow` record of entity `i`.
pub fn protobuf_record(i: u64) -> Vec<u8> {
    let names = [
        "c1h",
        "c24h",
        "sum24h",
        "avg7d",
        "max7d",
        "merchants",
        "country",
        "new_device",
        "categories",
        "embedding",
    ];
    let features = names
        .iter()
        .zip(values(i))
        .map(|(n, k)| ((*n).to_owned(), Value { kind: k }))
        .collect();
    FeatureRow {
        event_time_micros: 1_760_000_000_000_000,
        features,
    }
    .encode_to_vec()
}

/// Entity key of entity `i`.
pub fn entity_key(i: u64) -> String {
    format!("user-{i:08}")
}

/// Shard stores holding `entities` rows of view `stats`, placed by the murmur2 partitioner.
pub fn filled_stores(
    dir: &std::path::Path,
    entities: u64,
) -> (StorageEngine, HashMap<ShardId, Arc<ShardStore>>) {
    let engine = StorageEngine::new(StorageConfig::for_test(dir.to_path_buf())).expect("engine");
    let stores: HashMap<ShardId, Arc<ShardStore>> = (0..SHARDS)
        .map(|s| {
            (
                ShardId(s),
                Arc::new(
                    engine
                        .open_shard(ShardId(s), SHARDS, Partitioner::Murmur2)
                        .expect("open shard"),
                ),
            )
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let mut batches: HashMap<ShardId, IngestBatch> = HashMap::new();
    let mut buf = Vec::new();
    for i in 0..entities {
        let k = entity_key(i);
        let shard = Partitioner::Murmur2.shard_for_key(k.as_bytes(), SHARDS);
        encode_row(now, &values(i), &mut buf);
        let b = batches.entry(shard).or_default();
        b.writes.push(RowWrite {
            topic: 0,
            key: keys::row_key("stats", 1, k.as_bytes()),
            event_time_micros: now,
            value: Some(buf.clone()),
            history: None,
        });
    }
    for (shard, mut b) in batches {
        b.progress = vec![TopicProgress {
            topic: "stats".into(),
            next_offset: b.writes.len() as i64,
            consumed: b.writes.len() as u64,
            malformed: 0,
        }];
        stores[&shard].apply(&b).expect("apply");
        stores[&shard].flush().expect("flush");
    }
    (engine, stores)
}
