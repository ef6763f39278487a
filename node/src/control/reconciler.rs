//! The leader's reconciler: closes the gap between the desired state (placement over
//! live members, promoted view versions, enough voters) and the committed state, one Raft
//! proposal at a time. Runs on every member; acts only while the member leads.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use openraft::{ChangeMembers, ServerState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::placement::{Current, PlacementNode, place};
use super::plane::{ControlError, ControlPlane, Seen};
use super::state::{ClusterState, Command, MemberStatus, ReplicaState};
use crate::tasks::Ticker;

impl ControlPlane {
    pub(super) async fn run_reconciler_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = Ticker::new(self.config.heartbeat_interval, &cancel);
        let mut was_leader = false;
        while ticker.tick().await {
            let is_leader = self.raft.metrics().borrow().state == ServerState::Leader;
            if is_leader && !was_leader {
                // A new leader's heartbeat history is missing or stale (from an earlier term
                // it led): give every live member a fresh, full grace period. Keeping stale
                // entries declared live nodes dead the moment leadership came back (found
                // by the chaos suite's kill-leader scenario: their replicas were dropped and
                // shards left without a Serving replica). Not the dead ones: "seen" now,
                // they were declared back, placed, and declared dead again.
                let state = self.state();
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                for id in state
                    .members
                    .values()
                    .filter(|m| m.status != MemberStatus::Dead)
                    .map(|m| &m.id)
                {
                    seen.insert(
                        *id,
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

    /// One reconciliation step on the leader: settings, liveness, voters, placement.
    async fn reconcile_once(&self) -> Result<(), ControlError> {
        let state = self.state();
        if state.settings.is_none() {
            self.propose_local(Command::Initialize(self.config.settings.clone()))
                .await?;
            return Ok(());
        }
        // The leader is alive by definition.
        self.handle_report(self.config.node_id, self.local_reports.borrow().clone());
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for m in state.members.values() {
            let fresh = seen
                .get(&m.id)
                .is_some_and(|s| now.duration_since(s.at) < self.config.dead_after);
            match (m.status, fresh) {
                (MemberStatus::Active | MemberStatus::Draining, false) => {
                    warn!(
                        node_id = m.id,
                        "no heartbeat within the grace period: declaring node dead"
                    );
                    self.propose_local(Command::SetMemberStatus {
                        id: m.id,
                        status: MemberStatus::Dead,
                    })
                    .await?;
                }
                (MemberStatus::Dead, true) => {
                    info!(node_id = m.id, "node is back");
                    self.propose_local(Command::SetMemberStatus {
                        id: m.id,
                        status: MemberStatus::Active,
                    })
                    .await?;
                }
                _ => {}
            }
        }
        self.manage_voters(&state).await;
        // Promote pending view versions every replica has re-ingested.
        for def in &state.registry.pending_views {
            let version = def.version.unwrap_or(1);
            let tag = format!("{}@{version}", def.name);
            let everywhere = state.assignment.iter().all(|(shard, reps)| {
                !reps.is_empty()
                    && reps.iter().all(|r| {
                        seen.get(&r.node)
                            .and_then(|s| s.replicas.get(shard))
                            .is_some_and(|rep| rep.caught_up_pending.contains(&tag))
                    })
            });
            if everywhere {
                info!(view = %def.name, version, "every replica re-ingested the new version: promoting it");
                self.propose_local(Command::PromoteView {
                    view: def.name.clone(),
                    version,
                })
                .await?;
            }
        }
        let state = self.state();
        let desired = desired_assignment(&state).expect("settings checked above");
        for (shard, want) in &desired {
            let current = state.assignment.get(shard).cloned().unwrap_or_default();
            for node in want {
                if !current.iter().any(|r| r.node == *node) {
                    self.propose_local(Command::AddReplica {
                        shard: *shard,
                        node: *node,
                    })
                    .await?;
                }
            }
            for r in &current {
                // Only a report made after this replica was added speaks for it: a node
                // that was frozen or partitioned still reports its old instance (found by
                // the chaos suite's pause-node scenario: a fresh, empty replica was
                // promoted on the strength of its predecessor's report).
                let caught_up = seen
                    .get(&r.node)
                    .and_then(|s| s.replicas.get(shard))
                    .is_some_and(|rep| rep.caught_up && rep.epoch >= r.added_epoch);
                // A Draining replica that placement wants again (membership flapped while
                // it drained) goes back to Serving; left Draining it would never leave nor
                // serve as desired, and the shard stayed short of R forever (found by the
                // chaos suite's add-remove scenario).
                let wanted_back = r.state == ReplicaState::Draining && want.contains(&r.node);
                if (r.state == ReplicaState::Bootstrapping || wanted_back) && caught_up {
                    self.propose_local(Command::SetReplicaState {
                        shard: *shard,
                        node: r.node,
                        state: ReplicaState::Serving,
                    })
                    .await?;
                }
            }
            // Make before break: a replica leaves only once every desired one serves, or
            // at once if its node is dead.
            let all_desired_serving = want.iter().all(|n| {
                current
                    .iter()
                    .any(|r| r.node == *n && r.state == ReplicaState::Serving)
            });
            for r in &current {
                if want.contains(&r.node) {
                    continue;
                }
                let dead = state
                    .members
                    .get(&r.node)
                    .is_none_or(|m| m.status == MemberStatus::Dead);
                if dead || all_desired_serving {
                    self.propose_local(Command::RemoveReplica {
                        shard: *shard,
                        node: r.node,
                    })
                    .await?;
                } else if r.state != ReplicaState::Draining {
                    self.propose_local(Command::SetReplicaState {
                        shard: *shard,
                        node: r.node,
                        state: ReplicaState::Draining,
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Keeps `voters` live voters when enough members exist: promotes live learners and
    /// replaces dead voters with them.
    async fn manage_voters(&self, state: &ClusterState) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let alive = |id: &u64| {
            state
                .members
                .get(id)
                .is_some_and(|m| m.status != MemberStatus::Dead)
        };
        let live_voters: BTreeSet<u64> = voters.iter().copied().filter(alive).collect();
        let learners: Vec<u64> = membership.learner_ids().filter(alive).collect();
        if live_voters.len() >= self.config.voters || learners.is_empty() {
            return;
        }
        let mut next = live_voters.clone();
        for l in learners {
            if next.len() >= self.config.voters {
                break;
            }
            next.insert(l);
        }
        // Dead voters are dropped only when replaced, keeping the voter count odd-or-same.
        if next.len() <= live_voters.len() {
            return;
        }
        info!(voters = ?next, "changing raft voters");
        if let Err(e) = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(next), true)
            .await
        {
            warn!(error = %e, "changing voters failed");
        }
    }
}

/// What placement starts from: the replicas the committed state keeps (Serving and
/// Bootstrapping) and those leaving (Draining). Starting from the state, rather than from
/// membership alone, is what lets placement balance without moving more than it must
/// (`placement.rs`); a placement already carried out is a fixed point.
fn placement_start(state: &ClusterState) -> Current {
    let mut current = Current::default();
    for (shard, reps) in &state.assignment {
        let nodes = |draining: bool| -> Vec<u64> {
            reps.iter()
                .filter(|r| (r.state == ReplicaState::Draining) == draining)
                .map(|r| r.node)
                .collect()
        };
        current.replicas.insert(*shard, nodes(false));
        current.draining.insert(*shard, nodes(true));
    }
    current
}

/// The assignment placement wants for `state` (`None` before the cluster settings are
/// committed). Deterministic: every member computes what the leader will propose, which
/// readiness uses to tell "no replicas yet" from "no replicas wanted".
pub(crate) fn desired_assignment(
    state: &ClusterState,
) -> Option<std::collections::BTreeMap<u32, Vec<u64>>> {
    let settings = state.settings.as_ref()?;
    let nodes: Vec<PlacementNode> = state
        .placeable_members()
        .map(|m| PlacementNode {
            id: m.id,
            zone: m.zone.clone(),
        })
        .collect();
    Some(place(
        &nodes,
        settings.shard_count,
        settings.replication_factor as usize,
        &placement_start(state),
    ))
}
