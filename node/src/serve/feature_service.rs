//! `quiver.v1.FeatureService`: batched online lookups.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, histogram};
use prost::Message as _;
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::packed::PackedAnswer;
use quiver_proto::v1::feature_service_server::FeatureService;
use quiver_proto::v1::{
    GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, GetSchemaRequest, PushRequest,
    PushResponse, ResponseEncoding, Schema, ShardWatermark,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::ServeError;
use super::export::{ExportStream, export_stream};
use super::fair::{FairPermit, Shed};
use super::lookup::{
    ExecError, ReadMode, Reader, binding_floors, execute, floors_reached, into_cells, replicas_for,
};
use super::plan::{LookupPlan, plan_keys};
use crate::metrics as m;
use crate::security::Principal;
use crate::security::guard::principal_of;
use crate::state::NodeState;

/// The public feature service.
#[derive(Clone)]
pub struct FeatureServiceImpl {
    state: Arc<NodeState>,
    metrics: LookupMetrics,
}

impl FeatureServiceImpl {
    /// Creates the service over shared node state.
    pub fn new(state: Arc<NodeState>) -> Self {
        FeatureServiceImpl {
            state,
            metrics: LookupMetrics::new(),
        }
    }

    /// The node state the service reads.
    pub(super) fn state(&self) -> &NodeState {
        &self.state
    }

    /// Refuses a request larger than `limits.max_request_bytes`.
    pub(super) fn check_request_size(&self, req: &LookupRequest) -> Result<(), ServeError> {
        let size = req.encoded_len();
        let limit = self.state.limits.max_request_bytes;
        if size > limit {
            return Err(ServeError::InvalidArgument(format!(
                "request of {size} bytes exceeds the limit max_request_bytes = {limit}"
            )));
        }
        Ok(())
    }

    /// Waits (bounded) until every shard the plan reads has reached the requested minimum
    /// watermark on its replica here (`replicas`, in the plan's shard order).
    /// `requested_ms` (the request's `watermark_wait_ms`) shortens the wait; 0 keeps the
    /// node's limit.
    async fn await_watermarks(
        &self,
        plan: &LookupPlan,
        replicas: &[Reader],
        floors: &[ShardWatermark],
        requested_ms: u32,
    ) -> Result<(), ServeError> {
        let limit = self.state.limits.max_watermark_wait;
        let max_wait = match requested_ms {
            0 => limit,
            ms => limit.min(Duration::from_millis(u64::from(ms))),
        };
        let deadline = tokio::time::Instant::now() + max_wait;
        for (shard, store) in plan.shards().zip(replicas) {
            if binding_floors(floors, shard).next().is_none() {
                continue;
            }
            let mut rx = store.subscribe_watermark();
            let reached = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|have| floors_reached(floors, shard, have)),
            )
            .await;
            match reached {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    return Err(ServeError::Unavailable(format!("shard {shard} is closing")));
                }
                Err(_) => {
                    // Name every lagging shard, not only this one: the client moves just
                    // those to other replicas and keeps the rest here.
                    let lagging = plan
                        .shards()
                        .zip(replicas)
                        .filter(|(s, st)| {
                            !floors_reached(floors, *s, &st.subscribe_watermark().borrow())
                        })
                        .map(|(s, _)| s)
                        .collect();
                    return Err(ServeError::Behind {
                        shard,
                        waited: max_wait,
                        lagging,
                    });
                }
            }
        }
        Ok(())
    }

    /// A lookup execution slot, shared fairly between principals when the node is
    /// saturated (`fair.rs`); waiting is bounded, beyond it the node sheds load.
    async fn lookup_permit(&self, principal: &Principal) -> Result<FairPermit, ServeError> {
        let limits = &self.state.limits;
        self.state
            .lookup_permits
            .acquire(|| principal.quota_key())
            .await
            .map_err(|shed| {
                let (reason, message) = match shed {
                    Shed::QueueFull => ("lookup_queue", format!(
                        "node overloaded: {} lookups executing and {} waiting (limits.max_concurrent_lookups, limits.max_queued_lookups); retry with backoff",
                        limits.max_concurrent_lookups, limits.max_queued_lookups
                    )),
                    Shed::Evicted => ("lookup_queue_evicted", format!(
                        "node overloaded: {principal} had the most lookups waiting (limits.max_queued_lookups) and this one gave its place to another caller's; retry with backoff"
                    )),
                    Shed::Closed => return ServeError::Unavailable("node is shutting down".into()),
                };
                counter!(m::ADMISSION_SHED, "reason" => reason).increment(1);
                ServeError::ResourceExhausted(message)
            })
    }

    pub(super) async fn get_online_features_inner(
        &self,
        principal: &Principal,
        req: LookupRequest,
    ) -> Result<PackedAnswer, ServeError> {
        let limits = &self.state.limits;
        self.check_request_size(&req)?;
        let compiled = self.state.compiled_plan(&req).await?;
        principal
            .check_views(compiled.view_names())
            .map_err(ServeError::PermissionDenied)?;
        let plan = plan_keys(
            &req,
            compiled,
            limits,
            self.state.partitioner,
            self.state.shard_count,
        )?;
        // Quota after the grant check and planning: only a lookup the principal may make
        // spends it. Nothing to do (no clock, no lookup) for principals without one.
        if !principal.quota.is_unlimited() {
            self.state.lookup_quotas.spend(
                principal,
                plan.key_count(),
                self.state.quota_share(),
                std::time::Instant::now(),
            )?;
        }
        // handler → plan → admit (the replicas, the watermarks, an execution slot) →
        // execute: each step once, in this order.
        // One Vec per request and an Arc clone per shard read (not per key): the blocking
        // path moves them to its thread.
        let replicas = match replicas_for(&plan, &self.state.local().stores, self.state.epoch()) {
            // Placed here but not open yet (the node is starting, or the replica was just
            // added): another replica answers; the client's map is right, no refresh.
            // Every such shard of the request is named, so the client moves only those.
            Err(ServeError::WrongShard { shard, .. }) if self.state.assigned_here(shard) => {
                let local = self.state.local();
                let shards = plan
                    .shards()
                    .filter(|s| !local.stores.contains_key(s) && self.state.assigned_here(*s))
                    .collect();
                return Err(ServeError::Opening { shard, shards });
            }
            r => r?,
        };
        if !req.min_watermarks.is_empty() {
            let waiting = Instant::now();
            self.await_watermarks(&plan, &replicas, &req.min_watermarks, req.watermark_wait_ms)
                .await?;
            self.metrics.watermark_wait.record(waiting.elapsed());
        }
        self.metrics.keys.increment(plan.key_count() as u64);
        let waiting = Instant::now();
        let permit = self.lookup_permit(principal).await?;
        self.metrics.admission_wait.record(waiting.elapsed());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_micros() as i64;
        let cells = plan.key_count() * plan.compiled.types.len();
        // Small lookups whose rows are all in memory run here: no thread hand-off, and
        // `CachedOnly` reads can never wait on the disk. Anything larger, or a row that
        // is not in memory, runs on the blocking pool.
        let inline = if cells <= INLINE_MAX_CELLS {
            match execute(&plan, &replicas, now, ReadMode::CachedOnly) {
                Ok(resp) => Some(Ok(resp)),
                Err(ExecError::NeedsIo) => None,
                Err(ExecError::Serve(e)) => Some(Err(e)),
            }
        } else {
            None
        };
        let resp = match inline {
            Some(r) => {
                self.metrics.inline.increment(1);
                drop(permit);
                r?
            }
            None => {
                self.metrics.blocking.increment(1);
                let (queued, handed_off) = (self.metrics.blocking_wait.clone(), Instant::now());
                tokio::task::spawn_blocking(move || {
                    queued.record(handed_off.elapsed());
                    let _permit = permit;
                    match execute(&plan, &replicas, now, ReadMode::Full) {
                        Ok(r) => Ok(r),
                        Err(ExecError::Serve(e)) => Err(e),
                        Err(ExecError::NeedsIo) => {
                            Err(ServeError::Storage("a full read asked for I/O".into()))
                        }
                    }
                })
                .await
                .map_err(|e| ServeError::Storage(format!("lookup task failed: {e}")))??
            }
        };
        Ok(if req.encoding == ResponseEncoding::Cells as i32 {
            PackedAnswer::new(into_cells(resp.into_response()), Vec::new())
        } else {
            resp
        })
    }
}

/// Largest lookup (keys × features) executed on the async worker when its rows are in
/// memory. With the rows in the lookup cache a 100 × 50 lookup executes in ~200 µs,
/// and running it here rather than on the blocking pool measured better on both
/// counts (three nodes, 100 × 50: 205 K against 157 K keys/s per core, p99 3.4 against
/// 7.9 ms at 400 req/s; docs/PERFORMANCE.md). Larger ones go to the blocking pool, whose
/// hand-off then costs little by comparison.
const INLINE_MAX_CELLS: usize = 5_000;

/// Metric handles of the lookup RPC, registered once (a `counter!` with labels builds
/// and hashes its key on every call).
#[derive(Clone)]
pub(super) struct LookupMetrics {
    ok: metrics::Counter,
    duration: metrics::Histogram,
    keys: metrics::Counter,
    inline: metrics::Counter,
    blocking: metrics::Counter,
    watermark_wait: metrics::Histogram,
    admission_wait: metrics::Histogram,
    blocking_wait: metrics::Histogram,
}

impl LookupMetrics {
    fn new() -> Self {
        LookupMetrics {
            ok: counter!(m::SERVE_REQUESTS, "rpc" => "get_online_features", "code" => "ok"),
            duration: histogram!(m::SERVE_REQUEST_DURATION, "rpc" => "get_online_features"),
            keys: counter!(m::SERVE_KEYS),
            inline: counter!(m::SERVE_LOOKUP_EXECUTIONS, "where" => "inline"),
            blocking: counter!(m::SERVE_LOOKUP_EXECUTIONS, "where" => "blocking_pool"),
            watermark_wait: histogram!(m::SERVE_LOOKUP_WAIT, "stage" => "watermark"),
            admission_wait: histogram!(m::SERVE_LOOKUP_WAIT, "stage" => "admission"),
            blocking_wait: histogram!(m::SERVE_LOOKUP_WAIT, "stage" => "blocking_pool"),
        }
    }
}

impl FeatureServiceImpl {
    /// `GetOnlineFeatures`: the request as the node decodes it ([`LookupRequest`], see
    /// `lookup_route.rs`), answered with the epoch and draining metadata.
    pub(super) async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<PackedAnswer>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let req = request.into_inner();
        // One span per request (debug level: free unless enabled), per shard inside.
        let span = tracing::debug_span!(
            "get_online_features",
            keys = req.entity_keys.len(),
            features = req.features.len()
        );
        let result = self
            .get_online_features_inner(&principal, req)
            .instrument(span)
            .await;
        match &result {
            Ok(_) => self.metrics.ok.increment(1),
            Err(e) => counter!(m::SERVE_REQUESTS, "rpc" => "get_online_features", "code" => e.code().as_str())
                .increment(1),
        }
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        let mut response = result.map(Response::new).map_err(Status::from)?;
        // Clients compare it with their cached map and refresh when this node knows newer.
        let epoch = self.state.epoch();
        if epoch > 0 {
            response.metadata_mut().insert(
                quiver_proto::error::EPOCH_METADATA_KEY,
                tonic::metadata::MetadataValue::from(epoch),
            );
        }
        if self.state.is_draining() {
            // The node is shutting down: smart clients prefer other replicas from now.
            response.metadata_mut().insert(
                quiver_proto::error::DRAINING_METADATA_KEY,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl FeatureService for FeatureServiceImpl {
    /// Served by [`super::lookup_route::FeatureRoutes`], which decodes the request as a
    /// [`LookupRequest`]; this is the same lookup for a caller of the generated server.
    async fn get_online_features(
        &self,
        request: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        let answer = self.lookup(request.map(LookupRequest::from)).await?;
        Ok(answer.map(PackedAnswer::into_response))
    }

    type ExportFeaturesStream = ExportStream;

    async fn export_features(
        &self,
        request: Request<Streaming<GetOnlineFeaturesRequest>>,
    ) -> Result<Response<ExportStream>, Status> {
        let principal = principal_of(&request);
        // Vouches for the caller to the peers holding shards this node lacks.
        let authorization = request.metadata().get("authorization").cloned();
        Ok(Response::new(export_stream(
            self.clone(),
            principal,
            authorization,
            request.into_inner(),
        )))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let principal = principal_of(&request);
        let req = request.into_inner();
        let span = tracing::debug_span!("push", view = %req.view, rows = req.rows.len());
        let result = super::push::push(&self.state, &principal, req)
            .instrument(span)
            .await;
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.code().as_str(),
        };
        counter!(m::SERVE_REQUESTS, "rpc" => "push", "code" => code).increment(1);
        histogram!(m::SERVE_REQUEST_DURATION, "rpc" => "push")
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new).map_err(Status::from)
    }

    async fn get_schema(
        &self,
        request: Request<GetSchemaRequest>,
    ) -> Result<Response<Schema>, Status> {
        counter!(m::SERVE_REQUESTS, "rpc" => "get_schema", "code" => "ok").increment(1);
        let principal = principal_of(&request);
        Ok(Response::new(super::schema::schema(
            &self.state,
            &principal,
        )))
    }
}
