//! The reconciler's decisions, as a pure function: the committed state and what the
//! members last reported in, the commands to propose out, in order. No clock is read and
//! nothing is proposed here (`mod.rs` does that), so every rule the chaos suite taught
//! the reconciler has a unit test (`decide/tests.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use quiver_proto::{NodeId, ShardId};

use super::desired_assignment;
use crate::control::plane::Seen;
use crate::control::state::{ClusterSettings, ClusterState, Command, MemberStatus, ReplicaState};

/// Why a command was decided (logged with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The cluster has no settings yet.
    Initialize,
    /// No heartbeat within `dead_after`: the member is declared dead.
    Silent,
    /// A dead member sends heartbeats again.
    Back,
    /// Every replica re-ingested a pending view version.
    PendingCaughtUp,
    /// A retained view version's retention passed: its rows go.
    RetentionPassed,
    /// Placement wants a replica here that does not exist.
    Placed,
    /// A Bootstrapping replica reported caught up (after it was added).
    CaughtUp,
    /// A Draining replica that placement wants again, caught up.
    WantedBack,
    /// A replica placement no longer wants, on a dead node: removed at once.
    LeaveDead,
    /// A replica placement no longer wants, once every wanted one serves.
    LeaveReplaced,
    /// A replica placement no longer wants starts draining (make before break).
    Drain,
}

/// One decided command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// What to propose.
    pub command: Command,
    /// Why.
    pub why: Why,
}

/// What the leader knows beyond the committed state: the members' last reports and
/// when they arrived, the time now, and the grace period.
pub(crate) struct Observed<'a> {
    /// Last heartbeat per member.
    pub seen: &'a HashMap<NodeId, Seen>,
    /// Now.
    pub now: Instant,
    /// Now on the wall clock, ms since the epoch (view versions retire and expire by it).
    pub wall_ms: i64,
    /// A member silent this long is dead.
    pub dead_after: Duration,
    /// Retained view versions are dropped this long after they stopped serving.
    pub version_retention: Duration,
}

impl Observed<'_> {
    fn fresh(&self, node: NodeId) -> bool {
        self.seen
            .get(&node)
            .is_some_and(|s| self.now.duration_since(s.at) < self.dead_after)
    }

    fn report(&self, node: NodeId, shard: ShardId) -> Option<&quiver_proto::v1::ReplicaReport> {
        self.seen.get(&node)?.replicas.get(&shard)
    }
}

/// One reconciliation step, decided: settings, liveness, pending-view promotions, then
/// placement — each phase seeing the state the previous phases' commands lead to (as
/// proposing them one by one and re-reading the state would).
pub(crate) fn decide(
    state: &ClusterState,
    obs: &Observed<'_>,
    settings: &ClusterSettings,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if state.settings.is_none() {
        steps.push(Step {
            command: Command::Initialize(settings.clone()),
            why: Why::Initialize,
        });
        return steps;
    }
    let mut next = state.clone();
    let mut decide_now = |next: &mut ClusterState, command: Command, why: Why| {
        next.apply(&command);
        steps.push(Step { command, why });
    };
    for m in state.members.values() {
        match (m.status, obs.fresh(m.id)) {
            (MemberStatus::Active | MemberStatus::Draining, false) => {
                let command = Command::SetMemberStatus {
                    id: m.id,
                    status: MemberStatus::Dead,
                };
                decide_now(&mut next, command, Why::Silent);
            }
            (MemberStatus::Dead, true) => {
                let command = Command::SetMemberStatus {
                    id: m.id,
                    status: MemberStatus::Active,
                };
                decide_now(&mut next, command, Why::Back);
            }
            _ => {}
        }
    }
    for def in &state.registry.pending_views {
        let version = def.version.unwrap_or(1);
        let tag = format!("{}@{version}", def.name);
        let everywhere = state.assignment.iter().all(|(shard, reps)| {
            !reps.is_empty()
                && reps.iter().all(|r| {
                    obs.report(r.node, *shard)
                        .is_some_and(|rep| rep.caught_up_pending.contains(&tag))
                })
        });
        if everywhere {
            let command = Command::PromoteView {
                view: def.name.clone(),
                version,
                at_ms: obs.wall_ms,
            };
            decide_now(&mut next, command, Why::PendingCaughtUp);
        }
    }
    let expired =
        crate::registry::lifecycle::expired(&state.registry, obs.version_retention, obs.wall_ms);
    for (view, version) in expired {
        decide_now(
            &mut next,
            Command::DropViewVersion { view, version },
            Why::RetentionPassed,
        );
    }
    steps.extend(placement_steps(&next, obs));
    steps
}

/// Placement: add the replicas placement wants, promote caught-up ones, drain and then
/// remove the ones it no longer wants (make before break).
fn placement_steps(state: &ClusterState, obs: &Observed<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    let Some(desired) = desired_assignment(state) else {
        return steps;
    };
    let mut push = |command: Command, why: Why| steps.push(Step { command, why });
    for (shard, want) in &desired {
        let shard = *shard;
        let current = state.assignment.get(&shard).cloned().unwrap_or_default();
        for node in want {
            if !current.iter().any(|r| r.node == *node) {
                push(Command::AddReplica { shard, node: *node }, Why::Placed);
            }
        }
        for r in &current {
            // Only a report made after this replica was added speaks for it: a node that
            // was frozen or partitioned still reports its old instance (found by the
            // chaos suite's pause-node scenario: a fresh, empty replica was promoted on
            // the strength of its predecessor's report).
            let caught_up = obs
                .report(r.node, shard)
                .is_some_and(|rep| rep.caught_up && rep.epoch >= r.added_epoch);
            // A Draining replica that placement wants again (membership flapped while it
            // drained) goes back to Serving; left Draining it would never leave nor serve
            // as desired, and the shard stayed short of R forever (found by the chaos
            // suite's add-remove scenario).
            let wanted_back = r.state == ReplicaState::Draining && want.contains(&r.node);
            if caught_up && (r.state == ReplicaState::Bootstrapping || wanted_back) {
                let why = if wanted_back {
                    Why::WantedBack
                } else {
                    Why::CaughtUp
                };
                let command = Command::SetReplicaState {
                    shard,
                    node: r.node,
                    state: ReplicaState::Serving,
                };
                push(command, why);
            }
        }
        // Make before break: a replica leaves only once every desired one serves, or at
        // once if its node is dead.
        let all_desired_serving = want.iter().all(|n| {
            current
                .iter()
                .any(|r| r.node == *n && r.state == ReplicaState::Serving)
        });
        for r in current.iter().filter(|r| !want.contains(&r.node)) {
            let dead = state
                .members
                .get(&r.node)
                .is_none_or(|m| m.status == MemberStatus::Dead);
            let remove = Command::RemoveReplica {
                shard,
                node: r.node,
            };
            if dead {
                push(remove, Why::LeaveDead);
            } else if all_desired_serving {
                push(remove, Why::LeaveReplaced);
            } else if r.state != ReplicaState::Draining {
                let command = Command::SetReplicaState {
                    shard,
                    node: r.node,
                    state: ReplicaState::Draining,
                };
                push(command, Why::Drain);
            }
        }
    }
    steps
}

/// The members a new leader starts a fresh grace period for: every member not already
/// dead. A new leader's heartbeat history is missing or stale (from an earlier term it
/// led); keeping stale entries declared live nodes dead the moment leadership came back
/// (found by the chaos suite's kill-leader scenario: their replicas were dropped and
/// shards left without a Serving replica). Not the dead ones: "seen" now, they were
/// declared back, placed, and declared dead again.
pub(crate) fn grace_on_leadership(state: &ClusterState) -> Vec<NodeId> {
    state
        .members
        .values()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| m.id)
        .collect()
}

/// The voter set to change to, if any: live learners are promoted until there are
/// `want` live voters; dead voters are dropped only when replaced (the set never
/// shrinks).
pub(crate) fn next_voters(
    live_voters: &BTreeSet<NodeId>,
    live_learners: &[NodeId],
    want: usize,
) -> Option<BTreeSet<NodeId>> {
    if live_voters.len() >= want || live_learners.is_empty() {
        return None;
    }
    let mut next = live_voters.clone();
    for l in live_learners {
        if next.len() >= want {
            break;
        }
        next.insert(*l);
    }
    (next.len() > live_voters.len()).then_some(next)
}

#[cfg(test)]
mod tests;
