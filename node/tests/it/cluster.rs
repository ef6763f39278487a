//! In-process clusters: real nodes with the openraft control plane over loopback gRPC,
//! real RocksDB, librdkafka's mock cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quiver_node::config::{NodeConfig, NodeConfigFile};
use quiver_proto::Partitioner;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{ApplyDefinitionsRequest, ClusterMap, GetClusterMapRequest};
use serde_json::json;

use crate::harness::{Kafka, TestNode, eventually};
use crate::ingest::{key, now_ms};

pub(crate) const SHARDS: u32 = 4;

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "scores"
entity = "user"
[view.source]
topic = "scores"
event_time_field = "ts"
[[view.feature]]
name = "score"
type = "int64"
"#;

pub(crate) struct Cluster {
    pub(crate) nodes: BTreeMap<u64, TestNode>,
    addrs: BTreeMap<u64, String>,
    dirs: Vec<tempfile::TempDir>,
}

fn node_config(
    id: u64,
    addr: &str,
    dir: &std::path::Path,
    bootstrap: &str,
    voters: &[String],
    seeds: &[String],
) -> NodeConfig {
    let mut f = NodeConfigFile {
        node_id: id,
        data_dir: dir.join("data"),
        ..Default::default()
    };
    f.server.grpc_addr = addr.to_owned();
    f.server.metrics_addr = String::new();
    f.server.shutdown_grace = Duration::from_secs(2);
    f.server.shutdown_delay = Duration::ZERO;
    f.cluster.shard_count = SHARDS;
    f.kafka.bootstrap_servers = bootstrap.to_owned();
    f.storage.block_cache_mib = 8;
    f.storage.write_buffer_mib = 8;
    f.ingest.poll_timeout = Duration::from_millis(20);
    f.ingest.lag_refresh_interval = Duration::from_millis(300);
    f.control.enabled = true;
    f.auth.enabled = false;
    f.control.initial_voters = voters.to_vec();
    f.control.seeds = seeds.to_vec();
    f.control.replication_factor = 2;
    f.control.heartbeat_interval = Duration::from_millis(100);
    f.control.dead_after = Duration::from_secs(2);
    // Snapshot and purge the log often, so joining members must install a snapshot.
    f.control.snapshot_every = 5;
    f.validate().unwrap()
}

pub(crate) async fn start_cluster(bootstrap: &str, n: u64) -> Cluster {
    let mut listeners = BTreeMap::new();
    for id in 1..=n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let addrs: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let voters: Vec<String> = addrs.iter().map(|(id, a)| format!("{id}@{a}")).collect();
    let mut nodes = BTreeMap::new();
    let mut dirs = Vec::new();
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(id, &addrs[&id], dir.path(), bootstrap, &voters, &[]);
        nodes.insert(id, TestNode::start_with_listener(config, listener).await);
        dirs.push(dir);
    }
    Cluster { nodes, addrs, dirs }
}

/// Starts member `id` of a cluster from `start_cluster` again (after it was stopped and
/// removed from `nodes`), on its address and data directory.
pub(crate) async fn start_again(cluster: &mut Cluster, bootstrap: &str, id: u64) {
    let addr = cluster.addrs[&id].clone();
    let voters: Vec<String> = cluster
        .addrs
        .iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect();
    let listener = eventually(Duration::from_secs(10), "the address is free again", || {
        let addr = addr.clone();
        async move { tokio::net::TcpListener::bind(&addr).await.ok() }
    })
    .await;
    let dir = cluster.dirs[(id - 1) as usize].path();
    let config = node_config(id, &addr, dir, bootstrap, &voters, &[]);
    let node = TestNode::start_with_listener(config, listener).await;
    cluster.nodes.insert(id, node);
}

pub(crate) async fn cluster_map(node: &TestNode) -> ClusterMap {
    ClusterServiceClient::new(node.channel.clone())
        .get_cluster_map(GetClusterMapRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Every shard has `r` Serving replicas, all on `on`, and the map is the same everywhere.
pub(crate) async fn wait_placed(cluster: &Cluster, r: usize, on: &BTreeSet<u64>) -> ClusterMap {
    eventually(
        Duration::from_secs(60),
        "every shard has R serving replicas",
        || async {
            let first = cluster.nodes.values().next().unwrap();
            let map = cluster_map(first).await;
            let ok = map.shard_count == SHARDS
                && quiver_testkit::all_serving_on(&map, SHARDS as usize, r, |n| on.contains(&n));
            if !ok {
                return None;
            }
            for n in cluster.nodes.values() {
                if cluster_map(n).await.epoch != map.epoch {
                    return None;
                }
            }
            Some(map)
        },
    )
    .await
}

/// Every replica of each key's shard serves `kind(value)` for it.
pub(crate) async fn assert_every_replica_serves(
    cluster: &Cluster,
    map: &ClusterMap,
    keys: &BTreeMap<String, i64>,
    kind: impl Fn(i64) -> Kind,
) {
    for (k, v) in keys {
        let shard = Partitioner::Murmur2.shard_for_key(k.as_bytes(), SHARDS).0;
        let replicas = &map
            .shards
            .iter()
            .find(|s| s.shard == shard)
            .unwrap()
            .replicas;
        for r in replicas {
            let node = &cluster.nodes[&r.node_id];
            let want = Some(kind(*v));
            eventually(
                Duration::from_secs(30),
                &format!("{k} served by node {}", r.node_id),
                || async {
                    let resp = node.lookup(&["scores:score"], vec![key(k)]).await.ok()?;
                    (resp.columns[0].values[0].kind == want).then_some(())
                },
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_replicates_registry_and_serves_from_every_replica() {
    let kafka = Kafka::new(&[("scores", SHARDS as i32)]);
    let mut cluster = start_cluster(&kafka.bootstrap, 3).await;
    let all: BTreeSet<u64> = cluster.nodes.keys().copied().collect();
    let map = wait_placed(&cluster, 2, &all).await;
    assert_eq!(map.members.len(), 3);
    assert_eq!(
        map.members
            .iter()
            .filter(|m| m.raft_role == "voter")
            .count(),
        3
    );
    assert!(map.leader_id != 0);

    // Applied on a follower, forwarded to the leader, replicated to every node.
    let follower = *all.iter().find(|id| **id != map.leader_id).unwrap();
    let changes = cluster.nodes[&follower]
        .admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(changes.len(), 2, "{changes:?}");
    // An incompatible change is rejected by the replicated state machine.
    let err = cluster.nodes[&map.leader_id]
        .admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.replace("int64", "string"),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );

    let t = now_ms();
    let mut keys = BTreeMap::new();
    for i in 0..60 {
        let k = format!("u{i}");
        kafka
            .send_json("scores", &k, json!({"ts": t + i, "score": i}))
            .await;
        keys.insert(k, i);
    }
    assert_every_replica_serves(&cluster, &map, &keys, Kind::Int64Value).await;

    // A new version (score as float64: an incompatible type change) is re-ingested on
    // every replica, then promoted cluster-wide by the leader.
    let v2 = VIEWS
        .replace("type = \"int64\"", "type = \"float64\"")
        .replace("[view.source]", "version = 2\n[view.source]");
    let changes = cluster.nodes[&follower]
        .admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: v2,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert!(
        changes.iter().any(|c| c.contains("scores v2: building")),
        "{changes:?}"
    );
    assert_every_replica_serves(&cluster, &map, &keys, |v| Kind::Float64Value(v as f64)).await;
    let described = cluster.nodes[&map.leader_id]
        .admin
        .clone()
        .describe_view(quiver_proto::v1::DescribeViewRequest {
            name: "scores".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .definition_json;
    assert!(
        described.contains("promoted to serving"),
        "lineage records the promotion: {described}"
    );
    let keys: BTreeMap<String, i64> = keys.into_iter().collect();

    // A node asked for a shard it does not hold answers WRONG_SHARD with its epoch.
    let shard = Partitioner::Murmur2.shard_for_key(b"u1", SHARDS).0;
    let holders: Vec<u64> = map
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .unwrap()
        .replicas
        .iter()
        .map(|r| r.node_id)
        .collect();
    let other = all.iter().find(|id| !holders.contains(id)).unwrap();
    let err = cluster.nodes[other]
        .lookup(&["scores:score"], vec![key("u1")])
        .await
        .unwrap_err();
    assert_eq!(
        quiver_proto::ErrorCode::from_status(&err),
        Some(quiver_proto::ErrorCode::WrongShard)
    );
    assert_eq!(
        quiver_proto::error::epoch_from_status(&err),
        Some(map.epoch)
    );

    // Each node holds exactly its assigned shards.
    for (id, node) in &cluster.nodes {
        let assigned: BTreeSet<u32> = map
            .shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.node_id == *id))
            .map(|s| s.shard)
            .collect();
        let local: BTreeSet<u32> = node
            .node()
            .local_shards()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(local, assigned, "node {id}");
    }

    // Watch the map while draining node 1: its replicas move to nodes 2 and 3 (which
    // serve before node 1 lets go), and the stream reports every new epoch.
    let mut watch = ClusterServiceClient::new(cluster.nodes[&2].channel.clone())
        .watch_cluster_map(GetClusterMapRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.epoch, cluster_map(&cluster.nodes[&2]).await.epoch);
    ClusterServiceClient::new(cluster.nodes[&3].channel.clone())
        .drain_node(quiver_proto::v1::DrainNodeRequest { node_id: 1 })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(next.epoch > first.epoch, "the stream sends newer epochs");
    let rest: BTreeSet<u64> = [2, 3].into();
    let drained = wait_placed(&cluster, 2, &rest).await;
    assert_eq!(
        drained
            .members
            .iter()
            .find(|m| m.node_id == 1)
            .unwrap()
            .status,
        "draining"
    );
    assert_every_replica_serves(&cluster, &drained, &keys, |v| Kind::Float64Value(v as f64)).await;
    eventually(
        Duration::from_secs(30),
        "node 1 released its shards",
        || async {
            cluster.nodes[&1]
                .node()
                .local_shards()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    // Its shard databases were deleted: the disk space is freed.
    let shards_dir = cluster.dirs[0].path().join("data").join("shards");
    eventually(
        Duration::from_secs(30),
        "drained node's shard directories deleted",
        || async { (std::fs::read_dir(&shards_dir).unwrap().count() == 0).then_some(()) },
    )
    .await;

    // Stop node 3: after the grace period its replicas are re-placed and R is restored.
    let stopped = 3;
    cluster.nodes.remove(&stopped).unwrap().stop().await;
    // Node 1 is draining, so only node 2 is placeable: every shard keeps its one
    // replica there (R cannot be met with one placeable node).
    let alive: BTreeSet<u64> = [2].into();
    let map = wait_placed(&cluster, 1, &alive).await;
    let dead = map.members.iter().find(|m| m.node_id == stopped).unwrap();
    assert_eq!(dead.status, "dead");
    assert_every_replica_serves(&cluster, &map, &keys, |v| Kind::Float64Value(v as f64)).await;
    // A new member joins after the log was purged behind snapshots: it catches up by
    // installing a snapshot (the log alone could not rebuild the state) and takes replicas.
    let leader = cluster_map(&cluster.nodes[&2]).await.leader_id;
    let purged = cluster.nodes[&leader]
        .node()
        .control()
        .unwrap()
        .raft()
        .metrics()
        .borrow()
        .purged;
    assert!(
        purged.is_some_and(|p| p.index > 1),
        "the leader purged its log: {purged:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = node_config(
        4,
        &addr,
        dir.path(),
        &kafka.bootstrap,
        &[],
        &[cluster.addrs[&2].clone()],
    );
    cluster
        .nodes
        .insert(4, TestNode::start_with_listener(config, listener).await);
    cluster.dirs.push(dir);
    let placed: BTreeSet<u64> = [2, 4].into();
    let map = wait_placed(&cluster, 2, &placed).await;
    let views = cluster.nodes[&4]
        .admin
        .clone()
        .list_views(quiver_proto::v1::ListViewsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        views
            .views
            .iter()
            .map(|v| (v.name.as_str(), v.version))
            .collect::<Vec<_>>(),
        [("scores", 2)]
    );
    assert_every_replica_serves(&cluster, &map, &keys, |v| Kind::Float64Value(v as f64)).await;
    for node in std::mem::take(&mut cluster.nodes).into_values() {
        node.stop().await;
    }
}

/// A new replica of a shard that served before copies a Serving peer's checkpoint
/// instead of replaying the partition: it holds the rows whose records the topic's
/// retention already deleted, and serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_copies_a_peers_checkpoint_not_the_trimmed_log() {
    let kafka = Kafka::new(&[("scores", SHARDS as i32)]);
    let mut cluster = start_cluster(&kafka.bootstrap, 3).await;
    let all: BTreeSet<u64> = [1, 2, 3].into();
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
    let shard_of = |k: &str| Partitioner::Murmur2.shard_for_key(k.as_bytes(), SHARDS).0;
    let t = now_ms();
    let mut keys = BTreeMap::new();
    for i in 0..20 {
        let k = format!("u{i}");
        kafka
            .send_json("scores", &k, json!({"ts": t + i, "score": i}))
            .await;
        keys.insert(k, i);
    }
    assert_every_replica_serves(&cluster, &map, &keys, Kind::Int64Value).await;
    // Shard 0's partition past the mock's 5 MB: its first records are deleted.
    let pad = "x".repeat(100_000);
    let big: Vec<String> = (0..)
        .map(|i| format!("big{i}"))
        .filter(|k| shard_of(k) == 0)
        .take(60)
        .collect();
    for k in &big {
        kafka
            .send_json("scores", k, json!({"ts": t, "score": -1, "pad": pad}))
            .await;
    }
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()
        .unwrap();
    let (low, _) =
        rdkafka::consumer::Consumer::fetch_watermarks(&c, "scores", 0, Duration::from_secs(5))
            .unwrap();
    assert!(low > 0, "partition 0 trimmed");
    // Stop one holder of shard 0; the node that did not hold it gets a new replica.
    let holders: Vec<u64> = map
        .shards
        .iter()
        .find(|s| s.shard == 0)
        .unwrap()
        .replicas
        .iter()
        .map(|r| r.node_id)
        .collect();
    let (stopped, kept) = (holders[0], holders[1]);
    let newcomer = *all.iter().find(|n| !holders.contains(n)).unwrap();
    cluster.nodes.remove(&stopped).unwrap().stop().await;
    let alive: BTreeSet<u64> = [kept, newcomer].into();
    // The nodes' logs go to the test's output, shown if it fails; so does the newcomer's
    // status if it is not Serving after 45 s (a diagnosis, not a synchronisation).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let mut admin = cluster.nodes[&newcomer].admin.clone();
    let diagnosis = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(45)).await;
        let status = admin
            .get_status(quiver_proto::v1::GetStatusRequest {})
            .await;
        eprintln!("the newcomer after 45 s: {status:?}");
    });
    let map = wait_placed(&cluster, 2, &alive).await;
    diagnosis.abort();
    let status = cluster.nodes[&newcomer].status().await;
    let shard0 = status.shards.iter().find(|s| s.shard == 0).unwrap();
    assert!(
        shard0.blocked_streams.is_empty(),
        "{:?}",
        shard0.blocked_streams
    );
    // The rows of shard 0 whose records the log no longer holds are on the newcomer.
    let trimmed: BTreeMap<String, i64> = keys
        .iter()
        .filter(|(k, _)| shard_of(k) == 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(!trimmed.is_empty());
    for (k, v) in &trimmed {
        let resp = cluster.nodes[&newcomer]
            .lookup(&["scores:score"], vec![key(k)])
            .await
            .unwrap();
        assert_eq!(
            resp.columns[0].values[0].kind,
            Some(Kind::Int64Value(*v)),
            "{k}"
        );
    }
    assert_every_replica_serves(&cluster, &map, &keys, Kind::Int64Value).await;
    // New records after the copy reach it from the checkpoint's offsets on.
    kafka
        .send_json("scores", &big[0], json!({"ts": t + 100, "score": 77}))
        .await;
    let newest: BTreeMap<String, i64> = [(big[0].clone(), 77)].into();
    assert_every_replica_serves(&cluster, &map, &newest, Kind::Int64Value).await;
    for node in std::mem::take(&mut cluster.nodes).into_values() {
        node.stop().await;
    }
}
