//! Read after register: a view or feature service registered through any member can be
//! read on every member as soon as `ApplyDefinitions` returned — a member whose copy of
//! the registry lags (it applies the log a round trip later, or it was down and restarts
//! with an older copy) catches up with the leader before it answers NOT_FOUND — while a
//! name that really is unknown still fails fast with NOT_FOUND.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use quiver_proto::v1::{ApplyDefinitionsRequest, GetOnlineFeaturesRequest};

use crate::cluster::{cluster_map, start_again, start_cluster, wait_placed};
use crate::harness::Kafka;
use crate::ingest::key;

fn definitions(i: usize) -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "fresh{i}"
entity = "user"
[view.source]
topic = "t{i}"
event_time_field = "ts"
[[view.feature]]
name = "f"
type = "int64"
[[feature_service]]
name = "svc{i}"
features = ["fresh{i}:f"]
"#
    )
}

/// The code of a lookup on `node`: `Ok` for an answer. A lookup of a key the node does
/// not hold fails with WRONG_SHARD after planning, so anything but NOT_FOUND means the
/// node knew every name.
/// Rounds of registering through each member in turn.
const ROUNDS: usize = 6;

async fn lookup_code(
    node: &crate::harness::TestNode,
    features: Vec<String>,
    feature_service: String,
) -> Result<(), tonic::Status> {
    node.features
        .clone()
        .get_online_features(GetOnlineFeaturesRequest {
            features,
            feature_service,
            entity_keys: vec![key("u1")],
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// Registers round `i`'s view and feature service through `node`.
async fn apply(node: &crate::harness::TestNode, i: usize) {
    node.admin
        .clone()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: definitions(i),
            dry_run: false,
        })
        .await
        .unwrap();
}

/// `node` knows round `i`'s view and feature service: looking them up (by feature list
/// and by service) never answers NOT_FOUND. `context` says how it was registered.
async fn assert_knows(node: &crate::harness::TestNode, i: usize, context: &str) {
    for (features, service) in [
        (vec![format!("fresh{i}:f")], String::new()),
        (Vec::new(), format!("svc{i}")),
    ] {
        if let Err(s) = lookup_code(node, features, service.clone()).await {
            assert_ne!(
                s.code(),
                tonic::Code::NotFound,
                "round {i} ({context}): the node does not know it ({service:?}): {}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_view_is_read_on_every_member_at_once() {
    // One topic per round: a new view on a topic nothing consumes yet serves at once (on
    // a consumed topic it would be pending until rebuilt, and unreadable by design).
    let topics: Vec<String> = (0..ROUNDS + 2).map(|i| format!("t{i}")).collect();
    let spec: Vec<(&str, i32)> = std::iter::once("events")
        .chain(topics.iter().map(String::as_str))
        .map(|t| (t, crate::cluster::SHARDS as i32))
        .collect();
    let kafka = Kafka::new(&spec);
    let mut cluster = start_cluster(&kafka.bootstrap, 3).await;
    let all: BTreeSet<u64> = cluster.nodes.keys().copied().collect();
    let map = wait_placed(&cluster, 2, &all).await;
    let ids: Vec<u64> = all.iter().copied().collect();

    // Registered through each member in turn (the leader and both followers), then read
    // at once on every member, by feature list and by feature service. A follower applies
    // the commit a round trip after the leader, so it may not have it yet.
    for i in 0..ROUNDS {
        let through = ids[i % ids.len()];
        apply(&cluster.nodes[&through], i).await;
        for (id, node) in &cluster.nodes {
            let context = format!(
                "registered through node {through} (leader {}), read on node {id}",
                map.leader_id
            );
            assert_knows(node, i, &context).await;
        }
    }

    // A member that was down while a view was registered starts with the older registry
    // and learns the new one from the leader: its first lookups must still see the view
    // (without the catch-up this part fails every time).
    for i in ROUNDS..ROUNDS + 2 {
        let leader = cluster_map(&cluster.nodes[&ids[0]]).await.leader_id;
        let follower = *ids.iter().find(|id| **id != leader).unwrap();
        cluster.nodes.remove(&follower).unwrap().stop().await;
        apply(&cluster.nodes[&leader], i).await;
        start_again(&mut cluster, &kafka.bootstrap, follower).await;
        let context = format!("node {follower} restarted after it was registered");
        assert_knows(&cluster.nodes[&follower], i, &context).await;
    }

    // An unknown name is still NOT_FOUND on every member, and without a wait: one
    // read-index round to the leader.
    for (id, node) in &cluster.nodes {
        for (features, service) in [
            (vec!["nope:f".to_owned()], String::new()),
            (vec!["fresh0:nope".to_owned()], String::new()),
            (Vec::new(), "nope".to_owned()),
        ] {
            let started = Instant::now();
            let err = lookup_code(node, features.clone(), service)
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound, "node {id}: {err:?}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "node {id} took {:?} to answer NOT_FOUND for {features:?}",
                started.elapsed()
            );
        }
    }
    for node in std::mem::take(&mut cluster.nodes).into_values() {
        node.stop().await;
    }
}
