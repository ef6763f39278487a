//! `quiverctl` end to end: the real binary against an in-process node and mock Kafka.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use quiver_node::config::NodeConfig;
use quiver_node::{Listeners, Node};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "profile"
entity = "user"
owner = "ml@example.com"
[view.source]
topic = "profile"
[[view.feature]]
name = "score"
type = "float64"
"#;

fn quiverctl(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiverctl"))
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .unwrap()
}

fn ok_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "quiverctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiverctl_applies_lists_gets_and_reports_status() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("profile", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let config = NodeConfig::for_test(dir.path().join("data"), &mock.bootstrap_servers(), 2);
    let node = Node::start(config, Listeners { grpc: listener }, cancel.clone())
        .await
        .unwrap();

    let defs = dir.path().join("views.toml");
    std::fs::write(&defs, DEFS).unwrap();
    let defs = defs.to_str().unwrap();
    let out = ok_stdout(quiverctl(&addr, &["view", "apply", defs, "--dry-run"]));
    assert!(out.contains("(dry run) view profile v1: created"), "{out}");
    let out = ok_stdout(quiverctl(&addr, &["view", "apply", defs]));
    assert!(out.contains("view profile v1: created"), "{out}");
    assert!(ok_stdout(quiverctl(&addr, &["view", "apply", defs])).contains("no changes"));
    let list = ok_stdout(quiverctl(&addr, &["view", "list"]));
    assert!(
        list.contains("profile") && list.contains("ml@example.com"),
        "{list}"
    );
    let described = ok_stdout(quiverctl(&addr, &["view", "describe", "profile"]));
    assert!(described.contains("\"topic\": \"profile\""), "{described}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("profile")
                .key("alice")
                .payload(r#"{"score": 0.75}"#),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = serde_json::from_str(&ok_stdout(quiverctl(
            &addr,
            &["status", "--output", "json"],
        )))
        .unwrap();
        let consumed: u64 = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["partitions"].as_array().unwrap().iter())
            .map(|p| p["consumed"].as_u64().unwrap())
            .sum();
        if consumed == 1 {
            assert_eq!(status["shard_count"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "record not ingested: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let got: Value = serde_json::from_str(&ok_stdout(quiverctl(
        &addr,
        &[
            "get",
            "--features",
            "profile:score",
            "--keys",
            "alice,bob",
            "--output",
            "json",
        ],
    )))
    .unwrap();
    assert_eq!(got["rows"][0]["key"], "alice");
    assert_eq!(got["rows"][0]["features"]["profile:score"]["value"], 0.75);
    assert_eq!(
        got["rows"][0]["features"]["profile:score"]["status"],
        "PRESENT"
    );
    assert_eq!(
        got["rows"][1]["features"]["profile:score"]["status"],
        "NOT_FOUND"
    );
    let table = ok_stdout(quiverctl(
        &addr,
        &["get", "--features", "profile:score", "--keys", "alice"],
    ));
    assert!(table.contains("0.75"), "{table}");

    let bad = quiverctl(&addr, &["get", "--features", "nope:x", "--keys", "alice"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("view \"nope\" is not registered"),
        "{stderr}"
    );

    // Push, then read it back with the returned read-your-writes token.
    let pushed: Value = serde_json::from_str(&ok_stdout(quiverctl(
        &addr,
        &[
            "push",
            "profile",
            "--row",
            r#"{"key": "carol", "features": {"score": 0.5}}"#,
            "--output",
            "json",
        ],
    )))
    .unwrap();
    assert_eq!(pushed["rows"], 1);
    let token = pushed["watermark"].as_str().unwrap();
    assert!(token.contains(":profile="), "{token}");
    let got: Value = serde_json::from_str(&ok_stdout(quiverctl(
        &addr,
        &[
            "get",
            "--features",
            "profile:score",
            "--keys",
            "carol",
            "--min-watermark",
            token,
            "--output",
            "json",
        ],
    )))
    .unwrap();
    assert_eq!(got["rows"][0]["features"]["profile:score"]["value"], 0.5);
    let bad = quiverctl(
        &addr,
        &[
            "push",
            "profile",
            "--row",
            r#"{"key": "carol", "features": {"score": "high"}}"#,
        ],
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("feature \"score\" is float64"), "{stderr}");

    cancel.cancel();
    node.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiverctl_status_shows_members_and_shard_map_in_cluster_mode() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("profile", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().to_string();
    let addr = format!("http://{local}");
    let mut file = quiver_node::config::NodeConfigFile {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    file.server.grpc_addr = local.clone();
    file.server.metrics_addr = String::new();
    file.cluster.shard_count = 2;
    file.kafka.bootstrap_servers = mock.bootstrap_servers();
    file.control.enabled = true;
    file.auth.enabled = false;
    file.control.voters = 1;
    file.control.initial_voters = vec![format!("1@{local}")];
    file.control.heartbeat_interval = Duration::from_millis(100);
    let cancel = CancellationToken::new();
    let node = Node::start(
        file.validate().unwrap(),
        Listeners { grpc: listener },
        cancel.clone(),
    )
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status: Value = serde_json::from_str(
            ok_stdout(quiverctl(&addr, &["status", "--output", "json"]))
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let serving = status["cluster"]["shards"].as_array().is_some_and(|s| {
            s.len() == 2 && s.iter().all(|sh| sh["replicas"][0]["state"] == "serving")
        });
        if serving {
            break status;
        }
        assert!(Instant::now() < deadline, "cluster did not form: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let member = &status["cluster"]["members"][0];
    assert_eq!(member["node_id"], 1);
    assert_eq!(member["raft_role"], "voter");
    assert_eq!(member["leader"], true);
    assert_eq!(status["cluster"]["leader_id"], 1);
    let table = ok_stdout(quiverctl(&addr, &["status"]));
    assert!(
        table.contains("shard    0: 1:serving") && table.contains("voter"),
        "{table}"
    );

    cancel.cancel();
    node.wait().await.unwrap();
}
