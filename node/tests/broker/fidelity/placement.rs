use super::*;

fn load(map: &ClusterMap) -> BTreeMap<u64, usize> {
    let mut load = BTreeMap::new();
    for s in &map.shards {
        for r in &s.replicas {
            *load.entry(r.node_id).or_default() += 1;
        }
    }
    load
}

fn assert_within_one_of_mean(load: &BTreeMap<u64, usize>, nodes: usize, total: usize) {
    let (lo, hi) = (total / nodes, total.div_ceil(nodes));
    assert_eq!(load.len(), nodes, "every node holds replicas: {load:?}");
    for (node, l) in load {
        assert!(
            (lo..=hi).contains(l),
            "node {node} holds {l}; mean {:.2}: {load:?}",
            total as f64 / nodes as f64
        );
    }
}

/// The README's cluster (3 nodes, 8 shards, R = 2) placed {3, 8, 5}: one node held a
/// replica of every shard. Placement keeps every node within one of the mean, and a
/// fourth node takes only what it ends up holding, all of it from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_spread_evenly_and_a_new_node_takes_only_its_share() {
    let broker = Broker::start();
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 3, &settings);
    let mut procs: Vec<NodeProcess> = members
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    let three: BTreeSet<u64> = [1, 2, 3].into();
    let before = wait_serving(&ep, 8, 2, &three).await;
    let loads = load(&before);
    assert_within_one_of_mean(&loads, 3, 16);
    eprintln!("3 nodes, P = 8, R = 2: replicas per node {loads:?}");

    let fourth = allocate(root.path(), 4);
    write_config(&fourth, &settings, &[], &[members[0].addr()]);
    procs.push(NodeProcess::start_member(&fourth, 1, None));
    let four: BTreeSet<u64> = [1, 2, 3, 4].into();
    // Serving everywhere, and node 4 holding its share.
    let deadline = Instant::now() + Duration::from_secs(90);
    let after = loop {
        let map = wait_serving(&ep, 8, 2, &four).await;
        if load(&map).get(&4).is_some_and(|l| *l >= 4) {
            break map;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never got its share: {:?}",
            load(&map)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let loads = load(&after);
    assert_within_one_of_mean(&loads, 4, 16);
    let mut moved = 0;
    for s in &after.shards {
        let old = &before
            .shards
            .iter()
            .find(|b| b.shard == s.shard)
            .unwrap()
            .replicas;
        for r in &s.replicas {
            if !old.iter().any(|o| o.node_id == r.node_id) {
                assert_eq!(
                    r.node_id, 4,
                    "shard {}: a replica moved between old nodes",
                    s.shard
                );
                moved += 1;
            }
        }
    }
    assert_eq!(moved, loads[&4], "exactly the new node's share moved");
    eprintln!("4 nodes: replicas per node {loads:?}, {moved} moved");
}
