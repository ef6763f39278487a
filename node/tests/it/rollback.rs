//! The version lifecycle on one node (static mode): a promotion retains the replaced
//! version, which keeps ingesting, so a rollback serves it at once with every record;
//! deletion with a grace period and restore; retention drops versions and deletes their
//! rows; version numbers are never reused.

use std::time::Duration;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, DeleteRequest, ListViewVersionsRequest, RollbackViewRequest,
    ViewVersionInfo,
};
use quiver_proto::{Partitioner, ShardId};
use serde_json::json;

use crate::harness::{Kafka, TestNode, config, eventually};
use crate::ingest::{key, now_ms};

const V1: &str = r#"
[[entity]]
name = "player"
key_type = "string"
[[view]]
name = "stats"
entity = "player"
version = 1
[view.source]
topic = "events"
event_time_field = "ts"
[[view.feature]]
name = "level"
type = "int64"
[[feature_service]]
name = "ranker"
features = ["stats:level"]
"#;

/// Version 2: `level` read from another field, as a string.
const V2: &str = r#"
[[view]]
name = "stats"
entity = "player"
version = 2
[view.source]
topic = "events"
event_time_field = "ts"
[[view.feature]]
name = "level"
type = "string"
source_field = "tier"
"#;

async fn apply(node: &TestNode, toml: &str) -> Result<Vec<String>, tonic::Status> {
    node.admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: toml.into(),
            dry_run: false,
        })
        .await
        .map(|r| r.into_inner().changes)
}

async fn versions(node: &TestNode) -> Vec<(u32, String)> {
    list(node)
        .await
        .into_iter()
        .map(|v| (v.version, v.state))
        .collect()
}

async fn list(node: &TestNode) -> Vec<ViewVersionInfo> {
    node.admin
        .clone()
        .list_view_versions(ListViewVersionsRequest {
            view: "stats".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions
}

async fn rollback(node: &TestNode, to: u32) -> Result<Vec<String>, tonic::Status> {
    node.admin
        .clone()
        .rollback_view(RollbackViewRequest {
            view: "stats".into(),
            to_version: to,
        })
        .await
        .map(|r| r.into_inner().changes)
}

async fn delete(node: &TestNode, kind: &str, name: &str) -> Result<Vec<String>, tonic::Status> {
    node.admin
        .clone()
        .delete(DeleteRequest {
            kind: kind.into(),
            name: name.into(),
        })
        .await
        .map(|r| r.into_inner().changes)
}

/// `stats:level` of players `p0..p{n}`.
async fn levels(node: &TestNode, n: usize) -> Vec<Option<Kind>> {
    let keys = (0..n).map(|i| key(&format!("p{i}"))).collect();
    let mut resp = node.lookup(&["stats:level"], keys).await.unwrap();
    resp.columns
        .remove(0)
        .values
        .into_iter()
        .map(|v| v.kind)
        .collect()
}

async fn send(kafka: &Kafka, from: usize, to: usize, t: i64, bump: i64) {
    for i in from..to {
        kafka
            .send_json(
                "events",
                &format!("p{i}"),
                json!({"ts": t + i as i64 + bump, "level": i as i64 + bump, "tier": format!("gold-{}", i as i64 + bump)}),
            )
            .await;
    }
}

async fn promoted_to_v2(kafka: &Kafka, node: &TestNode, t: i64) {
    send(kafka, 0, 40, t, 0).await;
    node.wait_consumed("events", 40).await;
    apply(node, V2).await.unwrap();
    eventually(Duration::from_secs(30), "version 2 promoted", || async {
        (versions(node).await == vec![(2, "serving".into()), (1, "retained".into())]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_serves_the_retained_version_with_every_record_since() {
    let kafka = Kafka::new(&[("events", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, V1)).await;
    let t = now_ms();
    promoted_to_v2(&kafka, &node, t).await;
    let listed = list(&node).await;
    assert!(listed[1].retired_at_ms >= t, "{listed:?}");
    assert_eq!(
        listed[1].drop_after_ms - listed[1].retired_at_ms,
        7 * 86_400_000,
        "the default retention"
    );
    assert!(listed[1].definition_json.contains("\"int64\""));
    // Records after the promotion: new players, and p0 updated.
    send(&kafka, 40, 60, t, 0).await;
    send(&kafka, 0, 1, t, 1000).await;
    node.wait_consumed("events", 61).await;
    assert_eq!(
        levels(&node, 1).await,
        vec![Some(Kind::StringValue("gold-1000".into()))]
    );

    // Pinned reads: version 1 (retained, current) and version 2 (serving) side by side.
    let resp = node
        .lookup(
            &["stats@1:level", "stats:level", "stats@2:level"],
            vec![key("p0"), key("p59")],
        )
        .await
        .unwrap();
    let names: Vec<&str> = resp.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["stats@1:level", "stats:level", "stats@2:level"]);
    let kinds = |c: usize| -> Vec<Option<Kind>> {
        resp.columns[c]
            .values
            .iter()
            .map(|v| v.kind.clone())
            .collect()
    };
    assert_eq!(
        kinds(0),
        vec![Some(Kind::Int64Value(1000)), Some(Kind::Int64Value(59))]
    );
    let v2 = vec![
        Some(Kind::StringValue("gold-1000".into())),
        Some(Kind::StringValue("gold-59".into())),
    ];
    assert_eq!(kinds(1), v2);
    assert_eq!(kinds(2), v2);
    let err = node
        .lookup(&["stats@3:level"], vec![key("p0")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message()
            .contains("no version 3 that serves or is retained (readable: [1, 2])"),
        "{}",
        err.message()
    );
    let err = node
        .lookup(&["stats@one:level"], vec![key("p0")])
        .await
        .unwrap_err();
    assert!(
        err.message().contains("is not a version number"),
        "{}",
        err.message()
    );

    // Bad rollbacks: clear errors, nothing changes.
    let err = rollback(&node, 7).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message()
            .contains("no retained version 7 (retained: v1)"),
        "{}",
        err.message()
    );
    let err = rollback(&node, 2).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("version 2 already serves"),
        "{}",
        err.message()
    );
    assert_eq!(
        versions(&node).await,
        vec![(2, "serving".into()), (1, "retained".into())]
    );

    // The rollback serves v1 at once, with the records that arrived while it was retained.
    let changes = rollback(&node, 0).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.contains("stats v1: serving again")),
        "{changes:?}"
    );
    assert_eq!(
        versions(&node).await,
        vec![(2, "retained".into()), (1, "serving".into())]
    );
    let got = levels(&node, 60).await;
    for (i, v) in got.iter().enumerate() {
        let want = if i == 0 { 1000 } else { i as i64 };
        assert_eq!(*v, Some(Kind::Int64Value(want)), "p{i}");
    }
    // v2, now retained, keeps ingesting: a later record is there when it serves again.
    send(&kafka, 60, 61, t, 0).await;
    node.wait_consumed("events", 62).await;
    rollback(&node, 2).await.unwrap();
    let got = levels(&node, 61).await;
    assert_eq!(got[60], Some(Kind::StringValue("gold-60".into())));
    assert_eq!(got[0], Some(Kind::StringValue("gold-1000".into())));
    // A version number is used once.
    let err = apply(&node, V1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("version 1 is retained"),
        "{}",
        err.message()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_view_stops_serving_and_a_rollback_restores_it() {
    let kafka = Kafka::new(&[("events", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, V1)).await;
    send(&kafka, 0, 10, now_ms(), 0).await;
    node.wait_consumed("events", 10).await;

    let err = delete(&node, "view", "stats").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("used by feature service(s) ranker"),
        "{}",
        err.message()
    );
    let err = delete(&node, "entity", "player").await.unwrap_err();
    assert!(
        err.message().contains("keys view version(s) stats v1"),
        "{}",
        err.message()
    );
    let err = delete(&node, "table", "x").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = delete(&node, "feature_service", "nope").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(
        levels(&node, 1).await,
        vec![Some(Kind::Int64Value(0))],
        "unchanged"
    );

    delete(&node, "feature_service", "ranker").await.unwrap();
    delete(&node, "view", "stats").await.unwrap();
    let err = node
        .lookup(&["stats:level"], vec![key("p1")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(versions(&node).await, vec![(1, "retained".into())]);
    // Still ingesting while deleted: a rollback within the grace period restores it whole.
    send(&kafka, 10, 12, now_ms(), 0).await;
    node.wait_consumed("events", 12).await;
    rollback(&node, 0).await.unwrap();
    let got = levels(&node, 12).await;
    assert_eq!(got[11], Some(Kind::Int64Value(11)));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_a_version_and_every_replica_deletes_its_rows() {
    let kafka = Kafka::new(&[("events", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, V1);
    cfg.version_retention = Duration::from_secs(2);
    let node = TestNode::start(cfg).await;
    let shard = |id: u32| node.node().shard(ShardId(id)).unwrap();
    let rows = || {
        (0..4)
            .map(|s| shard(s).count_raw_rows().unwrap())
            .sum::<u64>()
    };
    promoted_to_v2(&kafka, &node, now_ms()).await;
    eventually(Duration::from_secs(20), "version 1 dropped", || async {
        (versions(&node).await == vec![(2, "serving".into()), (1, "dropped".into())]).then_some(())
    })
    .await;
    // Only v2's rows are left, and v1's own offset streams are gone.
    eventually(
        Duration::from_secs(10),
        "version 1's rows deleted",
        || async { (rows() == 40).then_some(()) },
    )
    .await;
    let p0 = Partitioner::Murmur2.shard_for_key(b"p0", 4);
    assert!(
        shard(p0.0)
            .offsets()
            .keys()
            .all(|k| !k.ends_with("#stats@1")),
        "{:?}",
        shard(p0.0).offsets()
    );
    assert_eq!(
        levels(&node, 1).await,
        vec![Some(Kind::StringValue("gold-0".into()))]
    );
    let err = rollback(&node, 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = node
        .lookup(&["stats@1:level"], vec![key("p0")])
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("version 1 of view \"stats\" was dropped"),
        "{}",
        err.message()
    );
    let err = apply(&node, V1).await.unwrap_err();
    assert!(
        err.message()
            .contains("version 1 was used before; a new definition needs version 3"),
        "{}",
        err.message()
    );
    // After a restart (its definition file now the serving version's) the drop is not
    // repeated and nothing comes back.
    node.stop().await;
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, V2);
    cfg.version_retention = Duration::from_secs(2);
    let node = TestNode::start(cfg).await;
    node.wait_consumed("events", 40).await;
    let rows: u64 = (0..4)
        .map(|s| {
            node.node()
                .shard(ShardId(s))
                .unwrap()
                .count_raw_rows()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 40);
    node.stop().await;
}
