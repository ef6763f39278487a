//! Shutdown that drains, against a real `quiver-node` process: on SIGTERM the node turns
//! readiness NOT_SERVING, keeps answering (marking responses "draining") for
//! `server.shutdown_delay`, lets in-flight lookups finish — ingest keeps running for the
//! ones waiting on a watermark — flushes and exits 0; a second SIGTERM, or in-flight work
//! outlasting `server.shutdown_grace`, ends it promptly.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
    ResponseEncoding, ShardWatermark, TopicOffset,
};
use quiver_testkit::{Broker, NodeProcess, ServingStatus, health_status, signal};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "drain";
const KEYS: usize = 10;
/// Lookups in flight when SIGTERM arrives.
const IN_FLIGHT: usize = 8;

fn write_config(
    dir: &std::path::Path,
    bootstrap: &str,
    delay: &str,
    grace: &str,
) -> std::path::PathBuf {
    let defs = dir.join("defs.toml");
    std::fs::write(&defs, crate::DEFS.replace("TOPIC", TOPIC)).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
node_id = 1
data_dir = "{data}"
[server]
shutdown_delay = "{delay}"
shutdown_grace = "{grace}"
[cluster]
shard_count = 1
[kafka]
bootstrap_servers = "{bootstrap}"
[ingest]
poll_timeout = "20ms"
[limits]
max_watermark_wait = "30s"
[registry]
definition_files = ["{defs}"]
[auth]
enabled = false
"#,
            data = dir.join("data").display(),
            defs = defs.display(),
        ),
    )
    .unwrap();
    cfg
}

/// Produces `seq` for every key (event time now), acknowledged.
async fn produce(bootstrap: &str, seq: i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + seq;
    for k in 0..KEYS {
        let payload = format!(r#"{{"ts": {ts}, "seq": {seq}, "label": "v{seq}"}}"#);
        producer
            .send(
                FutureRecord::to(TOPIC)
                    .key(&format!("k{k}"))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

/// A lookup of every key's `seq` that waits until the shard's next offset is `min_next`.
fn lookup(min_next: i64) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: vec!["account_stats:seq".into()],
        entity_keys: (0..KEYS)
            .map(|k| EntityKey::from(format!("k{k}")))
            .collect(),
        min_watermarks: vec![ShardWatermark {
            shard: 0,
            offsets: vec![TopicOffset {
                topic: TOPIC.into(),
                next_offset: min_next,
            }],
        }],
        watermark_wait_ms: 30_000,
        encoding: ResponseEncoding::Cells as i32,
        ..Default::default()
    }
}

fn all_seq(resp: &GetOnlineFeaturesResponse, seq: i64) -> bool {
    (0..KEYS).all(|row| {
        resp.columns[0].statuses[row] == FeatureStatus::Present as i32
            && resp.columns[0].values[row].kind == Some(Kind::Int64Value(seq))
    })
}

/// The value of an unlabelled-or-labelled gauge in a Prometheus exposition.
fn gauge(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the node says NOT_SERVING on readiness (it began draining).
async fn wait_not_ready(endpoint: &str) {
    wait_until(
        "readiness NOT_SERVING after SIGTERM",
        Duration::from_secs(2),
        || async {
            health_status(endpoint, "quiver.v1.Readiness").await
                == Some(ServingStatus::NotServing as i32)
        },
    )
    .await;
}

/// Waits until the node counts at least `n` RPCs in flight.
async fn wait_in_flight(metrics_port: u16, n: usize) {
    wait_until(
        "lookups in flight on the node",
        Duration::from_secs(10),
        || async move {
            let text = crate::scrape_metrics(metrics_port);
            gauge(&text, "quiver_inflight_requests").is_some_and(|v| v >= n as f64)
        },
    )
    .await;
}

fn wait_exit(node: &mut NodeProcess, within: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = node.exited() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "quiver-node did not exit within {within:?}:\n{}",
            node.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a node and waits until it serves version 1 of every key.
async fn started(broker: &Broker, dir: &std::path::Path, delay: &str, grace: &str) -> NodeProcess {
    let cfg = write_config(dir, &broker.bootstrap(), delay, grace);
    let node = NodeProcess::start(&cfg, dir, 1);
    let endpoint = node.endpoint();
    wait_until("version 1 served", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            let Ok(mut c) = FeatureServiceClient::connect(endpoint).await else {
                return false;
            };
            c.get_online_features(lookup(KEYS as i64))
                .await
                .is_ok_and(|r| all_seq(r.get_ref(), 1))
        }
    })
    .await;
    // Ready first, so that NOT_SERVING afterwards proves a SIGTERM was taken (a node still
    // catching up is NOT_SERVING too, and two signals sent before the first is handled
    // arrive as one).
    wait_until("readiness SERVING", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            health_status(&endpoint, "quiver.v1.Readiness").await
                == Some(ServingStatus::Serving as i32)
        }
    })
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_lookups_then_exits_0() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 1);
    produce(&broker.bootstrap(), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = started(&broker, dir.path(), "3s", "20s").await;
    let endpoint = node.endpoint();
    assert_eq!(
        gauge(
            &crate::scrape_metrics(node.metrics_port),
            "quiver_node_draining"
        ),
        Some(0.0)
    );

    // Lookups that wait for records not produced yet (offsets KEYS..2 KEYS).
    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut c = FeatureServiceClient::connect(endpoint).await.unwrap();
                c.get_online_features(lookup(2 * KEYS as i64)).await
            })
        })
        .collect();
    wait_in_flight(node.metrics_port, IN_FLIGHT).await;
    assert!(in_flight.iter().all(|t| !t.is_finished()));

    signal(node.pid(), "TERM");
    let sigterm = Instant::now();
    // Readiness turns NOT_SERVING at once; the node is live and still answers, marking
    // its answers "draining".
    wait_not_ready(&endpoint).await;
    assert_eq!(
        health_status(&endpoint, "quiver.v1.FeatureService").await,
        Some(ServingStatus::Serving as i32),
        "liveness stays SERVING while draining"
    );
    assert_eq!(
        gauge(
            &crate::scrape_metrics(node.metrics_port),
            "quiver_node_draining"
        ),
        Some(1.0),
        "the drain is visible in the metrics"
    );
    let mut c = FeatureServiceClient::connect(endpoint.clone())
        .await
        .unwrap();
    let answer = c.get_online_features(lookup(KEYS as i64)).await.unwrap();
    assert!(
        answer
            .metadata()
            .contains_key(quiver_proto::error::DRAINING_METADATA_KEY),
        "a draining node marks its answers"
    );
    assert!(all_seq(answer.get_ref(), 1));
    assert!(
        sigterm.elapsed() < Duration::from_secs(3),
        "checked within the drain window"
    );

    // Ingest keeps running during the drain: the waiting lookups complete, with the new
    // values.
    produce(&broker.bootstrap(), 2).await;
    for t in in_flight {
        let resp = t
            .await
            .unwrap()
            .expect("a lookup in flight at SIGTERM completes");
        assert!(
            all_seq(resp.get_ref(), 2),
            "{:?}",
            resp.get_ref().columns[0]
        );
    }
    let (status, _) = wait_exit(&mut node, Duration::from_secs(30));
    assert!(
        status.success(),
        "exit 0 after a drain, got {status}:\n{}",
        node.log_tail()
    );
    assert!(
        sigterm.elapsed() >= Duration::from_secs(3),
        "the node kept answering for the whole drain window"
    );
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    for phase in [
        "shutdown: draining",
        "shutdown: no new connections",
        "shutting down: stopping ingest",
        "shutting down: closing shard replicas",
        "node stopped",
    ] {
        assert!(
            log.contains(phase),
            "{phase:?} missing from the log:\n{}",
            node.log_tail()
        );
    }
    drop(node);

    // Everything ingested before the stop was flushed with its offsets: a restart serves
    // version 2 at once and does not re-apply a record.
    let node = restarted_at_version(dir.path(), 2).await;
    let status = crate::status(&node.endpoint()).await.unwrap();
    let partition = &status.shards[0].partitions[0];
    assert_eq!(
        partition.next_offset,
        2 * KEYS as i64,
        "offsets were stored"
    );
    // The lifetime count is stored with the data: every record counted exactly once.
    assert_eq!(
        crate::consumed(&status),
        2 * KEYS as u64,
        "nothing lost or re-applied across the restart"
    );
}

/// Restarts the node of `dir` (its config is already written) and waits until it serves
/// version `seq`.
async fn restarted_at_version(dir: &std::path::Path, seq: i64) -> NodeProcess {
    let node = NodeProcess::start(&dir.join("node.toml"), dir, 2);
    let endpoint = node.endpoint();
    wait_until("the restarted node serves", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            let Ok(mut c) = FeatureServiceClient::connect(endpoint).await else {
                return false;
            };
            c.get_online_features(lookup(0))
                .await
                .is_ok_and(|r| all_seq(r.get_ref(), seq))
        }
    })
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_or_an_overrun_grace_ends_the_process_promptly() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 1);
    produce(&broker.bootstrap(), 1).await;

    // A long drain window, cut short by a second SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let mut node = started(&broker, dir.path(), "60s", "20s").await;
    let endpoint = node.endpoint();
    signal(node.pid(), "TERM");
    wait_not_ready(&endpoint).await;
    signal(node.pid(), "TERM");
    let (status, took) = wait_exit(&mut node, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(3),
        "second SIGTERM: exited after {took:?}"
    );
    assert!(
        !status.success(),
        "a cut-short drain is not a clean exit: {status}"
    );

    // A lookup that waits longer than the grace: the process does not wait for it.
    let dir = tempfile::tempdir().unwrap();
    let mut node = started(&broker, dir.path(), "0s", "1s").await;
    let endpoint = node.endpoint();
    let stuck = tokio::spawn(async move {
        let mut c = FeatureServiceClient::connect(endpoint).await.unwrap();
        // Never reached: nothing more is produced.
        c.get_online_features(lookup(1_000)).await
    });
    wait_in_flight(node.metrics_port, 1).await;
    signal(node.pid(), "TERM");
    let (status, took) = wait_exit(&mut node, Duration::from_secs(15));
    assert!(
        status.success(),
        "the grace ran out: still an orderly exit, got {status}"
    );
    // 1 s grace + the bounded wait for reads cut off + stopping the rest.
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM"
    );
    assert!(stuck.await.unwrap().is_err(), "the cut-off lookup fails");
}
