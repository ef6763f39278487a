//! Ingest: each shard replica consumes partition *s* of every source topic straight into
//! its RocksDB database.
//!
//! One consumer per shard replica, with manual assignment (no consumer group) starting at
//! the offsets stored in the shard's database. Each poll cycle gathers up to
//! `max_batch_records` records, decodes them per view ([`decode`]), and applies rows and
//! offsets in one atomic write ([`crate::storage::ShardStore::apply`]). A malformed record
//! is counted, logged with its coordinates, optionally copied to a dead-letter topic and
//! skipped; it never stops the replica.
//!
//! librdkafka's poll is blocking, so each loop runs on its own named OS thread, not on the
//! async runtime; it checks the cancellation token between polls (at most
//! `poll_timeout` apart) and exits after finishing the batch in hand.

mod batch;
pub mod decode;
pub mod encode;
mod gap;
mod handle;
mod log_start;
mod shard_ingest;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

pub use handle::{IngestHandle, spawn_shard_ingest};
pub use shard_ingest::pending_stream_key;
pub use status::{IngestStatus, TopicIngestStatus};

/// Settings of the ingest loops.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties for consumers and the dead-letter producer
    /// (security settings, fetch sizes, ...).
    pub kafka_properties: BTreeMap<String, String>,
    /// Most records applied in one write batch.
    pub max_batch_records: usize,
    /// Longest wait for records in one poll; also bounds shutdown latency.
    pub poll_timeout: Duration,
    /// How often the broker's high watermark is fetched for the lag metric.
    pub lag_refresh_interval: Duration,
    /// How many times a gap in a partition's offsets is re-read before it is accepted as
    /// genuine (compaction, transaction markers); 0 accepts gaps at once.
    pub gap_refetches: u32,
    /// Topic that malformed records are copied to, if any.
    pub dead_letter_topic: Option<String>,
    /// Used in the (otherwise unused) consumer `group.id`, which librdkafka requires.
    pub node_id: u64,
    /// Per replica, set by the replica manager: the shard served before (cluster mode), so
    /// an empty replica must not be built from a log whose start the retention moved
    /// (see `log_start.rs`).
    pub full_log_required: bool,
}

/// Errors that stop an ingest loop from starting.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// librdkafka refused the configuration.
    #[error("kafka client for shard {shard}: {source}")]
    Kafka {
        /// Shard involved.
        shard: u32,
        /// Cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The ingest thread could not be spawned.
    #[error("spawning ingest thread: {0}")]
    Spawn(#[source] std::io::Error),
}
