//! Placement: which nodes hold a replica of each shard. A pure function of the live,
//! placeable members, the shard count P, the replication factor R and the replicas the
//! committed state already has.
//!
//! **Why not the hashring's answer alone.** Consistent hashing moves few replicas when
//! membership changes, but its load is only even on average: 3 nodes, 8 shards and R = 2
//! placed `{3, 8, 5}` — one node held a replica of every shard, did half the serving and
//! ingest, and its loss degraded every shard. Consistent hashing with bounded loads
//! evens the load but, being stateless, cascades: a new node displaces replicas from
//! old nodes onto other old nodes. So placement is **incremental** and balanced
//! explicitly, with the ring as the tie-breaker:
//!
//! 1. **Keep** what the state has (Serving and Bootstrapping replicas on placeable
//!    nodes; Draining ones are on their way out), dropping a replica only to restore zone
//!    spread or if R shrank.
//! 2. **Fill** each shard up to `min(R, N)` replicas, each time on the node that adds a
//!    new zone first, then has the fewest replicas, then already holds the shard's data
//!    (a Draining replica), then comes first on the shard's walk of the hashring
//!    ([`VNODES_PER_NODE`] points per node; `hashring` has no virtual nodes of its own,
//!    and its replica walk can repeat a host, so the walk is made distinct here).
//! 3. **Balance**: while a node holds at least two replicas more than another, move one
//!    of its shards to the least-loaded node that does not hold that shard and keeps the
//!    shard's zone spread — the shard on which the receiving node ranks best on the ring.
//!
//! Properties (property-tested below over N = 1..20, P = 8..256, R = 1..3 and zones):
//! every shard has `min(R, N)` distinct replicas; without zones every node holds
//! `⌊R·P/N⌋` or `⌈R·P/N⌉` replicas (within one of the mean); with zones, replicas of a
//! shard span `min(R, zones)` zones, and nodes of one zone are within one of each other;
//! placing again what placement returned changes nothing (the reconciler converges);
//! adding a node to a balanced cluster moves exactly the replicas the new node ends up
//! with — about R·P/(N+1), all of them onto it; removing a node re-places its replicas
//! and at most a few more to even the load.
//!
//! No client prefers one replica of a shard over another (the smart client picks by
//! least outstanding requests among two random replicas), so the order of a shard's
//! replicas carries no load and is not balanced.
//!
//! Only the Raft leader runs placement, and its result is replicated as Raft commands,
//! so the hash function need not be stable across builds or machines.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use hashring::HashRing;

/// Ring points per node: the ring only breaks ties, so this sets how evenly the
/// tie-breaks spread, not the load.
pub const VNODES_PER_NODE: u32 = 64;

/// A member that may hold replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementNode {
    /// Node id.
    pub id: u64,
    /// Failure zone; empty if unknown.
    pub zone: String,
}

/// The replicas placement starts from, per shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Replicas the state keeps (Serving or Bootstrapping).
    pub replicas: BTreeMap<u32, Vec<u64>>,
    /// Replicas on their way out (Draining): they hold the shard's data, so a shard that
    /// needs a replica prefers their node among equally loaded ones.
    pub draining: BTreeMap<u32, Vec<u64>>,
}

impl Current {
    /// A start from `replicas` with nothing draining.
    pub fn from_replicas(replicas: BTreeMap<u32, Vec<u64>>) -> Current {
        Current {
            replicas,
            draining: BTreeMap::new(),
        }
    }
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

/// Nodes are indexes into the sorted id list from here on.
struct Layout {
    ids: Vec<u64>,
    zone: Vec<usize>,
    zone_count: usize,
    /// `rank[s][n]`: position of node `n` on shard `s`'s distinct walk of the ring.
    rank: Vec<Vec<u32>>,
    want: usize,
}

impl Layout {
    fn new(nodes: &[PlacementNode], shard_count: u32, replication_factor: usize) -> Layout {
        let mut sorted: Vec<&PlacementNode> = nodes.iter().collect();
        sorted.sort_by_key(|n| n.id);
        sorted.dedup_by_key(|n| n.id);
        let ids: Vec<u64> = sorted.iter().map(|n| n.id).collect();
        let zones: BTreeSet<&str> = sorted.iter().map(|n| n.zone.as_str()).collect();
        let zone = sorted
            .iter()
            .map(|n| zones.iter().position(|z| *z == n.zone).unwrap_or(0))
            .collect();
        let mut ring: HashRing<VNode> = HashRing::new();
        for id in &ids {
            for point in 0..VNODES_PER_NODE {
                ring.add(VNode { node: *id, point });
            }
        }
        let rank = (0..shard_count)
            .map(|s| {
                let mut rank = vec![u32::MAX; ids.len()];
                let mut next = 0;
                let walk = ring
                    .get_with_replicas(&ShardPoint(s), ring.len().saturating_sub(1))
                    .unwrap_or_default();
                for v in walk {
                    if let Ok(i) = ids.binary_search(&v.node)
                        && rank[i] == u32::MAX
                    {
                        rank[i] = next;
                        next += 1;
                    }
                }
                rank
            })
            .collect();
        Layout {
            want: replication_factor.min(ids.len()),
            zone_count: zones.len(),
            zone,
            rank,
            ids,
        }
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    fn distinct_zones(&self, set: impl IntoIterator<Item = usize>) -> usize {
        set.into_iter()
            .map(|n| self.zone[n])
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Whether `set` spans as many zones as it can.
    fn zone_spread(&self, set: &[usize]) -> bool {
        self.distinct_zones(set.iter().copied()) == set.len().min(self.zone_count)
    }
}

/// Desired replicas per shard: `shard → node ids`, `min(R, nodes)` distinct nodes each
/// (replicas are peers; their order means nothing), starting from `current`.
pub fn place(
    nodes: &[PlacementNode],
    shard_count: u32,
    replication_factor: usize,
    current: &Current,
) -> BTreeMap<u32, Vec<u64>> {
    let layout = Layout::new(nodes, shard_count, replication_factor);
    if layout.ids.is_empty() {
        return (0..shard_count).map(|s| (s, Vec::new())).collect();
    }
    let mut assign = keep(&layout, shard_count, current);
    let mut load = vec![0usize; layout.ids.len()];
    for set in &assign {
        for n in set {
            load[*n] += 1;
        }
    }
    fill(&layout, current, &mut assign, &mut load);
    balance(&layout, &mut assign, &mut load);
    assign
        .into_iter()
        .enumerate()
        .map(|(s, set)| (s as u32, set.into_iter().map(|n| layout.ids[n]).collect()))
        .collect()
}

/// Step 1: the current replicas on placeable nodes, at most `want` per shard (the best
/// ranked kept if R shrank), minus what breaks zone spread.
fn keep(layout: &Layout, shard_count: u32, current: &Current) -> Vec<Vec<usize>> {
    (0..shard_count)
        .map(|s| {
            let rank = &layout.rank[s as usize];
            let mut set: Vec<usize> = Vec::with_capacity(layout.want);
            for id in current.replicas.get(&s).into_iter().flatten() {
                if let Some(n) = layout.index(*id)
                    && !set.contains(&n)
                {
                    set.push(n);
                }
            }
            while set.len() > layout.want {
                drop_worst(&mut set, rank, |_| true);
            }
            // Two replicas in one zone while another zone could hold one: drop the worse
            // ranked of the duplicates; fill puts a replica in a new zone instead.
            while !layout.zone_spread(&set) {
                let dup = |n: usize| {
                    set.iter()
                        .filter(|m| layout.zone[**m] == layout.zone[n])
                        .count()
                        > 1
                };
                let dups: Vec<usize> = set.iter().copied().filter(|n| dup(*n)).collect();
                drop_worst(&mut set, rank, |n| dups.contains(&n));
            }
            set
        })
        .collect()
}

fn drop_worst(set: &mut Vec<usize>, rank: &[u32], eligible: impl Fn(usize) -> bool) {
    if let Some(pos) = set
        .iter()
        .enumerate()
        .filter(|(_, n)| eligible(**n))
        .max_by_key(|(_, n)| rank[**n])
        .map(|(i, _)| i)
    {
        set.remove(pos);
    }
}

/// Step 2: every shard up to `want` replicas.
fn fill(layout: &Layout, current: &Current, assign: &mut [Vec<usize>], load: &mut [usize]) {
    for (s, set) in assign.iter_mut().enumerate() {
        let rank = &layout.rank[s];
        let warm: Vec<usize> = current
            .draining
            .get(&(s as u32))
            .into_iter()
            .flatten()
            .filter_map(|id| layout.index(*id))
            .collect();
        while set.len() < layout.want {
            let used: BTreeSet<usize> = set.iter().map(|n| layout.zone[*n]).collect();
            let best = (0..layout.ids.len())
                .filter(|n| !set.contains(n))
                .min_by_key(|n| {
                    (
                        used.contains(&layout.zone[*n]),
                        load[*n],
                        !warm.contains(n),
                        rank[*n],
                    )
                })
                .expect("want <= node count, so a node is free");
            set.push(best);
            load[best] += 1;
        }
    }
}

/// Step 3: moves from heavier to lighter nodes until no node holds two more than another
/// (or no move keeps zone spread).
fn balance(layout: &Layout, assign: &mut [Vec<usize>], load: &mut [usize]) {
    let n = layout.ids.len();
    loop {
        let mut heavy: Vec<usize> = (0..n).collect();
        heavy.sort_by_key(|i| (std::cmp::Reverse(load[*i]), *i));
        let mut light: Vec<usize> = (0..n).collect();
        light.sort_by_key(|i| (load[*i], *i));
        let mut moved = false;
        'search: for &from in &heavy {
            for &to in &light {
                if load[from] < load[to] + 2 {
                    break;
                }
                if let Some(s) = best_move(layout, assign, from, to) {
                    let set = &mut assign[s];
                    let pos = set.iter().position(|x| *x == from).expect("from holds s");
                    set[pos] = to;
                    load[from] -= 1;
                    load[to] += 1;
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// The shard to move from `from` to `to`: one `from` holds and `to` does not, whose zone
/// spread the move keeps, on which `to` ranks best.
fn best_move(layout: &Layout, assign: &[Vec<usize>], from: usize, to: usize) -> Option<usize> {
    assign
        .iter()
        .enumerate()
        .filter(|(_, set)| set.contains(&from) && !set.contains(&to))
        .filter(|(_, set)| {
            let before = layout.distinct_zones(set.iter().copied());
            let after =
                layout.distinct_zones(set.iter().copied().filter(|x| *x != from).chain([to]));
            after >= before
        })
        .min_by_key(|(s, _)| (layout.rank[*s][to], *s))
        .map(|(s, _)| s)
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

/// Replicas per node of a placement.
pub fn load_per_node(placed: &BTreeMap<u32, Vec<u64>>) -> BTreeMap<u64, usize> {
    let mut per_node = BTreeMap::new();
    for set in placed.values() {
        for n in set {
            *per_node.entry(*n).or_default() += 1;
        }
    }
    per_node
}

#[cfg(test)]
mod tests;
