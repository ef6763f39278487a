//! `quiver-bench client-loop`: the Rust smart client in a closed loop — one lookup at a
//! time for a fixed time — reporting latency and the client process's CPU per call. The
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

/// Runs the loop: every call reads `batch` keys (a deterministic walk over `keys`) and
/// checks the answer has one row per key.
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
    let client = Client::builder()
        .seeds(spec.seeds.clone())
        .deadline(Duration::from_secs(5))
        .build()
        .await?;
    let mut next = 0usize;
    let mut call = |client: Client| {
        let start = next;
        next = (next + spec.batch * 7 + 1) % spec.keys.len();
        let keys: Vec<&str> = (0..spec.batch)
            .map(|i| spec.keys[(start + i) % spec.keys.len()].as_str())
            .collect();
        let lookup = Lookup::features(spec.features.iter().cloned()).keys(keys);
        async move {
            let r = client.get_online_features(&lookup).await?;
            anyhow::ensure!(r.row_count() == spec.batch, "short answer");
            Ok::<_, anyhow::Error>(())
        }
    };
    let warm_until = Instant::now() + spec.warmup;
    while Instant::now() < warm_until {
        call(client.clone()).await?;
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let me = [std::process::id()];
    let cpu0 = cpu_seconds(&me);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < spec.measure {
        let t = Instant::now();
        call(client.clone()).await?;
        hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        calls += 1;
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let cpu_secs = cpu_seconds(&me) - cpu0;
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
