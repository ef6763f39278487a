//! The CI smoke set: short runs of kill -9 of a random node, kill -9 of the Raft leader
//! and a network partition of one node, each against a real cluster (Tansu + three
//! `quiver-node` processes in network namespaces, R = 2) under reads and writes, with the
//! full invariant checks. One after another (a run waits for the one before: the harness's
//! credentials are process-wide, and they share two cores).

use std::path::PathBuf;
use std::time::Duration;

use quiver_chaos::nemesis::parse_scenario;
use quiver_chaos::report::markdown;
use quiver_chaos::run::{RunSpec, run};
use tokio_util::sync::CancellationToken;

fn spec(scenario: &str, seed: u64) -> RunSpec {
    let out = PathBuf::from("/var/tmp/quiver-chaos/smoke").join(scenario);
    let _ = std::fs::remove_dir_all(&out);
    RunSpec {
        // The partition run also exercises the secured cluster: mutual TLS between the
        // harness, the nodes and each other, certificate identities for auth.
        secure: scenario == "partition",
        scenario: scenario.to_string(),
        faults: parse_scenario(scenario).expect("a catalogue scenario"),
        // One fault: 6 s quiet, 5 s held, then recovery and quiet until the end.
        duration: Duration::from_secs(22),
        nodes: 3,
        shards: 8,
        replication_factor: 2,
        read_rate: 200.0,
        readers: 4,
        batch: 20,
        write_rate: 100.0,
        keys: 2000,
        seed,
        hold: Duration::from_secs(5),
        quiet: Duration::from_secs(6),
        recovery_timeout: Duration::from_secs(60),
        dead_after: Duration::from_secs(3),
        min_success: 0.999,
        out,
        save_history: false,
        client_cache: None,
        command: format!(
            "quiver-chaos run --scenario {scenario} --duration 22s --hold 5s --quiet 6s --seed {seed}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_set_passes_every_check() {
    let mut failed = Vec::new();
    for (scenario, seed) in [
        ("kill-random", 101),
        ("kill-leader", 102),
        ("partition", 103),
    ] {
        let report = run(&spec(scenario, seed), CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{scenario}: the harness failed: {e:#}"));
        println!("{}", markdown(&report));
        // The run really exercised the cluster: a fault happened and was recovered from,
        // writes were acknowledged and checked on every replica.
        assert_eq!(report.faults.len(), 1, "{scenario}: one fault expected");
        assert!(
            report.faults[0].recovery_ms.is_some(),
            "{scenario}: no recovery"
        );
        assert!(report.counts.kafka_acked > 500 && report.counts.push_acked > 500);
        assert!(report.verdict.keys_checked > 500);
        assert!(report.verdict.final_reads_checked >= 2 * 2000);
        // The broker's log was read back and held every acknowledged write.
        let audit = report.broker_audit.as_ref().expect("broker audit ran");
        assert_eq!(
            audit.checked as usize,
            report.counts.kafka_acked + report.counts.push_acked,
            "{scenario}: every acknowledged write looked up in the broker's log"
        );
        assert!(audit.records >= audit.checked, "{scenario}: {audit:?}");
        // Every replica's lifetime count and sum per key (the aggregation view computed by
        // the replicas) was compared with the log.
        let aggs = report.aggregates.as_ref().expect("aggregation check ran");
        assert!(
            aggs.answers_checked >= 2 * 2000 && aggs.keys_with_events > 500,
            "{scenario}: {aggs:?}"
        );
        // The readers' routing counters were collected.
        assert!(report.counts.readers.sub_requests > 0);

        // The report files are well-formed: the JSON parses with its sections, the
        // Markdown names the verdict, the SVG is one closed document.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report.files.json).unwrap()).unwrap();
        for section in ["parameters", "verdict", "availability", "latency", "faults"] {
            assert!(json.get(section).is_some(), "report.json lacks {section}");
        }
        assert_eq!(json["parameters"]["seed"], seed);
        let md = std::fs::read_to_string(&report.files.markdown).unwrap();
        assert!(md.contains("## Invariants") && md.contains(&format!("seed {seed}")));
        let svg = std::fs::read_to_string(&report.files.timeline).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline") && svg.contains(scenario));
        if !report.passed {
            failed.push(format!("{scenario}: {}", report.failures.join("; ")));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A new version of the workload view is built and promoted, then rolled back and forward
/// again, under reads and writes: no lookup fails, every answer reports one version that
/// served while it ran, and both versions answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_swaps_fail_no_lookup_and_mix_no_versions() {
    let report = run(&spec("version-swap", 104), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("version-swap: the harness failed: {e:#}"));
    println!("{}", markdown(&report));
    // A cycle holds nothing, so the run fits more than one.
    assert!(!report.faults.is_empty(), "a swap cycle expected");
    for fault in &report.faults {
        assert!(
            fault.error.is_none() && fault.recovery_ms.is_some(),
            "{fault:?}"
        );
    }
    assert_eq!(
        report.counts.lookups_failed, 0,
        "{:?}",
        report.counts.top_errors
    );
    let by = &report.verdict.reads_by_version;
    assert!(
        by.get(&1).is_some_and(|n| *n > 0) && by.get(&2).is_some_and(|n| *n > 0),
        "reads of both versions: {by:?}"
    );
    assert!(report.passed, "{:?}", report.failures);
}

/// Readers with a row cache through a node kill: the checker holds the cache to monotonic
/// reads (per key and per shard watermark) like any read. Few keys and few writes, so the
/// readers revisit keys faster than their shards' watermarks move and the cache serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_readers_pass_every_check_through_a_kill() {
    let mut s = spec("kill-random", 104);
    s.out = PathBuf::from("/var/tmp/quiver-chaos/smoke/kill-random-cached");
    let _ = std::fs::remove_dir_all(&s.out);
    s.client_cache = Some(10_000);
    s.keys = 100;
    s.write_rate = 20.0;
    s.read_rate = 400.0;
    s.command = format!(
        "{} --keys 100 --write-rate 20 --rate 400 --client-cache 10000",
        s.command
    );
    let report = run(&s, CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("the harness failed: {e:#}"));
    println!("{}", markdown(&report));
    assert_eq!(report.faults.len(), 1);
    assert!(report.faults[0].recovery_ms.is_some(), "no recovery");
    let r = report.counts.readers;
    assert!(
        r.cache_hits > r.cache_misses,
        "the readers' cache served too little to test it: {r:?}"
    );
    assert!(report.verdict.keys_checked > 50);
    assert!(report.passed, "{:#?}", report.failures);
}
