//! Node assembly: opens storage, starts one ingest loop per shard and the gRPC server, and
//! shuts them down in order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use quiver_proto::ShardId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::tasks::{Tasks, Ticker, sleep_or_cancel};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::control::plane::{ControlError, ControlPlane, wall_clock_ms};
use crate::control::state::Command;
use crate::ingest::IngestError;
use crate::kafka_meta::{KafkaMetadata, TopicCheckError};
use crate::metrics as m;
use crate::registry::{Registry, RegistryError, RegistrySnapshot};
use crate::security::tls::ReloadingTls;
use crate::serve::{ServeState, serve};
use crate::shards::ShardManager;
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

/// A running node. Cancel its token to stop it, then [`Node::wait`].
pub struct Node {
    state: Arc<ServeState>,
    shards: Arc<ShardManager>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    tasks: Tasks,
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
    /// Starts a node: control plane (cluster mode), registry, storage, shard replicas,
    /// gRPC server.
    ///
    /// # Errors
    /// A [`NodeError`] if any part cannot start.
    pub async fn start(
        config: NodeConfig,
        listeners: Listeners,
        cancel: CancellationToken,
    ) -> Result<Node, NodeError> {
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
        // In cluster mode the registry follows the replicated state; otherwise it is
        // node-local and persisted next to the data.
        let registry = match &control {
            Some(c) => {
                let r = Registry::in_memory();
                r.replace(c.state().registry.clone())?;
                r
            }
            None => Registry::open(&config.data_dir.join("registry.json"))?,
        };
        let kafka = Arc::new(KafkaMetadata::new(
            &config.ingest.bootstrap_servers,
            &config.ingest.kafka_properties,
        )?);
        if control.is_none() {
            for path in &config.definition_files {
                let text =
                    std::fs::read_to_string(path).map_err(|source| NodeError::DefinitionFile {
                        path: path.clone(),
                        source,
                    })?;
                let changes = registry.apply_toml(&text, false)?;
                info!(file = %path.display(), changes = ?changes, "applied definition file");
            }
            check_topics(&kafka, &registry.snapshot(), config.shard_count).await?;
        }

        let engine = Arc::new(StorageEngine::new(config.storage.clone())?);
        refresh_ttls(engine.ttls(), &registry.snapshot());
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
        let producer = Arc::new(crate::produce::PushProducer::new(
            &config.ingest.bootstrap_servers,
            &config.ingest.kafka_properties,
            Duration::from_secs(30),
        )?);
        let state = Arc::new(ServeState {
            node_id: config.node_id,
            shard_count: config.shard_count,
            partitioner: config.partitioner,
            registry: registry.clone(),
            local: Default::default(),
            control: control.clone(),
            limits: config.limits.clone(),
            lookup_permits: Arc::new(Semaphore::new(config.limits.max_concurrent_lookups)),
            kafka: Some(kafka),
            producer: Some(producer),
            ready: tokio::sync::watch::channel(false).0,
            security: config.security.clone(),
            push_quota: crate::security::rate::RateLimiter::new(
                config.limits.max_pushes_per_second,
            ),
            queued_lookups: Default::default(),
            plans: Default::default(),
            compress_responses: config.compress_responses,
        });
        if !config.security.auth.enabled {
            warn!(
                "AUTHENTICATION IS DISABLED ([auth] enabled = false): anyone who can reach this node's port may read, write and administer it. Use only for demos and trusted test rigs."
            );
        }
        let auth = &config.security.auth;
        if auth.enabled
            && control.is_none()
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
        let shards = Arc::new(ShardManager::new(
            engine.clone(),
            registry.clone(),
            config.ingest.clone(),
            dead_letters.clone(),
            config.shard_count,
            config.partitioner,
            state.clone(),
            cancel.clone(),
        ));
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
                    shards.shutdown().await;
                    return Err(e);
                }
                info!(
                    shards = desired.len(),
                    shard_count = config.shard_count,
                    "opened shard replicas (static mode)"
                );
                tasks.spawn(
                    "promotion",
                    run_promotion_loop(state.clone(), cancel.clone()),
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
                        apply_files_loop(
                            c.clone(),
                            config.definition_files.clone(),
                            cancel.clone(),
                        ),
                    );
                }
            }
        }
        tasks.spawn(
            "readiness",
            run_readiness_loop(state.clone(), shards.clone(), tasks.clone(), cancel.clone()),
        );
        let tls = match &config.security.tls {
            Some(cfg) => Some(ReloadingTls::new(cfg.clone())?),
            None => None,
        };
        let server = tokio::spawn(serve(
            listeners.grpc,
            tls,
            state.clone(),
            tasks.failures(),
            config.shutdown_grace,
            cancel.clone(),
        ));
        if let Some(every) = config.ttl_sweep_interval {
            tasks.spawn(
                "ttl-sweep",
                run_ttl_sweep_loop(state.clone(), every, cancel.clone()),
            );
        }
        info!(
            node_id = config.node_id,
            cluster_mode = control.is_some(),
            "node started"
        );
        Ok(Node {
            state,
            shards,
            server,
            tasks,
            dead_letters,
            cancel,
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

    /// Waits until the node's token is cancelled, then shuts down in order: stop accepting
    /// and drain RPCs, stop ingest loops (their last batches are written), flush storage,
    /// stop Raft.
    ///
    /// # Errors
    /// [`NodeError::Server`] if the gRPC server failed while running.
    pub async fn wait(self) -> Result<(), NodeError> {
        let Node {
            state,
            shards,
            server,
            tasks,
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
        tasks.join().await;
        shards.shutdown().await;
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

/// Cluster mode: follows the committed state (registry, this node's replicas) and
/// publishes the replicas' observed states for the heartbeats.
async fn run_follow_loop(
    control: Arc<ControlPlane>,
    registry: Registry,
    shards: Arc<ShardManager>,
    cancel: CancellationToken,
) {
    let mut rx = control.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut applied_registry = None;
    let mut published = BTreeSet::new();
    loop {
        let state = rx.borrow_and_update().clone();
        if applied_registry.as_ref() != Some(&state.registry) {
            match registry.replace(state.registry.clone()) {
                Ok(()) => applied_registry = Some(state.registry.clone()),
                Err(e) => error!(error = %e, "committed registry does not validate"),
            }
        }
        let mine = state.replicas_on(control.node_id());
        publish_replica_states(&mine, &mut published);
        let desired: BTreeSet<ShardId> = mine.keys().map(|s| ShardId(*s)).collect();
        if let Err(e) = shards.reconcile(&desired, true).await {
            warn!(error = %e, "shard reconcile failed; retrying");
        }
        let mut reports = shards.reports().await;
        for r in &mut reports {
            r.epoch = state.epoch;
        }
        control.set_local_reports(reports);
        tokio::select! {
            () = cancel.cancelled() => return,
            res = rx.changed() => if res.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Sets `quiver_replica_state{shard, state}` for this node's replicas; shards it no longer
/// holds (in `published`) go to 0.
fn publish_replica_states(
    mine: &std::collections::BTreeMap<u32, crate::control::state::ReplicaState>,
    published: &mut BTreeSet<u32>,
) {
    use crate::control::state::ReplicaState;
    const STATES: [(ReplicaState, &str); 3] = [
        (ReplicaState::Bootstrapping, "bootstrapping"),
        (ReplicaState::Serving, "serving"),
        (ReplicaState::Draining, "draining"),
    ];
    for shard in published.iter().filter(|s| !mine.contains_key(s)) {
        for (_, name) in STATES {
            gauge!(m::REPLICA_STATE, "shard" => shard.to_string(), "state" => name).set(0.0);
        }
    }
    for (shard, state) in mine {
        for (s, name) in STATES {
            let v = if *state == s { 1.0 } else { 0.0 };
            gauge!(m::REPLICA_STATE, "shard" => shard.to_string(), "state" => name).set(v);
        }
    }
    *published = mine.keys().copied().collect();
}

/// Static mode: promotes a pending view version once every local replica re-ingested it
/// (in cluster mode the leader does this for the whole cluster).
async fn run_promotion_loop(state: Arc<ServeState>, cancel: CancellationToken) {
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
                        .is_some_and(|st| crate::shards::pending_caught_up(store, st, view))
                });
            if !ready {
                continue;
            }
            let registry = state.registry.clone();
            let (name, version) = (view.name.clone(), view.version);
            match tokio::task::spawn_blocking(move || registry.promote(&name, version)).await {
                Ok(Ok(())) => {
                    info!(view = %view.name, version = view.version, "new view version re-ingested: promoted to serving")
                }
                Ok(Err(e)) => warn!(view = %view.name, error = %e, "promoting view version failed"),
                Err(e) => warn!(error = %e, "promotion task failed"),
            }
        }
    }
}

/// Cluster mode: applies the configured definition files through Raft once a leader exists.
async fn apply_files_loop(
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

/// Readiness (`quiver.v1.Readiness`, `quiver_node_ready`), checked every 500 ms.
///
/// Static mode: every local replica caught up. Cluster mode, all of: a leader known and
/// this node's control-plane state current (a read-index round); the node is an active
/// member of the committed state; every replica placement wants on this node has been
/// assigned to it (a node that just joined has an empty assignment until the leader
/// places replicas on it: "no replicas yet" is not "nothing to serve"); and every
/// replica assigned to it is open here and caught up with its partitions.
async fn run_readiness_loop(
    state: Arc<ServeState>,
    shards: Arc<ShardManager>,
    tasks: Tasks,
    cancel: CancellationToken,
) {
    let mut ticker = Ticker::new(Duration::from_millis(500), &cancel);
    while ticker.tick().await {
        let reports = shards.reports().await;
        // A node whose background task died is not ready, whatever its replicas say.
        let ready = tasks.is_healthy()
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
    if control.leader().is_none() || !control.is_fresh() {
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
        .all(|shard| reports.iter().any(|r| r.shard == *shard && r.caught_up));
    placed && caught_up
}

/// Storage figures summed over the local shards.
#[derive(Default)]
struct StorageStats {
    hits: u64,
    misses: u64,
    memtable: u64,
    sst: u64,
    pending: u64,
    stall_micros: u64,
    rows: Vec<(u32, u64)>,
}

async fn run_storage_metrics_loop(
    state: Arc<ServeState>,
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
        gauge!(m::STORAGE_MEMTABLE_BYTES).set(s.memtable as f64);
        gauge!(m::STORAGE_SST_BYTES).set(s.sst as f64);
        gauge!(m::STORAGE_PENDING_COMPACTION_BYTES).set(s.pending as f64);
        m::record_write_stall_micros(s.stall_micros);
        counter!(m::STORAGE_SAMPLES).increment(1);
    }
}

async fn run_ttl_sweep_loop(state: Arc<ServeState>, every: Duration, cancel: CancellationToken) {
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
