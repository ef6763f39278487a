//! Restarts resume exactly from the offsets stored with the data.

use quiver_proto::v1::value::Kind;
use serde_json::json;

use crate::harness::{Kafka, TestNode, config};
use crate::ingest::{DEFS, key, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_stored_offsets_without_loss_or_double_apply() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    for i in 0..200 {
        kafka
            .send_json(
                "profile",
                &format!("k{}", i % 50),
                json!({"ts": t + i, "i": i}),
            )
            .await;
    }
    node.wait_consumed("profile", 200).await;
    node.stop().await;

    // Produced while the node is down.
    for i in 200..300 {
        kafka
            .send_json(
                "profile",
                &format!("k{}", i % 50),
                json!({"ts": t + i, "i": i}),
            )
            .await;
    }
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    node.wait_consumed("profile", 300).await;
    let status = node.status().await;
    let consumed: u64 = status
        .shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| p.records_consumed)
        .sum();
    assert_eq!(
        consumed, 300,
        "every record consumed exactly once across the restart"
    );
    let keys = (0..50).map(|k| key(&format!("k{k}"))).collect();
    let col = node
        .lookup(&["profile:i"], keys)
        .await
        .unwrap()
        .columns
        .remove(0);
    for k in 0..50 {
        assert_eq!(
            col.values[k].kind,
            Some(Kind::Int64Value(250 + k as i64)),
            "k{k} has its latest value"
        );
    }
    node.stop().await;
}
