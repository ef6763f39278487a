//! A direct connection to one node, for operator tools (`quiverctl`) and tests: admin
//! calls, status, and lookups answered by that node alone (no routing). Applications use
//! the smart [`crate::Client`].

use std::time::Duration;

use crate::error::ClientError;
use crate::lookup::{Lookup, LookupResult};
use quiver_proto::lookup_response::LookupClient;
use quiver_proto::transport::{AuthChannel, Credentials};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, DescribeViewRequest, GetStatusRequest, GetStatusResponse,
    ListViewsRequest, ListViewsResponse,
};
use quiver_proto::v1::{ClusterMap, DrainNodeRequest, GetClusterMapRequest};
use quiver_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, TokenInfo};

/// A connection to one quiver node. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct NodeClient {
    lookups: LookupClient<AuthChannel>,
    admin: AdminServiceClient<AuthChannel>,
    cluster: ClusterServiceClient<AuthChannel>,
    retry_window: Duration,
}

/// How long idempotent admin calls keep retrying an `UNAVAILABLE` answer by default
/// (the node itself retries across a control-plane leader change for 10 s; this covers
/// a node that is catching up or restarting).
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(15);

/// Runs `call` until it succeeds, fails with anything but `UNAVAILABLE`, or `window`
/// has passed (then its last error). Only for calls whose repetition is harmless.
async fn retry_unavailable<T, F, Fut>(window: Duration, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = tokio::time::Instant::now() + window;
    let mut backoff = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e)
                if e.code() == Some(quiver_proto::ErrorCode::Unavailable)
                    && tokio::time::Instant::now() + backoff < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

impl NodeClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:7070`) in plaintext, without a token.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the address is invalid or unreachable.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, &Credentials::none()).await
    }

    /// Connects to `endpoint` presenting `credentials` (TLS, bearer token).
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the address or TLS settings are invalid, the node is
    /// unreachable or the TLS handshake fails (the message says why).
    pub async fn connect_with(
        endpoint: impl Into<String>,
        credentials: &Credentials,
    ) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        let connect_err = |message: String| ClientError::Connect {
            endpoint: credentials.uri(&endpoint),
            message,
        };
        let ep = credentials
            .endpoint(&endpoint)
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = ep
            .connect()
            .await
            .map_err(|e| connect_err(quiver_proto::transport::error_chain(&e)))?;
        let channel = credentials
            .wrap(channel)
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(NodeClient {
            lookups: LookupClient::new(channel.clone()).max_decoding_message_size(256 << 20),
            admin: AdminServiceClient::new(channel.clone()),
            cluster: ClusterServiceClient::new(channel),
            retry_window: DEFAULT_RETRY_WINDOW,
        })
    }

    /// Sets how long idempotent calls (applying definitions, draining, status, listing)
    /// keep retrying `UNAVAILABLE` answers; zero disables retries.
    #[must_use]
    pub fn with_retry_window(mut self, window: Duration) -> Self {
        self.retry_window = window;
        self
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
            .lookups
            .get_online_features(lookup.into_request())
            .await?;
        LookupResult::new(resp.into_inner())
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
        let req = ApplyDefinitionsRequest {
            toml: toml.into(),
            dry_run,
        };
        // Applying the same definitions twice changes nothing the second time.
        let admin = &self.admin;
        retry_unavailable(self.retry_window, || {
            let mut admin = admin.clone();
            let req = req.clone();
            async move { Ok(admin.apply_definitions(req).await?.into_inner().changes) }
        })
        .await
    }

    /// Lists registered views, entities and feature services.
    ///
    /// # Errors
    /// [`ClientError::Rpc`].
    pub async fn list_views(&mut self) -> Result<ListViewsResponse, ClientError> {
        let admin = &self.admin;
        retry_unavailable(self.retry_window, || {
            let mut admin = admin.clone();
            async move { Ok(admin.list_views(ListViewsRequest {}).await?.into_inner()) }
        })
        .await
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

    /// Serves a retained version of `view` again — `to`, or the one retired last — and
    /// retains the serving one (restores a deleted view). Returns what changed.
    ///
    /// # Errors
    /// [`ClientError::Rpc`]: `NOT_FOUND` when there is no such retained version,
    /// `INVALID_ARGUMENT` when `to` already serves, `PERMISSION_DENIED` without admin.
    pub async fn rollback_view(
        &mut self,
        view: impl Into<String>,
        to: Option<u32>,
    ) -> Result<Vec<String>, ClientError> {
        Ok(self
            .admin
            .rollback_view(quiver_proto::v1::RollbackViewRequest {
                view: view.into(),
                to_version: to.unwrap_or(0),
            })
            .await?
            .into_inner()
            .changes)
    }

    /// Deletes a registry object: `kind` is `view` (retained until the cluster's version
    /// retention passes, then its rows are deleted), `feature_service` or `entity`.
    ///
    /// # Errors
    /// [`ClientError::Rpc`]: `NOT_FOUND`, `FAILED_PRECONDITION` while something uses it.
    pub async fn delete(
        &mut self,
        kind: &str,
        name: impl Into<String>,
    ) -> Result<Vec<String>, ClientError> {
        Ok(self
            .admin
            .delete(quiver_proto::v1::DeleteRequest {
                kind: kind.to_owned(),
                name: name.into(),
            })
            .await?
            .into_inner()
            .changes)
    }

    /// Every version of `view` (serving, pending, retained, dropped), newest first.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`NOT_FOUND` for an unknown view).
    pub async fn view_versions(
        &mut self,
        view: impl Into<String>,
    ) -> Result<Vec<quiver_proto::v1::ViewVersionInfo>, ClientError> {
        Ok(self
            .admin
            .list_view_versions(quiver_proto::v1::ListViewVersionsRequest { view: view.into() })
            .await?
            .into_inner()
            .versions)
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
        let cluster = &self.cluster;
        retry_unavailable(self.retry_window, || {
            let mut cluster = cluster.clone();
            async move {
                Ok(cluster
                    .drain_node(DrainNodeRequest { node_id })
                    .await?
                    .into_inner()
                    .epoch)
            }
        })
        .await
    }

    /// Returns the node's shards, offsets and lag.
    ///
    /// # Errors
    /// [`ClientError::Rpc`].
    pub async fn status(&mut self) -> Result<GetStatusResponse, ClientError> {
        let admin = &self.admin;
        retry_unavailable(self.retry_window, || {
            let mut admin = admin.clone();
            async move { Ok(admin.get_status(GetStatusRequest {}).await?.into_inner()) }
        })
        .await
    }

    /// Creates an access token with `role` (`reader` | `writer` | `admin`) and optional
    /// view grants; returns `(id, token)`. The token is shown only here.
    ///
    /// # Errors
    /// [`ClientError::Rpc`]: `INVALID_ARGUMENT` for a bad role or name,
    /// `PERMISSION_DENIED` unless the caller is an admin.
    pub async fn create_token(
        &mut self,
        name: impl Into<String>,
        role: impl Into<String>,
        views: Vec<String>,
    ) -> Result<(String, String), ClientError> {
        self.create_token_with_quota(name, role, views, None, None)
            .await
    }

    /// As [`NodeClient::create_token`], with the token's own lookup quota (keys and
    /// requests per second, cluster-wide; `None`: its role's, 0: unlimited).
    ///
    /// # Errors
    /// As [`NodeClient::create_token`].
    pub async fn create_token_with_quota(
        &mut self,
        name: impl Into<String>,
        role: impl Into<String>,
        views: Vec<String>,
        lookup_keys_per_second: Option<u32>,
        lookups_per_second: Option<u32>,
    ) -> Result<(String, String), ClientError> {
        let r = self
            .admin
            .create_token(CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                views,
                lookup_keys_per_second,
                lookups_per_second,
            })
            .await?
            .into_inner();
        Ok((r.id, r.token))
    }

    /// Revokes the token with public id `id`.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`FAILED_PRECONDITION` for an unknown or revoked id).
    pub async fn revoke_token(&mut self, id: impl Into<String>) -> Result<(), ClientError> {
        self.admin
            .revoke_token(RevokeTokenRequest { id: id.into() })
            .await?;
        Ok(())
    }

    /// Lists tokens (ids, names, roles, grants, history; never secrets).
    ///
    /// # Errors
    /// [`ClientError::Rpc`].
    pub async fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ClientError> {
        let admin = &self.admin;
        retry_unavailable(self.retry_window, || {
            let mut admin = admin.clone();
            async move {
                Ok(admin
                    .list_tokens(ListTokensRequest {})
                    .await?
                    .into_inner()
                    .tokens)
            }
        })
        .await
    }
}
