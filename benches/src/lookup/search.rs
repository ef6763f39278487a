//! One measurement step (an open-loop run at a fixed rate, with the server CPU it cost)
//! and the search for the highest rate at which the p99 SLO holds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::env::machine::cpu_seconds;
use crate::env::{Dataset, KeyChoice};
use crate::load::OpenLoop;
use crate::systems::System;

/// What a step must meet to pass.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Criteria {
    /// p99 latency bound, ms.
    pub slo_p99_ms: f64,
    /// Largest share of failed requests.
    pub max_error_ratio: f64,
}

/// How the search proceeds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SearchSpec {
    /// First rate tried, requests/s.
    pub start_rate: f64,
    /// Highest rate tried.
    pub max_rate: f64,
    /// Length of each search step, s.
    pub step_secs: f64,
    /// Bisection steps between the last passing and the first failing rate.
    pub refine: u32,
    /// Length of the run at half the found rate, s.
    pub measure_secs: f64,
    /// Requests in flight at most (per system).
    pub max_in_flight: usize,
}

/// One open-loop run at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Offered rate, requests/s.
    pub offered_rate: f64,
    /// Completed requests/s.
    pub achieved_rate: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The system fell more than a second behind the schedule and the run stopped early
    /// (percentiles are then lower bounds).
    pub overloaded: bool,
    /// Latency percentiles from the intended send time, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// CPU cores the system's server processes used on average above their idle rate
    /// (`None` in-process).
    pub server_cores: Option<f64>,
    /// Keys served per second per server core.
    pub keys_per_server_core: Option<f64>,
    /// The step met the criteria.
    pub passed: bool,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// Where a system's search ended.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// Highest offered rate that passed, requests/s (0: none did).
    pub max_rate: f64,
    /// The passing step at that rate.
    pub at_max: Option<Step>,
    /// A longer run at half that rate (p50/p99/p99.9 with headroom).
    pub at_half: Option<Step>,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
}

/// What one request of a case is.
#[derive(Clone)]
pub struct Workload {
    /// The data.
    pub ds: Dataset,
    /// Key choice.
    pub keys: KeyChoice,
    /// Keys per request.
    pub batch: u32,
    /// Features per key (the view).
    pub features: u32,
    /// Request numbers already used (each step draws fresh keys).
    pub next_request: Arc<AtomicU64>,
    /// Where each step writes its requests' latencies, if anywhere (`--latency-log`).
    pub latency_log: Option<PathBuf>,
}

/// Runs `system` at `rate` for `secs` and judges the step.
pub async fn measure(
    system: &Arc<dyn System>,
    w: &Workload,
    rate: f64,
    secs: f64,
    max_in_flight: usize,
    criteria: Criteria,
    idle_cores: f64,
) -> Step {
    let load = OpenLoop {
        rate,
        duration: Duration::from_secs_f64(secs),
        max_in_flight,
        give_up: Some(Duration::from_secs(1)),
        pacing: crate::load::Pacing::Thread,
        keep_latencies: w.latency_log.is_some(),
    };
    let planned = (secs * rate).ceil() as u64;
    let base = w.next_request.fetch_add(planned + 1, Ordering::Relaxed);
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let pids = system.server_pids();
    let (cpu0, t0) = (cpu_seconds(&pids), Instant::now());
    let summary = {
        let (system, w, first_error) = (system.clone(), w.clone(), first_error.clone());
        load.run(move |i| {
            let keys = w.keys.batch(&w.ds, base + i, w.batch);
            let fut = system.lookup(w.features, &keys);
            let first_error = first_error.clone();
            async move {
                let r = fut.await;
                if let Err(e) = &r {
                    let mut f = first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    f.get_or_insert_with(|| e.clone());
                }
                r
            }
        })
        .await
    };
    let wall = t0.elapsed().as_secs_f64();
    let server_cores =
        (!pids.is_empty()).then(|| ((cpu_seconds(&pids) - cpu0) / wall - idle_cores).max(0.0));
    // After the servers' CPU is read: writing the log is not part of the step.
    if let Some(dir) = &w.latency_log {
        let name = format!(
            "{}x{}-{}-{}-{base}.csv",
            w.batch,
            w.features,
            system.name(),
            rate.round()
        );
        let path = dir.join(name);
        let csv = latency_csv(&summary.latencies, rate);
        let written = tokio::task::spawn_blocking(move || std::fs::write(&path, csv)).await;
        if let Err(e) = written.map_err(std::io::Error::other).and_then(|r| r) {
            eprintln!("latency log not written: {e}");
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let completed = summary.requests.saturating_sub(summary.errors);
    let keys_per_s = summary.achieved_rate * f64::from(w.batch) * completed as f64
        / summary.requests.max(1) as f64;
    let error_ratio = summary.errors as f64 / summary.requests.max(1) as f64;
    let passed = !summary.overloaded
        && ms(summary.p99_us) <= criteria.slo_p99_ms
        && error_ratio <= criteria.max_error_ratio
        && summary.achieved_rate >= 0.9 * rate;
    let first_error = first_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Step {
        offered_rate: rate,
        achieved_rate: summary.achieved_rate,
        requests: summary.requests,
        errors: summary.errors,
        overloaded: summary.overloaded,
        p50_ms: ms(summary.p50_us),
        p99_ms: ms(summary.p99_us),
        p999_ms: ms(summary.p999_us),
        max_ms: ms(summary.max_us),
        server_cores,
        keys_per_server_core: server_cores.filter(|c| *c > 0.0).map(|c| keys_per_s / c),
        passed,
        first_error,
    }
}

/// `request,due_ms,latency_us`, one line per request: request `i` was due `i / rate` s
/// after the step started.
fn latency_csv(latencies: &[(u64, u64)], rate: f64) -> String {
    let mut csv = String::with_capacity(24 * (latencies.len() + 1));
    csv.push_str("request,due_ms,latency_us\n");
    for (i, us) in latencies {
        let _ = writeln!(csv, "{i},{:.3},{us}", *i as f64 * 1000.0 / rate);
    }
    csv
}

/// CPU cores `system`'s server processes use with no load (background work: a node's
/// consumers polling the broker, heartbeats), over `secs`; subtracted from each step's.
pub async fn idle_cores(system: &Arc<dyn System>, secs: f64) -> Option<f64> {
    let pids = system.server_pids();
    if pids.is_empty() {
        return None;
    }
    let (cpu0, t0) = (cpu_seconds(&pids), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    Some((cpu_seconds(&pids) - cpu0) / t0.elapsed().as_secs_f64())
}

/// Finds the highest rate that passes: doubles from the start rate until a step fails
/// (or, when the start fails, quarters down up to three times), bisects between the last
/// pass and the first failure, then measures longer at half the rate found.
/// `on_step` sees each step as it completes (progress).
pub async fn search(
    system: &Arc<dyn System>,
    w: &Workload,
    spec: &SearchSpec,
    criteria: Criteria,
    on_step: &(dyn Fn(&Step) + Sync),
    idle_cores: f64,
) -> SearchResult {
    let mut steps = Vec::new();
    let run = async |rate: f64, secs: f64, steps: &mut Vec<Step>| {
        let s = measure(
            system,
            w,
            rate,
            secs,
            spec.max_in_flight,
            criteria,
            idle_cores,
        )
        .await;
        on_step(&s);
        steps.push(s.clone());
        s
    };
    let mut best: Option<Step> = None;
    let mut fail: Option<f64> = None;
    let mut rate = spec.start_rate;
    loop {
        let s = run(rate, spec.step_secs, &mut steps).await;
        if !s.passed {
            fail = Some(rate);
            break;
        }
        best = Some(s);
        if rate >= spec.max_rate {
            break;
        }
        rate = (rate * 2.0).min(spec.max_rate);
    }
    if best.is_none() {
        for _ in 0..3 {
            rate /= 4.0;
            let s = run(rate, spec.step_secs, &mut steps).await;
            if s.passed {
                best = Some(s);
                fail = Some(rate * 4.0);
                break;
            }
        }
    }
    if let (Some(b), Some(mut hi)) = (best.clone(), fail) {
        let mut lo = b.offered_rate;
        for _ in 0..spec.refine {
            let mid = (lo + hi) / 2.0;
            let s = run(mid, spec.step_secs, &mut steps).await;
            if s.passed {
                lo = mid;
                best = Some(s);
            } else {
                hi = mid;
            }
        }
    }
    let max_rate = best.as_ref().map_or(0.0, |s| s.offered_rate);
    let at_half = if max_rate > 0.0 {
        Some(run(max_rate / 2.0, spec.measure_secs, &mut steps).await)
    } else {
        None
    };
    SearchResult {
        max_rate,
        at_max: best,
        at_half,
        steps,
    }
}
