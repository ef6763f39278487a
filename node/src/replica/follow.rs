//! Cluster mode: the loop that makes this node's replicas follow the committed state —
//! the registry, and the replicas the assignment places here (opened, closed, their
//! observed states published as metrics and in the heartbeats).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use metrics::gauge;
use quiver_proto::ShardId;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::ShardManager;
use crate::control::plane::ControlPlane;
use crate::metrics as m;
use crate::registry::Registry;

/// Cluster mode: follows the committed state (registry, this node's replicas) and
/// publishes the replicas' observed states for the heartbeats.
pub async fn run_follow_loop(
    control: Arc<ControlPlane>,
    registry: Registry,
    shards: Arc<ShardManager>,
    cancel: CancellationToken,
) {
    let mut rx = control.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut applied_registry = None;
    let mut published = BTreeSet::new();
    loop {
        let state = rx.borrow_and_update().clone();
        // By content and revision: lookups that catch up with the leader wait for the
        // registry to reach the committed revision (`NodeState::compiled_plan`).
        let stale = applied_registry.as_ref().is_none_or(|(revision, file)| {
            *revision != state.registry_revision || *file != state.registry
        });
        if stale {
            match registry.replace(state.registry.clone(), state.registry_revision) {
                Ok(()) => {
                    applied_registry = Some((state.registry_revision, state.registry.clone()));
                }
                Err(e) => error!(error = %e, "committed registry does not validate"),
            }
        }
        let mine = state.replicas_on(control.node_id());
        publish_replica_states(&mine, &mut published);
        let desired: BTreeSet<ShardId> = mine.keys().copied().collect();
        if let Err(e) = shards.reconcile(&desired, true).await {
            warn!(error = %e, "shard reconcile failed; retrying");
        }
        let mut reports = shards.reports().await;
        for r in &mut reports {
            r.epoch = state.epoch;
        }
        control.set_local_reports(reports);
        tokio::select! {
            () = cancel.cancelled() => return,
            res = rx.changed() => if res.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Sets `quiver_replica_state{shard, state}` for this node's replicas; shards it no longer
/// holds (in `published`) go to 0.
fn publish_replica_states(
    mine: &std::collections::BTreeMap<ShardId, crate::control::state::ReplicaState>,
    published: &mut BTreeSet<ShardId>,
) {
    use crate::control::state::ReplicaState;
    const STATES: [(ReplicaState, &str); 3] = [
        (ReplicaState::Bootstrapping, "bootstrapping"),
        (ReplicaState::Serving, "serving"),
        (ReplicaState::Draining, "draining"),
    ];
    for shard in published.iter().filter(|s| !mine.contains_key(s)) {
        for (_, name) in STATES {
            gauge!(m::REPLICA_STATE, "shard" => shard.to_string(), "state" => name).set(0.0);
        }
    }
    for (shard, state) in mine {
        for (s, name) in STATES {
            let v = if *state == s { 1.0 } else { 0.0 };
            gauge!(m::REPLICA_STATE, "shard" => shard.to_string(), "state" => name).set(v);
        }
    }
    *published = mine.keys().copied().collect();
}
