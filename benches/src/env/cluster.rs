//! The cluster under measurement: the Tansu broker and `quiver-node` processes on
//! loopback (as in production: one process per node, gRPC between them), loaded with the
//! [`Dataset`] through Kafka, as real data arrives. Every process dies with this value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use quiver_client::{Lookup, NodeClient, Watermarks};
use quiver_proto::v1::ClusterMap;
use quiver_testkit::{Broker, ClusterSettings, Member, NodeProcess, initial_members};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use super::dataset::{Dataset, aggregation_view, history_view, view};
use super::progress::Progress;

/// Shape of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSpec {
    /// Nodes (processes).
    pub nodes: u32,
    /// Shards P (= partitions of every topic).
    pub shards: u32,
    /// Replicas per shard R.
    pub replication: u32,
    /// RocksDB block cache per node, MiB.
    pub block_cache_mib: u32,
    /// RocksDB row cache per node, MiB (0: none).
    pub row_cache_mib: u32,
    /// quiver's lookup cache per node, MiB (0: none).
    pub lookup_cache_mib: u32,
    /// Mutual TLS everywhere and auth by certificate (a throw-away CA under the work dir).
    pub secure: bool,
    /// Also register, per view, an aggregation view of six windowed features over the
    /// same topic (`Dataset::aggregation_definitions`).
    pub aggregations: bool,
    /// Also register, per view, a copy with `history = "7d"` over the same topic
    /// (`Dataset::history_definitions`).
    pub history: bool,
    /// `registry.version_retention` of the nodes, seconds (their default when `None`).
    pub version_retention_s: Option<u64>,
    /// The nodes idle as deployed ones do rather than as the test rig's: their default
    /// poll, lag-refresh and heartbeat intervals (the rig's are 2–10× shorter so tests
    /// settle fast), and consumers that wait [`QUIET_FETCH_WAIT_MS`] for records. Lookup
    /// runs set it: records arrive only before their steps, and on two shared cores the
    /// broker answering 20 ms fetch polls of every shard replica (the node default,
    /// for brokers that do not answer a waiting fetch when records arrive) is load beside
    /// the lookups that no peer has to share.
    pub quiet_idle: bool,
}

/// `fetch.wait.max.ms` of the nodes' consumers in a quiet-idle cluster: librdkafka's
/// default, what deployments on Kafka use (a Kafka broker answers a waiting fetch as
/// soon as records arrive, so the wait costs no freshness there).
pub const QUIET_FETCH_WAIT_MS: u32 = 500;

/// A running cluster.
pub struct BenchCluster {
    // Field order is drop order: nodes before the broker they consume from. `None`: stopped.
    nodes: Vec<Option<NodeProcess>>,
    broker: Broker,
    members: Vec<Member>,
    spec: ClusterSpec,
    /// Next offset per (topic, partition) after everything produced so far.
    produced: BTreeMap<(String, u32), i64>,
    /// Runs of the nodes so far (a restart starts the next; it names their logs).
    runs: u32,
}

/// The producer settings of the tool: acknowledged by the broker, batched a little.
pub fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("acks", "all")
        .set("queue.buffering.max.messages", "200000")
        .set("partitioner", "murmur2_random")
        .create()
        .context("create the Kafka producer")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl BenchCluster {
    /// Starts the broker and the nodes under `root`, creates a topic per view, registers
    /// the views and waits until every node knows them and every shard is served.
    ///
    /// # Errors
    /// When a process, the registration or the wait fails.
    pub async fn start(spec: &ClusterSpec, root: &Path, features: &[u32]) -> anyhow::Result<Self> {
        let security_toml = if spec.secure {
            Some(quiver_testkit::security::secure_rig(&root.join("pki"))?)
        } else {
            quiver_testkit::security::install(quiver_proto::transport::Credentials::none());
            None
        };
        let (broker, members, nodes) = {
            let spec = spec.clone();
            let root = root.to_path_buf();
            let features = features.to_vec();
            tokio::task::spawn_blocking(move || {
                let broker = Broker::start();
                for f in &features {
                    broker.create_topic(&view(*f), spec.shards);
                }
                let mut settings = ClusterSettings::new(broker.bootstrap());
                settings.shard_count = spec.shards;
                settings.replication_factor = spec.replication.min(spec.nodes);
                settings.dead_after = Duration::from_secs(10);
                // Freshness probes wait at the node for the watermark they ask for.
                settings.max_watermark_wait = Duration::from_secs(10);
                settings.block_cache_mib = spec.block_cache_mib;
                settings.row_cache_mib = spec.row_cache_mib;
                settings.lookup_cache_mib = spec.lookup_cache_mib;
                if let Some(t) = security_toml {
                    settings.security_toml = t;
                }
                settings.version_retention = spec.version_retention_s.map(Duration::from_secs);
                if spec.quiet_idle {
                    settings.poll_timeout = Duration::from_millis(100);
                    settings.lag_refresh_interval = Duration::from_secs(5);
                    settings.heartbeat_interval = Duration::from_millis(500);
                    settings.kafka_properties =
                        vec![("fetch.wait.max.ms".into(), QUIET_FETCH_WAIT_MS.to_string())];
                }
                let members =
                    initial_members(&root.join("nodes"), u64::from(spec.nodes), &settings);
                let nodes: Vec<Option<NodeProcess>> = members
                    .iter()
                    .map(|m| Some(NodeProcess::start_member(m, 1, None)))
                    .collect();
                (broker, members, nodes)
            })
            .await?
        };
        let c = BenchCluster {
            nodes,
            broker,
            members,
            spec: spec.clone(),
            produced: BTreeMap::new(),
            runs: 1,
        };
        c.wait_map(Duration::from_secs(60)).await?;
        let mut admin = NodeClient::connect_with(
            c.endpoints()[0].clone(),
            &quiver_testkit::security::credentials(),
        )
        .await?;
        let mut defs = Dataset::definitions(features);
        if spec.aggregations {
            defs.push_str(&Dataset::aggregation_definitions(features));
        }
        if spec.history {
            defs.push_str(&Dataset::history_definitions(features));
        }
        admin
            .apply_definitions(defs, false)
            .await
            .context("register the bench views")?;
        for f in features {
            c.wait_view(&view(*f), Duration::from_secs(30)).await?;
            if spec.aggregations {
                c.wait_view(&aggregation_view(*f), Duration::from_secs(30))
                    .await?;
            }
            if spec.history {
                c.wait_view(&history_view(*f), Duration::from_secs(30))
                    .await?;
            }
        }
        Ok(c)
    }

    /// Waits until the map lists every shard with its replicas, all Serving.
    async fn wait_map(&self, timeout: Duration) -> anyhow::Result<ClusterMap> {
        let deadline = Instant::now() + timeout;
        let want = self.spec.replication.min(self.spec.nodes) as usize;
        loop {
            let why = match self.cluster_map().await {
                Ok(m)
                    if m.shards.len() == self.spec.shards as usize
                        && m.shards.iter().all(|s| {
                            s.replicas.len() == want
                                && s.replicas.iter().all(|r| r.state == 2 /* SERVING */)
                        }) =>
                {
                    return Ok(m);
                }
                Ok(m) => format!("map epoch {} not complete", m.epoch),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the cluster did not start: {why}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_view(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for e in self.endpoints() {
            loop {
                let known = match NodeClient::connect_with(
                    e.clone(),
                    &quiver_testkit::security::credentials(),
                )
                .await
                {
                    Ok(mut c) => c.describe_view(name).await.is_ok(),
                    Err(_) => false,
                };
                if known {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("view {name} did not reach {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The current cluster map, from the first running node.
    ///
    /// # Errors
    /// When the node does not answer.
    pub async fn cluster_map(&self) -> anyhow::Result<ClusterMap> {
        Ok(self.admin().await?.cluster_map().await?)
    }

    /// A client of the first running node.
    ///
    /// # Errors
    /// When no node runs or it does not answer.
    pub async fn admin(&self) -> anyhow::Result<NodeClient> {
        let i = self
            .nodes
            .iter()
            .position(Option::is_some)
            .context("no node runs")?;
        self.node(i).await
    }

    /// A client of node `i` (0-based).
    ///
    /// # Errors
    /// When the node does not answer.
    pub async fn node(&self, i: usize) -> anyhow::Result<NodeClient> {
        Ok(NodeClient::connect_with(
            self.endpoints()[i].clone(),
            &quiver_testkit::security::credentials(),
        )
        .await?)
    }

    /// Stops node `i` (0-based) with SIGTERM and waits for its exit.
    ///
    /// # Errors
    /// When the node was stopped before.
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        let p = self.nodes[i]
            .take()
            .context("the node was stopped before")?;
        tokio::task::spawn_blocking(move || p.terminate()).await?;
        Ok(())
    }

    /// Restarts every node: all stopped (SIGTERM, each waited for), then all started on
    /// their data; waits until every shard is served again and every replica has applied
    /// everything produced.
    ///
    /// # Errors
    /// When a node was stopped before, or the cluster does not come back within a minute.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        self.runs += 1;
        let (members, run) = (self.members.clone(), self.runs);
        let started = tokio::task::spawn_blocking(move || {
            members
                .iter()
                .map(|m| Some(NodeProcess::start_member(m, run, None)))
                .collect::<Vec<_>>()
        })
        .await?;
        self.nodes = started;
        self.wait_map(Duration::from_secs(60)).await?;
        self.wait_applied(Duration::from_secs(60)).await
    }

    /// Produces every entity of `ds` to each view in `features` (full speed), and waits
    /// until every replica has applied all of it.
    ///
    /// # Errors
    /// When producing fails or replicas do not catch up within ten minutes.
    pub async fn load(&mut self, ds: &Dataset, features: &[u32]) -> anyhow::Result<()> {
        let producer = producer(&self.broker.bootstrap())?;
        for f in features {
            let topic = view(*f);
            self.produce_round(&producer, ds, *f, now_ms(), &format!("load {topic}"))
                .await?;
        }
        producer.flush(Duration::from_secs(30))?;
        self.wait_applied(Duration::from_secs(600)).await
    }

    /// Produces `events` older records of every entity to each view in `features`, round
    /// after round with event times rising evenly from six days to two hours ago (so no
    /// aggregation view drops one as late), and waits until every replica has applied
    /// them: a history for the aggregation views to count, before [`BenchCluster::load`]
    /// produces the newest record of every entity.
    ///
    /// # Errors
    /// When producing fails or replicas do not catch up within ten minutes.
    pub async fn load_history(
        &mut self,
        ds: &Dataset,
        features: &[u32],
        events: u32,
    ) -> anyhow::Result<()> {
        const HOUR_MS: i64 = 3_600_000;
        let producer = producer(&self.broker.bootstrap())?;
        let (from, to) = (now_ms() - 144 * HOUR_MS, now_ms() - 2 * HOUR_MS);
        for f in features {
            let topic = view(*f);
            for r in 0..events {
                let ts = from + (to - from) * i64::from(r) / i64::from(events.max(1));
                let label = format!("history {topic} {}/{events}", r + 1);
                self.produce_round(&producer, ds, *f, ts, &label).await?;
            }
        }
        producer.flush(Duration::from_secs(30))?;
        self.wait_applied(Duration::from_secs(600)).await
    }

    /// Produces one record of every entity of `ds` to the F-feature view's topic, event
    /// time `ts`, and awaits every delivery.
    async fn produce_round(
        &mut self,
        producer: &FutureProducer,
        ds: &Dataset,
        f: u32,
        ts: i64,
        label: &str,
    ) -> anyhow::Result<()> {
        let topic = view(f);
        let bar = Progress::new(label, u64::from(ds.entities));
        let mut pending = Vec::with_capacity(4096);
        for k in 0..ds.entities {
            let key = super::dataset::key(k);
            let payload = ds.json_record(k, f, ts);
            let fut = loop {
                match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)) {
                    Ok(fut) => break fut,
                    // Queue full: wait for some deliveries.
                    Err((_, _)) => {
                        self.settle(&topic, &mut pending).await?;
                    }
                }
            };
            pending.push(fut);
            if pending.len() >= 4096 {
                self.settle(&topic, &mut pending).await?;
            }
            bar.set(u64::from(k) + 1);
        }
        self.settle(&topic, &mut pending).await?;
        bar.finish();
        Ok(())
    }

    /// Awaits the delivery reports of `pending` and records each acknowledged offset.
    ///
    /// # Errors
    /// When a record was not delivered.
    pub async fn settle(
        &mut self,
        topic: &str,
        pending: &mut Vec<rdkafka::producer::DeliveryFuture>,
    ) -> anyhow::Result<()> {
        for fut in pending.drain(..) {
            let d = fut
                .await
                .context("delivery report dropped")?
                .map_err(|(e, _)| anyhow::anyhow!("produce to {topic}: {e}"))?;
            self.record_delivery(topic, d.partition as u32, d.offset);
        }
        Ok(())
    }

    /// Notes that `offset` of `topic`'s `partition` was acknowledged.
    pub fn record_delivery(&mut self, topic: &str, partition: u32, offset: i64) {
        let next = self
            .produced
            .entry((topic.to_string(), partition))
            .or_default();
        *next = (*next).max(offset + 1);
    }

    /// Waits until every replica has applied everything recorded as produced.
    ///
    /// # Errors
    /// When a replica is still behind after `timeout`.
    pub async fn wait_applied(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let map = self.cluster_map().await?;
        let partitioner: quiver_proto::Partitioner = map
            .partitioner
            .parse()
            .unwrap_or(quiver_proto::Partitioner::Murmur2);
        for s in &map.shards {
            // A replica answers only for keys of its shard.
            let probe_key = (0..)
                .map(super::dataset::key)
                .find(|k| partitioner.shard_for_key(k.as_bytes(), map.shard_count).0 == s.shard)
                .unwrap_or_default();
            let token: Vec<String> = self
                .produced
                .iter()
                .filter(|((_, p), _)| *p == s.shard)
                .map(|((t, p), o)| format!("{p}:{t}={o}"))
                .collect();
            if token.is_empty() {
                continue;
            }
            let wm: Watermarks = token
                .join(",")
                .parse()
                .map_err(|e| anyhow::anyhow!("watermark token: {e:?}"))?;
            let topic = self
                .produced
                .keys()
                .find(|(_, p)| *p == s.shard)
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            for r in &s.replicas {
                let mut c = NodeClient::connect_with(
                    format!("http://{}", r.addr),
                    &quiver_testkit::security::credentials(),
                )
                .await?;
                loop {
                    // Any key of the shard: the watermark is what is asked for.
                    let l = Lookup::features([format!("{topic}:f0")])
                        .keys([probe_key.as_str()])
                        .min_watermarks(&wm);
                    match c.get_online_features(l).await {
                        Ok(_) => break,
                        Err(e) if Instant::now() > deadline => {
                            bail!(
                                "shard {} on node {} did not catch up: {e}",
                                s.shard,
                                r.node_id
                            )
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
        Ok(())
    }

    /// Kafka bootstrap servers.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// `http://host:port` of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Process ids of the running nodes.
    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(NodeProcess::pid).collect()
    }

    /// Process id of the broker.
    pub fn broker_pid(&self) -> u32 {
        self.broker.pid()
    }

    /// Node ids of the running nodes with their process ids.
    pub fn node_ids(&self) -> Vec<(u64, u32)> {
        self.members
            .iter()
            .zip(&self.nodes)
            .filter_map(|(m, p)| Some((m.id, p.as_ref()?.pid())))
            .collect()
    }

    /// The cluster's shape.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Data directory of node `i` (0-based).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].dir.join("data")
    }

    /// Sum of the Prometheus samples named `name` on node `i` (0-based), every label.
    ///
    /// # Errors
    /// When the node's exporter does not answer.
    pub fn metric_sum(&self, i: usize, name: &str) -> anyhow::Result<f64> {
        self.metric_sum_with(i, name, "")
    }

    /// [`Self::metric_sum`] over the samples whose labels contain `label` (e.g.
    /// `shard="0"`; empty: every sample).
    ///
    /// # Errors
    /// When the node's exporter does not answer.
    pub fn metric_sum_with(&self, i: usize, name: &str, label: &str) -> anyhow::Result<f64> {
        let m = &self.members[i];
        let text = super::http_get(&m.host, m.metrics, "/metrics")?;
        Ok(super::prom::sum_samples(&text, name, label))
    }
}
