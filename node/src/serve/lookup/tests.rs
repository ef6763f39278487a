//! Watermarks on the wire: only topic streams, whatever pending streams a replica has.

use std::collections::{BTreeMap, HashMap};

use quiver_proto::v1::{EntityKey, GetOnlineFeaturesRequest, ShardWatermark, TopicOffset};
use quiver_proto::{Partitioner, ShardId};

use super::{ReadMode, binding_floors, execute, floors_reached, replicas_for};
use crate::config::NodeConfigFile;
use crate::registry::Registry;
use crate::serve::plan::plan_lookup;
use crate::storage::TestShard;
use crate::storage::{IngestBatch, TopicProgress};

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "v"
entity = "user"
[view.source]
topic = "t"
[[view.feature]]
name = "x"
type = "int64"
"#;

#[test]
fn pending_streams_are_neither_reported_nor_waited_on() {
    let TestShard {
        store,
        engine: _engine,
        dir: _dir,
    } = TestShard::open();
    // The topic's stream and a pending version's own re-ingest of it.
    store
        .apply(&IngestBatch {
            progress: ["t", "t#v@2"]
                .into_iter()
                .map(|s| TopicProgress {
                    topic: s.into(),
                    next_offset: 5,
                    consumed: 5,
                    malformed: 0,
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
    let registry = Registry::in_memory();
    registry.apply_toml(DEFS, false).unwrap();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let floor = |topic: &str, o: i64| ShardWatermark {
        shard: 0,
        offsets: vec![TopicOffset {
            topic: topic.into(),
            next_offset: o,
        }],
    };
    let req = GetOnlineFeaturesRequest {
        features: vec!["v:x".into()],
        entity_keys: vec![EntityKey::from("u")],
        // A floor on a pending stream (from a client that saw an older node) is ignored;
        // one on the topic is kept.
        min_watermarks: vec![floor("t#v@3", 99), floor("t", 4)],
        ..Default::default()
    };
    let plan = plan_lookup(&req, &registry.snapshot(), &limits, Partitioner::Murmur2, 1).unwrap();
    let floors = &req.min_watermarks;
    let binding: Vec<_> = binding_floors(floors, ShardId(0))
        .map(|o| (o.topic.as_str(), o.next_offset))
        .collect();
    assert_eq!(binding, [("t", 4)]);
    assert!(floors_reached(floors, ShardId(0), &store.watermark()));
    let behind: BTreeMap<String, i64> = [("t".to_owned(), 3), ("t#v@3".to_owned(), 100)].into();
    assert!(
        !floors_reached(floors, ShardId(0), &behind),
        "t is at 3, below 4"
    );
    assert!(
        floors_reached(floors, ShardId(1), &behind),
        "no floor on shard 1"
    );
    // A shard named twice must reach both floors.
    let twice = [floor("t", 2), floor("t", 4)];
    assert!(!floors_reached(&twice, ShardId(0), &behind));
    assert!(floors_reached(&twice[..1], ShardId(0), &behind));
    let local = HashMap::from([(ShardId(0), store.clone())]);
    let replicas = replicas_for(&plan, &local, 0).unwrap();
    let Ok(resp) = execute(&plan, &replicas, 0, ReadMode::Full) else {
        panic!("lookup failed")
    };
    let resp = resp.into_response();
    let reported: Vec<&str> = resp.watermarks[0]
        .offsets
        .iter()
        .map(|o| o.topic.as_str())
        .collect();
    assert_eq!(
        reported,
        ["t"],
        "only the topic's stream is a client's floor"
    );
}

const TWO_VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "v"
entity = "user"
[view.source]
topic = "t"
[[view.feature]]
name = "x"
type = "int64"
[[view]]
name = "w"
entity = "user"
ttl = "1h"
[view.source]
topic = "t"
[[view.feature]]
name = "s"
type = "string"
[[view.feature]]
name = "f"
type = "float64"
"#;

/// Four shards of an engine with (`cache`) or without a lookup cache, holding the same
/// rows: for `u0`..`u39`, a `v` row, a `w` row (every fifth older than its TTL, every
/// sixth a tombstone, every seventh without its string).
fn four_shards(
    dir: &std::path::Path,
    cache: bool,
) -> (
    crate::storage::StorageEngine,
    HashMap<ShardId, std::sync::Arc<crate::storage::ShardStore>>,
) {
    use crate::storage::row_codec::encode_row;
    use crate::storage::{RowWrite, StorageConfig, StorageEngine, keys};
    use quiver_proto::v1::value::Kind;
    let mut config = StorageConfig::for_test(dir.to_path_buf());
    if !cache {
        config.lookup_cache_bytes = 0;
    }
    let engine = StorageEngine::new(config).unwrap();
    let now = 1_800_000_000_000_000i64;
    let mut writes: HashMap<ShardId, Vec<RowWrite>> = HashMap::new();
    for i in 0..40i64 {
        let user = format!("u{i}");
        let shard = Partitioner::Murmur2.shard_for_key(user.as_bytes(), 4);
        let row = |et: i64, values: &[Option<Kind>], tombstone: bool| -> Option<Vec<u8>> {
            (!tombstone).then(|| {
                let mut buf = Vec::new();
                encode_row(et, values, &mut buf);
                buf
            })
        };
        let et = if i % 5 == 0 {
            now - 7_200_000_000
        } else {
            now - i
        };
        let w_values = [
            (i % 7 != 0).then(|| Kind::StringValue(format!("s{i}"))),
            Some(Kind::Float64Value(i as f64 / 3.0)),
        ];
        for (view, value) in [
            ("v", row(now - i, &[Some(Kind::Int64Value(i * 11))], false)),
            ("w", row(et, &w_values, i % 6 == 0)),
        ] {
            writes.entry(shard).or_default().push(RowWrite {
                topic: 0,
                key: keys::row_key(view, 1, user.as_bytes()),
                event_time_micros: et,
                value,
                history: None,
            });
        }
    }
    let mut stores = HashMap::new();
    for s in 0..4 {
        let store = std::sync::Arc::new(
            engine
                .open_shard(ShardId(s), 4, Partitioner::Murmur2)
                .unwrap(),
        );
        store
            .apply(&IngestBatch {
                writes: writes.remove(&ShardId(s)).unwrap_or_default(),
                events: Vec::new(),
                progress: vec![TopicProgress {
                    topic: "t".into(),
                    next_offset: 100 + i64::from(s),
                    consumed: 1,
                    malformed: 0,
                }],
            })
            .unwrap();
        stores.insert(ShardId(s), store);
    }
    (engine, stores)
}

/// A lookup whose shards' rows are all in the lookup cache is answered without a
/// snapshot; its answer (columns, statuses, event times, watermarks) is byte for byte
/// the one a node without the cache gives, and so is a lookup mixing such shards with
/// shards that need a snapshot (a key never written, a tombstone, a row not cached).
#[test]
fn answers_from_memory_equal_answers_through_snapshots() {
    let registry = Registry::in_memory();
    registry.apply_toml(TWO_VIEWS, false).unwrap();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_cached_engine, cached) = four_shards(dir_a.path(), true);
    let (_plain_engine, plain) = four_shards(dir_b.path(), false);
    let now = 1_800_000_000_000_000i64;
    let answer = |stores: &HashMap<ShardId, _>, users: &[String]| {
        let req = GetOnlineFeaturesRequest {
            // Two views, a feature named twice, a whole view.
            features: vec!["v:x".into(), "w:*".into(), "v:x".into()],
            entity_keys: users.iter().map(|u| EntityKey::from(u.as_str())).collect(),
            include_event_times: true,
            ..Default::default()
        };
        let plan =
            plan_lookup(&req, &registry.snapshot(), &limits, Partitioner::Murmur2, 4).unwrap();
        let replicas = replicas_for(&plan, stores, 0).unwrap();
        let Ok(resp) = execute(&plan, &replicas, now, ReadMode::Full) else {
            panic!("lookup failed")
        };
        prost::Message::encode_to_vec(&resp)
    };
    // Rows in every shard, none a tombstone (those are not cached): every shard from
    // memory.
    let present: Vec<String> = (0..40)
        .filter(|i| i % 6 != 0)
        .map(|i| format!("u{i}"))
        .chain(["u1".into()]) // a key asked twice
        .collect();
    let slices = |users: &[String], s: u32| -> Vec<Vec<u8>> {
        users
            .iter()
            .filter(|u| Partitioner::Murmur2.shard_for_key(u.as_bytes(), 4) == ShardId(s))
            .flat_map(|u| ["v", "w"].map(|v| crate::storage::keys::row_key(v, 1, u.as_bytes())))
            .collect()
    };
    for s in 0..4 {
        let keys = slices(&present, s);
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        assert!(
            cached[&ShardId(s)].latest_rows_in_memory(&keys).is_some(),
            "shard {s}: every row cached"
        );
    }
    assert_eq!(answer(&cached, &present), answer(&plain, &present));
    // A key never written and the tombstones: their shards read through a snapshot.
    let mixed: Vec<String> = (0..40)
        .map(|i| format!("u{i}"))
        .chain(["nobody".into()])
        .collect();
    assert_eq!(answer(&cached, &mixed), answer(&plain, &mixed));
    assert_eq!(answer(&cached, &present), answer(&plain, &present));
}

/// One cached plan answering request after request reuses its answers' builders (given
/// back when an answer is dropped): every answer, of any size and with or without event
/// times, is byte for byte the one a plan compiled afresh gives.
#[test]
fn answers_built_with_reused_builders_equal_fresh_ones() {
    let registry = Registry::in_memory();
    registry.apply_toml(TWO_VIEWS, false).unwrap();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let dir = tempfile::tempdir().unwrap();
    let (_engine, stores) = four_shards(dir.path(), true);
    let now = 1_800_000_000_000_000i64;
    let cache = crate::serve::plan::PlanCache::default();
    let request = |users: &[usize], times: bool| {
        quiver_proto::lookup_request::LookupRequest::from(GetOnlineFeaturesRequest {
            features: vec!["w:*".into(), "v:x".into(), "w:s".into()],
            entity_keys: users
                .iter()
                .map(|i| EntityKey::from(format!("u{i}").as_str()))
                .collect(),
            include_event_times: times,
            ..Default::default()
        })
    };
    let answer = |req: &quiver_proto::lookup_request::LookupRequest, compiled| {
        let plan =
            crate::serve::plan::plan_keys(req, compiled, &limits, Partitioner::Murmur2, 4).unwrap();
        let replicas = replicas_for(&plan, &stores, 0).unwrap();
        let Ok(resp) = execute(&plan, &replicas, now, ReadMode::Full) else {
            panic!("lookup failed")
        };
        prost::Message::encode_to_vec(&resp)
    };
    let batches: [&[usize]; 6] = [
        &[
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
        ],
        &[7],
        &[35, 5, 21, 14, 99, 6],
        &[
            39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24,
        ],
        &[12, 12],
        &[3],
    ];
    let mut plans = Vec::new();
    for (i, users) in batches.iter().enumerate() {
        let req = request(users, i % 2 == 0);
        let cached = cache.plan(&req, &registry.snapshot(), &limits).unwrap();
        let fresh = std::sync::Arc::new(
            crate::serve::plan::compile(&req, &registry.snapshot(), &limits).unwrap(),
        );
        assert_eq!(
            answer(&req, cached.clone()),
            answer(&req, fresh),
            "batch {i}"
        );
        // The first answer's builders were kept and are the ones the later ones reuse.
        assert_eq!(cached.builders.kept(), 1, "batch {i}");
        plans.push(cached);
    }
    assert!(
        plans.iter().all(|p| std::sync::Arc::ptr_eq(p, &plans[0])),
        "one cached plan"
    );
}
