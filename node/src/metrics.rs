//! Every metric the node exports, in one place. Names follow
//! `quiver_<subsystem>_<name>_<unit>`; labels are bounded (`shard`, `rpc`, `code`,
//! `reason`, `result`), never entity keys.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by `rpc` and result `code`.
pub const SERVE_REQUESTS: &str = "quiver_serve_requests_total";
/// Request latency by `rpc` (server side, decode to encode).
pub const SERVE_REQUEST_DURATION: &str = "quiver_serve_request_duration_seconds";
/// Entity keys looked up.
pub const SERVE_KEYS: &str = "quiver_serve_keys_total";
/// Counter: rows written through `Push`, by view.
pub const PUSH_ROWS: &str = "quiver_push_rows_total";
/// Records consumed by `shard`.
pub const INGEST_RECORDS: &str = "quiver_ingest_records_total";
/// Records that changed a row, by `shard`.
pub const INGEST_APPLIED: &str = "quiver_ingest_applied_records_total";
/// Records older than the stored row, by `shard`.
pub const INGEST_SUPERSEDED: &str = "quiver_ingest_superseded_records_total";
/// Malformed records by `shard` and `reason`.
pub const INGEST_MALFORMED: &str = "quiver_ingest_malformed_records_total";
/// Dead-letter copies by `result` (queued, failed).
pub const INGEST_DEAD_LETTERS: &str = "quiver_ingest_dead_letters_total";
/// Kafka consumer errors by `shard`.
pub const INGEST_CONSUMER_ERRORS: &str = "quiver_ingest_consumer_errors_total";
/// Records skipped over by the consumer (an offset above the next expected one), by
/// `shard`: normal on compacted or transactional topics, a lost-record alarm otherwise.
pub const INGEST_OFFSET_GAPS: &str = "quiver_ingest_offset_gap_records_total";
/// Failed batch writes (retried) by `shard`.
pub const INGEST_APPLY_ERRORS: &str = "quiver_ingest_apply_errors_total";
/// Records behind the broker's high watermark, by `shard`.
pub const INGEST_LAG_RECORDS: &str = "quiver_ingest_lag_records";
/// Time to decode-and-write one batch.
pub const INGEST_BATCH_DURATION: &str = "quiver_ingest_batch_duration_seconds";
/// Block-cache hits summed over shards.
pub const STORAGE_BLOCK_CACHE_HITS: &str = "quiver_storage_block_cache_hits_total";
/// Block-cache misses summed over shards.
pub const STORAGE_BLOCK_CACHE_MISSES: &str = "quiver_storage_block_cache_misses_total";
/// Bytes in the shared block cache.
pub const STORAGE_BLOCK_CACHE_USAGE: &str = "quiver_storage_block_cache_usage_bytes";
/// Estimated rows by `shard`.
pub const STORAGE_ROWS: &str = "quiver_storage_rows_estimate";

/// Current Raft term of the control-plane group.
pub const CONTROL_RAFT_TERM: &str = "quiver_control_raft_term";
/// 1 while this node leads the control plane.
pub const CONTROL_IS_LEADER: &str = "quiver_control_is_leader";
/// Last log index applied to the control-plane state machine.
pub const CONTROL_APPLIED_INDEX: &str = "quiver_control_applied_index";
/// Leader changes observed by this node.
pub const CONTROL_LEADER_CHANGES: &str = "quiver_control_leader_changes_total";
/// Cluster-map epoch applied on this node.
pub const CONTROL_EPOCH: &str = "quiver_control_shard_epoch";

/// Registers descriptions with the installed recorder; call once at start-up.
pub fn describe() {
    describe_counter!(SERVE_REQUESTS, "gRPC requests by rpc and result code");
    describe_histogram!(
        SERVE_REQUEST_DURATION,
        Unit::Seconds,
        "server-side request latency by rpc"
    );
    describe_counter!(SERVE_KEYS, "entity keys looked up");
    describe_counter!(PUSH_ROWS, "rows produced through Push, by view");
    describe_counter!(INGEST_RECORDS, "records consumed from Kafka by shard");
    describe_counter!(INGEST_APPLIED, "records that changed a row by shard");
    describe_counter!(
        INGEST_SUPERSEDED,
        "records ignored as older than the stored row by shard"
    );
    describe_counter!(
        INGEST_MALFORMED,
        "malformed records skipped by shard and reason"
    );
    describe_counter!(
        INGEST_DEAD_LETTERS,
        "malformed records copied to the dead-letter topic by result"
    );
    describe_counter!(INGEST_CONSUMER_ERRORS, "kafka consumer errors by shard");
    describe_counter!(
        INGEST_OFFSET_GAPS,
        "offsets skipped between consecutive consumed records by shard"
    );
    describe_counter!(
        INGEST_APPLY_ERRORS,
        "failed (retried) ingest batch writes by shard"
    );
    describe_gauge!(
        INGEST_LAG_RECORDS,
        Unit::Count,
        "records behind the broker high watermark by shard"
    );
    describe_histogram!(
        INGEST_BATCH_DURATION,
        Unit::Seconds,
        "time to write one ingest batch"
    );
    describe_counter!(
        STORAGE_BLOCK_CACHE_HITS,
        "RocksDB block cache hits over all shards"
    );
    describe_counter!(
        STORAGE_BLOCK_CACHE_MISSES,
        "RocksDB block cache misses over all shards"
    );
    describe_gauge!(
        STORAGE_BLOCK_CACHE_USAGE,
        Unit::Bytes,
        "bytes held by the shared block cache"
    );
    describe_gauge!(STORAGE_ROWS, Unit::Count, "estimated stored rows by shard");
    describe_gauge!(
        CONTROL_RAFT_TERM,
        Unit::Count,
        "current raft term of the control plane"
    );
    describe_gauge!(
        CONTROL_IS_LEADER,
        Unit::Count,
        "1 while this node leads the control plane"
    );
    describe_gauge!(
        CONTROL_APPLIED_INDEX,
        Unit::Count,
        "last applied control-plane log index"
    );
    describe_counter!(
        CONTROL_LEADER_CHANGES,
        "control-plane leader changes seen by this node"
    );
    describe_gauge!(
        CONTROL_EPOCH,
        Unit::Count,
        "cluster-map epoch applied on this node"
    );
}
