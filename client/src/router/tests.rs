//! Routing: partitioning, replica choice, breakers, exclusions, consolidation.

use std::time::Duration;

use quiver_proto::Partitioner;

use super::*;
use crate::shard_map_cache::Replica;
use quiver_proto::NodeId;

fn table(replicas: &[&[u64]]) -> RoutingTable {
    RoutingTable {
        epoch: 1,
        shard_count: replicas.len() as u32,
        partitioner: Partitioner::Murmur2,
        shards: replicas
            .iter()
            .map(|rs| {
                rs.iter()
                    .map(|n| Replica {
                        node: NodeId(*n),
                        servable: true,
                    })
                    .collect()
            })
            .collect(),
        addrs: (1..=4)
            .map(|n| (NodeId(n), format!("127.0.0.1:{}", 1000 + n)))
            .collect(),
        cluster_mode: true,
    }
}

#[test]
fn batches_split_by_the_kafka_partitioner_and_dedupe() {
    let t = table(&[&[1], &[2], &[3], &[4]]);
    let keys: Vec<EntityKey> = ["a", "b", "a", "c"].into_iter().map(Into::into).collect();
    let b = shard_batch(&t, &keys);
    assert_eq!(b.unique.len(), 3);
    assert_eq!(b.row_to_unique, vec![0, 1, 0, 2]);
    for (shard, us) in &b.by_shard {
        for u in us {
            let k = key_bytes(b.unique[*u as usize]);
            assert_eq!(Partitioner::Murmur2.shard_for_key(&k, 4).0, *shard);
        }
    }
    assert_eq!(key_bytes(&EntityKey::from(-42i64)), b"-42");
}

#[test]
fn per_key_as_of_times_keep_a_key_asked_at_two_times_as_two_rows() {
    let t = table(&[&[1], &[2], &[3], &[4]]);
    let keys: Vec<EntityKey> = ["a", "b", "a", "a"].into_iter().map(Into::into).collect();
    let b = shard_batch_at(&t, &keys, &[10, 10, 20, 10]);
    assert_eq!(b.unique.len(), 3);
    assert_eq!(b.row_to_unique, vec![0, 1, 2, 0]);
    assert_eq!(b.unique_times, vec![10, 10, 20]);
    // Both rows of "a" go to its shard.
    let shard_of_a = Partitioner::Murmur2.shard_for_key(b"a", 4).0;
    assert_eq!(
        b.by_shard[&shard_of_a]
            .iter()
            .filter(|u| key_bytes(b.unique[**u as usize]) == b"a")
            .count(),
        2
    );
    assert!(shard_batch(&t, &keys).unique_times.is_empty());
}

// Channels are created lazily, which needs a runtime.
#[tokio::test]
async fn power_of_two_prefers_the_less_loaded_replica() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    let t = table(&[&[1, 2]]);
    let rng = Rng::new(7);
    let busy = pool.node(NodeId(1), "127.0.0.1:1001").unwrap();
    let _load: Vec<_> = (0..5).map(|_| busy.begin()).collect();
    for _ in 0..50 {
        assert_eq!(
            choose(
                &t,
                0,
                &pool,
                &Excluded::default(),
                &LaggingReplicas::default(),
                &rng
            )
            .unwrap()
            .id,
            NodeId(2)
        );
    }
    // Exclusion wins over load; nothing left is an error.
    let mut ex = Excluded::default();
    ex.node(NodeId(2));
    assert_eq!(
        choose(&t, 0, &pool, &ex, &LaggingReplicas::default(), &rng)
            .unwrap()
            .id,
        NodeId(1)
    );
    ex.node(NodeId(1));
    assert!(matches!(
        choose(&t, 0, &pool, &ex, &LaggingReplicas::default(), &rng),
        Err(ClientError::NoReplica(0))
    ));
}

#[tokio::test]
async fn any_node_choice_skips_open_breakers_and_exclusions() {
    // A push after a node left: the dead node's breaker is open, so pushes go to the
    // others (found by chaos add-remove, where a push client kept choosing it).
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_secs(60));
    let t = table(&[&[1, 2]]);
    let rng = Rng::new(3);
    let dead = pool.node(NodeId(3), "127.0.0.1:1003").unwrap();
    for _ in 0..3 {
        dead.on_failure(3, Duration::from_secs(60));
    }
    let mut chosen = HashSet::new();
    for _ in 0..100 {
        let n = choose_any(&t, &pool, &HashSet::new(), &rng)
            .unwrap()
            .unwrap();
        chosen.insert(n.id);
    }
    assert_eq!(
        chosen,
        HashSet::from([1, 2, 4].map(NodeId)),
        "every healthy node, never node 3"
    );
    // Only the dead node left: it is still tried (last resort); nothing left: None.
    let ex: HashSet<NodeId> = HashSet::from([1, 2, 4].map(NodeId));
    assert_eq!(
        choose_any(&t, &pool, &ex, &rng).unwrap().unwrap().id,
        NodeId(3)
    );
    let all: HashSet<NodeId> = HashSet::from([1, 2, 3, 4].map(NodeId));
    assert!(choose_any(&t, &pool, &all, &rng).unwrap().is_none());
}

#[tokio::test]
async fn open_breakers_are_skipped_while_others_exist() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_secs(60));
    let t = table(&[&[1, 2]]);
    let rng = Rng::new(1);
    let n1 = pool.node(NodeId(1), "127.0.0.1:1001").unwrap();
    for _ in 0..3 {
        n1.on_failure(3, Duration::from_secs(60));
    }
    for _ in 0..20 {
        assert_eq!(
            choose(
                &t,
                0,
                &pool,
                &Excluded::default(),
                &LaggingReplicas::default(),
                &rng
            )
            .unwrap()
            .id,
            NodeId(2)
        );
    }
    // Last resort: the open node rather than nothing.
    let mut ex = Excluded::default();
    ex.node(NodeId(2));
    assert_eq!(
        choose(&t, 0, &pool, &ex, &LaggingReplicas::default(), &rng)
            .unwrap()
            .id,
        NodeId(1)
    );
}

#[tokio::test]
async fn a_replica_behind_on_one_shard_keeps_its_other_shards() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    // Node 1 holds shards 0 and 1; node 2 holds shard 0 too.
    let t = table(&[&[1, 2], &[1]]);
    let rng = Rng::new(5);
    let mut ex = Excluded::default();
    ex.replica(NodeId(1), 0);
    for _ in 0..20 {
        assert_eq!(
            choose(&t, 0, &pool, &ex, &LaggingReplicas::default(), &rng)
                .unwrap()
                .id,
            NodeId(2)
        );
        assert_eq!(
            choose(&t, 1, &pool, &ex, &LaggingReplicas::default(), &rng)
                .unwrap()
                .id,
            NodeId(1)
        );
    }
}

#[tokio::test]
async fn a_replica_that_answered_behind_is_ranked_last_across_lookups() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    let t = table(&[&[1, 2], &[1, 2]]);
    let rng = Rng::new(9);
    let lagging = LaggingReplicas::default();
    lagging.note(NodeId(1), 0);
    let none = Excluded::default();
    let mut on_shard_1 = HashSet::new();
    for _ in 0..50 {
        assert_eq!(
            choose(&t, 0, &pool, &none, &lagging, &rng).unwrap().id,
            NodeId(2)
        );
        on_shard_1.insert(choose(&t, 1, &pool, &none, &lagging, &rng).unwrap().id);
    }
    assert_eq!(
        on_shard_1,
        HashSet::from([1, 2].map(NodeId)),
        "its other shard is unaffected"
    );
    // Still chosen when it is the only replica left: a preference, not an exclusion.
    let mut ex = Excluded::default();
    ex.node(NodeId(2));
    assert_eq!(
        choose(&t, 0, &pool, &ex, &lagging, &rng).unwrap().id,
        NodeId(1)
    );
}

#[tokio::test]
async fn route_groups_shards_per_node() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    let t = table(&[&[1], &[2], &[1], &[3]]);
    let groups = route(
        &t,
        &[0, 1, 2, 3],
        &pool,
        &Excluded::default(),
        &LaggingReplicas::default(),
        &Rng::new(3),
    )
    .unwrap();
    let mut g: Vec<(NodeId, Vec<u32>)> = groups
        .iter()
        .map(|g| (g.node.id, g.shards.clone()))
        .collect();
    g.sort();
    assert_eq!(
        g,
        vec![
            (NodeId(1), vec![0, 2]),
            (NodeId(2), vec![1]),
            (NodeId(3), vec![3])
        ]
    );
}

/// R = 2 over three nodes, every pair holding shards (as balanced placement does).
const PAIRS: [&[u64]; 6] = [&[1, 2], &[1, 3], &[2, 3], &[2, 1], &[3, 1], &[3, 2]];

#[tokio::test]
async fn a_lookup_over_every_shard_touches_two_of_three_nodes_and_load_stays_even() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    let t = table(&PAIRS);
    let all: Vec<u32> = (0..6).collect();
    let rng = Rng::new(11);
    let mut shards_per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    let lookups = 3_000;
    for _ in 0..lookups {
        let groups = route(
            &t,
            &all,
            &pool,
            &Excluded::default(),
            &LaggingReplicas::default(),
            &rng,
        )
        .unwrap();
        assert!(groups.len() <= 2, "{} nodes for one lookup", groups.len());
        let mut seen: Vec<u32> = Vec::new();
        for g in &groups {
            for s in &g.shards {
                assert!(
                    PAIRS[*s as usize].contains(&g.node.id.0),
                    "shard {s} sent to a non-replica"
                );
                seen.push(*s);
            }
            *shards_per_node.entry(g.node.id).or_default() += g.shards.len();
        }
        seen.sort_unstable();
        assert_eq!(seen, all, "every shard routed exactly once");
    }
    // Each node holds 2/3 of the shards; spread evenly it serves a third of them.
    let total = (lookups * all.len()) as f64;
    for (node, n) in &shards_per_node {
        let share = *n as f64 / total;
        assert!(
            (0.28..=0.39).contains(&share),
            "node {node} served {share:.3} of the shards"
        );
    }
}

#[tokio::test]
async fn consolidation_never_uses_an_avoided_replica() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_millis(10));
    let t = table(&PAIRS);
    let all: Vec<u32> = (0..6).collect();
    let rng = Rng::new(5);
    let mut excluded = Excluded::default();
    // Node 1 is avoided for shard 0 (it answered BEHIND there), node 2 for shard 2.
    excluded.replica(NodeId(1), 0);
    excluded.replica(NodeId(2), 2);
    let lagging = LaggingReplicas::default();
    for _ in 0..500 {
        let groups = route(&t, &all, &pool, &excluded, &lagging, &rng).unwrap();
        for g in &groups {
            for s in &g.shards {
                assert!(
                    !excluded.contains(g.node.id, *s),
                    "shard {s} on avoided node {}",
                    g.node.id
                );
            }
        }
        let on = |shard: u32| {
            groups
                .iter()
                .find(|g| g.shards.contains(&shard))
                .unwrap()
                .node
                .id
        };
        assert_eq!(on(0), NodeId(2));
        assert_eq!(on(2), NodeId(3));
    }
}

#[tokio::test]
async fn a_draining_node_is_used_only_when_no_healthy_replica_is_left() {
    let pool = NodePool::new(Duration::from_millis(10), Duration::from_secs(60));
    // Node 1 holds shards 0 and 1, node 2 shard 0 only.
    let t = table(&[&[1, 2], &[1]]);
    let rng = Rng::new(9);
    let none = LaggingReplicas::default();
    let n1 = pool.node(NodeId(1), "127.0.0.1:1001").unwrap();
    n1.on_draining(Duration::from_secs(60));
    for _ in 0..50 {
        let groups = route(&t, &[0, 1], &pool, &Excluded::default(), &none, &rng).unwrap();
        let on = |shard: u32| {
            groups
                .iter()
                .find(|g| g.shards.contains(&shard))
                .unwrap()
                .node
                .id
        };
        // Shard 0 moves to the healthy replica, even though node 1 is also asked for
        // shard 1 (no consolidation onto a draining node); shard 1 has no other.
        assert_eq!(on(0), NodeId(2));
        assert_eq!(on(1), NodeId(1));
    }
    // A draining node beats one with an open breaker.
    let n2 = pool.node(NodeId(2), "127.0.0.1:1002").unwrap();
    for _ in 0..3 {
        n2.on_failure(3, Duration::from_secs(60));
    }
    assert_eq!(
        choose(&t, 0, &pool, &Excluded::default(), &none, &rng)
            .unwrap()
            .id,
        NodeId(1)
    );
    // A success without the marker (the node restarted) makes it healthy again.
    n1.on_success(Duration::from_millis(10));
    assert_eq!(n1.admission(Instant::now()), Admission::Allow);
}
