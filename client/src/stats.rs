//! In-process counters of the same events as [`crate::metrics`], readable without a
//! metrics exporter: tests and tools use them to see retries and hedges.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    pub(crate) sub_requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    pub(crate) budget_denied: AtomicU64,
    pub(crate) wrong_shard: AtomicU64,
    pub(crate) behind: AtomicU64,
    pub(crate) map_refreshes: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) cache_coalesced: AtomicU64,
    pub(crate) version_retries: AtomicU64,
    pub(crate) merged_lookups: AtomicU64,
}

/// A snapshot of a client's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls (lookups and pushes).
    pub requests: u64,
    /// Calls that returned an error.
    pub failed_requests: u64,
    /// Sub-requests sent to nodes, all kinds.
    pub sub_requests: u64,
    /// Sub-requests re-sent to another replica after an error.
    pub retries: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Hedges that answered first.
    pub hedge_wins: u64,
    /// Retries or hedges the budget refused.
    pub budget_denied: u64,
    /// Wrong-shard answers (routing with a stale map).
    pub wrong_shard: u64,
    /// BEHIND answers (a replica had not reached the session's watermark in time).
    pub behind: u64,
    /// Cluster-map refreshes.
    pub map_refreshes: u64,
    /// Keys served from the client-side cache.
    pub cache_hits: u64,
    /// Keys the cache could not serve (absent, expired, of an older version, or read
    /// below the lookup's watermark floor).
    pub cache_misses: u64,
    /// Missed keys that joined another lookup's fetch (single flight).
    pub cache_coalesced: u64,
    /// Parts of a lookup read again because another part was read at a newer view version.
    pub version_retries: u64,
    /// Lookups whose rows were merged into request order from the nodes' answers: a
    /// lookup fanned out over several nodes, or one asking for a key twice. A lookup one
    /// node answers in full, of distinct keys, is taken as that node sent it.
    pub merged_lookups: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> ClientStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            requests: g(&self.requests),
            failed_requests: g(&self.failed_requests),
            sub_requests: g(&self.sub_requests),
            retries: g(&self.retries),
            hedges: g(&self.hedges),
            hedge_wins: g(&self.hedge_wins),
            budget_denied: g(&self.budget_denied),
            wrong_shard: g(&self.wrong_shard),
            behind: g(&self.behind),
            map_refreshes: g(&self.map_refreshes),
            cache_hits: g(&self.cache_hits),
            cache_misses: g(&self.cache_misses),
            cache_coalesced: g(&self.cache_coalesced),
            version_retries: g(&self.version_retries),
            merged_lookups: g(&self.merged_lookups),
        }
    }
}
