//! Rows to push, and the push call: validated against the cached schema, sent to any
//! node (which produces them into the partitions of their keys' shards) — healthy nodes
//! first, by the same circuit breakers as lookups — and retried on another node if that
//! one is down.

use quiver_proto::NodeId;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use quiver_proto::v1::{self, EntityKey, PushRequest, Value};

use crate::client::Inner;
use crate::error::ClientError;
use crate::retry::Recovery;
use crate::router::choose_any;
use crate::watermark::Watermarks;

/// One row to push: an entity key, an event time and feature values by name.
///
/// ```
/// use quiver_client::PushRow;
/// let row = PushRow::new("user-1")
///     .set("txn_count_1h", 3i64)
///     .set("embedding", vec![0.1f32, 0.2])
///     .event_time_micros(1_700_000_000_000_000);
/// let delete = PushRow::delete(42i64);
/// ```
#[derive(Debug, Clone)]
pub struct PushRow(v1::PushRow);

impl PushRow {
    /// A row for `key`, timed when the node receives it unless an event time is set.
    pub fn new(key: impl Into<EntityKey>) -> Self {
        PushRow(v1::PushRow {
            entity_key: Some(key.into()),
            ..Default::default()
        })
    }

    /// Deletes `key`'s row.
    pub fn delete(key: impl Into<EntityKey>) -> Self {
        let mut r = PushRow::new(key);
        r.0.delete = true;
        r
    }

    /// Sets feature `name` (features not set are null).
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.0.features.insert(name.into(), value.into());
        self
    }

    /// Event time in µs since the epoch (last-write-wins is by event time).
    pub fn event_time_micros(mut self, micros: i64) -> Self {
        self.0.event_time_micros = micros;
        self
    }

    /// Event time as a wall-clock time.
    pub fn event_time(self, t: SystemTime) -> Self {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.event_time_micros(micros)
    }

    /// The wire row.
    pub fn into_proto(self) -> v1::PushRow {
        self.0
    }
}

impl From<v1::PushRow> for PushRow {
    fn from(r: v1::PushRow) -> Self {
        PushRow(r)
    }
}

/// What a push to a view carries ([`crate::Client::push_schema`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSchema {
    /// The entity's key type: `string` or `int64`.
    pub key_type: String,
    /// Fields a row may set, with their type names (`int64`, `float64`, `string`, …).
    pub fields: Vec<(String, String)>,
    /// The most rows one push may carry.
    pub max_push_rows: u32,
}

/// Sends a validated push, failing over to other nodes until the deadline.
pub(crate) async fn push(
    inner: &Inner,
    view: &str,
    rows: Vec<v1::PushRow>,
) -> Result<Watermarks, ClientError> {
    let deadline = Instant::now() + inner.config.deadline;
    let request = PushRequest {
        view: view.to_owned(),
        rows,
    };
    let mut excluded: HashSet<NodeId> = HashSet::new();
    loop {
        let table = inner.map.current();
        let node = match choose_any(&table, &inner.pool, &excluded, &inner.rng)? {
            Some(node) => node,
            None if excluded.is_empty() => return Err(ClientError::NoReplica(0)),
            None => {
                // Every node failed once: give them another chance after a pause.
                excluded.clear();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let id = node.id;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ClientError::DeadlineExceeded {
                deadline: inner.config.deadline,
                last: None,
            });
        }
        let timeout = remaining.min(inner.config.attempt_timeout);
        let mut req = tonic::Request::new(request.clone());
        req.set_timeout(timeout);
        inner.stats.sub_requests.fetch_add(1, Ordering::Relaxed);
        let result = {
            let _in_flight = node.begin();
            tokio::time::timeout(timeout, node.features().push(req)).await
        };
        let err = match result {
            Ok(Ok(resp)) => {
                node.on_success(inner.config.breaker_cooldown);
                return Ok(Watermarks::from_wire(&resp.into_inner().watermarks));
            }
            Ok(Err(status)) => ClientError::Rpc(status),
            Err(_) => ClientError::DeadlineExceeded {
                deadline: inner.config.deadline,
                last: None,
            },
        };
        // A node that has not applied the view yet: another node takes the push.
        match Recovery::of_with_registry(&err, &inner.schema, &inner.map, |s| s.has_view(view))
            .await
        {
            Recovery::Fail => return Err(err),
            Recovery::NodeDown => {
                node.on_failure(inner.config.breaker_failures, inner.config.breaker_cooldown);
            }
            Recovery::OtherReplica | Recovery::RefreshMap(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(ClientError::DeadlineExceeded {
                deadline: inner.config.deadline,
                last: Some(Box::new(err)),
            });
        }
        if !inner.withdraw() {
            return Err(ClientError::BudgetExhausted(Box::new(err)));
        }
        inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        excluded.insert(id);
    }
}
