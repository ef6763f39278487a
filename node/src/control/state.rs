//! The replicated cluster state and the commands that change it.
//!
//! [`ClusterState::apply`] is the state machine's transition function: deterministic,
//! no I/O, no clock (times travel inside commands), so every member computes the same
//! state from the same log. Commands that would be invalid are rejected with a reason
//! (and change nothing) rather than failing the log.
//!
//! The **epoch** increases on every change of the shard assignment (a replica added or
//! removed, or its state changed); clients and nodes compare epochs to know whether their
//! view of the assignment is current.

use std::collections::BTreeMap;

use quiver_proto::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

use crate::registry::{DefinitionFile, lifecycle, validate_merge};

/// Cluster-wide settings, fixed when the cluster is initialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Shard count P (= partitions of every source topic).
    pub shard_count: u32,
    /// Partitioner name (`murmur2` | `crc32`).
    pub partitioner: String,
    /// Replicas per shard R.
    pub replication_factor: u32,
}

/// A member's lifecycle state as decided by the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Live and placeable.
    Active,
    /// Asked to leave: its replicas move elsewhere first.
    Draining,
    /// Missed heartbeats beyond the grace period; its replicas are re-placed.
    Dead,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// gRPC address (`host:port`) for clients and peers.
    pub addr: String,
    /// Failure zone; empty if unknown.
    pub zone: String,
    /// Lifecycle state.
    pub status: MemberStatus,
}

/// State of one replica of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Catching up with its partitions; not served to clients.
    Bootstrapping,
    /// Caught up; serves reads.
    Serving,
    /// Being replaced; still serves until its successor is Serving, then removed.
    Draining,
}

/// One replica of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Node holding it.
    pub node: NodeId,
    /// Its state.
    pub state: ReplicaState,
    /// The epoch at which it was added: reports from before it describe another instance.
    #[serde(default)]
    pub added_epoch: u64,
}

/// Who changed a view and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewLineage {
    /// Principal that applied the current definition.
    pub applied_by: String,
    /// When (ms since the epoch, leader clock).
    pub applied_at_ms: i64,
    /// Log of changes to this view, oldest first.
    pub history: Vec<String>,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Increases on every assignment change.
    pub epoch: u64,
    /// Set once by [`Command::Initialize`].
    pub settings: Option<ClusterSettings>,
    /// Members by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Shard → replicas.
    pub assignment: BTreeMap<ShardId, Vec<Replica>>,
    /// The merged registry definitions.
    pub registry: DefinitionFile,
    /// Lineage per view name.
    pub lineage: BTreeMap<String, ViewLineage>,
    /// Access tokens by id (hashed; revoked ones kept for the record).
    #[serde(default)]
    pub tokens: BTreeMap<String, crate::security::tokens::TokenRecord>,
    /// Counts registry changes: every member's registry carries it as its revision, and
    /// lookups answer with it (a client orders view versions by it, not by number: a
    /// rollback serves a lower one).
    #[serde(default)]
    pub registry_revision: u64,
    /// Shards that have had a Serving replica: a new replica of one must hold what that
    /// one held, not only what the log still holds (see the ingest's log start check).
    #[serde(default)]
    pub served_shards: std::collections::BTreeSet<ShardId>,
}

/// A change to the cluster state (the Raft log's payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Sets the cluster settings; only once (re-sending the same settings is a no-op).
    Initialize(ClusterSettings),
    /// Adds a member or updates its address and zone; it becomes Active.
    UpsertMember {
        /// Node id.
        id: NodeId,
        /// gRPC address.
        addr: String,
        /// Zone.
        zone: String,
    },
    /// Changes a member's status.
    SetMemberStatus {
        /// Node id.
        id: NodeId,
        /// New status.
        status: MemberStatus,
    },
    /// Adds a Bootstrapping replica of `shard` on `node`.
    AddReplica {
        /// Shard.
        shard: ShardId,
        /// Node.
        node: NodeId,
    },
    /// Removes the replica of `shard` on `node`.
    RemoveReplica {
        /// Shard.
        shard: ShardId,
        /// Node.
        node: NodeId,
    },
    /// Sets the state of an existing replica.
    SetReplicaState {
        /// Shard.
        shard: ShardId,
        /// Node.
        node: NodeId,
        /// New state.
        state: ReplicaState,
    },
    /// Makes the pending `version` of `view` the serving one (every replica re-ingested it);
    /// the version serving until then is retained.
    PromoteView {
        /// View name.
        view: String,
        /// The pending version.
        version: u32,
        /// Leader clock, ms since the epoch: when the previous version retired.
        #[serde(default)]
        at_ms: i64,
    },
    /// Serves a retained version of `view` again (`to`, or the one retired last); the
    /// serving one is retained. Restores a deleted view.
    RollbackView {
        /// View name.
        view: String,
        /// The version to serve; `None`: the one retired last.
        to: Option<u32>,
        /// Principal.
        by: String,
        /// Leader clock, ms since the epoch.
        at_ms: i64,
    },
    /// Deletes a view: it stops serving, its version is retained until the retention
    /// passes (a rollback restores it meanwhile). Refused while a feature service uses it.
    DeleteView {
        /// View name.
        view: String,
        /// Principal.
        by: String,
        /// Leader clock, ms since the epoch.
        at_ms: i64,
    },
    /// Deletes a feature service.
    DeleteFeatureService {
        /// Service name.
        name: String,
        /// Principal.
        by: String,
    },
    /// Deletes an entity no view version is keyed by.
    DeleteEntity {
        /// Entity name.
        name: String,
        /// Principal.
        by: String,
    },
    /// Drops a retained version: every replica deletes its rows.
    DropViewVersion {
        /// View name.
        view: String,
        /// The retained version.
        version: u32,
    },
    /// Validates and merges registry definitions.
    ApplyDefinitions {
        /// The definitions.
        file: DefinitionFile,
        /// Principal applying them.
        applied_by: String,
        /// Leader clock at proposal time, ms since the epoch.
        applied_at_ms: i64,
    },
    /// Adds an access token (its hash). Rejected if the id exists or a field is invalid.
    CreateToken(crate::security::tokens::TokenRecord),
    /// Revokes a token; it stays listed with who revoked it and when.
    RevokeToken {
        /// Token id.
        id: String,
        /// Principal revoking it.
        revoked_by: String,
        /// Leader clock, ms since the epoch.
        revoked_at_ms: i64,
    },
}

/// The outcome of applying one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied (possibly a no-op). `changes` lists what changed, for registry commands.
    Applied {
        /// Epoch after the command.
        epoch: u64,
        /// Human-readable changes.
        changes: Vec<String>,
    },
    /// Rejected; nothing changed.
    Rejected {
        /// Whether the input was invalid (`true`) or conflicts with the state (`false`).
        invalid: bool,
        /// Why.
        reason: String,
    },
}

impl CommandResult {
    pub(crate) fn rejected(reason: impl Into<String>) -> Self {
        CommandResult::Rejected {
            invalid: false,
            reason: reason.into(),
        }
    }
}

impl ClusterState {
    /// Applies `cmd`, returning its outcome. Never panics on any command.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        let applied = |s: &ClusterState, changes: Vec<String>| CommandResult::Applied {
            epoch: s.epoch,
            changes,
        };
        match cmd {
            Command::Initialize(settings) => match &self.settings {
                Some(current) if current == settings => applied(self, vec![]),
                Some(current) => CommandResult::rejected(format!(
                    "cluster already initialised with {current:?}; settings cannot change"
                )),
                None => {
                    if settings.shard_count == 0 || settings.replication_factor == 0 {
                        return CommandResult::Rejected {
                            invalid: true,
                            reason: "shard_count and replication_factor must be positive".into(),
                        };
                    }
                    self.settings = Some(settings.clone());
                    for s in 0..settings.shard_count {
                        self.assignment.entry(ShardId(s)).or_default();
                    }
                    applied(self, vec!["cluster initialised".into()])
                }
            },
            Command::UpsertMember { id, addr, zone } => {
                let m = Member {
                    id: *id,
                    addr: addr.clone(),
                    zone: zone.clone(),
                    status: MemberStatus::Active,
                };
                let changed = self.members.get(id) != Some(&m);
                self.members.insert(*id, m);
                applied(
                    self,
                    if changed {
                        vec![format!("member {id} active at {addr}")]
                    } else {
                        vec![]
                    },
                )
            }
            Command::SetMemberStatus { id, status } => match self.members.get_mut(id) {
                None => CommandResult::rejected(format!("node {id} is not a member")),
                Some(m) => {
                    m.status = *status;
                    applied(self, vec![])
                }
            },
            Command::AddReplica { shard, node } => {
                if !self.members.contains_key(node) {
                    return CommandResult::rejected(format!("node {node} is not a member"));
                }
                let Some(reps) = self.assignment.get_mut(shard) else {
                    return CommandResult::rejected(format!("shard {shard} does not exist"));
                };
                if reps.iter().any(|r| r.node == *node) {
                    return applied(self, vec![]);
                }
                self.epoch += 1;
                reps.push(Replica {
                    node: *node,
                    state: ReplicaState::Bootstrapping,
                    added_epoch: self.epoch,
                });
                applied(self, vec![])
            }
            Command::RemoveReplica { shard, node } => {
                let Some(reps) = self.assignment.get_mut(shard) else {
                    return CommandResult::rejected(format!("shard {shard} does not exist"));
                };
                let before = reps.len();
                reps.retain(|r| r.node != *node);
                if reps.len() != before {
                    self.epoch += 1;
                }
                applied(self, vec![])
            }
            Command::SetReplicaState { shard, node, state } => {
                let Some(r) = self
                    .assignment
                    .get_mut(shard)
                    .and_then(|reps| reps.iter_mut().find(|r| r.node == *node))
                else {
                    return CommandResult::rejected(format!(
                        "node {node} holds no replica of shard {shard}"
                    ));
                };
                if r.state != *state {
                    r.state = *state;
                    self.epoch += 1;
                }
                if *state == ReplicaState::Serving {
                    self.served_shards.insert(*shard);
                }
                applied(self, vec![])
            }
            Command::PromoteView {
                view,
                version,
                at_ms,
            } => {
                let next = lifecycle::promote(&self.registry, view, *version, *at_ms);
                let change = format!("view {view} v{version}: promoted to serving");
                self.change_registry(next, view, change)
            }
            Command::RollbackView {
                view,
                to,
                by,
                at_ms,
            } => match lifecycle::rollback(&self.registry, view, *to, *at_ms) {
                Err(e) => registry_rejection(&e),
                Ok((next, version)) => {
                    let change = format!(
                        "view {view} v{version}: serving again (rollback by {by} at {at_ms})"
                    );
                    self.change_registry(Ok(next), view, change)
                }
            },
            Command::DeleteView { view, by, at_ms } => {
                let next = lifecycle::delete_view(&self.registry, view, *at_ms);
                let change = format!(
                    "view {view}: deleted by {by} at {at_ms} (retained until its retention passes)"
                );
                self.change_registry(next, view, change)
            }
            Command::DeleteFeatureService { name, by } => {
                let next = lifecycle::delete_feature_service(&self.registry, name);
                let change = format!("feature service {name}: deleted by {by}");
                self.change_registry(next, "", change)
            }
            Command::DeleteEntity { name, by } => {
                let next = lifecycle::delete_entity(&self.registry, name);
                let change = format!("entity {name}: deleted by {by}");
                self.change_registry(next, "", change)
            }
            Command::DropViewVersion { view, version } => {
                let next = lifecycle::drop_version(&self.registry, view, *version);
                let change = format!(
                    "view {view} v{version}: dropped (retention passed); replicas delete its rows"
                );
                self.change_registry(next, view, change)
            }
            Command::ApplyDefinitions {
                file,
                applied_by,
                applied_at_ms,
            } => match validate_merge(&self.registry, file) {
                Err(e) => {
                    let invalid = matches!(
                        e,
                        crate::registry::RegistryError::Invalid(_)
                            | crate::registry::RegistryError::Parse(_)
                    );
                    CommandResult::Rejected {
                        invalid,
                        reason: e.to_string(),
                    }
                }
                Ok((merged, _, changes)) => {
                    if !changes.is_empty() {
                        self.registry = merged;
                        self.registry_revision += 1;
                        for v in &file.views {
                            let mine: Vec<String> = changes
                                .iter()
                                .filter(|c| c.starts_with(&format!("view {} ", v.name)))
                                .cloned()
                                .collect();
                            if mine.is_empty() {
                                continue;
                            }
                            let l =
                                self.lineage
                                    .entry(v.name.clone())
                                    .or_insert_with(|| ViewLineage {
                                        applied_by: String::new(),
                                        applied_at_ms: 0,
                                        history: Vec::new(),
                                    });
                            l.applied_by = applied_by.clone();
                            l.applied_at_ms = *applied_at_ms;
                            l.history.extend(
                                mine.into_iter()
                                    .map(|c| format!("{c} by {applied_by} at {applied_at_ms}")),
                            );
                        }
                    }
                    applied(self, changes)
                }
            },
            Command::CreateToken(record) => self.create_token(record),
            Command::RevokeToken {
                id,
                revoked_by,
                revoked_at_ms,
            } => self.revoke_token(id, revoked_by, *revoked_at_ms),
        }
    }

    /// Takes a lifecycle step's result: validated as a whole, recorded in the view's
    /// lineage, counted as a registry change.
    fn change_registry(
        &mut self,
        next: Result<DefinitionFile, crate::registry::RegistryError>,
        view: &str,
        change: String,
    ) -> CommandResult {
        let next = match next {
            Ok(n) => n,
            Err(e) => return registry_rejection(&e),
        };
        if let Err(e) = validate_merge(&next, &DefinitionFile::default()) {
            return registry_rejection(&e);
        }
        self.registry = next;
        self.registry_revision += 1;
        if let Some(l) = self.lineage.get_mut(view) {
            l.history.push(change.clone());
        }
        CommandResult::Applied {
            epoch: self.epoch,
            changes: vec![change],
        }
    }

    /// Members that may receive new replicas.
    pub fn placeable_members(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| m.status == MemberStatus::Active)
    }

    /// Shards with a replica on `node`, with that replica's state.
    pub fn replicas_on(&self, node: NodeId) -> BTreeMap<ShardId, ReplicaState> {
        self.assignment
            .iter()
            .filter_map(|(s, reps)| reps.iter().find(|r| r.node == node).map(|r| (*s, r.state)))
            .collect()
    }
}

fn registry_rejection(e: &crate::registry::RegistryError) -> CommandResult {
    use crate::registry::RegistryError as E;
    CommandResult::Rejected {
        invalid: matches!(e, E::Invalid(_) | E::Parse(_)),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
