//! Node assembly: opens storage, starts one ingest loop per shard and the gRPC server, and
//! shuts them down in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use quiver_proto::ShardId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::ingest::{IngestError, IngestHandle, spawn_shard_ingest};
use crate::kafka_meta::{KafkaMetadata, TopicCheckError};
use crate::metrics as m;
use crate::registry::{Registry, RegistryError, RegistrySnapshot};
use crate::serve::{ServeState, serve};
use crate::storage::{ShardStore, StorageEngine, StorageError, TtlTable};

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The registry or a definition file is invalid.
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    /// A definition file could not be read.
    #[error("definition file {path}: {source}")]
    DefinitionFile {
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A source topic does not match the shard count.
    #[error(transparent)]
    Topic(#[from] TopicCheckError),
    /// An ingest loop could not start.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A Kafka client could not be created.
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// A startup task panicked or was cancelled.
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Sockets the node serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// gRPC (feature, admin, health, reflection).
    pub grpc: TcpListener,
}

/// A running node. Cancel its token to stop it, then [`Node::wait`].
pub struct Node {
    state: Arc<ServeState>,
    ingest: Vec<IngestHandle>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    cancel: CancellationToken,
}

fn refresh_ttls(ttls: &TtlTable, snap: &RegistrySnapshot) {
    ttls.replace(
        snap.views
            .values()
            .map(|v| ((v.name.clone(), v.version), v.ttl)),
    );
}

impl Node {
    /// Starts a node: registry, storage, ingest loops, gRPC server.
    ///
    /// # Errors
    /// A [`NodeError`] if any part cannot start; nothing is left running then.
    pub async fn start(
        config: NodeConfig,
        listeners: Listeners,
        cancel: CancellationToken,
    ) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StorageError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let registry = Registry::open(&config.data_dir.join("registry.json"))?;
        for path in &config.definition_files {
            let text =
                std::fs::read_to_string(path).map_err(|source| NodeError::DefinitionFile {
                    path: path.clone(),
                    source,
                })?;
            let changes = registry.apply_toml(&text, false)?;
            info!(file = %path.display(), changes = ?changes, "applied definition file");
        }

        let kafka = Arc::new(KafkaMetadata::new(
            &config.ingest.bootstrap_servers,
            &config.ingest.kafka_properties,
        )?);
        check_topics(&kafka, &registry.snapshot(), config.shard_count).await?;

        let engine = Arc::new(StorageEngine::new(config.storage.clone())?);
        refresh_ttls(engine.ttls(), &registry.snapshot());
        let (shard_count, partitioner) = (config.shard_count, config.partitioner);
        let shard_ids = config.shards.clone();
        let opener = engine.clone();
        let stores: Vec<ShardStore> = tokio::task::spawn_blocking(move || {
            shard_ids
                .iter()
                .map(|&s| opener.open_shard(s, shard_count, partitioner))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
        let shards: HashMap<ShardId, Arc<ShardStore>> = stores
            .into_iter()
            .map(|s| (s.shard(), Arc::new(s)))
            .collect();
        info!(shards = shards.len(), shard_count, %partitioner, "opened shard stores");

        let dead_letters = match &config.ingest.dead_letter_topic {
            Some(_) => {
                let mut cc = ClientConfig::new();
                cc.set("bootstrap.servers", &config.ingest.bootstrap_servers);
                for (k, v) in &config.ingest.kafka_properties {
                    cc.set(k, v);
                }
                Some(Arc::new(
                    cc.create::<ThreadedProducer<DefaultProducerContext>>()?,
                ))
            }
            None => None,
        };

        let mut ingest = Vec::new();
        let mut ingest_status = HashMap::new();
        for (id, store) in &shards {
            let handle = spawn_shard_ingest(
                store.clone(),
                registry.clone(),
                config.ingest.clone(),
                dead_letters.clone(),
                cancel.child_token(),
            );
            match handle {
                Ok(h) => {
                    ingest_status.insert(*id, h.status.clone());
                    ingest.push(h);
                }
                Err(e) => {
                    for h in ingest {
                        h.join().await;
                    }
                    return Err(e.into());
                }
            }
        }

        let state = Arc::new(ServeState {
            node_id: config.node_id,
            shard_count: config.shard_count,
            partitioner: config.partitioner,
            registry: registry.clone(),
            shards,
            ingest_status,
            limits: config.limits.clone(),
            lookup_permits: Arc::new(Semaphore::new(config.limits.max_concurrent_lookups)),
            kafka: Some(kafka),
        });
        let server = tokio::spawn(serve(
            listeners.grpc,
            state.clone(),
            config.shutdown_grace,
            cancel.clone(),
        ));
        let mut background = vec![
            tokio::spawn(run_ttl_refresh_loop(
                registry,
                engine.clone(),
                cancel.clone(),
            )),
            tokio::spawn(run_storage_metrics_loop(
                state.clone(),
                engine.clone(),
                cancel.clone(),
            )),
        ];
        if let Some(every) = config.ttl_sweep_interval {
            background.push(tokio::spawn(run_ttl_sweep_loop(
                state.clone(),
                every,
                cancel.clone(),
            )));
        }
        info!(node_id = config.node_id, "node started");
        Ok(Node {
            state,
            ingest,
            server,
            background,
            dead_letters,
            cancel,
        })
    }

    /// The local replica of `shard`, if this node has one.
    pub fn shard(&self, shard: ShardId) -> Option<Arc<ShardStore>> {
        self.state.shards.get(&shard).cloned()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// Waits until the node's token is cancelled, then shuts down in order: stop accepting
    /// and drain RPCs, stop ingest loops (their last batches are written), flush storage.
    ///
    /// # Errors
    /// [`NodeError::Server`] if the gRPC server failed while running.
    pub async fn wait(self) -> Result<(), NodeError> {
        let Node {
            state,
            ingest,
            server,
            background,
            dead_letters,
            cancel,
        } = self;
        let served = tokio::select! {
            res = server => Some(res),
            () = cancel.cancelled() => None,
        };
        // An unexpected server exit is fatal: stop everything else too.
        cancel.cancel();
        let served = match served {
            Some(res) => res,
            None => Ok(Ok(())),
        };
        info!("shutting down: stopping ingest");
        for h in ingest {
            h.join().await;
        }
        for t in background {
            let _ = t.await;
        }
        let stores: Vec<Arc<ShardStore>> = state.shards.values().cloned().collect();
        let flushed = tokio::task::spawn_blocking(move || {
            for s in stores {
                if let Err(e) = s.flush() {
                    error!(error = %e, "flushing shard failed");
                }
            }
        })
        .await;
        if let Err(e) = flushed {
            error!(error = %e, "flush task failed");
        }
        if let Some(p) = dead_letters {
            let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(5))).await;
        }
        info!("node stopped");
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Server(e)),
            Err(e) => Err(NodeError::Task(e.to_string())),
        }
    }
}

/// Runs a node until `cancel` fires, then shuts it down gracefully.
///
/// # Errors
/// As [`Node::start`] and [`Node::wait`].
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    cancel: CancellationToken,
) -> Result<(), NodeError> {
    Node::start(config, listeners, cancel).await?.wait().await
}

async fn check_topics(
    kafka: &Arc<KafkaMetadata>,
    snap: &RegistrySnapshot,
    shard_count: u32,
) -> Result<(), NodeError> {
    let topics = snap.topics();
    let kafka = kafka.clone();
    let results = tokio::task::spawn_blocking(move || {
        topics
            .iter()
            .map(|t| kafka.check_topic(t, shard_count, Duration::from_secs(5)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| NodeError::Task(e.to_string()))?;
    for r in results {
        match r {
            Ok(()) => {}
            // Serving what is stored beats refusing to start while the broker is down.
            Err(e @ TopicCheckError::Unreachable { .. }) => {
                warn!(error = %e, "cannot verify source topic at start")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn run_ttl_refresh_loop(
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
        refresh_ttls(engine.ttls(), &registry.snapshot());
    }
}

async fn run_storage_metrics_loop(
    state: Arc<ServeState>,
    engine: Arc<StorageEngine>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (mut hits, mut misses) = (0, 0);
        for (id, store) in &state.shards {
            let (h, mi) = store.block_cache_stats();
            hits += h;
            misses += mi;
            gauge!(m::STORAGE_ROWS, "shard" => id.0.to_string()).set(store.estimate_rows() as f64);
        }
        counter!(m::STORAGE_BLOCK_CACHE_HITS).absolute(hits);
        counter!(m::STORAGE_BLOCK_CACHE_MISSES).absolute(misses);
        gauge!(m::STORAGE_BLOCK_CACHE_USAGE).set(engine.block_cache_usage() as f64);
    }
}

async fn run_ttl_sweep_loop(state: Arc<ServeState>, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for store in state.shards.values() {
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
