//! One sub-request of a lookup: the message for a node, one attempt bounded by one timer
//! (the hedge's time, then the attempt timeout), its hedge, and the node's breaker.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Fuse;
use metrics::counter;
use quiver_proto::lookup_request::OutgoingLookup;
use quiver_proto::v1::GetOnlineFeaturesRequest;

use super::{Call, DRAINING_AVOID, Part, PartsFuture};
use crate::error::ClientError;
use crate::metrics as m;
use crate::retry::Recovery;
use crate::router::{Excluded, Group};

/// Counts a finished sub-request, by its outcome (`None`: it succeeded).
fn count_sub_request(err: Option<&ClientError>) {
    let label = err.map_or("ok", |e| e.code().map_or("error", |c| c.as_str()));
    counter!(m::SUBREQUESTS, "result" => label).increment(1);
}

impl<'a> Call<'a> {
    fn request_for(&self, g: &Group) -> (OutgoingLookup, Vec<u32>) {
        let keys: Vec<u32> = if g.shards.len() == self.batch.by_shard.len() {
            // One node answers every shard of the lookup (a group's shards are distinct
            // shards of the batch): the keys go in the lookup's own order, which a node
            // answers in, so a lookup of distinct keys is taken as the node sent it,
            // without a merge into request order (`LookupResult::assemble`).
            (0..self.batch.unique.len() as u32).collect()
        } else {
            g.shards
                .iter()
                .flat_map(|s| self.batch.by_shard[s].iter().copied())
                .collect()
        };
        let rest = GetOnlineFeaturesRequest {
            min_watermarks: self.inner.session.minimums(&g.shards, self.extra),
            watermark_wait_ms: self
                .inner
                .lagging
                .wait_for(g.node.id, &g.shards)
                .map_or(0, |d| d.as_millis().max(1) as u32),
            include_event_times: self.event_times,
            as_of: self.as_of.map(|a| {
                let times = if self.batch.unique_times.is_empty() {
                    Vec::new()
                } else {
                    keys.iter()
                        .map(|&u| self.batch.unique_times[u as usize])
                        .collect()
                };
                a.to_wire(times)
            }),
            ..Default::default()
        };
        let req = OutgoingLookup {
            head: self.head.clone(),
            keys: OutgoingLookup::encode_keys(keys.iter().map(|&u| self.batch.unique[u as usize])),
            rest,
        };
        (req, keys)
    }

    /// How long the next attempt may take: the attempt timeout, cut to what is left of
    /// the call's deadline.
    fn attempt_timeout(&self) -> Result<Duration, ClientError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.deadline_error(None));
        }
        Ok(remaining.min(self.inner.config.attempt_timeout))
    }

    /// One sub-request to one node. The caller bounds it by `timeout`, which the node is
    /// told as well.
    async fn send(&self, g: &Group, timeout: Duration) -> Result<Part, ClientError> {
        let (req, keys) = self.request_for(g);
        let mut request = tonic::Request::new(req);
        // Propagated as grpc-timeout: the node stops waiting for watermarks in time.
        request.set_timeout(timeout);
        let _in_flight = g.node.begin();
        self.inner
            .stats
            .sub_requests
            .fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut client = g.node.lookups();
        let outcome = match client.send_raw(request).await {
            Ok(resp) => {
                if let Some(epoch) = resp
                    .metadata()
                    .get(quiver_proto::error::EPOCH_METADATA_KEY)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                {
                    self.inner.map.notice_epoch(epoch);
                }
                let draining = resp
                    .metadata()
                    .contains_key(quiver_proto::error::DRAINING_METADATA_KEY);
                let resp = resp.into_inner();
                let well_formed = resp
                    .head
                    .columns
                    .iter()
                    .all(|c| c.values.len() == keys.len() && c.statuses.len() == keys.len());
                if well_formed {
                    g.node.on_success(self.inner.config.breaker_cooldown);
                    if draining {
                        g.node.on_draining(DRAINING_AVOID);
                    }
                    self.inner.hedge.record(keys.len(), started.elapsed());
                    self.inner.session.observe(&resp.head.watermarks);
                    self.inner.lagging.served(g.node.id, &g.shards);
                    Ok(Part {
                        resp,
                        keys,
                        node: g.node.id,
                        shards: g.shards.clone(),
                    })
                } else {
                    Err(ClientError::Rpc(tonic::Status::internal(format!(
                        "node {} answered {} keys with a malformed response",
                        g.node.addr,
                        keys.len()
                    ))))
                }
            }
            Err(status) => Err(ClientError::Rpc(status)),
        };
        count_sub_request(outcome.as_ref().err());
        outcome
    }

    /// A sub-request that took its whole attempt `timeout` (counted here: its `send`
    /// was cut before it could count itself).
    fn timed_out(timeout: Duration) -> ClientError {
        let e = ClientError::DeadlineExceeded {
            deadline: timeout,
            last: None,
        };
        count_sub_request(Some(&e));
        e
    }

    /// Sends `g`, hedging it if it is slow, and recovers from a failure.
    pub(super) async fn fetch_group(
        &'a self,
        g: Group,
        excluded: Excluded,
        may_hedge: bool,
        round: u32,
    ) -> Result<Vec<Part>, ClientError> {
        let keys: usize = g.shards.iter().map(|s| self.batch.by_shard[s].len()).sum();
        let delay = if may_hedge {
            self.inner.hedge.delay(keys)
        } else {
            None
        };
        let result = match self.attempt_timeout() {
            Ok(timeout) => self.attempt(&g, &excluded, delay, timeout, round).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(parts) => Ok(parts),
            Err(e) => self.recover(g, e, excluded, may_hedge, round).await,
        }
    }

    /// Sends `g` once, bounded by `timeout`; if it has not answered after `hedge_after`,
    /// sends a hedge to other replicas too and takes the first answer. One timer serves
    /// both (first the hedge's time, then the timeout's): each timer a sub-request arms
    /// earlier than the runtime's next wake-up costs a wake-up of its timer driver.
    async fn attempt(
        &'a self,
        g: &Group,
        excluded: &Excluded,
        hedge_after: Option<Duration>,
        timeout: Duration,
        round: u32,
    ) -> Result<Vec<Part>, ClientError> {
        let start = tokio::time::Instant::now();
        let timeout_at = start + timeout;
        let hedge_at = hedge_after.map(|d| start + d).filter(|&at| at < timeout_at);
        // Fused so that a primary which times out while a hedge runs is dropped (its
        // call cancelled, its node's in-flight count released) before the hedge is
        // awaited.
        let primary = self.send(g, timeout).fuse();
        tokio::pin!(primary);
        let timer = tokio::time::sleep_until(hedge_at.unwrap_or(timeout_at));
        tokio::pin!(timer);
        tokio::select! {
            r = &mut primary => return r.map(|p| vec![p]),
            () = &mut timer => {}
        }
        if hedge_at.is_none() {
            return Err(Self::timed_out(timeout));
        }
        timer.as_mut().reset(timeout_at);
        let Some(hedge) = self.hedge(g, excluded, round) else {
            return tokio::select! {
                r = &mut primary => r.map(|p| vec![p]),
                () = &mut timer => Err(Self::timed_out(timeout)),
            };
        };
        tokio::pin!(hedge);
        tokio::select! {
            r = &mut primary => match r {
                Ok(p) => Ok(vec![p]),
                Err(e) => {
                    self.note_failure(g, &e);
                    hedge.await
                }
            },
            () = &mut timer => {
                let e = Self::timed_out(timeout);
                primary.set(Fuse::terminated());
                self.note_failure(g, &e);
                hedge.await
            }
            r = &mut hedge => match r {
                Ok(parts) => {
                    self.inner.stats.hedge_wins.fetch_add(1, Ordering::Relaxed);
                    counter!(m::HEDGE_WINS).increment(1);
                    Ok(parts)
                }
                Err(_) => tokio::select! {
                    r = &mut primary => r.map(|p| vec![p]),
                    () = &mut timer => Err(Self::timed_out(timeout)),
                },
            },
        }
    }

    /// Starts a hedge of `g` on other replicas if every shard has one and the budget
    /// allows; hedges do not hedge again.
    fn hedge(&'a self, g: &Group, excluded: &Excluded, round: u32) -> Option<PartsFuture<'a>> {
        let mut others = excluded.clone();
        others.node(g.node.id);
        let table = self.inner.map.current();
        let has_alternative = g.shards.iter().all(|s| {
            table.shards.get(*s as usize).is_some_and(|rs| {
                rs.iter()
                    .any(|r| r.servable && !others.contains(r.node, *s))
            })
        });
        if !has_alternative {
            return None;
        }
        if !self.inner.withdraw() {
            return None;
        }
        self.inner.stats.hedges.fetch_add(1, Ordering::Relaxed);
        counter!(m::HEDGES).increment(1);
        Some(self.fetch(g.shards.clone(), others, false, round + 1))
    }

    /// Counts a transport failure against the node's breaker.
    pub(super) fn note_failure(&self, g: &Group, e: &ClientError) {
        if Recovery::of(e) == Recovery::NodeDown
            && g.node.on_failure(
                self.inner.config.breaker_failures,
                self.inner.config.breaker_cooldown,
            )
        {
            counter!(m::BREAKER_OPENED).increment(1);
        }
    }
}
