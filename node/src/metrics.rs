//! Every metric the node exports, in one place. Names follow
//! `quiver_<subsystem>_<name>_<unit>`; labels are bounded (`shard`, `rpc`, `code`,
//! `reason`, `result`), never entity keys.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by `rpc` and result `code`.
pub const SERVE_REQUESTS: &str = "quiver_serve_requests_total";
/// Request latency by `rpc` (server side, decode to encode).
pub const SERVE_REQUEST_DURATION: &str = "quiver_serve_request_duration_seconds";
/// Counter: calls refused by the security guard, by `reason` (unauthenticated,
/// permission_denied, state_not_current).
pub const AUTH_DENIED: &str = "quiver_auth_denied_total";
/// Counter: token ids a node did not have, judged again after catching up with the
/// leader (a token created a moment ago through another member), by `outcome` (known,
/// unknown, failed).
pub const AUTH_TOKEN_CATCH_UPS: &str = "quiver_auth_token_catch_ups_total";
/// Counter: requests shed by admission control, by `reason`.
pub const ADMISSION_SHED: &str = "quiver_admission_shed_total";
/// Gauge: RPCs in flight on the node.
pub const INFLIGHT_REQUESTS: &str = "quiver_inflight_requests";
/// Counter: TLS certificate reloads by `outcome` (ok, error).
pub const TLS_RELOADS: &str = "quiver_tls_reloads_total";
/// Counter: failed TLS handshakes by `reason` (handshake, timeout, too_many).
pub const TLS_HANDSHAKE_FAILURES: &str = "quiver_tls_handshake_failures_total";
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
/// Counter: aggregation events dropped, by `shard`, `view` and `reason` (`late`: more
/// than `allowed_lateness` behind the event-time watermark; `future`: stamped more than
/// `max_future` after its Kafka timestamp).
pub const INGEST_LATE_EVENTS: &str = "quiver_ingest_late_events_total";
/// Counter: aggregation tiles updated by ingest, by `shard`.
pub const AGG_TILES_WRITTEN: &str = "quiver_aggregation_tiles_written_total";
/// Counter: day summary states rolled up from finer aggregation tiles (each time an
/// entity's older tiles are rewritten), by `shard`.
pub const AGG_ROLLUPS: &str = "quiver_aggregation_rollups_total";
/// Gauge: offset streams held back because the partition's log no longer starts low
/// enough for them (the topic's retention deleted records they need), by `shard`.
pub const INGEST_STREAMS_BLOCKED: &str = "quiver_ingest_streams_blocked";
/// Counter: new replicas bootstrapped, by `source` (`checkpoint`: copied from a Serving
/// peer; `log`: replayed from the partitions).
pub const REPLICA_BOOTSTRAPS: &str = "quiver_replica_bootstraps_total";
/// Counter: checkpoint copies from a peer that failed (retried with the next peer, or
/// later).
pub const REPLICA_BOOTSTRAP_FAILURES: &str = "quiver_replica_bootstrap_failures_total";
/// Counter: checkpoint bytes received from peers.
pub const REPLICA_CHECKPOINT_BYTES: &str = "quiver_replica_checkpoint_bytes_total";
/// Gauge: fraction of a checkpoint copied, by `shard` (1 once done).
pub const REPLICA_BOOTSTRAP_PROGRESS: &str = "quiver_replica_bootstrap_progress_ratio";
/// Counter: dropped view versions whose data a replica deleted, by `shard`.
pub const VERSIONS_DROPPED: &str = "quiver_view_versions_dropped_total";
/// Counter: row versions written to the history (views with `history`), by `shard`.
pub const HISTORY_WRITTEN: &str = "quiver_history_versions_written_total";
/// Counter: entity keys answered as of a past time (from the row history), by `rule`
/// (`event_time`, `arrived_by`).
pub const AS_OF_KEYS: &str = "quiver_serve_as_of_keys_total";
/// Counter: chunks of `ExportFeatures` streams answered, by `outcome` (`ok`, `error`).
pub const EXPORT_CHUNKS: &str = "quiver_export_chunks_total";
/// Counter: entity keys (label rows) of `ExportFeatures` chunks this node coordinated.
pub const EXPORT_ROWS: &str = "quiver_export_rows_total";
/// Counter: keys of export chunks this node asked of a peer replica.
pub const EXPORT_FORWARDED_KEYS: &str = "quiver_export_forwarded_keys_total";
/// Counter: parts of export chunks asked again (a replica failed, lagged or answered at
/// another view version).
pub const EXPORT_PART_RETRIES: &str = "quiver_export_part_retries_total";
/// Histogram: aggregation tiles merged per entity answered by a lookup.
pub const AGG_TILES_PER_READ: &str = "quiver_aggregation_tiles_per_read";
/// Malformed records by `shard` and `reason`.
pub const INGEST_MALFORMED: &str = "quiver_ingest_malformed_records_total";
/// Dead-letter copies by `result` (queued, failed).
pub const INGEST_DEAD_LETTERS: &str = "quiver_ingest_dead_letters_total";
/// Kafka consumer errors by `shard`.
pub const INGEST_CONSUMER_ERRORS: &str = "quiver_ingest_consumer_errors_total";
/// Records skipped over by the consumer (an offset above the next expected one), by
/// `shard`: normal on compacted or transactional topics, a lost-record alarm otherwise.
pub const INGEST_OFFSET_GAPS: &str = "quiver_ingest_offset_gap_records_total";
/// Re-reads of a gap in offsets (see `ingest.gap_refetches`), by `shard`.
pub const INGEST_GAP_REFETCHES: &str = "quiver_ingest_gap_refetches_total";
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
/// Row-cache hits summed over shards.
pub const STORAGE_ROW_CACHE_HITS: &str = "quiver_storage_row_cache_hits_total";
/// Row-cache misses summed over shards.
pub const STORAGE_ROW_CACHE_MISSES: &str = "quiver_storage_row_cache_misses_total";
/// Bytes in the shared row cache.
pub const STORAGE_ROW_CACHE_USAGE: &str = "quiver_storage_row_cache_usage_bytes";
/// Lookup-cache hits: rows of plain views answered from quiver's own cache.
pub const STORAGE_LOOKUP_CACHE_HITS: &str = "quiver_storage_lookup_cache_hits_total";
/// Lookup-cache misses: rows read from RocksDB (and then cached if found).
pub const STORAGE_LOOKUP_CACHE_MISSES: &str = "quiver_storage_lookup_cache_misses_total";
/// Lookup-cache entries evicted to make room.
pub const STORAGE_LOOKUP_CACHE_EVICTIONS: &str = "quiver_storage_lookup_cache_evictions_total";
/// Rows cached by warming replicas as they open.
pub const STORAGE_LOOKUP_CACHE_WARMED_ROWS: &str = "quiver_storage_lookup_cache_warmed_rows_total";
/// Bytes charged to the lookup cache's entries.
pub const STORAGE_LOOKUP_CACHE_USAGE: &str = "quiver_storage_lookup_cache_usage_bytes";
/// Gauge: bytes the compiled plans keep in column builders for reuse (bounded).
pub const SERVE_BUILDER_POOL_BYTES: &str = "quiver_serve_builder_pool_bytes";
/// Estimated rows by `shard`.
pub const STORAGE_ROWS: &str = "quiver_storage_rows_estimate";
/// Bytes in memtables, summed over shards.
pub const STORAGE_MEMTABLE_BYTES: &str = "quiver_storage_memtable_bytes";
/// Bytes of live SST files, summed over shards.
pub const STORAGE_SST_BYTES: &str = "quiver_storage_sst_bytes";
/// Bytes RocksDB estimates compaction still has to rewrite, summed over shards.
pub const STORAGE_PENDING_COMPACTION_BYTES: &str = "quiver_storage_pending_compaction_bytes";
/// Time writes were stalled by RocksDB (too many memtables or L0 files), summed over shards.
pub const STORAGE_STALL_SECONDS: &str = "quiver_storage_write_stall_seconds_total";

/// Seconds behind the broker, by `shard`: how old the last applied record is while records
/// wait (0 when caught up).
pub const INGEST_LAG_SECONDS: &str = "quiver_ingest_lag_seconds";
/// Event time of the newest row applied, by `view` and `shard`, as a Unix timestamp: the
/// view's freshness is `time() - max by (view) (...)`.
pub const VIEW_NEWEST_EVENT: &str = "quiver_view_newest_event_timestamp_seconds";
/// 1 for the state this node's replica of `shard` is in (`bootstrapping`, `serving`,
/// `draining`), 0 for the others.
pub const REPLICA_STATE: &str = "quiver_replica_state";
/// Long-lived node tasks that ended before shutdown (panicked or returned), by task.
pub const NODE_TASK_FAILURES: &str = "quiver_node_task_failures_total";
/// 1 while every long-lived node task runs.
pub const NODE_HEALTHY: &str = "quiver_node_healthy";
/// 1 while the node reports ready (every local replica caught up, a control-plane leader
/// known in cluster mode): the gRPC health service `quiver.v1.Readiness` says SERVING.
pub const NODE_READY: &str = "quiver_node_ready";
/// 1 from SIGTERM until the process exits: the node drains (readiness off, still
/// answering for `server.shutdown_delay`, then finishing in-flight requests).
pub const NODE_DRAINING: &str = "quiver_node_draining";

/// Lookups executed, by `where`: `inline` (on the async worker, every row in memory) or
/// `blocking_pool` (large, or some row needed disk I/O).
pub const SERVE_LOOKUP_EXECUTIONS: &str = "quiver_serve_lookup_executions_total";
/// Histogram: time a lookup spent waiting before or outside its own work, by `stage`:
/// `watermark` (a replica here catching up to the client's watermark token; recorded only
/// for lookups that carry one), `admission` (an execution slot, `serve/fair.rs`) and
/// `blocking_pool` (from the hand-off until a blocking-pool thread starts the lookup, for
/// lookups not run inline).
pub const SERVE_LOOKUP_WAIT: &str = "quiver_serve_lookup_wait_seconds";
/// Storage sampling passes completed (the storage gauges are refreshed once per pass):
/// a reader that needs figures from after some moment waits for this to move.
pub const STORAGE_SAMPLES: &str = "quiver_storage_samples_total";
/// CPU time used by the process (user + system).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Resident memory of the process.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

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
    // Counters of rare events exist from the start (at 0).
    metrics::counter!(CONTROL_LEADER_CHANGES).increment(0);
    // With or without a dead-letter topic configured: dashboards query the series.
    for result in ["queued", "failed"] {
        metrics::counter!(INGEST_DEAD_LETTERS, "result" => result).increment(0);
    }
    for reason in ["unauthenticated", "permission_denied", "state_not_current"] {
        metrics::counter!(AUTH_DENIED, "reason" => reason).increment(0);
    }
    for outcome in ["known", "unknown", "failed"] {
        metrics::counter!(AUTH_TOKEN_CATCH_UPS, "outcome" => outcome).increment(0);
    }
    for rule in ["event_time", "arrived_by"] {
        metrics::counter!(AS_OF_KEYS, "rule" => rule).increment(0);
    }
    for outcome in ["ok", "error"] {
        metrics::counter!(EXPORT_CHUNKS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(EXPORT_ROWS).increment(0);
    metrics::counter!(EXPORT_FORWARDED_KEYS).increment(0);
    metrics::counter!(EXPORT_PART_RETRIES).increment(0);
    describe_counter!(SERVE_REQUESTS, "gRPC requests by rpc and result code");
    describe_counter!(
        AUTH_DENIED,
        "Calls refused by authentication or authorisation, by reason"
    );
    describe_counter!(
        AUTH_TOKEN_CATCH_UPS,
        "Unknown token ids judged again after catching up with the control-plane leader, by outcome"
    );
    describe_counter!(
        ADMISSION_SHED,
        "Requests shed by admission control, by reason"
    );
    describe_gauge!(INFLIGHT_REQUESTS, "RPCs in flight on the node");
    describe_counter!(TLS_RELOADS, "TLS certificate reloads by outcome");
    describe_counter!(TLS_HANDSHAKE_FAILURES, "Failed TLS handshakes by reason");
    describe_gauge!(
        STORAGE_MEMTABLE_BYTES,
        Unit::Bytes,
        "bytes in memtables summed over shards"
    );
    describe_gauge!(
        STORAGE_SST_BYTES,
        Unit::Bytes,
        "bytes of live SST files summed over shards"
    );
    describe_gauge!(
        STORAGE_PENDING_COMPACTION_BYTES,
        Unit::Bytes,
        "bytes compaction still has to rewrite summed over shards"
    );
    describe_gauge!(
        INGEST_LAG_SECONDS,
        Unit::Seconds,
        "age of the last applied record while records wait, by shard"
    );
    describe_gauge!(
        VIEW_NEWEST_EVENT,
        Unit::Seconds,
        "event time of the newest applied row by view and shard (unix seconds)"
    );
    describe_gauge!(
        REPLICA_STATE,
        "1 for the state of this node's replica of a shard, by shard and state"
    );
    describe_gauge!(NODE_READY, "1 while the node reports ready");
    describe_gauge!(
        NODE_DRAINING,
        "1 while the node drains for shutdown (readiness off, still answering)"
    );
    describe_counter!(
        NODE_TASK_FAILURES,
        "Long-lived node tasks that ended before shutdown (panicked or returned)"
    );
    describe_gauge!(NODE_HEALTHY, "1 while every long-lived node task runs");
    describe_counter!(
        SERVE_LOOKUP_EXECUTIONS,
        "lookups executed inline (rows in memory) or on the blocking pool"
    );
    describe_histogram!(
        SERVE_LOOKUP_WAIT,
        Unit::Seconds,
        "lookup time spent waiting, by stage: watermark, admission, blocking_pool"
    );
    describe_counter!(
        STORAGE_SAMPLES,
        "storage sampling passes completed (storage gauges refresh once per pass)"
    );
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
        INGEST_LATE_EVENTS,
        "aggregation events dropped by shard, view and reason (late, future)"
    );
    describe_counter!(
        AGG_TILES_WRITTEN,
        "aggregation tiles updated by ingest, by shard"
    );
    describe_counter!(
        AGG_ROLLUPS,
        "day summary states rolled up from finer aggregation tiles, by shard"
    );
    describe_gauge!(
        INGEST_STREAMS_BLOCKED,
        "offset streams held back: the log no longer holds records they need, by shard"
    );
    describe_counter!(
        REPLICA_BOOTSTRAPS,
        "new replicas bootstrapped, by source (checkpoint, log)"
    );
    describe_counter!(
        REPLICA_BOOTSTRAP_FAILURES,
        "checkpoint copies from a peer that failed"
    );
    describe_counter!(
        REPLICA_CHECKPOINT_BYTES,
        "checkpoint bytes received from peers"
    );
    describe_gauge!(
        REPLICA_BOOTSTRAP_PROGRESS,
        "fraction of a checkpoint copied, by shard"
    );
    describe_counter!(
        VERSIONS_DROPPED,
        "dropped view versions whose data a replica deleted, by shard"
    );
    describe_counter!(
        HISTORY_WRITTEN,
        "row versions written to the history of views with history, by shard"
    );
    describe_counter!(
        EXPORT_CHUNKS,
        "chunks of ExportFeatures streams answered, by outcome (ok, error)"
    );
    describe_counter!(
        EXPORT_ROWS,
        "label rows (entity keys) of export chunks this node coordinated"
    );
    describe_counter!(
        EXPORT_FORWARDED_KEYS,
        "keys of export chunks this node asked of a peer replica"
    );
    describe_counter!(
        EXPORT_PART_RETRIES,
        "parts of export chunks asked again (a replica failed, lagged or answered at another version)"
    );
    describe_counter!(
        AS_OF_KEYS,
        "entity keys answered as of a past time, by rule (event_time, arrived_by)"
    );
    describe_histogram!(
        AGG_TILES_PER_READ,
        "aggregation tiles merged per entity answered"
    );
    describe_counter!(
        INGEST_DEAD_LETTERS,
        "malformed records copied to the dead-letter topic by result"
    );
    describe_counter!(INGEST_CONSUMER_ERRORS, "kafka consumer errors by shard");
    describe_counter!(
        INGEST_GAP_REFETCHES,
        "re-reads of a gap in a partition's offsets by shard"
    );
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
    describe_counter!(
        STORAGE_ROW_CACHE_HITS,
        "RocksDB row cache hits (point reads answered without the SST file) over all shards"
    );
    describe_counter!(
        STORAGE_ROW_CACHE_MISSES,
        "RocksDB row cache misses over all shards"
    );
    describe_gauge!(
        STORAGE_ROW_CACHE_USAGE,
        Unit::Bytes,
        "bytes held by the shared row cache"
    );
    describe_counter!(
        STORAGE_LOOKUP_CACHE_HITS,
        "rows of plain views answered from the node's lookup cache"
    );
    describe_counter!(
        STORAGE_LOOKUP_CACHE_MISSES,
        "rows of plain views not in the lookup cache (read from RocksDB)"
    );
    describe_counter!(
        STORAGE_LOOKUP_CACHE_EVICTIONS,
        "lookup cache entries evicted to make room"
    );
    describe_counter!(
        STORAGE_LOOKUP_CACHE_WARMED_ROWS,
        "rows cached by warming replicas as they open (their stored rows, until the cache is nine tenths full)"
    );
    describe_gauge!(
        STORAGE_LOOKUP_CACHE_USAGE,
        Unit::Bytes,
        "bytes charged to the lookup cache's entries"
    );
    describe_gauge!(
        SERVE_BUILDER_POOL_BYTES,
        Unit::Bytes,
        "bytes held by column builders kept for reuse by the compiled plans (at most 16 MiB)"
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

/// The write-stall total of the last storage sample, in µs (rendered as seconds).
static WRITE_STALL_MICROS: AtomicU64 = AtomicU64::new(0);

/// Records RocksDB's cumulative write-stall time summed over the shards, in µs.
pub fn record_write_stall_micros(total: u64) {
    WRITE_STALL_MICROS.store(total, Ordering::Relaxed);
}

/// Appends the metrics whose values are fractional counters to a Prometheus text
/// exposition (the `metrics` crate's counters are integers, which truncated them to whole
/// seconds): process CPU time and resident memory read from `/proc` now (Linux; absent
/// elsewhere), and the write-stall time. `node` is the exporter's global label.
pub fn render_process(out: &mut String, node_id: u64) {
    use std::fmt::Write as _;
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node_id}\"}} {value}\n\n"
        );
    };
    if let Some(cpu) = process_cpu_seconds() {
        family(
            PROCESS_CPU_SECONDS,
            "counter",
            "CPU time used by the process (user + system), in seconds",
            cpu,
        );
    }
    if let Some(rss) = process_resident_bytes() {
        family(
            PROCESS_RESIDENT_MEMORY,
            "gauge",
            "resident memory of the process, in bytes",
            rss as f64,
        );
    }
    family(
        STORAGE_STALL_SECONDS,
        "counter",
        "time writes were stalled by RocksDB, summed over shards, in seconds",
        WRITE_STALL_MICROS.load(Ordering::Relaxed) as f64 / 1e6,
    );
}

/// utime + stime of `/proc/self/stat`, in seconds.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture quiver builds for.
    Some(ticks / 100.0)
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_counters_render_with_their_fraction() {
        record_write_stall_micros(1_500_250);
        let mut out = String::new();
        render_process(&mut out, 7);
        assert!(
            out.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total{node=\"7\"} "
            ),
            "{out}"
        );
        assert!(
            out.contains("quiver_storage_write_stall_seconds_total{node=\"7\"} 1.50025\n"),
            "{out}"
        );
        let cpu: f64 = out
            .lines()
            .find(|l| l.starts_with("process_cpu_seconds_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(cpu > 0.0);
    }

    #[test]
    fn process_figures_are_read_from_proc() {
        // Burn a little CPU so the figure is positive even right after start.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        assert!(x > 0);
        let cpu = process_cpu_seconds().expect("/proc/self/stat parses");
        assert!(cpu > 0.0, "cpu {cpu}");
        let rss = process_resident_bytes().expect("/proc/self/status has VmRSS");
        assert!(rss > 1 << 20, "rss {rss}");
    }
}
