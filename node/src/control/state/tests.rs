//! The state machine's transition rules.

use super::*;

fn init() -> ClusterState {
    let mut s = ClusterState::default();
    let settings = ClusterSettings {
        shard_count: 4,
        partitioner: "murmur2".into(),
        replication_factor: 2,
    };
    assert!(matches!(
        s.apply(&Command::Initialize(settings)),
        CommandResult::Applied { .. }
    ));
    for id in 1..=3 {
        s.apply(&Command::UpsertMember {
            id: NodeId(id),
            addr: format!("127.0.0.1:{id}"),
            zone: String::new(),
        });
    }
    s
}

#[test]
fn initialise_once() {
    let mut s = init();
    let other = ClusterSettings {
        shard_count: 8,
        partitioner: "murmur2".into(),
        replication_factor: 2,
    };
    assert!(matches!(
        s.apply(&Command::Initialize(other)),
        CommandResult::Rejected { .. }
    ));
    assert_eq!(s.assignment.len(), 4);
}

#[test]
fn assignment_changes_bump_the_epoch() {
    let mut s = init();
    let e0 = s.epoch;
    s.apply(&Command::AddReplica {
        shard: ShardId(0),
        node: NodeId(1),
    });
    assert_eq!(s.epoch, e0 + 1);
    // Idempotent re-add: no change, no bump.
    s.apply(&Command::AddReplica {
        shard: ShardId(0),
        node: NodeId(1),
    });
    assert_eq!(s.epoch, e0 + 1);
    s.apply(&Command::SetReplicaState {
        shard: ShardId(0),
        node: NodeId(1),
        state: ReplicaState::Serving,
    });
    assert_eq!(s.epoch, e0 + 2);
    assert_eq!(s.replicas_on(NodeId(1))[&ShardId(0)], ReplicaState::Serving);
    s.apply(&Command::RemoveReplica {
        shard: ShardId(0),
        node: NodeId(1),
    });
    assert_eq!(s.epoch, e0 + 3);
    assert!(s.replicas_on(NodeId(1)).is_empty());
    // Invalid targets are rejected and change nothing.
    let before = s.clone();
    assert!(matches!(
        s.apply(&Command::AddReplica {
            shard: ShardId(0),
            node: NodeId(99)
        }),
        CommandResult::Rejected { .. }
    ));
    assert!(matches!(
        s.apply(&Command::AddReplica {
            shard: ShardId(77),
            node: NodeId(1)
        }),
        CommandResult::Rejected { .. }
    ));
    assert!(matches!(
        s.apply(&Command::SetReplicaState {
            shard: ShardId(1),
            node: NodeId(1),
            state: ReplicaState::Serving
        }),
        CommandResult::Rejected { .. }
    ));
    assert_eq!(s, before);
}

#[test]
fn registry_changes_are_validated_and_keep_lineage() {
    let mut s = init();
    let file = DefinitionFile::from_toml(
        "[[entity]]\nname = \"user\"\nkey_type = \"string\"\n[[view]]\nname = \"v\"\nentity = \"user\"\n[view.source]\ntopic = \"t\"\n[[view.feature]]\nname = \"f\"\ntype = \"int64\"\n",
    )
    .unwrap();
    let cmd = Command::ApplyDefinitions {
        file: file.clone(),
        applied_by: "alice".into(),
        applied_at_ms: 7,
    };
    let CommandResult::Applied { changes, .. } = s.apply(&cmd) else {
        panic!()
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(s.lineage["v"].applied_by, "alice");
    assert_eq!(
        s.lineage["v"].history,
        vec!["view v v1: created by alice at 7"]
    );
    // Incompatible: a type change without a new version.
    let mut bad = file.clone();
    bad.views[0].features[0].value_type = Some("string".into());
    let before = s.clone();
    let res = s.apply(&Command::ApplyDefinitions {
        file: bad,
        applied_by: "bob".into(),
        applied_at_ms: 8,
    });
    let CommandResult::Rejected { invalid, reason } = res else {
        panic!()
    };
    assert!(!invalid && reason.contains("changes type"), "{reason}");
    assert_eq!(s, before);
    // Compatible: append a feature.
    let mut good = file;
    good.views[0]
        .features
        .push(crate::registry::definition::FeatureDef {
            name: "g".into(),
            value_type: Some("float64".into()),
            ..Default::default()
        });
    let res = s.apply(&Command::ApplyDefinitions {
        file: good,
        applied_by: "carol".into(),
        applied_at_ms: 9,
    });
    assert!(matches!(res, CommandResult::Applied { .. }));
    assert_eq!(s.lineage["v"].history.len(), 2);
    assert_eq!(s.registry.views[0].features.len(), 2);
}
