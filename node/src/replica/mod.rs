//! Replica lifecycle: the manager that opens and closes this node's shard replicas to match
//! a desired set — fixed by configuration in static mode, the committed assignment in
//! cluster mode — and the reports the control plane and readiness read from them.
//!
//! Opening a replica opens (or creates) its RocksDB database (on the blocking pool),
//! starts its ingest loop from the stored offsets, and warms the lookup cache with its
//! stored rows on a blocking thread. A new replica of a shard that served
//! before first copies a Serving peer's checkpoint ([`checkpoint`]); otherwise (the
//! shard's first build, or no peer) it reads the partitions from their beginning. Closing one stops serving it first (it leaves the published local set),
//! stops its ingest loop at a batch boundary, closes its [`Gate`](crate::gate::Gate) —
//! waiting for the lookups and background reads inside to finish — flushes it, and
//! deletes its directory if it moved away, so the disk space is freed.

mod bootstrap;
pub mod checkpoint;
mod follow;
mod reports;

pub use follow::run_follow_loop;
pub use reports::pending_caught_up;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::ShardId;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ingest::{IngestConfig, IngestError, IngestHandle, spawn_shard_ingest};
use crate::state::{LocalShards, NodeState};
use crate::storage::{ShardStore, StorageEngine, StorageError};

/// How long a replica that moved away waits for the lookups still reading it (each is
/// bounded by its own deadline, far below this).
const MOVED_READS_WAIT: Duration = Duration::from_secs(30);

struct Replica {
    store: Arc<ShardStore>,
    ingest: IngestHandle,
    warming: Warming,
}

/// A replica's lookup-cache warming ([`ShardStore::warm_lookup_cache`]) on a blocking
/// thread: started when it opens, stopped (between chunks) and awaited when it closes.
struct Warming {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Warming {
    fn start(id: ShardId, store: Arc<ShardStore>, cancel: CancellationToken) -> Warming {
        let stop = cancel.clone();
        let task = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match store.warm_lookup_cache(|| stop.is_cancelled()) {
                Ok(w) => {
                    metrics::counter!(crate::metrics::STORAGE_LOOKUP_CACHE_WARMED_ROWS)
                        .increment(w.rows);
                    info!(shard_id = %id, rows = w.rows, bytes = w.bytes, complete = w.complete,
                        elapsed_ms = started.elapsed().as_millis() as u64, "lookup cache warmed");
                }
                Err(e) => warn!(shard_id = %id, error = %e, "warming the lookup cache failed"),
            }
        });
        Warming { cancel, task }
    }

    async fn stop(self, id: ShardId) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            error!(shard_id = %id, error = %e, "lookup cache warming task failed");
        }
    }
}

/// Owns the local shard replicas.
pub struct ShardManager {
    engine: Arc<StorageEngine>,
    ingest: IngestConfig,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    /// The registry, shard count and partitioner are the node's; the local replica set
    /// is published here.
    state: Arc<NodeState>,
    cancel: CancellationToken,
    replicas: Mutex<HashMap<ShardId, Replica>>,
    /// Checkpoint copies in progress, by shard (`bootstrap.rs`).
    copies: std::sync::Mutex<HashMap<ShardId, tokio::task::JoinHandle<()>>>,
}

impl ShardManager {
    /// A manager with no replicas yet.
    pub fn new(
        engine: Arc<StorageEngine>,
        ingest: IngestConfig,
        dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
        state: Arc<NodeState>,
        cancel: CancellationToken,
    ) -> Self {
        // The bootstrap series exist from the start (at 0), for rates and the dashboard.
        for source in ["checkpoint", "log"] {
            metrics::counter!(crate::metrics::REPLICA_BOOTSTRAPS, "source" => source).increment(0);
        }
        metrics::counter!(crate::metrics::REPLICA_BOOTSTRAP_FAILURES).increment(0);
        metrics::counter!(crate::metrics::REPLICA_CHECKPOINT_BYTES).increment(0);
        metrics::counter!(crate::metrics::STORAGE_LOOKUP_CACHE_WARMED_ROWS).increment(0);
        ShardManager {
            engine,
            ingest,
            dead_letters,
            state,
            cancel,
            replicas: Mutex::new(HashMap::new()),
            copies: std::sync::Mutex::default(),
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
    /// [`ReplicaError`] if a replica cannot be opened; the others are still reconciled.
    pub async fn reconcile(
        &self,
        desired: &BTreeSet<ShardId>,
        delete_removed: bool,
    ) -> Result<(), ReplicaError> {
        let mut replicas = self.replicas.lock().await;
        let mut first_error = None;
        for &id in desired {
            if replicas.contains_key(&id) || self.copying(id) {
                // Open, or its checkpoint is being copied (opened once it is).
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
        self.abort_copies(desired);
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
            self.close(id, r, delete_removed, MOVED_READS_WAIT).await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn open(&self, id: ShardId) -> Result<Replica, ReplicaError> {
        // A replica without a directory (not copied from a peer) builds from the log.
        let fresh = !self.engine.shard_dir(id).exists();
        let engine = self.engine.clone();
        let (p, part) = (self.state.shard_count, self.state.partitioner);
        let store = tokio::task::spawn_blocking(move || engine.open_shard(id, p, part))
            .await
            .map_err(|e| ReplicaError::Task {
                shard: id,
                detail: e.to_string(),
            })??;
        let store = Arc::new(store);
        if fresh {
            metrics::counter!(crate::metrics::REPLICA_BOOTSTRAPS, "source" => "log").increment(1);
        }
        let mut config = self.ingest.clone();
        config.full_log_required = self
            .state
            .control
            .as_ref()
            .is_some_and(|c| c.state().served_shards.contains(&id));
        let ingest = spawn_shard_ingest(
            store.clone(),
            self.state.registry.clone(),
            config,
            self.dead_letters.clone(),
            self.cancel.child_token(),
        )?;
        let warming = Warming::start(id, store.clone(), self.cancel.child_token());
        Ok(Replica {
            store,
            ingest,
            warming,
        })
    }

    /// Closes a replica that has left the published local set: its ingest loop stops at
    /// a batch boundary, its gate closes (waiting at most `wait` for the reads inside),
    /// then it is flushed and dropped on the blocking pool, and deleted if `delete`.
    async fn close(&self, id: ShardId, r: Replica, delete: bool, wait: Duration) {
        r.warming.stop(id).await;
        r.ingest.join().await;
        let store = r.store;
        if tokio::time::timeout(wait, store.gate().close())
            .await
            .is_err()
        {
            warn!(shard_id = %id, ?wait, readers = store.gate().readers(), "reads of a closing shard did not finish in time; closing it anyway");
        }
        let dir = self.engine.shard_dir(id);
        let closed = tokio::task::spawn_blocking(move || {
            if let Err(e) = store.flush() {
                warn!(shard_id = %id, error = %e, "flushing closed shard failed");
            }
            // Dropping the last handle closes the database. Every read enters the gate,
            // so after it closed only a passing holder of the published set (a metrics
            // scrape between two lines) can still hold one; it closes it on its drop.
            match Arc::try_unwrap(store) {
                Ok(s) => {
                    drop(s);
                    info!(shard_id = %id, "shard replica closed");
                    if delete {
                        match std::fs::remove_dir_all(&dir) {
                            Ok(()) => info!(shard_id = %id, "shard data deleted"),
                            Err(e) => warn!(shard_id = %id, error = %e, "deleting shard data failed"),
                        }
                    }
                }
                Err(s) => {
                    warn!(shard_id = %id, handles = Arc::strong_count(&s), "shard still referenced; its data is kept")
                }
            }
        })
        .await;
        if let Err(e) = closed {
            error!(shard_id = %id, error = %e, "closing shard task failed");
        }
    }

    /// Shutdown: unpublishes every replica, then closes each (ingest stopped at a batch
    /// boundary, reads drained for at most `wait` in all, flushed); nothing is deleted.
    pub async fn shutdown(&self, wait: Duration) {
        let mut replicas = self.replicas.lock().await;
        let all: Vec<(ShardId, Replica)> = replicas.drain().collect();
        self.publish(&replicas);
        drop(replicas);
        let deadline = tokio::time::Instant::now() + wait;
        for (id, r) in all {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.close(id, r, false, left).await;
        }
    }
}

/// Why a replica could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Its database could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Its ingest loop could not start.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The blocking task opening it failed.
    #[error("shard {shard}: opening task failed: {detail}")]
    Task {
        /// The shard.
        shard: ShardId,
        /// The join error.
        detail: String,
    },
}
