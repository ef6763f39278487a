//! What the workload did and saw: every write it attempted (and whether it was
//! acknowledged), every lookup answer, and the final per-replica reads. The checker judges
//! this record; nothing in it is derived from the cluster's own view of itself.
//!
//! Times are microseconds since the run started.

use serde::Serialize;

/// How a write reached Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Produced straight to the source topic (the producer's key → partition).
    Kafka,
    /// Through a node's `FeatureService.Push`.
    Push,
}

/// One attempted write of key `key` with value `seq` (globally unique; the event time is
/// `event_time_base + seq`, so the latest by event time is the highest `seq`).
#[derive(Debug, Clone, Serialize)]
pub struct Write {
    /// Key number (the entity key is `user-<key>`).
    pub key: u32,
    /// The written value.
    pub seq: i64,
    /// The path it took.
    pub via: Via,
    /// When it was sent.
    pub sent_us: u64,
    /// The acknowledgement: shard and the next offset after the record, or `None` when
    /// the write failed or timed out (it may still have been written).
    pub acked: Option<Ack>,
    /// Why it was not acknowledged, when the writer got an error (short form).
    pub error: Option<String>,
}

/// An acknowledged write's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// Shard (= partition).
    pub shard: u32,
    /// Offset after the record.
    pub next_offset: i64,
}

/// A value as read: the row of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// `seq` feature.
    pub seq: i64,
    /// Event time the node reported for it.
    pub event_time_us: i64,
    /// Whether the row's `check` feature matched its key and `seq` (a torn or misrouted
    /// row does not).
    pub check_ok: bool,
}

/// One lookup by one reader.
#[derive(Debug, Clone, Serialize)]
pub struct Read {
    /// Reader (session) number; a reader issues each lookup when it is due (open loop),
    /// so its lookups may overlap.
    pub reader: u32,
    /// When the lookup was due (latency counts from here: no coordinated omission).
    pub intended_us: u64,
    /// From `intended_us` to the answer.
    pub latency_us: u64,
    /// `None` on success, else the error's kind.
    pub error: Option<String>,
    /// Per key looked up: its value, `None` when the key has no row.
    pub rows: Vec<(u32, Option<Seen>)>,
    /// Per shard of the answer: the answering replica's watermark (next offset).
    pub watermarks: Vec<(u32, i64)>,
    /// The version of each view the answer was read at (one view: the workload's).
    #[serde(default)]
    pub versions: Vec<u32>,
}

/// The final read of one key from one replica, after the cluster healed.
#[derive(Debug, Clone, Serialize)]
pub struct FinalRead {
    /// Node that answered.
    pub node: u64,
    /// Shard of the key.
    pub shard: u32,
    /// Key number.
    pub key: u32,
    /// What the replica holds.
    pub value: Option<Seen>,
}

/// Everything one run recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// Event time of `seq = 0`.
    pub event_time_base_us: i64,
    /// Attempted writes.
    pub writes: Vec<Write>,
    /// Lookups, per reader in issue order.
    pub reads: Vec<Read>,
    /// Per key and replica, after healing.
    pub final_reads: Vec<FinalRead>,
    /// The workload view's serving version over time, as the nemesis saw it change
    /// (µs since the start, version); version 1 serves from the start.
    #[serde(default)]
    pub swaps: Vec<(u64, u32)>,
    /// The reader sessions' smart-client counters, summed (how lookups were routed).
    pub readers: ReaderTotals,
}

/// The smart-client counters of every reader session, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReaderTotals {
    /// Sub-requests sent to nodes.
    pub sub_requests: u64,
    /// Sub-requests re-sent after an error.
    pub retries: u64,
    /// BEHIND answers.
    pub behind: u64,
    /// Wrong-shard answers.
    pub wrong_shard: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Hedges that answered first.
    pub hedge_wins: u64,
    /// Retries or hedges the budget refused.
    pub budget_denied: u64,
    /// Cluster-map refreshes.
    pub map_refreshes: u64,
    /// Keys served from the client-side row cache (`--client-cache`).
    pub cache_hits: u64,
    /// Keys the cache could not serve.
    pub cache_misses: u64,
}

impl ReaderTotals {
    /// Adds one client's counters.
    pub fn add(&mut self, s: &quiver_client::ClientStats) {
        self.sub_requests += s.sub_requests;
        self.retries += s.retries;
        self.behind += s.behind;
        self.wrong_shard += s.wrong_shard;
        self.hedges += s.hedges;
        self.hedge_wins += s.hedge_wins;
        self.budget_denied += s.budget_denied;
        self.map_refreshes += s.map_refreshes;
        self.cache_hits += s.cache_hits;
        self.cache_misses += s.cache_misses;
    }
}
