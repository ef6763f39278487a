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
    // One version, serving, nothing pending.
    let versions: Value = serde_json::from_str(&ok_stdout(quiverctl(
        &addr,
        &["view", "versions", "profile", "--output", "json"],
    )))
    .unwrap();
    assert_eq!(versions["view"], "profile", "{versions}");
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    assert_eq!(versions["versions"][0]["state"], "serving", "{versions}");
    assert_eq!(versions["versions"][0]["version"], 1, "{versions}");
    let table = ok_stdout(quiverctl(&addr, &["view", "versions", "profile"]));
    assert!(
        table.contains("serving") && !table.contains("pending"),
        "{table}"
    );
    let missing = quiverctl(&addr, &["view", "versions", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not registered"));

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

/// A one-member cluster (auth off) on a loopback port, over mock Kafka with topic
/// `profile` (2 partitions).
struct ClusterNode {
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    dir: tempfile::TempDir,
    local: String,
    addr: String,
    cancel: CancellationToken,
    node: Node,
}

impl ClusterNode {
    async fn start() -> Self {
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
        ClusterNode {
            _mock: mock,
            dir,
            local,
            addr,
            cancel,
            node,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiverctl_status_shows_members_and_shard_map_in_cluster_mode() {
    // Bound to the end of the test: the mock broker and the data directory must outlive
    // the node.
    let ClusterNode {
        _mock: _m,
        dir: _dir,
        local: _,
        addr,
        cancel,
        node,
    } = ClusterNode::start().await;

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

/// Tokens through `quiverctl` over TLS: create (shown once), use, the role and grant
/// limits, list, revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiverctl_manages_tokens_over_tls() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("profile", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = quiver_testkit::Ca::new("quiverctl test CA");
    let (cert, key) = ca.issue("node").write(dir.path(), "node");
    let ca_file = ca.write(dir.path(), "ca");
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(&bootstrap, "quiverctl-bootstrap-secret").unwrap();
    let cluster = dir.path().join("cluster");
    std::fs::write(&cluster, "quiverctl-cluster-secret").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().to_string();
    let mut file = quiver_node::config::NodeConfigFile {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    file.server.grpc_addr = local.clone();
    file.server.metrics_addr = String::new();
    file.cluster.shard_count = 2;
    file.kafka.bootstrap_servers = mock.bootstrap_servers();
    file.control.enabled = true;
    file.control.voters = 1;
    file.control.replication_factor = 1;
    file.control.initial_voters = vec![format!("1@{local}")];
    file.control.heartbeat_interval = Duration::from_millis(100);
    file.tls.cert_file = cert;
    file.tls.key_file = key;
    file.tls.ca_file = ca_file.clone();
    file.auth.bootstrap_token_file = bootstrap.clone();
    file.auth.cluster_token_file = cluster;
    let cancel = CancellationToken::new();
    let node = Node::start(
        file.validate().unwrap(),
        Listeners { grpc: listener },
        cancel.clone(),
    )
    .await
    .unwrap();
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    let run = |token_args: &[&str], args: &[&str]| {
        let mut all = vec!["--tls-ca", ca_arg.as_str()];
        all.extend_from_slice(token_args);
        all.extend_from_slice(args);
        quiverctl(&local, &all)
    };
    let admin = ["--token-file", bootstrap.to_str().unwrap()];

    // Plaintext against the TLS node fails with the reason.
    let out = quiverctl(
        &local,
        &["--token-file", bootstrap.to_str().unwrap(), "view", "list"],
    );
    assert!(!out.status.success());

    let defs = dir.path().join("defs.toml");
    std::fs::write(&defs, DEFS).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&admin, &["view", "apply", defs.to_str().unwrap()]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let out = run(&admin, &["status", "--output", "json"]);
        let status: Value = serde_json::from_str(ok_stdout(out).lines().next().unwrap()).unwrap();
        let serving = status["cluster"]["shards"].as_array().is_some_and(|s| {
            s.len() == 2 && s.iter().all(|sh| sh["replicas"][0]["state"] == "serving")
        });
        if serving {
            break;
        }
        assert!(Instant::now() < deadline, "cluster did not form: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = run(
        &admin,
        &[
            "token", "create", "--name", "ranker", "--role", "reader", "--view", "profile",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let token = ok_stdout(out).trim().to_owned();
    assert!(
        token.starts_with("qvr_") && stderr.contains("shown only once"),
        "{token} {stderr}"
    );
    let id = token[4..16].to_owned();

    let reader = ["--token", token.as_str()];
    let listed = ok_stdout(run(&reader, &["view", "list"]));
    assert!(listed.contains("profile"), "{listed}");
    let denied = run(
        &reader,
        &[
            "push",
            "profile",
            "--row",
            r#"{"key": "u1", "features": {"score": 1.0}}"#,
        ],
    );
    let msg = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && msg.contains("needs role writer"),
        "{msg}"
    );
    let denied = run(&reader, &["token", "list"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("needs role admin"));

    let list: Value = serde_json::from_str(&ok_stdout(run(
        &admin,
        &["token", "list", "--output", "json"],
    )))
    .unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(entry["role"], "reader");
    assert_eq!(entry["views"][0], "profile");
    assert!(
        !list.to_string().contains(&token[17..]),
        "secrets are never listed"
    );

    ok_stdout(run(&admin, &["token", "revoke", &id]));
    let out = run(&reader, &["view", "list"]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && msg.contains("revoked"), "{msg}");
    cancel.cancel();
    node.wait().await.unwrap();
}

/// Forwards every connection accepted on a fresh loopback port to `to`; counts them.
async fn forwarder(to: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (at, accepted)
}

/// `--connect-to`: the smart client dials the translation of each advertised address (as
/// from the host of the compose cluster, whose nodes advertise names only their network
/// resolves), and `quiverctl health` is the gRPC health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiverctl_dials_translated_addresses_and_checks_health() {
    let ClusterNode {
        _mock: _m,
        dir,
        local,
        addr,
        cancel,
        node,
    } = ClusterNode::start().await;
    let defs = dir.path().join("views.toml");
    std::fs::write(&defs, DEFS).unwrap();
    ok_stdout(quiverctl(&addr, &["view", "apply", defs.to_str().unwrap()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !quiverctl(&addr, &["health", "--service", "quiver.v1.Readiness"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = ["get", "--features", "profile:score", "--keys", "u1"];
    let lookup_via = |to: &str| {
        let translation = format!("{local}={to}");
        let mut args = vec!["--connect-to", translation.as_str()];
        args.extend(get);
        quiverctl(&addr, &args)
    };
    // Translated to a port nobody listens on: the lookup cannot reach the node.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    assert!(!lookup_via(&dead_addr).status.success());
    // Translated to a forwarder: served, and through it.
    let (via, accepted) = forwarder(local.clone()).await;
    let out = ok_stdout(lookup_via(&via));
    assert!(out.contains("u1") && out.contains("NOT_FOUND"), "{out}");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // The health check: SERVING exits 0; an unknown service or no node exits non-zero.
    let healthy = ok_stdout(quiverctl(&addr, &["health"]));
    assert!(
        healthy.contains("quiver.v1.FeatureService: SERVING"),
        "{healthy}"
    );
    assert!(
        !quiverctl(&addr, &["health", "--service", "no.such.Service"])
            .status
            .success()
    );
    cancel.cancel();
    node.wait().await.unwrap();
    let gone = quiverctl(&addr, &["health", "--timeout", "1s"]);
    assert!(!gone.status.success(), "a stopped node is not healthy");
}
