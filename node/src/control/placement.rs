//! Placement: which nodes hold a replica of each shard. A pure function of the live,
//! placeable members, the shard count P and the replication factor R.
//!
//! Each node owns [`VNODES_PER_NODE`] points on a consistent-hash ring (`hashring`, which
//! has no virtual nodes of its own). A shard's replicas are found by walking the ring from
//! the shard's point and taking the first R *distinct* nodes (`hashring`'s replica walk can
//! repeat a host), preferring nodes in zones not used yet when zones are set. Adding a node
//! therefore only inserts it into some shards' walks: about R·P/(N+1) replicas move, all of
//! them to the new node; removing a node only re-places that node's replicas.
//!
//! Only the Raft leader runs placement, and its result is replicated as a Raft command,
//! so the hash function need not be stable across builds or machines.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use hashring::HashRing;

/// Ring points per node; enough to keep the load within a few tens of percent of even.
pub const VNODES_PER_NODE: u32 = 64;

/// A member that may hold replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementNode {
    /// Node id.
    pub id: u64,
    /// Failure zone; empty if unknown.
    pub zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VNode {
    node: u64,
    point: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"quiver-vnode");
        state.write(&self.node.to_le_bytes());
        state.write(&self.point.to_le_bytes());
    }
}

struct ShardPoint(u32);

impl Hash for ShardPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(b"quiver-shard");
        state.write(&self.0.to_le_bytes());
    }
}

/// Desired replicas per shard: `shard → node ids` (at most R, distinct, first is no leader:
/// replicas are peers). Shards get `min(R, nodes)` replicas.
pub fn place(
    nodes: &[PlacementNode],
    shard_count: u32,
    replication_factor: usize,
) -> BTreeMap<u32, Vec<u64>> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        for s in 0..shard_count {
            out.insert(s, Vec::new());
        }
        return out;
    }
    let mut ring: HashRing<VNode> = HashRing::new();
    for n in nodes {
        for point in 0..VNODES_PER_NODE {
            ring.add(VNode { node: n.id, point });
        }
    }
    let zone_of: BTreeMap<u64, &str> = nodes.iter().map(|n| (n.id, n.zone.as_str())).collect();
    let zoned = nodes.iter().any(|n| !n.zone.is_empty());
    let want = replication_factor.min(nodes.len());
    for s in 0..shard_count {
        // The whole ring, rotated to start at the shard's point.
        let walk = ring
            .get_with_replicas(&ShardPoint(s), ring.len() - 1)
            .unwrap_or_default();
        let mut hosts: Vec<u64> = Vec::with_capacity(nodes.len());
        for v in walk {
            if !hosts.contains(&v.node) {
                hosts.push(v.node);
            }
        }
        let mut chosen: Vec<u64> = Vec::with_capacity(want);
        if zoned {
            // First pass: one replica per zone, in walk order.
            let mut zones: BTreeSet<&str> = BTreeSet::new();
            for h in &hosts {
                if chosen.len() == want {
                    break;
                }
                if zones.insert(zone_of[h]) {
                    chosen.push(*h);
                }
            }
        }
        for h in &hosts {
            if chosen.len() == want {
                break;
            }
            if !chosen.contains(h) {
                chosen.push(*h);
            }
        }
        out.insert(s, chosen);
    }
    out
}

/// Replicas `(shard, node)` present in `after` but not in `before`.
pub fn moved_replicas(before: &BTreeMap<u32, Vec<u64>>, after: &BTreeMap<u32, Vec<u64>>) -> usize {
    after
        .iter()
        .map(|(s, nodes)| {
            let old = before.get(s).map(Vec::as_slice).unwrap_or_default();
            nodes.iter().filter(|n| !old.contains(n)).count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: impl IntoIterator<Item = u64>) -> Vec<PlacementNode> {
        ids.into_iter()
            .map(|id| PlacementNode {
                id,
                zone: String::new(),
            })
            .collect()
    }

    /// Deterministic pseudo-random cases (splitmix64).
    fn cases() -> impl Iterator<Item = (Vec<u64>, u32, usize)> {
        let mut x: u64 = 0x5eed;
        let mut next = move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..60).map(move |_| {
            let n = 1 + (next() % 9) as usize;
            let mut ids: Vec<u64> = Vec::new();
            while ids.len() < n {
                let id = 1 + next() % 1000;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            let p = [8u32, 16, 32, 64, 128][(next() % 5) as usize];
            let r = 1 + (next() % 3) as usize;
            (ids, p, r)
        })
    }

    #[test]
    fn every_shard_gets_min_r_n_distinct_replicas() {
        for (ids, p, r) in cases() {
            let placed = place(&nodes(ids.clone()), p, r);
            assert_eq!(placed.len(), p as usize);
            for (s, reps) in &placed {
                let distinct: BTreeSet<_> = reps.iter().collect();
                assert_eq!(reps.len(), r.min(ids.len()), "shard {s} of {ids:?} r={r}");
                assert_eq!(
                    distinct.len(),
                    reps.len(),
                    "replicas of shard {s} repeat a node"
                );
                assert!(reps.iter().all(|n| ids.contains(n)));
            }
        }
    }

    #[test]
    fn placement_is_deterministic_and_order_independent() {
        let a = place(&nodes([3, 1, 2, 9]), 32, 2);
        let b = place(&nodes([9, 2, 1, 3]), 32, 2);
        assert_eq!(a, b);
    }

    /// Adding a node to N moves only replicas onto the new node, and at most
    /// `1.5 · R·P/(N+1) + R` of them (the ideal is R·P/(N+1); the slack covers the
    /// unevenness of 64 virtual nodes per node).
    #[test]
    fn adding_a_node_moves_about_r_p_over_n_plus_1_replicas_all_to_it() {
        for (ids, p, r) in cases() {
            let new_id = 2000;
            let before = place(&nodes(ids.clone()), p, r);
            let after = place(&nodes(ids.iter().copied().chain([new_id])), p, r);
            let moved = moved_replicas(&before, &after);
            let n = ids.len() as f64;
            let ideal = (r.min(ids.len() + 1)) as f64 * f64::from(p) / (n + 1.0);
            let bound = (1.5 * ideal + r as f64).ceil() as usize;
            assert!(
                moved <= bound,
                "{ids:?} P={p} R={r}: moved {moved} > bound {bound} (ideal {ideal:.1})"
            );
            for (s, reps) in &after {
                for node in reps {
                    if !before[s].contains(node) {
                        assert_eq!(*node, new_id, "shard {s}: a replica moved to an old node");
                    }
                }
            }
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_replicas() {
        for (ids, p, r) in cases() {
            if ids.len() < 2 {
                continue;
            }
            let gone = ids[0];
            let before = place(&nodes(ids.clone()), p, r);
            let after = place(&nodes(ids[1..].iter().copied()), p, r);
            for (s, reps) in &before {
                if !reps.contains(&gone) {
                    assert_eq!(
                        &after[s], reps,
                        "shard {s} did not hold node {gone} but changed"
                    );
                } else {
                    let kept: Vec<_> = reps.iter().filter(|n| **n != gone).collect();
                    assert!(
                        kept.iter().all(|n| after[s].contains(n)),
                        "shard {s}: surviving replicas must stay"
                    );
                }
            }
        }
    }

    #[test]
    fn zones_spread_replicas_when_possible() {
        let zoned = vec![
            PlacementNode {
                id: 1,
                zone: "a".into(),
            },
            PlacementNode {
                id: 2,
                zone: "a".into(),
            },
            PlacementNode {
                id: 3,
                zone: "b".into(),
            },
            PlacementNode {
                id: 4,
                zone: "b".into(),
            },
            PlacementNode {
                id: 5,
                zone: "c".into(),
            },
        ];
        let zone = |id: u64| {
            zoned
                .iter()
                .find(|n| n.id == id)
                .map(|n| n.zone.clone())
                .unwrap()
        };
        for (s, reps) in place(&zoned, 64, 3) {
            let zones: BTreeSet<_> = reps.iter().map(|n| zone(*n)).collect();
            assert_eq!(zones.len(), 3, "shard {s}: {reps:?}");
        }
        // More replicas than zones: still R distinct nodes, zones as spread as possible.
        for (_, reps) in place(&zoned[..4], 16, 3) {
            let zones: BTreeSet<_> = reps.iter().map(|n| zone(*n)).collect();
            assert_eq!((reps.len(), zones.len()), (3, 2));
        }
    }

    #[test]
    fn load_is_reasonably_even() {
        let placed = place(&nodes(1..=5), 256, 2);
        let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
        for reps in placed.values() {
            for n in reps {
                *per_node.entry(*n).or_default() += 1;
            }
        }
        let ideal = 256.0 * 2.0 / 5.0;
        for (n, c) in per_node {
            assert!(
                (c as f64) < 1.5 * ideal && (c as f64) > 0.5 * ideal,
                "node {n} holds {c} (ideal {ideal})"
            );
        }
    }
}
