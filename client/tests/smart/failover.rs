//! Failover under load: open-loop readers look up 100 keys × 10 features (one lookup due
//! every 10 ms) while one `quiver-node` process (the Raft leader) is killed with SIGKILL;
//! not one lookup fails and every value is correct.

use std::time::{Duration, Instant};

use crate::procs::{ProcCluster, Readers, assert_none_failed, percentile, wait_ingested};

const KEYS: usize = 2000;
const BATCH: usize = 100;
/// One lookup due every this often (open loop).
const PERIOD: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_fails_no_lookup() {
    let mut cluster = ProcCluster::start(|_| {}).await;
    cluster.produce(KEYS, 1).await;
    let client = cluster.client(|b| b.deadline(Duration::from_secs(2))).await;
    wait_ingested(&client, KEYS, 1).await;

    let readers = Readers::start(client.clone(), PERIOD, KEYS, BATCH, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = cluster.map(1).await.leader_id;
    let killed_at = Instant::now();
    cluster.procs.remove(&leader).unwrap().kill_9();
    // Past the failure detector (3 s) and re-replication.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let samples = readers.finish().await;
    assert_none_failed(&samples);
    let phase = |before: bool| {
        let mut v: Vec<Duration> = samples
            .iter()
            .filter(|s| (s.0 < killed_at) == before)
            .map(|s| s.1)
            .collect();
        v.sort();
        v
    };
    let (before, after) = (phase(true), phase(false));
    assert!(!before.is_empty() && !after.is_empty());
    let stats = client.stats();
    println!(
        "failover: {} lookups of {BATCH} keys x 10 features, 0 failed; before kill p50 {:?} p99 {:?}; \
         after kill of node {leader} p50 {:?} p99 {:?} max {:?}; sub-requests {}, retries {}, hedges {} \
         ({} won), map refreshes {}",
        samples.len(),
        percentile(&before, 50.0),
        percentile(&before, 99.0),
        percentile(&after, 50.0),
        percentile(&after, 99.0),
        after.last().unwrap(),
        stats.sub_requests,
        stats.retries,
        stats.hedges,
        stats.hedge_wins,
        stats.map_refreshes,
    );
    // The map moved on: the dead node's replicas were replaced.
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
    cluster.wait_serving(&survivors).await;
}
