//! gRPC serving: the public feature service, the admin service, the standard health
//! service and reflection, all on one port.

mod admin_service;
pub mod as_of;
pub mod cluster_service;
mod export;
pub mod fair;
mod feature_service;
pub mod lookup;
mod lookup_route;
pub mod plan;
mod push;
pub mod quota;
mod schema;
mod tokens;
pub mod validate;
mod versions;

use std::sync::Arc;
use std::time::Duration;

pub use admin_service::AdminServiceImpl;
pub use feature_service::FeatureServiceImpl;
use quiver_proto::v1::admin_service_server::AdminServiceServer;
use quiver_proto::v1::feature_service_server::FeatureServiceServer;
use quiver_proto::{ErrorCode, ShardId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::security::tls::ReloadingTls;
use crate::security::{Authenticator, GuardLayer};
use crate::state::NodeState;

/// Errors of request handling; each maps to one [`ErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Malformed request or exceeded limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown view, feature, entity or feature service.
    #[error("{0}")]
    NotFound(String),
    /// A change conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A key's shard is not replicated on this node.
    #[error("shard {shard} is not replicated on this node (cluster map epoch {epoch})")]
    WrongShard {
        /// The shard asked for.
        shard: ShardId,
        /// This node's current cluster-map epoch (0 in static mode).
        epoch: u64,
    },
    /// The replica has not reached the requested watermark in time.
    #[error("shard {shard} has not reached the requested watermark within {waited:?}")]
    Behind {
        /// The first lagging shard.
        shard: ShardId,
        /// How long the node waited.
        waited: Duration,
        /// Every shard of the request that had not reached its watermark.
        lagging: Vec<ShardId>,
    },
    /// Overloaded, shutting down, or a dependency (Kafka) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The node holds replicas of these shards (the cluster map is right) that are not
    /// open yet: it just started or they were just added. Another replica answers.
    #[error("shard {shard}'s replica on this node is opening")]
    Opening {
        /// The first such shard of the request.
        shard: ShardId,
        /// Every such shard of the request.
        shards: Vec<ShardId>,
    },
    /// A queue or in-flight limit of this node is full.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's quota is spent; it holds the request again after `retry_after`.
    #[error("{message}")]
    QuotaExhausted {
        /// What was spent, naming the quota and the principal.
        message: String,
        /// When the request fits again.
        retry_after: Duration,
    },
    /// The caller is not granted what the request touches.
    #[error("{0}")]
    PermissionDenied(String),
    /// Storage read failure or a bug.
    #[error("storage: {0}")]
    Storage(String),
}

impl ServeError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServeError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ServeError::NotFound(_) => ErrorCode::NotFound,
            ServeError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            ServeError::WrongShard { .. } => ErrorCode::WrongShard,
            ServeError::Behind { .. } => ErrorCode::Behind,
            ServeError::Unavailable(_) | ServeError::Opening { .. } => ErrorCode::Unavailable,
            ServeError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            ServeError::QuotaExhausted { .. } => ErrorCode::QuotaExhausted,
            ServeError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ServeError::Storage(_) => ErrorCode::Internal,
        }
    }

    /// The changes of a proposed command that was applied; a rejected one as the
    /// caller's error (invalid input, or a conflict with the state).
    pub(crate) fn changes_of(
        proposed: Result<crate::control::state::CommandResult, crate::control::error::ControlError>,
    ) -> Result<Vec<String>, ServeError> {
        use crate::control::state::CommandResult;
        match proposed? {
            CommandResult::Applied { changes, .. } => Ok(changes),
            CommandResult::Rejected { invalid, reason } => {
                Err(crate::control::error::ControlError::Rejected { invalid, reason }.into())
            }
        }
    }
}

impl From<crate::control::error::ControlError> for ServeError {
    /// A control-plane failure as the wire sees it: a rejected command is the caller's
    /// (invalid input, or conflicting with the state); no leader, or a stopped Raft here,
    /// is transient (another node may lead); anything else is final.
    fn from(e: crate::control::error::ControlError) -> Self {
        use crate::control::error::ControlError as C;
        match e {
            C::Rejected {
                invalid: true,
                reason,
            } => ServeError::InvalidArgument(reason),
            C::Rejected { reason, .. } => ServeError::FailedPrecondition(reason),
            e @ (C::NoLeader(_) | C::Lagging { .. } | C::Fatal(_)) => {
                ServeError::Unavailable(e.to_string())
            }
            e @ (C::Refused { .. } | C::Raft(_)) => ServeError::FailedPrecondition(e.to_string()),
            e @ C::Storage(_) => ServeError::Storage(e.to_string()),
        }
    }
}

impl From<ServeError> for tonic::Status {
    fn from(e: ServeError) -> Self {
        let mut status = e.code().to_status(e.to_string());
        match e {
            ServeError::WrongShard { epoch, .. } => {
                if let Ok(v) = epoch.to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(quiver_proto::error::EPOCH_METADATA_KEY, v);
                }
            }
            ServeError::QuotaExhausted { retry_after, .. } => {
                let ms = retry_after.as_millis().max(1).to_string();
                if let Ok(v) = ms.parse() {
                    status
                        .metadata_mut()
                        .insert(quiver_proto::error::RETRY_AFTER_MS_METADATA_KEY, v);
                }
            }
            ServeError::Behind { lagging, .. } => {
                insert_shards(
                    &mut status,
                    quiver_proto::error::BEHIND_SHARDS_METADATA_KEY,
                    &lagging,
                );
            }
            ServeError::Opening { shards, .. } => {
                insert_shards(
                    &mut status,
                    quiver_proto::error::OPENING_SHARDS_METADATA_KEY,
                    &shards,
                );
            }
            _ => {}
        }
        status
    }
}

/// Lists `shards` (comma-separated ids) under metadata `key`.
fn insert_shards(status: &mut tonic::Status, key: &'static str, shards: &[ShardId]) {
    let ids: Vec<String> = shards.iter().map(|s| s.0.to_string()).collect();
    if let Ok(v) = ids.join(",").parse() {
        status.metadata_mut().insert(key, v);
    }
}

/// How the gRPC server stops once `shutdown` fires ([`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Readiness NOT_SERVING and still answering (draining marked on lookup responses)
    /// for this long: load balancers and smart clients move away.
    pub delay: Duration,
    /// Then: no new connections, and in-flight RPCs get this long to finish.
    pub grace: Duration,
}

/// Serves gRPC on `listener` (over TLS if `tls` is given) until `shutdown` fires, then
/// drains as [`Drain`] says and returns. `health` follows the node's failed tasks
/// ([`crate::tasks::Tasks::failures`]).
///
/// # Errors
/// A transport error if the server fails.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    state: Arc<NodeState>,
    health: tokio::sync::watch::Receiver<std::collections::BTreeSet<&'static str>>,
    drain: Drain,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // Everything below stops when the server has: the listener at the end of the drain
    // window, the helper tasks when `serve` returns.
    let cancel = CancellationToken::new();
    let _stop_helpers = cancel.clone().drop_guard();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<FeatureServiceServer<FeatureServiceImpl>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<AdminServiceImpl>>()
        .await;
    // Readiness (for load balancers and orchestrators) is its own health service: the
    // feature service answers as soon as the node runs (liveness), readiness only once
    // the node's replicas are caught up. A node whose background task died (`health`
    // false) reports NOT_SERVING on both, so an orchestrator replaces it.
    let readiness = {
        let reporter = health_reporter.clone();
        let mut ready = state.ready.subscribe();
        let mut health = health;
        let cancel = cancel.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let status = |up: bool| {
                if up {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                }
            };
            loop {
                let healthy = health.borrow_and_update().is_empty();
                // Draining (shutdown began) clears `ready` at once; checked here too, so a
                // readiness pass computed just before the drain cannot turn it back on.
                let caught_up = *ready.borrow_and_update() && !state.is_draining();
                reporter
                    .set_service_status(READINESS_SERVICE, status(caught_up && healthy))
                    .await;
                for service in [
                    <FeatureServiceServer<FeatureServiceImpl> as tonic::server::NamedService>::NAME,
                    <AdminServiceServer<AdminServiceImpl> as tonic::server::NamedService>::NAME,
                ] {
                    reporter.set_service_status(service, status(healthy)).await;
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    r = ready.changed() => if r.is_err() { break },
                    r = health.changed() => if r.is_err() { break },
                }
            }
            reporter
                .set_service_status(READINESS_SERVICE, tonic_health::ServingStatus::NotServing)
                .await;
        })
    };
    // Reflection in both versions: grpc.reflection.v1, and v1alpha, which Python's
    // grpcio-reflection client and older grpcurl builds still speak.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(quiver_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    // tonic rejects messages above this before our handler sees them; the handler enforces
    // the configured limit with a clear INVALID_ARGUMENT below it.
    let hard_limit = state
        .limits
        .max_request_bytes
        .saturating_mul(2)
        .max(1 << 20);
    let features = lookup_route::FeatureRoutes::new(
        FeatureServiceImpl::new(state.clone()),
        hard_limit,
        256 << 20,
        state.compress_responses,
    );
    let admin = AdminServiceServer::new(AdminServiceImpl::new(state.clone()))
        .max_decoding_message_size(hard_limit);
    let addr = listener.local_addr().ok();
    let reload = tls
        .clone()
        .map(|t| tokio::spawn(t.run_reload_loop(cancel.child_token())));
    info!(addr = ?addr, tls = tls.is_some(), auth = state.security.auth.enabled, "grpc server listening");
    // Our accept loop sets TCP_NODELAY (without it Nagle's algorithm adds ~40 ms to small
    // responses) and completes TLS handshakes concurrently, off tonic's path.
    let stop_accepting = cancel.child_token();
    let (conns, accept_task) =
        crate::security::tls::accept_loop(listener, tls, stop_accepting.clone());
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conns);
    let guard = GuardLayer::new(
        Authenticator::new(state.security.auth.clone(), state.control.clone()),
        state.limits.max_inflight_requests,
    );
    let stopped_accepting = CancellationToken::new();
    let draining = cancel.child_token();
    metrics::gauge!(crate::metrics::NODE_DRAINING).set(0.0);
    let shutdown = {
        let state = state.clone();
        let draining = draining.clone();
        let stopped_accepting = stopped_accepting.clone();
        async move {
            shutdown.cancelled().await;
            // Readiness first, and lookup responses say so: load balancers and smart
            // clients move away while this node still answers.
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!(crate::metrics::NODE_DRAINING).set(1.0);
            state.ready.send_replace(false);
            draining.cancel();
            info!(delay = ?drain.delay, "shutdown: draining (readiness NOT_SERVING, still answering)");
            tokio::time::sleep(drain.delay).await;
            info!(grace = ?drain.grace, "shutdown: no new connections; finishing in-flight requests");
            stop_accepting.cancel();
            stopped_accepting.cancel();
        }
    };
    let control = state.control.clone();
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(quiver_proto::transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(quiver_proto::transport::CONNECTION_WINDOW_BYTES)
        // Beyond this many calls on one connection, refuse with RESOURCE_EXHAUSTED
        // (load shedding) instead of queueing without bound.
        .concurrency_limit_per_connection(state.limits.max_concurrent_requests_per_connection)
        // Calls a client cancels before the server has taken them up (a hedging client
        // cancels the slower copy of each hedged call; deadlines cancel slow calls) may
        // number as many as the calls a connection may have in flight. h2's default, 20,
        // is the rapid-reset (CVE-2023-44487) guard: under load, when calls wait to be
        // taken up, a hedging client passed it and the node sent GOAWAY
        // (ENHANCE_YOUR_CALM, "too_many_resets"), failing every call on the connection.
        // Bounded by the same limit, the guard still stops a client that resets more.
        .http2_max_pending_accept_reset_streams(Some(
            state.limits.max_concurrent_requests_per_connection,
        ))
        .load_shed(true)
        .layer(guard)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(features)
        .add_service(admin)
        .add_optional_service(control.as_ref().map(|c| {
            quiver_proto::v1::raft_service_server::RaftServiceServer::new(
                crate::control::raft_service::RaftServiceImpl::new(c.raft().clone()),
            )
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
        }))
        .add_optional_service(control.as_ref().map(|c| {
            quiver_proto::v1::control_service_server::ControlServiceServer::new(
                crate::control::control_service::ControlServiceImpl::new(c.clone()),
            )
        }))
        .add_optional_service(control.as_ref().map(|_| {
            quiver_proto::v1::replica_service_server::ReplicaServiceServer::new(
                crate::replica::checkpoint::serve::ReplicaServiceImpl::new(
                    state.clone(),
                    &state.data_dir,
                ),
            )
        }))
        .add_optional_service(control.as_ref().map(|c| {
            quiver_proto::v1::cluster_service_server::ClusterServiceServer::new(
                cluster_service::ClusterServiceImpl::new(c.clone(), draining.clone()),
            )
        }));
    let server = router.serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(server);
    let result = tokio::select! {
        res = &mut server => res,
        () = async { stopped_accepting.cancelled().await; tokio::time::sleep(drain.grace).await } => {
            tracing::warn!(grace = ?drain.grace, "in-flight requests did not finish within the shutdown grace period");
            Ok(())
        }
    };
    readiness.abort();
    accept_task.abort();
    if let Some(r) = reload {
        r.abort();
    }
    result
}

/// The gRPC health service name that reports readiness (Kubernetes: `readinessProbe.grpc`
/// with `service: quiver.v1.Readiness`).
pub const READINESS_SERVICE: &str = "quiver.v1.Readiness";

#[cfg(test)]
mod tests {
    use quiver_proto::ShardId;
    use quiver_proto::error::{ErrorCode, behind_shards_from_status, opening_shards_from_status};

    use super::ServeError;

    #[test]
    fn opening_replicas_are_unavailable_and_named_in_the_metadata() {
        let status = tonic::Status::from(ServeError::Opening {
            shard: ShardId(3),
            shards: vec![ShardId(3), ShardId(7)],
        });
        assert_eq!(
            ErrorCode::from_status(&status),
            Some(ErrorCode::Unavailable)
        );
        assert_eq!(
            status.message(),
            "shard 3's replica on this node is opening"
        );
        assert_eq!(opening_shards_from_status(&status), vec![3, 7]);
        assert!(behind_shards_from_status(&status).is_empty());
        // Any other UNAVAILABLE names no shard: the client avoids the whole node.
        let other = tonic::Status::from(ServeError::Unavailable("shutting down".into()));
        assert!(opening_shards_from_status(&other).is_empty());
    }
}
