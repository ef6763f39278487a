//! The server side of openraft's RPCs (`quiver.v1.RaftService`). Internal: only cluster
//! members call it.

use quiver_proto::v1::RaftMessage;
use quiver_proto::v1::raft_service_server::RaftService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use super::types::Raft;

/// Dispatches Raft RPCs to the local Raft instance.
pub struct RaftServiceImpl {
    raft: Raft,
}

impl RaftServiceImpl {
    /// Serves `raft`.
    pub fn new(raft: Raft) -> Self {
        RaftServiceImpl { raft }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let data = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

#[tonic::async_trait]
impl RaftService for RaftServiceImpl {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.append_entries(decode(request)?).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.install_snapshot(decode(request)?).await)
    }
}
