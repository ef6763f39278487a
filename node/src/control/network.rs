//! openraft's network over tonic: one lazily connected channel per peer address; each RPC
//! carries a JSON-encoded openraft request and returns `Result<Response, RaftError>`.
//! Connection failures are `Unreachable` so openraft backs off instead of flooding logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use quiver_proto::error::Retry;
use quiver_proto::transport::{AuthChannel, Credentials, TransportError};
use quiver_proto::v1::RaftMessage;
use quiver_proto::v1::raft_service_client::RaftServiceClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::TypeConfig;

/// Shared cache of channels by peer address, each presenting this node's credentials
/// (TLS client certificate and/or cluster token); and of channels for requests made on a
/// caller's behalf (the same TLS, no token of this node's: each request carries the
/// caller's own `authorization`, so the peer judges the caller, not this node).
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<HashMap<String, AuthChannel>>>,
    credentials: Credentials,
    forwarding: Arc<Mutex<HashMap<String, AuthChannel>>>,
}

impl Channels {
    /// Channels presenting `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Channels {
            inner: Arc::default(),
            credentials,
            forwarding: Arc::default(),
        }
    }

    /// The channel to `addr` (`host:port`), created lazily on first use.
    pub fn get(&self, addr: &str) -> Result<AuthChannel, TransportError> {
        cached(&self.inner, addr, &self.credentials)
    }

    /// The channel to `addr` for requests made on a caller's behalf: this node's TLS
    /// settings, no token (the request carries the caller's).
    pub fn get_forwarding(&self, addr: &str) -> Result<AuthChannel, TransportError> {
        let transport_only = Credentials {
            tls: self.credentials.tls.clone(),
            token: None,
        };
        cached(&self.forwarding, addr, &transport_only)
    }
}

/// The channel to `addr` in `map`, made with `credentials` on first use.
fn cached(
    map: &Mutex<HashMap<String, AuthChannel>>,
    addr: &str,
    credentials: &Credentials,
) -> Result<AuthChannel, TransportError> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(addr) {
        return Ok(c.clone());
    }
    let ch = credentials
        .endpoint(addr)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .connect_lazy();
    let ch = credentials.wrap(ch)?;
    map.insert(addr.to_owned(), ch.clone());
    Ok(ch)
}

/// Creates [`PeerConnection`]s.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    channels: Channels,
}

impl NetworkFactory {
    /// A factory sharing `channels`.
    pub fn new(channels: Channels) -> Self {
        NetworkFactory { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            node: node.clone(),
            channel: self.channels.get(&node.addr).ok(),
        }
    }
}

/// The connection to one peer.
pub struct PeerConnection {
    target: u64,
    node: BasicNode,
    channel: Option<AuthChannel>,
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, E>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        which: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(channel) = self.channel.clone() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!("bad address {}", self.node.addr)),
            )));
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        let resp = match which {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        // The peer did not answer, or answered that it cannot take it now (shutting down,
        // overloaded): unreachable, so openraft backs off; anything else is a network error.
        let resp = resp.map_err(|status| match Retry::of_status(&status) {
            Retry::NodeDown | Retry::Elsewhere | Retry::Later => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            Retry::Never | Retry::Reroute => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, E> = serde_json::from_slice(&resp.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call("vote", &rpc, &option).await
    }
}
