//! `quiver-bench replicas`: a new replica from a peer's checkpoint against log replay of
//! the same data, and the disk space a retired view version gives back.
//!
//! Three nodes, one shard (P = 1) with two replicas, loaded through Kafka with
//! `--entities` rows of F float64 features. Then, one after the other:
//!
//! 1. **Checkpoint bootstrap.** One holder of the shard stops; the third node gets a new
//!    replica, which copies the other holder's checkpoint over gRPC and then catches up
//!    from the checkpoint's offsets. Measured: the bytes copied over time (the new node's
//!    status, polled every 20 ms) and the time from the new replica's appearance in the
//!    map to Serving.
//! 2. **Log replay.** Version 2 of the view (the same features) is applied: both
//!    replicas re-read the whole partition into it. Measured: apply → promoted.
//! 3. **Space.** With a short `registry.version_retention`, version 1 (retained at the
//!    promotion) is dropped on both replicas. Measured: each replica's shard directory
//!    (allocated blocks) at the promotion and after the drop.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quiver_client::NodeClient;
use serde::Serialize;

use crate::env::dataset::view;
use crate::env::machine::cpu_seconds;
use crate::env::{BenchCluster, ClusterSpec, Dataset};

/// Parameters of a run (recorded in the report).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasParams {
    /// The cluster: three nodes, P = 1, R = 2.
    pub cluster: ClusterSpec,
    /// The data.
    pub dataset: Dataset,
    /// Features of the view.
    pub features: u32,
}

/// A new replica from a peer's checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointFigures {
    /// Bytes of the checkpoint.
    pub bytes: u64,
    /// Seconds between the first and the last progress seen while bytes were copied
    /// (when the copy fell between two polls: from the assignment to serving, a bound,
    /// and `bytes` is the shard's size on the peer).
    pub transfer_seconds: f64,
    /// Transfer rate over those seconds, MB/s (10⁶ bytes).
    pub transfer_mb_per_s: f64,
    /// The new replica in the map: Bootstrapping → Serving, s (checkpoint made by the
    /// peer, copied, verified, opened, caught up).
    pub to_serving_seconds: f64,
    /// CPU of the peer and the new node meanwhile, s.
    pub node_cpu_seconds: f64,
}

/// The same data rebuilt from the log.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigures {
    /// Records replayed per replica.
    pub records: u64,
    /// Apply of version 2 → promoted, s (both replicas replaying at once).
    pub seconds: f64,
    /// Shard bytes rebuilt per second per replica, MB/s.
    pub mb_per_s: f64,
    /// CPU of the two replicas' nodes meanwhile, s.
    pub node_cpu_seconds: f64,
}

/// One replica's shard directory around the drop of version 1.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceFigures {
    /// Node id.
    pub node: u64,
    /// Bytes at the promotion of version 2 (both versions held).
    pub before_bytes: u64,
    /// Bytes once version 1 was dropped.
    pub after_bytes: u64,
    /// Seconds from the promotion until the drop was counted.
    pub seconds_to_drop: f64,
}

/// The report (`replicas.json`, schema `quiver-bench.replicas.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasReport {
    /// Schema id.
    pub schema: &'static str,
    /// Run facts.
    pub run: crate::report::RunInfo,
    /// Parameters.
    pub params: ReplicasParams,
    /// The shard directory on the peer before the copy, bytes.
    pub shard_bytes: u64,
    /// Checkpoint bootstrap.
    pub checkpoint: CheckpointFigures,
    /// Log replay.
    pub replay: ReplayFigures,
    /// Space per replica.
    pub space: Vec<SpaceFigures>,
}

/// Allocated bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The shard directory of node `i` (0-based).
fn shard_dir(c: &BenchCluster, i: usize) -> std::path::PathBuf {
    c.data_dir(i).join("shards").join("00000")
}

/// "from node N: X of Y bytes" → (X, Y).
fn copy_progress(s: &str) -> Option<(u64, u64)> {
    let (_, rest) = s.split_once(": ")?;
    let (x, rest) = rest.split_once(" of ")?;
    Some((x.parse().ok()?, rest.strip_suffix(" bytes")?.parse().ok()?))
}

/// Runs the bench; files under `work`.
///
/// # Errors
/// When the cluster fails or a step does not finish within ten minutes.
pub async fn run(p: ReplicasParams, work: &Path) -> anyhow::Result<ReplicasReport> {
    let started = crate::report::RunInfo::start();
    let features = [p.features];
    let mut c = BenchCluster::start(&p.cluster, &work.join("cluster"), &features).await?;
    c.load(&p.dataset, &features).await?;
    let map = c.cluster_map().await?;
    let holders: Vec<u64> = map.shards[0].replicas.iter().map(|r| r.node_id).collect();
    anyhow::ensure!(holders.len() == 2, "shard 0 has replicas {holders:?}");
    let idx = |id: u64| (id - 1) as usize;
    let (stopped, peer) = (holders[0], holders[1]);
    let newcomer = (1..=3)
        .find(|n| !holders.contains(n))
        .context("a third node")?;
    let shard_bytes = dir_bytes(&shard_dir(&c, idx(peer)));
    eprintln!("shard 0: {shard_bytes} bytes on node {peer}; stopping node {stopped}");

    let checkpoint = bootstrap(&mut c, idx(stopped), peer, newcomer, shard_bytes).await?;
    eprintln!("{checkpoint:?}");
    // Every record on the new replica too.
    c.wait_applied(Duration::from_secs(600)).await?;

    let replicas = [peer, newcomer];
    let pids: Vec<u32> = c
        .node_ids()
        .into_iter()
        .filter(|(n, _)| replicas.contains(n))
        .map(|(_, pid)| pid)
        .collect();
    let mut admin = c.node(idx(peer)).await?;
    let cpu0 = cpu_seconds(&pids);
    let t0 = Instant::now();
    admin
        .apply_definitions(Dataset::versioned_definitions(p.features, 2), false)
        .await
        .context("apply version 2")?;
    wait_serving_version(&mut admin, &view(p.features), 2).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let replay = ReplayFigures {
        records: u64::from(p.dataset.entities),
        seconds,
        mb_per_s: shard_bytes as f64 / 1e6 / seconds,
        node_cpu_seconds: cpu_seconds(&pids) - cpu0,
    };
    eprintln!("{replay:?}");

    let promoted = Instant::now();
    let mut space = Vec::new();
    for n in replicas {
        space.push(SpaceFigures {
            node: n,
            before_bytes: dir_bytes(&shard_dir(&c, idx(n))),
            after_bytes: 0,
            seconds_to_drop: 0.0,
        });
    }
    for s in &mut space {
        let deadline = Instant::now() + Duration::from_secs(600);
        while c.metric_sum(idx(s.node), "quiver_view_versions_dropped_total")? < 1.0 {
            if Instant::now() > deadline {
                bail!("version 1 was not dropped on node {}", s.node);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.seconds_to_drop = promoted.elapsed().as_secs_f64();
        s.after_bytes = dir_bytes(&shard_dir(&c, idx(s.node)));
    }
    drop(c);
    Ok(ReplicasReport {
        schema: "quiver-bench.replicas.v1",
        run: started.finish(),
        params: p,
        shard_bytes,
        checkpoint,
        replay,
        space,
    })
}

/// Stops node index `stop` and follows the new replica on `newcomer` until it serves.
async fn bootstrap(
    c: &mut BenchCluster,
    stop: usize,
    peer: u64,
    newcomer: u64,
    shard_bytes: u64,
) -> anyhow::Result<CheckpointFigures> {
    let pids: Vec<u32> = c
        .node_ids()
        .into_iter()
        .filter(|(n, _)| *n == peer || *n == newcomer)
        .map(|(_, pid)| pid)
        .collect();
    let cpu0 = cpu_seconds(&pids);
    c.stop_node(stop).await?;
    let mut at_peer = c.node((peer - 1) as usize).await?;
    let mut at_new = c.node((newcomer - 1) as usize).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut assigned, mut first, mut last): (Option<Instant>, Option<(Instant, u64)>, _) =
        (None, None, None::<(Instant, u64, u64)>);
    loop {
        if Instant::now() > deadline {
            bail!("the new replica on node {newcomer} did not serve within ten minutes");
        }
        let now = Instant::now();
        if let Ok(status) = at_new.status().await
            && let Some((x, y)) = status
                .shards
                .iter()
                .find(|s| s.shard == 0)
                .and_then(|s| copy_progress(&s.checkpoint_copy))
        {
            first.get_or_insert((now, x));
            last = Some((now, x, y));
        }
        let replica = at_peer.cluster_map().await.ok().and_then(|m| {
            m.shards[0]
                .replicas
                .iter()
                .find(|r| r.node_id == newcomer)
                .map(|r| r.state)
        });
        match replica {
            Some(2 /* SERVING */) => break,
            Some(_) => {
                assigned.get_or_insert(now);
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let serving = Instant::now();
    let node_cpu_seconds = cpu_seconds(&pids) - cpu0;
    let (bytes, copied, transfer_seconds) = match first.zip(last) {
        // The last poll may not see the end; count what was seen.
        Some(((t1, x1), (t2, x2, total))) => (total, x2 - x1, (t2 - t1).as_secs_f64()),
        None => {
            // The copy began and ended between two polls (a small shard on a fast disk):
            // the new node's progress gauge for the shard says whether it copied a
            // checkpoint at all; the shard's size on the peer stands for the bytes, and
            // the time from the assignment to serving bounds the transfer.
            let progress = c.metric_sum_with(
                (newcomer - 1) as usize,
                "quiver_replica_bootstrap_progress_ratio",
                "shard=\"0\"",
            )?;
            anyhow::ensure!(
                progress >= 1.0,
                "the new replica never showed checkpoint progress and did not finish \
                 copying one (progress {progress}; did it replay the log instead?)"
            );
            let bound = (serving - assigned.unwrap_or(serving)).as_secs_f64();
            (shard_bytes, shard_bytes, bound)
        }
    };
    Ok(CheckpointFigures {
        bytes,
        transfer_seconds,
        transfer_mb_per_s: copied as f64 / 1e6 / transfer_seconds.max(1e-3),
        to_serving_seconds: (serving - assigned.unwrap_or(serving)).as_secs_f64(),
        node_cpu_seconds,
    })
}

/// Waits until `view` serves `version`.
async fn wait_serving_version(
    admin: &mut NodeClient,
    view: &str,
    version: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let json = admin.describe_view(view).await?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        if v["version"].as_u64() == Some(version) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("version {version} of {view} was not promoted within 20 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Markdown report.
pub fn markdown(r: &ReplicasReport) -> String {
    let p = &r.params;
    let (k, rp) = (&r.checkpoint, &r.replay);
    let mut s = format!(
        "# quiver-bench replicas\n\n{}- cluster: 3 nodes, P = 1, R = 2; {} entities × {} float64 features; the shard: {:.1} MB on disk\n\n\
         | new replica of the shard | bytes | time | rate | node CPU |\n|---|---|---|---|---|\n\
         | checkpoint copy (transfer only) | {:.1} MB | {:.2} s | {:.0} MB/s | |\n\
         | checkpoint bootstrap: Bootstrapping → Serving | | {:.2} s | | {:.1} s |\n\
         | log replay (version 2, both replicas at once) | {} records | {:.2} s | {:.1} MB/s | {:.1} s |\n\n\
         | node | shard directory with versions 1 and 2 | after version 1 was dropped | promotion → dropped |\n|---|---|---|---|\n",
        r.run.markdown(),
        p.dataset.entities,
        p.features,
        r.shard_bytes as f64 / 1e6,
        k.bytes as f64 / 1e6,
        k.transfer_seconds,
        k.transfer_mb_per_s,
        k.to_serving_seconds,
        k.node_cpu_seconds,
        rp.records,
        rp.seconds,
        rp.mb_per_s,
        rp.node_cpu_seconds,
    );
    for x in &r.space {
        s.push_str(&format!(
            "| {} | {:.1} MB | {:.1} MB | {:.1} s |\n",
            x.node,
            x.before_bytes as f64 / 1e6,
            x.after_bytes as f64 / 1e6,
            x.seconds_to_drop
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::copy_progress;

    #[test]
    fn copy_progress_reads_the_status_line() {
        assert_eq!(
            copy_progress("from node 2: 1048576 of 9000000 bytes"),
            Some((1_048_576, 9_000_000))
        );
        assert_eq!(copy_progress(""), None);
    }
}
