//! Smoke runs of every `quiver-bench` subcommand against real processes (a 3-node cluster
//! and Tansu; Redis, Feast and the echo floor as peers), with seconds of load and small
//! data. They check that each run completes and its outputs are produced and well formed
//! — never speed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-bench"))
        .args(args)
        .output()
        .expect("run quiver-bench");
    assert!(
        out.status.success(),
        "quiver-bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
        "{}",
        path.display()
    );
    assert!(!text.contains("NaN"), "{}", path.display());
}

fn check_run_info(v: &Value) {
    let run = &v["run"];
    assert!(run["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(run["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(
        run["machine"]["memory_gib"]
            .as_f64()
            .is_some_and(|m| m > 0.0)
    );
    assert!(run["command"].as_array().is_some_and(|c| c.len() > 1));
    assert_eq!(run["client_shares_machine"], true);
}

const SMALL: &[&str] = &[
    "--entities",
    "500",
    "--nodes",
    "3",
    "--shards",
    "4",
    "--replication",
    "2",
];
const QUICK: &[&str] = &[
    "--start-rate",
    "50",
    "--max-rate",
    "200",
    "--step-secs",
    "0.3",
    "--refine",
    "1",
    "--measure-secs",
    "0.5",
    // A loose SLO: the capacity model needs cases that passed, and speed is not checked.
    "--slo-p99-ms",
    "50",
];

/// Every step of every system (the search's and the one at quiver's load) left one
/// latency log with a line per request it issued, in request order.
fn check_latency_logs(lookup: &Value, dir: &Path) {
    let mut expected = 0;
    for c in lookup["cases"].as_array().expect("cases") {
        for s in c["systems"].as_array().expect("systems") {
            let steps = s["search"]["steps"].as_array().expect("steps").iter();
            for st in steps.chain(
                s["at_quiver_load"]
                    .as_object()
                    .map(|_| &s["at_quiver_load"]),
            ) {
                let name = format!(
                    "{}x{}-{}-{}-",
                    c["case"]["batch"],
                    c["case"]["features"],
                    s["system"].as_str().expect("system"),
                    st["offered_rate"].as_f64().expect("offered_rate").round()
                );
                let logs: Vec<_> = std::fs::read_dir(dir)
                    .expect("latency log directory")
                    .map(|e| e.expect("directory entry").path())
                    .filter(|p| {
                        let f = p.file_name().and_then(|f| f.to_str()).expect("file name");
                        f.starts_with(&name)
                    })
                    .collect();
                assert!(!logs.is_empty(), "no latency log {name}*");
                let requests = st["requests"].as_u64().expect("requests") as usize;
                let matching = logs.iter().any(|p| {
                    let text = std::fs::read_to_string(p).expect("latency log");
                    let lines: Vec<&str> = text.lines().collect();
                    lines[0] == "request,due_ms,latency_us"
                        && lines.len() == requests + 1
                        && lines[1..].iter().enumerate().all(|(n, l)| {
                            let f: Vec<&str> = l.split(',').collect();
                            f.len() == 3
                                && f[0] == n.to_string()
                                && f[2].parse::<u64>().is_ok_and(|us| us > 0)
                        })
                });
                assert!(matching, "no log of {name}* has {requests} requests");
                expected += 1;
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(dir)
            .expect("latency log directory")
            .count(),
        expected
    );
}

#[test]
fn lookup_ingest_and_capacity_produce_well_formed_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();

    let lat = dir.path().join("latencies");
    let mut args = vec!["lookup", "--out", out_s, "--cases", "10x10,1x20"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(QUICK);
    args.extend_from_slice(&["--peers", "echo,rocksdb,redis,feast"]);
    args.extend_from_slice(&["--latency-log", lat.to_str().unwrap()]);
    bench(&args);
    let lookup = json(&out.join("lookup.json"));
    assert_eq!(lookup["schema"], "quiver-bench.lookup.v1");
    check_run_info(&lookup);
    // Lookup runs start their nodes idling as deployed ones do, and say so.
    assert_eq!(lookup["params"]["cluster"]["quiet_idle"], true);
    check_latency_logs(&lookup, &lat);
    let cases = lookup["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let names: Vec<&str> = c["systems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["system"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["quiver", "echo", "rocksdb", "redis", "feast"]);
        assert!(c["response_bytes"].as_u64().unwrap() > c["request_bytes"].as_u64().unwrap() / 10);
        for s in c["systems"].as_array().unwrap() {
            let steps = s["search"]["steps"].as_array().unwrap();
            assert!(!steps.is_empty(), "{}: no steps", s["system"]);
            for st in steps {
                if st["requests"].as_u64().unwrap() > st["errors"].as_u64().unwrap() {
                    assert!(st["p50_ms"].as_f64().unwrap() > 0.0);
                    assert!(st["p99_ms"].as_f64().unwrap() >= st["p50_ms"].as_f64().unwrap());
                }
            }
            // Every system was checked against the dataset before the load; a server
            // that answers at all answers without errors at these rates.
            assert_eq!(
                steps[0]["errors"], 0,
                "{}: {:?}",
                s["system"], steps[0]["first_error"]
            );
            if ["quiver", "redis", "feast", "echo"].contains(&s["system"].as_str().unwrap()) {
                assert!(
                    steps[0]["server_cores"].as_f64().is_some(),
                    "{}: no CPU accounting",
                    s["system"]
                );
            }
        }
    }
    assert!(lookup["storage"]["bytes_per_feature"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("lookup.md")).unwrap();
    for h in [
        "## quiver",
        "## Against peers and the floor",
        "## quiver as a share of the floor",
        "| 10 × 10 |",
    ] {
        assert!(md.contains(h), "lookup.md lacks {h}");
    }
    for f in [
        "latency-vs-load-10x10.svg",
        "latency-vs-load-1x20.svg",
        "throughput-vs-batch.svg",
    ] {
        svg(&out.join(f));
    }

    let mut args = vec![
        "ingest",
        "--out",
        out_s,
        "--records",
        "3000",
        "--lookup-rate",
        "50",
        "--freshness-samples",
        "100",
    ];
    args.extend_from_slice(SMALL);
    bench(&args);
    let ingest = json(&out.join("ingest.json"));
    assert_eq!(ingest["schema"], "quiver-bench.ingest.v1");
    check_run_info(&ingest);
    assert_eq!(ingest["produced"], 3000);
    let nodes = ingest["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    // Every record reaches R = 2 replicas.
    let applied: u64 = nodes.iter().map(|n| n["records"].as_u64().unwrap()).sum();
    assert!(
        applied >= 6000,
        "replicas applied {applied} of 2 × 3000 records"
    );
    let f = &ingest["freshness"];
    assert!(f["samples"].as_u64().unwrap() > 0);
    assert!(f["p99_ms"].as_f64().unwrap() >= f["p50_ms"].as_f64().unwrap());
    let cdf = f["cdf"].as_array().unwrap();
    assert_eq!(cdf.len(), 101);
    assert!(cdf.windows(2).all(|w| w[0][0].as_f64() <= w[1][0].as_f64()));
    assert!(ingest["lookups"]["requests"].as_u64().unwrap() > 0);
    svg(&out.join("freshness-cdf.svg"));
    assert!(
        std::fs::read_to_string(out.join("ingest.md"))
            .unwrap()
            .contains("## Freshness")
    );

    bench(&[
        "capacity",
        "--from",
        out_s,
        "--qps",
        "5000",
        "--plan-replicas",
        "3",
    ]);
    let cap = json(&out.join("capacity.json"));
    assert_eq!(cap["schema"], "quiver-bench.capacity.v1");
    assert!(cap["answer"]["nodes"].as_u64().unwrap() >= 3);
    assert!(["replicas", "cpu", "memory"].contains(&cap["answer"]["bound_by"].as_str().unwrap()));
    assert_eq!(
        cap["checks"].as_array().unwrap().len(),
        cap["points"].as_array().unwrap().len()
    );
    assert!(
        std::fs::read_to_string(out.join("capacity.md"))
            .unwrap()
            .contains("## Answer")
    );
}

/// Also the secured path: `--secure` runs the nodes on mutual TLS with auth by certificate,
/// and every client of the bench (admin, load, ingest probes) presents its certificate.
#[test]
fn all_runs_the_three_into_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec![
        "all",
        "--out",
        out.to_str().unwrap(),
        "--cases",
        "10x10",
        "--peers",
        "echo",
        "--ingest-records",
        "1000",
        "--secure",
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(QUICK);
    bench(&args);
    for f in ["lookup.json", "ingest.json", "capacity.json"] {
        assert!(
            json(&out.join(f))["schema"]
                .as_str()
                .unwrap()
                .starts_with("quiver-bench.")
        );
    }
    for f in ["lookup.md", "ingest.md", "capacity.md"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let lookup = json(&out.join("lookup.json"));
    assert_eq!(
        lookup["params"]["cluster"]["secure"], true,
        "{}",
        lookup["params"]
    );
}

/// A new replica of a shard copies its peer's checkpoint (the report has the copy's
/// bytes and rate); version 2 is replayed from the log and promoted; version 1 is then
/// dropped on both replicas and their shard directories shrink.
#[test]
fn replicas_copies_a_checkpoint_replays_a_version_and_reclaims_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    bench(&[
        "replicas",
        "--out",
        out.to_str().unwrap(),
        "--entities",
        "30000",
        "--features",
        "20",
        "--retention-s",
        "2",
    ]);
    let r = json(&out.join("replicas.json"));
    check_run_info(&r);
    assert_eq!(r["schema"], "quiver-bench.replicas.v1");
    let shard = r["shard_bytes"].as_u64().unwrap();
    let copied = r["checkpoint"]["bytes"].as_u64().unwrap();
    assert!(shard > 1_000_000 && copied > 1_000_000, "{r}");
    assert!(r["checkpoint"]["to_serving_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(r["replay"]["records"], 30_000);
    let space = r["space"].as_array().unwrap();
    assert_eq!(space.len(), 2);
    for s in space {
        let (before, after) = (
            s["before_bytes"].as_u64().unwrap(),
            s["after_bytes"].as_u64().unwrap(),
        );
        // Two versions of the same rows before, one after (and RocksDB's own files).
        assert!(after * 10 < before * 8, "{s}");
    }
    assert!(out.join("replicas.md").exists());
}

/// Runs `quiver-bench args` expecting a refusal whose message names `what`.
fn refused(args: &[&str], what: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-bench"))
        .args(args)
        .output()
        .expect("run quiver-bench");
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(what), "{args:?}: {err}");
}

#[test]
fn impossible_shapes_are_refused_before_anything_starts() {
    refused(&["lookup", "--entities", "0"], "--entities");
    refused(
        &["lookup", "--nodes", "2", "--replication", "3"],
        "--replication 3 exceeds --nodes 2",
    );
    refused(&["lookup", "--max-in-flight", "0"], "--max-in-flight");
    refused(&["ingest", "--lookup-batch", "0"], "--lookup-batch");
    refused(&["ingest", "--features", "0"], "--features");
}

#[test]
fn bad_arguments_are_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-bench"))
        .args(["lookup", "--cases", "10by10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10by10"));
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-bench"))
        .args(["lookup", "--peers", "cassandra"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cassandra"));
}

/// Child process ids of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn sigterm_stops_every_process_the_run_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver-bench"))
        .args([
            "lookup",
            "--out",
            dir.path().to_str().unwrap(),
            "--cases",
            "10x10",
            "--peers",
            "redis",
        ])
        .args(SMALL)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the broker and the three nodes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let started = loop {
        let c = children(child.id());
        if c.len() >= 4 {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start its processes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        !exit.success(),
        "an interrupted run must not report success"
    );
    for pid in started {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "process {pid} outlived the interrupted run");
    }
}
