//! The observed ingest state of a shard replica (per source topic: the broker's high
//! watermark and whether the consumer reached the end), shared between its ingest loop,
//! the replica reports and readiness.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Observed ingest state of one topic's partition, for status and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicIngestStatus {
    /// Broker high watermark as last fetched; -1 if not known yet.
    pub high_watermark: i64,
    /// The consumer reached the end of the partition and has consumed nothing since.
    pub reached_end: bool,
}

/// Shared, observed ingest state of a shard.
#[derive(Debug, Default)]
pub struct IngestStatus {
    topics: Mutex<BTreeMap<String, TopicIngestStatus>>,
    /// Offset streams held back because the log no longer holds what they need, with why.
    blocked: Mutex<BTreeMap<String, String>>,
}

impl IngestStatus {
    /// A copy of the per-topic state.
    pub fn topics(&self) -> BTreeMap<String, TopicIngestStatus> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut BTreeMap<String, TopicIngestStatus>)) {
        f(&mut self.topics.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The streams held back (stream key → why), see `log_start.rs`.
    pub fn blocked(&self) -> BTreeMap<String, String> {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_blocked(&self, blocked: BTreeMap<String, String>) {
        *self.blocked.lock().unwrap_or_else(|p| p.into_inner()) = blocked;
    }
}
