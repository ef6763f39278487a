//! The command line: subcommands, their arguments, and the checks that turn them into
//! the library's run parameters (before anything starts).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quiver_bench::capacity::Question;
use quiver_bench::env::{ClusterSpec, Dataset};
use quiver_bench::ingest::IngestParams;
use quiver_bench::lookup::{Case, Criteria, LookupParams, SearchSpec};

#[derive(Parser)]
#[command(
    name = "quiver-bench",
    version,
    about = "quiver's load benchmarks for capacity planning"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// The echo floor's server (started by `lookup`).
    #[command(hide = true)]
    ServeEcho {
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
}

#[derive(Args, Clone)]
pub(crate) struct Common {
    /// Output directory (JSON, Markdown, SVG).
    #[arg(long, env = "QUIVER_BENCH_OUT", default_value = "bench-results")]
    pub(crate) out: PathBuf,
    /// Working directory for node data and peers' files (default: a fresh temporary one,
    /// removed afterwards).
    #[arg(long, env = "QUIVER_BENCH_WORK")]
    pub(crate) work: Option<PathBuf>,
    /// quiver nodes.
    #[arg(long, env = "QUIVER_BENCH_NODES", default_value_t = 3)]
    pub(crate) nodes: u32,
    /// Shards (partitions).
    #[arg(long, env = "QUIVER_BENCH_SHARDS", default_value_t = 8)]
    pub(crate) shards: u32,
    /// Replicas per shard.
    #[arg(long, env = "QUIVER_BENCH_REPLICATION", default_value_t = 2)]
    pub(crate) replication: u32,
    /// RocksDB block cache per node, MiB.
    #[arg(long, env = "QUIVER_BENCH_BLOCK_CACHE_MIB", default_value_t = 256)]
    pub(crate) block_cache_mib: u32,
    /// RocksDB row cache per node, MiB (0: none; the node's default is 128).
    #[arg(long, env = "QUIVER_BENCH_ROW_CACHE_MIB", default_value_t = 128)]
    pub(crate) row_cache_mib: u32,
    /// quiver's lookup cache per node, MiB (0: none; the node's default is 256).
    #[arg(long, env = "QUIVER_BENCH_LOOKUP_CACHE_MIB", default_value_t = 256)]
    pub(crate) lookup_cache_mib: u32,
    /// Entities loaded.
    #[arg(long, env = "QUIVER_BENCH_ENTITIES", default_value_t = 50_000)]
    pub(crate) entities: u32,
    /// Seed of data and key choices.
    #[arg(long, env = "QUIVER_BENCH_SEED", default_value_t = 42)]
    pub(crate) seed: u64,
    /// Run quiver secured: mutual TLS between the bench's clients and the nodes and
    /// between nodes, auth on with certificate identities (a throw-away CA). Measures the
    /// cost of TLS and the auth check.
    #[arg(long, env = "QUIVER_BENCH_SECURE")]
    pub(crate) secure: bool,
}

impl Common {
    /// Rejects shapes no run can have (before anything starts).
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
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

    pub(crate) fn cluster(&self) -> ClusterSpec {
        ClusterSpec {
            nodes: self.nodes,
            shards: self.shards,
            replication: self.replication,
            block_cache_mib: self.block_cache_mib,
            row_cache_mib: self.row_cache_mib,
            lookup_cache_mib: self.lookup_cache_mib,
            secure: self.secure,
            aggregations: false,
            history: false,
            version_retention_s: None,
            quiet_idle: false,
        }
    }

    pub(crate) fn dataset(&self) -> Dataset {
        Dataset {
            entities: self.entities,
            seed: self.seed,
        }
    }
}

#[derive(Args, Clone)]
pub(crate) struct LookupArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Cases, BATCHxFEATURES.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x50,10x50,100x50,500x50,1000x50,100x10,100x250,1x250"
    )]
    pub(crate) cases: Vec<Case>,
    /// Systems besides quiver: redis, feast, echo, rocksdb.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "echo,rocksdb,redis,feast"
    )]
    pub(crate) peers: Vec<String>,
    /// `uniform` or `zipf:S`.
    #[arg(long, default_value = "uniform")]
    pub(crate) keys: String,
    /// p99 SLO, ms.
    #[arg(long, default_value_t = 3.0)]
    slo_p99_ms: f64,
    /// Largest error share of a passing step.
    #[arg(long, default_value_t = 0.001)]
    pub(crate) max_error_ratio: f64,
    /// First rate of the search, requests/s.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) start_rate: f64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 200_000.0)]
    pub(crate) max_rate: f64,
    /// Seconds per search step.
    #[arg(long, default_value_t = 4.0)]
    pub(crate) step_secs: f64,
    /// Bisection steps.
    #[arg(long, default_value_t = 3)]
    pub(crate) refine: u32,
    /// Seconds of the run at half the found rate.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) measure_secs: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 512)]
    pub(crate) max_in_flight: usize,
    /// Redis client connections.
    #[arg(long, default_value_t = 16)]
    pub(crate) redis_connections: usize,
    /// Feast server worker processes (default: the machine's cores).
    #[arg(long)]
    pub(crate) feast_workers: Option<usize>,
    /// Also measure quiver through a client with a row cache of this many rows
    /// (`quiver-cached`, beside the uncached client in the same run).
    #[arg(long)]
    pub(crate) client_cache: Option<usize>,
    /// TTL of that cache, ms.
    #[arg(long, default_value_t = 1000)]
    pub(crate) client_cache_ttl_ms: u64,
    /// Also register an aggregation view of six windowed features (count and sum over
    /// 1 h, avg and max over 24 h, sum and count over 7 d) over each case's topic and
    /// measure their lookup (`quiver-aggs`) beside the plain view's: use cases with 6
    /// features (e.g. `100x6`) to compare like with like.
    #[arg(long)]
    pub(crate) aggregations: bool,
    /// Also register a copy of each case's view with `history = "7d"` (same topic, same
    /// features) and measure its latest-value lookups (`quiver-history`) beside the plain
    /// view's: the cost history adds to reads.
    #[arg(long)]
    pub(crate) history: bool,
    /// With `--aggregations` or `--history`: older records per entity loaded first (event
    /// times spread over six days), so windows count more than the newest record and
    /// histories hold more than one version.
    #[arg(long, default_value_t = 0)]
    pub(crate) history_events: u32,
    /// Restart every quiver node after the load (all stopped, then all started on their
    /// data), so the first step measures replicas that just opened: what a node restart
    /// or a rolling upgrade leaves.
    #[arg(long)]
    pub(crate) restart_after_load: bool,
    /// Write each step's request latencies to `DIR/<case>-<system>-<rate>-<first
    /// request>.csv` (`request,due_ms,latency_us`): when in the step the slow ones were.
    #[arg(long, value_name = "DIR")]
    pub(crate) latency_log: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Features per record.
    #[arg(long, default_value_t = 10)]
    pub(crate) features: u32,
    /// Records produced while measuring.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) records: u64,
    /// Records/s (default: full speed).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Lookups/s meanwhile.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) lookup_rate: f64,
    /// Keys per lookup meanwhile.
    #[arg(long, default_value_t = 10)]
    pub(crate) lookup_batch: u32,
    /// Records probed for freshness.
    #[arg(long, default_value_t = 2000)]
    pub(crate) freshness_samples: u64,
    /// Also count every record in an aggregation view of six windowed features over the
    /// same topic; freshness probes then wait for the record to be counted there.
    #[arg(long)]
    pub(crate) aggregations: bool,
}

#[derive(Args, Clone)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Features of the exported view.
    #[arg(long, default_value_t = 10)]
    pub(crate) features: u32,
    /// Older versions per entity loaded before the newest (over six days).
    #[arg(long, default_value_t = 8)]
    pub(crate) history_events: u32,
    /// Label rows exported.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) label_rows: u64,
    /// Rows per lookup.
    #[arg(long, default_value_t = 1000)]
    pub(crate) chunk_rows: usize,
    /// Lookups in flight.
    #[arg(long, default_value_t = 4)]
    pub(crate) parallel: usize,
    /// Export through the first node's ExportFeatures stream (`quiverctl export
    /// --through-node`) instead of the smart client's routing.
    #[arg(long)]
    pub(crate) through_node: bool,
    /// The `quiverctl` binary (default: beside this one).
    #[arg(long, env = "QUIVERCTL_BIN")]
    pub(crate) quiverctl: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub(crate) struct ReplicasArgs {
    /// Output directory (JSON, Markdown).
    #[arg(long, env = "QUIVER_BENCH_OUT", default_value = "bench-results")]
    pub(crate) out: PathBuf,
    /// Working directory (default: a fresh temporary one, removed afterwards).
    #[arg(long, env = "QUIVER_BENCH_WORK")]
    pub(crate) work: Option<PathBuf>,
    /// Entities: rows of the one shard (3.5 M × 50 features ≈ 1 GB on disk).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) entities: u32,
    /// float64 features per row.
    #[arg(long, default_value_t = 50)]
    pub(crate) features: u32,
    /// Seed of the data.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// `registry.version_retention` of the nodes, seconds: how long version 1 is kept
    /// after version 2 replaces it.
    #[arg(long, default_value_t = 5)]
    pub(crate) retention_s: u64,
    /// RocksDB block cache per node, MiB.
    #[arg(long, default_value_t = 256)]
    pub(crate) block_cache_mib: u32,
    /// RocksDB row cache per node, MiB (0: none; the node's default is 128).
    #[arg(long, default_value_t = 128)]
    pub(crate) row_cache_mib: u32,
    /// quiver's lookup cache per node, MiB (0: none; the node's default is 256).
    #[arg(long, default_value_t = 256)]
    pub(crate) lookup_cache_mib: u32,
}

#[derive(Args, Clone)]
pub(crate) struct QuestionArgs {
    /// Lookups/s to serve.
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) qps: f64,
    /// Keys per lookup.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) batch: f64,
    /// Features per key.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) features: f64,
    /// Entities.
    #[arg(long = "plan-entities", default_value_t = 10_000_000.0)]
    pub(crate) plan_entities: f64,
    /// Replicas.
    #[arg(long = "plan-replicas", default_value_t = 3)]
    pub(crate) plan_replicas: u32,
    /// Ingest records/s.
    #[arg(long, default_value_t = 5_000.0)]
    pub(crate) ingest_rate: f64,
    /// Cores per node.
    #[arg(long, default_value_t = 16.0)]
    pub(crate) cores: f64,
    /// Memory per node, GiB.
    #[arg(long, default_value_t = 64.0)]
    pub(crate) memory_gib: f64,
    /// Share of cores planned for use.
    #[arg(long, default_value_t = 0.6)]
    pub(crate) utilisation: f64,
    /// Share of the data kept in memory.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) hot_fraction: f64,
}

impl QuestionArgs {
    pub(crate) fn question(&self) -> anyhow::Result<Question> {
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
pub(crate) struct CapacityArgs {
    /// Directory holding lookup.json and ingest.json.
    #[arg(long, default_value = "bench-results")]
    pub(crate) from: PathBuf,
    /// Output directory (default: --from).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) question: QuestionArgs,
}

#[derive(Args, Clone)]
pub(crate) struct AllArgs {
    #[command(flatten)]
    pub(crate) lookup: LookupArgs,
    /// Records produced by the ingest part.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) ingest_records: u64,
    /// Records/s of the ingest part (default: full speed).
    #[arg(long)]
    pub(crate) ingest_rate_limit: Option<f64>,
    #[command(flatten)]
    pub(crate) question: QuestionArgs,
}

pub(crate) fn lookup_params(a: &LookupArgs) -> anyhow::Result<LookupParams> {
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
            quiet_idle: true,
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
        restart_after_load: a.restart_after_load,
        latency_log: a.latency_log.clone(),
    })
}

pub(crate) fn ingest_params(c: &Common, a: &IngestArgs) -> anyhow::Result<IngestParams> {
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
