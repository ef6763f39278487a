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

mod args;

/// mimalloc, as in `quiver-node`. This one process is the load generator, every system's
/// client (the smart client, Redis's, Feast's) and, as `serve-echo`, the gRPC floor. On
/// this 2-core box its CPU is taken from the servers under test: with glibc's malloc
/// its allocator alone cost ~50 µs per 1 × 50 quiver lookup (a quarter of the process,
/// `malloc_consolidate` and `unlink_chunk` included), and the echo floor allocated
/// with another allocator than the node it is the floor of.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Context;
use args::{
    Cli, Command, Common, ExportArgs, IngestArgs, LookupArgs, QuestionArgs, ReplicasArgs,
    ingest_params, lookup_params,
};
use clap::Parser;
use quiver_bench::capacity::{self, CapacityReport};
use quiver_bench::env::{ClusterSpec, Dataset};
use quiver_bench::ingest;
use quiver_bench::lookup;
use quiver_bench::report::{self, RunInfo};

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
    if let Some(dir) = &p.latency_log {
        std::fs::create_dir_all(dir).with_context(|| format!("--latency-log {}", dir.display()))?;
    }
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
        !(a.through_node && a.common.secure),
        "--through-node with --secure: the bench's clients are known by their certificates, which a node cannot vouch for to its peers (use a token, or the smart client)"
    );
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
        through_node: a.through_node,
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
            row_cache_mib: a.row_cache_mib,
            lookup_cache_mib: a.lookup_cache_mib,
            secure: false,
            aggregations: false,
            history: false,
            version_retention_s: Some(a.retention_s),
            quiet_idle: false,
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
