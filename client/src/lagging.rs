//! Replicas that recently answered BEHIND for this client's session, remembered across
//! lookups.
//!
//! Within one lookup a BEHIND answer moves the shard to another replica. Without memory,
//! the next lookup picks the lagging replica again about half the time and waits the
//! node's whole `max_watermark_wait` before the same BEHIND: while a broker is stalled
//! (the replicas of a shard stop at different offsets), that was a p99 of seconds for
//! readers on a schedule (found by chaos `broker-pause`). So a replica that answered
//! BEHIND is ranked after the others for [`AVOID_FOR`], and until it serves this client
//! again every request to it asks for a short wait ([`PROBE_WAIT`]): checking whether it
//! caught up costs little, not the node's whole wait. A BEHIND answer to such a probe is a
//! routing correction (not charged to the retry budget).

use quiver_proto::NodeId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a replica that answered BEHIND is ranked after the other replicas.
pub(crate) const AVOID_FOR: Duration = Duration::from_secs(1);

/// The watermark wait asked of a replica that answered BEHIND and has not served since:
/// long enough for the ordinary skew between replicas of a shard (each polls the broker
/// on its own; nodes bound a fetch's wait to 20 ms), so a replica that caught up serves
/// the probe and leaves the list.
pub(crate) const PROBE_WAIT: Duration = Duration::from_millis(25);

/// Entries older than this are dropped when new ones arrive (the map stays small even
/// when nodes leave without serving again).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// (node, shard) → when it last answered BEHIND.
#[derive(Debug, Default)]
pub(crate) struct LaggingReplicas {
    noted: Mutex<HashMap<(NodeId, u32), Instant>>,
}

impl LaggingReplicas {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(NodeId, u32), Instant>> {
        self.noted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node` answered BEHIND for `shard`.
    pub(crate) fn note(&self, node: NodeId, shard: u32) {
        self.note_at(node, shard, Instant::now());
    }

    fn note_at(&self, node: NodeId, shard: u32, now: Instant) {
        let mut m = self.lock();
        m.retain(|_, t| now.saturating_duration_since(*t) < FORGET_AFTER);
        m.insert((node, shard), now);
    }

    /// `node` served `shards` at the session's watermarks: it is no longer lagging.
    pub(crate) fn served(&self, node: NodeId, shards: &[u32]) {
        let mut m = self.lock();
        if m.is_empty() {
            return;
        }
        for s in shards {
            m.remove(&(node, *s));
        }
    }

    /// Whether `node` should be ranked after the other replicas of `shard` now.
    pub(crate) fn avoid(&self, node: NodeId, shard: u32, now: Instant) -> bool {
        self.lock()
            .get(&(node, shard))
            .is_some_and(|t| now.saturating_duration_since(*t) < AVOID_FOR)
    }

    /// The watermark wait to ask of `node` for `shards`: [`PROBE_WAIT`] if it answered
    /// BEHIND for one of them and has not served it since, else `None` (the node's own).
    pub(crate) fn wait_for(&self, node: NodeId, shards: &[u32]) -> Option<Duration> {
        let m = self.lock();
        shards
            .iter()
            .any(|s| m.contains_key(&(node, *s)))
            .then_some(PROBE_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::NodeId;

    #[test]
    fn a_lagging_replica_is_avoided_for_a_while_and_probed_until_it_serves() {
        let l = LaggingReplicas::default();
        let t0 = Instant::now();
        assert!(!l.avoid(NodeId(1), 0, t0));
        assert_eq!(l.wait_for(NodeId(1), &[0, 1]), None);

        l.note_at(NodeId(1), 0, t0);
        assert!(l.avoid(NodeId(1), 0, t0 + Duration::from_millis(10)));
        assert!(
            !l.avoid(NodeId(1), 1, t0),
            "other shards of the node are unaffected"
        );
        assert!(
            !l.avoid(NodeId(2), 0, t0),
            "other replicas of the shard are unaffected"
        );
        // After AVOID_FOR it competes again, but with a short wait.
        assert!(!l.avoid(NodeId(1), 0, t0 + AVOID_FOR));
        assert_eq!(l.wait_for(NodeId(1), &[1, 0]), Some(PROBE_WAIT));
        assert_eq!(l.wait_for(NodeId(1), &[1]), None);

        l.served(NodeId(1), &[0]);
        assert!(!l.avoid(NodeId(1), 0, t0));
        assert_eq!(l.wait_for(NodeId(1), &[0]), None);
    }

    #[test]
    fn old_entries_are_forgotten() {
        let l = LaggingReplicas::default();
        let t0 = Instant::now();
        l.note_at(NodeId(1), 0, t0);
        l.note_at(NodeId(2), 0, t0 + FORGET_AFTER);
        assert_eq!(l.wait_for(NodeId(1), &[0]), None);
        assert_eq!(l.wait_for(NodeId(2), &[0]), Some(PROBE_WAIT));
    }
}
