//! Key → shard → replica: the shard of each key with the cluster's partitioner (the
//! producers' function, shared with the node through `quiver-proto`), then one replica
//! per shard by least outstanding requests among two random candidates ("power of two
//! choices"), skipping nodes whose circuit breaker is open.

use quiver_proto::NodeId;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use quiver_proto::v1::EntityKey;
use quiver_proto::v1::entity_key::Kind;

use crate::error::ClientError;
use crate::lagging::LaggingReplicas;
use crate::pool::{Admission, NodeHandle, NodePool};
use crate::shard_map_cache::RoutingTable;

/// A small lock-free RNG (SplitMix64); replica choice needs speed, not quality.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(AtomicU64::new(seed))
    }

    pub(crate) fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The bytes an entity key is hashed as: what producers use as the Kafka key.
pub(crate) fn key_bytes(key: &EntityKey) -> Vec<u8> {
    key_bytes_ref(key).into_owned()
}

/// [`key_bytes`] without a copy for a string key (the common case).
fn key_bytes_ref(key: &EntityKey) -> Cow<'_, [u8]> {
    match &key.kind {
        Some(Kind::StringValue(s)) => Cow::Borrowed(s.as_bytes()),
        Some(k) => Cow::Owned(k.kafka_key()),
        None => Cow::Borrowed(&[]),
    }
}

/// A batch split by shard, duplicates removed; it borrows the lookup's keys.
#[derive(Debug)]
pub(crate) struct ShardedBatch<'k> {
    /// Distinct keys in first-seen order.
    pub(crate) unique: Vec<&'k EntityKey>,
    /// Request row → index into `unique`.
    pub(crate) row_to_unique: Vec<u32>,
    /// Shard → indexes into `unique`.
    pub(crate) by_shard: BTreeMap<u32, Vec<u32>>,
    /// With per-key as-of times: the time of each unique (key, time) pair; else empty.
    pub(crate) unique_times: Vec<i64>,
}

/// Splits `keys` by shard under `table`.
pub(crate) fn shard_batch<'k>(table: &RoutingTable, keys: &'k [EntityKey]) -> ShardedBatch<'k> {
    shard_batch_at(table, keys, &[])
}

/// A key's bytes and, with per-key as-of times, its time: one row of a lookup.
type KeyAt<'k> = (Cow<'k, [u8]>, Option<i64>);

/// Splits `keys` by shard under `table`; with `times` (one per key: per-key as-of times),
/// a key asked at two times is two rows.
pub(crate) fn shard_batch_at<'k>(
    table: &RoutingTable,
    keys: &'k [EntityKey],
    times: &[i64],
) -> ShardedBatch<'k> {
    // A key asked at two times (per-key as-of) is two rows. foldhash, not SipHash: a
    // lookup hashes every key (seeded per process, so a caller cannot aim collisions).
    let mut index: HashMap<KeyAt<'k>, u32, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(keys.len(), foldhash::fast::RandomState::default());
    let mut unique = Vec::with_capacity(keys.len());
    let mut unique_times = Vec::with_capacity(times.len());
    let mut row_to_unique = Vec::with_capacity(keys.len());
    let mut by_shard: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let ident = (key_bytes_ref(k), times.get(i).copied());
        let next = unique.len() as u32;
        let u = *index.entry(ident).or_insert_with_key(|(b, _)| {
            by_shard.entry(table.shard_of(b)).or_default().push(next);
            unique.push(k);
            if let Some(t) = times.get(i) {
                unique_times.push(*t);
            }
            next
        });
        row_to_unique.push(u);
    }
    ShardedBatch {
        unique,
        row_to_unique,
        by_shard,
        unique_times,
    }
}

/// Shards sent to one node.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) node: Arc<NodeHandle>,
    pub(crate) shards: Vec<u32>,
}

/// Picks a node from `candidates` (admission, handle): least outstanding of two random.
fn power_of_two(rng: &Rng, candidates: &[Arc<NodeHandle>]) -> Arc<NodeHandle> {
    match candidates.len() {
        1 => candidates[0].clone(),
        n => {
            let a = rng.below(n);
            let b = (a + 1 + rng.below(n - 1)) % n;
            let (x, y) = (&candidates[a], &candidates[b]);
            if y.outstanding() < x.outstanding() {
                y.clone()
            } else {
                x.clone()
            }
        }
    }
}

/// Replicas one lookup avoids after they failed it: whole nodes (down, overloaded) or one
/// shard on a node (behind on that shard's watermark: its other shards are fine).
#[derive(Debug, Clone, Default)]
pub(crate) struct Excluded {
    nodes: HashSet<NodeId>,
    replicas: HashSet<(NodeId, u32)>,
}

impl Excluded {
    /// Avoid `node` for every shard.
    pub(crate) fn node(&mut self, node: NodeId) {
        self.nodes.insert(node);
    }

    /// Avoid `node` for `shard` only.
    pub(crate) fn replica(&mut self, node: NodeId, shard: u32) {
        self.replicas.insert((node, shard));
    }

    /// Whether the replica of `shard` on `node` is avoided.
    pub(crate) fn contains(&self, node: NodeId, shard: u32) -> bool {
        self.nodes.contains(&node) || self.replicas.contains(&(node, shard))
    }

    /// Gives every replica another chance.
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.replicas.clear();
    }
}

/// Chooses a replica of `shard` not in `excluded`. Healthy nodes first (replicas that
/// recently answered BEHIND after the others); a node whose breaker allows a probe is used
/// only if it wins the probe slot; open breakers only as a last resort.
pub(crate) fn choose(
    table: &RoutingTable,
    shard: u32,
    pool: &NodePool,
    excluded: &Excluded,
    lagging: &LaggingReplicas,
    rng: &Rng,
) -> Result<Arc<NodeHandle>, ClientError> {
    let replicas = table
        .shards
        .get(shard as usize)
        .ok_or(ClientError::NoReplica(shard))?;
    let candidates = replicas
        .iter()
        .filter(|r| r.servable && !excluded.contains(r.node, shard))
        .map(|r| r.node);
    let now = Instant::now();
    pick(table, candidates, pool, rng, |id| {
        lagging.avoid(id, shard, now)
    })?
    .ok_or(ClientError::NoReplica(shard))
}

/// Chooses any node of the map not in `excluded` (for requests every node can serve,
/// such as pushes), with the same preference for healthy nodes as [`choose`].
pub(crate) fn choose_any(
    table: &RoutingTable,
    pool: &NodePool,
    excluded: &HashSet<NodeId>,
    rng: &Rng,
) -> Result<Option<Arc<NodeHandle>>, ClientError> {
    let mut ids: Vec<NodeId> = table
        .addrs
        .keys()
        .copied()
        .filter(|n| !excluded.contains(n))
        .collect();
    // The map's order is a hash order: sorted, a seeded rng chooses reproducibly.
    ids.sort_unstable();
    pick(table, ids.into_iter(), pool, rng, |_| false)
}

/// Ranks `candidates` by their breakers: closed ones by power of two choices (those
/// `behind` says to avoid only if no other is closed), else the first whose probe slot
/// this request wins, else (last resort) an open one.
fn pick(
    table: &RoutingTable,
    candidates: impl Iterator<Item = NodeId>,
    pool: &NodePool,
    rng: &Rng,
    behind: impl Fn(NodeId) -> bool,
) -> Result<Option<Arc<NodeHandle>>, ClientError> {
    let now = Instant::now();
    let mut healthy = Vec::new();
    let mut lagging = Vec::new();
    let mut draining = Vec::new();
    let mut denied = Vec::new();
    for id in candidates {
        let Some(addr) = table.addrs.get(&id) else {
            continue;
        };
        let node = pool.node(id, addr)?;
        match node.admission(now) {
            Admission::Allow if behind(id) => lagging.push(node),
            Admission::Allow => healthy.push(node),
            // A draining node still answers: better than a lagging or a failing one.
            Admission::Draining => draining.push(node),
            Admission::Probe if node.claim_probe(now) => return Ok(Some(node)),
            Admission::Probe | Admission::Deny => denied.push(node),
        }
    }
    if !healthy.is_empty() {
        return Ok(Some(power_of_two(rng, &healthy)));
    }
    if !draining.is_empty() {
        return Ok(Some(power_of_two(rng, &draining)));
    }
    if !lagging.is_empty() {
        return Ok(Some(power_of_two(rng, &lagging)));
    }
    if !denied.is_empty() {
        return Ok(Some(power_of_two(rng, &denied)));
    }
    Ok(None)
}

/// Assigns each shard a replica and groups the shards per node, touching as few nodes as
/// it can: a shard one of whose healthy replicas is a node this lookup already sends to
/// joins that node's sub-request; otherwise its replica is chosen by [`choose`]. Every
/// sub-request costs each node a fixed amount of work (the transport, the plan, a
/// response), so with R = 2 on three nodes a lookup over every shard goes to two nodes
/// instead of three. The walk over the shards starts at a random one, so which node a
/// lookup sticks to first is spread evenly (and chosen by power of two choices).
pub(crate) fn route(
    table: &RoutingTable,
    shards: &[u32],
    pool: &NodePool,
    excluded: &Excluded,
    lagging: &LaggingReplicas,
    rng: &Rng,
) -> Result<Vec<Group>, ClientError> {
    let mut groups: Vec<Group> = Vec::new();
    let now = Instant::now();
    let start = if shards.is_empty() {
        0
    } else {
        rng.below(shards.len())
    };
    for &shard in shards[start..].iter().chain(&shards[..start]) {
        if let Some(g) = groups.iter_mut().find(|g| {
            serves(table, shard, g.node.id, excluded, lagging, now)
                && g.node.admission(now) == Admission::Allow
        }) {
            g.shards.push(shard);
            continue;
        }
        let node = choose(table, shard, pool, excluded, lagging, rng)?;
        match groups.iter_mut().find(|g| g.node.id == node.id) {
            Some(g) => g.shards.push(shard),
            None => groups.push(Group {
                node,
                shards: vec![shard],
            }),
        }
    }
    // Back in the caller's order (the walk started at a random shard): a node's keys then
    // go out as before, so a one-node lookup still comes back in request order.
    for g in &mut groups {
        g.shards.sort_unstable();
    }
    Ok(groups)
}

/// Whether `node` holds a servable replica of `shard` that this lookup does not avoid.
fn serves(
    table: &RoutingTable,
    shard: u32,
    node: NodeId,
    excluded: &Excluded,
    lagging: &LaggingReplicas,
    now: Instant,
) -> bool {
    table
        .shards
        .get(shard as usize)
        .is_some_and(|replicas| replicas.iter().any(|r| r.node == node && r.servable))
        && !excluded.contains(node, shard)
        && !lagging.avoid(node, shard, now)
}

#[cfg(test)]
mod tests;
