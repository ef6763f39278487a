//! Topics whose retention deleted records: a view version that would be rebuilt from the
//! topic's start is refused at apply, and one that gets in anyway (a definition file at
//! start) is held back with the reason in the status, never promoted with rows missing.
//! librdkafka's mock broker keeps 5 MB per partition, so 6 MB into partition 0 moves its
//! log start above 0.

use std::time::Duration;

use quiver_proto::v1::ApplyDefinitionsRequest;
use quiver_proto::{Partitioner, ShardId};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

use crate::harness::{Kafka, TestNode, config, eventually};
use crate::ingest::now_ms;
use crate::versions::V1;

fn v2() -> String {
    V1.replace("version = 1", "version = 2")
        .replace("type = \"int64\"", "type = \"float64\"")
}

/// Keys of partition 0 of 2.
fn keys_of_partition_0() -> impl Iterator<Item = String> {
    (0..)
        .map(|i| format!("p{i}"))
        .filter(|k| Partitioner::Murmur2.shard_for_key(k.as_bytes(), 2) == ShardId(0))
}

/// Fills partition 0 past the mock's 5 MB: returns its log start (> 0).
async fn trim_partition_0(kafka: &Kafka) -> i64 {
    // A few records on partition 1, which stays whole.
    let partition_1 = (0..)
        .map(|i| format!("q{i}"))
        .filter(|k| Partitioner::Murmur2.shard_for_key(k.as_bytes(), 2) == ShardId(1));
    for k in partition_1.take(5) {
        kafka
            .send_json("events", &k, json!({"ts": now_ms(), "level": 2}))
            .await;
    }
    let pad = "x".repeat(100_000);
    for k in keys_of_partition_0().take(60) {
        kafka
            .send_json(
                "events",
                &k,
                json!({"ts": now_ms(), "level": 1, "pad": pad}),
            )
            .await;
    }
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .unwrap();
    let (low, high) = c
        .fetch_watermarks("events", 0, Duration::from_secs(5))
        .unwrap();
    assert!(
        low > 0 && high >= 60,
        "the mock trimmed partition 0: {low}..{high}"
    );
    low
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_view_version_is_built_from_a_log_the_retention_trimmed() {
    let kafka = Kafka::new(&[("events", 2)]);
    let low = trim_partition_0(&kafka).await;
    let dir = tempfile::tempdir().unwrap();
    // The view's first build takes what the log holds.
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 2, V1)).await;
    eventually(Duration::from_secs(20), "partition 0 consumed", || async {
        (node.next_offsets().await.get("events").copied() == Some(65)).then_some(())
    })
    .await;
    // A new version would re-read the topic from offset 0: refused, naming where it starts.
    let err = node
        .admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: v2(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "view stats v2 would be built by re-reading topic \"events\" from its start, but partition 0 now starts at offset {low}"
        )),
        "{}",
        err.message()
    );
    node.stop().await;

    // Through a definition file at start (no admin check): the version's stream on shard 0
    // is held back with the reason, and the version stays pending.
    let v2_file = dir.path().join("v2.toml");
    std::fs::write(&v2_file, v2()).unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 2, V1);
    cfg.definition_files.push(v2_file);
    let node = TestNode::start(cfg).await;
    let why = eventually(
        Duration::from_secs(20),
        "the v2 stream held back",
        || async {
            let status = node.status().await;
            let shard0 = status.shards.iter().find(|s| s.shard == 0)?;
            shard0.blocked_streams.first().cloned()
        },
    )
    .await;
    assert!(
        why.contains("\"events#stats@2\": this view version is built at offset 0")
            && why.contains(&format!("partition now starts at {low}")),
        "{why}"
    );
    let status = node.status().await;
    let shard1 = status.shards.iter().find(|s| s.shard == 1).unwrap();
    assert!(shard1.blocked_streams.is_empty(), "partition 1 is whole");
    // Shard 1's part of v2 builds; shard 0's never does, so v2 is never promoted.
    eventually(Duration::from_secs(20), "shard 1 built v2", || async {
        node.status()
            .await
            .shards
            .iter()
            .find(|s| s.shard == 1)?
            .partitions
            .iter()
            .any(|p| p.topic == "events#stats@2" && p.next_offset == 5)
            .then_some(())
    })
    .await;
    // The promotion loop looks every 200 ms: over a second, it never promotes.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        let listed = node
            .admin
            .clone()
            .list_view_versions(quiver_proto::v1::ListViewVersionsRequest {
                view: "stats".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .versions;
        assert!(
            listed
                .iter()
                .any(|v| v.version == 2 && v.state == "pending"),
            "{listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let described = node
        .admin
        .clone()
        .describe_view(quiver_proto::v1::DescribeViewRequest {
            name: "stats".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .definition_json;
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(v["version"], 1, "still serving v1");
    assert_eq!(v["pending"]["version"], 2);
    assert!(
        !node
            .status()
            .await
            .shards
            .iter()
            .find(|s| s.shard == 0)
            .unwrap()
            .partitions
            .iter()
            .any(|p| p.topic == "events#stats@2"),
        "shard 0 never consumed for v2"
    );
    node.stop().await;
}
