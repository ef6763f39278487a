//! The node's shared state: what the gRPC services, the replica manager and the node's
//! background loops all read — written by the replica manager (the local replicas), the
//! readiness loop (ready) and the shutdown (draining).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::{NodeId, Partitioner, ShardId};

use crate::config::Limits;
use crate::ingest::IngestStatus;
use crate::kafka_meta::KafkaMetadata;
use crate::registry::Registry;
use crate::serve::{ServeError, plan};
use crate::storage::ShardStore;

/// What the gRPC services, the replica manager and the node's loops share.
pub struct NodeState {
    /// This node's id.
    pub node_id: NodeId,
    /// Shard count P.
    pub shard_count: u32,
    /// key → shard function.
    pub partitioner: Partitioner,
    /// The registry.
    pub registry: Registry,
    /// Local shard replicas and their ingest state; replaced as replicas come and go.
    pub local: std::sync::RwLock<Arc<LocalShards>>,
    /// The control plane, in cluster mode.
    pub control: Option<Arc<crate::control::plane::ControlPlane>>,
    /// Request limits.
    pub limits: Limits,
    /// Lookups executing at once, and those waiting, shared fairly between principals.
    pub lookup_permits: crate::serve::fair::FairPermits,
    /// Checks source topics' partition counts.
    pub kafka: Option<Arc<KafkaMetadata>>,
    /// Produces pushed rows.
    pub producer: Option<Arc<crate::produce::PushProducer>>,
    /// Whether the node is ready (not draining, every local replica caught up; in cluster
    /// mode its control-plane state confirmed current): `quiver.v1.Readiness` follows it.
    pub ready: tokio::sync::watch::Sender<bool>,
    /// TLS and authentication settings.
    pub security: crate::security::SecurityConfig,
    /// Pushed rows per second per principal.
    pub push_quota: crate::security::rate::RateLimiter,
    /// Lookup keys and requests per second per principal (their share on this node).
    pub lookup_quotas: crate::serve::quota::LookupQuotas,
    /// Compiled feature lists by registry generation.
    pub plans: plan::PlanCache,
    /// Compress lookup responses for clients that accept it (`server.compress_responses`).
    pub compress_responses: bool,
    /// Set when shutdown begins: readiness turns NOT_SERVING and lookup responses tell
    /// smart clients to prefer other replicas, while the node still answers.
    pub draining: AtomicBool,
    /// Checkpoint copies in progress for new replicas: (peer, bytes copied, bytes total).
    pub checkpoint_copies:
        std::sync::Mutex<std::collections::BTreeMap<ShardId, (NodeId, u64, u64)>>,
    /// The node's data directory (shard databases, checkpoints for new replicas).
    pub data_dir: std::path::PathBuf,
    /// `registry.version_retention` (the versions listing shows when each is dropped).
    pub version_retention: std::time::Duration,
}

/// The shard replicas a node holds right now.
#[derive(Default)]
pub struct LocalShards {
    /// Open shard databases.
    pub stores: HashMap<ShardId, Arc<ShardStore>>,
    /// Observed ingest state per shard.
    pub status: HashMap<ShardId, Arc<IngestStatus>>,
}

impl NodeState {
    /// The cluster-map epoch this node has applied (0 in static mode).
    pub fn epoch(&self) -> u64 {
        self.control.as_ref().map_or(0, |c| c.state().epoch)
    }

    /// Whether the committed assignment places a replica of `shard` on this node (it may
    /// not be open yet: the node just started or the replica was just added).
    pub fn assigned_here(&self, shard: ShardId) -> bool {
        self.control.as_ref().is_some_and(|c| {
            c.state()
                .assignment
                .get(&shard)
                .is_some_and(|reps| reps.iter().any(|r| r.node == self.node_id))
        })
    }

    /// The compiled plan of `req`'s feature list, from the plan cache.
    ///
    /// A name this node does not know may have been registered an instant ago through
    /// another member, and this node not have applied it yet. So, in cluster mode,
    /// before answering NOT_FOUND the node catches up with the leader (one read-index
    /// round, shared by concurrent callers), waits until its registry holds the committed
    /// revision, and plans once more: a view or feature service can be read on every
    /// node as soon as `ApplyDefinitions` returned. Only the error path pays for it.
    ///
    /// # Errors
    /// As [`plan::compile`], judged by the caught-up registry where there is one.
    pub async fn compiled_plan(
        &self,
        req: &LookupRequest,
    ) -> Result<Arc<plan::CompiledPlan>, ServeError> {
        let first = self
            .plans
            .plan(req, &self.registry.snapshot(), &self.limits);
        let (Err(ServeError::NotFound(_)), Some(control)) = (&first, &self.control) else {
            return first;
        };
        // If the leader cannot be reached the answer stays what this node knows.
        if control.catch_up_since(Instant::now()).await.is_ok() {
            let revision = control.state().registry_revision;
            self.registry
                .wait_for_revision(revision, control.member_rpc_timeout())
                .await;
        }
        self.plans
            .plan(req, &self.registry.snapshot(), &self.limits)
    }

    /// Whether shutdown has begun (see [`NodeState::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A snapshot of the local shard set.
    pub fn local(&self) -> Arc<LocalShards> {
        self.local.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the local shard set.
    pub fn set_local(&self, local: LocalShards) {
        *self.local.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(local);
    }
}
