//! Failover under load: readers look up 100 keys × 10 features continuously while one
//! `quiver-node` process (the Raft leader) is killed with SIGKILL; not one lookup fails
//! and every value is correct.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::procs::{ProcCluster, check, lookup, percentile, wait_ingested};

const KEYS: usize = 2000;
const BATCH: usize = 100;
const READERS: usize = 2;

/// One reader's record: when the lookup started, how long it took, what went wrong.
type Sample = (Instant, Duration, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_fails_no_lookup() {
    let mut cluster = ProcCluster::start(|_| {}).await;
    cluster.produce(KEYS, 1).await;
    let client = cluster.client(|b| b.deadline(Duration::from_secs(2))).await;
    wait_ingested(&client, KEYS, 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut samples: Vec<Sample> = Vec::new();
                let mut seed = 0x5EED_u64 + r as u64;
                while !stop.load(Ordering::Relaxed) {
                    let keys: Vec<usize> = (0..BATCH)
                        .map(|_| {
                            seed = seed
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            (seed >> 33) as usize % KEYS
                        })
                        .collect();
                    let started = Instant::now();
                    let outcome = match client.get_online_features(&lookup(&keys)).await {
                        Ok(res) => check(&res, &keys, 1).err(),
                        Err(e) => Some(e.to_string()),
                    };
                    samples.push((started, started.elapsed(), outcome));
                }
                samples
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = cluster.map(1).await.leader_id;
    let killed_at = Instant::now();
    cluster.procs.remove(&leader).unwrap().kill_9();
    // Past the failure detector (3 s) and re-replication.
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    for r in readers {
        samples.extend(r.await.unwrap());
    }

    let failures: Vec<&String> = samples.iter().filter_map(|s| s.2.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} lookups failed, e.g. {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(3)]
    );
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
