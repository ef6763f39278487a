//! The node's long-lived loops, each spawned through [`crate::tasks::Tasks`] by
//! [`super::Node::start`]: following the cluster, readiness, view promotion (static mode),
//! definition files, TTL refresh and sweep, storage metrics.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::control::plane::{ControlError, ControlPlane, wall_clock_ms};
use crate::control::state::Command;
use crate::metrics as m;
use crate::registry::{DefinitionFile, Registry, RegistryError, RegistrySnapshot, lifecycle};
use crate::replica::ShardManager;
use crate::state::NodeState;
use crate::storage::StorageEngine;
use crate::tasks::{Tasks, Ticker, sleep_or_cancel};

/// Refreshes what the compaction filters read from the registry: each view version's TTL
/// and its history retention (pending and retained versions too).
pub(super) fn refresh_ttls(engine: &StorageEngine, snap: &RegistrySnapshot) {
    engine.ttls().replace(
        snap.live_versions()
            .map(|v| ((v.name.clone(), v.version), compaction_ttl(v))),
    );
    engine.history_retention().replace(
        snap.live_versions()
            .map(|v| ((v.name.clone(), v.version), v.history)),
    );
}

/// How long the compaction filter keeps a view's stored value after its (newest) event
/// time: the TTL; for an aggregation view answering from the clock, at most as long as
/// its newest event can be in some window (after that every answer is NOT_FOUND anyway).
fn compaction_ttl(v: &crate::registry::FeatureView) -> Option<Duration> {
    use crate::registry::aggregation::LeadingEdge;
    let window = v
        .aggregation
        .as_ref()
        .filter(|a| a.leading_edge == LeadingEdge::Clock)
        .and_then(|a| a.retention_micros())
        .map(|m| Duration::from_micros(m.max(0) as u64));
    match (v.ttl, window) {
        (Some(t), Some(w)) => Some(t.min(w)),
        (t, w) => t.or(w),
    }
}

/// Static mode: promotes a pending view version once every local replica re-ingested it,
/// and drops retained versions whose retention passed (in cluster mode the leader does
/// both for the whole cluster).
pub(super) async fn run_promotion_loop(
    state: Arc<NodeState>,
    version_retention: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = Ticker::new(Duration::from_millis(200), &cancel);
    while ticker.tick().await {
        let snap = state.registry.snapshot();
        let local = state.local();
        for view in snap.pending.values() {
            let ready = !local.stores.is_empty()
                && local.stores.iter().all(|(id, store)| {
                    local
                        .status
                        .get(id)
                        .is_some_and(|st| crate::replica::pending_caught_up(store, st, view))
                });
            if !ready {
                continue;
            }
            let (name, version) = (view.name.clone(), view.version);
            let step = move |f: &DefinitionFile| {
                Ok((lifecycle::promote(f, &name, version, wall_clock_ms())?, ()))
            };
            if change_registry(&state, step).await {
                info!(view = %view.name, version = view.version, "new view version re-ingested: promoted to serving");
            }
        }
        let expired = lifecycle::expired(
            &state.registry.definitions(),
            version_retention,
            wall_clock_ms(),
        );
        for (name, version) in expired {
            let step = {
                let name = name.clone();
                move |f: &DefinitionFile| Ok((lifecycle::drop_version(f, &name, version)?, ()))
            };
            if change_registry(&state, step).await {
                info!(view = %name, version, "retention passed: view version dropped");
            }
        }
    }
}

/// Runs a lifecycle step on the static registry off the async workers (it fsyncs).
async fn change_registry(
    state: &NodeState,
    step: impl FnOnce(&DefinitionFile) -> Result<(DefinitionFile, ()), RegistryError> + Send + 'static,
) -> bool {
    let registry = state.registry.clone();
    match tokio::task::spawn_blocking(move || registry.change(step)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "view version lifecycle step failed");
            false
        }
        Err(e) => {
            warn!(error = %e, "view version lifecycle task failed");
            false
        }
    }
}

/// Cluster mode: applies the configured definition files through Raft once a leader exists.
pub(super) async fn apply_files_loop(
    control: Arc<ControlPlane>,
    files: Vec<std::path::PathBuf>,
    cancel: CancellationToken,
) {
    for path in files {
        let file = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::registry::DefinitionFile::from_toml(&t).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read definition file");
                continue;
            }
        };
        loop {
            let cmd = Command::ApplyDefinitions {
                file: file.clone(),
                applied_by: "config".into(),
                applied_at_ms: wall_clock_ms(),
            };
            match control.propose(cmd).await {
                Ok(_) => break,
                Err(ControlError::Rejected { reason, .. }) => {
                    error!(file = %path.display(), %reason, "definition file rejected");
                    break;
                }
                Err(e) if e.is_transient() => {}
                Err(e) => {
                    error!(file = %path.display(), error = %e, "definition file not applied");
                    break;
                }
            }
            if !sleep_or_cancel(Duration::from_millis(200), &cancel).await {
                return;
            }
        }
    }
}

pub(super) async fn run_ttl_refresh_loop(
    registry: Registry,
    engine: Arc<StorageEngine>,
    cancel: CancellationToken,
) {
    let mut changes = registry.subscribe();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            res = changes.changed() => if res.is_err() { return },
        }
        refresh_ttls(&engine, &registry.snapshot());
    }
}

/// Readiness (`quiver.v1.Readiness`, `quiver_node_ready`), checked every 500 ms.
///
/// Static mode: every local replica caught up. Cluster mode, all of: this node's
/// control-plane state current (a leader answered a read-index round within
/// `dead_after`); the node is an active
/// member of the committed state; every replica placement wants on this node has been
/// assigned to it (a node that just joined has an empty assignment until the leader
/// places replicas on it: "no replicas yet" is not "nothing to serve"); and every
/// replica assigned to it is open here and caught up with its partitions.
pub(super) async fn run_readiness_loop(
    state: Arc<NodeState>,
    shards: Arc<ShardManager>,
    tasks: Tasks,
    cancel: CancellationToken,
) {
    let mut ticker = Ticker::new(Duration::from_millis(500), &cancel);
    while ticker.tick().await {
        let reports = shards.reports().await;
        // A node that is shutting down, or whose background task died, is not ready,
        // whatever its replicas say.
        let ready = !state.is_draining()
            && tasks.is_healthy()
            && match &state.control {
                None => reports.iter().all(|r| r.caught_up),
                Some(c) => cluster_ready(c, &reports),
            };
        state
            .ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
        gauge!(m::NODE_READY).set(if ready { 1.0 } else { 0.0 });
    }
}

/// The cluster-mode readiness rule of [`run_readiness_loop`].
fn cluster_ready(control: &ControlPlane, reports: &[quiver_proto::v1::ReplicaReport]) -> bool {
    use crate::control::state::MemberStatus;
    // Fresh: a leader confirmed this node's state within `dead_after`. Not "a leader
    // is known now": when the leader restarts, the election in between must not turn
    // every other node unready at once (a load balancer would have none left).
    if !control.is_fresh() {
        return false;
    }
    let cluster = control.state();
    let me = control.node_id();
    if cluster
        .members
        .get(&me)
        .is_none_or(|m| m.status != MemberStatus::Active)
    {
        return false;
    }
    let Some(desired) = crate::control::reconciler::desired_assignment(&cluster) else {
        return false;
    };
    let assigned = cluster.replicas_on(me);
    let placed = desired
        .iter()
        .filter(|(_, nodes)| nodes.contains(&me))
        .all(|(shard, _)| assigned.contains_key(shard));
    let caught_up = assigned
        .keys()
        .all(|shard| reports.iter().any(|r| r.shard == shard.0 && r.caught_up));
    placed && caught_up
}

/// Storage figures summed over the local shards.
#[derive(Default)]
struct StorageStats {
    hits: u64,
    misses: u64,
    row_hits: u64,
    row_misses: u64,
    memtable: u64,
    sst: u64,
    pending: u64,
    stall_micros: u64,
    rows: Vec<(u32, u64)>,
}

pub(super) async fn run_storage_metrics_loop(
    state: Arc<NodeState>,
    engine: Arc<StorageEngine>,
    cancel: CancellationToken,
) {
    let mut ticker = Ticker::new(Duration::from_secs(5), &cancel);
    while ticker.tick().await {
        let local = state.local();
        // RocksDB properties are cheap reads of in-memory counters, but still FFI calls
        // that take locks: off the async workers.
        let stats = tokio::task::spawn_blocking(move || {
            let mut s = StorageStats::default();
            for (id, store) in &local.stores {
                let (h, mi) = store.block_cache_stats();
                s.hits += h;
                s.misses += mi;
                let (h, mi) = store.row_cache_stats();
                s.row_hits += h;
                s.row_misses += mi;
                s.memtable += store.int_property("rocksdb.cur-size-all-mem-tables");
                s.sst += store.int_property("rocksdb.total-sst-files-size");
                s.pending += store.int_property("rocksdb.estimate-pending-compaction-bytes");
                s.stall_micros += store.stall_micros();
                s.rows.push((id.0, store.estimate_rows()));
            }
            s
        })
        .await;
        let Ok(s) = stats else { continue };
        for (id, rows) in s.rows {
            gauge!(m::STORAGE_ROWS, "shard" => id.to_string()).set(rows as f64);
        }
        counter!(m::STORAGE_BLOCK_CACHE_HITS).absolute(s.hits);
        counter!(m::STORAGE_BLOCK_CACHE_MISSES).absolute(s.misses);
        gauge!(m::STORAGE_BLOCK_CACHE_USAGE).set(engine.block_cache_usage() as f64);
        counter!(m::STORAGE_ROW_CACHE_HITS).absolute(s.row_hits);
        counter!(m::STORAGE_ROW_CACHE_MISSES).absolute(s.row_misses);
        gauge!(m::STORAGE_ROW_CACHE_USAGE).set(engine.row_cache_usage() as f64);
        gauge!(m::STORAGE_LOOKUP_CACHE_USAGE).set(engine.lookup_cache_usage() as f64);
        gauge!(m::SERVE_BUILDER_POOL_BYTES).set(state.plans.builder_pool_bytes() as f64);
        gauge!(m::STORAGE_MEMTABLE_BYTES).set(s.memtable as f64);
        gauge!(m::STORAGE_SST_BYTES).set(s.sst as f64);
        gauge!(m::STORAGE_PENDING_COMPACTION_BYTES).set(s.pending as f64);
        m::record_write_stall_micros(s.stall_micros);
        counter!(m::STORAGE_SAMPLES).increment(1);
    }
}

pub(super) async fn run_ttl_sweep_loop(
    state: Arc<NodeState>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = Ticker::delayed(every, &cancel);
    while ticker.tick().await {
        for store in state.local().stores.values() {
            let store = store.clone();
            // A full compaction runs the TTL filter over every file of the shard.
            if let Err(e) = tokio::task::spawn_blocking(move || store.compact_rows()).await {
                error!(error = %e, "ttl sweep task failed");
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }
}
