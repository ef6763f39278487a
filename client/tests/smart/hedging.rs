//! Hedging: with one node freezing for 40 ms of every 100 ms, a lookup loop's p99 is lower
//! with hedging than without, and the extra requests stay within the retry budget.
//!
//! The loop is sequential, so power-of-two-choices already steers away from the frozen
//! node once one request is stuck on it: about one lookup per freeze waits, ~2 % of all,
//! which is what hedging is for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quiver_client::{Client, Hedging, RetryBudget};

use crate::procs::{ProcCluster, check, lookup, percentile, wait_ingested};

const KEYS: usize = 1000;
const PHASE: Duration = Duration::from_secs(8);

/// Runs a sequential lookup loop for `PHASE`; returns sorted latencies.
async fn lookup_loop(client: &Client) -> Vec<Duration> {
    let mut lat = Vec::new();
    let started = Instant::now();
    let mut seed = 11u64;
    while started.elapsed() < PHASE {
        let keys: Vec<usize> = (0..100)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as usize % KEYS
            })
            .collect();
        let t = Instant::now();
        let r = client.get_online_features(&lookup(&keys)).await.unwrap();
        lat.push(t.elapsed());
        check(&r, &keys, 1).unwrap();
    }
    lat.sort();
    lat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_the_tail_within_budget() {
    let cluster = ProcCluster::start(|s| s.dead_after = Duration::from_secs(120)).await;
    cluster.produce(KEYS, 1).await;
    let budget = RetryBudget {
        ratio: 0.1,
        min_per_second: 1.0,
    };
    let plain = cluster
        .client(|b| b.hedging(Hedging::Off).retry_budget(budget.clone()))
        .await;
    let hedged = cluster
        .client(|b| {
            b.hedging(Hedging::Fixed(Duration::from_millis(5)))
                .retry_budget(budget.clone())
        })
        .await;
    wait_ingested(&plain, KEYS, 1).await;

    // Gray failure: node 3 freezes 40 ms of every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let pid = cluster.procs[&3].pid();
    let pauser = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                quiver_testkit::signal(pid, "STOP");
                tokio::time::sleep(Duration::from_millis(40)).await;
                quiver_testkit::signal(pid, "CONT");
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let without = lookup_loop(&plain).await;
    let before = hedged.stats();
    let with = lookup_loop(&hedged).await;
    let after = hedged.stats();
    stop.store(true, Ordering::Relaxed);
    pauser.await.unwrap();

    let (p99_off, p99_on) = (percentile(&without, 99.0), percentile(&with, 99.0));
    let requests = after.requests - before.requests;
    let extra = (after.hedges - before.hedges) + (after.retries - before.retries);
    println!(
        "hedging: without p50 {:?} p99 {p99_off:?} ({} lookups); with p50 {:?} p99 {p99_on:?} \
         ({requests} lookups, {} hedges, {} won, {} retries, {} denied by budget)",
        percentile(&without, 50.0),
        without.len(),
        percentile(&with, 50.0),
        after.hedges - before.hedges,
        after.hedge_wins - before.hedge_wins,
        after.retries - before.retries,
        after.budget_denied - before.budget_denied,
    );
    assert!(
        p99_on < p99_off,
        "hedging did not lower p99: {p99_on:?} vs {p99_off:?}"
    );
    assert!(after.hedges > before.hedges, "no hedge was sent");
    // Budget: 10 % of requests plus 1 per second, plus the initial balance.
    let allowed = requests as f64 * 0.1 + PHASE.as_secs_f64() * 2.0 + 10.0;
    assert!(
        (extra as f64) <= allowed,
        "{extra} extra requests for {requests} lookups exceed the budget ({allowed})"
    );
}
