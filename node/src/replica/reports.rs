//! What the replicas report: caught up or not, lag, freshness, pending views caught up —
//! for the control plane (heartbeats) and for readiness.

use std::sync::Arc;

use quiver_proto::v1::ReplicaReport;

use super::ShardManager;
use crate::ingest::{IngestStatus, pending_stream_key};
use crate::registry::FeatureView;
use crate::storage::ShardStore;

/// Whether the pending `view` has re-ingested its topic up to the serving stream on this
/// replica. From then on both streams advance in lockstep (one consumer, one batch), so a
/// promotion at any later batch boundary leaves no gap.
pub fn pending_caught_up(store: &ShardStore, status: &IngestStatus, view: &FeatureView) -> bool {
    let offsets = store.offsets();
    let topic = &view.source.topic;
    let key = pending_stream_key(topic, &view.name, view.version);
    let main = offsets.get(topic).map_or(0, |r| r.next_offset);
    let pending = offsets.get(&key).map_or(0, |r| r.next_offset);
    if main > 0 {
        pending >= main
    } else {
        // Nothing consumed yet: caught up once the partition is known to be empty.
        status.topics().get(topic).is_some_and(|t| t.reached_end)
    }
}

impl ShardManager {
    /// Per-replica reports for the control plane: caught up once every source topic's
    /// partition reached its end (or had nothing to consume).
    pub async fn reports(&self) -> Vec<ReplicaReport> {
        let replicas = self.replicas.lock().await;
        let snap = self.state.registry.snapshot();
        let topics = snap.topics();
        let pending: Vec<Arc<FeatureView>> = snap.pending.values().cloned().collect();
        replicas
            .iter()
            .map(|(id, r)| {
                let observed = r.ingest.status.topics();
                let offsets = r.store.offsets();
                let caught_up = topics.iter().all(|t| {
                    observed.get(t).is_some_and(|o| {
                        o.reached_end
                            || o.high_watermark == offsets.get(t).map_or(0, |x| x.next_offset)
                    })
                });
                let lag = topics
                    .iter()
                    .map(|t| {
                        let high = observed.get(t).map_or(-1, |o| o.high_watermark);
                        let next = offsets.get(t).map_or(0, |x| x.next_offset);
                        if high < 0 { 0 } else { (high - next).max(0) }
                    })
                    .sum();
                let caught_up_pending = pending
                    .iter()
                    .filter(|v| pending_caught_up(&r.store, &r.ingest.status, v))
                    .map(|v| format!("{}@{}", v.name, v.version))
                    .collect();
                ReplicaReport {
                    shard: id.0,
                    caught_up,
                    lag,
                    newest_event_time_micros: r.store.newest_event_time_micros(),
                    caught_up_pending,
                    // Set by the caller, which knows the state it reconciled to.
                    epoch: 0,
                }
            })
            .collect()
    }
}
