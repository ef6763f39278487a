//! Validation of [`NodeConfigFile`] into the typed [`NodeConfig`] the library runs with.

use quiver_proto::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quiver_proto::{Partitioner, ShardId};

use super::{ConfigError, LogSection, NodeConfigFile};

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
    /// See [`LimitsSection::max_push_rows`].
    pub max_push_rows: usize,
    /// See [`LimitsSection::max_key_bytes`].
    pub max_key_bytes: usize,
    /// See [`LimitsSection::max_string_bytes`].
    pub max_string_bytes: usize,
    /// See [`LimitsSection::max_vector_len`].
    pub max_vector_len: usize,
    /// See [`LimitsSection::max_concurrent_requests_per_connection`].
    pub max_concurrent_requests_per_connection: usize,
    /// See [`LimitsSection::max_inflight_requests`].
    pub max_inflight_requests: usize,
    /// See [`LimitsSection::max_queued_lookups`].
    pub max_queued_lookups: usize,
    /// See [`LimitsSection::max_push_rows_per_second`].
    pub max_push_rows_per_second: u32,
}

/// The validated configuration [`crate::run`] takes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Root data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address (used by the binary to bind).
    pub grpc_addr: SocketAddr,
    /// Metrics listen address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// Drain time for in-flight RPCs on shutdown.
    pub shutdown_grace: Duration,
    /// NOT_SERVING window before the node stops accepting on shutdown.
    pub shutdown_delay: Duration,
    /// Compress lookup responses (zstd) for clients that accept it.
    pub compress_responses: bool,
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
    /// `registry.version_retention`.
    pub version_retention: Duration,
    /// Log format and level.
    pub log: LogSection,
    /// Cluster mode settings; `None` runs a static node.
    pub control: Option<crate::control::plane::ControlConfig>,
    /// TLS and authentication.
    pub security: crate::security::SecurityConfig,
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
            initial_voters.insert(NodeId(id), addr.to_owned());
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
            node_id: NodeId(self.node_id),
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
            version_retention: self.registry.version_retention,
            snapshot_every: c.snapshot_every.max(1),
            // Set from the validated [tls]/[auth] sections by `validate`.
            peer_credentials: Default::default(),
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
            ("limits.max_push_rows", l.max_push_rows),
            ("limits.max_key_bytes", l.max_key_bytes),
            ("limits.max_string_bytes", l.max_string_bytes),
            ("limits.max_vector_len", l.max_vector_len),
            (
                "limits.max_concurrent_requests_per_connection",
                l.max_concurrent_requests_per_connection,
            ),
            ("limits.max_inflight_requests", l.max_inflight_requests),
            ("ingest.max_batch_records", self.ingest.max_batch_records),
            ("storage.block_cache_mib", self.storage.block_cache_mib),
            ("storage.write_buffer_mib", self.storage.write_buffer_mib),
        ] {
            if v == 0 {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if l.max_pushes_per_second.is_some() {
            return bad("limits.max_pushes_per_second was replaced by limits.max_push_rows_per_second: the push quota counts rows, not requests".into());
        }
        if l.max_push_rows_per_second != 0
            && (l.max_push_rows_per_second as usize) < l.max_push_rows
        {
            return bad(format!(
                "limits.max_push_rows_per_second = {} is below limits.max_push_rows = {}: a full push could never be admitted",
                l.max_push_rows_per_second, l.max_push_rows
            ));
        }
        if l.max_key_bytes > crate::storage::keys::MAX_KEY_BYTES {
            return bad(format!(
                "limits.max_key_bytes = {} exceeds the storage key limit of {} bytes",
                l.max_key_bytes,
                crate::storage::keys::MAX_KEY_BYTES
            ));
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
        let mut control = self.control_config(grpc_addr, partitioner)?;
        let mut security = crate::security::SecurityConfig::from_sections(
            &self.tls,
            &self.auth,
            control.is_some(),
        )
        .map_err(ConfigError::Invalid)?;
        security.auth.quotas = self.quotas;
        if let Some(c) = &mut control {
            c.peer_credentials = security.peer_credentials.clone();
        }
        Ok(NodeConfig {
            node_id: NodeId(self.node_id),
            data_dir: self.data_dir.clone(),
            grpc_addr,
            metrics_addr,
            shutdown_grace: self.server.shutdown_grace,
            shutdown_delay: self.server.shutdown_delay,
            compress_responses: self.server.compress_responses,
            shard_count: p,
            partitioner,
            shards,
            ingest: crate::ingest::IngestConfig {
                bootstrap_servers: self.kafka.bootstrap_servers.clone(),
                kafka_properties: self.kafka.properties.clone(),
                max_batch_records: self.ingest.max_batch_records,
                poll_timeout: self.ingest.poll_timeout,
                lag_refresh_interval: self.ingest.lag_refresh_interval,
                gap_refetches: self.ingest.gap_refetches,
                dead_letter_topic,
                node_id: self.node_id,
                full_log_required: false,
            },
            storage: crate::storage::StorageConfig {
                data_dir: self.data_dir.clone(),
                block_cache_bytes: self.storage.block_cache_mib << 20,
                row_cache_bytes: self.storage.row_cache_mib << 20,
                lookup_cache_bytes: self.storage.lookup_cache_mib << 20,
                lookup_cache_fill_on_ingest: self.storage.lookup_cache_fill_on_ingest,
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
                max_push_rows: l.max_push_rows,
                max_key_bytes: l.max_key_bytes,
                max_string_bytes: l.max_string_bytes,
                max_vector_len: l.max_vector_len,
                max_concurrent_requests_per_connection: l.max_concurrent_requests_per_connection,
                max_inflight_requests: l.max_inflight_requests,
                max_queued_lookups: l.max_queued_lookups,
                max_push_rows_per_second: l.max_push_rows_per_second,
            },
            security,
            definition_files: self.registry.definition_files.clone(),
            version_retention: self.registry.version_retention,
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
        // In-process tests stop nodes often and have no load balancer to wait for.
        file.server.shutdown_delay = Duration::ZERO;
        file.auth.enabled = false;
        file.validate().expect("test configuration is valid")
    }
}
