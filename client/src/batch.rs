//! One lookup's execution: split by shard, fan out one sub-request per node in parallel,
//! fail over and hedge per sub-request, and reassemble in request order.
//!
//! Every sub-request carries the session's minimum watermarks for the shards it reads,
//! so a replica behind what this client has already seen waits or answers BEHIND, and
//! the client goes elsewhere: reads stay monotonic across failover.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::join_all;
use metrics::counter;
use quiver_proto::ErrorCode;
use quiver_proto::error::{behind_shards_from_status, opening_shards_from_status};
use quiver_proto::lookup_request::OutgoingLookup;
use quiver_proto::lookup_response::RawLookupResponse;
use quiver_proto::v1::GetOnlineFeaturesResponse;

use crate::client::Inner;
use crate::error::ClientError;
use crate::lookup::{Lookup, LookupResult};
use crate::metrics as m;
use crate::retry::Recovery;
use crate::router::{Excluded, Group, ShardedBatch, route, shard_batch_at};
use crate::watermark::Watermarks;

/// How long a node that answered "draining" is avoided (while another replica is healthy):
/// past its drain window it stops accepting, after which its breaker takes over.
const DRAINING_AVOID: Duration = Duration::from_secs(10);

/// How often a sub-request may go round (re-route after a refresh, retry, wait) before
/// the call gives up even with deadline left; bounds work on a pathological cluster.
const MAX_ROUNDS: u32 = 32;

/// A node's answer for some of the unique keys.
struct Part {
    /// The columns as the node sent them: merged in place with the other parts'
    /// (`LookupResult::assemble`); decoded on their own only when this part alone
    /// answers the lookup in order, or for the row cache (`run_parts`).
    resp: RawLookupResponse,
    /// Unique-key indexes, in the order of the response's rows.
    keys: Vec<u32>,
    /// The node that answered, and the shards it answered for.
    node: quiver_proto::NodeId,
    shards: Vec<u32>,
}

/// How often a lookup re-reads parts answered at older view versions than another part
/// before giving up (a promotion reaches every node within a Raft commit, milliseconds).
const MAX_VERSION_ROUNDS: u32 = 8;

/// The view versions a lookup's answer must have. Parts that read other views (a registry
/// change of the feature service in flight) compare by length first. Among the longest:
/// the versions of the part planned on the newest registry revision (a rollback serves a
/// lower version number, so numbers alone do not order them); from nodes that predate
/// revisions, the newest of each view (versions only moved forward then).
fn newest_versions(parts: &[Part]) -> Vec<u32> {
    let longest = parts
        .iter()
        .map(|p| p.resp.head.view_versions.len())
        .max()
        .unwrap_or(0);
    let candidates = parts
        .iter()
        .filter(|p| p.resp.head.view_versions.len() == longest);
    if let Some(p) = candidates
        .clone()
        .filter(|p| p.resp.head.registry_revision > 0)
        .max_by_key(|p| p.resp.head.registry_revision)
    {
        return p.resp.head.view_versions.clone();
    }
    let mut newest = vec![0u32; longest];
    for p in candidates {
        for (n, v) in newest.iter_mut().zip(&p.resp.head.view_versions) {
            *n = (*n).max(*v);
        }
    }
    newest
}

type PartsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Part>, ClientError>> + Send + 'a>>;

/// State of one `get_online_features` call.
pub(crate) struct Call<'a> {
    inner: &'a Inner,
    features: &'a [String],
    /// `features` and the feature service encoded once for all the lookup's sub-requests.
    head: prost::bytes::Bytes,
    feature_service: &'a str,
    batch: ShardedBatch<'a>,
    extra: &'a Watermarks,
    event_times: bool,
    as_of: Option<&'a crate::lookup::AsOfSpec>,
    deadline: Instant,
    deadline_len: Duration,
    /// The latest error a node answered with (e.g. BEHIND): reported when the deadline
    /// cuts the call, instead of the timeout that merely ended it.
    last_answer: std::sync::Mutex<Option<tonic::Status>>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(inner: &'a Inner, lookup: &'a Lookup) -> Self {
        let d = lookup.deadline.unwrap_or(inner.config.deadline);
        let table = inner.map.current();
        Call {
            inner,
            features: &lookup.features,
            head: OutgoingLookup::encode_head(&lookup.features, &lookup.feature_service),
            feature_service: &lookup.feature_service,
            batch: shard_batch_at(
                &table,
                &lookup.keys,
                lookup.as_of.as_ref().map_or(&[][..], |a| &a.key_times),
            ),
            extra: &lookup.min_watermarks,
            event_times: lookup.event_times,
            as_of: lookup.as_of.as_ref(),
            deadline: Instant::now() + d,
            deadline_len: d,
            last_answer: std::sync::Mutex::new(None),
        }
    }

    /// Runs the call.
    pub(crate) async fn run(self) -> Result<LookupResult, ClientError> {
        let parts = self.fetch_consistent().await?;
        let mut loc = vec![(u32::MAX, 0u32); self.batch.unique.len()];
        for (p, part) in parts.iter().enumerate() {
            for (row, &u) in part.keys.iter().enumerate() {
                loc[u as usize] = (p as u32, row as u32);
            }
        }
        let rows = self
            .batch
            .row_to_unique
            .iter()
            .map(|&u| loc[u as usize])
            .collect::<Vec<_>>();
        if !crate::lookup::in_request_order(parts.len(), &rows) {
            self.inner
                .stats
                .merged_lookups
                .fetch_add(1, Ordering::Relaxed);
        }
        LookupResult::assemble(parts.into_iter().map(|p| p.resp).collect(), rows)
    }

    /// Runs the call and returns each node's answer with the positions of its rows in the
    /// lookup's keys (which the caller made distinct: a key's unique index is then its
    /// position).
    pub(crate) async fn run_parts(
        self,
    ) -> Result<Vec<(GetOnlineFeaturesResponse, Vec<u32>)>, ClientError> {
        let parts = self.fetch_consistent().await?;
        parts
            .into_iter()
            .map(|p| {
                let resp = p.resp.into_response().map_err(crate::lookup::malformed)?;
                Ok((resp, p.keys))
            })
            .collect()
    }

    /// Every shard's part, all read at the same view versions: a lookup fanned out while a
    /// view version is being promoted never returns columns of two versions. Parts read
    /// at an older version than another part are read again — from another replica if
    /// there is one (the node answering old may not have applied the promotion yet) —
    /// until they agree, within `MAX_VERSION_ROUNDS` and the deadline; otherwise the call
    /// fails UNAVAILABLE rather than mix.
    async fn fetch_consistent(&'a self) -> Result<Vec<Part>, ClientError> {
        let shards: Vec<u32> = self.batch.by_shard.keys().copied().collect();
        let mut parts = self.fetch(shards, Excluded::default(), true, 0).await?;
        for p in &parts {
            self.inner
                .schema
                .note_revision(p.resp.head.registry_revision);
        }
        // The common case, checked without allocating: every part at the same versions.
        if parts
            .windows(2)
            .all(|w| w[0].resp.head.view_versions == w[1].resp.head.view_versions)
        {
            return Ok(parts);
        }
        let mut round = 0;
        loop {
            let newest = newest_versions(&parts);
            let (stale, fresh): (Vec<Part>, Vec<Part>) = parts
                .into_iter()
                // A node older than `view_versions` answers none: its version is unknown,
                // so its part is taken as it is (a rolling upgrade must not fail lookups).
                .partition(|p| {
                    !p.resp.head.view_versions.is_empty() && p.resp.head.view_versions != newest
                });
            parts = fresh;
            if stale.is_empty() {
                return Ok(parts);
            }
            if round == MAX_VERSION_ROUNDS || Instant::now() >= self.deadline {
                return Err(ClientError::Rpc(tonic::Status::unavailable(format!(
                    "replicas kept answering at different view versions ({:?} and {newest:?}): a view version is being promoted or rolled back; retry",
                    stale[0].resp.head.view_versions
                ))));
            }
            self.inner
                .stats
                .version_retries
                .fetch_add(1, Ordering::Relaxed);
            counter!(m::RETRIES, "reason" => "version").increment(1);
            let mut excluded = Excluded::default();
            let mut shards = Vec::new();
            for p in &stale {
                excluded.node(p.node);
                shards.extend_from_slice(&p.shards);
            }
            if round > 0 {
                // Give the lagging nodes a moment to apply the registry change.
                tokio::time::sleep(Duration::from_millis(5 << round.min(4))).await;
            }
            parts.extend(self.fetch(shards, excluded, false, 0).await?);
            round += 1;
        }
    }

    fn deadline_error(&self, last: Option<ClientError>) -> ClientError {
        let last = match last {
            // Already a deadline error of this call: do not nest.
            Some(e @ ClientError::DeadlineExceeded { .. }) if self.is_own_deadline(&e) => return e,
            // A node's answer says more than a timeout or a routing failure.
            Some(ClientError::Rpc(ref s)) if ErrorCode::from_status(s).is_some() => last,
            other => self
                .last_answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .map(ClientError::Rpc)
                .or(other),
        };
        ClientError::DeadlineExceeded {
            deadline: self.deadline_len,
            last: last.map(Box::new),
        }
    }

    fn is_own_deadline(&self, e: &ClientError) -> bool {
        matches!(e, ClientError::DeadlineExceeded { deadline, .. } if *deadline == self.deadline_len)
    }

    /// Fetches every key of `shards`, avoiding `excluded` nodes when possible.
    fn fetch(
        &'a self,
        shards: Vec<u32>,
        mut excluded: Excluded,
        may_hedge: bool,
        round: u32,
    ) -> PartsFuture<'a> {
        Box::pin(async move {
            let groups = self.route_or_wait(&shards, &mut excluded).await?;
            let results = join_all(
                groups
                    .into_iter()
                    .map(|g| self.fetch_group(g, excluded.clone(), may_hedge, round)),
            )
            .await;
            let mut parts = Vec::new();
            for r in results {
                parts.extend(r?);
            }
            Ok(parts)
        })
    }

    /// Routes `shards`; when no replica is left (all excluded, or none servable), refreshes
    /// the map once, then gives excluded replicas another chance after a short backoff
    /// (a behind replica may have caught up), until the deadline.
    async fn route_or_wait(
        &self,
        shards: &[u32],
        excluded: &mut Excluded,
    ) -> Result<Vec<Group>, ClientError> {
        let mut backoff = Duration::from_millis(5);
        let mut refreshed = false;
        loop {
            let table = self.inner.map.current();
            let err = match route(
                &table,
                shards,
                &self.inner.pool,
                excluded,
                &self.inner.lagging,
                &self.inner.rng,
            ) {
                Ok(groups) => return Ok(groups),
                Err(e) => e,
            };
            if Instant::now() + backoff >= self.deadline {
                return Err(self.deadline_error(Some(err)));
            }
            if !refreshed {
                refreshed = true;
                let _ = self.inner.map.refresh(None, "no_replica").await;
                continue;
            }
            excluded.clear();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// After `g` failed with `e`: refresh the map and re-route, or retry on another
    /// replica within the deadline and budget, or give up.
    async fn recover(
        &'a self,
        g: Group,
        e: ClientError,
        mut excluded: Excluded,
        may_hedge: bool,
        round: u32,
    ) -> Result<Vec<Part>, ClientError> {
        if let ClientError::Rpc(status) = &e
            && ErrorCode::from_status(status).is_some()
        {
            *self.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
        }
        if round >= MAX_ROUNDS {
            return Err(e);
        }
        // A node's NotFound for names the client's schema has is that node's registry
        // behind the raft log (a view applied a moment ago): another replica answers.
        let recovery = Recovery::of_with_registry(&e, &self.inner.schema, &self.inner.map, |s| {
            s.knows_refs(self.features, self.feature_service)
        })
        .await;
        let reason = match recovery {
            Recovery::Fail => return Err(e),
            _ if Instant::now() >= self.deadline => return Err(self.deadline_error(Some(e))),
            Recovery::RefreshMap(epoch) => {
                // A routing correction, not extra load: not charged to the budget.
                self.inner.stats.wrong_shard.fetch_add(1, Ordering::Relaxed);
                let _ = self.inner.map.refresh(epoch, "wrong_shard").await;
                "wrong_shard"
            }
            recovery @ (Recovery::OtherReplica | Recovery::NodeDown) => {
                self.note_failure(&g, &e);
                // The first re-route after BEHIND is a routing correction, like WRONG_SHARD:
                // the session needs an offset this replica has not applied yet and another
                // replica usually has (replicas ingest independently). Free, so a client
                // reading while replicas catch up does not spend its budget; later ones pay.
                // So is BEHIND from a replica probed with a short wait because it lagged
                // recently: the node answered without waiting, so the probe cost it little.
                let behind = e.code() == Some(ErrorCode::Behind);
                if behind {
                    self.inner.stats.behind.fetch_add(1, Ordering::Relaxed);
                }
                let probe = self.inner.lagging.wait_for(g.node.id, &g.shards).is_some();
                // The shards the node named: lagging (BEHIND), or placed on it but still
                // opening (UNAVAILABLE: it restarted, or they were just added). Only those
                // move; the node keeps the others.
                let (lagging, opening) = match &e {
                    ClientError::Rpc(status) if recovery == Recovery::OtherReplica => (
                        behind_shards_from_status(status),
                        opening_shards_from_status(status),
                    ),
                    _ => Default::default(),
                };
                // An opening replica refused at once without reading and the map is right:
                // like WRONG_SHARD, moving its shards is a routing correction, free (a burst
                // of them after a partition heals spent the whole budget: found by the
                // chaos smoke set's partition run).
                let correction = (behind && (round == 0 || probe)) || !opening.is_empty();
                if !correction && !self.inner.withdraw() {
                    return Err(ClientError::BudgetExhausted(Box::new(e)));
                }
                if lagging.is_empty() && opening.is_empty() {
                    excluded.node(g.node.id);
                }
                for &shard in &opening {
                    excluded.replica(g.node.id, shard);
                }
                for shard in lagging {
                    excluded.replica(g.node.id, shard);
                    self.inner.lagging.note(g.node.id, shard);
                }
                if recovery == Recovery::NodeDown {
                    "node_down"
                } else if !opening.is_empty() {
                    "opening"
                } else {
                    e.code().map_or("unavailable", |c| c.as_str())
                }
            }
        };
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        counter!(m::RETRIES, "reason" => reason).increment(1);
        self.fetch(g.shards, excluded, may_hedge, round + 1).await
    }
}

mod attempt;

#[cfg(test)]
mod tests {
    use super::*;

    fn part(versions: &[u32]) -> Part {
        part_at(0, versions)
    }

    fn part_at(registry_revision: u64, versions: &[u32]) -> Part {
        Part {
            resp: RawLookupResponse {
                head: GetOnlineFeaturesResponse {
                    view_versions: versions.to_vec(),
                    registry_revision,
                    ..Default::default()
                },
                packed_columns: Vec::new(),
            },
            keys: Vec::new(),
            node: quiver_proto::NodeId(1),
            shards: Vec::new(),
        }
    }

    #[test]
    fn the_newest_versions_are_the_maximum_per_view_of_the_longest_answers() {
        assert_eq!(newest_versions(&[]), Vec::<u32>::new());
        assert_eq!(newest_versions(&[part(&[1, 2]), part(&[1, 2])]), vec![1, 2]);
        // One view promoted on one node first: its answer is the target.
        assert_eq!(newest_versions(&[part(&[1, 2]), part(&[2, 2])]), vec![2, 2]);
        // Two views promoted on different nodes: the newest of each.
        assert_eq!(newest_versions(&[part(&[2, 1]), part(&[1, 3])]), vec![2, 3]);
        // A node without the field (older) answers no versions: never the target (and
        // its part is not read again: see `fetch_consistent`).
        assert_eq!(newest_versions(&[part(&[]), part(&[4])]), vec![4]);
    }

    #[test]
    fn with_registry_revisions_the_newest_registry_decides_even_a_lower_version() {
        // A rollback from v2 to v1, applied by one node first: v1 is the target.
        assert_eq!(
            newest_versions(&[part_at(7, &[2, 5]), part_at(8, &[1, 5])]),
            vec![1, 5]
        );
        // A promotion, the other way round.
        assert_eq!(
            newest_versions(&[part_at(9, &[3, 5]), part_at(8, &[1, 5])]),
            vec![3, 5]
        );
        // Longer answers first, as without revisions.
        assert_eq!(
            newest_versions(&[part_at(9, &[3]), part_at(8, &[1, 5])]),
            vec![1, 5]
        );
    }
}
