//! The run's report: a JSON file (machine-readable), a Markdown summary and an SVG
//! timeline (p99 latency and error rate per second, fault windows shaded).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::aggregates::AggregateCheck;
use crate::audit::BrokerAudit;
use crate::checker::Verdict;
use crate::history::{History, Read, Via};
use crate::nemesis::FaultRecord;

/// Latency percentiles of a set of lookups (successful and failed).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Lookups.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// The `p`-th percentile of `sorted` latencies (µs), in ms; 0 when empty.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

impl Latency {
    fn of<'a>(reads: impl Iterator<Item = &'a Read>) -> Self {
        let mut l: Vec<u64> = reads.map(|r| r.latency_us).collect();
        l.sort_unstable();
        let pct = |p: f64| percentile_ms(&l, p);
        Latency {
            count: l.len(),
            p50_ms: pct(50.0),
            p99_ms: pct(99.0),
            max_ms: l.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

/// Lookups before any fault, inside fault windows (start → recovered) and between or
/// after them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Before the first fault.
    pub before: Latency,
    /// During faults and their recovery.
    pub during: Latency,
    /// After the first fault, outside fault windows.
    pub after: Latency,
}

/// Availability during one fault window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowAvailability {
    /// The fault.
    pub fault: String,
    /// Its target.
    pub target: String,
    /// Lookups due in the window (fault start → recovered, or heal when it did not).
    pub lookups: usize,
    /// Of which succeeded.
    pub succeeded: usize,
    /// `succeeded / lookups` (1 when there were none).
    pub success: f64,
}

/// Availability over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Availability {
    /// Share of all lookups that succeeded.
    pub success: f64,
    /// Per fault window.
    pub windows: Vec<WindowAvailability>,
    /// Longest time between two consecutive successful answers, ms.
    pub longest_gap_ms: f64,
    /// When that gap started, seconds into the run.
    pub longest_gap_at_s: f64,
}

/// Counts of what happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Writes attempted straight to Kafka.
    pub kafka_writes: usize,
    /// Of which acknowledged.
    pub kafka_acked: usize,
    /// Writes attempted through Push.
    pub push_writes: usize,
    /// Of which acknowledged.
    pub push_acked: usize,
    /// Lookups.
    pub lookups: usize,
    /// Failed lookups.
    pub lookups_failed: usize,
    /// The most frequent lookup errors (kind, count).
    pub top_errors: Vec<(String, usize)>,
    /// The most frequent write errors (kind, count).
    pub top_write_errors: Vec<(String, usize)>,
    /// How the readers' lookups were routed (smart-client counters, summed).
    pub readers: crate::history::ReaderTotals,
}

/// The run's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Parameters {
    /// Scenario name.
    pub scenario: String,
    /// Seed (repeat the run with `--seed`).
    pub seed: u64,
    /// Fault phase length, seconds.
    pub duration_s: f64,
    /// Initial nodes.
    pub nodes: u32,
    /// Shards.
    pub shards: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Lookups per second.
    pub read_rate: f64,
    /// Keys per lookup.
    pub batch: usize,
    /// Writes per second.
    pub write_rate: f64,
    /// Distinct keys.
    pub keys: u32,
    /// Fault hold, seconds.
    pub hold_s: f64,
    /// Quiet time between faults, seconds.
    pub quiet_s: f64,
    /// Required lookup success share.
    pub min_success: f64,
    /// Rows of the clients' row cache, if on.
    pub client_cache: Option<usize>,
    /// The command that repeats this run.
    pub command: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Parameters.
    pub parameters: Parameters,
    /// Whether every check passed.
    pub passed: bool,
    /// Why not, one line per failed check.
    pub failures: Vec<String>,
    /// The invariants.
    pub verdict: Verdict,
    /// Counts.
    pub counts: Counts,
    /// Availability.
    pub availability: Availability,
    /// Latency per phase.
    pub latency: Phases,
    /// Faults applied, with recovery.
    pub faults: Vec<FaultRecord>,
    /// From the end of the fault phase to every replica caught up, ms.
    pub final_catch_up_ms: Option<f64>,
    /// Nodes that exited on their own, and log lines that report a panic.
    pub crashes: Vec<String>,
    /// The broker's log read back against every acknowledged write (`None`: not run).
    pub broker_audit: Option<BrokerAudit>,
    /// The aggregation check: every replica's lifetime count and sum per key against the
    /// log (`aggregates.rs`).
    pub aggregates: Option<AggregateCheck>,
    /// Where the files are.
    pub files: Files,
}

/// Report and log locations.
#[derive(Debug, Clone, Serialize)]
pub struct Files {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `timeline.svg`.
    pub timeline: PathBuf,
    /// Node logs (`nodes/node<id>/node-<start>.log`).
    pub logs: PathBuf,
}

fn window_end(f: &FaultRecord) -> u64 {
    f.recovered_us.unwrap_or(f.heal_us)
}

/// The five most frequent of `errors`, with their counts.
fn most_frequent<'a>(errors: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in errors {
        *counts.entry(e).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = counts
        .into_iter()
        .map(|(e, n)| (e.to_string(), n))
        .collect();
    top.sort_by_key(|e| std::cmp::Reverse(e.1));
    top.truncate(5);
    top
}

/// Builds the report from the history and the faults; `failures` are the harness's own
/// findings so far (crashes, recovery), to which the invariants and availability are
/// added.
pub fn build(
    parameters: Parameters,
    history: &History,
    verdict: Verdict,
    faults: Vec<FaultRecord>,
    final_catch_up_ms: Option<f64>,
    crashes: Vec<String>,
    out: &Path,
) -> Report {
    let reads = &history.reads;
    let ok = reads.iter().filter(|r| r.error.is_none()).count();
    let success = if reads.is_empty() {
        0.0
    } else {
        ok as f64 / reads.len() as f64
    };
    let in_window = |r: &Read| {
        faults
            .iter()
            .any(|f| r.intended_us >= f.start_us && r.intended_us < window_end(f))
    };
    let first_fault = faults.first().map_or(u64::MAX, |f| f.start_us);
    let latency = Phases {
        before: Latency::of(reads.iter().filter(|r| r.intended_us < first_fault)),
        during: Latency::of(reads.iter().filter(|r| in_window(r))),
        after: Latency::of(
            reads
                .iter()
                .filter(|r| r.intended_us >= first_fault && !in_window(r)),
        ),
    };
    let windows = faults
        .iter()
        .map(|f| {
            let due: Vec<&Read> = reads
                .iter()
                .filter(|r| r.intended_us >= f.start_us && r.intended_us < window_end(f))
                .collect();
            let succeeded = due.iter().filter(|r| r.error.is_none()).count();
            WindowAvailability {
                fault: f.fault.to_string(),
                target: f.target.clone(),
                lookups: due.len(),
                succeeded,
                success: if due.is_empty() {
                    1.0
                } else {
                    succeeded as f64 / due.len() as f64
                },
            }
        })
        .collect();
    let mut done: Vec<u64> = reads
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.intended_us + r.latency_us)
        .collect();
    done.sort_unstable();
    let (gap, at) = done
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or((0, 0));
    let availability = Availability {
        success,
        windows,
        longest_gap_ms: gap as f64 / 1000.0,
        longest_gap_at_s: at as f64 / 1e6,
    };

    let top_errors = most_frequent(reads.iter().filter_map(|r| r.error.as_deref()));
    let top_write_errors = most_frequent(history.writes.iter().filter_map(|w| w.error.as_deref()));
    let by = |via: Via, acked: bool| {
        history
            .writes
            .iter()
            .filter(|w| w.via == via && (!acked || w.acked.is_some()))
            .count()
    };
    let counts = Counts {
        kafka_writes: by(Via::Kafka, false),
        kafka_acked: by(Via::Kafka, true),
        push_writes: by(Via::Push, false),
        push_acked: by(Via::Push, true),
        lookups: reads.len(),
        lookups_failed: reads.len() - ok,
        top_errors,
        top_write_errors,
        readers: history.readers,
    };

    let mut failures = Vec::new();
    for (name, n) in &verdict.counts {
        if *n > 0 {
            failures.push(format!("{n} {name} violation(s)"));
        }
    }
    if success < parameters.min_success {
        failures.push(format!(
            "lookup success {:.4}% is below the required {:.4}%",
            success * 100.0,
            parameters.min_success * 100.0
        ));
    }
    for f in &faults {
        if let Some(e) = &f.error {
            failures.push(format!("{} on {} did not recover: {e}", f.fault, f.target));
        }
    }
    if final_catch_up_ms.is_none() {
        failures.push("the cluster did not catch up after the fault phase".into());
    }
    failures.extend(crashes.iter().map(|c| format!("crash: {c}")));
    if counts.kafka_acked == 0 || counts.push_acked == 0 || ok == 0 {
        failures.push(
            "the workload did not run (no acknowledged writes or no answered lookups)".into(),
        );
    }
    Report {
        parameters,
        passed: failures.is_empty(),
        failures,
        verdict,
        counts,
        availability,
        latency,
        faults,
        final_catch_up_ms,
        crashes,
        broker_audit: None,
        aggregates: None,
        files: Files {
            json: out.join("report.json"),
            markdown: out.join("report.md"),
            timeline: out.join("timeline.svg"),
            logs: out.join("nodes"),
        },
    }
}

/// Writes the JSON, Markdown and SVG files.
///
/// # Errors
/// When a file cannot be written.
pub fn write(report: &Report, reads: &[Read]) -> anyhow::Result<()> {
    std::fs::write(&report.files.json, serde_json::to_string_pretty(report)?)
        .context("write report.json")?;
    std::fs::write(&report.files.markdown, markdown(report)).context("write report.md")?;
    std::fs::write(&report.files.timeline, timeline(report, reads))
        .context("write timeline.svg")?;
    Ok(())
}

/// The Markdown summary.
pub fn markdown(r: &Report) -> String {
    let p = &r.parameters;
    let mut s = String::new();
    let _ = writeln!(s, "# Chaos run: {} (seed {})\n", p.scenario, p.seed);
    let _ = writeln!(
        s,
        "**{}**{}\n",
        if r.passed { "PASSED" } else { "FAILED" },
        if r.failures.is_empty() {
            String::new()
        } else {
            format!(": {}", r.failures.join("; "))
        }
    );
    let _ = writeln!(s, "Repeat: `{}`\n", p.command);
    let _ = writeln!(
        s,
        "{} nodes, {} shards, R = {}, {:.0} s of faults (hold {:.0} s, quiet {:.0} s); {:.0} lookups/s of {} keys, {:.0} writes/s over {} keys.\n",
        p.nodes,
        p.shards,
        p.replication_factor,
        p.duration_s,
        p.hold_s,
        p.quiet_s,
        p.read_rate,
        p.batch,
        p.write_rate,
        p.keys
    );
    let _ = writeln!(s, "## Invariants\n\n| invariant | violations |\n|---|---|");
    for (name, n) in &r.verdict.counts {
        let _ = writeln!(s, "| {name} | {n} |");
    }
    let _ = writeln!(
        s,
        "\n{} keys with acknowledged writes checked on every replica ({} final reads); {} values read during the run checked.",
        r.verdict.keys_checked, r.verdict.final_reads_checked, r.verdict.values_checked
    );
    if !r.verdict.reads_by_version.is_empty() {
        let by: Vec<String> = r
            .verdict
            .reads_by_version
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "\nSuccessful reads by the view version they report: {}.",
            by.join(", ")
        );
    }
    for v in &r.verdict.examples {
        let _ = writeln!(s, "- {:?}: {}", v.invariant, v.detail);
    }
    let c = &r.counts;
    let _ = writeln!(
        s,
        "\n## Workload\n\n- writes to Kafka: {} ({} acknowledged); through Push: {} ({} acknowledged)\n- lookups: {} ({} failed, success {:.4}%)",
        c.kafka_writes,
        c.kafka_acked,
        c.push_writes,
        c.push_acked,
        c.lookups,
        c.lookups_failed,
        r.availability.success * 100.0
    );
    for (e, n) in &c.top_errors {
        let _ = writeln!(s, "  - {n} × {e}");
    }
    let rt = &c.readers;
    let _ = writeln!(
        s,
        "- reader routing: {} sub-requests, {} retries ({} BEHIND, {} wrong shard), {} hedges ({} won), {} refused by the retry budget, {} map refreshes",
        rt.sub_requests,
        rt.retries,
        rt.behind,
        rt.wrong_shard,
        rt.hedges,
        rt.hedge_wins,
        rt.budget_denied,
        rt.map_refreshes
    );
    if rt.cache_hits + rt.cache_misses > 0 {
        let _ = writeln!(
            s,
            "- reader row cache: {} keys served from it, {} missed ({:.1} % hits)",
            rt.cache_hits,
            rt.cache_misses,
            100.0 * rt.cache_hits as f64 / (rt.cache_hits + rt.cache_misses) as f64
        );
    }
    if !c.top_write_errors.is_empty() {
        let _ = writeln!(s, "- write errors:");
        for (e, n) in &c.top_write_errors {
            let _ = writeln!(s, "  - {n} × {e}");
        }
    }
    let _ = writeln!(
        s,
        "- longest gap between successful answers: {:.0} ms (at {:.1} s)",
        r.availability.longest_gap_ms, r.availability.longest_gap_at_s
    );
    let _ = writeln!(
        s,
        "\n## Latency (ms, from the time each lookup was due)\n\n| phase | lookups | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    for (name, l) in [
        ("before faults", &r.latency.before),
        ("during faults", &r.latency.during),
        ("between / after", &r.latency.after),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.2} | {:.2} | {:.1} |",
            l.count, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let _ = writeln!(
        s,
        "\n## Faults\n\n| # | fault | target | at (s) | held (s) | recovery (ms) | lookups in window | success |\n|---|---|---|---|---|---|---|---|"
    );
    for (i, (f, w)) in r.faults.iter().zip(&r.availability.windows).enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.3}% |",
            i + 1,
            f.fault,
            f.target,
            f.start_us as f64 / 1e6,
            (f.heal_us - f.start_us) as f64 / 1e6,
            f.recovery_ms.map_or_else(
                || format!("not recovered: {}", f.error.clone().unwrap_or_default()),
                |m| format!("{m:.0}")
            ),
            w.lookups,
            w.success * 100.0
        );
    }
    let _ = writeln!(
        s,
        "\nFinal catch-up: {}.\n",
        r.final_catch_up_ms
            .map_or("did not complete".to_string(), |m| format!("{m:.0} ms"))
    );
    if !r.crashes.is_empty() {
        let _ = writeln!(s, "## Crashes\n");
        for c in &r.crashes {
            let _ = writeln!(s, "- {c}");
        }
    }
    if let Some(a) = &r.broker_audit {
        let _ = writeln!(
            s,
            "Broker audit: {} records read back; {} acknowledged writes checked at their offsets, {} not found.\n",
            a.records, a.checked, a.missing_count
        );
        for m in &a.missing {
            let _ = writeln!(s, "- {m}");
        }
    }
    if let Some(a) = &r.aggregates {
        let _ = writeln!(
            s,
            "Aggregation check: {} (key, replica) lifetime counts and sums compared with the log ({} keys with events), {} differ.\n",
            a.answers_checked, a.keys_with_events, a.mismatches
        );
        for m in &a.examples {
            let _ = writeln!(s, "- {m}");
        }
    }
    let _ = writeln!(s, "Timeline: `timeline.svg`; node logs: `nodes/`.");
    s
}

impl Report {
    /// Adds the broker audit; a write the broker does not hold where it was acknowledged,
    /// or a partition that could not be read back, fails the run (nothing else it proved
    /// can be trusted then).
    pub fn attach_audit(&mut self, audit: Result<BrokerAudit, String>) {
        match &audit {
            Ok(a) if a.ok() => {}
            Ok(a) => {
                if a.missing_count > 0 {
                    self.failures.push(format!(
                        "broker audit: {} of {} acknowledged writes are not in the broker's log at their offset",
                        a.missing_count, a.checked
                    ));
                }
                for p in &a.incomplete {
                    self.failures.push(format!("broker audit: {p}"));
                }
            }
            Err(e) => self.failures.push(format!("broker audit failed: {e}")),
        }
        self.broker_audit = audit.ok();
        self.passed = self.failures.is_empty();
    }

    /// Adds the aggregation check; a replica whose count or sum differs from the log (an
    /// event lost or counted twice), or a check that could not run, fails the run.
    pub fn attach_aggregates(&mut self, check: Result<AggregateCheck, String>) {
        match &check {
            Ok(a) if a.ok() => {}
            Ok(a) => self.failures.push(format!(
                "aggregation: {} of {} (key, replica) counts differ from the log (an event lost or counted twice)",
                a.mismatches, a.answers_checked
            )),
            Err(e) => self.failures.push(format!("aggregation check failed: {e}")),
        }
        self.aggregates = check.ok();
        self.passed = self.failures.is_empty();
    }
}

/// The SVG timeline: per second, p99 latency (log scale, line) and the failed share (red
/// bars); fault windows shaded.
pub fn timeline(r: &Report, reads: &[Read]) -> String {
    let (w, h, left, top, bottom) = (1000.0, 360.0, 60.0, 30.0, 40.0);
    let plot_h = h - top - bottom;
    let end_us = reads
        .iter()
        .map(|r| r.intended_us)
        .max()
        .unwrap_or(1_000_000)
        .max(1_000_000);
    let secs = end_us.div_ceil(1_000_000) as usize;
    let mut buckets: Vec<(Vec<u64>, usize)> = vec![(Vec::new(), 0); secs + 1];
    for rd in reads {
        let b = &mut buckets[(rd.intended_us / 1_000_000) as usize];
        b.0.push(rd.latency_us);
        if rd.error.is_some() {
            b.1 += 1;
        }
    }
    let x = |us: f64| left + (w - left - 20.0) * us / (secs as f64 * 1e6);
    // Latency axis: 0.1 ms .. 10 s, logarithmic.
    let y = |ms: f64| top + plot_h * (1.0 - ((ms.max(0.1)).log10() + 1.0) / 5.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="16" font-size="13">{} (seed {}): p99 lookup latency per second (blue, log scale) and failed share (red); faults shaded</text>
"##,
        r.parameters.scenario, r.parameters.seed
    );
    for f in &r.faults {
        let (x0, x1) = (x(f.start_us as f64), x(window_end(f) as f64));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#f4c542" fill-opacity="0.3"/><text x="{x0:.1}" y="{:.1}" fill="#8a6d00">{}</text>"##,
            (x1 - x0).max(1.0),
            top + 12.0,
            f.fault
        );
    }
    for ms in [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{ms} ms</text>"##,
            w - 20.0,
            y(ms) + 4.0,
            y = y(ms)
        );
    }
    for (i, (lat, failed)) in buckets.iter().enumerate() {
        if !lat.is_empty() && *failed > 0 {
            let share = *failed as f64 / lat.len() as f64;
            let bh = plot_h * share;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="red" fill-opacity="0.6"/>"##,
                x(i as f64 * 1e6),
                top + plot_h - bh,
                (x(1e6) - x(0.0)).max(1.0)
            );
        }
    }
    let mut points = String::new();
    for (i, (lat, _)) in buckets.iter().enumerate() {
        if lat.is_empty() {
            continue;
        }
        let mut l = lat.clone();
        l.sort_unstable();
        let p99 = percentile_ms(&l, 99.0);
        let _ = write!(points, "{:.1},{:.1} ", x((i as f64 + 0.5) * 1e6), y(p99));
    }
    let _ = writeln!(
        s,
        r##"<polyline points="{points}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>"##
    );
    for t in (0..=secs).step_by((secs / 10).max(1)) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t} s</text>"##,
            x(t as f64 * 1e6),
            h - bottom + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}
