//! `Push`: validate rows against a view, produce them into the partitions of their keys'
//! shards, and answer with the produced offsets as watermarks (read-your-writes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::counter;
use prost::Message as _;
use quiver_proto::v1::{PushRequest, PushResponse, ShardWatermark, TopicOffset};

use super::ServeError;
use crate::ingest::encode::encode_push_row;
use crate::metrics as m;
use crate::produce::ProduceError;
use crate::security::Principal;
use crate::state::NodeState;

/// Handles one push. Validation is all-or-nothing: on any bad row nothing is produced.
///
/// # Errors
/// `InvalidArgument` (bad rows, limits), `NotFound` (unknown view), `ResourceExhausted`
/// (producer queue full), `Unavailable` (Kafka did not acknowledge).
pub async fn push(
    state: &NodeState,
    principal: &Principal,
    req: PushRequest,
) -> Result<PushResponse, ServeError> {
    let limits = &state.limits;
    let size = req.encoded_len();
    if size > limits.max_request_bytes {
        return Err(ServeError::InvalidArgument(format!(
            "push of {size} bytes exceeds the limit max_request_bytes = {}",
            limits.max_request_bytes
        )));
    }
    if req.rows.is_empty() {
        return Err(ServeError::InvalidArgument("push has no rows".into()));
    }
    if req.rows.len() > limits.max_push_rows {
        return Err(ServeError::InvalidArgument(format!(
            "push of {} rows exceeds the limit max_push_rows = {}",
            req.rows.len(),
            limits.max_push_rows
        )));
    }
    super::validate::check_push_rows(&req.rows, limits)?;
    let registry = state.registry.snapshot();
    principal
        .check_views([req.view.as_str()])
        .map_err(ServeError::PermissionDenied)?;
    let view = registry
        .views
        .get(&req.view)
        .ok_or_else(|| ServeError::NotFound(format!("view {:?} is not registered", req.view)))?;
    let key_type = registry
        .entities
        .get(&view.entity)
        .map(|e| e.key_type)
        .ok_or_else(|| {
            ServeError::NotFound(format!("entity {:?} is not registered", view.entity))
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64;
    let records = req
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| encode_push_row(view.record_view(), key_type, i, row, now))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ServeError::InvalidArgument)?;
    // Quota last: only a well-formed push the principal is granted spends it, by rows.
    spend_push_quota(state, principal, records.len())?;
    let partitions: Vec<i32> = records
        .iter()
        .map(|r| state.partitioner.shard_for_key(&r.key, state.shard_count).0 as i32)
        .collect();
    let producer = state
        .producer
        .as_ref()
        .ok_or_else(|| ServeError::Unavailable("this node has no push producer".into()))?;
    let topic = &view.source.topic;
    let last = producer
        .produce(topic, &records, &partitions)
        .await
        .map_err(|e| match e {
            ProduceError::QueueFull => ServeError::ResourceExhausted(e.to_string()),
            ProduceError::Delivery { .. } => ServeError::Unavailable(e.to_string()),
        })?;
    counter!(m::PUSH_ROWS, "view" => view.name.clone()).increment(records.len() as u64);
    Ok(PushResponse {
        watermarks: last
            .into_iter()
            .map(|(partition, offset)| ShardWatermark {
                shard: partition as u32,
                offsets: vec![TopicOffset {
                    topic: topic.clone(),
                    next_offset: offset + 1,
                }],
            })
            .collect(),
        rows_written: records.len() as u32,
    })
}

/// Takes `rows` from `principal`'s push quota (`limits.max_push_rows_per_second`).
fn spend_push_quota(
    state: &NodeState,
    principal: &Principal,
    rows: usize,
) -> Result<(), ServeError> {
    let quota = &state.push_quota;
    let n = u32::try_from(rows).unwrap_or(u32::MAX);
    let Err(wait) = quota.try_acquire_n(&principal.quota_key(), n, std::time::Instant::now())
    else {
        return Ok(());
    };
    counter!(m::ADMISSION_SHED, "reason" => "push_rate").increment(1);
    Err(ServeError::QuotaExhausted {
        message: format!(
            "push quota: {principal} may push {} rows per second (limits.max_push_rows_per_second); {rows} rows fit in {} ms, retry then",
            quota.per_second(),
            wait.as_millis().max(1)
        ),
        retry_after: wait,
    })
}
