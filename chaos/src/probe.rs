//! Questions the harness asks the cluster directly, node by node (never through the smart
//! client, whose failover would hide a replica's state): the cluster map, whether every
//! replica is Serving and has applied what was acknowledged, and the final reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_client::{NodeClient, Watermarks};
use quiver_proto::partition::Partitioner;
use quiver_proto::v1::{ClusterMap, ReplicaStateProto};

use crate::cluster::TOPIC;
use crate::history::FinalRead;
use crate::workload::{decode_rows, key_name, lookup};

const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to one node, giving up after the RPC timeout (a partitioned node never answers).
pub(crate) async fn connect(endpoint: &str) -> Option<NodeClient> {
    let creds = quiver_testkit::security::credentials();
    tokio::time::timeout(
        RPC_TIMEOUT,
        NodeClient::connect_with(endpoint.to_string(), &creds),
    )
    .await
    .ok()?
    .ok()
}

/// Waits until every one of `endpoints` knows `view` (the registry reaches each node
/// through the Raft log a little after the leader commits it), up to `timeout`.
///
/// # Errors
/// The nodes that still did not know it.
pub async fn wait_view(endpoints: &[String], view: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut missing: Vec<&String> = endpoints.iter().collect();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for e in missing {
            let known = match connect(e).await {
                Some(mut c) => matches!(
                    tokio::time::timeout(RPC_TIMEOUT, c.describe_view(view)).await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if !known {
                still.push(e);
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("view {view:?} unknown on {missing:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The cluster map from the first of `endpoints` that answers.
pub async fn cluster_map(endpoints: &[String]) -> Option<ClusterMap> {
    for e in endpoints {
        if let Some(mut c) = connect(e).await
            && let Ok(Ok(map)) = tokio::time::timeout(RPC_TIMEOUT, c.cluster_map()).await
        {
            return Some(map);
        }
    }
    None
}

/// The current cluster map, asking until `deadline`: after a fault phase the nodes may be
/// busy catching up (every retained view version re-applies each record), and one
/// unanswered round is not a verdict.
///
/// # Errors
/// When no node answers before `deadline`.
pub async fn cluster_map_by(endpoints: &[String], deadline: Instant) -> anyhow::Result<ClusterMap> {
    loop {
        if let Some(map) = cluster_map(endpoints).await {
            return Ok(map);
        }
        if Instant::now() > deadline {
            anyhow::bail!("no node answers GetClusterMap");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The watermark token requiring `offsets` (shard → next offset) of the topic.
pub fn watermarks<'a>(offsets: impl IntoIterator<Item = (&'a u32, &'a i64)>) -> Watermarks {
    let token: Vec<String> = offsets
        .into_iter()
        .map(|(s, o)| format!("{s}:{TOPIC}={o}"))
        .collect();
    token
        .join(",")
        .parse()
        .expect("the token is built in its own format")
}

/// Key numbers `0..keys` grouped by shard.
pub fn keys_by_shard(map: &ClusterMap, keys: u32) -> BTreeMap<u32, Vec<u32>> {
    let partitioner: Partitioner = map.partitioner.parse().unwrap_or(Partitioner::Murmur2);
    let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for k in 0..keys {
        let shard = partitioner.shard_for_key(key_name(k).as_bytes(), map.shard_count);
        out.entry(shard.0).or_default().push(k);
    }
    out
}

/// Why the cluster is not yet healthy: every shard has R replicas, all Serving, all on
/// `up` nodes; every `up` node is an active member holding replicas; and each replica has
/// applied `acked` for its shard. `None` when healthy.
pub async fn unhealthy(
    endpoints: &[String],
    up: &[u64],
    acked: &BTreeMap<u32, i64>,
    keys: u32,
) -> Option<String> {
    let Some(map) = cluster_map(endpoints).await else {
        return Some("no node answers GetClusterMap".into());
    };
    if map.shard_count == 0 || map.partitioner.is_empty() {
        return Some("the control plane has not initialised the cluster yet".into());
    }
    if map.shards.len() != map.shard_count as usize {
        return Some(format!("the map has {} shards", map.shards.len()));
    }
    for s in &map.shards {
        if s.replicas.len() != map.replication_factor as usize {
            return Some(format!(
                "shard {} has {} replicas",
                s.shard,
                s.replicas.len()
            ));
        }
        if let Some(r) = s
            .replicas
            .iter()
            .find(|r| r.state != ReplicaStateProto::Serving as i32 || !up.contains(&r.node_id))
        {
            let replicas: Vec<String> = s
                .replicas
                .iter()
                .map(|x| {
                    let st = ReplicaStateProto::try_from(x.state).unwrap_or_default();
                    format!("{}:{st:?}", x.node_id)
                })
                .collect();
            let members: Vec<String> = map
                .members
                .iter()
                .map(|m| format!("{}:{}", m.node_id, m.status))
                .collect();
            return Some(format!(
                "shard {} replica on node {} is {:?}{} (replicas [{}], members [{}], epoch {})",
                s.shard,
                r.node_id,
                ReplicaStateProto::try_from(r.state).unwrap_or_default(),
                if up.contains(&r.node_id) {
                    ""
                } else {
                    " (node is down)"
                },
                replicas.join(" "),
                members.join(" "),
                map.epoch
            ));
        }
    }
    // Every node that should be up is back as an active member and holds replicas again
    // (placement spreads P × R replicas over all nodes), so recovery includes the moves
    // back onto a returning node, not only the survivors covering for it.
    for id in up {
        match map.members.iter().find(|m| m.node_id == *id) {
            Some(m) if m.status == "active" => {}
            Some(m) => return Some(format!("node {id} is {}", m.status)),
            None => return Some(format!("node {id} is not a member")),
        }
        let spread = (map.shard_count * map.replication_factor) as usize >= up.len();
        if spread
            && !map
                .shards
                .iter()
                .any(|s| s.replicas.iter().any(|r| r.node_id == *id))
        {
            return Some(format!("node {id} holds no replica yet"));
        }
    }
    let by_shard = keys_by_shard(&map, keys);
    for s in &map.shards {
        let Some(probe) = by_shard.get(&s.shard).and_then(|k| k.first()) else {
            continue;
        };
        let wm = watermarks(acked.get_key_value(&s.shard));
        for r in &s.replicas {
            let Some(mut c) = connect(&format!("http://{}", r.addr)).await else {
                return Some(format!("node {} does not accept connections", r.node_id));
            };
            let l = lookup(&[*probe]).min_watermarks(&wm);
            match tokio::time::timeout(RPC_TIMEOUT, c.get_online_features(l)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Some(format!(
                        "shard {} on node {} has not caught up: {e}",
                        s.shard, r.node_id
                    ));
                }
                Err(_) => return Some(format!("node {} does not answer", r.node_id)),
            }
        }
    }
    None
}

/// Polls [`unhealthy`] until it clears or `timeout` passes; the time it took, or the
/// last reason.
pub async fn wait_healthy(
    endpoints: &[String],
    up: &[u64],
    acked: &BTreeMap<u32, i64>,
    keys: u32,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        match unhealthy(endpoints, up, acked, keys).await {
            None => return Ok(started.elapsed()),
            Some(why) if started.elapsed() > timeout => return Err(why),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads every key from every replica of its shard, each replica at least at `acked`.
///
/// # Errors
/// When a replica cannot answer within `timeout`.
pub async fn final_reads(
    endpoints: &[String],
    keys: u32,
    acked: &BTreeMap<u32, i64>,
    timeout: Duration,
) -> anyhow::Result<Vec<FinalRead>> {
    let deadline = Instant::now() + timeout;
    let map = cluster_map_by(endpoints, deadline).await?;
    let by_shard = keys_by_shard(&map, keys);
    let mut out = Vec::new();
    for s in &map.shards {
        let shard_keys = by_shard.get(&s.shard).cloned().unwrap_or_default();
        let wm = watermarks(acked.get_key_value(&s.shard));
        for r in &s.replicas {
            for chunk in shard_keys.chunks(500) {
                let rows = loop {
                    let attempt = async {
                        let mut c = connect(&format!("http://{}", r.addr))
                            .await
                            .ok_or_else(|| "no connection".to_string())?;
                        let l = lookup(chunk).min_watermarks(&wm);
                        c.get_online_features(l).await.map_err(|e| e.to_string())
                    };
                    match tokio::time::timeout(RPC_TIMEOUT, attempt).await {
                        Ok(Ok(res)) => break decode_rows(&res, chunk),
                        Ok(Err(e)) if Instant::now() > deadline => {
                            anyhow::bail!(
                                "final read of shard {} on node {}: {e}",
                                s.shard,
                                r.node_id
                            )
                        }
                        Err(_) if Instant::now() > deadline => {
                            anyhow::bail!(
                                "final read of shard {} on node {} timed out",
                                s.shard,
                                r.node_id
                            )
                        }
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                out.extend(rows.into_iter().map(|(key, value)| FinalRead {
                    node: r.node_id,
                    shard: s.shard,
                    key,
                    value,
                }));
            }
        }
    }
    Ok(out)
}
