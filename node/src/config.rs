//! Node configuration: the TOML file format ([`NodeConfigFile`]) and the validated
//! [`NodeConfig`] the library runs with.
//!
//! Layering (compiled defaults < file < `QUIVER_*` environment < flags) happens in the
//! binary (`main.rs`), which is the only place that reads files, the environment or the
//! command line. Every key is documented in `docs/CONFIG.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quiver_proto::{Partitioner, ShardId};
use serde::{Deserialize, Serialize};

/// Errors of configuration loading and validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the format.
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The config file, as written (`version = 1`). Every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfigFile {
    /// File format version; must be 1.
    pub version: u32,
    /// This node's id.
    pub node_id: u64,
    /// Root directory for RocksDB and the registry.
    pub data_dir: PathBuf,
    /// `[server]`
    pub server: ServerSection,
    /// `[cluster]`
    pub cluster: ClusterSection,
    /// `[kafka]`
    pub kafka: KafkaSection,
    /// `[ingest]`
    pub ingest: IngestSection,
    /// `[storage]`
    pub storage: StorageSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[registry]`
    pub registry: RegistrySection,
    /// `[log]`
    pub log: LogSection,
    /// `[control]`
    pub control: ControlSection,
}

/// `[control]`: cluster mode (openraft control plane). Off: a static node serving
/// `cluster.shards` with a node-local registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Run as a member of a cluster.
    pub enabled: bool,
    /// Address peers and clients reach this node at; default `server.grpc_addr`.
    pub advertise_addr: String,
    /// Failure zone, for zone-aware placement.
    pub zone: String,
    /// Initial voters as `"id@host:port"`; nodes listed form the cluster together.
    pub initial_voters: Vec<String>,
    /// Members to join through (`host:port`).
    pub seeds: Vec<String>,
    /// Replicas per shard (set when the cluster is first initialised).
    pub replication_factor: u32,
    /// Raft voters to keep (3 or 5); other members are learners.
    pub voters: usize,
    /// Heartbeat and reconcile period.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Grace period before a silent node is declared dead and its replicas re-placed.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// Raft snapshot every this many log entries (the log behind it is purged).
    pub snapshot_every: u64,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            enabled: false,
            advertise_addr: String::new(),
            zone: String::new(),
            initial_voters: Vec::new(),
            seeds: Vec::new(),
            replication_factor: 2,
            voters: 3,
            heartbeat_interval: Duration::from_millis(500),
            dead_after: Duration::from_secs(10),
            snapshot_every: 1_000,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// gRPC listen address (public, admin, health, reflection).
    pub grpc_addr: String,
    /// Prometheus `/metrics` listen address; empty disables the exporter.
    pub metrics_addr: String,
    /// How long in-flight RPCs may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Shard count P: every source topic has exactly P partitions.
    pub shard_count: u32,
    /// `"murmur2"` (Kafka Java default) or `"crc32"` (librdkafka `consistent_random`).
    pub partitioner: String,
    /// Shards this node replicates; empty means all of them.
    pub shards: Vec<u32>,
}

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap servers.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (security, fetch tuning).
    pub properties: BTreeMap<String, String>,
    /// Dead-letter topic for malformed records; empty disables.
    pub dead_letter_topic: String,
}

/// `[ingest]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Most records per write batch.
    pub max_batch_records: usize,
    /// Longest poll wait.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// High-watermark refresh period for the lag metric.
    #[serde(with = "humantime_serde")]
    pub lag_refresh_interval: Duration,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Shared block cache, MiB.
    pub block_cache_mib: usize,
    /// Shared memtable budget, MiB.
    pub write_buffer_mib: usize,
    /// How long tombstones are kept.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
    /// Period of the TTL sweep (a compaction of each shard's rows); 0 disables it.
    #[serde(with = "humantime_serde")]
    pub ttl_sweep_interval: Duration,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most entity keys per lookup.
    pub max_batch_keys: usize,
    /// Most feature references per lookup (after expanding `view:*` and services).
    pub max_features_per_request: usize,
    /// Largest accepted request message, bytes.
    pub max_request_bytes: usize,
    /// Lookups executing at once; further ones wait.
    pub max_concurrent_lookups: usize,
    /// Longest wait for a replica to reach a requested minimum watermark.
    #[serde(with = "humantime_serde")]
    pub max_watermark_wait: Duration,
}

/// `[registry]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Definition files applied at start, in order.
    pub definition_files: Vec<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `"plain"` or `"json"`.
    pub format: String,
    /// Default filter when `RUST_LOG` is unset.
    pub level: String,
}

impl Default for NodeConfigFile {
    fn default() -> Self {
        NodeConfigFile {
            version: 1,
            node_id: 1,
            data_dir: PathBuf::from("./quiver-data"),
            server: ServerSection::default(),
            cluster: ClusterSection::default(),
            kafka: KafkaSection::default(),
            ingest: IngestSection::default(),
            storage: StorageSection::default(),
            limits: LimitsSection::default(),
            registry: RegistrySection::default(),
            log: LogSection::default(),
            control: ControlSection::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            grpc_addr: "127.0.0.1:7070".into(),
            metrics_addr: "127.0.0.1:9464".into(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            shard_count: 8,
            partitioner: "murmur2".into(),
            shards: Vec::new(),
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            bootstrap_servers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
            dead_letter_topic: String::new(),
        }
    }
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_batch_records: 2000,
            poll_timeout: Duration::from_millis(100),
            lag_refresh_interval: Duration::from_secs(5),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            block_cache_mib: 512,
            write_buffer_mib: 128,
            tombstone_retention: Duration::from_secs(24 * 3600),
            ttl_sweep_interval: Duration::from_secs(3600),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_batch_keys: 1000,
            max_features_per_request: 1000,
            max_request_bytes: 4 << 20,
            max_concurrent_lookups: 256,
            max_watermark_wait: Duration::from_millis(200),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "plain".into(),
            level: "info".into(),
        }
    }
}

/// Request limits, validated.
#[derive(Debug, Clone)]
pub struct Limits {
    /// See [`LimitsSection::max_batch_keys`].
    pub max_batch_keys: usize,
    /// See [`LimitsSection::max_features_per_request`].
    pub max_features_per_request: usize,
    /// See [`LimitsSection::max_request_bytes`].
    pub max_request_bytes: usize,
    /// See [`LimitsSection::max_concurrent_lookups`].
    pub max_concurrent_lookups: usize,
    /// See [`LimitsSection::max_watermark_wait`].
    pub max_watermark_wait: Duration,
}

/// The validated configuration [`crate::run`] takes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: u64,
    /// Root data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address (used by the binary to bind).
    pub grpc_addr: SocketAddr,
    /// Metrics listen address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Drain time for in-flight RPCs on shutdown.
    pub shutdown_grace: Duration,
    /// Shard count P.
    pub shard_count: u32,
    /// key → shard function.
    pub partitioner: Partitioner,
    /// Shards this node replicates.
    pub shards: Vec<ShardId>,
    /// Ingest settings.
    pub ingest: crate::ingest::IngestConfig,
    /// Storage settings.
    pub storage: crate::storage::StorageConfig,
    /// TTL sweep period; `None` disables.
    pub ttl_sweep_interval: Option<Duration>,
    /// Request limits.
    pub limits: Limits,
    /// Definition files applied at start.
    pub definition_files: Vec<PathBuf>,
    /// Log format and level.
    pub log: LogSection,
    /// Cluster mode settings; `None` runs a static node.
    pub control: Option<crate::control::plane::ControlConfig>,
}

impl NodeConfigFile {
    fn control_config(
        &self,
        grpc_addr: SocketAddr,
        partitioner: Partitioner,
    ) -> Result<Option<crate::control::plane::ControlConfig>, ConfigError> {
        let c = &self.control;
        if !c.enabled {
            return Ok(None);
        }
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node_id == 0 {
            return bad("node_id must be non-zero in cluster mode".into());
        }
        let mut initial_voters = std::collections::BTreeMap::new();
        for v in &c.initial_voters {
            let Some((id, addr)) = v.split_once('@') else {
                return bad(format!(
                    "control.initial_voters entry {v:?} is not \"id@host:port\""
                ));
            };
            let id: u64 = id.parse().map_err(|_| {
                ConfigError::Invalid(format!("control.initial_voters entry {v:?}: bad id"))
            })?;
            initial_voters.insert(id, addr.to_owned());
        }
        if initial_voters.is_empty() && c.seeds.is_empty() {
            return bad(
                "control: set initial_voters (to form a cluster) or seeds (to join one)".into(),
            );
        }
        if !matches!(c.voters, 1 | 3 | 5) {
            return bad(format!("control.voters = {} must be 1, 3 or 5", c.voters));
        }
        if c.replication_factor == 0 {
            return bad("control.replication_factor must be at least 1".into());
        }
        let advertise_addr = if c.advertise_addr.is_empty() {
            grpc_addr.to_string()
        } else {
            c.advertise_addr.clone()
        };
        Ok(Some(crate::control::plane::ControlConfig {
            node_id: self.node_id,
            advertise_addr,
            zone: c.zone.clone(),
            initial_voters,
            seeds: c.seeds.clone(),
            settings: crate::control::state::ClusterSettings {
                shard_count: self.cluster.shard_count,
                partitioner: partitioner.as_str().to_owned(),
                replication_factor: c.replication_factor,
            },
            voters: c.voters,
            heartbeat_interval: c.heartbeat_interval,
            dead_after: c.dead_after,
            snapshot_every: c.snapshot_every.max(1),
        }))
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Validates into a [`NodeConfig`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and the accepted range.
    pub fn validate(&self) -> Result<NodeConfig, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.version != 1 {
            return bad(format!(
                "version = {} is not supported (expected 1)",
                self.version
            ));
        }
        let grpc_addr = self.server.grpc_addr.parse().map_err(|e| {
            ConfigError::Invalid(format!("server.grpc_addr {:?}: {e}", self.server.grpc_addr))
        })?;
        let metrics_addr = if self.server.metrics_addr.is_empty() {
            None
        } else {
            Some(self.server.metrics_addr.parse().map_err(|e| {
                ConfigError::Invalid(format!(
                    "server.metrics_addr {:?}: {e}",
                    self.server.metrics_addr
                ))
            })?)
        };
        let p = self.cluster.shard_count;
        if p == 0 || p > 4096 {
            return bad(format!(
                "cluster.shard_count = {p} is out of range (1..=4096)"
            ));
        }
        let partitioner: Partitioner = self
            .cluster
            .partitioner
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("cluster.partitioner: {e}")))?;
        let mut shards: Vec<ShardId> = if self.cluster.shards.is_empty() {
            (0..p).map(ShardId).collect()
        } else {
            self.cluster.shards.iter().map(|&s| ShardId(s)).collect()
        };
        if let Some(s) = shards.iter().find(|s| s.0 >= p) {
            return bad(format!(
                "cluster.shards contains {s}, but shard_count is {p} (shards are 0..{p})"
            ));
        }
        shards.sort();
        shards.dedup();
        if self.kafka.bootstrap_servers.is_empty() {
            return bad("kafka.bootstrap_servers is empty".into());
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.max_batch_keys", l.max_batch_keys),
            (
                "limits.max_features_per_request",
                l.max_features_per_request,
            ),
            ("limits.max_request_bytes", l.max_request_bytes),
            ("limits.max_concurrent_lookups", l.max_concurrent_lookups),
            ("ingest.max_batch_records", self.ingest.max_batch_records),
            ("storage.block_cache_mib", self.storage.block_cache_mib),
            ("storage.write_buffer_mib", self.storage.write_buffer_mib),
        ] {
            if v == 0 {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if l.max_request_bytes > 256 << 20 {
            return bad(format!(
                "limits.max_request_bytes = {} exceeds 256 MiB",
                l.max_request_bytes
            ));
        }
        if self.ingest.poll_timeout.is_zero() || self.ingest.poll_timeout > Duration::from_secs(10)
        {
            return bad("ingest.poll_timeout must be between 1ms and 10s".into());
        }
        if !matches!(self.log.format.as_str(), "plain" | "json") {
            return bad(format!(
                "log.format {:?} is not \"plain\" or \"json\"",
                self.log.format
            ));
        }
        let dead_letter_topic = (!self.kafka.dead_letter_topic.is_empty())
            .then(|| self.kafka.dead_letter_topic.clone());
        let control = self.control_config(grpc_addr, partitioner)?;
        Ok(NodeConfig {
            node_id: self.node_id,
            data_dir: self.data_dir.clone(),
            grpc_addr,
            metrics_addr,
            shutdown_grace: self.server.shutdown_grace,
            shard_count: p,
            partitioner,
            shards,
            ingest: crate::ingest::IngestConfig {
                bootstrap_servers: self.kafka.bootstrap_servers.clone(),
                kafka_properties: self.kafka.properties.clone(),
                max_batch_records: self.ingest.max_batch_records,
                poll_timeout: self.ingest.poll_timeout,
                lag_refresh_interval: self.ingest.lag_refresh_interval,
                dead_letter_topic,
                node_id: self.node_id,
            },
            storage: crate::storage::StorageConfig {
                data_dir: self.data_dir.clone(),
                block_cache_bytes: self.storage.block_cache_mib << 20,
                write_buffer_bytes: self.storage.write_buffer_mib << 20,
                tombstone_retention: self.storage.tombstone_retention,
            },
            ttl_sweep_interval: (!self.storage.ttl_sweep_interval.is_zero())
                .then_some(self.storage.ttl_sweep_interval),
            limits: Limits {
                max_batch_keys: l.max_batch_keys,
                max_features_per_request: l.max_features_per_request,
                max_request_bytes: l.max_request_bytes,
                max_concurrent_lookups: l.max_concurrent_lookups,
                max_watermark_wait: l.max_watermark_wait,
            },
            definition_files: self.registry.definition_files.clone(),
            log: self.log.clone(),
            control,
        })
    }
}

impl NodeConfig {
    /// A configuration for in-process tests: small caches, fast timers, the given broker.
    pub fn for_test(data_dir: PathBuf, bootstrap_servers: &str, shard_count: u32) -> Self {
        let mut file = NodeConfigFile {
            data_dir,
            ..Default::default()
        };
        file.cluster.shard_count = shard_count;
        file.kafka.bootstrap_servers = bootstrap_servers.to_owned();
        file.storage.block_cache_mib = 16;
        file.storage.write_buffer_mib = 16;
        file.ingest.poll_timeout = Duration::from_millis(20);
        file.ingest.lag_refresh_interval = Duration::from_millis(500);
        file.server.grpc_addr = "127.0.0.1:0".into();
        file.server.metrics_addr = String::new();
        file.server.shutdown_grace = Duration::from_secs(2);
        file.validate().expect("test configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = NodeConfigFile::default().validate().unwrap();
        assert_eq!(c.shards.len(), 8);
        assert_eq!(c.partitioner, Partitioner::Murmur2);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/node.toml");
        let c = NodeConfigFile::load(&path).unwrap().validate().unwrap();
        assert_eq!(
            c.ingest.dead_letter_topic.as_deref(),
            Some("quiver-dead-letters")
        );
        let views =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/views.toml");
        let registry = crate::registry::Registry::in_memory();
        registry
            .apply_toml(&std::fs::read_to_string(views).unwrap(), false)
            .unwrap();
        assert_eq!(registry.snapshot().views.len(), 2);
    }

    #[test]
    fn cluster_mode_settings() {
        let mut f = NodeConfigFile::default();
        f.control.enabled = true;
        f.control.initial_voters = vec!["1@127.0.0.1:7070".into(), "2@127.0.0.1:7071".into()];
        f.control.replication_factor = 3;
        let c = f.validate().unwrap().control.unwrap();
        assert_eq!(c.initial_voters.len(), 2);
        assert_eq!(
            c.advertise_addr, "127.0.0.1:7070",
            "defaults to the gRPC address"
        );
        assert_eq!(c.settings.replication_factor, 3);
        assert_eq!(c.settings.shard_count, 8);
        assert!(
            NodeConfigFile::default()
                .validate()
                .unwrap()
                .control
                .is_none()
        );
    }

    #[test]
    fn parses_a_full_file() {
        let text = r#"
version = 1
node_id = 3
data_dir = "/tmp/q"
[server]
grpc_addr = "0.0.0.0:7000"
metrics_addr = ""
shutdown_grace = "5s"
[cluster]
shard_count = 4
partitioner = "crc32"
shards = [3, 1]
[kafka]
bootstrap_servers = "k:9092"
properties = { "fetch.min.bytes" = "1" }
dead_letter_topic = "dlq"
[ingest]
max_batch_records = 10
poll_timeout = "50ms"
[limits]
max_batch_keys = 5
[registry]
definition_files = ["a.toml"]
"#;
        let file: NodeConfigFile = toml::from_str(text).unwrap();
        let c = file.validate().unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.shards, vec![ShardId(1), ShardId(3)]);
        assert_eq!(c.partitioner, Partitioner::Crc32);
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.ingest.dead_letter_topic.as_deref(), Some("dlq"));
        assert_eq!(c.limits.max_batch_keys, 5);
        assert_eq!(
            c.limits.max_features_per_request, 1000,
            "unset keys keep defaults"
        );
    }

    #[test]
    fn rejects_bad_values_by_name() {
        type Mutation = fn(&mut NodeConfigFile);
        let cases: Vec<(Mutation, &str)> = vec![
            (|f| f.cluster.shard_count = 0, "cluster.shard_count"),
            (
                |f| f.cluster.partitioner = "fnv".into(),
                "cluster.partitioner",
            ),
            (|f| f.cluster.shards = vec![9], "cluster.shards contains 9"),
            (|f| f.server.grpc_addr = "nope".into(), "server.grpc_addr"),
            (|f| f.limits.max_batch_keys = 0, "limits.max_batch_keys"),
            (|f| f.log.format = "xml".into(), "log.format"),
            (|f| f.version = 2, "version = 2"),
            (
                |f| {
                    f.control.enabled = true;
                    f.control.initial_voters = vec!["nope".into()];
                },
                "control.initial_voters entry \"nope\"",
            ),
            (|f| f.control.enabled = true, "set initial_voters"),
            (
                |f| {
                    f.control.enabled = true;
                    f.control.seeds = vec!["127.0.0.1:7070".into()];
                    f.control.voters = 2;
                },
                "control.voters = 2",
            ),
        ];
        for (mutate, needle) in cases {
            let mut f = NodeConfigFile::default();
            mutate(&mut f);
            let err = f.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        let err = toml::from_str::<NodeConfigFile>("bogus = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
