//! A rolling restart done with SIGTERM, as an orchestrator does it: one node at a time is
//! stopped (it drains: readiness NOT_SERVING, answers marked "draining" so the smart
//! client moves to the other replicas, in-flight lookups finish), restarted, and waited
//! for until it reports ready. Open-loop readers see not one failed lookup, and every
//! value is correct.

use std::time::{Duration, Instant};

use quiver_testkit::{NodeProcess, ServingStatus, health_status};

use crate::procs::{ProcCluster, Readers, assert_none_failed, percentile, wait_ingested};

const KEYS: usize = 2000;
const BATCH: usize = 100;
const PERIOD: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_sigterm_restart_fails_no_lookup() {
    let mut cluster = ProcCluster::start(|s| {
        s.shutdown_delay = Duration::from_secs(1);
        // A restart is not a death: replicas stay where they are (production default).
        s.dead_after = Duration::from_secs(10);
    })
    .await;
    cluster.produce(KEYS, 1).await;
    let client = cluster.client(|b| b.deadline(Duration::from_secs(2))).await;
    wait_ingested(&client, KEYS, 1).await;
    let readers = Readers::start(client.clone(), PERIOD, KEYS, BATCH, 1);

    let started = Instant::now();
    // The leader last, as orchestrators that know it do; every node is restarted once.
    let leader = cluster.map(1).await.leader_id;
    let mut order: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    order.push(leader);
    for id in order {
        let stopping = Instant::now();
        cluster.procs.remove(&id).unwrap().terminate();
        let stopped = stopping.elapsed();
        let m = cluster.member(id).clone();
        let node = NodeProcess::start_on(&m.config, &m.dir, 2, m.grpc, m.metrics);
        let deadline = Instant::now() + Duration::from_secs(60);
        while health_status(&m.endpoint(), "quiver.v1.Readiness").await
            != Some(ServingStatus::Serving as i32)
        {
            assert!(
                Instant::now() < deadline,
                "node {id} not ready after its restart:\n{}",
                node.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "node {id}: drained and stopped in {stopped:?}, ready again {:?} after SIGTERM",
            stopping.elapsed()
        );
        cluster.procs.insert(id, node);
    }
    let samples = readers.finish().await;
    assert_none_failed(&samples);
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    latencies.sort();
    // Open loop: a lookup was due every 10 ms throughout.
    let expected = (started.elapsed().as_millis() / PERIOD.as_millis()) as usize;
    assert!(
        samples.len() >= expected,
        "{} lookups issued, {expected} due",
        samples.len()
    );
    let stats = client.stats();
    println!(
        "rolling restart of 3 nodes by SIGTERM in {:?}: {} lookups of {BATCH} keys, 0 failed; \
         p50 {:?} p99 {:?} max {:?}; retries {}, wrong shard {}, map refreshes {}",
        started.elapsed(),
        samples.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().unwrap(),
        stats.retries,
        stats.wrong_shard,
        stats.map_refreshes,
    );
    // The placement never changed: a restarted node whose replicas are still opening
    // says so (another replica answers), not "wrong shard" (which sends the client to
    // refresh a map that was right).
    assert_eq!(stats.wrong_shard, 0, "wrong-shard answers during a restart");
    cluster.wait_serving(&[1, 2, 3]).await;
}
