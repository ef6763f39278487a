//! The ingest report: Markdown and the freshness CDF.

use std::fmt::Write as _;
use std::path::Path;

use super::count;
use super::plot::{Chart, Series};
use crate::ingest::IngestReport;

/// Writes `ingest.md` and `freshness-cdf.svg` into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write(r: &IngestReport, dir: &Path) -> anyhow::Result<()> {
    let chart = Chart {
        title: "freshness: send → readable on every replica".into(),
        x_label: "ms".into(),
        y_label: "fraction of records".into(),
        log_x: true,
        log_y: false,
        series: vec![Series {
            name: "quiver".into(),
            points: r.freshness.cdf.clone(),
        }],
        y_mark: None,
    };
    std::fs::write(dir.join("freshness-cdf.svg"), chart.to_svg())?;
    std::fs::write(dir.join("ingest.md"), markdown(r))?;
    Ok(())
}

/// The Markdown report.
pub fn markdown(r: &IngestReport) -> String {
    let p = &r.params;
    let mut s = String::new();
    let _ = writeln!(s, "# quiver-bench ingest\n");
    s.push_str(&r.run.markdown());
    let _ = writeln!(
        s,
        "- cluster: {} nodes, P = {}, R = {}; broker: Tansu (in-memory) on the same machine\n- {} records of {} features ({:.0} bytes each) produced {} over {} entities, while {} lookups/s of {} keys ran\n",
        p.cluster.nodes,
        p.cluster.shards,
        p.cluster.replication,
        count(r.produced as f64),
        p.features,
        r.record_bytes,
        p.rate.map_or("at full speed".into(), |x| format!(
            "at {} records/s",
            count(x)
        )),
        count(f64::from(p.dataset.entities)),
        count(p.lookup_rate),
        p.lookup_batch
    );
    let _ = writeln!(
        s,
        "Produced and acknowledged in {:.2} s ({} records/s).\n",
        r.produce_seconds,
        count(r.produced as f64 / r.produce_seconds.max(1e-9))
    );
    let _ = writeln!(
        s,
        "## Apply throughput per node\n\n| node | records applied (its replicas) | s | records/s | MB/s |\n|---|---|---|---|---|"
    );
    for n in &r.nodes {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {} | {:.2} |",
            n.node,
            count(n.records as f64),
            n.seconds,
            count(n.records_per_s),
            n.mb_per_s
        );
    }
    let f = &r.freshness;
    let _ = writeln!(
        s,
        "\n## Freshness\n\nFrom the producer's send to readable on every replica of the record's shard, {} probed records ({} failed): **p50 {:.1} ms, p99 {:.1} ms**, max {:.1} ms; first replica p50 {:.1} ms.\n\n![freshness CDF](freshness-cdf.svg)\n",
        count(f.samples as f64),
        f.failed,
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        f.first_replica_p50_ms
    );
    let _ = writeln!(
        s,
        "## Cost\n\nIngest CPU on the nodes: {:.1} µs per record per replica (node CPU during the run minus {:.2} cores the lookup load alone used); the broker used {:.2} cores.\n",
        r.ingest_cpu_us_per_record_replica, r.baseline_node_cores, r.broker_cores
    );
    let l = &r.lookups;
    let _ = writeln!(
        s,
        "## Lookups meanwhile\n\n{} lookups, {} failed: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms.",
        count(l.requests as f64),
        l.errors,
        l.p50_ms,
        l.p99_ms,
        l.p999_ms
    );
    s
}
