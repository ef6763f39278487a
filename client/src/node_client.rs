//! A direct connection to one node, for operator tools (`quiverctl`) and tests: admin
//! calls, status, and lookups answered by that node alone (no routing). Applications use
//! the smart [`crate::Client`].

use std::time::Duration;

use crate::error::ClientError;
use crate::lookup::{Lookup, LookupResult};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, DescribeViewRequest, GetStatusRequest, GetStatusResponse,
    ListViewsRequest, ListViewsResponse,
};
use quiver_proto::v1::{ClusterMap, DrainNodeRequest, GetClusterMapRequest};
use tonic::transport::{Channel, Endpoint};

/// A connection to one quiver node. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct NodeClient {
    features: FeatureServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
}

impl NodeClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:7070`).
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the address is invalid or unreachable.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let ep = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| ClientError::Connect {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = ep.connect().await.map_err(|e| ClientError::Connect {
            endpoint,
            message: e.to_string(),
        })?;
        Ok(NodeClient {
            features: FeatureServiceClient::new(channel.clone())
                .max_decoding_message_size(256 << 20),
            admin: AdminServiceClient::new(channel.clone()),
            cluster: ClusterServiceClient::new(channel),
        })
    }

    /// Looks up features for a batch of entity keys.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] with the node's error code.
    pub async fn get_online_features(
        &mut self,
        lookup: Lookup,
    ) -> Result<LookupResult, ClientError> {
        let resp = self
            .features
            .get_online_features(lookup.into_request())
            .await?;
        Ok(LookupResult::new(resp.into_inner()))
    }

    /// Applies registry definitions (TOML text); returns the list of changes.
    ///
    /// # Errors
    /// [`ClientError::Rpc`]; invalid definitions are `INVALID_ARGUMENT`.
    pub async fn apply_definitions(
        &mut self,
        toml: impl Into<String>,
        dry_run: bool,
    ) -> Result<Vec<String>, ClientError> {
        let resp = self
            .admin
            .apply_definitions(ApplyDefinitionsRequest {
                toml: toml.into(),
                dry_run,
            })
            .await?;
        Ok(resp.into_inner().changes)
    }

    /// Lists registered views, entities and feature services.
    ///
    /// # Errors
    /// [`ClientError::Rpc`].
    pub async fn list_views(&mut self) -> Result<ListViewsResponse, ClientError> {
        Ok(self
            .admin
            .list_views(ListViewsRequest {})
            .await?
            .into_inner())
    }

    /// Returns a view's definition as JSON.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`NOT_FOUND` for an unknown view).
    pub async fn describe_view(&mut self, name: impl Into<String>) -> Result<String, ClientError> {
        Ok(self
            .admin
            .describe_view(DescribeViewRequest { name: name.into() })
            .await?
            .into_inner()
            .definition_json)
    }

    /// Returns the cluster map (members, shard → replicas, epoch).
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`UNIMPLEMENTED` from a node not running in cluster mode).
    pub async fn cluster_map(&mut self) -> Result<ClusterMap, ClientError> {
        Ok(self
            .cluster
            .get_cluster_map(GetClusterMapRequest {})
            .await?
            .into_inner())
    }

    /// Drains a node: its replicas move elsewhere before it stops holding them.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`NOT_FOUND` for an unknown node).
    pub async fn drain_node(&mut self, node_id: u64) -> Result<u64, ClientError> {
        Ok(self
            .cluster
            .drain_node(DrainNodeRequest { node_id })
            .await?
            .into_inner()
            .epoch)
    }

    /// Returns the node's shards, offsets and lag.
    ///
    /// # Errors
    /// [`ClientError::Rpc`].
    pub async fn status(&mut self) -> Result<GetStatusResponse, ClientError> {
        Ok(self
            .admin
            .get_status(GetStatusRequest {})
            .await?
            .into_inner())
    }
}
