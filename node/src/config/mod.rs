//! Node configuration: the TOML file format ([`NodeConfigFile`]) and the validated
//! [`NodeConfig`] the library runs with.
//!
//! Layering (compiled defaults < file < `QUIVER_*` environment < flags) happens in the
//! binary (`main.rs`), which is the only place that reads files, the environment or the
//! command line. Every key is documented in `docs/CONFIG.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `[tls]`
    pub tls: TlsSection,
    /// `[auth]`
    pub auth: AuthSection,
    /// `[quotas]`: lookup quotas per principal by role (`[quotas.reader]`,
    /// `[quotas.writer]`, `[quotas.admin]`, each `keys_per_second` and
    /// `requests_per_second`; 0 = unlimited, the default). Enforced only with auth on.
    pub quotas: crate::security::principal::RoleQuotas,
}

/// `[tls]`: TLS on the gRPC port (clients and peers). Empty `cert_file`: plaintext.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// This node's certificate chain (PEM). Also presented to peers under mutual TLS.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that sign client certificates (mutual TLS) and peers'
    /// certificates (node-to-node calls).
    pub ca_file: PathBuf,
    /// Client certificates: `"none"`, `"optional"` (verified if presented) or
    /// `"required"` (mutual TLS).
    pub client_auth: String,
    /// Name peers' certificates are verified against; default: the host of the address.
    pub server_name: String,
    /// How often the certificate, key and CA files are checked for changes (new
    /// connections then use them; no restart). 0 disables reloading.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_auth: "none".into(),
            server_name: String::new(),
            reload_interval: Duration::from_secs(30),
        }
    }
}

/// `[auth]`: who may call what (docs/SECURITY.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Check every RPC's credentials. Disabling it is for demos and trusted test rigs
    /// only; the node logs a warning at start.
    pub enabled: bool,
    /// File holding a bootstrap admin token (any string of 16+ characters), accepted in
    /// addition to the tokens in the cluster state: how the first tokens are created.
    pub bootstrap_token_file: PathBuf,
    /// File holding the secret cluster members present to each other on internal RPCs
    /// (the same on every node). Not needed when members authenticate with certificates.
    pub cluster_token_file: PathBuf,
    /// Client-certificate identities (mutual TLS) and their roles.
    pub identities: Vec<IdentitySection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            enabled: true,
            bootstrap_token_file: PathBuf::new(),
            cluster_token_file: PathBuf::new(),
            identities: Vec::new(),
        }
    }
}

/// `[[auth.identities]]`: a certificate identity and its role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Matched against the certificate's subject common name and its DNS and URI
    /// subject alternative names.
    pub name: String,
    /// `reader` | `writer` | `admin` | `node` (a cluster member).
    pub role: String,
    /// Views it may use; empty: every view.
    pub views: Vec<String>,
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
    /// On shutdown, how long the node keeps answering after turning readiness
    /// NOT_SERVING (and telling smart clients it is draining) before it stops accepting:
    /// load balancers and clients move away meanwhile.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Compress lookup responses with zstd for clients that accept it. Off by default:
    /// on a datacenter network, compressing 2-100 KB responses costs more CPU on both
    /// ends than the bytes it saves.
    pub compress_responses: bool,
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
    /// Re-reads of a gap in a partition's offsets before it is accepted (0: never re-read).
    pub gap_refetches: u32,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Shared block cache, MiB.
    pub block_cache_mib: usize,
    /// Shared row cache (whole values of point reads, so a hot key skips the SST file's
    /// filter, index and data block), MiB; 0 disables it.
    pub row_cache_mib: usize,
    /// quiver's lookup cache (the latest rows of hot keys of plain views, in front of
    /// RocksDB), MiB; 0 disables it.
    pub lookup_cache_mib: usize,
    /// Whether ingest caches the rows it writes in the lookup cache (by default it does;
    /// without, only rows lookups read from RocksDB are cached).
    pub lookup_cache_fill_on_ingest: bool,
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
    /// Most rows per `Push` request.
    pub max_push_rows: usize,
    /// Longest entity key, bytes (lookups and pushes).
    pub max_key_bytes: usize,
    /// Longest string or bytes feature value in a push, bytes.
    pub max_string_bytes: usize,
    /// Most elements of a vector feature value in a push.
    pub max_vector_len: usize,
    /// RPCs in flight on one connection; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_requests_per_connection: usize,
    /// RPCs in flight on the node; more are refused with RESOURCE_EXHAUSTED.
    pub max_inflight_requests: usize,
    /// Lookups waiting for one of `max_concurrent_lookups`; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub max_queued_lookups: usize,
    /// Pushed rows per second per principal (token, certificate identity), counted after
    /// the grant check; 0: no limit.
    pub max_push_rows_per_second: u32,
    /// Replaced by `max_push_rows_per_second` (the quota counts rows, not requests); set,
    /// it is refused with that message rather than silently reinterpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pushes_per_second: Option<u32>,
}

/// `[registry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Definition files applied at start, in order.
    pub definition_files: Vec<PathBuf>,
    /// How long a view version that no longer serves (replaced, rolled back from, or its
    /// view deleted) is kept, its rows current, for a rollback or pinned reads; then every
    /// replica deletes its rows. In cluster mode the leader's setting decides.
    #[serde(with = "humantime_serde")]
    pub version_retention: Duration,
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            definition_files: Vec::new(),
            version_retention: Duration::from_secs(7 * 86_400),
        }
    }
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
            tls: TlsSection::default(),
            auth: AuthSection::default(),
            quotas: Default::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            grpc_addr: "127.0.0.1:7070".into(),
            metrics_addr: "127.0.0.1:9464".into(),
            shutdown_grace: Duration::from_secs(10),
            shutdown_delay: Duration::from_secs(2),
            compress_responses: false,
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
            gap_refetches: 10,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            block_cache_mib: 512,
            row_cache_mib: 128,
            lookup_cache_mib: 256,
            lookup_cache_fill_on_ingest: true,
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
            max_push_rows: 1000,
            max_key_bytes: 1024,
            max_string_bytes: 64 << 10,
            max_vector_len: 4096,
            max_concurrent_requests_per_connection: 1024,
            max_inflight_requests: 4096,
            max_queued_lookups: 1024,
            max_push_rows_per_second: 100_000,
            max_pushes_per_second: None,
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

mod validate;
pub use validate::{Limits, NodeConfig};

#[cfg(test)]
mod tests;
