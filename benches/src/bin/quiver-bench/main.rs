//! `quiver-bench`: the bench suite's load tool for capacity planning.
//!
//! ```text
//! quiver-bench lookup   [options]   open-loop lookups: quiver vs Redis, Feast and the floor
//! quiver-bench ingest   [options]   apply throughput per node and freshness under lookups
//! quiver-bench capacity [options]   the sizing model from a lookup and an ingest report
//! quiver-bench export   [options]   training-set export: label rows/s, exporter memory
//! quiver-bench replicas [options]   checkpoint bootstrap vs log replay; space of a dropped version
//! quiver-bench all      [options]   the three above into one directory
//! ```
//! Each writes JSON, Markdown and SVG plots into `--out`. See `benches/README.md`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use quiver_bench::capacity::{self, CapacityReport, Question};
use quiver_bench::env::{ClusterSpec, Dataset};
use quiver_bench::ingest::{self, IngestParams};
use quiver_bench::lookup::{self, Case, Criteria, LookupParams, SearchSpec};
use quiver_bench::report::{self, RunInfo};

#[derive(Parser)]
#[command(
    name = "quiver-bench",
    version,
    about = "quiver's load benchmarks for capacity planning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lookup load: highest rate within the p99 SLO per case and system, latency, CPU.
    Lookup(LookupArgs),
    /// Ingest throughput per node and freshness, while lookups run.
    Ingest(IngestArgs),
    /// Training-set export: label rows/s and the exporter's peak memory.
    Export(ExportArgs),
    /// A new replica from a peer's checkpoint against log replay of the same shard, and
    /// the disk space a dropped view version gives back (3 nodes, P = 1, R = 2).
    Replicas(ReplicasArgs),
    /// The sizing model and its check, from the reports in `--from`.
    Capacity(CapacityArgs),
    /// lookup, ingest and capacity into one directory.
    All(AllArgs),
    /// The echo floor's server (started by `lookup`).
    /// The Rust smart client in a closed loop (one lookup at a time): latency and calls
    /// per client CPU second, as JSON on stdout (run by python/bench/online_bench.py).
    #[command(hide = true)]
    ClientLoop {
        /// Nodes, `host:port`, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        seeds: Vec<String>,
        /// The view read.
        #[arg(long)]
        view: String,
        /// Features f0..f{N-1} of the view.
        #[arg(long)]
        features: u32,
        /// Keys u0000000.. that exist.
        #[arg(long)]
        entities: u32,
        /// Keys per call.
        #[arg(long)]
        batch: usize,
        /// Measured time.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        measure: std::time::Duration,
        /// Unmeasured time first.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        warmup: std::time::Duration,
        /// Callers, each with one lookup in flight.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    #[command(hide = true)]
    ServeEcho {
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Output directory (JSON, Markdown, SVG).
    #[arg(long, env = "QUIVER_BENCH_OUT", default_value = "bench-results")]
    out: PathBuf,
    /// Working directory for node data and peers' files (default: a fresh temporary one,
    /// removed afterwards).
    #[arg(long, env = "QUIVER_BENCH_WORK")]
    work: Option<PathBuf>,
    /// quiver nodes.
    #[arg(long, env = "QUIVER_BENCH_NODES", default_value_t = 3)]
    nodes: u32,
    /// Shards (partitions).
    #[arg(long, env = "QUIVER_BENCH_SHARDS", default_value_t = 8)]
    shards: u32,
    /// Replicas per shard.
    #[arg(long, env = "QUIVER_BENCH_REPLICATION", default_value_t = 2)]
    replication: u32,
    /// RocksDB block cache per node, MiB.
    #[arg(long, env = "QUIVER_BENCH_BLOCK_CACHE_MIB", default_value_t = 256)]
    block_cache_mib: u32,
    /// Entities loaded.
    #[arg(long, env = "QUIVER_BENCH_ENTITIES", default_value_t = 50_000)]
    entities: u32,
    /// Seed of data and key choices.
    #[arg(long, env = "QUIVER_BENCH_SEED", default_value_t = 42)]
    seed: u64,
    /// Run quiver secured: mutual TLS between the bench's clients and the nodes and
    /// between nodes, auth on with certificate identities (a throw-away CA). Measures the
    /// cost of TLS and the auth check.
    #[arg(long, env = "QUIVER_BENCH_SECURE")]
    secure: bool,
}

impl Common {
    /// Rejects shapes no run can have (before anything starts).
    fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("--nodes", self.nodes),
            ("--shards", self.shards),
            ("--replication", self.replication),
            ("--entities", self.entities),
        ] {
            anyhow::ensure!(v >= 1, "{name} must be at least 1 (got {v})");
        }
        anyhow::ensure!(
            self.replication <= self.nodes,
            "--replication {} exceeds --nodes {}: each replica of a shard needs its own node",
            self.replication,
            self.nodes
        );
        Ok(())
    }

    fn cluster(&self) -> ClusterSpec {
        ClusterSpec {
            nodes: self.nodes,
            shards: self.shards,
            replication: self.replication,
            block_cache_mib: self.block_cache_mib,
            secure: self.secure,
            aggregations: false,
            history: false,
            version_retention_s: None,
        }
    }

    fn dataset(&self) -> Dataset {
        Dataset {
            entities: self.entities,
            seed: self.seed,
        }
    }
}

#[derive(Args, Clone)]
struct LookupArgs {
    #[command(flatten)]
    common: Common,
    /// Cases, BATCHxFEATURES.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x50,10x50,100x50,500x50,1000x50,100x10,100x250,1x250"
    )]
    cases: Vec<Case>,
    /// Systems besides quiver: redis, feast, echo, rocksdb.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "echo,rocksdb,redis,feast"
    )]
    peers: Vec<String>,
    /// `uniform` or `zipf:S`.
    #[arg(long, default_value = "uniform")]
    keys: String,
    /// p99 SLO, ms.
    #[arg(long, default_value_t = 3.0)]
    slo_p99_ms: f64,
    /// Largest error share of a passing step.
    #[arg(long, default_value_t = 0.001)]
    max_error_ratio: f64,
    /// First rate of the search, requests/s.
    #[arg(long, default_value_t = 100.0)]
    start_rate: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 200_000.0)]
    max_rate: f64,
    /// Seconds per search step.
    #[arg(long, default_value_t = 4.0)]
    step_secs: f64,
    /// Bisection steps.
    #[arg(long, default_value_t = 3)]
    refine: u32,
    /// Seconds of the run at half the found rate.
    #[arg(long, default_value_t = 10.0)]
    measure_secs: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Redis client connections.
    #[arg(long, default_value_t = 16)]
    redis_connections: usize,
    /// Feast server worker processes (default: the machine's cores).
    #[arg(long)]
    feast_workers: Option<usize>,
    /// Also measure quiver through a client with a row cache of this many rows
    /// (`quiver-cached`, beside the uncached client in the same run).
    #[arg(long)]
    client_cache: Option<usize>,
    /// TTL of that cache, ms.
    #[arg(long, default_value_t = 1000)]
    client_cache_ttl_ms: u64,
    /// Also register an aggregation view of six windowed features (count and sum over
    /// 1 h, avg and max over 24 h, sum and count over 7 d) over each case's topic and
    /// measure their lookup (`quiver-aggs`) beside the plain view's: use cases with 6
    /// features (e.g. `100x6`) to compare like with like.
    #[arg(long)]
    aggregations: bool,
    /// Also register a copy of each case's view with `history = "7d"` (same topic, same
    /// features) and measure its latest-value lookups (`quiver-history`) beside the plain
    /// view's: the cost history adds to reads.
    #[arg(long)]
    history: bool,
    /// With `--aggregations` or `--history`: older records per entity loaded first (event
    /// times spread over six days), so windows count more than the newest record and
    /// histories hold more than one version.
    #[arg(long, default_value_t = 0)]
    history_events: u32,
}

#[derive(Args, Clone)]
struct IngestArgs {
    #[command(flatten)]
    common: Common,
    /// Features per record.
    #[arg(long, default_value_t = 10)]
    features: u32,
    /// Records produced while measuring.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Records/s (default: full speed).
    #[arg(long)]
    rate: Option<f64>,
    /// Lookups/s meanwhile.
    #[arg(long, default_value_t = 200.0)]
    lookup_rate: f64,
    /// Keys per lookup meanwhile.
    #[arg(long, default_value_t = 10)]
    lookup_batch: u32,
    /// Records probed for freshness.
    #[arg(long, default_value_t = 2000)]
    freshness_samples: u64,
    /// Also count every record in an aggregation view of six windowed features over the
    /// same topic; freshness probes then wait for the record to be counted there.
    #[arg(long)]
    aggregations: bool,
}

#[derive(Args, Clone)]
struct ExportArgs {
    #[command(flatten)]
    common: Common,
    /// Features of the exported view.
    #[arg(long, default_value_t = 10)]
    features: u32,
    /// Older versions per entity loaded before the newest (over six days).
    #[arg(long, default_value_t = 8)]
    history_events: u32,
    /// Label rows exported.
    #[arg(long, default_value_t = 1_000_000)]
    label_rows: u64,
    /// Rows per lookup.
    #[arg(long, default_value_t = 1000)]
    chunk_rows: usize,
    /// Lookups in flight.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// The `quiverctl` binary (default: beside this one).
    #[arg(long, env = "QUIVERCTL_BIN")]
    quiverctl: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ReplicasArgs {
    /// Output directory (JSON, Markdown).
    #[arg(long, env = "QUIVER_BENCH_OUT", default_value = "bench-results")]
    out: PathBuf,
    /// Working directory (default: a fresh temporary one, removed afterwards).
    #[arg(long, env = "QUIVER_BENCH_WORK")]
    work: Option<PathBuf>,
    /// Entities: rows of the one shard (3.5 M × 50 features ≈ 1 GB on disk).
    #[arg(long, default_value_t = 200_000)]
    entities: u32,
    /// float64 features per row.
    #[arg(long, default_value_t = 50)]
    features: u32,
    /// Seed of the data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `registry.version_retention` of the nodes, seconds: how long version 1 is kept
    /// after version 2 replaces it.
    #[arg(long, default_value_t = 5)]
    retention_s: u64,
    /// RocksDB block cache per node, MiB.
    #[arg(long, default_value_t = 256)]
    block_cache_mib: u32,
}

#[derive(Args, Clone)]
struct QuestionArgs {
    /// Lookups/s to serve.
    #[arg(long, default_value_t = 20_000.0)]
    qps: f64,
    /// Keys per lookup.
    #[arg(long, default_value_t = 100.0)]
    batch: f64,
    /// Features per key.
    #[arg(long, default_value_t = 50.0)]
    features: f64,
    /// Entities.
    #[arg(long = "plan-entities", default_value_t = 10_000_000.0)]
    plan_entities: f64,
    /// Replicas.
    #[arg(long = "plan-replicas", default_value_t = 3)]
    plan_replicas: u32,
    /// Ingest records/s.
    #[arg(long, default_value_t = 5_000.0)]
    ingest_rate: f64,
    /// Cores per node.
    #[arg(long, default_value_t = 16.0)]
    cores: f64,
    /// Memory per node, GiB.
    #[arg(long, default_value_t = 64.0)]
    memory_gib: f64,
    /// Share of cores planned for use.
    #[arg(long, default_value_t = 0.6)]
    utilisation: f64,
    /// Share of the data kept in memory.
    #[arg(long, default_value_t = 1.0)]
    hot_fraction: f64,
}

impl QuestionArgs {
    fn question(&self) -> anyhow::Result<Question> {
        anyhow::ensure!(
            self.cores > 0.0 && self.memory_gib > 0.0,
            "--cores and --memory-gib must be positive"
        );
        anyhow::ensure!(
            self.utilisation > 0.0 && self.utilisation <= 1.0,
            "--utilisation {} must be in (0, 1]",
            self.utilisation
        );
        anyhow::ensure!(
            self.hot_fraction >= 0.0 && self.hot_fraction <= 1.0,
            "--hot-fraction {} must be in [0, 1]",
            self.hot_fraction
        );
        anyhow::ensure!(
            self.plan_replicas >= 1,
            "--plan-replicas must be at least 1"
        );
        Ok(Question {
            qps: self.qps,
            batch: self.batch,
            features: self.features,
            entities: self.plan_entities,
            replicas: self.plan_replicas,
            ingest_rate: self.ingest_rate,
            cores: self.cores,
            memory_gib: self.memory_gib,
            utilisation: self.utilisation,
            hot_fraction: self.hot_fraction,
        })
    }
}

#[derive(Args, Clone)]
struct CapacityArgs {
    /// Directory holding lookup.json and ingest.json.
    #[arg(long, default_value = "bench-results")]
    from: PathBuf,
    /// Output directory (default: --from).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    question: QuestionArgs,
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    lookup: LookupArgs,
    /// Records produced by the ingest part.
    #[arg(long, default_value_t = 200_000)]
    ingest_records: u64,
    /// Records/s of the ingest part (default: full speed).
    #[arg(long)]
    ingest_rate_limit: Option<f64>,
    #[command(flatten)]
    question: QuestionArgs,
}

fn lookup_params(a: &LookupArgs) -> anyhow::Result<LookupParams> {
    a.common.validate()?;
    anyhow::ensure!(a.max_in_flight >= 1, "--max-in-flight must be at least 1");
    anyhow::ensure!(
        a.redis_connections >= 1,
        "--redis-connections must be at least 1"
    );
    anyhow::ensure!(
        a.feast_workers != Some(0),
        "--feast-workers must be at least 1"
    );
    let known = ["echo", "rocksdb", "redis", "feast"];
    for p in &a.peers {
        anyhow::ensure!(
            known.contains(&p.as_str()),
            "unknown peer {p:?}: expected one of {known:?}"
        );
    }
    anyhow::ensure!(a.slo_p99_ms > 0.0, "--slo-p99-ms must be positive");
    anyhow::ensure!(
        a.start_rate > 0.0 && a.max_rate >= a.start_rate,
        "need 0 < --start-rate ≤ --max-rate"
    );
    anyhow::ensure!(
        a.step_secs > 0.0 && a.measure_secs > 0.0,
        "step and measure seconds must be positive"
    );
    anyhow::ensure!(!a.cases.is_empty(), "no --cases");
    anyhow::ensure!(
        a.client_cache != Some(0) && a.client_cache_ttl_ms > 0,
        "--client-cache and --client-cache-ttl-ms must be positive"
    );
    let mut systems = vec!["quiver".to_string()];
    if a.client_cache.is_some() {
        systems.push("quiver-cached".into());
    }
    if a.aggregations {
        systems.push("quiver-aggs".into());
    }
    if a.history {
        systems.push("quiver-history".into());
    }
    anyhow::ensure!(
        a.history_events == 0 || a.aggregations || a.history,
        "--history-events needs --aggregations or --history"
    );
    systems.extend(a.peers.iter().cloned());
    Ok(LookupParams {
        cluster: ClusterSpec {
            aggregations: a.aggregations,
            history: a.history,
            ..a.common.cluster()
        },
        dataset: a.common.dataset(),
        key_choice: a.keys.clone(),
        cases: a.cases.clone(),
        systems,
        criteria: Criteria {
            slo_p99_ms: a.slo_p99_ms,
            max_error_ratio: a.max_error_ratio,
        },
        search: SearchSpec {
            start_rate: a.start_rate,
            max_rate: a.max_rate,
            step_secs: a.step_secs,
            refine: a.refine,
            measure_secs: a.measure_secs,
            max_in_flight: a.max_in_flight,
        },
        redis_connections: a.redis_connections,
        feast_workers: a
            .feast_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        client_cache: a
            .client_cache
            .map(|rows| quiver_bench::lookup::ClientCacheSpec {
                rows,
                ttl_ms: a.client_cache_ttl_ms,
            }),
        aggregates: a.aggregations,
        history_events: a.history_events,
    })
}

fn ingest_params(c: &Common, a: &IngestArgs) -> anyhow::Result<IngestParams> {
    c.validate()?;
    anyhow::ensure!(a.features >= 1, "--features must be at least 1");
    anyhow::ensure!(a.lookup_batch >= 1, "--lookup-batch must be at least 1");
    anyhow::ensure!(a.records > 0, "--records must be positive");
    anyhow::ensure!(a.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    anyhow::ensure!(a.lookup_rate > 0.0, "--lookup-rate must be positive");
    Ok(IngestParams {
        cluster: ClusterSpec {
            aggregations: a.aggregations,
            ..c.cluster()
        },
        dataset: c.dataset(),
        features: a.features,
        records: a.records,
        rate: a.rate,
        lookup_rate: a.lookup_rate,
        lookup_batch: a.lookup_batch,
        freshness_samples: a.freshness_samples,
    })
}

/// A working directory that is removed afterwards when the tool made it.
struct Work {
    path: PathBuf,
    owned: bool,
}

impl Work {
    fn new(given: Option<PathBuf>) -> anyhow::Result<Work> {
        let owned = given.is_none();
        Ok(Work {
            path: lookup::work_dir(given)?,
            owned,
        })
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn run_lookup(a: &LookupArgs) -> anyhow::Result<()> {
    let p = lookup_params(a)?;
    let work = Work::new(a.common.work.clone())?;
    let r = lookup::run(p, &work.path.join("lookup")).await?;
    report::write_json(&a.common.out, "lookup.json", &r)?;
    report::lookup::write(&r, &a.common.out)?;
    eprintln!("wrote {}", a.common.out.join("lookup.md").display());
    Ok(())
}

async fn run_ingest(c: &Common, a: &IngestArgs) -> anyhow::Result<()> {
    let p = ingest_params(c, a)?;
    let work = Work::new(c.work.clone())?;
    let r = ingest::run(p, &work.path.join("ingest")).await?;
    report::write_json(&c.out, "ingest.json", &r)?;
    report::ingest::write(&r, &c.out)?;
    eprintln!("wrote {}", c.out.join("ingest.md").display());
    Ok(())
}

async fn run_export(a: &ExportArgs) -> anyhow::Result<()> {
    a.common.validate()?;
    anyhow::ensure!(
        a.features >= 1 && a.label_rows >= 1,
        "--features and --label-rows must be positive"
    );
    anyhow::ensure!(
        a.chunk_rows >= 1 && a.parallel >= 1,
        "--chunk-rows and --parallel must be positive"
    );
    let quiverctl = match &a.quiverctl {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("quiverctl"),
    };
    anyhow::ensure!(
        quiverctl.exists(),
        "no quiverctl at {} (build it: cargo build --release -p quiver-client, or pass --quiverctl)",
        quiverctl.display()
    );
    let p = quiver_bench::export::ExportParams {
        cluster: ClusterSpec {
            history: true,
            ..a.common.cluster()
        },
        dataset: a.common.dataset(),
        features: a.features,
        history_events: a.history_events,
        label_rows: a.label_rows,
        chunk_rows: a.chunk_rows,
        parallel: a.parallel,
        quiverctl,
    };
    let work = Work::new(a.common.work.clone())?;
    let r = quiver_bench::export::run(p, &work.path.join("export")).await?;
    std::fs::create_dir_all(&a.common.out)?;
    report::write_json(&a.common.out, "export.json", &r)?;
    std::fs::write(
        a.common.out.join("export.md"),
        quiver_bench::export::markdown(&r),
    )?;
    eprintln!("{}", quiver_bench::export::markdown(&r));
    Ok(())
}

async fn run_replicas(a: &ReplicasArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.entities >= 1 && a.features >= 1,
        "--entities and --features must be positive"
    );
    let p = quiver_bench::replicas::ReplicasParams {
        cluster: ClusterSpec {
            nodes: 3,
            shards: 1,
            replication: 2,
            block_cache_mib: a.block_cache_mib,
            secure: false,
            aggregations: false,
            history: false,
            version_retention_s: Some(a.retention_s),
        },
        dataset: Dataset {
            entities: a.entities,
            seed: a.seed,
        },
        features: a.features,
    };
    let work = Work::new(a.work.clone())?;
    let r = quiver_bench::replicas::run(p, &work.path.join("replicas")).await?;
    std::fs::create_dir_all(&a.out)?;
    report::write_json(&a.out, "replicas.json", &r)?;
    let md = quiver_bench::replicas::markdown(&r);
    std::fs::write(a.out.join("replicas.md"), &md)?;
    eprintln!("{md}");
    Ok(())
}

fn run_capacity(
    from: &std::path::Path,
    out: &std::path::Path,
    q: &QuestionArgs,
) -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = from.join(name);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    };
    let (lookup, ingest) = (read("lookup.json")?, read("ingest.json")?);
    let points = capacity::points(&lookup)?;
    let model = capacity::model(&lookup, &ingest, &points)?;
    let question = q.question()?;
    let r = CapacityReport {
        schema: "quiver-bench.capacity.v1",
        run: RunInfo::start().finish(),
        answer: capacity::answer(&model, &question),
        checks: capacity::checks(&points),
        points,
        model,
        question,
    };
    report::write_json(out, "capacity.json", &r)?;
    std::fs::write(out.join("capacity.md"), capacity::markdown(&r))?;
    eprintln!(
        "{} nodes (bound by {}); wrote {}",
        r.answer.nodes,
        r.answer.bound_by,
        out.join("capacity.md").display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Ctrl-C or SIGTERM drops the run: every process it started (nodes, broker, peers)
        // is killed by its owner's drop, so no orphan skews the next measurement.
        tokio::select! {
            r = run(cli.command) => r,
            s = interrupted() => anyhow::bail!("interrupted by {s}; stopped every process the run started"),
        }
    })
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Lookup(a) => run_lookup(&a).await,
        Command::Ingest(a) => run_ingest(&a.common, &a).await,
        Command::Export(a) => run_export(&a).await,
        Command::Replicas(a) => run_replicas(&a).await,
        Command::Capacity(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.from.clone());
            run_capacity(&a.from, &out, &a.question)
        }
        Command::All(a) => {
            run_lookup(&a.lookup).await?;
            let ingest = IngestArgs {
                common: a.lookup.common.clone(),
                features: 10,
                records: a.ingest_records,
                rate: a.ingest_rate_limit,
                lookup_rate: 200.0,
                lookup_batch: 10,
                freshness_samples: 2000,
                aggregations: false,
            };
            run_ingest(&a.lookup.common, &ingest).await?;
            let out = a.lookup.common.out.clone();
            run_capacity(&out, &out, &a.question)
        }
        Command::ClientLoop {
            seeds,
            view,
            features,
            entities,
            batch,
            measure,
            warmup,
            concurrency,
        } => {
            let spec = quiver_bench::client_loop::LoopSpec {
                seeds,
                features: (0..features).map(|f| format!("{view}:f{f}")).collect(),
                keys: (0..entities).map(|k| format!("u{k:07}")).collect(),
                batch,
                warmup,
                measure,
                concurrency,
            };
            let r = quiver_bench::client_loop::run(&spec).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::ServeEcho { addr } => quiver_bench::systems::echo::serve(addr).await,
    }
}
