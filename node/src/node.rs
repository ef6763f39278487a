//! Node assembly: opens storage, starts one ingest loop per shard and the gRPC server, and
//! shuts them down in order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::ShardId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod loops;

use self::loops::{
    apply_files_loop, refresh_ttls, run_promotion_loop, run_readiness_loop,
    run_storage_metrics_loop, run_ttl_refresh_loop, run_ttl_sweep_loop,
};
use crate::tasks::Tasks;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::control::plane::{ControlError, ControlPlane};
use crate::ingest::IngestError;
use crate::kafka_meta::{KafkaMetadata, TopicCheckError};
use crate::registry::{Registry, RegistryError, RegistrySnapshot};
use crate::replica::{ShardManager, run_follow_loop};
use crate::security::tls::ReloadingTls;
use crate::serve::{Drain, serve};
use crate::state::NodeState;
use crate::storage::{ShardStore, StorageEngine, StorageError};

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
    /// A shard replica could not be opened.
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    /// A Kafka client could not be created.
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The control plane failed.
    #[error("control plane: {0}")]
    Control(ControlError),
    /// The TLS certificate, key or CA does not load.
    #[error(transparent)]
    Tls(#[from] crate::security::tls::TlsError),
    /// A startup task panicked or was cancelled.
    #[error("startup task failed: {0}")]
    Task(String),
}

/// Sockets the node serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// gRPC (feature, admin, health, reflection).
    pub grpc: TcpListener,
}

/// A running node. Cancel its shutdown token to stop it, then [`Node::wait`].
pub struct Node {
    state: Arc<NodeState>,
    shards: Arc<ShardManager>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Tasks,
    dead_letters: Option<Arc<ThreadedProducer<DefaultProducerContext>>>,
    /// The caller's: starts the drain.
    shutdown: CancellationToken,
    /// The node's own, cancelled once the server has drained (or when the node is
    /// dropped): stops ingest, the control plane and every background loop.
    stop: tokio_util::sync::DropGuard,
}

impl Node {
    /// Starts a node: control plane (cluster mode), registry, storage, shard replicas,
    /// gRPC server.
    ///
    /// # Errors
    /// A [`NodeError`] if any part cannot start.
    pub async fn start(
        config: NodeConfig,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<Node, NodeError> {
        // Background work stops after the server drained, not when shutdown begins:
        // in-flight lookups may wait for watermarks that ingest has yet to reach.
        let cancel = CancellationToken::new();
        let stop = cancel.clone().drop_guard();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StorageError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let tasks = Tasks::new(cancel.clone());
        let control = match &config.control {
            Some(cc) => Some(
                ControlPlane::start(cc.clone(), &config.data_dir.join("raft"), &tasks)
                    .await
                    .map_err(NodeError::Control)?,
            ),
            None => None,
        };
        let registry = open_registry(&config, control.as_deref())?;
        let kafka = Arc::new(KafkaMetadata::new(
            &config.ingest.bootstrap_servers,
            &config.ingest.kafka_properties,
        )?);
        if control.is_none() {
            check_topics(&kafka, &registry.snapshot(), config.shard_count).await?;
        }

        let engine = Arc::new(StorageEngine::new(config.storage.clone())?);
        refresh_ttls(&engine, &registry.snapshot());
        let dead_letters = dead_letter_producer(&config)?;
        let producer = Arc::new(crate::produce::PushProducer::new(
            &config.ingest.bootstrap_servers,
            &config.ingest.kafka_properties,
            Duration::from_secs(30),
        )?);
        let state = Arc::new(NodeState {
            node_id: config.node_id,
            shard_count: config.shard_count,
            partitioner: config.partitioner,
            registry: registry.clone(),
            local: Default::default(),
            control: control.clone(),
            limits: config.limits.clone(),
            lookup_permits: crate::serve::fair::FairPermits::new(
                config.limits.max_concurrent_lookups,
                config.limits.max_queued_lookups,
            ),
            kafka: Some(kafka),
            producer: Some(producer),
            ready: tokio::sync::watch::channel(false).0,
            security: config.security.clone(),
            push_quota: crate::security::rate::RateLimiter::new(
                config.limits.max_push_rows_per_second,
            ),
            lookup_quotas: Default::default(),
            plans: Default::default(),
            compress_responses: config.compress_responses,
            draining: Default::default(),
            version_retention: config.version_retention,
            data_dir: config.data_dir.clone(),
            checkpoint_copies: Default::default(),
        });
        warn_insecure(&config);
        let shards = Arc::new(ShardManager::new(
            engine.clone(),
            config.ingest.clone(),
            dead_letters.clone(),
            state.clone(),
            cancel.clone(),
        ));
        start_replicas(&config, &state, &shards, &engine, &tasks).await?;
        let tls = match &config.security.tls {
            Some(cfg) => Some(ReloadingTls::new(cfg.clone())?),
            None => None,
        };
        let server = tokio::spawn(serve(
            listeners.grpc,
            tls,
            state.clone(),
            tasks.failures(),
            Drain {
                delay: config.shutdown_delay,
                grace: config.shutdown_grace,
            },
            shutdown.clone(),
        ));
        if let Some(every) = config.ttl_sweep_interval {
            tasks.spawn(
                "ttl-sweep",
                run_ttl_sweep_loop(state.clone(), every, cancel.clone()),
            );
        }
        info!(
            node_id = %config.node_id,
            cluster_mode = control.is_some(),
            "node started"
        );
        Ok(Node {
            state,
            shards,
            server,
            tasks,
            dead_letters,
            shutdown,
            stop,
        })
    }

    /// The local replica of `shard`, if this node has one.
    pub fn shard(&self, shard: ShardId) -> Option<Arc<ShardStore>> {
        self.state.local().stores.get(&shard).cloned()
    }

    /// The shards this node holds now.
    pub fn local_shards(&self) -> BTreeSet<ShardId> {
        self.state.local().stores.keys().copied().collect()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The control plane, in cluster mode.
    pub fn control(&self) -> Option<&Arc<ControlPlane>> {
        self.state.control.as_ref()
    }

    /// Waits until the node's shutdown token is cancelled, then stops in order:
    /// 1. drain: readiness NOT_SERVING, lookup responses marked draining, still answering
    ///    for `server.shutdown_delay`; then no new connections, and in-flight RPCs get
    ///    `server.shutdown_grace` to finish (ingest keeps running meanwhile: a lookup may
    ///    be waiting for a watermark);
    /// 2. every background loop stops — ingest loops at a batch boundary (their last
    ///    batch and its offsets are written), the control plane's loops;
    /// 3. each replica closes: reads still inside its gate get [`STOP_READS_WAIT`], then
    ///    it is flushed;
    /// 4. Raft stops (a leader's followers elect a successor within an election
    ///    timeout), dead-lettered records are flushed.
    ///
    /// # Errors
    /// [`NodeError::Server`] if the gRPC server failed while running.
    pub async fn wait(self) -> Result<(), NodeError> {
        let Node {
            state,
            shards,
            mut server,
            tasks,
            dead_letters,
            shutdown,
            stop,
        } = self;
        let served = tokio::select! {
            res = &mut server => res,
            // `serve` drains and returns (bounded by the delay and the grace).
            () = shutdown.cancelled() => server.await,
        };
        // Also after an unexpected server exit, which is fatal: stop everything else.
        info!("shutting down: stopping ingest and background loops");
        drop(stop);
        tasks.join().await;
        info!("shutting down: closing shard replicas");
        shards.shutdown(STOP_READS_WAIT).await;
        if let Some(c) = &state.control
            && let Err(e) = c.raft().shutdown().await
        {
            error!(error = %e, "raft shutdown failed");
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

/// At shutdown, how long a replica waits for reads still inside its gate once the
/// server stopped (only reads the shutdown grace cut off: they are abandoned).
pub const STOP_READS_WAIT: Duration = Duration::from_secs(2);

/// Runs a node until `shutdown` fires, then shuts it down gracefully ([`Node::wait`]).
///
/// # Errors
/// As [`Node::start`] and [`Node::wait`].
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    Node::start(config, listeners, shutdown).await?.wait().await
}

/// Opens the replicas (static mode: the configured shards; cluster mode: the follow
/// loop opens what the committed assignment gives this node) and spawns the loops that
/// keep them and the node's readiness current.
async fn start_replicas(
    config: &NodeConfig,
    state: &Arc<NodeState>,
    shards: &Arc<ShardManager>,
    engine: &Arc<StorageEngine>,
    tasks: &Tasks,
) -> Result<(), NodeError> {
    let cancel = tasks.cancel_token();
    let registry = &state.registry;
    let control = &state.control;
    tasks.spawn(
        "ttl-refresh",
        run_ttl_refresh_loop(registry.clone(), engine.clone(), cancel.clone()),
    );
    tasks.spawn(
        "storage-metrics",
        run_storage_metrics_loop(state.clone(), engine.clone(), cancel.clone()),
    );
    match &control {
        None => {
            let desired: BTreeSet<ShardId> = config.shards.iter().copied().collect();
            if let Err(e) = shards.reconcile(&desired, false).await {
                shards.shutdown(STOP_READS_WAIT).await;
                return Err(e.into());
            }
            info!(
                shards = desired.len(),
                shard_count = config.shard_count,
                "opened shard replicas (static mode)"
            );
            tasks.spawn(
                "promotion",
                run_promotion_loop(state.clone(), config.version_retention, cancel.clone()),
            );
        }
        Some(c) => {
            tasks.spawn(
                "follow",
                run_follow_loop(c.clone(), registry.clone(), shards.clone(), cancel.clone()),
            );
            if !config.definition_files.is_empty() {
                tasks.spawn_once(
                    "apply-definition-files",
                    apply_files_loop(c.clone(), config.definition_files.clone(), cancel.clone()),
                );
            }
        }
    }
    tasks.spawn(
        "readiness",
        run_readiness_loop(state.clone(), shards.clone(), tasks.clone(), cancel.clone()),
    );
    Ok(())
}

/// The registry: in cluster mode it follows the replicated state; otherwise it is
/// node-local, persisted next to the data, with the configured definition files applied.
fn open_registry(
    config: &NodeConfig,
    control: Option<&ControlPlane>,
) -> Result<Registry, NodeError> {
    if let Some(c) = control {
        let r = Registry::in_memory();
        let state = c.state();
        r.replace(state.registry.clone(), state.registry_revision)?;
        return Ok(r);
    }
    let registry = Registry::open(&config.data_dir.join("registry.json"))?;
    for path in &config.definition_files {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::DefinitionFile {
            path: path.clone(),
            source,
        })?;
        let changes = registry.apply_toml(&text, false)?;
        info!(file = %path.display(), changes = ?changes, "applied definition file");
    }
    Ok(registry)
}

/// The producer of malformed records to `ingest.dead_letter_topic`, if one is set.
fn dead_letter_producer(
    config: &NodeConfig,
) -> Result<Option<Arc<ThreadedProducer<DefaultProducerContext>>>, NodeError> {
    if config.ingest.dead_letter_topic.is_none() {
        return Ok(None);
    }
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.ingest.bootstrap_servers);
    for (k, v) in &config.ingest.kafka_properties {
        cc.set(k, v);
    }
    Ok(Some(Arc::new(
        cc.create::<ThreadedProducer<DefaultProducerContext>>()?,
    )))
}

/// Says loudly at start-up what an insecure configuration exposes.
fn warn_insecure(config: &NodeConfig) {
    let auth = &config.security.auth;
    if !auth.enabled {
        warn!(
            "AUTHENTICATION IS DISABLED ([auth] enabled = false): anyone who can reach this node's port may read, write and administer it. Use only for demos and trusted test rigs."
        );
    }
    if auth.enabled
        && config.control.is_none()
        && auth.bootstrap_sha256.is_none()
        && auth.identities.is_empty()
    {
        warn!(
            "auth is enabled but this static node accepts no credential: set auth.bootstrap_token_file or [[auth.identities]] (tokens need cluster mode)"
        );
    }
    if config.security.tls.is_none() {
        warn!(
            "TLS is off: requests, tokens and features travel in clear text ([tls] cert_file/key_file to enable)"
        );
    }
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
