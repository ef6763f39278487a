//! Starting a new replica from a peer: a replica of a shard that served before, with no
//! directory yet, is not opened until a task has copied a Serving peer's checkpoint into
//! place (`checkpoint/`). The copy runs beside the reconcile loop — which keeps following
//! the cluster, the registry and the other replicas meanwhile — and is retried with a
//! growing pause (1 s doubling up to 5 s) until it succeeds, the log turns out to hold every record (then the
//! replica replays it), or the shard moves away (the copy is aborted; what was copied is
//! resumed if it comes back).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::ShardId;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::ShardManager;
use super::checkpoint::{Bootstrap, bootstrap_from_peer};
use crate::control::plane::ControlPlane;
use crate::state::NodeState;

impl ShardManager {
    /// Whether replica `id` waits for a checkpoint copy (started here if it needs one).
    pub(super) fn copying(&self, id: ShardId) -> bool {
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = copies.get(&id) {
            if !h.is_finished() {
                return true;
            }
            // Copied into place, or replaying was chosen: open it.
            copies.remove(&id);
            return false;
        }
        let Some(control) = self.state.control.clone() else {
            return false;
        };
        let dir = self.engine.shard_dir(id);
        if dir.exists() || !control.state().served_shards.contains(&id) {
            return false;
        }
        let task = copy_task(
            control,
            self.state.clone(),
            dir,
            id,
            self.cancel.child_token(),
        );
        copies.insert(id, tokio::spawn(task));
        true
    }

    /// Aborts the copies of shards no longer wanted here.
    pub(super) fn abort_copies(&self, desired: &std::collections::BTreeSet<ShardId>) {
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        copies.retain(|id, h| {
            let keep = desired.contains(id);
            if !keep {
                info!(shard_id = %id, "the shard moved away: its checkpoint copy stops");
                h.abort();
            }
            keep
        });
    }
}

/// Copies a peer's checkpoint of `id` into `dir`, retrying with a growing pause; returns
/// once it is in place, or when the replica should replay the log instead.
async fn copy_task(
    control: Arc<ControlPlane>,
    state: Arc<NodeState>,
    dir: PathBuf,
    id: ShardId,
    cancel: CancellationToken,
) {
    let mut pause = Duration::from_secs(1);
    let progress = |peer, copied, total| {
        state
            .checkpoint_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (peer, copied, total));
    };
    let _done = Finished(&state, id);
    loop {
        match bootstrap_from_peer(&control, id, &dir, &progress).await {
            Ok(Bootstrap::FromPeer { node, bytes }) => {
                info!(shard_id = %id, peer = %node, bytes, "new replica bootstrapped from a peer's checkpoint");
                return;
            }
            Ok(Bootstrap::NoPeer) => {
                warn!(shard_id = %id, "no Serving peer to copy from: the replica replays the partition (held back if the log cannot provide it)");
                return;
            }
            Err(e) if log_is_whole(&state, id).await => {
                warn!(shard_id = %id, error = %e, "checkpoint copy failed; the log still holds every record: replaying it");
                return;
            }
            Err(e) => {
                error!(shard_id = %id, error = %e, retry_in = ?pause, "no peer's checkpoint could be copied and the log no longer starts at 0");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        // Each try is cheap when it fails, and the replica serves nothing until one works.
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Takes the copy out of the status when the task ends, however it ends.
struct Finished<'a>(&'a NodeState, ShardId);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0
            .checkpoint_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// Whether every source topic's partition `id` still starts at offset 0.
async fn log_is_whole(state: &NodeState, id: ShardId) -> bool {
    let Some(kafka) = state.kafka.clone() else {
        return false;
    };
    let topics = state.registry.snapshot().topics();
    tokio::task::spawn_blocking(move || {
        topics.iter().all(|t| {
            kafka
                .log_start(t, id.0, Duration::from_secs(2))
                .is_ok_and(|start| start == 0)
        })
    })
    .await
    .unwrap_or(false)
}
