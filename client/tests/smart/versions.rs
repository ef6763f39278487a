//! One answer, one version of each view: two static nodes, each serving half of the
//! shards, one of them on a newer version of the view. A lookup over both halves must not
//! come back with columns of two versions: the older part is read again and, while the
//! node still serves the old version, the lookup fails UNAVAILABLE naming the versions;
//! once both serve the new version it succeeds.

use std::time::{Duration, Instant};

use quiver_client::{Client, Lookup, NodeClient};
use quiver_node::config::NodeConfigFile;
use quiver_node::{Listeners, Node};
use quiver_proto::Partitioner;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::inprocess::now_ms;

const SHARDS: u32 = 4;

fn views(version: u32) -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "v"
version = {version}
entity = "user"
[view.source]
topic = "t"
event_time_field = "ts"
event_time_unit = "millis"
[[view.feature]]
name = "a"
type = "int64"
"#
    )
}

/// A static node serving `shards`.
async fn static_node(
    bootstrap: &str,
    shards: Vec<u32>,
    cancel: &CancellationToken,
) -> (Node, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut f = NodeConfigFile {
        node_id: 1,
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    f.server.grpc_addr = addr.clone();
    f.server.metrics_addr = String::new();
    f.server.shutdown_grace = Duration::from_secs(2);
    f.server.shutdown_delay = Duration::ZERO;
    f.cluster.shard_count = SHARDS;
    f.cluster.shards = shards;
    f.kafka.bootstrap_servers = bootstrap.to_owned();
    f.storage.block_cache_mib = 8;
    f.storage.write_buffer_mib = 8;
    f.ingest.poll_timeout = Duration::from_millis(20);
    f.auth.enabled = false;
    let node = Node::start(
        f.validate().unwrap(),
        Listeners { grpc: listener },
        cancel.child_token(),
    )
    .await
    .unwrap();
    (node, addr, dir)
}

/// Waits until `node` serves version `version` of view `v`.
async fn wait_version(node: &mut NodeClient, version: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = node.describe_view("v").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&described).unwrap();
        if v["version"] == version {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "version {version} never served: {described}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_never_mixes_view_versions() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", SHARDS as i32, 1).unwrap();
    let cancel = CancellationToken::new();
    let (na, addr_a, _da) = static_node(&mock.bootstrap_servers(), vec![0, 1], &cancel).await;
    let (nb, addr_b, _db) = static_node(&mock.bootstrap_servers(), vec![2, 3], &cancel).await;
    let mut a = NodeClient::connect(format!("http://{addr_a}"))
        .await
        .unwrap();
    let mut b = NodeClient::connect(format!("http://{addr_b}"))
        .await
        .unwrap();
    for n in [&mut a, &mut b] {
        n.apply_definitions(views(1), false).await.unwrap();
        wait_version(n, 1).await;
    }

    // Keys on both nodes' shards, with values.
    let shard = |k: &str| Partitioner::Murmur2.shard_for_key(k.as_bytes(), SHARDS).0;
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    assert!(keys.iter().any(|k| shard(k) < 2) && keys.iter().any(|k| shard(k) >= 2));
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (i, k) in keys.iter().enumerate() {
        let payload = format!(r#"{{"ts": {}, "a": {i}}}"#, now_ms());
        producer
            .send(
                FutureRecord::to("t").key(k).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let client = Client::builder()
        .seeds([addr_a.clone(), addr_b.clone()])
        .deadline(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let read = || Lookup::features(["v:a"]).keys(keys.iter().cloned());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get_online_features(&read()).await.unwrap();
        if (0..keys.len()).all(|row| r.i64(row, 0) == Some(row as i64)) {
            break;
        }
        assert!(Instant::now() < deadline, "records never all served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Node A moves to version 2 (re-ingested, then promoted); B still serves version 1.
    a.apply_definitions(views(2), false).await.unwrap();
    wait_version(&mut a, 2).await;
    let before = client.stats().version_retries;
    let err = client
        .get_online_features(&read())
        .await
        .expect_err("columns of versions 1 and 2 in one answer");
    assert_eq!(err.grpc_code(), Some(tonic::Code::Unavailable), "{err}");
    assert!(err.to_string().contains("view versions"), "{err}");
    assert!(client.stats().version_retries > before);
    // A lookup on one node's keys only is one version: fine.
    let on_a: Vec<String> = keys.iter().filter(|k| shard(k) < 2).cloned().collect();
    let r = client
        .get_online_features(&Lookup::features(["v:a"]).keys(on_a.iter().cloned()))
        .await
        .unwrap();
    assert_eq!(r.row_count(), on_a.len());

    // B catches up: the fan-out answers again, every value from version 2.
    b.apply_definitions(views(2), false).await.unwrap();
    wait_version(&mut b, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get_online_features(&read()).await {
            Ok(r) if (0..keys.len()).all(|row| r.i64(row, 0) == Some(row as i64)) => break,
            other => assert!(
                Instant::now() < deadline,
                "version 2 on both nodes, still: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    na.wait().await.unwrap();
    nb.wait().await.unwrap();
}

/// A rollback serves a lower version number: the answer's registry revision, not the
/// number, says which part is current. Node A rolls back to version 1 first; while B
/// still serves version 2 the fan-out fails naming version 1 as the target (by number it
/// would have been 2, and A's rolled-back part would have been the one read again); once
/// B rolls back too, every value comes from version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rollback_the_newer_registry_decides_not_the_higher_number() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", SHARDS as i32, 1).unwrap();
    let cancel = CancellationToken::new();
    let (na, addr_a, _da) = static_node(&mock.bootstrap_servers(), vec![0, 1], &cancel).await;
    let (nb, addr_b, _db) = static_node(&mock.bootstrap_servers(), vec![2, 3], &cancel).await;
    let mut a = NodeClient::connect(format!("http://{addr_a}"))
        .await
        .unwrap();
    let mut b = NodeClient::connect(format!("http://{addr_b}"))
        .await
        .unwrap();
    // Version 2 reads another field (`b` = 1000 + `a`), so values say their version.
    let v2 = views(2).replace("type = \"int64\"", "type = \"int64\"\nsource_field = \"b\"");
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (i, k) in keys.iter().enumerate() {
        let payload = format!(r#"{{"ts": {}, "a": {i}, "b": {}}}"#, now_ms(), 1000 + i);
        producer
            .send(
                FutureRecord::to("t").key(k).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    for n in [&mut a, &mut b] {
        n.apply_definitions(views(1), false).await.unwrap();
        wait_version(n, 1).await;
        n.apply_definitions(v2.clone(), false).await.unwrap();
        wait_version(n, 2).await;
    }
    let client = Client::builder()
        .seeds([addr_a.clone(), addr_b.clone()])
        .deadline(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let read = || Lookup::features(["v:a"]).keys(keys.iter().cloned());
    let all = |r: &quiver_client::LookupResult, base: i64| {
        (0..keys.len()).all(|row| r.i64(row, 0) == Some(base + row as i64))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get_online_features(&read()).await.unwrap();
        if all(&r, 1000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 2 never served everything"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    a.rollback_view("v", None).await.unwrap();
    wait_version(&mut a, 1).await;
    let err = client
        .get_online_features(&read())
        .await
        .expect_err("columns of versions 2 and 1 in one answer");
    assert_eq!(err.grpc_code(), Some(tonic::Code::Unavailable), "{err}");
    assert!(
        err.to_string().contains("([2] and [1])"),
        "B's version-2 part is the stale one: {err}"
    );

    b.rollback_view("v", Some(1)).await.unwrap();
    wait_version(&mut b, 1).await;
    let r = client.get_online_features(&read()).await.unwrap();
    assert!(all(&r, 0), "every value from version 1");
    cancel.cancel();
    na.wait().await.unwrap();
    nb.wait().await.unwrap();
}
