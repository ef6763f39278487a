//! The lookup report: Markdown tables (quiver per case, peers and floor with ratios) and
//! plots (p99 vs offered load per case and system; throughput vs batch size).

use std::fmt::Write as _;
use std::path::Path;

use super::plot::{Chart, Series};
use super::{count, opt};
use crate::lookup::{CaseResult, LookupReport, Step, SystemResult};

fn keys_at_max(s: &SystemResult, batch: u32) -> f64 {
    s.search
        .at_max
        .as_ref()
        .map_or(0.0, |st| st.achieved_rate * f64::from(batch))
}

/// quiver ÷ peer, as text (`∞` when only quiver met the SLO).
fn ratio(quiver: f64, peer: f64) -> String {
    match (quiver > 0.0, peer > 0.0) {
        (_, true) => format!("{:.2}×", quiver / peer),
        (true, false) => "∞ (peer never met the SLO)".into(),
        (false, false) => "– (neither met the SLO)".into(),
    }
}

fn plot_name(c: &CaseResult) -> String {
    format!("latency-vs-load-{}x{}.svg", c.case.batch, c.case.features)
}

/// Writes `lookup.md` and the plots into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write(r: &LookupReport, dir: &Path) -> anyhow::Result<()> {
    let slo = r.params.criteria.slo_p99_ms;
    for c in &r.cases {
        let chart = Chart {
            title: format!(
                "p99 vs offered load, {} keys × {} features",
                c.case.batch, c.case.features
            ),
            x_label: "offered load (requests/s)".into(),
            y_label: "p99 latency (ms)".into(),
            log_x: true,
            log_y: true,
            series: c
                .systems
                .iter()
                .map(|s| {
                    let mut pts: Vec<(f64, f64)> = s
                        .search
                        .steps
                        .iter()
                        .map(|st| (st.offered_rate, st.p99_ms))
                        .collect();
                    pts.extend(
                        s.at_quiver_load
                            .iter()
                            .map(|st| (st.offered_rate, st.p99_ms)),
                    );
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Series {
                        name: s.system.clone(),
                        points: pts,
                    }
                })
                .collect(),
            y_mark: Some((slo, format!("SLO p99 ≤ {slo} ms"))),
        };
        std::fs::write(dir.join(plot_name(c)), chart.to_svg())?;
    }
    // Throughput vs batch at the most common feature count.
    let mut fs: Vec<u32> = r.cases.iter().map(|c| c.case.features).collect();
    fs.sort_unstable();
    let common = fs
        .iter()
        .max_by_key(|f| fs.iter().filter(|g| g == f).count())
        .copied();
    if let Some(f) = common {
        let mut series = Vec::new();
        for name in &r.params.systems {
            let mut pts: Vec<(f64, f64)> = r
                .cases
                .iter()
                .filter(|c| c.case.features == f)
                .filter_map(|c| {
                    c.get(name)
                        .map(|s| (f64::from(c.case.batch), keys_at_max(s, c.case.batch)))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: name.clone(),
                points: pts,
            });
        }
        let chart = Chart {
            title: format!("keys/s at p99 ≤ {slo} ms vs batch size ({f} features)"),
            x_label: "keys per request".into(),
            y_label: "keys/s at the SLO".into(),
            log_x: true,
            log_y: true,
            series,
            y_mark: None,
        };
        std::fs::write(dir.join("throughput-vs-batch.svg"), chart.to_svg())?;
    }
    std::fs::write(dir.join("lookup.md"), markdown(r))?;
    Ok(())
}

/// The Markdown report.
pub fn markdown(r: &LookupReport) -> String {
    let p = &r.params;
    let slo = p.criteria.slo_p99_ms;
    let mut s = String::new();
    let _ = writeln!(s, "# quiver-bench lookup\n");
    s.push_str(&r.run.markdown());
    let _ = writeln!(
        s,
        "- cluster: {} nodes, P = {}, R = {}, block cache {} MiB, row cache {} MiB and lookup cache {} MiB per node{}; {} entities, keys `{}`, seed {}",
        p.cluster.nodes,
        p.cluster.shards,
        p.cluster.replication,
        p.cluster.block_cache_mib,
        p.cluster.row_cache_mib,
        p.cluster.lookup_cache_mib,
        if p.cluster.secure {
            ", mutual TLS + auth"
        } else {
            ", plaintext, auth off"
        },
        count(f64::from(p.dataset.entities)),
        p.key_choice,
        p.dataset.seed
    );
    if p.cluster.quiet_idle {
        let _ = writeln!(
            s,
            "- nodes idle as deployed: default poll, lag-refresh and heartbeat intervals, consumers' `fetch.wait.max.ms` {} (the node default, 20, is for brokers that do not answer a waiting fetch when records arrive)",
            crate::env::cluster::QUIET_FETCH_WAIT_MS
        );
    }
    let _ = writeln!(
        s,
        "- open loop (latency from each request's intended send time); SLO p99 ≤ {slo} ms with ≤ {:.1} % errors; steps of {} s from {} req/s doubling, {} bisections, then {} s at half the rate found; ≤ {} requests in flight\n",
        p.criteria.max_error_ratio * 100.0,
        p.search.step_secs,
        p.search.start_rate,
        p.search.refine,
        p.search.measure_secs,
        p.search.max_in_flight
    );
    let _ = writeln!(s, "## quiver\n");
    let _ = writeln!(
        s,
        "| keys × features | max rate at SLO (req/s) | keys/s | p50 / p99 / p99.9 at 50 % (ms) | server cores at max | keys/s per server core |\n|---|---|---|---|---|---|"
    );
    for c in &r.cases {
        let Some(q) = c.get("quiver") else { continue };
        let half = q.search.at_half.as_ref();
        let at_max = q.search.at_max.as_ref();
        let _ = writeln!(
            s,
            "| {} × {} | {} | {} | {} | {} | {} |",
            c.case.batch,
            c.case.features,
            count(q.search.max_rate),
            count(keys_at_max(q, c.case.batch)),
            match (half, q.at_quiver_load.as_ref()) {
                (Some(h), _) => format!("{:.2} / {:.2} / {:.2}", h.p50_ms, h.p99_ms, h.p999_ms),
                (None, Some(l)) => format!(
                    "– (SLO never met; at {:.0} req/s: {:.2} / {:.2} / {:.2})",
                    l.offered_rate, l.p50_ms, l.p99_ms, l.p999_ms
                ),
                (None, None) => "–".into(),
            },
            opt(at_max.and_then(|m| m.server_cores), 2),
            at_max
                .and_then(|m| m.keys_per_server_core)
                .map_or("–".into(), count),
        );
    }
    let _ = writeln!(
        s,
        "\n## Against peers and the floor\n\nThroughput ratio: quiver's max rate at the SLO ÷ the system's. p99 at equal load: each system offered quiver's reference load — half quiver's max rate at the SLO, or the lowest rate quiver was offered when it never met the SLO — and p99 ratio = quiver's p99 there ÷ the system's (below 1: quiver is faster).\n"
    );
    let _ = writeln!(
        s,
        "| keys × features | system | max rate at SLO (req/s) | keys/s per server core | throughput quiver ÷ system | p99 at quiver's reference load (ms) | p99 quiver ÷ system |\n|---|---|---|---|---|---|---|"
    );
    for c in &r.cases {
        let Some(q) = c.get("quiver") else { continue };
        let q_p99 = q
            .search
            .at_half
            .as_ref()
            .or(q.at_quiver_load.as_ref())
            .map(|h| h.p99_ms);
        for sys in c.systems.iter().filter(|x| x.system != "quiver") {
            let eq = sys.at_quiver_load.as_ref();
            let p99 = eq.map(|e| {
                format!(
                    "{:.2}{}",
                    e.p99_ms,
                    if e.overloaded {
                        " (overloaded, lower bound)"
                    } else {
                        ""
                    }
                )
            });
            let _ = writeln!(
                s,
                "| {} × {} | {} | {} | {} | {} | {} | {} |",
                c.case.batch,
                c.case.features,
                sys.system,
                count(sys.search.max_rate),
                sys.search
                    .at_max
                    .as_ref()
                    .and_then(|m| m.keys_per_server_core)
                    .map_or("– (in-process)".into(), count),
                ratio(q.search.max_rate, sys.search.max_rate),
                p99.unwrap_or_else(|| "–".into()),
                match (q_p99, eq) {
                    (Some(a), Some(e)) if e.p99_ms > 0.0 => format!("{:.2}", a / e.p99_ms),
                    _ => "–".into(),
                }
            );
        }
    }
    if r.cases.iter().any(|c| c.get("quiver-cached").is_some()) {
        let spec = r.params.client_cache;
        let _ = writeln!(
            s,
            "\n## Client-side row cache\n\n`quiver-cached`: the same cluster through a client with a row cache{} (keys `{}`). Hit rate: keys served from the cache over keys asked, during that system's runs of the case.\n",
            spec.map_or(String::new(), |c| format!(
                " of {} rows, TTL {} ms",
                count(c.rows as f64),
                c.ttl_ms
            )),
            r.params.key_choice
        );
        let _ = writeln!(
            s,
            "| keys × features | hit rate | max rate at SLO, uncached → cached (req/s) | keys/s per server core, uncached → cached | cached ÷ uncached per server core | p99 at quiver's reference load, uncached → cached (ms) |\n|---|---|---|---|---|---|"
        );
        for c in &r.cases {
            let (Some(q), Some(k)) = (c.get("quiver"), c.get("quiver-cached")) else {
                continue;
            };
            let per_core = |x: &SystemResult| {
                x.search
                    .at_max
                    .as_ref()
                    .and_then(|m| m.keys_per_server_core)
            };
            let p99 = |x: Option<&Step>| x.map_or("–".into(), |h| format!("{:.2}", h.p99_ms));
            let _ = writeln!(
                s,
                "| {} × {} | {} | {} → {} | {} → {} | {} | {} → {} |",
                c.case.batch,
                c.case.features,
                k.cache_hit_rate
                    .map_or("–".into(), |h| format!("{:.1} %", 100.0 * h)),
                count(q.search.max_rate),
                count(k.search.max_rate),
                per_core(q).map_or("–".into(), count),
                per_core(k).map_or("–".into(), count),
                match (per_core(q), per_core(k)) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
                    _ => "–".into(),
                },
                p99(q.search.at_half.as_ref().or(q.at_quiver_load.as_ref())),
                p99(k.at_quiver_load.as_ref()),
            );
        }
    }
    if r.cases.iter().any(|c| c.get("quiver-aggs").is_some()) {
        aggregates_section(&mut s, r);
    }
    if r.cases.iter().any(|c| c.get("quiver-history").is_some()) {
        let _ = writeln!(
            s,
            "\n## Views with history\n\n`quiver-history`: the same keys and features, read (latest values) from a copy of the case's view with `history = \"7d\"` over the same topic, every entity with {} versions in its history. Server CPU per request at equal load (quiver's reference load) and at each one's saturation.\n",
            r.params.history_events + 1
        );
        cost_table(&mut s, r, "quiver-history", "with history");
    }
    let _ = writeln!(s, "\n## quiver as a share of the floor\n");
    let _ = writeln!(
        s,
        "| keys × features | request / response bytes | quiver ÷ gRPC echo (req/s at SLO) | quiver ÷ raw RocksDB multi-get (keys/s at SLO) |\n|---|---|---|---|"
    );
    for c in &r.cases {
        let Some(q) = c.get("quiver") else { continue };
        let pct = |name: &str| {
            c.get(name).map_or("–".into(), |f| {
                if f.search.max_rate > 0.0 {
                    format!("{:.0} %", 100.0 * q.search.max_rate / f.search.max_rate)
                } else {
                    "– (floor never met the SLO)".into()
                }
            })
        };
        let _ = writeln!(
            s,
            "| {} × {} | {} / {} | {} | {} |",
            c.case.batch,
            c.case.features,
            count(c.request_bytes as f64),
            count(c.response_bytes as f64),
            pct("echo"),
            pct("rocksdb")
        );
    }
    let st = &r.storage;
    let _ = writeln!(
        s,
        "\n## Storage\n\n{} features per replica; {} bytes in RocksDB on all nodes (SST + memtables, R copies): {:.1} bytes per stored feature; node RSS after loading: {} MiB.\n",
        count(st.features_per_replica as f64),
        count(st.node_bytes),
        st.bytes_per_feature,
        st.node_rss_bytes
            .iter()
            .map(|b| format!("{:.0}", *b as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "## Plots\n");
    for c in &r.cases {
        let _ = writeln!(
            s,
            "- ![p99 vs load {0}x{1}]({2}) `{2}`",
            c.case.batch,
            c.case.features,
            plot_name(c)
        );
    }
    let _ = writeln!(
        s,
        "- ![throughput vs batch](throughput-vs-batch.svg) `throughput-vs-batch.svg`"
    );
    let _ = writeln!(
        s,
        "\n## Every step\n\n| case | system | offered | achieved | p50 | p99 | p99.9 | max (ms) | errors | server cores | result |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in &r.cases {
        for sys in &c.systems {
            for st in sys.search.steps.iter().chain(sys.at_quiver_load.iter()) {
                let _ = writeln!(
                    s,
                    "| {}×{} | {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | {} | {} | {}{} |",
                    c.case.batch,
                    c.case.features,
                    sys.system,
                    st.offered_rate,
                    st.achieved_rate,
                    st.p50_ms,
                    st.p99_ms,
                    st.p999_ms,
                    st.max_ms,
                    st.errors,
                    opt(st.server_cores, 2),
                    if st.passed { "pass" } else { "fail" },
                    if st.overloaded { ", overloaded" } else { "" }
                );
            }
        }
    }
    s
}

/// Server CPU per request of a step, µs.
fn cpu_per_request_us(st: Option<&Step>) -> Option<f64> {
    let st = st?;
    let cores = st.server_cores?;
    (st.achieved_rate > 0.0).then(|| cores / st.achieved_rate * 1e6)
}

/// The aggregation views' lookups against the plain view's, per case.
fn aggregates_section(s: &mut String, r: &LookupReport) {
    let history = r.params.history_events;
    let _ = writeln!(
        s,
        "\n## Aggregation views\n\n`quiver-aggs`: the same keys, each asking the six windowed features (count and sum over 1 h, avg and max over 24 h, sum and count over 7 d) of an aggregation view over the case's topic, every entity with {} records in its windows ({history} older ones spread over six days, then the newest). Server CPU per request at equal load: both at quiver's reference load (half its max rate at the SLO); at saturation: at each one's max rate at the SLO.\n",
        history + 1
    );
    cost_table(s, r, "quiver-aggs", "windowed");
}

/// Server CPU per request of `system` against quiver's (plain views), per case.
fn cost_table(s: &mut String, r: &LookupReport, system: &str, label: &str) {
    let _ = writeln!(
        s,
        "| keys × features | server CPU per request at equal load, plain → {label} (µs) | {label} ÷ plain | at saturation, plain → {label} (µs) | {label} ÷ plain | max rate at SLO, plain → {label} (req/s) |\n|---|---|---|---|---|---|"
    );
    for c in &r.cases {
        let (Some(q), Some(a)) = (c.get("quiver"), c.get(system)) else {
            continue;
        };
        let us = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(p), Some(w)) if p > 0.0 => format!("{:.2}×", w / p),
            _ => "–".into(),
        };
        let (pe, we) = (
            cpu_per_request_us(q.search.at_half.as_ref().or(q.at_quiver_load.as_ref())),
            cpu_per_request_us(a.at_quiver_load.as_ref()),
        );
        let (ps, ws) = (
            cpu_per_request_us(q.search.at_max.as_ref()),
            cpu_per_request_us(a.search.at_max.as_ref()),
        );
        let _ = writeln!(
            s,
            "| {} × {} | {} → {} | {} | {} → {} | {} | {} → {} |",
            c.case.batch,
            c.case.features,
            us(pe),
            us(we),
            ratio(pe, we),
            us(ps),
            us(ws),
            ratio(ps, ws),
            count(q.search.max_rate),
            count(a.search.max_rate),
        );
    }
}
