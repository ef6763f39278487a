//! The log start check. A partition's log start offset moves up when the topic's retention
//! deletes old records; a stream that would start below it cannot get the records in
//! between. Consuming anyway (librdkafka resets to the earliest record left, and the first
//! record after an assignment from the beginning is taken as it comes) builds a replica
//! that silently lacks rows its peers have, and a version that lacks rows the one it
//! replaces has. Such a stream is held back instead — not assigned, so the replica stays
//! Bootstrapping (or the pending version is never promoted) — and the reason is shown in
//! `GetStatus`, the `quiver_ingest_streams_blocked` gauge and its alert.

/// Why a stream cannot be built from the log, or `None` if it can.
///
/// - `next`: the stream's resume position; `log_start`: the partition's first offset.
/// - `topic_stream`: the serving views' stream (else a pending or retained version's).
/// - `full_log_required`: this shard served before (cluster mode), so a replica starting
///   empty must have what the others had — not just what the log still holds.
///
/// A version stream always needs every record from its position on (a pending version is
/// built from the topic's start; a retained one from where it retired). The topic stream
/// of a replica that has consumed before needs every record after its position; one that
/// starts empty may take what the log holds only for the shard's first build.
pub(super) fn blocked_reason(
    stream: &str,
    topic_stream: bool,
    next: i64,
    log_start: i64,
    full_log_required: bool,
) -> Option<String> {
    if next >= log_start {
        return None;
    }
    let needs_all = !topic_stream || next > 0 || full_log_required;
    if !needs_all {
        return None;
    }
    let what = if topic_stream {
        if next > 0 {
            "this replica resumes"
        } else {
            "this replica starts empty (the shard served before)"
        }
    } else {
        "this view version is built"
    };
    Some(format!(
        "stream {stream:?}: {what} at offset {next}, but the partition now starts at {log_start}: records {next}..{log_start} were deleted by the topic's retention, so the replica cannot rebuild them from the log (a checkpoint of a serving replica is needed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::blocked_reason;

    #[test]
    fn only_streams_that_need_deleted_records_are_held() {
        // The log still holds everything needed.
        assert_eq!(blocked_reason("t", true, 0, 0, true), None);
        assert_eq!(blocked_reason("t", true, 500, 400, true), None);
        assert_eq!(blocked_reason("t#v@2", false, 400, 400, false), None);
        // A shard's first build takes what the log holds.
        assert_eq!(blocked_reason("t", true, 0, 400, false), None);
        // A replica resuming below the log start lost records.
        let r = blocked_reason("t", true, 100, 400, false).unwrap();
        assert!(
            r.contains("resumes at offset 100") && r.contains("records 100..400"),
            "{r}"
        );
        // A new replica of a shard that served before.
        let r = blocked_reason("t", true, 0, 400, true).unwrap();
        assert!(r.contains("starts empty (the shard served before)"), "{r}");
        // A pending version built from the topic's start.
        let r = blocked_reason("t#v@2", false, 0, 400, false).unwrap();
        assert!(r.contains("view version is built at offset 0"), "{r}");
    }
}
