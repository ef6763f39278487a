//! `quiver.v1.ControlService`: member → leader calls (proposals, joins, heartbeats).
//! Internal: only cluster members call it.

use quiver_proto::NodeId;
use std::sync::Arc;

use quiver_proto::v1::control_service_server::ControlService;
use quiver_proto::v1::{
    JoinRequest, JoinResponse, ProposeRequest, ProposeResponse, ReportRequest, ReportResponse,
};
use tonic::{Request, Response, Status};

use super::plane::{ControlError, ControlPlane};
use super::state::{Command, CommandResult};

/// Set on a call a member passed on to the leader: the receiver does not pass it on again.
pub const FORWARDED_METADATA_KEY: &str = "quiver-forwarded";

/// Serves the control RPCs of one node.
pub struct ControlServiceImpl {
    plane: Arc<ControlPlane>,
}

impl ControlServiceImpl {
    /// Serves `plane`.
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        ControlServiceImpl { plane }
    }
}

fn status(e: ControlError) -> Status {
    match e {
        ControlError::Rejected { reason, .. } => Status::failed_precondition(reason),
        e @ (ControlError::Refused { .. } | ControlError::Raft(_)) => {
            Status::failed_precondition(e.to_string())
        }
        e @ ControlError::Storage(_) => Status::internal(e.to_string()),
        // Transient for the caller: another node may lead (a stopped Raft here included).
        e @ (ControlError::NoLeader(_) | ControlError::Lagging { .. } | ControlError::Fatal(_)) => {
            Status::unavailable(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl ControlService for ControlServiceImpl {
    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let cmd: Command = serde_json::from_slice(&request.into_inner().command_json)
            .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
        // One hop only: the caller already forwarded to who it believed leads.
        let result = match self.plane.propose_local(cmd).await {
            Ok(r) => r,
            Err(ControlError::Rejected { invalid, reason }) => {
                CommandResult::Rejected { invalid, reason }
            }
            Err(e) => return Err(status(e)),
        };
        let result_json =
            serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ProposeResponse { result_json }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED_METADATA_KEY);
        let req = request.into_inner();
        if req.node_id == 0 || req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "join needs a non-zero node_id and an address",
            ));
        }
        if self.plane.leader() != Some(self.plane.node_id()) {
            // A joining node knows only its seeds: pass the join on to the leader (one
            // hop; the leader does not forward again).
            if forwarded {
                return Err(Status::unavailable(format!(
                    "not the leader; leader is {:?}",
                    self.plane.leader()
                )));
            }
            return self
                .plane
                .forward_join(req)
                .await
                .map(Response::new)
                .map_err(status);
        }
        self.plane
            .handle_join(NodeId(req.node_id), req.addr, req.zone)
            .await
            .map_err(status)?;
        Ok(Response::new(JoinResponse {
            leader_id: self.plane.node_id().0,
        }))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let req = request.into_inner();
        if self.plane.leader() != Some(self.plane.node_id()) {
            return Err(Status::unavailable("not the leader"));
        }
        let epoch = self.plane.handle_report(NodeId(req.node_id), req.replicas);
        let read_index = if req.want_read_index {
            Some(
                self.plane
                    .read_index()
                    .await
                    .ok_or_else(|| Status::unavailable("leadership not confirmed"))?,
            )
        } else {
            None
        };
        Ok(Response::new(ReportResponse { epoch, read_index }))
    }
}
