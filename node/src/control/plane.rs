//! [`ControlPlane`]: the node's handle on the Raft group — start-up (initialise or join),
//! proposals (forwarded to the leader when this node is a follower), heartbeats with the
//! observed replica states. The leader-only reconciler is in [`super::reconciler`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use quiver_proto::transport::AuthChannel;
use quiver_proto::v1::control_service_client::ControlServiceClient;
use quiver_proto::v1::{JoinRequest, JoinResponse, ProposeRequest, ReplicaReport};
use quiver_proto::{NodeId, ShardId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::log_store::LogStore;
use super::network::{Channels, NetworkFactory};
use super::state::{ClusterSettings, ClusterState, Command, CommandResult};
use super::state_machine::{StateMachineStore, open_raft_db};
use super::types::Raft;
use crate::tasks::{Tasks, sleep_or_cancel};

/// Static control-plane settings of a node.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This node's id (non-zero).
    pub node_id: NodeId,
    /// Address peers and clients reach this node's gRPC port at (`host:port`).
    pub advertise_addr: String,
    /// Failure zone; empty if unknown.
    pub zone: String,
    /// The cluster's initial voters (`id → address`); a node listed here initialises the
    /// cluster together with the others. Others join through `seeds`.
    pub initial_voters: BTreeMap<NodeId, String>,
    /// Addresses of existing members to join through.
    pub seeds: Vec<String>,
    /// Cluster settings proposed when the cluster is first initialised.
    pub settings: ClusterSettings,
    /// Voters to keep (3 or 5); further members are learners.
    pub voters: usize,
    /// Heartbeat and reconcile period.
    pub heartbeat_interval: Duration,
    /// Missing heartbeats for this long makes a node Dead and its replicas re-placed.
    pub dead_after: Duration,
    /// Retained view versions are dropped this long after they stopped serving.
    pub version_retention: Duration,
    /// Build a snapshot after this many applied entries, and purge the log behind it
    /// (keeping this many entries for slightly lagging followers).
    pub snapshot_every: u64,
    /// What this node presents to its peers (TLS, cluster token).
    pub peer_credentials: quiver_proto::transport::Credentials,
}

pub use super::error::{ControlError, NoLeader};

/// Last heartbeat of a member, as seen by the leader.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) at: Instant,
    pub(super) replicas: HashMap<ShardId, ReplicaReport>,
}

/// The control-plane handle; cheap to clone through `Arc`.
pub struct ControlPlane {
    pub(super) config: ControlConfig,
    pub(super) raft: Raft,
    pub(super) sm: StateMachineStore,
    pub(super) channels: Channels,
    /// Leader-side liveness table.
    pub(super) seen: Mutex<HashMap<NodeId, Seen>>,
    /// This node's replica reports, published by the shard manager.
    pub(super) local_reports: watch::Sender<Vec<ReplicaReport>>,
    /// See [`ControlPlane::is_fresh`].
    pub(super) fresh: watch::Sender<bool>,
    /// See [`ControlPlane::catch_up_since`]: held while one read-index round runs; holds
    /// when the last successful round started.
    pub(super) last_catch_up: tokio::sync::Mutex<Option<Instant>>,
}

/// How long [`ControlPlane::propose`] keeps trying while no leader can take a command:
/// longer than an election after a leader's death (`dead_after` is not involved: Raft
/// elects within its election timeout, 0.4-0.8 s, plus a round trip).
pub const PROPOSE_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Milliseconds since the epoch, for commands that carry a time.
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ControlPlane {
    /// Opens the Raft storage under `dir`, starts Raft and the background loops.
    ///
    /// # Errors
    /// [`ControlError`] if storage or Raft cannot start.
    pub async fn start(
        config: ControlConfig,
        dir: &std::path::Path,
        tasks: &Tasks,
    ) -> Result<Arc<Self>, ControlError> {
        let cancel = tasks.cancel_token().clone();
        let db = open_raft_db(dir).map_err(|e| ControlError::Storage(e.to_string()))?;
        let sm = StateMachineStore::open(db.clone())
            .map_err(|e| ControlError::Storage(e.to_string()))?;
        let raft_config = openraft::Config {
            cluster_name: "quiver".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            install_snapshot_timeout: 5_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| ControlError::Raft(e.to_string()))?,
        );
        let channels = Channels::new(config.peer_credentials.clone());
        let raft = Raft::new(
            config.node_id.0,
            raft_config,
            NetworkFactory::new(channels.clone()),
            LogStore::new(db),
            sm.clone(),
        )
        .await
        .map_err(|e| ControlError::Raft(e.to_string()))?;
        let (local_reports, _) = watch::channel(Vec::new());
        let plane = Arc::new(ControlPlane {
            config,
            raft,
            sm,
            channels,
            seen: Mutex::new(HashMap::new()),
            local_reports,
            fresh: watch::channel(false).0,
            last_catch_up: tokio::sync::Mutex::new(None),
        });
        // Formation: the first initial voter (lowest id) initialises the group at once;
        // the others only if no leader has reached them after `rank × dead_after` (the
        // first voter never came up). Initialising on every voter made each campaign on
        // its own: a voter whose election timer ran while the leader's first appends
        // could not reach it came back with a higher term and deposed the fresh leader
        // about a second after the cluster formed, failing proposals in that window.
        if let Some(rank) = plane
            .config
            .initial_voters
            .keys()
            .position(|id| *id == plane.config.node_id)
        {
            if rank == 0 {
                plane.initialize_group().await?;
            } else {
                let wait = plane.config.dead_after * rank as u32;
                tasks.spawn_once(
                    "control-formation",
                    plane.clone().initialize_if_leaderless(wait, cancel.clone()),
                );
            }
        }
        tasks.spawn(
            "control-member",
            plane.clone().run_member_loop(cancel.clone()),
        );
        tasks.spawn(
            "control-metrics",
            plane.clone().run_metrics_loop(cancel.clone()),
        );
        tasks.spawn(
            "control-reconciler",
            plane.clone().run_reconciler_loop(cancel),
        );
        Ok(plane)
    }

    /// Initialises the Raft group with the initial voters; a group that is already
    /// initialised (a restart, a voter that formed it) is left as it is.
    async fn initialize_group(&self) -> Result<(), ControlError> {
        let members: BTreeMap<u64, BasicNode> = self
            .config
            .initial_voters
            .iter()
            .map(|(id, addr)| (id.0, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                info!(voters = ?self.config.initial_voters.keys().collect::<Vec<_>>(), "raft group initialised");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ControlError::Raft(e.to_string())),
        }
    }

    /// A later initial voter's fallback: forms the group itself if, after `wait`, no
    /// leader has replicated anything to it.
    async fn initialize_if_leaderless(self: Arc<Self>, wait: Duration, cancel: CancellationToken) {
        if !sleep_or_cancel(wait, &cancel).await {
            return;
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader.is_some() || m.last_log_index.is_some() {
            return;
        }
        info!(
            ?wait,
            "no leader reached this initial voter: initialising the group"
        );
        if let Err(e) = self.initialize_group().await {
            warn!(error = %e, "initialising the raft group failed");
        }
    }

    /// Whether this node's copy of the control-plane state is known to be current: it has
    /// applied everything the leader had committed when asked (a read-index round) within
    /// the last `dead_after`. Answers that depend on replicated security state (tokens)
    /// wait for it.
    pub fn is_fresh(&self) -> bool {
        *self.fresh.borrow()
    }

    /// Subscribes to [`ControlPlane::is_fresh`].
    pub fn subscribe_fresh(&self) -> watch::Receiver<bool> {
        self.fresh.subscribe()
    }

    /// The Raft handle (for the gRPC service and metrics).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Subscribes to the committed cluster state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.sm.subscribe()
    }

    /// The committed cluster state as applied locally.
    pub fn state(&self) -> Arc<ClusterState> {
        self.sm.state()
    }

    /// Publishes this node's replica states (sent with the next heartbeat).
    pub fn set_local_reports(&self, reports: Vec<ReplicaReport>) {
        self.local_reports.send_replace(reports);
    }

    /// The current leader's id, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader.map(NodeId)
    }

    pub(super) fn leader_addr(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((NodeId(leader), addr))
    }

    /// Proposes `cmd` through Raft, forwarding it to the leader if this node is not it,
    /// and trying again for up to [`PROPOSE_RETRY_WINDOW`] while there is no reachable
    /// leader (an election, a leader that just died), so a caller does not see a
    /// leadership change. Commands are idempotent: one that was committed although its
    /// answer was lost is a no-op the second time.
    ///
    /// # Errors
    /// [`ControlError::Rejected`] if the state machine rejected it;
    /// [`ControlError::NoLeader`] if no leader took it within the window.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ControlError> {
        let deadline = Instant::now() + PROPOSE_RETRY_WINDOW;
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.propose_once(&cmd).await {
                Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                    debug!(reason = %e, "no control-plane leader for a proposal yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(400));
                }
                other => return other,
            }
        }
    }

    /// A channel to the member at `addr`, presenting this node's credentials.
    ///
    /// # Errors
    /// If the address or the credentials cannot make an endpoint.
    pub fn peer_channel(
        &self,
        addr: &str,
    ) -> Result<AuthChannel, quiver_proto::transport::TransportError> {
        self.channels.get(addr)
    }

    /// A channel to the member at `addr` for requests made on a caller's behalf: this
    /// node's TLS, no credentials of its own (each request carries the caller's token).
    ///
    /// # Errors
    /// If the address or the TLS settings cannot make an endpoint.
    pub fn forwarding_channel(
        &self,
        addr: &str,
    ) -> Result<AuthChannel, quiver_proto::transport::TransportError> {
        self.channels.get_forwarding(addr)
    }

    /// The channel to the leader `leader` at `addr`; one that cannot be made is a leader
    /// this node cannot reach.
    pub(super) fn leader_channel(
        &self,
        leader: NodeId,
        addr: &str,
    ) -> Result<AuthChannel, ControlError> {
        self.channels.get(addr).map_err(|e| {
            ControlError::NoLeader(NoLeader::Unreachable {
                leader,
                addr: addr.to_string(),
                detail: e.to_string(),
            })
        })
    }

    async fn propose_once(&self, cmd: &Command) -> Result<CommandResult, ControlError> {
        match self.propose_local(cmd.clone()).await {
            Err(ControlError::NoLeader(_)) => {}
            other => return other,
        }
        let (leader, addr) = self
            .leader_addr()
            .ok_or(ControlError::NoLeader(NoLeader::NotElected))?;
        if leader == self.config.node_id {
            return Err(ControlError::NoLeader(NoLeader::Changing));
        }
        let channel = self.leader_channel(leader, &addr)?;
        let json = serde_json::to_vec(cmd).map_err(|e| ControlError::Raft(e.to_string()))?;
        let mut client = ControlServiceClient::new(channel);
        let call = client.propose(ProposeRequest { command_json: json });
        // Bounded like heartbeats: a leader that stopped answering (SIGSTOP, partition)
        // must not hang the proposal past the retry window.
        let resp = tokio::time::timeout(self.member_rpc_timeout(), call)
            .await
            .map_err(|_| ControlError::timed_out(leader, &addr))?
            .map_err(|s| ControlError::from_leader_status(leader, &addr, &s))?;
        let result: CommandResult = serde_json::from_slice(&resp.into_inner().result_json)
            .map_err(|e| ControlError::Raft(e.to_string()))?;
        into_result(result)
    }

    /// Proposes `cmd` on this node only; fails with [`ControlError::NoLeader`] if it does
    /// not lead.
    ///
    /// # Errors
    /// As [`ControlPlane::propose`].
    pub async fn propose_local(&self, cmd: Command) -> Result<CommandResult, ControlError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => into_result(resp.data),
            Err(e) => Err(ControlError::from_write(e)),
        }
    }

    /// Passes a `Join` this follower received on to the leader (marked as forwarded, so
    /// it goes no further).
    ///
    /// # Errors
    /// [`ControlError::NoLeader`] if no leader is known or it did not answer.
    pub async fn forward_join(&self, req: JoinRequest) -> Result<JoinResponse, ControlError> {
        let (leader, addr) = self
            .leader_addr()
            .ok_or(ControlError::NoLeader(NoLeader::NotElected))?;
        let channel = self.leader_channel(leader, &addr)?;
        let mut request = tonic::Request::new(req);
        request.metadata_mut().insert(
            super::control_service::FORWARDED_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let mut client = ControlServiceClient::new(channel);
        tokio::time::timeout(self.member_rpc_timeout(), client.join(request))
            .await
            .map_err(|_| ControlError::timed_out(leader, &addr))?
            .map(tonic::Response::into_inner)
            .map_err(|s| ControlError::from_leader_status(leader, &addr, &s))
    }

    /// Leader side of `Join`: adds the node as a learner and a member.
    ///
    /// # Errors
    /// [`ControlError::NoLeader`] if this node does not lead.
    pub async fn handle_join(
        &self,
        node_id: NodeId,
        addr: String,
        zone: String,
    ) -> Result<(), ControlError> {
        let voters_or_learners: BTreeSet<u64> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        if !voters_or_learners.contains(&node_id.0) {
            self.raft
                .add_learner(node_id.0, BasicNode { addr: addr.clone() }, false)
                .await
                .map_err(ControlError::from_write)?;
            info!(%node_id, %addr, "added learner");
        }
        self.propose_local(Command::UpsertMember {
            id: node_id,
            addr,
            zone,
        })
        .await?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            node_id,
            Seen {
                at: Instant::now(),
                replicas: HashMap::new(),
            },
        );
        Ok(())
    }

    /// Leader side of `Report`: records the heartbeat.
    pub fn handle_report(&self, node_id: NodeId, replicas: Vec<ReplicaReport>) -> u64 {
        let replicas = replicas
            .into_iter()
            .map(|r| (ShardId(r.shard), r))
            .collect();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            node_id,
            Seen {
                at: Instant::now(),
                replicas,
            },
        );
        self.state().epoch
    }
}

fn into_result(result: CommandResult) -> Result<CommandResult, ControlError> {
    match result {
        CommandResult::Rejected { invalid, reason } => {
            Err(ControlError::Rejected { invalid, reason })
        }
        ok => Ok(ok),
    }
}
