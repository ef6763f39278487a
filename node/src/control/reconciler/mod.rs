//! The leader's reconciler: closes the gap between the desired state (placement over
//! live members, promoted view versions, enough voters) and the committed state, one Raft
//! proposal at a time. Runs on every member; acts only while the member leads. What to
//! propose is decided by a pure function (`decide.rs`); this module proposes it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use openraft::{ChangeMembers, ServerState};
use quiver_proto::{NodeId, ShardId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::placement::{Current, PlacementNode, place};
use super::plane::{ControlError, ControlPlane, Seen};
use super::state::{ClusterState, MemberStatus, ReplicaState};
use crate::tasks::Ticker;

mod decide;

pub(crate) use decide::{Step, Why};

impl ControlPlane {
    pub(in crate::control) async fn run_reconciler_loop(
        self: Arc<Self>,
        cancel: CancellationToken,
    ) {
        let mut ticker = Ticker::new(self.config.heartbeat_interval, &cancel);
        let mut was_leader = false;
        while ticker.tick().await {
            let is_leader = self.raft.metrics().borrow().state == ServerState::Leader;
            if is_leader && !was_leader {
                let members = decide::grace_on_leadership(&self.state());
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                for id in members {
                    seen.insert(
                        id,
                        Seen {
                            at: Instant::now(),
                            replicas: HashMap::new(),
                        },
                    );
                }
                info!("became control-plane leader");
            }
            was_leader = is_leader;
            if !is_leader {
                continue;
            }
            if let Err(e) = self.reconcile_once().await {
                debug!(error = %e, "reconcile step failed");
            }
        }
    }

    /// One reconciliation step on the leader: [`decide::decide`] on the committed state
    /// and the members' reports, each decided command proposed in order (stopping at the
    /// first failure: the next tick decides again from what was committed), then voters.
    async fn reconcile_once(&self) -> Result<(), ControlError> {
        // The leader is alive by definition.
        self.handle_report(self.config.node_id, self.local_reports.borrow().clone());
        let state = self.state();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let observed = decide::Observed {
            seen: &seen,
            now: Instant::now(),
            wall_ms: crate::control::plane::wall_clock_ms(),
            dead_after: self.config.dead_after,
            version_retention: self.config.version_retention,
        };
        for Step { command, why } in decide::decide(&state, &observed, &self.config.settings) {
            match why {
                Why::Silent => {
                    warn!(
                        ?command,
                        "no heartbeat within the grace period: declaring node dead"
                    )
                }
                Why::Back | Why::PendingCaughtUp | Why::Initialize | Why::RetentionPassed => {
                    info!(?why, ?command, "reconciler")
                }
                _ => debug!(?why, ?command, "reconciler"),
            }
            self.propose_local(command).await?;
        }
        if state.settings.is_some() {
            self.manage_voters(&self.state()).await;
        }
        Ok(())
    }

    /// Keeps `voters` live voters when enough members exist ([`decide::next_voters`]).
    async fn manage_voters(&self, state: &ClusterState) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let alive = |id: &NodeId| {
            state
                .members
                .get(id)
                .is_some_and(|m| m.status != MemberStatus::Dead)
        };
        let live_voters: BTreeSet<NodeId> =
            membership.voter_ids().map(NodeId).filter(alive).collect();
        let learners: Vec<NodeId> = membership.learner_ids().map(NodeId).filter(alive).collect();
        let Some(next) = decide::next_voters(&live_voters, &learners, self.config.voters) else {
            return;
        };
        info!(voters = ?next, "changing raft voters");
        if let Err(e) = self
            .raft
            .change_membership(
                ChangeMembers::ReplaceAllVoters(next.into_iter().map(u64::from).collect()),
                true,
            )
            .await
        {
            warn!(error = %e, "changing voters failed");
        }
    }
}

/// What placement starts from: the replicas the committed state keeps (Serving and
/// Bootstrapping) and those leaving (Draining). Starting from the state, rather than from
/// membership alone, is what lets placement balance without moving more than it must
/// (`placement.rs`); a placement already carried out is a fixed point. Placement is a
/// self-contained algorithm over plain numbers (its property tests generate thousands of
/// layouts); the typed ids are converted here, at its boundary.
fn placement_start(state: &ClusterState) -> Current {
    let mut current = Current::default();
    for (shard, reps) in &state.assignment {
        let nodes = |draining: bool| -> Vec<u64> {
            reps.iter()
                .filter(|r| (r.state == ReplicaState::Draining) == draining)
                .map(|r| r.node.0)
                .collect()
        };
        current.replicas.insert(shard.0, nodes(false));
        current.draining.insert(shard.0, nodes(true));
    }
    current
}

/// The assignment placement wants for `state` (`None` before the cluster settings are
/// committed). Deterministic: every member computes what the leader will propose, which
/// readiness uses to tell "no replicas yet" from "no replicas wanted".
pub(crate) fn desired_assignment(
    state: &ClusterState,
) -> Option<std::collections::BTreeMap<ShardId, Vec<NodeId>>> {
    let settings = state.settings.as_ref()?;
    let nodes: Vec<PlacementNode> = state
        .placeable_members()
        .map(|m| PlacementNode {
            id: m.id.0,
            zone: m.zone.clone(),
        })
        .collect();
    let placed = place(
        &nodes,
        settings.shard_count,
        settings.replication_factor as usize,
        &placement_start(state),
    );
    Some(
        placed
            .into_iter()
            .map(|(s, nodes)| (ShardId(s), nodes.into_iter().map(NodeId).collect()))
            .collect(),
    )
}
