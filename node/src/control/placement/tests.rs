use super::*;

fn nodes(ids: impl IntoIterator<Item = u64>) -> Vec<PlacementNode> {
    ids.into_iter()
        .map(|id| PlacementNode {
            id,
            zone: String::new(),
        })
        .collect()
}

fn zoned(spec: &[(u64, &str)]) -> Vec<PlacementNode> {
    spec.iter()
        .map(|(id, z)| PlacementNode {
            id: *id,
            zone: (*z).to_owned(),
        })
        .collect()
}

/// A fresh placement (no replicas yet).
fn fresh(nodes: &[PlacementNode], p: u32, r: usize) -> BTreeMap<u32, Vec<u64>> {
    place(nodes, p, r, &Current::default())
}

/// Placement starting from `before`.
fn next(
    nodes: &[PlacementNode],
    p: u32,
    r: usize,
    before: &BTreeMap<u32, Vec<u64>>,
) -> BTreeMap<u32, Vec<u64>> {
    place(nodes, p, r, &Current::from_replicas(before.clone()))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_ids(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    while ids.len() < n {
        let id = 1 + rng.below(1000);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Deterministic cases over N = 2..20, P = 8..256, R = 1..3.
fn cases() -> Vec<(Vec<u64>, u32, usize)> {
    let mut rng = Rng(0x5eed);
    let mut out = Vec::new();
    for n in 2..=20 {
        for _ in 0..3 {
            let p = [8u32, 12, 16, 32, 48, 64, 100, 128, 256][rng.below(9) as usize];
            let r = 1 + rng.below(3) as usize;
            out.push((random_ids(&mut rng, n), p, r));
        }
    }
    out
}

/// Every shard has `min(R, N)` distinct replicas, all on given nodes.
fn assert_valid(ids: &[u64], p: u32, r: usize, placed: &BTreeMap<u32, Vec<u64>>) {
    assert_eq!(placed.len(), p as usize);
    for (s, reps) in placed {
        let distinct: BTreeSet<_> = reps.iter().collect();
        assert_eq!(
            reps.len(),
            r.min(ids.len()),
            "shard {s} of {ids:?} R={r}: {reps:?}"
        );
        assert_eq!(
            distinct.len(),
            reps.len(),
            "replicas of shard {s} repeat a node"
        );
        assert!(
            reps.iter().all(|n| ids.contains(n)),
            "shard {s}: {reps:?} not in {ids:?}"
        );
    }
}

/// Every node within one replica of the mean R·P/N (so ⌊mean⌋ or ⌈mean⌉).
fn assert_balanced(ids: &[u64], p: u32, r: usize, placed: &BTreeMap<u32, Vec<u64>>) {
    let load = load_per_node(placed);
    let total = r.min(ids.len()) * p as usize;
    let (lo, hi) = (total / ids.len(), total.div_ceil(ids.len()));
    for id in ids {
        let l = load.get(id).copied().unwrap_or(0);
        assert!(
            (lo..=hi).contains(&l),
            "node {id} holds {l}, mean {:.2} ({ids:?} P={p} R={r}): {load:?}",
            total as f64 / ids.len() as f64
        );
    }
}

#[test]
fn fresh_placements_are_valid_and_within_one_of_the_mean() {
    for (ids, p, r) in cases() {
        let placed = fresh(&nodes(ids.clone()), p, r);
        assert_valid(&ids, p, r, &placed);
        assert_balanced(&ids, p, r, &placed);
    }
    // One node, and none.
    let one = fresh(&nodes([7]), 8, 3);
    assert!(one.values().all(|r| r == &vec![7]));
    let none = fresh(&[], 4, 2);
    assert_eq!(none.len(), 4);
    assert!(none.values().all(Vec::is_empty));
}

/// The cluster: 3 nodes, 8 shards, R = 2 placed {3, 8, 5} on the hashring alone.
#[test]
fn the_documented_example_clusters_are_balanced() {
    for (n, p, r) in [
        (3, 8, 2),
        (3, 12, 2),
        (5, 48, 3),
        (6, 48, 3),
        (4, 16, 2),
        (2, 8, 2),
    ] {
        let ids: Vec<u64> = (1..=n).collect();
        let placed = fresh(&nodes(ids.clone()), p, r);
        assert_valid(&ids, p, r, &placed);
        assert_balanced(&ids, p, r, &placed);
    }
}

#[test]
fn placing_again_what_placement_returned_changes_nothing() {
    for (ids, p, r) in cases() {
        let ns = nodes(ids.clone());
        let placed = fresh(&ns, p, r);
        assert_eq!(next(&ns, p, r, &placed), placed, "{ids:?} P={p} R={r}");
    }
}

#[test]
fn placement_is_deterministic_and_order_independent() {
    let a = fresh(&nodes([3, 1, 2, 9]), 32, 2);
    let b = fresh(&nodes([9, 2, 1, 3]), 32, 2);
    assert_eq!(a, b);
    let later = next(&nodes([2, 9, 3, 1, 4]), 32, 2, &a);
    assert_eq!(later, next(&nodes([4, 1, 2, 3, 9]), 32, 2, &b));
}

/// Adding a node to a balanced cluster moves exactly the replicas the new node ends up
/// with — ⌊R·P/(N+1)⌋ or ⌈R·P/(N+1)⌉ — all onto it, and the result is balanced.
#[test]
fn adding_a_node_moves_r_p_over_n_plus_1_replicas_all_to_it() {
    for (ids, p, r) in cases() {
        let new_id = 2000;
        let before = fresh(&nodes(ids.clone()), p, r);
        let grown: Vec<u64> = ids.iter().copied().chain([new_id]).collect();
        let after = next(&nodes(grown.clone()), p, r, &before);
        assert_valid(&grown, p, r, &after);
        assert_balanced(&grown, p, r, &after);
        for (s, reps) in &after {
            for node in reps {
                if !before[s].contains(node) {
                    assert_eq!(*node, new_id, "shard {s}: a replica moved to an old node");
                }
            }
        }
        let moved = moved_replicas(&before, &after);
        let total = r.min(grown.len()) * p as usize;
        let ideal = total as f64 / grown.len() as f64;
        // R growing with N (R > N before) adds replicas instead of moving them.
        let added = (r.min(grown.len()) - r.min(ids.len())) * p as usize;
        assert!(
            moved <= ideal.ceil() as usize && moved + 1 >= ideal.floor() as usize || added > 0,
            "{ids:?} P={p} R={r}: moved {moved}, ideal {ideal:.2}"
        );
    }
}

/// Removing a node re-places its replicas and at most a few more (to even the load);
/// every other replica stays.
#[test]
fn removing_a_node_moves_its_replicas_and_few_others() {
    for (ids, p, r) in cases() {
        let gone = ids[0];
        let rest = &ids[1..];
        let before = fresh(&nodes(ids.clone()), p, r);
        let after = next(&nodes(rest.iter().copied()), p, r, &before);
        assert_valid(rest, p, r, &after);
        assert_balanced(rest, p, r, &after);
        let its = load_per_node(&before)[&gone];
        let moved = moved_replicas(&before, &after);
        let shrunk = (r.min(ids.len()) - r.min(rest.len())) * p as usize;
        assert!(
            moved <= its + rest.len(),
            "{ids:?} P={p} R={r}: removing a node with {its} replicas moved {moved}"
        );
        let kept: usize = before
            .iter()
            .map(|(s, reps)| {
                reps.iter()
                    .filter(|n| **n != gone && after[s].contains(n))
                    .count()
            })
            .sum();
        let others = r.min(ids.len()) * p as usize - its;
        assert!(
            kept + rest.len() >= others || shrunk > 0,
            "{ids:?} P={p} R={r}: only {kept} of {others} surviving replicas stayed"
        );
    }
}

/// A long run of joins, departures and returns: always valid and balanced, and each
/// step moves a bounded number of replicas.
#[test]
fn membership_churn_stays_balanced_with_bounded_movement() {
    let mut rng = Rng(99);
    for (p, r) in [(8u32, 2usize), (16, 3), (64, 2), (256, 3), (12, 1)] {
        let mut members: Vec<u64> = (1..=3).collect();
        let mut placed = fresh(&nodes(members.clone()), p, r);
        for step in 0..40 {
            let before = placed.clone();
            let old_len = members.len();
            let joined = members.len() < 3 || (members.len() < 12 && rng.below(2) == 0);
            if joined {
                members.push(100 + step);
            } else {
                let i = rng.below(members.len() as u64) as usize;
                members.remove(i);
            }
            placed = next(&nodes(members.clone()), p, r, &placed);
            assert_valid(&members, p, r, &placed);
            assert_balanced(&members, p, r, &placed);
            let moved = moved_replicas(&before, &placed);
            let per_node = (r.min(members.len().max(old_len)) * p as usize)
                .div_ceil(members.len().min(old_len));
            assert!(
                moved
                    <= per_node
                        + members.len()
                        + (r * p as usize) * usize::from(r > members.len().min(old_len)),
                "P={p} R={r} step {step}: moved {moved} (per node {per_node})"
            );
        }
    }
}

#[test]
fn zones_spread_replicas_and_balance_within_each_zone() {
    let z5 = zoned(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]);
    let zone = |id: u64| {
        z5.iter()
            .find(|n| n.id == id)
            .map(|n| n.zone.clone())
            .unwrap()
    };
    for (s, reps) in fresh(&z5, 64, 3) {
        let zones: BTreeSet<_> = reps.iter().map(|n| zone(*n)).collect();
        assert_eq!(zones.len(), 3, "shard {s}: {reps:?}");
    }
    // More replicas than zones: still R distinct nodes, zones as spread as possible.
    for (_, reps) in fresh(&z5[..4], 16, 3) {
        let zones: BTreeSet<_> = reps.iter().map(|n| zone(*n)).collect();
        assert_eq!((reps.len(), zones.len()), (3, 2));
    }
    let mut rng = Rng(5);
    for _ in 0..60 {
        let zone_count = 2 + rng.below(3) as usize;
        let per_zone = 1 + rng.below(4) as usize;
        let p = [8u32, 16, 48, 64, 128][rng.below(5) as usize];
        let r = 1 + rng.below(3) as usize;
        let spec: Vec<(u64, String)> = (0..zone_count * per_zone)
            .map(|i| (10 + i as u64, format!("z{}", i % zone_count)))
            .collect();
        let ns: Vec<PlacementNode> = spec
            .iter()
            .map(|(id, z)| PlacementNode {
                id: *id,
                zone: z.clone(),
            })
            .collect();
        let ids: Vec<u64> = spec.iter().map(|(id, _)| *id).collect();
        let placed = fresh(&ns, p, r);
        assert_valid(&ids, p, r, &placed);
        let zone_of = |id: u64| {
            spec.iter()
                .find(|(i, _)| *i == id)
                .map(|(_, z)| z.clone())
                .unwrap()
        };
        for (s, reps) in &placed {
            let zones: BTreeSet<_> = reps.iter().map(|n| zone_of(*n)).collect();
            assert_eq!(
                zones.len(),
                reps.len().min(zone_count),
                "shard {s}: {reps:?}"
            );
        }
        // Equal-sized zones: balanced across the whole cluster.
        assert_balanced(&ids, p, r, &placed);
        assert_eq!(next(&ns, p, r, &placed), placed, "fixed point with zones");
        // A node joins zone 0: still spread, balanced within its zone.
        let mut grown = ns.clone();
        grown.push(PlacementNode {
            id: 999,
            zone: "z0".into(),
        });
        let after = next(&grown, p, r, &placed);
        let mut all_ids = ids.clone();
        all_ids.push(999);
        assert_valid(&all_ids, p, r, &after);
        let load = load_per_node(&after);
        for z in 0..zone_count {
            let name = format!("z{z}");
            let in_zone: Vec<usize> = grown
                .iter()
                .filter(|n| n.zone == name)
                .map(|n| load.get(&n.id).copied().unwrap_or(0))
                .collect();
            let (lo, hi) = (in_zone.iter().min().unwrap(), in_zone.iter().max().unwrap());
            assert!(hi - lo <= 1, "zone {name}: {in_zone:?}");
        }
        for (s, reps) in &after {
            let zones: BTreeSet<String> = reps
                .iter()
                .map(|n| if *n == 999 { "z0".into() } else { zone_of(*n) })
                .collect();
            assert_eq!(
                zones.len(),
                reps.len().min(zone_count),
                "shard {s}: {reps:?}"
            );
        }
    }
}

/// A zone that appears later is used: replicas move so each shard spans it.
#[test]
fn a_new_zone_is_spread_into() {
    let two = zoned(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
    let before = fresh(&two, 16, 3);
    let three = zoned(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
    let after = next(&three, 16, 3, &before);
    for (s, reps) in &after {
        let zones: BTreeSet<_> = reps
            .iter()
            .map(|n| three.iter().find(|m| m.id == *n).unwrap().zone.clone())
            .collect();
        assert_eq!(zones.len(), 3, "shard {s}: {reps:?}");
    }
    assert_balanced(&[1, 2, 3, 4, 5, 6], 16, 3, &after);
}

/// A shard that needs a replica prefers an equally loaded node that still holds its
/// data (a Draining replica).
#[test]
fn draining_replicas_are_preferred_when_a_shard_needs_one() {
    let ns = nodes([1, 2, 3, 4]);
    let full = fresh(&ns, 3, 1);
    let load = load_per_node(&full);
    let idle = [1, 2, 3, 4]
        .into_iter()
        .find(|n| !load.contains_key(n))
        .unwrap();
    let had = full[&0][0];
    // Shard 0 lost its replica: its old node and the idle node both hold nothing now.
    let mut replicas = full.clone();
    replicas.insert(0, Vec::new());
    for warm in [idle, had] {
        let current = Current {
            replicas: replicas.clone(),
            draining: BTreeMap::from([(0, vec![warm])]),
        };
        assert_eq!(place(&ns, 3, 1, &current)[&0], vec![warm]);
    }
}
