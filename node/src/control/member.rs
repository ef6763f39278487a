//! The member side of the control plane, run by every node: join the cluster, send
//! heartbeats with this node's replica reports to the leader, keep track of whether this
//! node's copy of the state is current (read index), and export Raft's figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use quiver_proto::v1::control_service_client::ControlServiceClient;
use quiver_proto::v1::{JoinRequest, ReplicaReport, ReportRequest};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::error::{ControlError, NoLeader};
use super::plane::ControlPlane;
use super::state::MemberStatus;
use crate::tasks::Ticker;

impl ControlPlane {
    /// Joins (or re-joins) the cluster and sends heartbeats, forever.
    pub(super) async fn run_member_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = Ticker::new(self.config.heartbeat_interval, &cancel);
        let mut last_ok: Option<Instant> = None;
        while ticker.tick().await {
            // Out of touch with the leader for a grace period (partitioned, paused): the
            // state may have moved on without us.
            if last_ok.is_none_or(|t| t.elapsed() > self.config.dead_after) {
                self.set_fresh(false);
            }
            let state = self.state();
            let me = state.members.get(&self.config.node_id);
            let registered = me.is_some_and(|m| {
                m.addr == self.config.advertise_addr && m.status != MemberStatus::Dead
            });
            if !registered {
                if let Err(e) = self.join().await {
                    debug!(error = %e, "joining the cluster");
                }
                continue;
            }
            let reports = self.local_reports.borrow().clone();
            match self.heartbeat(reports, !self.is_fresh()).await {
                Ok(read_index) => {
                    last_ok = Some(Instant::now());
                    if let Some(index) = read_index {
                        self.catch_up_to(index).await;
                    }
                }
                Err(e) => debug!(error = %e, "heartbeat failed"),
            }
        }
    }

    pub(super) fn set_fresh(&self, fresh: bool) {
        let changed = self
            .fresh
            .send_if_modified(|f| std::mem::replace(f, fresh) != fresh);
        if changed {
            info!(fresh, "control-plane state freshness changed");
        }
    }

    /// Waits (bounded) until this node has applied log index `index`, then marks its
    /// state fresh. Whether it got there.
    pub(super) async fn catch_up_to(&self, index: u64) -> bool {
        let applied = self
            .raft
            .wait(Some(self.member_rpc_timeout()))
            .applied_index_at_least(Some(index), "control-plane read index")
            .await;
        match applied {
            Ok(_) => {
                self.set_fresh(true);
                true
            }
            Err(e) => {
                debug!(index, error = %e, "catching up with the leader's read index");
                false
            }
        }
    }

    /// Makes this node's state include everything the leader had committed at some
    /// moment after `since`: a read-index round (the leader's commit index, confirmed by
    /// a quorum), then waiting to apply up to it. For answers that must not be judged on
    /// a state that lags a moment behind what a client already saw committed — a token
    /// created an instant ago through another node. Concurrent callers share one round:
    /// a caller that waited for the lock finds a round that started after its `since`
    /// and returns at once, so a burst costs one round trip to the leader, not one each.
    ///
    /// # Errors
    /// [`ControlError`] if no leader answered or this node did not apply up to the read
    /// index within the member RPC timeout.
    pub async fn catch_up_since(&self, since: Instant) -> Result<(), ControlError> {
        let mut last = self.last_catch_up.lock().await;
        if last.is_some_and(|t| t >= since) {
            return Ok(());
        }
        let started = Instant::now();
        let reports = self.local_reports.borrow().clone();
        let index = self
            .heartbeat(reports, true)
            .await?
            .ok_or(ControlError::NoLeader(NoLeader::Changing))?;
        if !self.catch_up_to(index).await {
            return Err(ControlError::Lagging { index });
        }
        *last = Some(started);
        Ok(())
    }

    /// The leader's read index: the log index committed when it last confirmed its
    /// leadership with a quorum. `None` if this node does not lead.
    pub async fn read_index(&self) -> Option<u64> {
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Some(read.map_or(0, |l| l.index)),
            Err(_) => None,
        }
    }

    pub(super) async fn join(&self) -> Result<(), ControlError> {
        let req = JoinRequest {
            node_id: self.config.node_id.0,
            addr: self.config.advertise_addr.clone(),
            zone: self.config.zone.clone(),
        };
        // Prefer the known leader; otherwise any seed or initial voter forwards it.
        let mut targets: Vec<String> = self.leader_addr().map(|(_, a)| vec![a]).unwrap_or_default();
        targets.extend(self.config.seeds.iter().cloned());
        targets.extend(self.config.initial_voters.values().cloned());
        for addr in targets {
            if addr == self.config.advertise_addr && self.leader() != Some(self.config.node_id) {
                continue;
            }
            let Ok(channel) = self.channels.get(&addr) else {
                continue;
            };
            let mut client = ControlServiceClient::new(channel);
            let call = client.join(req.clone());
            match tokio::time::timeout(self.member_rpc_timeout(), call).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(s)) => debug!(%addr, error = %s.message(), "join attempt failed"),
                Err(_) => debug!(%addr, "join attempt timed out"),
            }
        }
        Err(ControlError::NoLeader(NoLeader::JoinNotAccepted))
    }

    /// Sends this node's heartbeat; with `want_read_index`, returns the leader's read
    /// index.
    pub(super) async fn heartbeat(
        &self,
        replicas: Vec<ReplicaReport>,
        want_read_index: bool,
    ) -> Result<Option<u64>, ControlError> {
        let (leader, addr) = self
            .leader_addr()
            .ok_or(ControlError::NoLeader(NoLeader::NotElected))?;
        if leader == self.config.node_id {
            self.handle_report(leader, replicas);
            if !want_read_index {
                return Ok(None);
            }
            return self
                .read_index()
                .await
                .map(Some)
                .ok_or(ControlError::NoLeader(NoLeader::Changing));
        }
        let channel = self.leader_channel(leader, &addr)?;
        let mut client = ControlServiceClient::new(channel);
        let call = client.report(ReportRequest {
            node_id: self.config.node_id.0,
            replicas,
            want_read_index,
        });
        let resp = tokio::time::timeout(self.member_rpc_timeout(), call)
            .await
            .map_err(|_| ControlError::timed_out(leader, &addr))?
            .map_err(|s| ControlError::from_leader_status(leader, &addr, &s))?;
        Ok(resp.into_inner().read_index)
    }

    /// Bound on one heartbeat or join call. Without it, a call to a leader that stopped
    /// answering without closing its connections (SIGSTOP, a network partition) hung the
    /// member loop: no heartbeat reached the *new* leader, which declared this live node
    /// dead and dropped its replicas — shards were left with no serving replica (found
    /// by chaos pause-node: 2 s with no replica of a shard). A third of `dead_after` (at
    /// least two heartbeat intervals): a slow but live leader on a loaded machine still
    /// gets its heartbeats (two heartbeat intervals timed out healthy calls under CI
    /// load and kept a scale-out from settling), and a dead one is left in time for at
    /// least two attempts at its successor within the grace period.
    pub(crate) fn member_rpc_timeout(&self) -> Duration {
        (self.config.dead_after / 3)
            .max(self.config.heartbeat_interval * 2)
            .max(Duration::from_millis(100))
    }

    /// Exports Raft term, leadership, applied index and the epoch as metrics.
    pub(super) async fn run_metrics_loop(self: Arc<Self>, cancel: CancellationToken) {
        use crate::metrics as m;
        let mut rx = self.raft.metrics();
        let mut leader = None;
        loop {
            let snapshot = rx.borrow_and_update().clone();
            metrics::gauge!(m::CONTROL_RAFT_TERM).set(snapshot.current_term as f64);
            metrics::gauge!(m::CONTROL_IS_LEADER)
                .set(f64::from(u8::from(snapshot.state == ServerState::Leader)));
            metrics::gauge!(m::CONTROL_APPLIED_INDEX)
                .set(snapshot.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!(m::CONTROL_EPOCH).set(self.state().epoch as f64);
            if snapshot.current_leader != leader {
                if leader.is_some() || snapshot.current_leader.is_some() {
                    metrics::counter!(m::CONTROL_LEADER_CHANGES).increment(1);
                    info!(leader = ?snapshot.current_leader, term = snapshot.current_term, "control-plane leader changed");
                }
                leader = snapshot.current_leader;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                res = rx.changed() => if res.is_err() { return },
            }
        }
    }
}
