//! The shard manager: opens and closes this node's shard replicas to match a desired set —
//! fixed by configuration in static mode, the committed assignment in cluster mode.
//!
//! Opening a replica opens (or creates) its RocksDB database and starts its ingest loop
//! from the stored offsets (from the partitions' beginning for a new replica). Closing one
//! stops serving it first, then stops its ingest loop, waits for in-flight reads to drop
//! their handles, and deletes its directory so the disk space is freed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_proto::v1::ReplicaReport;
use quiver_proto::{Partitioner, ShardId};
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ingest::{
    IngestConfig, IngestHandle, IngestStatus, pending_stream_key, spawn_shard_ingest,
};
use crate::node::NodeError;
use crate::registry::FeatureView;
use crate::registry::Registry;
use crate::serve::{LocalShards, ServeState};
use crate::storage::{ShardStore, StorageEngine};

struct Replica {
    store: Arc<ShardStore>,
    ingest: IngestHandle,
}

/// Whether the pending `view` has re-ingested its topic up to the serving stream on this
/// replica. From then on both streams advance in lockstep (one consumer, one batch), so a
/// promotion at any later batch boundary leaves no gap.
pub fn pending_caught_up(store: &ShardStore, status: &IngestStatus, view: &FeatureView) -> bool {
    let offsets = store.offsets();
    let topic = &view.source.topic;
    let key = pending_stream_key(topic, &view.name, view.version);
    let main = offsets.get(topic).map_or(0, |r| r.next_offset);
    let pending = offsets.get(&key).map_or(0, |r| r.next_offset);
    if main > 0 {
        pending >= main
    } else {
        // Nothing consumed yet: caught up once the partition is known to be empty.
        status.topics().get(topic).is_some_and(|t| t.reached_end)
    }
}

/// Owns the local shard replicas.
pub struct ShardManager {
    engine: Arc<StorageEngine>,
    registry: Registry,
    ingest: IngestConfig,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    shard_count: u32,
    partitioner: Partitioner,
    state: Arc<ServeState>,
    cancel: CancellationToken,
    replicas: Mutex<HashMap<ShardId, Replica>>,
}

impl ShardManager {
    /// A manager with no replicas yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Arc<StorageEngine>,
        registry: Registry,
        ingest: IngestConfig,
        dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
        shard_count: u32,
        partitioner: Partitioner,
        state: Arc<ServeState>,
        cancel: CancellationToken,
    ) -> Self {
        ShardManager {
            engine,
            registry,
            ingest,
            dead_letters,
            shard_count,
            partitioner,
            state,
            cancel,
            replicas: Mutex::new(HashMap::new()),
        }
    }

    fn publish(&self, replicas: &HashMap<ShardId, Replica>) {
        self.state.set_local(LocalShards {
            stores: replicas
                .iter()
                .map(|(id, r)| (*id, r.store.clone()))
                .collect(),
            status: replicas
                .iter()
                .map(|(id, r)| (*id, r.ingest.status.clone()))
                .collect(),
        });
    }

    /// Opens missing replicas and closes (and, if `delete_removed`, deletes) extra ones.
    ///
    /// # Errors
    /// [`NodeError`] if a replica cannot be opened; the others are still reconciled.
    pub async fn reconcile(
        &self,
        desired: &BTreeSet<ShardId>,
        delete_removed: bool,
    ) -> Result<(), NodeError> {
        let mut replicas = self.replicas.lock().await;
        let mut first_error = None;
        for &id in desired {
            if replicas.contains_key(&id) {
                continue;
            }
            match self.open(id).await {
                Ok(r) => {
                    info!(shard_id = %id, "shard replica opened");
                    replicas.insert(id, r);
                }
                Err(e) => {
                    error!(shard_id = %id, error = %e, "opening shard replica failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        let removed: Vec<ShardId> = replicas
            .keys()
            .filter(|id| !desired.contains(id))
            .copied()
            .collect();
        let mut closing = Vec::new();
        for id in removed {
            if let Some(r) = replicas.remove(&id) {
                closing.push((id, r));
            }
        }
        // Stop serving removed replicas before tearing them down.
        self.publish(&replicas);
        drop(replicas);
        for (id, r) in closing {
            self.close(id, r, delete_removed).await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn open(&self, id: ShardId) -> Result<Replica, NodeError> {
        let engine = self.engine.clone();
        let (p, part) = (self.shard_count, self.partitioner);
        let store = tokio::task::spawn_blocking(move || engine.open_shard(id, p, part))
            .await
            .map_err(|e| NodeError::Task(e.to_string()))??;
        let store = Arc::new(store);
        let ingest = spawn_shard_ingest(
            store.clone(),
            self.registry.clone(),
            self.ingest.clone(),
            self.dead_letters.clone(),
            self.cancel.child_token(),
        )?;
        Ok(Replica { store, ingest })
    }

    async fn close(&self, id: ShardId, r: Replica, delete: bool) {
        r.ingest.join().await;
        let mut store = r.store;
        // In-flight lookups hold clones; wait (bounded) until ours is the last handle.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = store.flush() {
            warn!(shard_id = %id, error = %e, "flushing closed shard failed");
        }
        let dir = self.engine.shard_dir(id);
        // Dropping the last handle closes the database.
        store = match Arc::try_unwrap(store) {
            Ok(s) => {
                drop(s);
                info!(shard_id = %id, "shard replica closed");
                if delete {
                    match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
                        Ok(Ok(())) => info!(shard_id = %id, "shard data deleted"),
                        Ok(Err(e)) => {
                            warn!(shard_id = %id, error = %e, "deleting shard data failed")
                        }
                        Err(e) => warn!(shard_id = %id, error = %e, "delete task failed"),
                    }
                }
                return;
            }
            Err(s) => s,
        };
        warn!(shard_id = %id, handles = Arc::strong_count(&store), "shard still referenced; data kept");
    }

    /// Per-replica reports for the control plane: caught up once every source topic's
    /// partition reached its end (or had nothing to consume).
    pub async fn reports(&self) -> Vec<ReplicaReport> {
        let replicas = self.replicas.lock().await;
        let snap = self.registry.snapshot();
        let topics = snap.topics();
        let pending: Vec<Arc<FeatureView>> = snap.pending.values().cloned().collect();
        replicas
            .iter()
            .map(|(id, r)| {
                let observed = r.ingest.status.topics();
                let offsets = r.store.offsets();
                let caught_up = topics.iter().all(|t| {
                    observed.get(t).is_some_and(|o| {
                        o.reached_end
                            || o.high_watermark == offsets.get(t).map_or(0, |x| x.next_offset)
                    })
                });
                let lag = topics
                    .iter()
                    .map(|t| {
                        let high = observed.get(t).map_or(-1, |o| o.high_watermark);
                        let next = offsets.get(t).map_or(0, |x| x.next_offset);
                        if high < 0 { 0 } else { (high - next).max(0) }
                    })
                    .sum();
                let caught_up_pending = pending
                    .iter()
                    .filter(|v| pending_caught_up(&r.store, &r.ingest.status, v))
                    .map(|v| format!("{}@{}", v.name, v.version))
                    .collect();
                ReplicaReport {
                    shard: id.0,
                    caught_up,
                    lag,
                    newest_event_time_micros: r.store.newest_event_time_micros(),
                    caught_up_pending,
                    // Set by the caller, which knows the state it reconciled to.
                    epoch: 0,
                }
            })
            .collect()
    }

    /// Stops every ingest loop and flushes every shard (shutdown).
    pub async fn shutdown(&self) {
        let mut replicas = self.replicas.lock().await;
        let all: Vec<(ShardId, Replica)> = replicas.drain().collect();
        drop(replicas);
        for (id, r) in all {
            r.ingest.join().await;
            let store = r.store.clone();
            match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(shard_id = %id, error = %e, "flushing shard failed"),
                Err(e) => error!(shard_id = %id, error = %e, "flush task failed"),
            }
        }
    }
}
