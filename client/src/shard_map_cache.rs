//! The cluster map the client routes with: a versioned (by epoch) routing table, refreshed
//! when a node reports a newer epoch or a routing error, pushed by the nodes'
//! `WatchClusterMap` stream, and re-read on a timer as a safety net. Refreshes are
//! coalesced: however many requests notice a stale map at once, one fetch runs.
//!
//! Nodes without a control plane (static mode) have no cluster map; the table is then
//! assembled from each seed's status (the shards it holds), with epoch 0.

use quiver_proto::NodeId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::counter;
use quiver_proto::Partitioner;
use quiver_proto::v1::{ClusterMap, GetClusterMapRequest, GetStatusRequest, ReplicaStateProto};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::ClientError;
use crate::metrics as m;
use crate::pool::{NodeHandle, NodePool};
use crate::stats::Stats;

/// A replica as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replica {
    pub(crate) node: NodeId,
    /// Serving or draining: it answers reads. Bootstrapping replicas are not used.
    pub(crate) servable: bool,
}

/// An immutable routing table.
#[derive(Debug, Clone)]
pub(crate) struct RoutingTable {
    pub(crate) epoch: u64,
    pub(crate) shard_count: u32,
    pub(crate) partitioner: Partitioner,
    /// Replicas per shard, indexed by shard.
    pub(crate) shards: Vec<Vec<Replica>>,
    /// Address per node id.
    pub(crate) addrs: HashMap<NodeId, String>,
    /// False for a table assembled from static-mode nodes.
    pub(crate) cluster_mode: bool,
}

impl RoutingTable {
    pub(crate) fn from_cluster_map(map: &ClusterMap) -> Result<Self, ClientError> {
        let partitioner: Partitioner = map
            .partitioner
            .parse()
            .map_err(|e| ClientError::InvalidRequest(format!("the cluster map names {e}")))?;
        if map.shard_count == 0 {
            return Err(ClientError::NoReplica(0));
        }
        let mut shards = vec![Vec::new(); map.shard_count as usize];
        let mut addrs: HashMap<NodeId, String> = map
            .members
            .iter()
            .map(|m| (NodeId(m.node_id), m.addr.clone()))
            .collect();
        for s in &map.shards {
            let Some(slot) = shards.get_mut(s.shard as usize) else {
                continue;
            };
            for r in &s.replicas {
                addrs
                    .entry(NodeId(r.node_id))
                    .or_insert_with(|| r.addr.clone());
                let state = ReplicaStateProto::try_from(r.state).unwrap_or_default();
                slot.push(Replica {
                    node: NodeId(r.node_id),
                    servable: matches!(
                        state,
                        ReplicaStateProto::Serving | ReplicaStateProto::Draining
                    ),
                });
            }
        }
        Ok(RoutingTable {
            epoch: map.epoch,
            shard_count: map.shard_count,
            partitioner,
            shards,
            addrs,
            cluster_mode: true,
        })
    }

    /// Shard of an entity key (its bytes as producers key records).
    pub(crate) fn shard_of(&self, key: &[u8]) -> u32 {
        self.partitioner.shard_for_key(key, self.shard_count).0
    }
}

/// The cached table and how to refresh it.
pub(crate) struct MapCache {
    table: RwLock<Arc<RoutingTable>>,
    refresh_lock: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
    /// Highest epoch a node reported in a response.
    noticed_epoch: AtomicU64,
    seeds: Vec<String>,
    pool: Arc<NodePool>,
    call_timeout: Duration,
    stats: Arc<Stats>,
}

/// Synthetic node ids of static-mode seeds (static nodes need not have distinct ids).
const STATIC_ID_BASE: u64 = 1 << 48;

impl MapCache {
    /// Reads the map from the first seed that answers.
    pub(crate) async fn bootstrap(
        seeds: Vec<String>,
        pool: Arc<NodePool>,
        call_timeout: Duration,
        stats: Arc<Stats>,
    ) -> Result<Self, ClientError> {
        let mut cache = MapCache {
            table: RwLock::new(Arc::new(RoutingTable {
                epoch: 0,
                shard_count: 0,
                partitioner: Partitioner::Murmur2,
                shards: Vec::new(),
                addrs: HashMap::new(),
                cluster_mode: false,
            })),
            refresh_lock: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
            noticed_epoch: AtomicU64::new(0),
            seeds,
            pool,
            call_timeout,
            stats,
        };
        let table = cache.fetch(None).await?;
        cache.table = RwLock::new(Arc::new(table));
        Ok(cache)
    }

    /// The current table.
    pub(crate) fn current(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `t` unless the cached table is newer. Returns whether it was installed.
    fn install(&self, t: RoutingTable) -> bool {
        let mut cur = self.table.write().unwrap_or_else(|p| p.into_inner());
        if t.cluster_mode && cur.cluster_mode && t.epoch < cur.epoch {
            return false;
        }
        let keep: std::collections::HashSet<NodeId> = t.addrs.keys().copied().collect();
        debug!(epoch = t.epoch, "installing cluster map");
        *cur = Arc::new(t);
        drop(cur);
        self.pool.retain(|id| keep.contains(&id));
        true
    }

    /// The node handles to ask, known nodes first, then seeds not among them.
    fn contacts(&self) -> Vec<(NodeId, String)> {
        let t = self.current();
        let mut out: Vec<(NodeId, String)> = t.addrs.iter().map(|(i, a)| (*i, a.clone())).collect();
        out.sort();
        for (i, s) in self.seeds.iter().enumerate() {
            if !out
                .iter()
                .any(|(_, a)| crate::pool::endpoint_uri(a) == crate::pool::endpoint_uri(s))
            {
                out.push((NodeId(STATIC_ID_BASE + i as u64), s.clone()));
            }
        }
        out
    }

    /// Calls `f` on contacts in turn until one succeeds; returns the last error otherwise.
    pub(crate) async fn call_any<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<NodeHandle>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut last = None;
        for (id, addr) in self.contacts() {
            let node = self.pool.node(id, &addr)?;
            match tokio::time::timeout(self.call_timeout, f(node)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(ClientError::DeadlineExceeded {
                        deadline: self.call_timeout,
                        last: None,
                    })
                }
            }
        }
        Err(last.unwrap_or(ClientError::InvalidRequest("no seeds".into())))
    }

    /// Fetches a table with epoch ≥ `min_epoch` from any node.
    async fn fetch(&self, min_epoch: Option<u64>) -> Result<RoutingTable, ClientError> {
        let map = self
            .call_any(|node| async move {
                let map = node
                    .cluster()
                    .get_cluster_map(GetClusterMapRequest {})
                    .await;
                match map {
                    Ok(m) => {
                        let m = m.into_inner();
                        if m.shard_count == 0 || m.partitioner.is_empty() {
                            // A member that has not applied the cluster settings yet (it
                            // just started or joined); another contact may have them.
                            return Err(ClientError::Rpc(tonic::Status::unavailable(format!(
                                "node {} has no cluster map yet",
                                node.addr
                            ))));
                        }
                        if min_epoch.is_some_and(|e| m.epoch < e) {
                            // This node lags in applying the control plane; ask another.
                            return Err(ClientError::Rpc(tonic::Status::unavailable(format!(
                                "node {} has cluster map epoch {}, older than {}",
                                node.addr,
                                m.epoch,
                                min_epoch.unwrap_or_default()
                            ))));
                        }
                        Ok(Some(m))
                    }
                    Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
                    Err(s) => Err(s.into()),
                }
            })
            .await?;
        match map {
            Some(m) => RoutingTable::from_cluster_map(&m),
            None => self.fetch_static().await,
        }
    }

    /// Assembles a table from static-mode seeds: each holds the shards its status lists.
    async fn fetch_static(&self) -> Result<RoutingTable, ClientError> {
        let mut table: Option<RoutingTable> = None;
        let mut last = None;
        for (i, seed) in self.seeds.iter().enumerate() {
            let id = STATIC_ID_BASE + i as u64;
            let node = self.pool.node(NodeId(id), seed)?;
            let status = tokio::time::timeout(
                self.call_timeout,
                node.admin().get_status(GetStatusRequest {}),
            )
            .await;
            let status = match status {
                Ok(Ok(s)) => s.into_inner(),
                Ok(Err(e)) => {
                    last = Some(e.into());
                    continue;
                }
                Err(_) => continue,
            };
            let partitioner: Partitioner = status
                .partitioner
                .parse()
                .map_err(|e| ClientError::InvalidRequest(format!("node {seed} reports {e}")))?;
            let t = table.get_or_insert_with(|| RoutingTable {
                epoch: 0,
                shard_count: status.shard_count,
                partitioner,
                shards: vec![Vec::new(); status.shard_count as usize],
                addrs: HashMap::new(),
                cluster_mode: false,
            });
            if t.shard_count != status.shard_count || t.partitioner != partitioner {
                return Err(ClientError::InvalidRequest(format!(
                    "seed {seed} has {} shards ({}), another seed {} ({}): they are not one cluster",
                    status.shard_count, status.partitioner, t.shard_count, t.partitioner
                )));
            }
            t.addrs.insert(NodeId(id), seed.clone());
            for s in &status.shards {
                if let Some(slot) = t.shards.get_mut(s.shard as usize) {
                    slot.push(Replica {
                        node: NodeId(id),
                        servable: true,
                    });
                }
            }
        }
        table.ok_or_else(|| last.unwrap_or(ClientError::NoReplica(0)))
    }

    /// Refreshes the table (to at least `min_epoch`), coalescing concurrent callers.
    pub(crate) async fn refresh(
        &self,
        min_epoch: Option<u64>,
        trigger: &'static str,
    ) -> Result<Arc<RoutingTable>, ClientError> {
        let seen = self.refreshes.load(Ordering::Acquire);
        let _guard = self.refresh_lock.lock().await;
        let cur = self.current();
        if self.refreshes.load(Ordering::Acquire) != seen
            && min_epoch.is_none_or(|e| cur.epoch >= e)
        {
            // Someone refreshed while we waited for the lock.
            return Ok(cur);
        }
        counter!(m::MAP_REFRESHES, "trigger" => trigger).increment(1);
        self.stats.map_refreshes.fetch_add(1, Ordering::Relaxed);
        let table = self.fetch(min_epoch).await?;
        self.install(table);
        self.refreshes.fetch_add(1, Ordering::Release);
        Ok(self.current())
    }

    /// A node answered under map `epoch`: if that is newer than the cached map, refresh in
    /// the background (coalesced with any refresh already running).
    pub(crate) fn notice_epoch(self: &Arc<Self>, epoch: u64) {
        let current = self.current();
        if !current.cluster_mode || epoch <= current.epoch {
            return;
        }
        // One background refresh per newer epoch, however many responses report it.
        if self.noticed_epoch.fetch_max(epoch, Ordering::AcqRel) >= epoch {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.refresh(Some(epoch), "epoch").await {
                debug!(error = %e, epoch, "refresh to a newer epoch failed");
            }
        });
    }

    /// Keeps the table current until `cancel`: follows a node's `WatchClusterMap` stream
    /// (moving to another node when it breaks) and polls every `interval` regardless.
    pub(crate) async fn watch(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut next_contact = 0usize;
        let mut poll = tokio::time::interval(interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        loop {
            if !self.current().cluster_mode {
                // Static nodes have no stream; the timer is all there is.
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = poll.tick() => {
                        if let Err(e) = self.refresh(None, "timer").await {
                            debug!(error = %e, "cluster map refresh failed");
                        }
                    }
                }
                continue;
            }
            let contacts = self.contacts();
            let (id, addr) = contacts[next_contact % contacts.len()].clone();
            next_contact += 1;
            let stream = match self.pool.node(id, &addr) {
                Ok(node) => {
                    tokio::time::timeout(
                        self.call_timeout,
                        node.cluster().watch_cluster_map(GetClusterMapRequest {}),
                    )
                    .await
                }
                Err(e) => {
                    warn!(error = %e, "bad node address in cluster map");
                    continue;
                }
            };
            let mut stream = match stream {
                Ok(Ok(s)) => {
                    backoff = Duration::from_millis(100);
                    s.into_inner()
                }
                _ => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = poll.tick() => {
                        if let Err(e) = self.refresh(None, "timer").await {
                            debug!(error = %e, "cluster map refresh failed");
                        }
                    }
                    msg = stream.message() => match msg {
                        Ok(Some(map)) => match RoutingTable::from_cluster_map(&map) {
                            Ok(t) => {
                                if self.install(t) {
                                    counter!(m::MAP_REFRESHES, "trigger" => "watch").increment(1);
                                    self.stats.map_refreshes.fetch_add(1, Ordering::Relaxed);
                                    self.refreshes.fetch_add(1, Ordering::Release);
                                }
                            }
                            Err(e) => warn!(error = %e, "ignoring a malformed cluster map"),
                        },
                        // The node went away: follow another one.
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}
