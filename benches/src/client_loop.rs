//! `quiver-bench client-loop`: the Rust smart client in a closed loop — one lookup at a
//! time per caller (`--concurrency` callers) for a fixed time — reporting latency and the client process's CPU per call. The
//! Python SDK's bench (`python/bench/online_bench.py`) runs it beside the same loop in
//! Python against the same cluster and rows, so the two are compared in one run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quiver_client::{Client, Lookup};
use serde::Serialize;

use crate::env::machine::cpu_seconds;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// Nodes to bootstrap from (`host:port`).
    pub seeds: Vec<String>,
    /// Feature references of every call.
    pub features: Vec<String>,
    /// Keys to draw each call's batch from.
    pub keys: Vec<String>,
    /// Keys per call.
    pub batch: usize,
    /// Unmeasured calls first (connections, caches).
    pub warmup: Duration,
    /// Measured time.
    pub measure: Duration,
    /// Callers, each with one lookup in flight.
    pub concurrency: usize,
}

/// What a loop measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoopResult {
    /// Measured calls.
    pub calls: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Wall seconds measured.
    pub wall_secs: f64,
    /// CPU seconds (user + system, every thread) this process spent while measuring.
    pub cpu_secs: f64,
    /// Calls per second of client CPU.
    pub calls_per_cpu_sec: f64,
}

/// Runs the loop: `concurrency` callers, each one lookup at a time; every call reads
/// `batch` keys (a deterministic walk over `keys`) and checks the answer has one row per
/// key.
///
/// # Errors
/// A failed connection or lookup.
pub async fn run(spec: &LoopSpec) -> anyhow::Result<LoopResult> {
    anyhow::ensure!(
        spec.batch >= 1 && spec.batch <= spec.keys.len(),
        "batch {} must be between 1 and the {} keys",
        spec.batch,
        spec.keys.len()
    );
    anyhow::ensure!(spec.concurrency >= 1, "concurrency must be at least 1");
    let client = Client::builder()
        .seeds(spec.seeds.clone())
        .deadline(Duration::from_secs(5))
        .build()
        .await?;
    let measure_from = Instant::now() + spec.warmup;
    let until = measure_from + spec.measure;
    let me = [std::process::id()];
    let workers = (0..spec.concurrency).map(|w| caller(spec, &client, w, measure_from, until));
    // CPU is sampled by a timer task at the window's edges, as the callers cross them.
    let cpu = async {
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu0 = cpu_seconds(&me);
        tokio::time::sleep_until(until.into()).await;
        cpu_seconds(&me) - cpu0
    };
    let (hists, cpu_secs) = tokio::join!(futures::future::try_join_all(workers), cpu);
    let mut hist = Histogram::<u64>::new(3)?;
    for h in hists? {
        hist.add(&h)?;
    }
    let wall_secs = spec.measure.as_secs_f64();
    let calls = hist.len();
    Ok(LoopResult {
        calls,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        wall_secs,
        cpu_secs,
        calls_per_cpu_sec: if cpu_secs > 0.0 {
            calls as f64 / cpu_secs
        } else {
            0.0
        },
    })
}

/// One caller: lookups one at a time until `until`, recording those that start at or
/// after `measure_from`.
async fn caller(
    spec: &LoopSpec,
    client: &Client,
    worker: usize,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut next = (worker * 7919) % spec.keys.len();
    loop {
        let t = Instant::now();
        if t >= until {
            return Ok(hist);
        }
        let keys: Vec<&str> = (0..spec.batch)
            .map(|i| spec.keys[(next + i) % spec.keys.len()].as_str())
            .collect();
        next = (next + spec.batch * 7 + 1) % spec.keys.len();
        let lookup = Lookup::features(spec.features.iter().cloned()).keys(keys);
        let r = client.get_online_features(&lookup).await?;
        anyhow::ensure!(r.row_count() == spec.batch, "short answer");
        if t >= measure_from {
            hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        }
    }
}
