//! Faults. Each [`Fault`] is applied to a (seeded) random target, held, healed, and then
//! the nemesis waits for recovery: every shard back to R Serving replicas that have
//! applied everything acknowledged before the heal. Every fault is recorded with its
//! window and recovery time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cluster::ChaosCluster;
use crate::probe;
use crate::rng::Rng;
use crate::workload::{Recorder, VIEW, lock};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL a random node; restart it after the hold.
    KillRandom,
    /// SIGKILL the Raft leader; restart it after the hold.
    KillLeader,
    /// SIGSTOP a random node (a gray failure: its connections stay open); SIGCONT after
    /// the hold.
    PauseNode,
    /// Cut a random node off the network (peers, clients, broker); reconnect after the
    /// hold.
    Partition,
    /// SIGSTOP the Kafka broker; SIGCONT after the hold.
    BrokerPause,
    /// SIGTERM and restart every node in turn, waiting for recovery after each.
    RollingRestart,
    /// Add a node, wait until it serves, then drain and remove another one.
    AddRemove,
    /// Build and promote a new version of the workload's view, roll back to the previous
    /// one, and forward again, while the workload runs.
    VersionSwap,
}

/// Every fault, in catalogue order.
pub const ALL: [Fault; 8] = [
    Fault::KillRandom,
    Fault::KillLeader,
    Fault::PauseNode,
    Fault::Partition,
    Fault::BrokerPause,
    Fault::RollingRestart,
    Fault::AddRemove,
    Fault::VersionSwap,
];

impl Fault {
    /// The scenario name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillRandom => "kill-random",
            Fault::KillLeader => "kill-leader",
            Fault::PauseNode => "pause-node",
            Fault::Partition => "partition",
            Fault::BrokerPause => "broker-pause",
            Fault::RollingRestart => "rolling-restart",
            Fault::AddRemove => "add-remove",
            Fault::VersionSwap => "version-swap",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown scenario {s:?} (expected one of {}, or mixed)",
                names.join(", ")
            )
        })
    }
}

/// Parses a scenario: a fault name, a comma-separated list of them, or `mixed` (all).
///
/// # Errors
/// Names an unknown fault.
pub fn parse_scenario(s: &str) -> Result<Vec<Fault>, String> {
    if s == "mixed" {
        return Ok(ALL.to_vec());
    }
    s.split(',').map(|p| p.trim().parse()).collect()
}

/// One applied fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// The fault.
    pub fault: Fault,
    /// What it hit, e.g. `node 2`.
    pub target: String,
    /// Fault applied (µs since the run started).
    pub start_us: u64,
    /// Fault healed.
    pub heal_us: u64,
    /// Cluster recovered (R Serving replicas, caught up), `None` if it did not in time.
    pub recovered_us: Option<u64>,
    /// Heal → recovered, in milliseconds.
    pub recovery_ms: Option<f64>,
    /// What did not recover, when it did not.
    pub error: Option<String>,
}

/// How faults are scheduled.
#[derive(Debug, Clone)]
pub struct NemesisSpec {
    /// Faults to cycle through (in a seeded random order per round).
    pub faults: Vec<Fault>,
    /// How long a fault is held before it is healed.
    pub hold: Duration,
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// Longest wait for recovery after a heal.
    pub recovery_timeout: Duration,
    /// Key count (to probe each shard).
    pub keys: u32,
    /// Seed of the order and targets.
    pub seed: u64,
}

/// The nemesis: faults from `spec` until `until`, then returns their records.
pub struct Nemesis {
    cluster: Arc<Mutex<ChaosCluster>>,
    rec: Arc<Recorder>,
    spec: NemesisSpec,
    rng: Rng,
}

impl Nemesis {
    /// A nemesis over `cluster`, reading acknowledgements from `rec`.
    pub fn new(cluster: Arc<Mutex<ChaosCluster>>, rec: Arc<Recorder>, spec: NemesisSpec) -> Self {
        let rng = Rng::new(spec.seed ^ 0x006E_656D_6573_6973);
        Nemesis {
            cluster,
            rec,
            spec,
            rng,
        }
    }

    /// Runs cluster operation `op` off the runtime's workers.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut ChaosCluster) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let c = self.cluster.clone();
        tokio::task::spawn_blocking(move || op(&mut lock(&c)))
            .await
            .context("cluster operation panicked")?
    }

    fn endpoints(&self) -> (Vec<String>, Vec<u64>) {
        let c = lock(&self.cluster);
        (c.endpoints(), c.up())
    }

    async fn recover(&self) -> Result<Duration, String> {
        let (endpoints, up) = self.endpoints();
        let acked = self.rec.acked_offsets();
        probe::wait_healthy(
            &endpoints,
            &up,
            &acked,
            self.spec.keys,
            self.spec.recovery_timeout,
        )
        .await
    }

    async fn hold(&self, cancel: &CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(self.spec.hold) => {}
        }
    }

    /// Applies faults until `until` (a fault starts only if it can be held and healed
    /// before then) or cancellation. Errors are the harness's own failures.
    ///
    /// # Errors
    /// When a process operation fails.
    pub async fn run(
        mut self,
        until: Instant,
        cancel: CancellationToken,
    ) -> anyhow::Result<Vec<FaultRecord>> {
        let mut records = Vec::new();
        let mut order: Vec<Fault> = Vec::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(records),
                () = tokio::time::sleep(self.spec.quiet) => {}
            }
            if Instant::now() + self.spec.hold + Duration::from_secs(1) > until {
                return Ok(records);
            }
            if order.is_empty() {
                order = self.spec.faults.clone();
                // Fisher–Yates with the run's seed.
                for i in (1..order.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
            }
            let fault = order.pop().expect("refilled above");
            let record = self.apply(fault, &cancel).await?;
            tracing::info!(
                fault = %record.fault,
                target = %record.target,
                recovery_ms = ?record.recovery_ms,
                error = ?record.error,
                "fault done"
            );
            records.push(record);
        }
    }

    async fn apply(
        &mut self,
        fault: Fault,
        cancel: &CancellationToken,
    ) -> anyhow::Result<FaultRecord> {
        let (endpoints, up) = self.endpoints();
        let start = Instant::now();
        let target = match fault {
            Fault::KillRandom | Fault::KillLeader => {
                let id = if fault == Fault::KillLeader {
                    probe::cluster_map(&endpoints)
                        .await
                        .map(|m| m.leader_id)
                        .filter(|l| up.contains(l))
                        .context("no Raft leader to kill")?
                } else {
                    self.rng.pick(&up).context("no node is up")?
                };
                self.blocking(move |c| c.kill_9(id)).await?;
                self.hold(cancel).await;
                self.blocking(move |c| c.restart(id)).await?;
                format!("node {id}")
            }
            Fault::PauseNode => {
                let id = self.rng.pick(&up).context("no node is up")?;
                self.blocking(move |c| c.pause(id)).await?;
                self.hold(cancel).await;
                self.blocking(move |c| c.resume(id)).await?;
                format!("node {id}")
            }
            Fault::Partition => {
                let id = self.rng.pick(&up).context("no node is up")?;
                self.blocking(move |c| c.partition(id)).await?;
                self.hold(cancel).await;
                self.blocking(move |c| c.heal(id)).await?;
                format!("node {id}")
            }
            Fault::BrokerPause => {
                self.blocking(|c| {
                    c.pause_broker();
                    Ok(())
                })
                .await?;
                self.hold(cancel).await;
                self.blocking(|c| {
                    c.resume_broker();
                    Ok(())
                })
                .await?;
                "broker".to_string()
            }
            Fault::RollingRestart => {
                for id in &up {
                    let id = *id;
                    self.blocking(move |c| {
                        c.terminate(id)?;
                        c.restart(id)
                    })
                    .await?;
                    if let Err(e) = self.recover().await {
                        return Ok(self.record(
                            fault,
                            format!("node {id} of {up:?}"),
                            start,
                            Err(e),
                        ));
                    }
                }
                format!("nodes {up:?}")
            }
            Fault::VersionSwap => match self.swap_versions().await {
                Ok(target) => target,
                Err(e) => {
                    return Ok(self.record(fault, format!("view {VIEW}"), start, Err(e)));
                }
            },
            Fault::AddRemove => {
                let added = self.blocking(ChaosCluster::add_node).await?;
                if let Err(e) = self.recover().await {
                    return Ok(self.record(fault, format!("added node {added}"), start, Err(e)));
                }
                let victim = self.rng.pick(&up).context("no node is up")?;
                let target = format!("added node {added}, removed node {victim}");
                if let Err(e) = self.drain(victim).await {
                    return Ok(self.record(fault, target, start, Err(e)));
                }
                self.blocking(move |c| c.remove_node(victim)).await?;
                target
            }
        };
        let healed = Instant::now();
        let recovered = self.recover().await;
        let mut r = self.record(fault, target, start, recovered);
        r.heal_us = self.rec.micros(healed);
        r.recovery_ms = r
            .recovered_us
            .map(|t| t.saturating_sub(r.heal_us) as f64 / 1000.0);
        Ok(r)
    }

    /// The version swap: a new version of the workload view (identical but for the
    /// number) is applied, built and promoted; then a rollback serves the previous one
    /// again and another serves the new one. Each change is recorded when the node asked
    /// serves it, for the checker to match the versions reads report.
    async fn swap_versions(&self) -> Result<String, String> {
        let (endpoints, _) = self.endpoints();
        let mut admin = None;
        for e in &endpoints {
            if let Some(c) = probe::connect(e).await {
                admin = Some(c);
                break;
            }
        }
        let mut admin = admin.ok_or("no node answers")?;
        let listed = admin.view_versions(VIEW).await.map_err(|e| e.to_string())?;
        let serving = listed
            .iter()
            .find(|v| v.state == "serving")
            .map(|v| v.version)
            .ok_or_else(|| format!("view {VIEW} has no serving version: {listed:?}"))?;
        let next = listed.iter().map(|v| v.version).max().unwrap_or(serving) + 1;
        admin
            .apply_definitions(crate::workload::view_definition(next), false)
            .await
            .map_err(|e| format!("applying v{next}: {e}"))?;
        self.wait_serving(&mut admin, next).await?;
        for to in [serving, next] {
            admin
                .rollback_view(VIEW, Some(to))
                .await
                .map_err(|e| format!("rolling back to v{to}: {e}"))?;
            self.wait_serving(&mut admin, to).await?;
        }
        Ok(format!(
            "view {VIEW}: v{serving} → v{next} (built, promoted) → v{serving} → v{next} (rollbacks)"
        ))
    }

    /// Waits until `admin`'s node serves `version` of the workload view, then records it.
    async fn wait_serving(
        &self,
        admin: &mut quiver_client::NodeClient,
        version: u32,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.spec.recovery_timeout;
        loop {
            if let Ok(listed) = admin.view_versions(VIEW).await
                && listed
                    .iter()
                    .any(|v| v.version == version && v.state == "serving")
            {
                self.rec.swapped(version);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("v{version} of {VIEW} did not serve in time"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drains `id` and waits until it holds no replica.
    async fn drain(&self, id: u64) -> Result<(), String> {
        let (endpoints, _) = self.endpoints();
        let deadline = Instant::now() + self.spec.recovery_timeout;
        let mut drained = false;
        loop {
            if !drained {
                for e in &endpoints {
                    if let Some(mut c) = probe::connect(e).await
                        && c.drain_node(id).await.is_ok()
                    {
                        drained = true;
                        break;
                    }
                }
            }
            if drained
                && let Some(map) = probe::cluster_map(&endpoints).await
                && map
                    .shards
                    .iter()
                    .all(|s| s.replicas.iter().all(|r| r.node_id != id))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("node {id} still holds replicas after draining"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn record(
        &self,
        fault: Fault,
        target: String,
        start: Instant,
        recovered: Result<Duration, String>,
    ) -> FaultRecord {
        let now = Instant::now();
        let (recovered_us, error) = match recovered {
            Ok(_) => (Some(self.rec.micros(now)), None),
            Err(e) => (None, Some(e)),
        };
        FaultRecord {
            fault,
            target,
            start_us: self.rec.micros(start),
            heal_us: self.rec.micros(now),
            recovered_us,
            recovery_ms: None,
            error,
        }
    }
}

/// Per-fault defaults of the catalogue.
pub fn catalogue() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "kill-random",
            "SIGKILL a random node, restart it on the same data after the hold. Proves: acknowledged writes survive a crash, the client fails over at once (connection refused), the restarted replica catches up from its stored offsets.",
        ),
        (
            "kill-leader",
            "SIGKILL the Raft leader, restart it after the hold. Proves: the control plane elects a new leader and keeps the map; serving does not depend on the leader.",
        ),
        (
            "pause-node",
            "SIGSTOP a random node, SIGCONT after the hold: a gray failure, its connections stay open and nothing answers. Proves: attempt timeouts and hedging route around a frozen replica; it rejoins without serving stale data.",
        ),
        (
            "partition",
            "Cut a random node off the network (peers, clients and broker), reconnect after the hold. Proves: the isolated node's replicas are replaced, it serves nothing older than a client has seen when it comes back.",
        ),
        (
            "broker-pause",
            "SIGSTOP the Kafka broker, SIGCONT after the hold. Proves: reads keep being served from local state while ingestion stalls; acknowledged writes arrive afterwards.",
        ),
        (
            "rolling-restart",
            "SIGTERM and restart every node in turn, waiting for full recovery between nodes. Proves: an upgrade-style roll loses no writes and keeps reads available.",
        ),
        (
            "add-remove",
            "Add a node (it joins through the seeds and takes replicas), then drain and remove a random other node. Proves: replicas move under load without loss or unavailability.",
        ),
        (
            "version-swap",
            "Apply a new version of the workload view (identical but for the number): it is rebuilt from the topic and promoted; then roll back to the previous version and forward again. Proves: no lookup fails and every answer is one version that served while it ran (the checker matches the version each read reports against the swap log), with every value correct.",
        ),
        ("mixed", "All of the above in a seeded random order."),
    ])
}
