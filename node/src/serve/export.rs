//! `ExportFeatures`: large batch reads (point-in-time training sets) through one node, for
//! callers without the smart client.
//!
//! A stream of chunks in, one answer per chunk out, in order. Each chunk is a complete
//! lookup whose keys may fall in any shard: the node plans it (names, grants, limits, the
//! as-of retention — every check a lookup makes, here, before anything is read), then
//! splits its keys by shard into *parts* — the shards held here are read locally, every
//! other shard is asked of a Serving replica on the caller's behalf: with the caller's own
//! bearer token, so that replica judges the caller's grants and charges its quota share
//! exactly as for a smart client's lookup — and merges the parts' packed columns back
//! into key order. (A caller known only by its certificate cannot be vouched for to a peer:
//! its chunks may touch only shards held here; it exports through the smart client.)
//!
//! Failures: a part that fails in a way another replica may not (behind, overloaded,
//! shutting down, unreachable, a map or registry change in flight) is asked again of
//! another replica, up to [`ROUNDS`] rounds; a definite failure (bad request, denied,
//! internal) ends the stream with its status. Parts read at different view versions (a
//! promotion or rollback between them) are never merged: those planned on the older
//! registry revision are read again — the same rule as the smart client's.
//!
//! Memory: at most [`READ_AHEAD`] chunks are in flight per stream; the response stream is
//! polled only as the caller reads it (HTTP/2 flow control), so a slow reader slows the
//! node's reading of the request stream instead of buffering answers.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt, future};
use metrics::counter;
use quiver_proto::error::Retry;
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    AsOf, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, ResponseEncoding,
};
use quiver_proto::{NodeId, ShardId};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Status, Streaming};

use super::ServeError;
use super::feature_service::FeatureServiceImpl;
use super::lookup::into_cells;
use super::plan::plan_keys;
use crate::control::state::ReplicaState;
use crate::metrics as m;
use crate::security::{Credential, Principal};

/// Chunks of one stream in flight at once.
pub const READ_AHEAD: usize = 4;
/// Rounds of asking the replicas of a chunk's shards before giving up on it.
pub const ROUNDS: u32 = 5;
/// How long one forwarded part may take (the peer's own watermark wait included).
const PART_TIMEOUT: Duration = Duration::from_secs(30);

/// The response stream of `ExportFeatures`.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<GetOnlineFeaturesResponse, Status>> + Send + 'static>>;

/// Answers `incoming` chunk by chunk (see the module docs). Owned by the RPC: no task
/// is spawned, so a caller that goes away cancels the work in flight.
pub fn export_stream(
    svc: FeatureServiceImpl,
    principal: std::sync::Arc<Principal>,
    authorization: Option<MetadataValue<Ascii>>,
    incoming: Streaming<GetOnlineFeaturesRequest>,
) -> ExportStream {
    let seq = std::sync::Arc::new(AtomicUsize::new(0));
    let answers = incoming
        .map(move |msg| {
            let svc = svc.clone();
            let principal = principal.clone();
            let authorization = authorization.clone();
            let n = seq.fetch_add(1, Ordering::Relaxed);
            async move {
                let caller = Caller {
                    principal: &principal,
                    authorization: authorization.as_ref(),
                };
                let result = match msg {
                    Ok(req) => svc.export_chunk(caller, req, n).await,
                    Err(status) => Err(status),
                };
                let outcome = if result.is_ok() { "ok" } else { "error" };
                counter!(m::EXPORT_CHUNKS, "outcome" => outcome).increment(1);
                result
            }
        })
        .buffered(READ_AHEAD)
        // The first error ends the stream (it is the stream's status).
        .scan(false, |failed, r| {
            if *failed {
                return future::ready(None);
            }
            *failed = r.is_err();
            future::ready(Some(r))
        });
    Box::pin(answers)
}

/// Where a part of a chunk is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Local,
    Peer(NodeId, String),
}

/// Who asked: checked here, and vouched for to peers by its own token.
#[derive(Clone, Copy)]
struct Caller<'a> {
    principal: &'a Principal,
    authorization: Option<&'a MetadataValue<Ascii>>,
}

/// A part's answer: its rows (indexes into the chunk, in the part's key order) and the
/// answer for them.
struct Answered {
    shards: Vec<ShardId>,
    rows: Vec<u32>,
    resp: GetOnlineFeaturesResponse,
}

impl FeatureServiceImpl {
    /// One chunk of an export: planned and charged here, read across the cluster, merged.
    async fn export_chunk(
        &self,
        caller: Caller<'_>,
        req: GetOnlineFeaturesRequest,
        seq: usize,
    ) -> Result<GetOnlineFeaturesResponse, Status> {
        let principal = caller.principal;
        let state = self.state();
        let limits = &state.limits;
        // The chunk as the lookup path plans it. A copy of the chunk's keys, once per
        // chunk: small beside reading them; the parts below are cut from `req`.
        let planned = LookupRequest::from(&req);
        self.check_request_size(&planned)?;
        let compiled = state.compiled_plan(&planned).await?;
        principal
            .check_views(compiled.view_names())
            .map_err(ServeError::PermissionDenied)?;
        let plan = plan_keys(
            &planned,
            compiled,
            limits,
            state.partitioner,
            state.shard_count,
        )?;
        if let Some(as_of) = &plan.as_of {
            as_of.check(&plan.compiled, now_micros())?;
        }
        // The quota is charged where each part is read (here by the local lookup, on a
        // peer by its own), as for a smart client's lookups: no key is charged twice.
        counter!(m::EXPORT_ROWS).increment(plan.key_count() as u64);
        let mut pending: Vec<ShardId> = plan.by_shard.keys().copied().collect();
        let mut answered: Vec<Answered> = Vec::new();
        let mut avoid: BTreeSet<Target> = BTreeSet::new();
        let mut last_error: Option<Status> = None;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(25 << round.min(4))).await;
            }
            let routes = self.route(&pending, &avoid, seq + round as usize)?;
            pending.clear();
            let calls = routes.into_iter().map(|(target, shards)| {
                let rows: Vec<u32> = shards
                    .iter()
                    .flat_map(|s| plan.by_shard[s].iter().copied())
                    .collect();
                let sub = sub_request(&req, &rows, &shards);
                async move {
                    let r = self.read_part(&target, caller, &shards, sub).await;
                    (target, shards, rows, r)
                }
            });
            for (target, shards, rows, r) in future::join_all(calls).await {
                match r {
                    Ok(resp) => answered.push(Answered { shards, rows, resp }),
                    Err(status) => {
                        let retry = Retry::of_status(&status);
                        // NotFound from a replica whose registry is behind this node's
                        // (the names resolved here): another replica, or a later round.
                        let not_found = status.code() == tonic::Code::NotFound;
                        if retry == Retry::Never && !not_found {
                            return Err(status);
                        }
                        counter!(m::EXPORT_PART_RETRIES).increment(1);
                        if retry != Retry::Later {
                            avoid.insert(target);
                        }
                        pending.extend(shards);
                        last_error = Some(status);
                    }
                }
            }
            // One version per view across the parts: those planned on an older registry
            // revision are read again (that replica catches up, or another answers).
            let newest = answered
                .iter()
                .max_by_key(|a| a.resp.registry_revision)
                .map(|a| (a.resp.registry_revision, a.resp.view_versions.clone()));
            if let Some((revision, versions)) = newest {
                answered.retain(|a| {
                    let same = a.resp.view_versions == versions;
                    if !same {
                        debug_assert!(a.resp.registry_revision <= revision);
                        pending.extend(a.shards.iter().copied());
                    }
                    same
                });
            }
            if pending.is_empty() {
                let merged = merge(plan.key_count(), &answered, plan.event_times)?;
                return Ok(if req.encoding == ResponseEncoding::Cells as i32 {
                    into_cells(merged)
                } else {
                    merged
                });
            }
            pending.sort_unstable();
            pending.dedup();
        }
        let shards: Vec<String> = pending.iter().map(|s| s.0.to_string()).collect();
        Err(ServeError::Unavailable(format!(
            "export chunk: shards [{}] not answered after {ROUNDS} rounds; last error: {}",
            shards.join(", "),
            last_error.map_or_else(
                || "views read at different versions".into(),
                |s| { s.message().to_string() }
            )
        ))
        .into())
    }

    /// The replica each of `shards` is read from: this node's when it holds the shard
    /// (and it has not failed this chunk), else a Serving replica elsewhere, spread by
    /// `spread` over the chunks.
    fn route(
        &self,
        shards: &[ShardId],
        avoid: &BTreeSet<Target>,
        spread: usize,
    ) -> Result<BTreeMap<Target, Vec<ShardId>>, ServeError> {
        let state = self.state();
        let local = state.local();
        let cluster = state.control.as_ref().map(|c| c.state());
        let mut routes: BTreeMap<Target, Vec<ShardId>> = BTreeMap::new();
        for &shard in shards {
            // Here when this node's replica is open and, in a cluster, Serving (one that is
            // still catching up is not read, as the smart client would not read it).
            let serving_here = cluster.as_ref().is_none_or(|c| {
                c.assignment.get(&shard).is_some_and(|reps| {
                    reps.iter()
                        .any(|r| r.node == state.node_id && r.state == ReplicaState::Serving)
                })
            });
            let here = local.stores.contains_key(&shard)
                && serving_here
                && !avoid.contains(&Target::Local);
            let target = if here {
                Target::Local
            } else {
                let peers: Vec<Target> = cluster
                    .as_ref()
                    .and_then(|c| {
                        let reps = c.assignment.get(&shard)?;
                        Some(
                            reps.iter()
                                .filter(|r| {
                                    r.state == ReplicaState::Serving && r.node != state.node_id
                                })
                                .filter_map(|r| {
                                    let addr = c.members.get(&r.node)?.addr.clone();
                                    Some(Target::Peer(r.node, addr))
                                })
                                .filter(|t| !avoid.contains(t))
                                .collect(),
                        )
                    })
                    .unwrap_or_default();
                match peers.len() {
                    0 if local.stores.contains_key(&shard) => Target::Local,
                    0 => {
                        return Err(ServeError::Unavailable(format!(
                            "no serving replica of shard {shard} is reachable from this node"
                        )));
                    }
                    n => peers[(spread + shard.0 as usize) % n].clone(),
                }
            };
            routes.entry(target).or_default().push(shard);
        }
        Ok(routes)
    }

    /// Reads one part (the keys of `shards`): here as the caller, or from a peer on the
    /// caller's behalf (its own token).
    async fn read_part(
        &self,
        target: &Target,
        caller: Caller<'_>,
        shards: &[ShardId],
        sub: GetOnlineFeaturesRequest,
    ) -> Result<GetOnlineFeaturesResponse, Status> {
        let (node, addr) = match target {
            Target::Local => {
                return Ok(self
                    .get_online_features_inner(caller.principal, sub.into())
                    .await?
                    .into_response());
            }
            Target::Peer(node, addr) => (node, addr),
        };
        if matches!(caller.principal.credential, Credential::Certificate(_)) {
            let shards: Vec<String> = shards.iter().map(|s| s.0.to_string()).collect();
            return Err(ServeError::PermissionDenied(format!(
                "shards [{}] are not held by this node, and a caller known by its certificate cannot be vouched for to the nodes that hold them: export through the smart client (it reads each shard where it is), or with a bearer token",
                shards.join(", ")
            ))
            .into());
        }
        let control = self
            .state()
            .control
            .as_ref()
            .ok_or_else(|| Status::internal("a peer part without a control plane"))?;
        let channel = control
            .forwarding_channel(addr)
            .map_err(|e| Status::unavailable(format!("node {node} at {addr}: {e}")))?;
        let mut client = FeatureServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        counter!(m::EXPORT_FORWARDED_KEYS).increment(sub.entity_keys.len() as u64);
        let mut request = tonic::Request::new(sub);
        if let Some(a) = caller.authorization {
            request.metadata_mut().insert("authorization", a.clone());
        }
        request.set_timeout(PART_TIMEOUT);
        match tokio::time::timeout(PART_TIMEOUT, client.get_online_features(request)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "node {node} at {addr} did not answer within {PART_TIMEOUT:?}"
            ))),
        }
    }
}

/// The lookup of `rows` (of the chunk `req`), which fall in `shards`.
///
/// Clones each key of the part once per attempt: the export path reads whole chunks
/// (hundreds of keys), where that copy is small beside the read.
fn sub_request(
    req: &GetOnlineFeaturesRequest,
    rows: &[u32],
    shards: &[ShardId],
) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: req.features.clone(),
        feature_service: req.feature_service.clone(),
        entity_keys: rows
            .iter()
            .map(|&r| req.entity_keys[r as usize].clone())
            .collect(),
        min_watermarks: req
            .min_watermarks
            .iter()
            .filter(|w| shards.contains(&ShardId(w.shard)))
            .cloned()
            .collect(),
        watermark_wait_ms: req.watermark_wait_ms,
        encoding: ResponseEncoding::Packed as i32,
        include_event_times: req.include_event_times,
        as_of: req.as_of.as_ref().map(|a| AsOf {
            time_micros: a.time_micros,
            key_times_micros: if a.key_times_micros.is_empty() {
                Vec::new()
            } else {
                rows.iter()
                    .map(|&r| a.key_times_micros[r as usize])
                    .collect()
            },
            exclude_late_arrivals: a.exclude_late_arrivals,
        }),
    }
}

/// The parts' packed columns merged into the chunk's key order (`n` keys).
fn merge(
    n: usize,
    parts: &[Answered],
    event_times: bool,
) -> Result<GetOnlineFeaturesResponse, Status> {
    let corrupt = |what: String| Status::internal(format!("export: a part's answer {what}"));
    let first = &parts
        .first()
        .ok_or_else(|| Status::internal("export: a chunk without parts"))?
        .resp;
    let mut locate = vec![(usize::MAX, 0usize); n];
    for (pi, part) in parts.iter().enumerate() {
        if part.resp.row_count as usize != part.rows.len() {
            return Err(corrupt(format!(
                "has {} rows for {} keys",
                part.resp.row_count,
                part.rows.len()
            )));
        }
        if part.resp.packed_columns.len() != first.packed_columns.len() {
            return Err(corrupt("has a different column count".into()));
        }
        for (i, &r) in part.rows.iter().enumerate() {
            locate[r as usize] = (pi, i);
        }
        for col in &part.resp.packed_columns {
            col.validate(part.rows.len())
                .map_err(|e| corrupt(format!("is malformed: {e:?}")))?;
        }
    }
    if locate.iter().any(|(pi, _)| *pi == usize::MAX) {
        return Err(corrupt("left a key unanswered".into()));
    }
    let mut packed_columns = Vec::with_capacity(first.packed_columns.len());
    for (ci, c0) in first.packed_columns.iter().enumerate() {
        let mut b = ColumnBuilder::new(c0.name.clone(), c0.feature_type(), n, event_times);
        for &(pi, i) in &locate {
            let col = &parts[pi].resp.packed_columns[ci];
            if col.name != c0.name || col.r#type != c0.r#type {
                return Err(corrupt(format!(
                    "names column {ci} {:?}, not {:?}",
                    col.name, c0.name
                )));
            }
            b.push_row_of(col, i);
        }
        packed_columns.push(b.finish());
    }
    Ok(GetOnlineFeaturesResponse {
        columns: Vec::new(),
        watermarks: parts
            .iter()
            .flat_map(|p| p.resp.watermarks.iter().cloned())
            .collect(),
        packed_columns,
        row_count: n as u32,
        view_versions: first.view_versions.clone(),
        registry_revision: parts
            .iter()
            .map(|p| p.resp.registry_revision)
            .max()
            .unwrap_or(0),
    })
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64
}

#[cfg(test)]
mod tests {
    use quiver_proto::v1::{EntityKey, FeatureStatus, PackedColumn, entity_key};

    use super::*;

    fn column(name: &str, values: &[Option<i64>]) -> PackedColumn {
        let mut b = ColumnBuilder::new(
            name.into(),
            quiver_proto::v1::FeatureType::Int64,
            values.len(),
            true,
        );
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => b.push_i64(*v, 1_000 + i as i64),
                None => b.push_missing(FeatureStatus::NotFound, 0),
            }
        }
        b.finish()
    }

    fn part(rows: &[u32], values: &[Option<i64>]) -> Answered {
        Answered {
            shards: vec![ShardId(0)],
            rows: rows.to_vec(),
            resp: GetOnlineFeaturesResponse {
                packed_columns: vec![column("v:f", values)],
                row_count: rows.len() as u32,
                view_versions: vec![1],
                ..Default::default()
            },
        }
    }

    #[test]
    fn parts_merge_back_into_key_order() {
        let parts = [
            part(&[3, 0], &[Some(30), None]),
            part(&[1, 4, 2], &[Some(10), Some(40), Some(20)]),
        ];
        let merged = merge(5, &parts, true).unwrap();
        let col = &merged.packed_columns[0];
        assert_eq!(merged.row_count, 5);
        assert_eq!(col.status_at(0), FeatureStatus::NotFound);
        assert_eq!(col.int64s[1..], [10, 20, 30, 40]);
        // Event times travel with their rows: row 3 was the first part's row 0.
        assert_eq!(col.event_time_at(3), 1_000);
        assert_eq!(col.event_time_at(4), 1_001);
    }

    #[test]
    fn a_key_no_part_answered_is_an_error_not_a_missing_row() {
        let parts = [part(&[0, 2], &[Some(1), Some(2)])];
        let e = merge(3, &parts, false).unwrap_err();
        assert!(e.message().contains("left a key unanswered"), "{e}");
        let short = Answered {
            rows: vec![0, 1],
            ..part(&[0], &[Some(1)])
        };
        let e = merge(2, &[short], false).unwrap_err();
        assert!(e.message().contains("1 rows for 2 keys"), "{e}");
    }

    #[test]
    fn a_part_asks_only_for_its_keys_times_and_shards() {
        let key = |s: &str| EntityKey {
            kind: Some(entity_key::Kind::StringValue(s.into())),
        };
        let req = GetOnlineFeaturesRequest {
            features: vec!["v:f".into()],
            entity_keys: vec![key("a"), key("b"), key("c")],
            min_watermarks: vec![
                quiver_proto::v1::ShardWatermark {
                    shard: 1,
                    offsets: vec![],
                },
                quiver_proto::v1::ShardWatermark {
                    shard: 2,
                    offsets: vec![],
                },
            ],
            encoding: ResponseEncoding::Cells as i32,
            as_of: Some(AsOf {
                time_micros: 0,
                key_times_micros: vec![10, 20, 30],
                exclude_late_arrivals: true,
            }),
            ..Default::default()
        };
        let sub = sub_request(&req, &[2, 0], &[ShardId(2)]);
        assert_eq!(sub.entity_keys, vec![key("c"), key("a")]);
        let as_of = sub.as_of.unwrap();
        assert_eq!(as_of.key_times_micros, vec![30, 10]);
        assert!(as_of.exclude_late_arrivals);
        assert_eq!(sub.min_watermarks.len(), 1);
        assert_eq!(sub.min_watermarks[0].shard, 2);
        // Parts travel packed; the chunk's answer is converted once, after merging.
        assert_eq!(sub.encoding, ResponseEncoding::Packed as i32);
    }
}
