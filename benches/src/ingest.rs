//! `quiver-bench ingest`: produces records into the real broker (full speed or a set
//! rate) while a lookup load runs, and measures each node's apply throughput (records/s,
//! MB/s, from the nodes' own per-replica counters), the CPU ingest costs, and freshness:
//! the time from the producer's send of a record to its value being readable on every
//! replica of its shard.
//!
//! Freshness probes ask each replica directly (not through the smart client) for the
//! record's key with a minimum watermark of the record's offset + 1; the node answers the
//! moment it has applied the record (it waits on its applied-watermark signal), so the
//! probe measures apply time without polling.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{GetOnlineFeaturesRequest, ShardWatermark, TopicOffset};
use rdkafka::producer::{FutureRecord, Producer};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::env::cluster::{now_ms, producer};
use crate::env::dataset::{key, view};
use crate::env::machine::cpu_seconds;
use crate::env::{BenchCluster, ClusterSpec, Dataset, KeyChoice, Progress};
use crate::load::OpenLoop;
use crate::systems::System;
use crate::systems::quiver::Quiver;

/// Parameters of an ingest run.
#[derive(Debug, Clone, Serialize)]
pub struct IngestParams {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// Entities (loaded before measuring; the records measured update them).
    pub dataset: Dataset,
    /// Features per record.
    pub features: u32,
    /// Records produced while measuring.
    pub records: u64,
    /// Records/s; `None`: as fast as the producer goes.
    pub rate: Option<f64>,
    /// Lookups/s offered during the run.
    pub lookup_rate: f64,
    /// Keys per lookup.
    pub lookup_batch: u32,
    /// Records probed for freshness (evenly spread).
    pub freshness_samples: u64,
}

/// One node's apply throughput.
#[derive(Debug, Clone, Serialize)]
pub struct NodeIngest {
    /// Node id.
    pub node: u64,
    /// Records its replicas applied during the run.
    pub records: u64,
    /// Bytes of those records (key + value).
    pub bytes: f64,
    /// From the first send until its replicas had everything, s.
    pub seconds: f64,
    /// Records/s.
    pub records_per_s: f64,
    /// MB/s (10^6 bytes).
    pub mb_per_s: f64,
}

/// Freshness percentiles, ms.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// Records probed.
    pub samples: u64,
    /// Probes that failed (counted, not timed).
    pub failed: u64,
    /// Until readable on every replica: median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Until readable on the first replica: median.
    pub first_replica_p50_ms: f64,
    /// `(ms, fraction ≤ ms)` of every-replica freshness, for the CDF plot.
    pub cdf: Vec<(f64, f64)>,
}

/// Latency of the lookups that ran during ingest.
#[derive(Debug, Clone, Serialize)]
pub struct LookupsDuring {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// ms.
    pub p50_ms: f64,
    /// ms.
    pub p99_ms: f64,
    /// ms.
    pub p999_ms: f64,
}

/// The ingest report (`ingest.json`, schema `quiver-bench.ingest.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Schema id.
    pub schema: &'static str,
    /// Run facts.
    pub run: crate::report::RunInfo,
    /// Parameters.
    pub params: IngestParams,
    /// Records produced and acknowledged.
    pub produced: u64,
    /// Mean record size (key + value), bytes.
    pub record_bytes: f64,
    /// From the first send to the last acknowledgement, s.
    pub produce_seconds: f64,
    /// Per node.
    pub nodes: Vec<NodeIngest>,
    /// Freshness.
    pub freshness: Freshness,
    /// Node CPU (all nodes) spent on ingest per record per replica, µs: the nodes' CPU
    /// during the run minus their CPU at the same lookup load without ingest.
    pub ingest_cpu_us_per_record_replica: f64,
    /// Node cores used by the lookup load alone (the baseline subtracted).
    pub baseline_node_cores: f64,
    /// Broker (Tansu) cores during the run.
    pub broker_cores: f64,
    /// The lookups that ran meanwhile.
    pub lookups: LookupsDuring,
}

/// `(seconds since the start, records consumed per node)`, sampled.
type Samples = Vec<(f64, BTreeMap<u64, u64>)>;

/// Records of `topic` a node's replicas consumed, from its status.
fn consumed(st: &quiver_proto::v1::GetStatusResponse, topic: &str) -> u64 {
    st.shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .filter(|p| p.topic == topic)
        .map(|p| p.records_consumed)
        .sum()
}

/// Records applied per node: the sum over its replicas of the view topic's consumed count.
async fn consumed_per_node(
    cluster: &BenchCluster,
    topic: &str,
) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for (i, e) in cluster.endpoints().iter().enumerate() {
        let mut c = quiver_client::NodeClient::connect_with(
            e.clone(),
            &quiver_testkit::security::credentials(),
        )
        .await?;
        out.insert(cluster.node_ids()[i].0, consumed(&c.status().await?, topic));
    }
    Ok(out)
}

/// Runs the ingest benchmark under `work`.
///
/// # Errors
/// When the cluster cannot be started or loaded, or producing fails.
pub async fn run(p: IngestParams, work: &Path) -> anyhow::Result<IngestReport> {
    let started = crate::report::RunInfo::start();
    let topic = view(p.features);
    // What a freshness probe reads: the record's value, or (with aggregation views) the
    // count it was added to.
    let probe_feature = if p.cluster.aggregations {
        format!("{}:n_1h", crate::env::dataset::aggregation_view(p.features))
    } else {
        format!("{topic}:f0")
    };
    eprintln!(
        "starting a {}-node cluster (P = {}, R = {})",
        p.cluster.nodes, p.cluster.shards, p.cluster.replication
    );
    let mut cluster = BenchCluster::start(&p.cluster, &work.join("cluster"), &[p.features]).await?;
    cluster
        .load(&p.dataset, &[p.features])
        .await
        .context("load the cluster")?;
    let map = cluster.cluster_map().await?;
    let node_pids = cluster.node_pids();
    let quiver: Arc<dyn System> =
        Arc::new(Quiver::connect(cluster.endpoints(), &[p.features], node_pids.clone()).await?);
    let keys = KeyChoice::Uniform;

    // The lookup load alone: the CPU baseline subtracted from the ingest run's.
    let baseline_secs = 3.0;
    let lookups = |secs: f64, base: u64| {
        let (q, ds, f, b) = (quiver.clone(), p.dataset, p.features, p.lookup_batch);
        let keys = keys.clone();
        let load = OpenLoop {
            rate: p.lookup_rate,
            duration: Duration::from_secs_f64(secs),
            max_in_flight: 256,
            give_up: None,
            pacing: crate::load::Pacing::Thread,
            keep_latencies: false,
        };
        (load, move |i: u64| {
            q.lookup(f, &keys.batch(&ds, base + i, b))
        })
    };
    let (cpu0, t0) = (cpu_seconds(&node_pids), Instant::now());
    let (load, req) = lookups(baseline_secs, 0);
    load.run(req).await;
    let baseline_node_cores = (cpu_seconds(&node_pids) - cpu0) / t0.elapsed().as_secs_f64();

    // Per-replica channels for the freshness probes.
    let mut channels: BTreeMap<u64, FeatureServiceClient<quiver_proto::transport::AuthChannel>> =
        BTreeMap::new();
    for s in &map.shards {
        for r in &s.replicas {
            if let std::collections::btree_map::Entry::Vacant(v) = channels.entry(r.node_id) {
                let creds = quiver_testkit::security::credentials();
                let ch = creds.endpoint(&r.addr)?.tcp_nodelay(true).connect().await?;
                v.insert(FeatureServiceClient::new(creds.wrap(ch)?));
            }
        }
    }
    let replicas: BTreeMap<u32, Vec<u64>> = map
        .shards
        .iter()
        .map(|s| (s.shard, s.replicas.iter().map(|r| r.node_id).collect()))
        .collect();

    let before = consumed_per_node(&cluster, &topic).await?;
    let done = Arc::new(AtomicBool::new(false));
    // Lookups run until ingest is over.
    let lookup_task = {
        let (load, req) = lookups(86_400.0, 1 << 40);
        let done = done.clone();
        tokio::spawn(async move { load.run_while(req, || !done.load(Ordering::Relaxed)).await })
    };
    // Node throughput: poll each node's counters; the first time a node has everything
    // is its finish time.
    let samples: Arc<std::sync::Mutex<Samples>> = Arc::default();
    let t_start = Instant::now();
    let poller = {
        let (samples, done, endpoints, ids, topic) = (
            samples.clone(),
            done.clone(),
            cluster.endpoints(),
            cluster.node_ids(),
            topic.clone(),
        );
        tokio::spawn(async move {
            let mut clients = Vec::new();
            for e in endpoints {
                if let Ok(c) = quiver_client::NodeClient::connect_with(
                    e,
                    &quiver_testkit::security::credentials(),
                )
                .await
                {
                    clients.push(c);
                }
            }
            while !done.load(Ordering::Relaxed) {
                let mut m = BTreeMap::new();
                for (c, (id, _)) in clients.iter_mut().zip(&ids) {
                    if let Ok(st) = c.status().await {
                        m.insert(*id, consumed(&st, &topic));
                    }
                }
                samples
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((t_start.elapsed().as_secs_f64(), m));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let cpu_nodes0 = cpu_seconds(&node_pids);
    let cpu_broker0 = cpu_seconds(&[cluster.broker_pid()]);

    // Produce.
    let prod = producer(&cluster.bootstrap())?;
    let every = (p.records / p.freshness_samples.max(1)).max(1);
    let all_hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let first_hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let failed = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(Semaphore::new(256));
    let mut probe_tasks = tokio::task::JoinSet::new();
    let mut pending = Vec::with_capacity(8192);
    let mut bytes = 0u64;
    let bar = Progress::new(&format!("produce {topic}"), p.records);
    let ts0 = now_ms();
    let interval = p.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    for n in 0..p.records {
        if let Some(iv) = interval {
            tokio::time::sleep_until((t_start + iv.mul_f64(n as f64)).into()).await;
        }
        let k = (n % u64::from(p.dataset.entities)) as u32;
        let (kname, payload) = (
            key(k),
            p.dataset.json_record(k, p.features, ts0 + 1 + n as i64),
        );
        bytes += (kname.len() + payload.len()) as u64;
        let sent_at = Instant::now();
        let fut = loop {
            match prod.send_result(FutureRecord::to(&topic).key(&kname).payload(&payload)) {
                Ok(f) => break f,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        if n % every == 0 {
            let Ok(permit) = probes.clone().try_acquire_owned() else {
                pending.push(fut);
                continue;
            };
            let (channels, replicas, topic) = (channels.clone(), replicas.clone(), topic.clone());
            let probe_feature = probe_feature.clone();
            let (all_hist, first_hist, failed) =
                (all_hist.clone(), first_hist.clone(), failed.clone());
            probe_tasks.spawn(async move {
                let _permit = permit;
                let Ok(Ok(d)) = fut.await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                let shard = d.partition as u32;
                let mut waits = Vec::new();
                for node in replicas.get(&shard).cloned().unwrap_or_default() {
                    let Some(mut c) = channels.get(&node).cloned() else {
                        continue;
                    };
                    let req = GetOnlineFeaturesRequest {
                        features: vec![probe_feature.clone()],
                        entity_keys: vec![kname.clone().into()],
                        min_watermarks: vec![ShardWatermark {
                            shard,
                            offsets: vec![TopicOffset {
                                topic: topic.clone(),
                                next_offset: d.offset + 1,
                            }],
                        }],
                        watermark_wait_ms: 10_000,
                        ..Default::default()
                    };
                    waits.push(async move {
                        c.get_online_features(req).await.map(|_| sent_at.elapsed())
                    });
                }
                let times = futures::future::join_all(waits).await;
                if times.iter().any(Result::is_err) || times.is_empty() {
                    failed.fetch_add(1, Ordering::Relaxed);
                } else {
                    let us: Vec<u64> = times
                        .iter()
                        .flatten()
                        .map(|t| (t.as_micros() as u64).max(1))
                        .collect();
                    let lock = |h: &std::sync::Mutex<Histogram<u64>>, v: u64| {
                        let _ = h
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .record(v.min(600_000_000));
                    };
                    lock(&all_hist, *us.iter().max().unwrap_or(&1));
                    lock(&first_hist, *us.iter().min().unwrap_or(&1));
                }
                Some((d.partition as u32, d.offset))
            });
        } else {
            pending.push(fut);
        }
        if pending.len() >= 8192 {
            cluster.settle(&topic, &mut pending).await?;
        }
        bar.set(n + 1);
    }
    cluster.settle(&topic, &mut pending).await?;
    prod.flush(Duration::from_secs(30))?;
    let produce_seconds = t_start.elapsed().as_secs_f64();
    bar.finish();
    while let Some(r) = probe_tasks.join_next().await {
        if let Ok(Some((partition, offset))) = r {
            cluster.record_delivery(&topic, partition, offset);
        }
    }
    cluster.wait_applied(Duration::from_secs(600)).await?;
    let after = consumed_per_node(&cluster, &topic).await?;
    done.store(true, Ordering::Relaxed);
    let cpu_nodes = cpu_seconds(&node_pids) - cpu_nodes0;
    let broker_cores =
        (cpu_seconds(&[cluster.broker_pid()]) - cpu_broker0) / t_start.elapsed().as_secs_f64();
    let _ = poller.await;
    let during = lookup_task.await?;
    let wall = t_start.elapsed().as_secs_f64();

    let samples = samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let record_bytes = bytes as f64 / p.records.max(1) as f64;
    let nodes = after
        .iter()
        .map(|(node, total)| {
            let records = total - before.get(node).copied().unwrap_or(0);
            let seconds = samples
                .iter()
                .find(|(_, m)| m.get(node).is_some_and(|n| n >= total))
                .map_or(wall, |(t, _)| *t)
                .max(1e-3);
            NodeIngest {
                node: *node,
                records,
                bytes: records as f64 * record_bytes,
                seconds,
                records_per_s: records as f64 / seconds,
                mb_per_s: records as f64 * record_bytes / seconds / 1e6,
            }
        })
        .collect();
    let r = f64::from(p.cluster.replication.min(p.cluster.nodes));
    let ingest_cpu = (cpu_nodes - baseline_node_cores * wall).max(0.0);
    let all = all_hist
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let first = first_hist
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let ms = |us: u64| us as f64 / 1000.0;
    let cdf = (0..=100)
        .map(|i| {
            let q = f64::from(i) / 100.0;
            (ms(all.value_at_quantile(q)), q)
        })
        .collect();
    Ok(IngestReport {
        schema: "quiver-bench.ingest.v1",
        run: started.finish(),
        produced: p.records,
        record_bytes,
        produce_seconds,
        nodes,
        freshness: Freshness {
            samples: all.len(),
            failed: failed.load(Ordering::Relaxed),
            p50_ms: ms(all.value_at_quantile(0.5)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            max_ms: ms(all.max()),
            first_replica_p50_ms: ms(first.value_at_quantile(0.5)),
            cdf,
        },
        ingest_cpu_us_per_record_replica: ingest_cpu * 1e6 / (p.records as f64 * r).max(1.0),
        baseline_node_cores,
        broker_cores,
        lookups: LookupsDuring {
            requests: during.requests,
            errors: during.errors,
            p50_ms: ms(during.p50_us),
            p99_ms: ms(during.p99_us),
            p999_ms: ms(during.p999_us),
        },
        params: p,
    })
}
