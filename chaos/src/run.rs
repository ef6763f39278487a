//! One chaos run from start to report: cluster up, workload on, faults on a schedule,
//! heal, catch up, final reads, check, report, tear down.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quiver_client::{Client, NodeClient};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::aggregates;
use crate::audit;
use crate::checker;
use crate::cluster::{ChaosCluster, ClusterSpec};
use crate::nemesis::{Fault, Nemesis, NemesisSpec};
use crate::probe;
use crate::report::{self, Parameters, Report};
use crate::workload::{self, Recorder, WorkloadSpec, lock};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Run the cluster on mutual TLS with certificate authentication.
    pub secure: bool,
    /// Scenario name (for the report).
    pub scenario: String,
    /// Faults it cycles through.
    pub faults: Vec<Fault>,
    /// Length of the fault phase.
    pub duration: Duration,
    /// Initial nodes.
    pub nodes: u32,
    /// Shards.
    pub shards: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Lookups per second.
    pub read_rate: f64,
    /// Reader sessions.
    pub readers: u32,
    /// Keys per lookup.
    pub batch: usize,
    /// Writes per second.
    pub write_rate: f64,
    /// Distinct keys.
    pub keys: u32,
    /// Seed.
    pub seed: u64,
    /// How long each fault is held.
    pub hold: Duration,
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// Longest wait for recovery.
    pub recovery_timeout: Duration,
    /// The nodes' failure-detector grace.
    pub dead_after: Duration,
    /// Required lookup success share.
    pub min_success: f64,
    /// Run directory (reports and node logs).
    pub out: PathBuf,
    /// The command that repeats the run.
    pub command: String,
    /// Also write every write and read to `history.json` (large: for debugging a
    /// violation).
    pub save_history: bool,
    /// The workload's clients keep a row cache of this many rows (the checker then also
    /// checks the cache: no read below a session's floor, read-your-writes).
    pub client_cache: Option<usize>,
}

async fn interruptible<T>(
    cancel: &CancellationToken,
    f: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::select! {
        () = cancel.cancelled() => bail!("interrupted"),
        v = f => Ok(v),
    }
}

/// One run at a time per process: the harness's client credentials (plaintext, or the
/// mutual-TLS rig of a secure run) are process-wide, so a secure run starting beside a
/// plaintext one would switch the other's probes to TLS and every one of its checks
/// would find "no node answers". Runs wait for each other instead (they share the
/// machine's cores anyway).
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `spec`; the cluster is torn down before this returns (also on error or
/// cancellation). A run started while another runs in this process waits for it.
///
/// # Errors
/// The harness's own failures (processes that cannot start, interruption); invariant
/// violations are in the report, not errors.
pub async fn run(spec: &RunSpec, cancel: CancellationToken) -> anyhow::Result<Report> {
    let _alone = interruptible(&cancel, ONE_RUN_AT_A_TIME.lock()).await?;
    std::fs::create_dir_all(&spec.out).context("create the run directory")?;
    let cluster_spec = ClusterSpec {
        nodes: spec.nodes,
        shard_count: spec.shards,
        replication_factor: spec.replication_factor,
        dead_after: spec.dead_after,
        security_toml: if spec.secure {
            Some(quiver_testkit::security::secure_rig(&spec.out.join("pki"))?)
        } else {
            quiver_testkit::security::install(quiver_proto::transport::Credentials::none());
            None
        },
    };
    let out = spec.out.clone();
    let cluster = tokio::task::spawn_blocking(move || ChaosCluster::start(&cluster_spec, &out))
        .await
        .context("cluster start panicked")??;
    let cluster = Arc::new(Mutex::new(cluster));
    let result = run_on(spec, &cluster, &cancel).await;
    // Teardown off the runtime: SIGKILL every process, delete the namespaces.
    tokio::task::spawn_blocking(move || {
        let c = lock(&cluster);
        c.remove_data();
        drop(c);
        drop(cluster);
    })
    .await
    .ok();
    result
}

async fn run_on(
    spec: &RunSpec,
    cluster: &Arc<Mutex<ChaosCluster>>,
    cancel: &CancellationToken,
) -> anyhow::Result<Report> {
    let (endpoints, up, bootstrap) = {
        let c = lock(cluster);
        (c.endpoints(), c.up(), c.bootstrap())
    };
    let empty = Default::default();
    interruptible(
        cancel,
        probe::wait_healthy(&endpoints, &up, &empty, 0, Duration::from_secs(90)),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("the cluster did not start: {e}"))?;
    let mut admin = NodeClient::connect_with(
        endpoints[0].clone(),
        &quiver_testkit::security::credentials(),
    )
    .await?;
    admin
        .apply_definitions(workload::definitions(), false)
        .await
        .context("register the workload's view")?;
    interruptible(
        cancel,
        probe::wait_view(&endpoints, workload::VIEW, Duration::from_secs(30)),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("the view did not reach every node: {e}"))?;
    info!(nodes = ?up, "cluster is Serving; starting the workload");

    let rec = Arc::new(Recorder::new());
    let wl = WorkloadSpec {
        keys: spec.keys,
        read_rate: spec.read_rate,
        readers: spec.readers,
        batch: spec.batch,
        write_rate: spec.write_rate,
        seed: spec.seed,
    };
    let client = |n: u64| {
        let b = Client::builder()
            .seeds(endpoints.clone())
            .credentials(quiver_testkit::security::credentials())
            .rng_seed(spec.seed.wrapping_add(n));
        match spec.client_cache {
            Some(rows) => b.cache(quiver_client::CacheConfig {
                max_entries: rows,
                ..Default::default()
            }),
            None => b,
        }
        .build()
    };
    let writers_stop = cancel.child_token();
    let readers_stop = cancel.child_token();
    let mut writers = JoinSet::new();
    writers.spawn(workload::kafka_writer(
        rec.clone(),
        bootstrap,
        wl.clone(),
        spec.write_rate / 2.0,
        writers_stop.clone(),
    ));
    let pusher = client(1000).await.context("build the push client")?;
    writers.spawn({
        let (rec, wl, stop) = (rec.clone(), wl.clone(), writers_stop.clone());
        let rate = spec.write_rate / 2.0;
        async move {
            workload::push_writer(rec, pusher, wl, rate, stop).await;
            Ok(())
        }
    });
    let mut readers = JoinSet::new();
    let interval = Duration::from_secs_f64(f64::from(spec.readers) / spec.read_rate);
    let first = Instant::now();
    for id in 0..spec.readers {
        let c = client(u64::from(id))
            .await
            .context("build a reader client")?;
        readers.spawn(workload::reader(
            id,
            c,
            rec.clone(),
            wl.clone(),
            interval,
            first + interval * id / spec.readers,
            readers_stop.clone(),
        ));
    }

    let nemesis = Nemesis::new(
        cluster.clone(),
        rec.clone(),
        NemesisSpec {
            faults: spec.faults.clone(),
            hold: spec.hold,
            quiet: spec.quiet,
            recovery_timeout: spec.recovery_timeout,
            keys: spec.keys,
            seed: spec.seed,
        },
    );
    let until = Instant::now() + spec.duration;
    let faults = nemesis.run(until, cancel.clone()).await?;
    // Let the last quiet stretch run to the end of the fault phase.
    interruptible(cancel, tokio::time::sleep_until(until.into())).await?;
    info!(
        faults = faults.len(),
        "fault phase over; stopping the writers"
    );
    writers_stop.cancel();
    while let Some(w) = writers.join_next().await {
        w.context("writer panicked")??;
    }

    let (endpoints, up) = {
        let c = lock(cluster);
        (c.endpoints(), c.up())
    };
    let acked = rec.acked_offsets();
    let catch_up = interruptible(
        cancel,
        probe::wait_healthy(&endpoints, &up, &acked, spec.keys, spec.recovery_timeout),
    )
    .await?;
    readers_stop.cancel();
    while readers.join_next().await.is_some() {}
    let final_catch_up_ms = match &catch_up {
        Ok(d) => Some(d.as_secs_f64() * 1000.0),
        Err(e) => {
            tracing::error!(reason = %e, "the cluster did not catch up");
            None
        }
    };
    let mut history = rec.history();
    let bootstrap = lock(cluster).bootstrap();
    history.final_reads = interruptible(
        cancel,
        probe::final_reads(&endpoints, spec.keys, &acked, spec.recovery_timeout),
    )
    .await?
    .context("final reads")?;
    let verdict = checker::check(&history);

    let crashes = {
        let mut c = lock(cluster);
        let mut found: Vec<String> = c
            .crashed()
            .into_iter()
            .map(|(id, status)| format!("node {id} exited on its own ({status})"))
            .collect();
        for (id, log) in c.logs() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            found.extend(
                text.lines()
                    .filter(|l| l.contains("panicked"))
                    .take(3)
                    .map(|l| format!("node {id} ({}): {l}", log.display())),
            );
        }
        found
    };
    let parameters = Parameters {
        scenario: spec.scenario.clone(),
        seed: spec.seed,
        duration_s: spec.duration.as_secs_f64(),
        nodes: spec.nodes,
        shards: spec.shards,
        replication_factor: spec.replication_factor,
        read_rate: spec.read_rate,
        batch: spec.batch,
        write_rate: spec.write_rate,
        keys: spec.keys,
        hold_s: spec.hold.as_secs_f64(),
        quiet_s: spec.quiet.as_secs_f64(),
        min_success: spec.min_success,
        client_cache: spec.client_cache,
        command: spec.command.clone(),
    };
    let audit = {
        let (writes, shards) = (history.writes.clone(), spec.shards);
        let timeout = spec.recovery_timeout;
        tokio::task::spawn_blocking(move || audit::audit(&bootstrap, shards, &writes, timeout))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("{e:#}")))
    };
    let aggregates = match &audit {
        Ok(a) => interruptible(
            cancel,
            aggregates::check(
                &endpoints,
                spec.keys,
                &a.log_end,
                &a.per_key,
                spec.recovery_timeout,
            ),
        )
        .await?
        .map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("no broker audit to compare with: {e}")),
    };
    let mut report = report::build(
        parameters,
        &history,
        verdict,
        faults,
        final_catch_up_ms,
        crashes,
        &spec.out,
    );
    report.attach_audit(audit);
    report.attach_aggregates(aggregates);
    report::write(&report, &history.reads)?;
    if spec.save_history {
        std::fs::write(
            spec.out.join("history.json"),
            serde_json::to_string(&history)?,
        )
        .context("write history.json")?;
    }
    Ok(report)
}
