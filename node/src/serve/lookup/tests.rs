//! Watermarks on the wire: only topic streams, whatever pending streams a replica has.

use std::collections::HashMap;

use quiver_proto::v1::{EntityKey, GetOnlineFeaturesRequest, ShardWatermark, TopicOffset};
use quiver_proto::{Partitioner, ShardId};

use super::{ReadMode, execute, replicas_for};
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
    assert_eq!(
        plan.min_watermarks[&ShardId(0)],
        [("t".to_owned(), 4)].into_iter().collect()
    );
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
