//! One test per rule of the reconciler, most of them taught by the chaos suite.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use quiver_proto::v1::ReplicaReport;

use quiver_proto::{NodeId, ShardId};

use super::*;
use crate::control::state::Member;

const DEAD_AFTER: Duration = Duration::from_secs(3);

fn settings(shards: u32, r: u32) -> ClusterSettings {
    ClusterSettings {
        shard_count: shards,
        partitioner: "murmur2".into(),
        replication_factor: r,
    }
}

fn cluster(nodes: &[u64], shards: u32, r: u32) -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Command::Initialize(settings(shards, r)));
    for &id in nodes {
        join(&mut s, id);
    }
    s
}

fn join(s: &mut ClusterState, id: u64) {
    s.apply(&Command::UpsertMember {
        id: NodeId(id),
        addr: format!("127.0.0.1:{}", 7000 + id),
        zone: String::new(),
    });
}

/// Every member of `state` heard from at `at`, reporting each of its replicas as
/// `caught_up` at the state's epoch.
fn reports(state: &ClusterState, at: Instant, caught_up: bool) -> HashMap<NodeId, Seen> {
    state
        .members
        .keys()
        .map(|&id| {
            let replicas = state
                .replicas_on(id)
                .into_keys()
                .map(|shard| {
                    let report = ReplicaReport {
                        shard: shard.0,
                        caught_up,
                        epoch: state.epoch,
                        ..Default::default()
                    };
                    (shard, report)
                })
                .collect();
            (id, Seen { at, replicas })
        })
        .collect()
}

/// The wall clock every decision in these tests sees, ms since the epoch.
const WALL_MS: i64 = 1_800_000_000_000;
const RETENTION: Duration = Duration::from_secs(3600);

fn run(state: &ClusterState, seen: &HashMap<NodeId, Seen>, now: Instant) -> Vec<Step> {
    let obs = Observed {
        seen,
        now,
        wall_ms: WALL_MS,
        dead_after: DEAD_AFTER,
        version_retention: RETENTION,
    };
    decide(state, &obs, &settings(99, 9))
}

fn apply_all(state: &mut ClusterState, steps: &[Step]) {
    for s in steps {
        state.apply(&s.command);
    }
}

/// Decides and applies, with every member reporting caught up, until nothing is left to
/// do; returns every step taken.
fn settle(state: &mut ClusterState, now: Instant) -> Vec<Step> {
    let mut all = Vec::new();
    for _ in 0..20 {
        let steps = run(state, &reports(state, now, true), now);
        if steps.is_empty() {
            return all;
        }
        apply_all(state, &steps);
        all.extend(steps);
    }
    panic!("the reconciler did not reach a fixed point: {all:#?}");
}

fn whys(steps: &[Step]) -> Vec<Why> {
    steps.iter().map(|s| s.why).collect()
}

fn serving_count(state: &ClusterState, shard: ShardId) -> usize {
    state.assignment[&shard]
        .iter()
        .filter(|r| r.state == ReplicaState::Serving)
        .count()
}

#[test]
fn without_settings_it_initializes_and_does_nothing_else() {
    let s = ClusterState::default();
    let steps = run(&s, &HashMap::new(), Instant::now());
    assert_eq!(
        steps,
        vec![Step {
            command: Command::Initialize(settings(99, 9)),
            why: Why::Initialize
        }]
    );
}

#[test]
fn a_new_cluster_places_r_replicas_then_serves_them_and_settles() {
    let now = Instant::now();
    let mut s = cluster(&[1, 2, 3], 4, 2);
    // First: every wanted replica added, none served yet (nobody has reported).
    let first = run(&s, &reports(&s, now, false), now);
    assert_eq!(whys(&first), vec![Why::Placed; 8]);
    apply_all(&mut s, &first);
    // Not caught up: nothing more.
    assert!(run(&s, &reports(&s, now, false), now).is_empty());
    // Caught up (reported after the replicas were added): all of them serve.
    let second = run(&s, &reports(&s, now, true), now);
    assert_eq!(whys(&second), vec![Why::CaughtUp; 8]);
    apply_all(&mut s, &second);
    for shard in 0..4 {
        assert_eq!(serving_count(&s, ShardId(shard)), 2);
    }
    // A placement carried out is a fixed point.
    assert!(run(&s, &reports(&s, now, true), now).is_empty());
}

#[test]
fn a_report_older_than_the_replica_does_not_make_it_serve() {
    // Chaos pause-node: a frozen node still reports its previous instance of a shard;
    // that report must not promote the fresh, empty replica.
    let now = Instant::now();
    let mut s = cluster(&[1, 2], 2, 1);
    let placed = run(&s, &reports(&s, now, false), now);
    let before = s.epoch;
    apply_all(&mut s, &placed);
    assert!(s.epoch > before);
    let mut stale = reports(&s, now, true);
    for seen in stale.values_mut() {
        for r in seen.replicas.values_mut() {
            r.epoch = before;
        }
    }
    assert!(
        run(&s, &stale, now).is_empty(),
        "a report from before the replica existed promoted it"
    );
}

#[test]
fn a_silent_member_is_declared_dead_and_its_replicas_are_replaced_at_once() {
    let now = Instant::now();
    let mut s = cluster(&[1, 2, 3], 6, 2);
    settle(&mut s, now);
    let on_3: BTreeSet<ShardId> = s.replicas_on(NodeId(3)).into_keys().collect();
    assert!(!on_3.is_empty());
    let mut seen = reports(&s, now, true);
    seen.get_mut(&NodeId(3)).unwrap().at = now - DEAD_AFTER - Duration::from_secs(1);
    let steps = run(&s, &seen, now);
    assert_eq!(
        steps[0],
        Step {
            command: Command::SetMemberStatus {
                id: NodeId(3),
                status: MemberStatus::Dead
            },
            why: Why::Silent
        }
    );
    // Placement already sees it dead: its replicas leave at once (no draining: nobody
    // reads a dead node) and each shard gets a new replica on a live node.
    let removed: BTreeSet<ShardId> = steps
        .iter()
        .filter(|st| st.why == Why::LeaveDead)
        .map(|st| match st.command {
            Command::RemoveReplica {
                shard,
                node: NodeId(3),
            } => shard,
            ref c => panic!("unexpected {c:?}"),
        })
        .collect();
    assert_eq!(removed, on_3);
    let added: BTreeSet<ShardId> = steps
        .iter()
        .filter_map(|st| match st.command {
            Command::AddReplica { shard, node } => {
                assert_ne!(node, NodeId(3));
                Some(shard)
            }
            _ => None,
        })
        .collect();
    assert_eq!(added, on_3);
    assert!(!whys(&steps).contains(&Why::Drain));
}

#[test]
fn a_dead_member_heard_again_is_back() {
    let now = Instant::now();
    let mut s = cluster(&[1, 2, 3], 2, 2);
    s.apply(&Command::SetMemberStatus {
        id: NodeId(2),
        status: MemberStatus::Dead,
    });
    let steps = run(&s, &reports(&s, now, true), now);
    assert_eq!(
        steps[0],
        Step {
            command: Command::SetMemberStatus {
                id: NodeId(2),
                status: MemberStatus::Active
            },
            why: Why::Back
        }
    );
    // And placement counts it again in the same step.
    assert!(steps.iter().any(|st| matches!(
        st.command,
        Command::AddReplica {
            node: NodeId(2),
            ..
        }
    )));
}

#[test]
fn a_moving_replica_drains_until_its_successor_serves_then_leaves() {
    // Make before break: scaling out from 3 to 4 nodes moves some replicas to node 4;
    // each old copy keeps serving (Draining) until the new one serves.
    let now = Instant::now();
    let mut s = cluster(&[1, 2, 3], 8, 2);
    settle(&mut s, now);
    join(&mut s, 4);
    let steps = run(&s, &reports(&s, now, false), now);
    let moving: Vec<ShardId> = steps
        .iter()
        .filter_map(|st| match st.command {
            Command::AddReplica {
                shard,
                node: NodeId(4),
            } => Some(shard),
            _ => None,
        })
        .collect();
    assert!(!moving.is_empty(), "node 4 gets replicas");
    assert!(!whys(&steps).contains(&Why::LeaveReplaced));
    assert!(!whys(&steps).contains(&Why::LeaveDead));
    assert_eq!(
        steps.iter().filter(|st| st.why == Why::Drain).count(),
        moving.len(),
        "one old copy drains per moved replica"
    );
    apply_all(&mut s, &steps);
    for &shard in &moving {
        assert_eq!(
            serving_count(&s, shard),
            1,
            "the draining copy still counts"
        );
        assert_eq!(s.assignment[&shard].len(), 3);
    }
    // Node 4 catches up: its replicas serve, and only then do the old copies leave.
    let steps = run(&s, &reports(&s, now, true), now);
    apply_all(&mut s, &steps);
    assert!(whys(&steps).contains(&Why::CaughtUp));
    let rest = settle(&mut s, now);
    assert_eq!(
        rest.iter()
            .filter(|st| st.why == Why::LeaveReplaced)
            .count(),
        moving.len()
    );
    for shard in (0..8).map(ShardId) {
        assert_eq!(s.assignment[&shard].len(), 2);
        assert_eq!(serving_count(&s, shard), 2);
    }
}

#[test]
fn a_draining_replica_that_placement_wants_again_serves_again() {
    // Chaos add-remove: membership flapped while a replica drained; left Draining it
    // would neither leave nor serve, and the shard stayed short of R.
    let now = Instant::now();
    let mut s = cluster(&[1, 2], 1, 2);
    settle(&mut s, now);
    s.apply(&Command::SetReplicaState {
        shard: ShardId(0),
        node: NodeId(2),
        state: ReplicaState::Draining,
    });
    let steps = run(&s, &reports(&s, now, true), now);
    assert_eq!(
        steps,
        vec![Step {
            command: Command::SetReplicaState {
                shard: ShardId(0),
                node: NodeId(2),
                state: ReplicaState::Serving
            },
            why: Why::WantedBack
        }]
    );
}

#[test]
fn a_pending_view_is_promoted_only_once_every_replica_re_ingested_it() {
    let now = Instant::now();
    let mut s = cluster(&[1, 2], 2, 2);
    settle(&mut s, now);
    let view: crate::registry::definition::ViewDef =
        toml::from_str("name = \"v\"\nversion = 2\nentity = \"e\"\n[source]\ntopic = \"t\"\n")
            .unwrap();
    s.registry.pending_views.push(view);
    let mut seen = reports(&s, now, true);
    // Three of four replicas have re-ingested v@2.
    let mut marked = 0;
    for node in seen.values_mut() {
        for r in node.replicas.values_mut() {
            if marked < 3 {
                r.caught_up_pending.push("v@2".into());
                marked += 1;
            }
        }
    }
    assert!(
        run(&s, &seen, now).is_empty(),
        "one replica still re-ingests"
    );
    for node in seen.values_mut() {
        for r in node.replicas.values_mut() {
            if r.caught_up_pending.is_empty() {
                r.caught_up_pending.push("v@2".into());
            }
        }
    }
    assert_eq!(
        run(&s, &seen, now),
        vec![Step {
            command: Command::PromoteView {
                view: "v".into(),
                version: 2,
                at_ms: WALL_MS,
            },
            why: Why::PendingCaughtUp
        }]
    );
}

#[test]
fn a_new_leader_gives_every_member_but_the_dead_a_fresh_grace_period() {
    // Chaos kill-leader: stale heartbeat history declared live nodes dead the moment
    // leadership came back.
    let mut s = cluster(&[1, 2, 3], 2, 2);
    s.apply(&Command::SetMemberStatus {
        id: NodeId(3),
        status: MemberStatus::Dead,
    });
    s.members.insert(
        NodeId(4),
        Member {
            id: NodeId(4),
            status: MemberStatus::Draining,
            ..s.members[&NodeId(1)].clone()
        },
    );
    let mut got = grace_on_leadership(&s);
    got.sort_unstable();
    assert_eq!(got, [1, 2, 4].map(NodeId));
}

#[test]
fn voters_grow_to_the_target_with_live_learners_and_never_shrink() {
    let set = |v: &[u64]| v.iter().copied().map(NodeId).collect::<BTreeSet<NodeId>>();
    // Two live voters of three wanted: one learner is promoted.
    assert_eq!(
        next_voters(&set(&[1, 2]), &[4, 5].map(NodeId), 3),
        Some(set(&[1, 2, 4]))
    );
    // Enough voters, or no learner to promote: no change.
    assert_eq!(next_voters(&set(&[1, 2, 3]), &[NodeId(4)], 3), None);
    assert_eq!(next_voters(&set(&[1, 2]), &[], 3), None);
    // From one voter towards five: every learner there is.
    assert_eq!(
        next_voters(&set(&[1]), &[2, 3].map(NodeId), 5),
        Some(set(&[1, 2, 3]))
    );
}
