use super::*;

/// A fresh node joining a cluster is NOT_SERVING until it has the shard map, the leader
/// has placed its replicas and they are caught up (it used to say SERVING within
/// milliseconds of listening, holding nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_map_placement_and_catch_up() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 2, &settings);
    let _procs: Vec<NodeProcess> = members
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    wait_serving(&ep, 8, 2, &[1, 2].into()).await;
    AdminServiceClient::connect(ep.clone())
        .await
        .unwrap()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let ts = now_ms();
    let records: Vec<(String, String)> = (0..5_000)
        .map(|i| {
            (
                format!("u{i}"),
                format!(r#"{{"ts": {ts}, "n": {i}, "score": 0.5}}"#),
            )
        })
        .collect();
    produce(&broker, "clicks", &records).await;

    let third = allocate(root.path(), 3);
    write_config(&third, &settings, &[], &[members[0].addr()]);
    let _p3 = NodeProcess::start_member(&third, 1, None);
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(third.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut not_serving_seen = 0;
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "quiver.v1.Readiness".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(ServingStatus::NotServing as i32);
        if status == ServingStatus::Serving as i32 {
            break;
        }
        not_serving_seen += 1;
        assert!(Instant::now() < deadline, "node 3 never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // At the first SERVING: node 3 holds its share of the replicas, and each has read
    // every record of its partitions.
    let map = map_from(&third.endpoint()).await.unwrap();
    let mine: BTreeSet<u32> = map
        .shards
        .iter()
        .filter(|s| s.replicas.iter().any(|r| r.node_id == 3))
        .map(|s| s.shard)
        .collect();
    assert!(
        mine.len() >= 5,
        "node 3 ready holding {mine:?} of 16 replicas over 3 nodes"
    );
    let status = AdminServiceClient::connect(third.endpoint())
        .await
        .unwrap()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local: BTreeSet<u32> = status.shards.iter().map(|s| s.shard).collect();
    assert!(mine.is_subset(&local), "assigned {mine:?}, open {local:?}");
    for s in &status.shards {
        for p in &s.partitions {
            // Caught up as the node defines it: the end of the partition was seen, or the
            // broker's high watermark (fetched after every record was produced) equals the
            // next offset to read. With two source topics the EOF event cannot name its
            // topic, so a replica at the end may still say `reached_end: false` until its
            // next lag refresh; its offsets are what matter.
            let at_high = p.high_watermark >= 0 && p.next_offset == p.high_watermark;
            assert!(
                p.reached_end || at_high,
                "ready while shard {} {} has not caught up: {p:?}",
                s.shard,
                p.topic
            );
        }
        assert!(
            s.partitions
                .iter()
                .any(|p| p.topic == "clicks" && p.records_applied > 0),
            "shard {}: {s:?}",
            s.shard
        );
    }
    assert!(not_serving_seen > 0, "readiness said SERVING at once");
}

/// Forming a cluster, the first elected leader stays (no second election a second
/// later), even with a voter that starts late; a view applied the moment a leader is
/// known goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_leader_stays_and_an_early_apply_succeeds() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 3, &settings);
    // Two voters now, the third 1.5 s later: its election timer would have run while the
    // leader's first appends could not reach it.
    let mut procs: Vec<NodeProcess> = members[..2]
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(map) = map_from(&ep).await
            && let Some(l) = map.members.iter().find(|m| m.is_leader)
        {
            break l.node_id;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let applied = AdminServiceClient::connect(ep.clone())
        .await
        .unwrap()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await;
    assert!(applied.is_ok(), "apply right after formation: {applied:?}");
    let term = raft_term(members[0].metrics).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    procs.push(NodeProcess::start_member(&members[2], 1, None));
    wait_serving(&ep, 8, 2, &[1, 2, 3].into()).await;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for m in &members {
            if let Some(t) = raft_term(m.metrics) {
                assert!(
                    t <= term,
                    "node {}: term moved from {term} to {t}: leadership changed",
                    m.id
                );
            }
        }
        let map = map_from(&ep).await.unwrap();
        let now = map.members.iter().find(|m| m.is_leader).map(|m| m.node_id);
        assert_eq!(now, Some(leader), "leader changed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
