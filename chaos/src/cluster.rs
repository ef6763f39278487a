//! The cluster under test: a Tansu broker and `quiver-node` processes, each in a network
//! namespace of its own ([`Network`]), with generated configs, data directories and logs
//! under the run directory. Every process dies with this value (drop: SIGKILL, which also
//! ends a stopped process), also when the harness fails or is interrupted.
//!
//! Process operations block (they wait for ports); callers on the runtime run them with
//! `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use quiver_testkit::{Broker, ClusterSettings, Member, NodeProcess, allocate_on, write_config};

use crate::network::{BROKER_HOST, Network};

/// The source topic of the workload's view.
pub const TOPIC: &str = "chaos";
const GRPC_PORT: u16 = 7070;
const METRICS_PORT: u16 = 9100;
const BROKER_PORT: u16 = 9092;

/// Shape of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Initial node count.
    pub nodes: u32,
    /// Shards (= partitions of the topic).
    pub shard_count: u32,
    /// Replicas per shard.
    pub replication_factor: u32,
    /// A node silent this long is declared dead.
    pub dead_after: Duration,
    /// `[tls]`/`[auth]` for every node; `None`: plaintext, auth disabled.
    pub security_toml: Option<String>,
}

/// A running cluster.
pub struct ChaosCluster {
    // Field order is drop order: processes first, then the namespaces they run in.
    procs: BTreeMap<u64, NodeProcess>,
    broker: Broker,
    net: Network,
    settings: ClusterSettings,
    root: PathBuf,
    members: BTreeMap<u64, Member>,
    /// Node ids the harness stopped on purpose (killed, terminated, removed).
    down: BTreeSet<u64>,
    removed: BTreeSet<u64>,
    starts: BTreeMap<u64, u32>,
}

impl ChaosCluster {
    /// Starts the broker and `spec.nodes` nodes (all initial voters) under `root`.
    ///
    /// # Errors
    /// When the network, the broker or a node cannot be started.
    pub fn start(spec: &ClusterSpec, root: &Path) -> anyhow::Result<Self> {
        let mut net = Network::claim()?;
        net.add_host(BROKER_HOST)?;
        let broker_ns = net.namespace(BROKER_HOST);
        let broker = Broker::start_at(&net.addr(BROKER_HOST), BROKER_PORT, Some(&broker_ns));
        broker.create_topic(TOPIC, spec.shard_count);
        let mut settings = ClusterSettings::new(broker.bootstrap());
        settings.shard_count = spec.shard_count;
        settings.replication_factor = spec.replication_factor;
        settings.dead_after = spec.dead_after;
        // SIGTERM drains as in production: readiness off and answers marked draining
        // for a second before the node stops accepting.
        settings.shutdown_delay = Duration::from_secs(1);
        if let Some(t) = &spec.security_toml {
            settings.security_toml.clone_from(t);
        }
        let mut members = BTreeMap::new();
        for id in 1..=u64::from(spec.nodes) {
            let host = u32::try_from(id).context("node id")?;
            net.add_host(host)?;
            let mut m = allocate_on(&root.join("nodes"), id, &net.addr(host));
            m.grpc = GRPC_PORT;
            m.metrics = METRICS_PORT;
            members.insert(id, m);
        }
        let voters: Vec<String> = members.values().map(Member::voter).collect();
        for m in members.values() {
            write_config(m, &settings, &voters, &[]);
        }
        let mut c = ChaosCluster {
            procs: BTreeMap::new(),
            broker,
            net,
            settings,
            root: root.to_path_buf(),
            members,
            down: BTreeSet::new(),
            removed: BTreeSet::new(),
            starts: BTreeMap::new(),
        };
        let ids: Vec<u64> = c.members.keys().copied().collect();
        for id in ids {
            c.launch(id);
        }
        Ok(c)
    }

    fn launch(&mut self, id: u64) {
        let run = self.starts.entry(id).or_default();
        *run += 1;
        let m = &self.members[&id];
        let ns = self.net.namespace(host(id));
        let p = NodeProcess::start_member(m, *run, Some(&ns));
        self.procs.insert(id, p);
        self.down.remove(&id);
    }

    /// Kafka bootstrap servers.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// Cluster settings (P, R, partitioner).
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// Ids of nodes that should be running (not killed, stopped or removed).
    pub fn up(&self) -> Vec<u64> {
        self.members
            .keys()
            .filter(|id| !self.down.contains(id) && !self.removed.contains(id))
            .copied()
            .collect()
    }

    /// Ids of nodes that are members and not removed (up or down for now).
    pub fn members(&self) -> Vec<u64> {
        self.members
            .keys()
            .filter(|id| !self.removed.contains(id))
            .copied()
            .collect()
    }

    /// `http://addr:port` of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        self.members[&id].endpoint()
    }

    /// Endpoints of the nodes that should be running.
    pub fn endpoints(&self) -> Vec<String> {
        self.up().iter().map(|id| self.endpoint(*id)).collect()
    }

    /// SIGKILL node `id`.
    ///
    /// # Errors
    /// When it is not running.
    pub fn kill_9(&mut self, id: u64) -> anyhow::Result<()> {
        let p = self.procs.remove(&id).context("node is not running")?;
        p.kill_9();
        self.down.insert(id);
        Ok(())
    }

    /// SIGTERM node `id` and wait for its clean exit.
    ///
    /// # Errors
    /// When it is not running.
    pub fn terminate(&mut self, id: u64) -> anyhow::Result<()> {
        let p = self.procs.remove(&id).context("node is not running")?;
        p.terminate();
        self.down.insert(id);
        Ok(())
    }

    /// Starts node `id` again on its data directory.
    ///
    /// # Errors
    /// When it is running already.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.procs.contains_key(&id) {
            bail!("node {id} is running");
        }
        self.launch(id);
        Ok(())
    }

    /// SIGSTOP node `id`.
    ///
    /// # Errors
    /// When it is not running.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.procs.get(&id).context("node is not running")?.pause();
        Ok(())
    }

    /// SIGCONT node `id`.
    ///
    /// # Errors
    /// When it is not running.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.procs.get(&id).context("node is not running")?.resume();
        Ok(())
    }

    /// Cuts node `id` off the network (from peers, clients and the broker).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn partition(&self, id: u64) -> anyhow::Result<()> {
        self.net.partition(host(id))
    }

    /// Reconnects node `id`.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn heal(&self, id: u64) -> anyhow::Result<()> {
        self.net.heal(host(id))
    }

    /// SIGSTOP the broker.
    pub fn pause_broker(&self) {
        self.broker.pause();
    }

    /// SIGCONT the broker.
    pub fn resume_broker(&self) {
        self.broker.resume();
    }

    /// Adds a node with the next free id that joins through the running nodes; returns
    /// its id.
    ///
    /// # Errors
    /// When its namespace cannot be created.
    pub fn add_node(&mut self) -> anyhow::Result<u64> {
        let id = self.members.keys().max().copied().unwrap_or(0) + 1;
        let h = host(id);
        self.net.add_host(h)?;
        let mut m = allocate_on(&self.root.join("nodes"), id, &self.net.addr(h));
        m.grpc = GRPC_PORT;
        m.metrics = METRICS_PORT;
        let seeds: Vec<String> = self.up().iter().map(|n| self.members[n].addr()).collect();
        write_config(&m, &self.settings, &[], &seeds);
        self.members.insert(id, m);
        self.launch(id);
        Ok(id)
    }

    /// Stops node `id` for good (after it was drained) and forgets it.
    ///
    /// # Errors
    /// When it is not running.
    pub fn remove_node(&mut self, id: u64) -> anyhow::Result<()> {
        self.terminate(id)?;
        self.removed.insert(id);
        Ok(())
    }

    /// Nodes that exited without the harness stopping them, with their exit status.
    pub fn crashed(&mut self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for (id, p) in &mut self.procs {
            if let Some(status) = p.exited() {
                out.push((*id, status.to_string()));
            }
        }
        out
    }

    /// Every node log written so far (one per process start).
    pub fn logs(&self) -> Vec<(u64, PathBuf)> {
        let mut out = Vec::new();
        for (id, m) in &self.members {
            for run in 1..=self.starts.get(id).copied().unwrap_or(0) {
                out.push((*id, m.dir.join(format!("node-{run}.log"))));
            }
        }
        out
    }

    /// Removes the nodes' data directories (the logs stay).
    pub fn remove_data(&self) {
        for m in self.members.values() {
            let _ = std::fs::remove_dir_all(m.dir.join("data"));
        }
    }
}

fn host(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}
