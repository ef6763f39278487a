//! `quiver-bench export`: training-set export throughput and memory. A cluster holding a
//! view with `history` (every entity with several versions over six days) answers a
//! `quiverctl export` of a large label set (random entities at random times in that span);
//! measured: label rows/s end to end (file in → Parquet out), the peak resident memory of
//! the `quiverctl` process (bounded whatever the label set's size), and the nodes' CPU.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::Serialize;

use crate::env::dataset::{history_view, key};
use crate::env::machine::cpu_seconds;
use crate::env::{BenchCluster, ClusterSpec, Dataset};

/// Parameters of an export run (recorded in the report).
#[derive(Debug, Clone, Serialize)]
pub struct ExportParams {
    /// The cluster (its views keep history).
    pub cluster: ClusterSpec,
    /// The data.
    pub dataset: Dataset,
    /// Features of the view exported.
    pub features: u32,
    /// Older versions per entity, besides the newest.
    pub history_events: u32,
    /// Label rows.
    pub label_rows: u64,
    /// Rows per lookup.
    pub chunk_rows: usize,
    /// Lookups in flight.
    pub parallel: usize,
    /// Through the first node's `ExportFeatures` stream instead of the smart client.
    pub through_node: bool,
    /// `quiverctl` binary.
    pub quiverctl: PathBuf,
}

/// The export report (`export.json`, schema `quiver-bench.export.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Schema id.
    pub schema: &'static str,
    /// Run facts.
    pub run: crate::report::RunInfo,
    /// Parameters.
    pub params: ExportParams,
    /// Wall time of the export, s.
    pub seconds: f64,
    /// Label rows per second.
    pub rows_per_second: f64,
    /// Feature values per second (rows × features).
    pub values_per_second: f64,
    /// Peak resident memory of the `quiverctl` process, bytes.
    pub max_rss_bytes: u64,
    /// Size of the label file and of the output, bytes.
    pub label_bytes: u64,
    /// Output bytes.
    pub output_bytes: u64,
    /// Cores the nodes used during the export on average.
    pub node_cores: f64,
}

/// Runs the export bench; files under `work`.
///
/// # Errors
/// When the cluster, the label file or the export fails.
pub async fn run(p: ExportParams, work: &Path) -> anyhow::Result<ExportReport> {
    let started = crate::report::RunInfo::start();
    std::fs::create_dir_all(work)?;
    let features = [p.features];
    let mut cluster = BenchCluster::start(&p.cluster, &work.join("cluster"), &features).await?;
    if p.history_events > 0 {
        cluster
            .load_history(&p.dataset, &features, p.history_events)
            .await?;
    }
    cluster.load(&p.dataset, &features).await?;
    let labels = work.join("labels.parquet");
    let (ds, rows) = (p.dataset, p.label_rows);
    let path = labels.clone();
    tokio::task::spawn_blocking(move || write_labels(&path, &ds, rows)).await??;
    let out = work.join("train.parquet");
    let rss_file = work.join("quiverctl.rss");
    let pids = cluster.node_pids();
    let cpu_before = cpu_seconds(&pids);
    let t0 = Instant::now();
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(&p.quiverctl)
        .args(["--addr", &cluster.endpoints()[0]])
        .arg("export")
        .arg("--labels")
        .arg(&labels)
        .args(["--features", &format!("{}:*", history_view(p.features))])
        .args(["--key-column", "key", "--time-column", "ts"])
        .arg("--out")
        .arg(&out)
        .args(["--chunk-rows", &p.chunk_rows.to_string()])
        .args(["--parallel", &p.parallel.to_string()]);
    if p.through_node {
        cmd.arg("--through-node");
    }
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .context("run quiverctl export under /usr/bin/time")?;
    let seconds = t0.elapsed().as_secs_f64();
    let node_cores = (cpu_seconds(&pids) - cpu_before) / seconds;
    anyhow::ensure!(status.success(), "quiverctl export failed: {status}");
    let written = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(std::fs::File::open(&out)?)?,
    )
    .file_metadata()
    .num_rows();
    anyhow::ensure!(
        written as u64 == rows,
        "the export wrote {written} rows for {rows} label rows"
    );
    let max_rss_kib: u64 = std::fs::read_to_string(&rss_file)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .context("no peak RSS from /usr/bin/time")?;
    drop(cluster);
    Ok(ExportReport {
        schema: "quiver-bench.export.v1",
        run: started.finish(),
        seconds,
        rows_per_second: rows as f64 / seconds,
        values_per_second: rows as f64 * f64::from(p.features) / seconds,
        max_rss_bytes: max_rss_kib * 1024,
        label_bytes: std::fs::metadata(&labels)?.len(),
        output_bytes: std::fs::metadata(&out)?.len(),
        node_cores,
        params: p,
    })
}

/// Writes `rows` label rows: uniformly random entities at uniformly random times over the
/// loaded six days, and a label column; in batches, so memory stays small.
fn write_labels(path: &Path, ds: &Dataset, rows: u64) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ]));
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, schema.clone(), None)?;
    let now = crate::env::cluster::now_ms() * 1000;
    let span = 6 * 24 * 3_600_000_000u64;
    let mut x = ds.seed ^ 0x5eed;
    let mut done = 0u64;
    while done < rows {
        let n = (rows - done).min(65_536) as usize;
        let mut keys = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            x = crate::env::dataset::mix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            keys.push(key((x % u64::from(ds.entities)) as u32));
            times.push(now - ((x >> 20) % span) as i64);
        }
        let labels: Int64Array = (0..n as i64).map(|i| (i + done as i64) % 2).collect();
        w.write(&RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(TimestampMicrosecondArray::from(times)),
                Arc::new(labels),
            ],
        )?)?;
        done += n as u64;
    }
    w.close()?;
    Ok(())
}

/// The Markdown report.
pub fn markdown(r: &ExportReport) -> String {
    let p = &r.params;
    format!(
        "# quiver-bench export\n\n{}- cluster: {} nodes, P = {}, R = {}; {} entities, each with {} versions over six days in a view of {} float64 features with `history = \"7d\"`\n- label set: {} rows (random entities at random times in those six days), Parquet, {:.1} MB; output {:.1} MB\n- `quiverctl export`{}, chunks of {} rows, {} in flight, as served (`exclude_late_arrivals`)\n\n| label rows/s | feature values/s | wall time | peak RSS of quiverctl | node cores during the export |\n|---|---|---|---|---|\n| {:.0} | {:.0} | {:.1} s | {:.1} MiB | {:.2} |\n",
        r.run.markdown(),
        p.cluster.nodes,
        p.cluster.shards,
        p.cluster.replication,
        p.dataset.entities,
        p.history_events + 1,
        p.features,
        p.label_rows,
        r.label_bytes as f64 / 1e6,
        r.output_bytes as f64 / 1e6,
        if p.through_node {
            " through one node (`--through-node`: its ExportFeatures stream)"
        } else {
            " (smart client)"
        },
        p.chunk_rows,
        p.parallel,
        r.rows_per_second,
        r.values_per_second,
        r.seconds,
        r.max_rss_bytes as f64 / (1 << 20) as f64,
        r.node_cores,
    )
}
