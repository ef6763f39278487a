//! Hedging: with one node freezing for 40 ms of every 100 ms, fewer of a lookup loop's
//! lookups wait on a freeze with hedging than without, and the extra requests stay within
//! the retry budget. With the node frozen outright, a sub-request sent to it waits out its
//! attempt timeout and is retried elsewhere, or, hedged, is answered by the hedge.
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
    // Lookups caught by a freeze wait up to 40 ms without hedging, and about the 5 ms
    // hedge delay with it. Counted rather than compared at p99: about one lookup per
    // freeze is caught (power-of-two choices steers the next ones away), 1–2 % of the
    // loop, so a lucky run without hedging can have a p99 below the hedge delay.
    let slow = |l: &[Duration]| {
        l.iter().filter(|d| **d > Duration::from_millis(20)).count() as f64 / l.len() as f64
    };
    let (slow_off, slow_on) = (slow(&without), slow(&with));
    println!(
        "over 20 ms: {:.2} % without hedging, {:.2} % with",
        slow_off * 100.0,
        slow_on * 100.0
    );
    assert!(slow_off > 0.0, "the freezes caught no lookup");
    assert!(
        slow_on < slow_off,
        "hedging did not cut the tail: {:.2} % of lookups over 20 ms with, {:.2} % without",
        slow_on * 100.0,
        slow_off * 100.0
    );
    assert!(after.hedges > before.hedges, "no hedge was sent");
    // Budget: 10 % of requests plus 1 per second, plus the initial balance.
    let allowed = requests as f64 * 0.1 + PHASE.as_secs_f64() * 2.0 + 10.0;
    assert!(
        (extra as f64) <= allowed,
        "{extra} extra requests for {requests} lookups exceed the budget ({allowed})"
    );

    frozen_node(&cluster).await;
}

/// Node 3 frozen outright (SIGSTOP) while two clients look up: one without hedging, whose
/// sub-requests to it wait out their attempt timeout and are retried on another replica;
/// one hedging after 20 ms, whose hedges answer while the frozen calls are dropped. Every
/// lookup answers with the right values.
async fn frozen_node(cluster: &ProcCluster) {
    const ATTEMPT: Duration = Duration::from_millis(800);
    let generous = RetryBudget {
        ratio: 1.0,
        min_per_second: 100.0,
    };
    let plain = cluster
        .client(|b| {
            b.hedging(Hedging::Off)
                .attempt_timeout(ATTEMPT)
                .deadline(Duration::from_secs(10))
                .retry_budget(generous.clone())
        })
        .await;
    let hedged = cluster
        .client(|b| {
            b.hedging(Hedging::Fixed(Duration::from_millis(20)))
                .attempt_timeout(ATTEMPT)
                .deadline(Duration::from_secs(10))
                .retry_budget(generous.clone())
        })
        .await;
    // Connected to every node before the freeze.
    wait_ingested(&plain, KEYS, 1).await;
    wait_ingested(&hedged, KEYS, 1).await;
    let slowest = |client: &Client| {
        let client = client.clone();
        async move {
            let mut slowest = Duration::ZERO;
            for i in 0..20 {
                let keys: Vec<usize> = (0..100).map(|k| (i * 37 + k * 7) % KEYS).collect();
                let t = Instant::now();
                let r = client.get_online_features(&lookup(&keys)).await;
                slowest = slowest.max(t.elapsed());
                check(&r.expect("a lookup with node 3 frozen"), &keys, 1).unwrap();
            }
            slowest
        }
    };
    let pid = cluster.procs[&3].pid();
    quiver_testkit::signal(pid, "STOP");
    let (plain_before, hedged_before) = (plain.stats(), hedged.stats());
    let slowest_plain = slowest(&plain).await;
    let slowest_hedged = slowest(&hedged).await;
    quiver_testkit::signal(pid, "CONT");
    let (p, h) = (plain.stats(), hedged.stats());
    println!(
        "frozen node: slowest lookup {slowest_plain:?} without hedging, {slowest_hedged:?} with; {p:?}; {h:?}"
    );
    assert!(
        slowest_plain >= ATTEMPT && p.retries > plain_before.retries,
        "no sub-request waited out its attempt timeout on the frozen node: {slowest_plain:?}, {p:?}"
    );
    assert_eq!(p.hedges, 0);
    assert!(
        slowest_hedged < ATTEMPT && h.hedge_wins > hedged_before.hedge_wins,
        "hedges did not answer for the frozen node: {slowest_hedged:?}, {h:?}"
    );
}
