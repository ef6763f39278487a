//! A real cluster: Tansu, 3 then 4 `quiver-node` processes (P = 16, R = 2). Kill -9 the
//! Raft leader, restart it, add a fourth node; reads keep being served throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use quiver_proto::Partitioner;
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, ClusterMap, EntityKey, GetClusterMapRequest, GetOnlineFeaturesRequest,
    ListViewsRequest, ReplicaStateProto,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use quiver_testkit::{
    Broker, ClusterSettings, NodeProcess, all_serving_on, allocate, write_config,
};

const P: u32 = 16;
const R: usize = 2;
const KEYS: usize = 10_000;

const VIEWS: &str = r#"
[[entity]]
name = "device"
key_type = "string"
[[view]]
name = "device_stats"
entity = "device"
[view.source]
topic = "devices"
event_time_field = "ts"
[[view.feature]]
name = "n"
type = "int64"
"#;

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

async fn map_from(port: u16) -> Option<ClusterMap> {
    let mut c = ClusterServiceClient::connect(endpoint(port)).await.ok()?;
    Some(
        c.get_cluster_map(GetClusterMapRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

/// Waits until every shard has R Serving replicas, all on `on`, as seen from `port`.
async fn wait_placed(port: u16, on: &BTreeSet<u64>, timeout: Duration) -> ClusterMap {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(map) = map_from(port).await {
            // Every listed node is active and holds replicas (with P = 16, R = 2 and at
            // most 4 nodes, each node's expected share is 8 replicas), all Serving.
            let ok = all_serving_on(&map, P as usize, R, |n| on.contains(&n))
                && on.iter().all(|n| {
                    map.members
                        .iter()
                        .any(|m| m.node_id == *n && m.status == "active")
                        && map
                            .shards
                            .iter()
                            .any(|s| s.replicas.iter().any(|r| r.node_id == *n))
                });
            if ok {
                return map;
            }
        }
        assert!(
            Instant::now() < deadline,
            "shards not placed on {on:?} within {timeout:?}: {:?}",
            map_from(port).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every key from a Serving replica of its shard (trying each); returns the keys
/// no replica served correctly.
async fn unserved_keys(
    map: &ClusterMap,
    ports: &BTreeMap<u64, u16>,
    keys: &BTreeMap<String, i64>,
) -> Vec<String> {
    let mut by_node: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
    let mut failed = Vec::new();
    for k in keys.keys() {
        let shard = Partitioner::Murmur2.shard_for_key(k.as_bytes(), P).0;
        let serving: Vec<u64> = map
            .shards
            .iter()
            .find(|s| s.shard == shard)
            .map(|s| {
                s.replicas
                    .iter()
                    .filter(|r| r.state == ReplicaStateProto::Serving as i32)
                    .map(|r| r.node_id)
                    .collect()
            })
            .unwrap_or_default();
        match serving.iter().find(|n| ports.contains_key(n)) {
            Some(n) => by_node.entry(*n).or_default().push(k),
            None => failed.push(k.clone()),
        }
    }
    for (node, ks) in by_node {
        let Ok(mut client) = FeatureServiceClient::connect(endpoint(ports[&node])).await else {
            failed.extend(ks.into_iter().cloned());
            continue;
        };
        for chunk in ks.chunks(500) {
            let req = GetOnlineFeaturesRequest {
                features: vec!["device_stats:n".into()],
                entity_keys: chunk.iter().map(|k| EntityKey::from(k.as_str())).collect(),
                // The per-cell form: these checks read `columns`.
                encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
                ..Default::default()
            };
            match client.get_online_features(req).await {
                Ok(resp) => {
                    let col = &resp.into_inner().columns[0];
                    for (i, k) in chunk.iter().enumerate() {
                        if col.values[i].kind != Some(Kind::Int64Value(keys[*k])) {
                            failed.push((*k).clone());
                        }
                    }
                }
                Err(_) => failed.extend(chunk.iter().map(|k| (*k).clone())),
            }
        }
    }
    failed
}

fn moved(before: &ClusterMap, after: &ClusterMap) -> usize {
    let set = |m: &ClusterMap| -> BTreeSet<(u32, u64)> {
        m.shards
            .iter()
            .flat_map(|s| s.replicas.iter().map(move |r| (s.shard, r.node_id)))
            .collect()
    };
    set(after).difference(&set(before)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_leader_kill_restart_and_scale_out() {
    let broker = Broker::start();
    broker.create_topic("devices", P);
    let root = tempfile::tempdir().unwrap();
    let bs = broker.bootstrap();
    let mut settings = ClusterSettings::new(bs.clone());
    settings.shard_count = P;
    settings.replication_factor = R as u32;
    let members = quiver_testkit::initial_members(root.path(), 3, &settings);
    let mut procs: BTreeMap<u64, NodeProcess> = BTreeMap::new();
    for m in &members {
        procs.insert(
            m.id,
            NodeProcess::start_on(&m.config, &m.dir, 1, m.grpc, m.metrics),
        );
    }
    let mut port_of: BTreeMap<u64, u16> = members.iter().map(|m| (m.id, m.grpc)).collect();
    let all: BTreeSet<u64> = port_of.keys().copied().collect();
    let map = wait_placed(port_of[&1], &all, Duration::from_secs(60)).await;

    let mut admin = AdminServiceClient::connect(endpoint(port_of[&2]))
        .await
        .unwrap();
    admin
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let ts = 1_760_000_000_000i64;
    let mut keys = BTreeMap::new();
    let sends = (0..KEYS).map(|i| {
        let k = format!("dev-{i:05}");
        let payload = format!(r#"{{"ts": {}, "n": {i}}}"#, ts + i as i64);
        keys.insert(k.clone(), i as i64);
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to("devices")
                        .key(k.as_bytes())
                        .payload(payload.as_bytes()),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !unserved_keys(&map, &port_of, &keys).await.is_empty() {
        assert!(Instant::now() < deadline, "keys not served after ingest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill -9 the Raft leader; measure until the others agree on a new one.
    let leader = map.leader_id;
    assert!(all.contains(&leader));
    procs.remove(&leader).unwrap().kill_9();
    let killed_at = Instant::now();
    port_of.remove(&leader);
    let survivor = *port_of.values().next().unwrap();
    let new_leader = loop {
        if let Some(m) = map_from(survivor).await
            && m.leader_id != 0
            && m.leader_id != leader
        {
            break m.leader_id;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = killed_at.elapsed();
    eprintln!("leader {leader} killed; node {new_leader} leads after {failover:?}");
    // Committed metadata survived the leader.
    let views = AdminServiceClient::connect(endpoint(survivor))
        .await
        .unwrap()
        .list_views(ListViewsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(views.views.len(), 1);
    // After the grace period its replicas are re-placed on the survivors: R restored.
    let alive: BTreeSet<u64> = port_of.keys().copied().collect();
    let map2 = wait_placed(survivor, &alive, Duration::from_secs(60)).await;
    assert_eq!(
        map2.members
            .iter()
            .find(|m| m.node_id == leader)
            .unwrap()
            .status,
        "dead"
    );
    eprintln!("R restored {:?} after the kill", killed_at.elapsed());
    assert!(unserved_keys(&map2, &port_of, &keys).await.is_empty());

    // Restart it: it rejoins and shards rebalance back without duplicates.
    let m = members.iter().find(|m| m.id == leader).unwrap();
    procs.insert(
        leader,
        NodeProcess::start_on(&m.config, &m.dir, 2, m.grpc, m.metrics),
    );
    port_of.insert(leader, m.grpc);
    let map3 = wait_placed(survivor, &all, Duration::from_secs(60)).await;
    assert!(map3.members.iter().all(|m| m.status == "active"));
    assert!(unserved_keys(&map3, &port_of, &keys).await.is_empty());

    // Add a fourth node; reads are served throughout the rebalance.
    let m4 = allocate(root.path(), 4);
    write_config(&m4, &settings, &[], &[format!("127.0.0.1:{survivor}")]);
    procs.insert(
        4,
        NodeProcess::start_on(&m4.config, &m4.dir, 1, m4.grpc, m4.metrics),
    );
    port_of.insert(4, m4.grpc);
    let four: BTreeSet<u64> = port_of.keys().copied().collect();
    let started = Instant::now();
    let mut node4_serving: Option<Duration> = None;
    let map4 = loop {
        let current = map_from(survivor).await.unwrap();
        let unserved = unserved_keys(&current, &port_of, &keys).await;
        assert!(
            unserved.is_empty(),
            "{} keys unserved during rebalance, e.g. {:?}",
            unserved.len(),
            &unserved[..unserved.len().min(3)]
        );
        let on4: Vec<i32> = current
            .shards
            .iter()
            .flat_map(|s| {
                s.replicas
                    .iter()
                    .filter(|r| r.node_id == 4)
                    .map(|r| r.state)
            })
            .collect();
        if node4_serving.is_none()
            && !on4.is_empty()
            && on4
                .iter()
                .all(|st| *st == ReplicaStateProto::Serving as i32)
        {
            node4_serving = Some(started.elapsed());
        }
        let done = current.shards.iter().all(|s| {
            s.replicas.len() == R
                && s.replicas.iter().all(|r| {
                    r.state == ReplicaStateProto::Serving as i32 && four.contains(&r.node_id)
                })
        }) && current
            .shards
            .iter()
            .any(|s| s.replicas.iter().any(|r| r.node_id == 4));
        if done {
            break current;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rebalance onto node 4 did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved = moved(&map3, &map4);
    let bound = (1.5 * (R as f64) * f64::from(P) / 4.0 + R as f64).ceil() as usize;
    eprintln!(
        "3 → 4 nodes moved {moved} of {} replicas (bound {bound}) in {:?}",
        P as usize * R,
        started.elapsed()
    );
    eprintln!(
        "node 4's new replicas ({} records per partition) went from process start through Bootstrapping to Serving in {:?}",
        KEYS / P as usize,
        node4_serving
    );
    assert!(
        node4_serving.is_some(),
        "node 4's replicas never all served"
    );
    assert!(moved <= bound);
    assert!(unserved_keys(&map4, &port_of, &keys).await.is_empty());

    // Node 4 joined as a learner. Kill -9 a voter that does not lead: after the grace
    // period the leader promotes the live learner, keeping three voters.
    assert_eq!(
        map4.members
            .iter()
            .find(|m| m.node_id == 4)
            .unwrap()
            .raft_role,
        "learner"
    );
    let victim = map4
        .members
        .iter()
        .find(|m| m.raft_role == "voter" && !m.is_leader)
        .unwrap()
        .node_id;
    procs.remove(&victim).unwrap().kill_9();
    port_of.remove(&victim);
    let killed_at = Instant::now();
    let leader_port = port_of[&map4.leader_id];
    loop {
        if let Some(m) = map_from(leader_port).await {
            let role = |id: u64| {
                m.members
                    .iter()
                    .find(|x| x.node_id == id)
                    .map(|x| x.raft_role.clone())
                    .unwrap_or_default()
            };
            if role(4) == "voter" && role(victim) != "voter" {
                break;
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "learner 4 was not promoted after voter {victim} died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "voter {victim} killed; learner 4 promoted to voter after {:?}",
        killed_at.elapsed()
    );
    let three: BTreeSet<u64> = port_of.keys().copied().collect();
    let map5 = wait_placed(leader_port, &three, Duration::from_secs(60)).await;
    assert!(unserved_keys(&map5, &port_of, &keys).await.is_empty());

    // Control-plane metrics are exported by every member.
    let metrics = crate::scrape_metrics(m4.metrics);
    for name in [
        "quiver_control_raft_term",
        "quiver_control_is_leader",
        "quiver_control_applied_index",
        "quiver_control_shard_epoch",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    for (_, p) in procs {
        p.terminate();
    }
}
