//! `quiver-bench capacity`: the sizing model, calibrated from a lookup and an ingest
//! report, answering "how many nodes of C cores and M GiB for Q lookups/s of B keys × F
//! features, K entities, R replicas, ingest I records/s", and checking itself against the
//! measured run.
//!
//! Model:
//! - CPU per lookup, µs = a + b·B + c·B·F (fixed request cost, per-key cost, per-value
//!   cost), fitted by least squares to quiver's measured cost in each case: server CPU
//!   above idle ÷ requests served, at the busiest step that kept up (not overloaded, ≥ 90 %
//!   of the offered rate served, ≤ 0.1 % errors) — whether or not it met the latency SLO,
//!   since CPU cost, not latency, is what this part models.
//! - CPU for ingest = I × R × the measured µs per record per replica.
//! - Memory: K × F × the measured bytes per stored feature × R, times the share that must
//!   stay in the block cache, plus each node's measured resident base.
//! - Nodes = max(R, CPU ÷ (C × utilisation target), memory ÷ usable memory per node).
//!
//! The check: leave one case out, fit on the others, predict its CPU per lookup, and
//! compare with what was measured.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

/// A calibration point: one case of the lookup report.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Keys per request.
    pub batch: f64,
    /// Features per key.
    pub features: f64,
    /// Server CPU above idle per request at the busiest step that kept up, µs.
    pub cpu_us: f64,
    /// That step's served rate, requests/s.
    pub rate: f64,
    /// Server cores (above idle) used at it.
    pub server_cores: f64,
    /// Highest rate at the latency SLO (0: never met on the measuring machine).
    pub max_rate_at_slo: f64,
}

/// The fitted model.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// µs per request.
    pub a: f64,
    /// µs per key.
    pub b: f64,
    /// µs per key × feature.
    pub c: f64,
    /// Ingest µs per record per replica.
    pub ingest_us: f64,
    /// Stored bytes per feature (per replica).
    pub bytes_per_feature: f64,
    /// Resident memory of a node without a big data set, bytes.
    pub node_base_bytes: f64,
    /// Per-node apply throughput measured, records/s (lowest node).
    pub node_apply_rate: f64,
    /// Freshness measured, p50 and p99 ms.
    pub freshness_ms: (f64, f64),
}

impl Model {
    /// Predicted CPU per lookup, µs.
    pub fn cpu_us(&self, batch: f64, features: f64) -> f64 {
        (self.a + self.b * batch + self.c * batch * features).max(1.0)
    }
}

/// A sizing question.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    /// Lookups/s.
    pub qps: f64,
    /// Keys per lookup.
    pub batch: f64,
    /// Features per key.
    pub features: f64,
    /// Entities.
    pub entities: f64,
    /// Replicas.
    pub replicas: u32,
    /// Ingest, records/s.
    pub ingest_rate: f64,
    /// Cores per node.
    pub cores: f64,
    /// Memory per node, GiB.
    pub memory_gib: f64,
    /// Share of a node's cores planned for use (headroom keeps p99 low).
    pub utilisation: f64,
    /// Share of the data that must stay in memory (1 = all).
    pub hot_fraction: f64,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// Nodes needed.
    pub nodes: u32,
    /// What decides it: `replicas`, `cpu` or `memory`.
    pub bound_by: String,
    /// Cores for lookups.
    pub lookup_cores: f64,
    /// Cores for ingest.
    pub ingest_cores: f64,
    /// Data bytes over all replicas.
    pub data_bytes: f64,
    /// Nodes by CPU.
    pub cpu_nodes: u32,
    /// Nodes by memory.
    pub memory_nodes: u32,
    /// Ingest records/s each node applies.
    pub ingest_per_node: f64,
    /// Warnings (ingest beyond what one node was measured to apply, …).
    pub warnings: Vec<String>,
}

/// One held-out case, predicted vs measured.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Keys per request.
    pub batch: f64,
    /// Features per key.
    pub features: f64,
    /// Measured CPU per request, µs.
    pub measured_cpu_us: f64,
    /// Predicted, fitting on the other cases.
    pub predicted_cpu_us: f64,
    /// (predicted − measured) ÷ measured, %.
    pub error_pct: f64,
}

/// The capacity report (`capacity.json`, schema `quiver-bench.capacity.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// Schema id.
    pub schema: &'static str,
    /// Run facts.
    pub run: crate::report::RunInfo,
    /// Calibration points.
    pub points: Vec<Point>,
    /// The model.
    pub model: Model,
    /// The question.
    pub question: Question,
    /// The answer.
    pub answer: Answer,
    /// Leave-one-out check.
    pub checks: Vec<Check>,
}

fn num(v: &Value, what: &str) -> anyhow::Result<f64> {
    v.as_f64()
        .with_context(|| format!("{what} is missing or not a number"))
}

/// Calibration points from a `quiver-bench.lookup.v1` report.
///
/// # Errors
/// When the report has another schema or lacks the numbers.
pub fn points(lookup: &Value) -> anyhow::Result<Vec<Point>> {
    if lookup["schema"] != "quiver-bench.lookup.v1" {
        bail!(
            "not a quiver-bench lookup report (schema {})",
            lookup["schema"]
        );
    }
    let mut out = Vec::new();
    for c in lookup["cases"].as_array().context("cases")? {
        let Some(q) = c["systems"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["system"] == "quiver"))
        else {
            continue;
        };
        let busiest = q["search"]["steps"]
            .as_array()
            .context("steps")?
            .iter()
            .filter(|st| {
                let (offered, achieved) =
                    (st["offered_rate"].as_f64(), st["achieved_rate"].as_f64());
                let (requests, errors) = (st["requests"].as_f64(), st["errors"].as_f64());
                st["overloaded"] == false
                    && matches!((offered, achieved), (Some(o), Some(a)) if a >= 0.9 * o)
                    && matches!((requests, errors), (Some(r), Some(e)) if e <= 0.001 * r)
                    && st["server_cores"].as_f64().is_some_and(|c| c > 0.0)
            })
            .max_by(|a, b| {
                let r = |s: &Value| s["achieved_rate"].as_f64().unwrap_or(0.0);
                r(a).total_cmp(&r(b))
            });
        let Some(st) = busiest else { continue };
        let cores = num(&st["server_cores"], "server_cores")?;
        let rate = num(&st["achieved_rate"], "achieved_rate")?;
        out.push(Point {
            batch: num(&c["case"]["batch"], "batch")?,
            features: num(&c["case"]["features"], "features")?,
            cpu_us: cores * 1e6 / rate,
            rate,
            server_cores: cores,
            max_rate_at_slo: num(&q["search"]["max_rate"], "max_rate")?,
        });
    }
    Ok(out)
}

/// Least squares for cost = a + b·B + c·B·F (normal equations, 3 × 3). With fewer than
/// three distinct points the per-value term (then the per-key term) is dropped.
pub fn fit(points: &[Point]) -> (f64, f64, f64) {
    let rows: Vec<[f64; 3]> = points
        .iter()
        .map(|p| [1.0, p.batch, p.batch * p.features])
        .collect();
    let y: Vec<f64> = points.iter().map(|p| p.cpu_us).collect();
    for k in (1..=3).rev() {
        let mut m = vec![vec![0.0; k + 1]; k];
        for (r, yv) in rows.iter().zip(&y) {
            for i in 0..k {
                for j in 0..k {
                    m[i][j] += r[i] * r[j];
                }
                m[i][k] += r[i] * yv;
            }
        }
        if let Some(sol) = solve(m) {
            let mut out = [0.0; 3];
            out[..k].copy_from_slice(&sol);
            return (out[0], out[1], out[2]);
        }
    }
    (y.iter().sum::<f64>() / y.len().max(1) as f64, 0.0, 0.0)
}

/// Gaussian elimination with partial pivoting on an augmented matrix; `None` if singular.
fn solve(mut m: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let n = m.len();
    for col in 0..n {
        let piv = (col..n).max_by(|a, b| m[*a][col].abs().total_cmp(&m[*b][col].abs()))?;
        if m[piv][col].abs() < 1e-9 * (1.0 + m[piv][n].abs()) {
            return None;
        }
        m.swap(col, piv);
        let pivot = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot[col];
                for (x, p) in row.iter_mut().zip(&pivot).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..n).map(|i| m[i][n] / m[i][i]).collect())
}

/// Builds the model from the two reports.
///
/// # Errors
/// When a report lacks what the model needs.
pub fn model(lookup: &Value, ingest: &Value, pts: &[Point]) -> anyhow::Result<Model> {
    if ingest["schema"] != "quiver-bench.ingest.v1" {
        bail!(
            "not a quiver-bench ingest report (schema {})",
            ingest["schema"]
        );
    }
    anyhow::ensure!(
        !pts.is_empty(),
        "the lookup report has no case where quiver met the SLO"
    );
    let (a, b, c) = fit(pts);
    let rss: Vec<f64> = lookup["storage"]["node_rss_bytes"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let node_apply_rate = ingest["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|x| x["records_per_s"].as_f64())
                .fold(f64::INFINITY, f64::min)
        })
        .filter(|v| v.is_finite())
        .unwrap_or(0.0);
    Ok(Model {
        a,
        b,
        c,
        ingest_us: num(
            &ingest["ingest_cpu_us_per_record_replica"],
            "ingest_cpu_us_per_record_replica",
        )?,
        bytes_per_feature: num(&lookup["storage"]["bytes_per_feature"], "bytes_per_feature")?,
        node_base_bytes: rss.iter().copied().reduce(f64::min).unwrap_or(0.0),
        node_apply_rate,
        freshness_ms: (
            num(&ingest["freshness"]["p50_ms"], "freshness p50")?,
            num(&ingest["freshness"]["p99_ms"], "freshness p99")?,
        ),
    })
}

/// Answers `q` with `m`.
pub fn answer(m: &Model, q: &Question) -> Answer {
    let lookup_cores = q.qps * m.cpu_us(q.batch, q.features) / 1e6;
    let ingest_cores = q.ingest_rate * f64::from(q.replicas) * m.ingest_us / 1e6;
    let cpu_nodes = ((lookup_cores + ingest_cores) / (q.cores * q.utilisation))
        .ceil()
        .max(1.0) as u32;
    let data_bytes = q.entities * q.features * m.bytes_per_feature * f64::from(q.replicas);
    let usable = (q.memory_gib * (1u64 << 30) as f64 * 0.8 - m.node_base_bytes).max(1.0);
    let memory_nodes = (data_bytes * q.hot_fraction / usable).ceil().max(1.0) as u32;
    let nodes = q.replicas.max(cpu_nodes).max(memory_nodes);
    let bound_by = if nodes == q.replicas && q.replicas >= cpu_nodes.max(memory_nodes) {
        "replicas"
    } else if cpu_nodes >= memory_nodes {
        "cpu"
    } else {
        "memory"
    };
    let ingest_per_node = q.ingest_rate * f64::from(q.replicas) / f64::from(nodes);
    let mut warnings = Vec::new();
    if m.node_apply_rate > 0.0 && ingest_per_node > m.node_apply_rate * q.utilisation {
        warnings.push(format!(
            "each node would apply {ingest_per_node:.0} records/s; one node was measured at {:.0} records/s (limited by the broker on the measuring machine), so plan more partitions/nodes or measure against the production broker",
            m.node_apply_rate
        ));
    }
    Answer {
        nodes,
        bound_by: bound_by.into(),
        lookup_cores,
        ingest_cores,
        data_bytes,
        cpu_nodes,
        memory_nodes,
        ingest_per_node,
        warnings,
    }
}

/// Leave-one-out predictions.
pub fn checks(pts: &[Point]) -> Vec<Check> {
    (0..pts.len())
        .filter(|_| pts.len() >= 2)
        .map(|i| {
            let rest: Vec<Point> = pts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| p.clone())
                .collect();
            let (a, b, c) = fit(&rest);
            let p = &pts[i];
            let predicted = (a + b * p.batch + c * p.batch * p.features).max(1.0);
            Check {
                batch: p.batch,
                features: p.features,
                measured_cpu_us: p.cpu_us,
                predicted_cpu_us: predicted,
                error_pct: 100.0 * (predicted - p.cpu_us) / p.cpu_us.max(1e-9),
            }
        })
        .collect()
}

/// The Markdown report.
pub fn markdown(r: &CapacityReport) -> String {
    let (m, q, a) = (&r.model, &r.question, &r.answer);
    let mut s = String::from("# quiver-bench capacity\n\n");
    s.push_str(&r.run.markdown());
    let _ = writeln!(
        s,
        "\n## Model (from the measured run)\n\n- CPU per lookup = {:.1} µs + {:.3} µs × keys + {:.4} µs × keys × features\n- ingest: {:.1} µs of node CPU per record per replica; slowest node applied {:.0} records/s; freshness p50 {:.1} ms, p99 {:.1} ms\n- storage: {:.1} bytes per stored feature per replica; node resident base {:.0} MiB\n",
        m.a,
        m.b,
        m.c,
        m.ingest_us,
        m.node_apply_rate,
        m.freshness_ms.0,
        m.freshness_ms.1,
        m.bytes_per_feature,
        m.node_base_bytes / 1048576.0
    );
    let _ = writeln!(
        s,
        "## Question\n\n{} lookups/s of {} keys × {} features; {} entities; R = {}; ingest {} records/s; nodes of {} cores and {} GiB; plan {:.0} % of cores; {:.0} % of the data hot.\n",
        super::report::count(q.qps),
        q.batch,
        q.features,
        super::report::count(q.entities),
        q.replicas,
        super::report::count(q.ingest_rate),
        q.cores,
        q.memory_gib,
        q.utilisation * 100.0,
        q.hot_fraction * 100.0
    );
    let _ = writeln!(
        s,
        "## Answer: **{} nodes** (bound by {})\n\n- lookups need {:.1} cores, ingest {:.2} cores → {} nodes by CPU\n- data {:.1} GiB over all replicas → {} nodes by memory\n- each node applies {:.0} records/s",
        a.nodes,
        a.bound_by,
        a.lookup_cores,
        a.ingest_cores,
        a.cpu_nodes,
        a.data_bytes / (1u64 << 30) as f64,
        a.memory_nodes,
        a.ingest_per_node
    );
    for w in &a.warnings {
        let _ = writeln!(s, "- warning: {w}");
    }
    let _ = writeln!(
        s,
        "\n## Check: each measured case's CPU per lookup predicted from the others\n\n| keys × features | measured at (req/s) | max rate at the SLO (req/s) | CPU/lookup measured (µs) | predicted (µs) | error |\n|---|---|---|---|---|---|"
    );
    for (c, p) in r.checks.iter().zip(&r.points) {
        let _ = writeln!(
            s,
            "| {} × {} | {:.0} | {:.0} | {:.0} | {:.0} | {:+.0} % |",
            c.batch,
            c.features,
            p.rate,
            p.max_rate_at_slo,
            c.measured_cpu_us,
            c.predicted_cpu_us,
            c.error_pct
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(batch: f64, features: f64, cpu_us: f64) -> Point {
        Point {
            batch,
            features,
            cpu_us,
            rate: 1.5e6 / cpu_us,
            server_cores: 1.5,
            max_rate_at_slo: 1.5e6 / cpu_us,
        }
    }

    #[test]
    fn the_fit_recovers_a_known_cost_and_the_check_predicts_held_out_cases() {
        // cost = 50 + 2 B + 0.1 B F exactly.
        let f = |b: f64, fe: f64| 50.0 + 2.0 * b + 0.1 * b * fe;
        let pts: Vec<Point> = [
            (1.0, 50.0),
            (10.0, 50.0),
            (100.0, 50.0),
            (100.0, 10.0),
            (100.0, 250.0),
        ]
        .iter()
        .map(|(b, fe)| pt(*b, *fe, f(*b, *fe)))
        .collect();
        let (a, b, c) = fit(&pts);
        assert!((a - 50.0).abs() < 1e-6 && (b - 2.0).abs() < 1e-6 && (c - 0.1).abs() < 1e-9);
        for ch in checks(&pts) {
            assert!(ch.error_pct.abs() < 1e-6, "{ch:?}");
        }
    }

    #[test]
    fn the_answer_names_its_binding_resource() {
        let m = Model {
            a: 100.0,
            b: 1.0,
            c: 0.05,
            ingest_us: 20.0,
            bytes_per_feature: 12.0,
            node_base_bytes: 200.0 * 1048576.0,
            node_apply_rate: 50_000.0,
            freshness_ms: (5.0, 20.0),
        };
        let mut q = Question {
            qps: 10_000.0,
            batch: 100.0,
            features: 50.0,
            entities: 1e6,
            replicas: 2,
            ingest_rate: 1000.0,
            cores: 8.0,
            memory_gib: 32.0,
            utilisation: 0.6,
            hot_fraction: 1.0,
        };
        // 10,000 × 450 µs = 4.5 cores + 0.04 → 1 node by CPU; 1.2 GB → 1 by memory.
        let a = answer(&m, &q);
        assert_eq!((a.nodes, a.bound_by.as_str()), (2, "replicas"));
        q.qps = 200_000.0; // 90 cores → 19 nodes
        let a = answer(&m, &q);
        assert_eq!((a.nodes, a.bound_by.as_str(), a.cpu_nodes), (19, "cpu", 19));
        q.qps = 1000.0;
        q.entities = 1e9; // 1.2 TB → memory
        let a = answer(&m, &q);
        assert_eq!(a.bound_by, "memory");
        assert!(a.memory_nodes > 30);
    }
}
