//! `quiver-chaos`: run a chaos scenario against a real quiver cluster and report.
//!
//! ```text
//! quiver-chaos list
//! quiver-chaos run --scenario kill-random --duration 5m --nodes 3 [--seed N] [--out DIR]
//! ```
//!
//! Exit code 0 when every check passed, 1 on any violation, 2 when the harness itself
//! failed (or was interrupted).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quiver_chaos::nemesis::{catalogue, parse_scenario};
use quiver_chaos::run::{RunSpec, run};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "quiver-chaos",
    about = "Faults under load against a real quiver cluster, with invariant checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the scenarios.
    List,
    /// Run a scenario.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Scenario: a name from `list`, several joined by commas, or `mixed`.
    #[arg(long, env = "QUIVER_CHAOS_SCENARIO")]
    scenario: String,
    /// Length of the fault phase, e.g. 5m.
    #[arg(long, env = "QUIVER_CHAOS_DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Initial nodes.
    #[arg(long, env = "QUIVER_CHAOS_NODES", default_value_t = 3)]
    nodes: u32,
    /// Shards (partitions of the source topic).
    #[arg(long, env = "QUIVER_CHAOS_SHARDS", default_value_t = 8)]
    shards: u32,
    /// Replication factor.
    #[arg(long, env = "QUIVER_CHAOS_REPLICATION", default_value_t = 2)]
    replication: u32,
    /// Lookups per second (all readers).
    #[arg(long, env = "QUIVER_CHAOS_RATE", default_value_t = 200.0)]
    rate: f64,
    /// Reader sessions.
    #[arg(long, env = "QUIVER_CHAOS_READERS", default_value_t = 4)]
    readers: u32,
    /// Keys per lookup.
    #[arg(long, env = "QUIVER_CHAOS_BATCH", default_value_t = 20)]
    batch: usize,
    /// Writes per second (half to Kafka, half through Push).
    #[arg(long, env = "QUIVER_CHAOS_WRITE_RATE", default_value_t = 100.0)]
    write_rate: f64,
    /// Distinct keys.
    #[arg(long, env = "QUIVER_CHAOS_KEYS", default_value_t = 2000)]
    keys: u32,
    /// Seed (default: from the clock; printed so the run can be repeated).
    #[arg(long, env = "QUIVER_CHAOS_SEED")]
    seed: Option<u64>,
    /// How long each fault is held.
    #[arg(long, env = "QUIVER_CHAOS_HOLD", default_value = "8s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Quiet time before each fault.
    #[arg(long, env = "QUIVER_CHAOS_QUIET", default_value = "12s", value_parser = humantime::parse_duration)]
    quiet: Duration,
    /// Longest wait for the cluster to recover after a fault.
    #[arg(long, env = "QUIVER_CHAOS_RECOVERY_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    recovery_timeout: Duration,
    /// The nodes' failure detector: a node silent this long is declared dead.
    #[arg(long, env = "QUIVER_CHAOS_DEAD_AFTER", default_value = "3s", value_parser = humantime::parse_duration)]
    dead_after: Duration,
    /// Required share of successful lookups.
    #[arg(long, env = "QUIVER_CHAOS_MIN_SUCCESS", default_value_t = 0.999)]
    min_success: f64,
    /// Run directory (default: /var/tmp/quiver-chaos/runs/<scenario>-<seed>).
    #[arg(long, env = "QUIVER_CHAOS_OUT")]
    out: Option<PathBuf>,
    /// Also write every write and read to history.json in the run directory.
    #[arg(long, env = "QUIVER_CHAOS_SAVE_HISTORY")]
    save_history: bool,
    /// Run the cluster secured: mutual TLS between every client and node and between
    /// nodes, auth on with certificate identities (a throw-away CA in the run directory).
    #[arg(long, env = "QUIVER_CHAOS_SECURE")]
    secure: bool,
    /// Give the workload's clients a row cache of this many rows.
    #[arg(long, env = "QUIVER_CHAOS_CLIENT_CACHE")]
    client_cache: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quiver_client=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for (name, what) in catalogue() {
                println!("{name:16} {what}");
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => match run_cmd(*args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("quiver-chaos: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run_cmd(a: RunArgs) -> anyhow::Result<bool> {
    let faults = parse_scenario(&a.scenario).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        a.nodes >= a.replication,
        "--nodes {} is below --replication {}",
        a.nodes,
        a.replication
    );
    anyhow::ensure!(
        a.rate > 0.0 && a.write_rate > 0.0,
        "--rate and --write-rate must be positive"
    );
    anyhow::ensure!(
        a.readers > 0 && a.batch > 0 && a.keys > 0,
        "--readers, --batch and --keys must be positive"
    );
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
    });
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "/var/tmp/quiver-chaos/runs/{}-{seed}",
            a.scenario.replace(',', "+")
        ))
    });
    let command = format!(
        "quiver-chaos run --scenario {} --duration {} --nodes {} --shards {} --replication {} --rate {} --readers {} --batch {} --write-rate {} --keys {} --hold {} --quiet {} --seed {seed}",
        a.scenario,
        humantime::format_duration(a.duration),
        a.nodes,
        a.shards,
        a.replication,
        a.rate,
        a.readers,
        a.batch,
        a.write_rate,
        a.keys,
        humantime::format_duration(a.hold),
        humantime::format_duration(a.quiet),
    );
    println!("seed {seed}; repeat with: {command}");
    let command = if a.secure {
        format!("{command} --secure")
    } else {
        command
    };
    anyhow::ensure!(a.client_cache != Some(0), "--client-cache must be positive");
    let command = match a.client_cache {
        Some(rows) => format!("{command} --client-cache {rows}"),
        None => command,
    };
    let spec = RunSpec {
        secure: a.secure,
        scenario: a.scenario,
        faults,
        duration: a.duration,
        nodes: a.nodes,
        shards: a.shards,
        replication_factor: a.replication,
        read_rate: a.rate,
        readers: a.readers,
        batch: a.batch,
        write_rate: a.write_rate,
        keys: a.keys,
        seed,
        hold: a.hold,
        quiet: a.quiet,
        recovery_timeout: a.recovery_timeout,
        dead_after: a.dead_after,
        min_success: a.min_success,
        out,
        command,
        save_history: a.save_history,
        client_cache: a.client_cache,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(on_signal(cancel.clone()));
        run(&spec, cancel).await
    })?;
    println!("{}", quiver_chaos::report::markdown(&report));
    println!("report: {}", report.files.markdown.display());
    println!(
        "seed {seed}: {}",
        if report.passed { "PASSED" } else { "FAILED" }
    );
    Ok(report.passed)
}

/// Ctrl-C or SIGTERM: cancel the run, which tears the cluster down.
async fn on_signal(cancel: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    eprintln!("quiver-chaos: interrupted, tearing the cluster down");
    cancel.cancel();
}
