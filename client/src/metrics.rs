//! Every metric the client records (through the `metrics` crate; the embedding service
//! installs the exporter). Labels are bounded: operation, outcome, reason, trigger.

/// Counter: client calls, by `op` (`lookup`, `push`) and `result` (`ok` or an error code).
pub const REQUESTS: &str = "quiver_client_requests_total";
/// Histogram: client call latency in seconds, by `op`.
pub const REQUEST_DURATION: &str = "quiver_client_request_duration_seconds";
/// Counter: sub-requests sent to nodes (first attempts, retries and hedges), by `result`.
pub const SUBREQUESTS: &str = "quiver_client_subrequests_total";
/// Counter: sub-requests retried on another replica, by `reason` (`behind`,
/// `unavailable`, `opening` (the node's replicas of those shards are still opening),
/// `node_down`, `wrong_shard`, `version` (answered at an older view version than the
/// lookup's other parts)).
pub const RETRIES: &str = "quiver_client_retries_total";
/// Counter: hedges sent.
pub const HEDGES: &str = "quiver_client_hedges_total";
/// Counter: hedges whose answer arrived first.
pub const HEDGE_WINS: &str = "quiver_client_hedge_wins_total";
/// Counter: retries or hedges refused by the retry budget.
pub const BUDGET_DENIED: &str = "quiver_client_budget_denied_total";
/// Counter: node circuit breakers opened.
pub const BREAKER_OPENED: &str = "quiver_client_breaker_opened_total";
/// Counter: cluster-map refreshes, by `trigger` (`wrong_shard`, `epoch` (a node
/// answered under a newer map), `no_replica`, `watch`, `timer`, `explicit`).
pub const MAP_REFRESHES: &str = "quiver_client_map_refreshes_total";
/// Counter: rows served from the client-side cache.
pub const CACHE_HITS: &str = "quiver_client_cache_hits_total";
/// Counter: cache probes that missed, by `reason` (`absent`, `expired`, `version` (an
/// older view version or column layout), `behind` (read below the lookup's watermark
/// floor)).
pub const CACHE_MISSES: &str = "quiver_client_cache_misses_total";
/// Counter: rows evicted to stay within the cache's bounds.
pub const CACHE_EVICTIONS: &str = "quiver_client_cache_evictions_total";
/// Counter: misses that joined another lookup's fetch of the same key (single flight).
pub const CACHE_COALESCED: &str = "quiver_client_cache_coalesced_total";
/// Gauge: rows in the cache.
pub const CACHE_ENTRIES: &str = "quiver_client_cache_entries";
/// Gauge: bytes in the cache (rows plus a fixed overhead per row).
pub const CACHE_BYTES: &str = "quiver_client_cache_bytes";
