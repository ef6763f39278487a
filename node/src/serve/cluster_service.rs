//! `quiver.v1.ClusterService`: the cluster map clients route with, and draining.

use quiver_proto::NodeId;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use quiver_proto::v1::cluster_service_server::ClusterService;
use quiver_proto::v1::{
    ClusterMap, DrainNodeRequest, DrainNodeResponse, GetClusterMapRequest, MemberInfo, ReplicaInfo,
    ReplicaStateProto, ShardReplicas,
};
use tonic::{Request, Response, Status};

use crate::control::plane::{ControlError, ControlPlane};
use crate::control::state::{ClusterState, Command, MemberStatus, ReplicaState};
use crate::serve::ServeError;

/// Serves the cluster map from the locally applied state.
pub struct ClusterServiceImpl {
    plane: Arc<ControlPlane>,
    draining: tokio_util::sync::CancellationToken,
}

impl ClusterServiceImpl {
    /// Serves `plane`'s state; map watches end when `draining` fires (the node is
    /// shutting down: a watch left open would hold the drain for its whole grace, and the
    /// client should follow the map from another node anyway).
    pub fn new(plane: Arc<ControlPlane>, draining: tokio_util::sync::CancellationToken) -> Self {
        ClusterServiceImpl { plane, draining }
    }
}

/// Builds the wire cluster map from a state and the Raft view of members.
pub fn cluster_map(state: &ClusterState, plane: &ControlPlane) -> ClusterMap {
    let metrics = plane.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().map(NodeId).collect();
    let learners: Vec<NodeId> = membership.learner_ids().map(NodeId).collect();
    let leader = metrics.current_leader.map(NodeId);
    let addr = |id: NodeId| {
        state
            .members
            .get(&id)
            .map(|m| m.addr.clone())
            .unwrap_or_default()
    };
    let settings = state.settings.clone();
    ClusterMap {
        epoch: state.epoch,
        shard_count: settings.as_ref().map_or(0, |s| s.shard_count),
        partitioner: settings
            .as_ref()
            .map(|s| s.partitioner.clone())
            .unwrap_or_default(),
        replication_factor: settings.as_ref().map_or(0, |s| s.replication_factor),
        shards: state
            .assignment
            .iter()
            .map(|(shard, reps)| ShardReplicas {
                shard: shard.0,
                replicas: reps
                    .iter()
                    .map(|r| ReplicaInfo {
                        node_id: r.node.0,
                        addr: addr(r.node),
                        state: match r.state {
                            ReplicaState::Bootstrapping => ReplicaStateProto::Bootstrapping,
                            ReplicaState::Serving => ReplicaStateProto::Serving,
                            ReplicaState::Draining => ReplicaStateProto::Draining,
                        } as i32,
                    })
                    .collect(),
            })
            .collect(),
        members: state
            .members
            .values()
            .map(|m| MemberInfo {
                node_id: m.id.0,
                addr: m.addr.clone(),
                zone: m.zone.clone(),
                status: match m.status {
                    MemberStatus::Active => "active",
                    MemberStatus::Draining => "draining",
                    MemberStatus::Dead => "dead",
                }
                .into(),
                raft_role: if voters.contains(&m.id) {
                    "voter"
                } else if learners.contains(&m.id) {
                    "learner"
                } else {
                    "none"
                }
                .into(),
                is_leader: leader == Some(m.id),
            })
            .collect(),
        leader_id: leader.map_or(0, u64::from),
    }
}

type MapStream = Pin<Box<dyn Stream<Item = Result<ClusterMap, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterService for ClusterServiceImpl {
    async fn get_cluster_map(
        &self,
        _request: Request<GetClusterMapRequest>,
    ) -> Result<Response<ClusterMap>, Status> {
        Ok(Response::new(cluster_map(&self.plane.state(), &self.plane)))
    }

    type WatchClusterMapStream = MapStream;

    async fn watch_cluster_map(
        &self,
        _request: Request<GetClusterMapRequest>,
    ) -> Result<Response<MapStream>, Status> {
        if self.draining.is_cancelled() {
            return Err(Status::unavailable(
                "this node is shutting down: watch the cluster map on another",
            ));
        }
        let plane = self.plane.clone();
        let draining = self.draining.clone();
        let mut rx = plane.subscribe();
        let stream = async_stream(move |tx| async move {
            let mut last_epoch = None;
            loop {
                let state = rx.borrow_and_update().clone();
                if last_epoch != Some(state.epoch) {
                    last_epoch = Some(state.epoch);
                    if tx.send(Ok(cluster_map(&state, &plane))).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = draining.cancelled() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        let principal = crate::security::guard::principal_of(&request).to_string();
        let id = NodeId(request.into_inner().node_id);
        let result = match self
            .plane
            .propose(Command::SetMemberStatus {
                id,
                status: MemberStatus::Draining,
            })
            .await
        {
            Ok(_) => Ok(Response::new(DrainNodeResponse {
                epoch: self.plane.state().epoch,
            })),
            Err(ControlError::Rejected { reason, .. }) => Err(Status::not_found(reason)),
            Err(e) => Err(ServeError::from(e).into()),
        };
        let (outcome, detail) = match &result {
            Ok(_) => ("applied", format!("node {id}: draining")),
            Err(s) => ("rejected", format!("node {id}: {}", s.message())),
        };
        crate::security::audit::change("drain_node", &principal, outcome, &detail);
        result
    }
}

/// A bounded-channel-backed stream fed by `f` (a small helper instead of async-stream).
fn async_stream<F, Fut>(f: F) -> MapStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ClusterMap, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<ClusterMap, Status>>,
) -> impl Stream<Item = Result<ClusterMap, Status>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
