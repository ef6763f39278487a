//! `quiver.v1.AdminService`: registry changes and node status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use quiver_proto::v1::admin_service_server::AdminService;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, ApplyDefinitionsResponse, CreateTokenRequest, CreateTokenResponse,
    DeleteRequest, DescribeViewRequest, DescribeViewResponse, GetStatusRequest, GetStatusResponse,
    ListTokensRequest, ListTokensResponse, ListViewVersionsRequest, ListViewVersionsResponse,
    ListViewsRequest, ListViewsResponse, PartitionStatus, RegistryChangeResponse,
    RevokeTokenRequest, RevokeTokenResponse, RollbackViewRequest, ShardStatus, ViewSummary,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::ServeError;
use crate::control::plane::wall_clock_ms;
use crate::control::state::Command;
use crate::kafka_meta::TopicCheckError;
use crate::metrics as m;
use crate::registry::{DefinitionFile, RegistryError};
use crate::security::guard::principal_of;
use crate::security::{Principal, audit};
use crate::state::NodeState;

/// The admin service.
pub struct AdminServiceImpl {
    state: Arc<NodeState>,
}

impl AdminServiceImpl {
    /// Creates the service over shared node state.
    pub fn new(state: Arc<NodeState>) -> Self {
        AdminServiceImpl { state }
    }
}

pub(super) fn registry_error(e: RegistryError) -> ServeError {
    match e {
        RegistryError::Parse(m) => {
            ServeError::InvalidArgument(format!("definition file is not valid: {m}"))
        }
        RegistryError::Invalid(m) => ServeError::InvalidArgument(m),
        RegistryError::Incompatible(m) => ServeError::FailedPrecondition(m),
        RegistryError::NotFound(m) => ServeError::NotFound(m),
        e @ RegistryError::Io { .. } => ServeError::Storage(e.to_string()),
    }
}

fn record(rpc: &'static str, started: Instant, result: &Result<impl Sized, ServeError>) {
    let code = result.as_ref().map_or_else(|e| e.code().as_str(), |_| "ok");
    counter!(m::SERVE_REQUESTS, "rpc" => rpc, "code" => code).increment(1);
    histogram!(m::SERVE_REQUEST_DURATION, "rpc" => rpc).record(started.elapsed().as_secs_f64());
}

impl AdminServiceImpl {
    async fn apply(
        &self,
        principal: &Principal,
        req: ApplyDefinitionsRequest,
    ) -> Result<ApplyDefinitionsResponse, ServeError> {
        let file = DefinitionFile::from_toml(&req.toml).map_err(|e| {
            ServeError::InvalidArgument(format!("definition file is not valid: {e}"))
        })?;
        // Validate first (dry run), so bad definitions fail fast without broker round trips.
        self.state
            .registry
            .apply(&file, true)
            .map_err(registry_error)?;
        if let Some(kafka) = &self.state.kafka {
            let kafka = kafka.clone();
            let p = self.state.shard_count;
            let mut topics: Vec<String> =
                file.views.iter().map(|v| v.source.topic.clone()).collect();
            topics.sort();
            topics.dedup();
            let checked = tokio::task::spawn_blocking(move || {
                topics
                    .iter()
                    .try_for_each(|t| kafka.check_topic(t, p, Duration::from_secs(5)))
            })
            .await
            .map_err(|e| ServeError::Storage(format!("topic check task failed: {e}")))?;
            match checked {
                Ok(()) => {}
                Err(e @ TopicCheckError::Unreachable { .. }) => {
                    return Err(ServeError::Unavailable(e.to_string()));
                }
                Err(e) => return Err(ServeError::FailedPrecondition(e.to_string())),
            }
            super::versions::check_rebuildable(&self.state, &file).await?;
        }
        if let Some(control) = &self.state.control {
            if req.dry_run {
                let (_, _, changes) =
                    crate::registry::validate_merge(&control.state().registry, &file)
                        .map_err(registry_error)?;
                return Ok(ApplyDefinitionsResponse { changes });
            }
            let cmd = Command::ApplyDefinitions {
                file,
                applied_by: principal.to_string(),
                applied_at_ms: wall_clock_ms(),
            };
            let changes = ServeError::changes_of(control.propose(cmd).await)?;
            if !changes.is_empty() {
                info!(changes = ?changes, "registry changed (replicated)");
            }
            return Ok(ApplyDefinitionsResponse { changes });
        }
        // Persisting the registry fsyncs a file: keep it off the async workers.
        let registry = self.state.registry.clone();
        let dry_run = req.dry_run;
        let changes = tokio::task::spawn_blocking(move || registry.apply(&file, dry_run))
            .await
            .map_err(|e| ServeError::Storage(format!("registry apply task failed: {e}")))?
            .map_err(registry_error)?;
        if !req.dry_run && !changes.is_empty() {
            info!(changes = ?changes, "registry changed");
        }
        Ok(ApplyDefinitionsResponse { changes })
    }

    /// The node's replicas and offsets, as far as `principal` may see them: only the
    /// offset streams of views it is granted (a topic's stream when it may read one of the
    /// topic's serving views, a pending version's `topic#view@version` stream when it may
    /// read that view), and the shard-wide row count and newest event time only when it
    /// is granted every view.
    fn status(&self, principal: &Principal) -> GetStatusResponse {
        let local = self.state.local();
        let registry = self.state.registry.snapshot();
        let sees_stream = |stream: &str| match stream.split_once('#') {
            Some((_, pending)) => {
                let view = pending.rsplit_once('@').map_or(pending, |(v, _)| v);
                principal.may_use_view(view)
            }
            None => registry
                .views_for_topic(stream)
                .any(|v| principal.may_use_view(&v.name)),
        };
        let sees_all = principal.views.is_none();
        let mut shards: Vec<ShardStatus> = local
            .stores
            .iter()
            .map(|(id, store)| {
                let observed = local.status.get(id).map(|s| s.topics()).unwrap_or_default();
                let partitions = store
                    .offsets()
                    .into_iter()
                    .filter(|(stream, _)| sees_all || sees_stream(stream))
                    .map(|(topic, rec)| {
                        let obs = observed.get(&topic).cloned();
                        let high = obs.as_ref().map_or(-1, |o| o.high_watermark);
                        let reached_end = obs.is_some_and(|o| o.reached_end);
                        PartitionStatus {
                            lag: if high >= 0 {
                                (high - rec.next_offset).max(0)
                            } else {
                                0
                            },
                            topic,
                            next_offset: rec.next_offset,
                            high_watermark: high,
                            records_consumed: rec.consumed,
                            records_applied: rec.applied,
                            records_malformed: rec.malformed,
                            reached_end,
                        }
                    })
                    .collect();
                let replica_state = match &self.state.control {
                    None => "static".to_owned(),
                    Some(c) => match c.state().replicas_on(c.node_id()).get(id) {
                        Some(crate::control::state::ReplicaState::Bootstrapping) => {
                            "bootstrapping".to_owned()
                        }
                        Some(crate::control::state::ReplicaState::Serving) => "serving".to_owned(),
                        Some(crate::control::state::ReplicaState::Draining) => {
                            "draining".to_owned()
                        }
                        None => "unassigned".to_owned(),
                    },
                };
                ShardStatus {
                    shard: id.0,
                    partitions,
                    row_count_estimate: if sees_all { store.estimate_rows() } else { 0 },
                    newest_event_time_micros: if sees_all {
                        store.newest_event_time_micros()
                    } else {
                        0
                    },
                    replica_state,
                    blocked_streams: local
                        .status
                        .get(id)
                        .map(|s| s.blocked())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(stream, _)| sees_all || sees_stream(stream))
                        .map(|(_, why)| why)
                        .collect(),
                    checkpoint_copy: String::new(),
                }
            })
            .collect();
        // New replicas still copying a peer's checkpoint (not open yet).
        let copies = self
            .state
            .checkpoint_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (shard, (peer, copied, total)) in copies {
            if !shards.iter().any(|s| s.shard == shard.0) {
                shards.push(ShardStatus {
                    shard: shard.0,
                    replica_state: "bootstrapping".into(),
                    checkpoint_copy: format!("from node {peer}: {copied} of {total} bytes"),
                    ..Default::default()
                });
            }
        }
        shards.sort_by_key(|s| s.shard);
        GetStatusResponse {
            node_id: self.state.node_id.0,
            shard_count: self.state.shard_count,
            partitioner: self.state.partitioner.as_str().to_owned(),
            shards,
        }
    }
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn apply_definitions(
        &self,
        request: Request<ApplyDefinitionsRequest>,
    ) -> Result<Response<ApplyDefinitionsResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let req = request.into_inner();
        let dry_run = req.dry_run;
        let result = self.apply(&principal, req).await;
        record("apply_definitions", started, &result);
        if !dry_run {
            let (outcome, detail) = match &result {
                Ok(r) => ("applied", r.changes.join("; ")),
                Err(e) => ("rejected", e.to_string()),
            };
            audit::change(
                "apply_definitions",
                &principal.to_string(),
                outcome,
                &detail,
            );
        }
        result.map(Response::new).map_err(Status::from)
    }

    async fn list_views(
        &self,
        request: Request<ListViewsRequest>,
    ) -> Result<Response<ListViewsResponse>, Status> {
        let principal = principal_of(&request);
        let snap = self.state.registry.snapshot();
        let views = snap
            .views
            .values()
            .filter(|v| principal.may_use_view(&v.name))
            .map(|v| ViewSummary {
                name: v.name.clone(),
                version: v.version,
                entity: v.entity.clone(),
                topic: v.source.topic.clone(),
                feature_count: v.features.len() as u32,
                owner: v.owner.clone(),
            })
            .collect();
        Ok(Response::new(ListViewsResponse {
            views,
            entities: snap.entities.keys().cloned().collect(),
            feature_services: snap
                .feature_services
                .values()
                .filter(|s| principal.may_use_all(s.features.iter().map(|(v, _)| v.as_str())))
                .map(|s| s.name.clone())
                .collect(),
        }))
    }

    async fn describe_view(
        &self,
        request: Request<DescribeViewRequest>,
    ) -> Result<Response<DescribeViewResponse>, Status> {
        let principal = principal_of(&request);
        let name = request.into_inner().name;
        principal
            .check_views([name.as_str()])
            .map_err(|m| Status::from(ServeError::PermissionDenied(m)))?;
        let snap = self.state.registry.snapshot();
        let view = snap.views.get(&name).ok_or_else(|| {
            Status::from(ServeError::NotFound(format!(
                "view {name:?} is not registered"
            )))
        })?;
        let used_by: Vec<&str> = snap
            .feature_services
            .values()
            .filter(|s| s.features.iter().any(|(v, _)| *v == name))
            .map(|s| s.name.as_str())
            .collect();
        let mut json =
            serde_json::to_value(view.as_ref()).map_err(|e| Status::internal(e.to_string()))?;
        json["used_by_feature_services"] = serde_json::json!(used_by);
        // A newer version being re-ingested beside the serving one, if any.
        if let Some(pending) = snap.pending.get(&name) {
            json["pending"] = serde_json::to_value(pending.as_ref())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        if let Some(control) = &self.state.control
            && let Some(lineage) = control.state().lineage.get(&name)
        {
            json["lineage"] =
                serde_json::to_value(lineage).map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(DescribeViewResponse {
            definition_json: serde_json::to_string_pretty(&json)
                .map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let principal = principal_of(&request);
        Ok(Response::new(self.status(&principal)))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let result = super::tokens::create(&self.state, &principal, request.into_inner()).await;
        record("create_token", started, &result);
        result.map(Response::new).map_err(Status::from)
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let result = super::tokens::revoke(&self.state, &principal, request.into_inner()).await;
        record("revoke_token", started, &result);
        result
            .map(|()| Response::new(RevokeTokenResponse {}))
            .map_err(Status::from)
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        super::tokens::list(&self.state)
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn rollback_view(
        &self,
        request: Request<RollbackViewRequest>,
    ) -> Result<Response<RegistryChangeResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let result = super::versions::rollback(&self.state, &principal, request.into_inner()).await;
        record("rollback_view", started, &result);
        result.map(Response::new).map_err(Status::from)
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<RegistryChangeResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let result = super::versions::delete(&self.state, &principal, request.into_inner()).await;
        record("delete", started, &result);
        result.map(Response::new).map_err(Status::from)
    }

    async fn list_view_versions(
        &self,
        request: Request<ListViewVersionsRequest>,
    ) -> Result<Response<ListViewVersionsResponse>, Status> {
        let principal = principal_of(&request);
        let retention = self.state.version_retention;
        super::versions::list(&self.state, &principal, retention, request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }
}
