//! Routing agrees with Kafka: keys produced by a real librdkafka producer, partitioned by
//! librdkafka itself, are all found through the client, with every shard on exactly one
//! node (R = 1) so a key routed to the wrong node could not be answered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use quiver_client::{ClientError, Lookup};
use quiver_proto::Partitioner;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::inprocess::{InProcessCluster, now_ms};

const SHARDS: u32 = 8;
const KEYS: usize = 1500;

const VIEWS: &str = r#"
[[entity]]
name = "item"
key_type = "string"
[[view]]
name = "items"
entity = "item"
[view.source]
topic = "items"
event_time_field = "ts"
event_time_unit = "millis"
[[view.feature]]
name = "n"
type = "int64"
"#;

/// Produces `items` rows `item-0` .. `item-{KEYS - 1}` (feature `n` = the key's number)
/// through a real librdkafka producer, which picks each record's partition.
async fn produce_items(cluster: &InProcessCluster, partitioner: Partitioner) {
    // librdkafka picks the partition: no explicit partition on any record.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.mock.bootstrap_servers())
        .set("partitioner", partitioner.librdkafka_name())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let ts = now_ms();
    let mut partitions_used = HashSet::new();
    for i in 0..KEYS {
        let key = format!("item-{i}");
        let payload = json!({"ts": ts, "n": i}).to_string();
        let delivery = producer
            .send(
                FutureRecord::to("items").key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        partitions_used.insert(delivery.partition);
    }
    assert_eq!(partitions_used.len(), SHARDS as usize);
}

/// Looks up `keys` in chunks of 500 until every one is found, checking each value
/// found against the key's number.
async fn await_items(client: &quiver_client::Client, keys: &[String], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = 0;
        for chunk in keys.chunks(500) {
            let r = client
                .get_online_features(
                    &Lookup::features(["items:n"]).keys(chunk.iter().map(String::as_str)),
                )
                .await
                .unwrap();
            for (row, k) in chunk.iter().enumerate() {
                let want: i64 = k["item-".len()..].parse().unwrap();
                match r.i64(row, 0) {
                    Some(v) => assert_eq!(v, want, "{k}"),
                    None => missing += 1,
                }
            }
        }
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} keys not found through the client ({what})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn routing_agrees(partitioner: Partitioner) {
    let cluster =
        InProcessCluster::start(3, SHARDS, 1, partitioner.as_str(), &["items"], VIEWS).await;
    produce_items(&cluster, partitioner).await;
    let client = cluster.client().await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("item-{i}")).collect();
    await_items(&client, &keys, partitioner.as_str()).await;
    let stats = client.stats();
    assert_eq!(
        stats.wrong_shard, 0,
        "the client routed a key to the wrong node"
    );
    assert_eq!(stats.failed_requests, 0);
    // Each lookup fans out to all three nodes (each holds a third of the shards), and
    // their answers are merged into request order.
    assert!(stats.sub_requests >= 3 * stats.requests, "{stats:?}");
    assert_eq!(stats.merged_lookups, stats.requests, "{stats:?}");
    cluster.stop().await;
}

/// A node answers rows in the order the keys were sent: a lookup one node answers in
/// full goes to it in the lookup's order, and its answer is taken as sent; a key asked
/// twice is merged from the one row the node sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_answers_in_request_order() {
    let cluster = InProcessCluster::start(1, SHARDS, 1, "murmur2", &["items"], VIEWS).await;
    produce_items(&cluster, Partitioner::Murmur2).await;
    let client = cluster.client().await;
    // Every shard, in an order that is not the shards' (a stride through the keys).
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("item-{}", (i * 7) % KEYS))
        .collect();
    await_items(&client, &keys, "one node").await;
    let stats = client.stats();
    assert_eq!(stats.sub_requests, stats.requests, "{stats:?}");
    assert_eq!(stats.merged_lookups, 0, "{stats:?}");

    // Distinct keys of several shards, then the same with one key asked twice and one
    // never written: values by row, exactly.
    let mut keys: Vec<String> = (0..40).map(|i| format!("item-{}", 1499 - i * 37)).collect();
    let rows =
        |keys: &[String]| Lookup::features(["items:n"]).keys(keys.iter().map(String::as_str));
    let check = |r: &quiver_client::LookupResult, keys: &[String]| {
        for (row, k) in keys.iter().enumerate() {
            let want = k["item-".len()..]
                .parse::<i64>()
                .ok()
                .filter(|n| *n < KEYS as i64);
            assert_eq!(r.i64(row, 0), want, "row {row}: {k}");
        }
    };
    let r = client.get_online_features(&rows(&keys)).await.unwrap();
    check(&r, &keys);
    assert_eq!(client.stats().merged_lookups, 0);
    keys.insert(5, keys[30].clone());
    keys.push("item-99999".to_owned());
    let r = client.get_online_features(&rows(&keys)).await.unwrap();
    check(&r, &keys);
    assert_eq!(client.stats().merged_lookups, 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_agrees_with_librdkafka_murmur2() {
    routing_agrees(Partitioner::Murmur2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_agrees_with_librdkafka_crc32() {
    routing_agrees(Partitioner::Crc32).await;
}

fn invalid<T: std::fmt::Debug>(r: Result<T, ClientError>, needle: &str) {
    match r {
        Err(ClientError::InvalidRequest(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected InvalidRequest containing {needle:?}, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T, ClientError>, needle: &str) {
    match r {
        Err(ClientError::NotFound(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected NotFound containing {needle:?}, got {other:?}"),
    }
}

/// Bad requests fail with typed errors before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_client_side() {
    let cluster = InProcessCluster::start(1, 2, 1, "murmur2", &["items"], VIEWS).await;
    let client = cluster.client().await;
    let sent = client.stats().sub_requests;
    let lookup = |f: &str| Lookup::features([f.to_owned()]);
    not_found(
        client
            .get_online_features(&lookup("items:nope").keys(["a"]))
            .await,
        "view \"items\" has no feature \"nope\"",
    );
    not_found(
        client
            .get_online_features(&lookup("ghost:n").keys(["a"]))
            .await,
        "view \"ghost\" is not registered",
    );
    invalid(
        client
            .get_online_features(&lookup("items:n").keys([7i64]))
            .await,
        "entity_keys[0] is int64, but entity \"item\" has string keys",
    );
    invalid(
        client
            .get_online_features(&lookup("items:n").keys(Vec::<String>::new()))
            .await,
        "no entity keys",
    );
    let too_many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    invalid(
        client
            .get_online_features(&lookup("items:n").keys(too_many.iter().map(String::as_str)))
            .await,
        "batch of 1001 entity keys exceeds the cluster's limit max_batch_keys = 1000",
    );
    invalid(
        client
            .push("items", [quiver_client::PushRow::new("a").set("n", "text")])
            .await,
        "feature \"n\" is string, but the view declares int64",
    );
    not_found(
        client
            .push("items", [quiver_client::PushRow::new("a").set("zz", 1i64)])
            .await,
        "no feature \"zz\"",
    );
    assert_eq!(
        client.stats().sub_requests,
        sent,
        "a request caught client-side reached a node"
    );
    cluster.stop().await;
}

/// However many callers notice a stale map at once, one refresh runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_map_refreshes_coalesce() {
    let cluster = InProcessCluster::start(1, 2, 1, "murmur2", &["items"], VIEWS).await;
    let client = cluster.client().await;
    let before = client.stats().map_refreshes;
    // Released together, so every call starts while the first fetch is in flight (without
    // it, a task scheduled late on a loaded machine starts after the fetch and rightly
    // makes its own).
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let (c, start) = (client.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                c.refresh_cluster_map().await.unwrap()
            })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap() > 0, "cluster mode has a positive epoch");
    }
    let fetched = client.stats().map_refreshes - before;
    // One fetch for the burst; a concurrent push from the watch stream may add one, and a
    // task descheduled between the barrier and its call one more.
    assert!(
        (1..=3).contains(&fetched),
        "32 concurrent refreshes made {fetched} fetches"
    );
    cluster.stop().await;
}
