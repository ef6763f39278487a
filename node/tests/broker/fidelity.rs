//! What a new user finds first, against real `quiver-node` processes and the real broker:
//! stock gRPC tools connect (Python's grpcio with reflection v1alpha), malformed requests
//! are refused, replicas are spread evenly, the first leader stays, readiness means the
//! node can serve, a token revoked while a node was down is refused from its first
//! answer, and the metrics say what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use quiver_proto::transport::Credentials;
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    ApplyDefinitionsRequest, ClusterMap, CreateTokenRequest, EntityKey, GetClusterMapRequest,
    GetOnlineFeaturesRequest, GetStatusRequest, ReplicaStateProto, RevokeTokenRequest,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use quiver_testkit::{
    Broker, ClusterSettings, Member, NodeProcess, allocate, initial_members, write_config,
};

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "clicks"
entity = "user"
[view.source]
topic = "clicks"
event_time_field = "ts"
[[view.feature]]
name = "n"
type = "int64"
[[view.feature]]
name = "score"
type = "float64"
[[view]]
name = "secret"
entity = "user"
[view.source]
topic = "secret"
event_time_field = "ts"
[[view.feature]]
name = "s"
type = "string"
"#;

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn channel(endpoint: &str, c: &Credentials) -> Option<quiver_proto::transport::AuthChannel> {
    c.wrap(c.endpoint(endpoint).ok()?.connect().await.ok()?)
        .ok()
}

async fn map_with(endpoint: &str, c: &Credentials) -> Option<ClusterMap> {
    let mut c = ClusterServiceClient::new(channel(endpoint, c).await?);
    Some(
        c.get_cluster_map(GetClusterMapRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

async fn map_from(endpoint: &str) -> Option<ClusterMap> {
    map_with(endpoint, &Credentials::none()).await
}

/// Waits until every shard has `r` Serving replicas on `on`, as `endpoint` sees it.
async fn wait_serving(endpoint: &str, p: u32, r: usize, on: &BTreeSet<u64>) -> ClusterMap {
    wait_serving_with(endpoint, &Credentials::none(), p, r, on).await
}

async fn wait_serving_with(
    endpoint: &str,
    c: &Credentials,
    p: u32,
    r: usize,
    on: &BTreeSet<u64>,
) -> ClusterMap {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(map) = map_with(endpoint, c).await
            && map.shards.len() == p as usize
            && map.shards.iter().all(|s| {
                s.replicas.len() == r
                    && s.replicas.iter().all(|x| {
                        x.state == ReplicaStateProto::Serving as i32 && on.contains(&x.node_id)
                    })
            })
        {
            return map;
        }
        assert!(
            Instant::now() < deadline,
            "not serving on {on:?}: {:?}",
            map_with(endpoint, c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn load(map: &ClusterMap) -> BTreeMap<u64, usize> {
    let mut load = BTreeMap::new();
    for s in &map.shards {
        for r in &s.replicas {
            *load.entry(r.node_id).or_default() += 1;
        }
    }
    load
}

fn assert_within_one_of_mean(load: &BTreeMap<u64, usize>, nodes: usize, total: usize) {
    let (lo, hi) = (total / nodes, total.div_ceil(nodes));
    assert_eq!(load.len(), nodes, "every node holds replicas: {load:?}");
    for (node, l) in load {
        assert!(
            (lo..=hi).contains(l),
            "node {node} holds {l}; mean {:.2}: {load:?}",
            total as f64 / nodes as f64
        );
    }
}

/// The README's cluster (3 nodes, 8 shards, R = 2) placed {3, 8, 5}: one node held a
/// replica of every shard. Placement keeps every node within one of the mean, and a
/// fourth node takes only what it ends up holding, all of it from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_spread_evenly_and_a_new_node_takes_only_its_share() {
    let broker = Broker::start();
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 3, &settings);
    let mut procs: Vec<NodeProcess> = members
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    let three: BTreeSet<u64> = [1, 2, 3].into();
    let before = wait_serving(&ep, 8, 2, &three).await;
    let loads = load(&before);
    assert_within_one_of_mean(&loads, 3, 16);
    eprintln!("3 nodes, P = 8, R = 2: replicas per node {loads:?}");

    let fourth = allocate(root.path(), 4);
    write_config(&fourth, &settings, &[], &[members[0].addr()]);
    procs.push(NodeProcess::start_member(&fourth, 1, None));
    let four: BTreeSet<u64> = [1, 2, 3, 4].into();
    // Serving everywhere, and node 4 holding its share.
    let deadline = Instant::now() + Duration::from_secs(90);
    let after = loop {
        let map = wait_serving(&ep, 8, 2, &four).await;
        if load(&map).get(&4).is_some_and(|l| *l >= 4) {
            break map;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never got its share: {:?}",
            load(&map)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let loads = load(&after);
    assert_within_one_of_mean(&loads, 4, 16);
    let mut moved = 0;
    for s in &after.shards {
        let old = &before
            .shards
            .iter()
            .find(|b| b.shard == s.shard)
            .unwrap()
            .replicas;
        for r in &s.replicas {
            if !old.iter().any(|o| o.node_id == r.node_id) {
                assert_eq!(
                    r.node_id, 4,
                    "shard {}: a replica moved between old nodes",
                    s.shard
                );
                moved += 1;
            }
        }
    }
    assert_eq!(moved, loads[&4], "exactly the new node's share moved");
    eprintln!("4 nodes: replicas per node {loads:?}, {moved} moved");
}

/// Runs `testkit/python/reflect_call.py`: grpcio + grpcio-reflection, as a Python user
/// would call the node, knowing nothing but its address.
fn python_call(addr: &str, method: &str, request: &serde_json::Value) -> serde_json::Value {
    let script = repo_root().join("testkit/python/reflect_call.py");
    let out = Command::new("python3")
        .arg(script)
        .args([addr, method, &request.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reflect_call.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn produce(broker: &Broker, topic: &str, records: &[(String, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (key, payload) in records {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A one-node cluster with the views applied and one record per view ingested.
struct OneNode {
    broker: Broker,
    member: Member,
    proc: NodeProcess,
    _root: tempfile::TempDir,
}

async fn one_node(security_toml: Option<String>, credentials: &Credentials) -> OneNode {
    let broker = Broker::start();
    broker.create_topic("clicks", 4);
    broker.create_topic("secret", 4);
    let root = tempfile::tempdir().unwrap();
    let mut settings = ClusterSettings::new(broker.bootstrap());
    settings.shard_count = 4;
    settings.replication_factor = 1;
    if let Some(t) = security_toml {
        settings.security_toml = t;
    }
    let member = initial_members(root.path(), 1, &settings).remove(0);
    let proc = NodeProcess::start_member(&member, 1, None);
    wait_serving_with(&member.endpoint(), credentials, 4, 1, &[1].into()).await;
    AdminServiceClient::new(channel(&member.endpoint(), credentials).await.unwrap())
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let ts = now_ms();
    produce(
        &broker,
        "clicks",
        &[(
            "u1".into(),
            format!(r#"{{"ts": {ts}, "n": 7, "score": 0.9385380123269165}}"#),
        )],
    )
    .await;
    produce(
        &broker,
        "secret",
        &[("u1".into(), format!(r#"{{"ts": {ts}, "s": "hidden"}}"#))],
    )
    .await;
    OneNode {
        broker,
        member,
        proc,
        _root: root,
    }
}

async fn lookup(
    endpoint: &str,
    credentials: &Credentials,
    features: &[&str],
) -> Result<quiver_proto::v1::GetOnlineFeaturesResponse, tonic::Status> {
    let channel = channel(endpoint, credentials)
        .await
        .ok_or_else(|| tonic::Status::unavailable("cannot connect"))?;
    FeatureServiceClient::new(channel)
        .get_online_features(GetOnlineFeaturesRequest {
            features: features.iter().map(|f| (*f).to_owned()).collect(),
            entity_keys: vec![EntityKey::from("u1")],
            // The per-cell form: these checks read `columns`.
            encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until `u1`'s `clicks:n` reads 7.
async fn wait_ingested(endpoint: &str, credentials: &Credentials) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = lookup(endpoint, credentials, &["clicks:n"]).await
            && r.columns[0].values[0].kind == Some(quiver_proto::v1::value::Kind::Int64Value(7))
        {
            return;
        }
        assert!(Instant::now() < deadline, "record not ingested");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Python's stock reflection client (grpcio-reflection speaks grpc.reflection.v1alpha)
/// learns the API from the node and decodes the PACKED response with no quiver code,
/// reading a float64 bit-exact; a lookup with no keys is INVALID_ARGUMENT naming the
/// problem, like every malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_grpcio_with_reflection_reads_features_and_empty_batches_are_invalid() {
    let none = Credentials::none();
    let n = one_node(None, &none).await;
    wait_ingested(&n.member.endpoint(), &none).await;
    let addr = n.member.addr();
    let ok = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n", "clicks:score"],
            "entityKeys": [{"stringValue": "u1"}],
        }),
    );
    // The default PACKED encoding, decoded by stock protobuf from reflected descriptors:
    // typed arrays per column, as the proto comments describe.
    let packed = &ok["ok"]["packedColumns"];
    assert_eq!(packed[0]["type"], "INT64", "{ok}");
    assert_eq!(packed[0]["statuses"][0], "PRESENT", "{ok}");
    assert_eq!(packed[0]["int64s"][0], "7", "{ok}");
    assert_eq!(packed[1]["type"], "FLOAT64", "{ok}");
    let score = packed[1]["float64s"][0]
        .as_f64()
        .unwrap_or_else(|| panic!("{ok}"));
    assert_eq!(
        score.to_bits(),
        0.938_538_012_326_916_5f64.to_bits(),
        "{ok}"
    );
    // And the per-cell form, on request.
    let cells = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n"],
            "entityKeys": [{"stringValue": "u1"}],
            "encoding": "CELLS",
        }),
    );
    assert_eq!(
        cells["ok"]["columns"][0]["values"][0]["int64Value"], "7",
        "{cells}"
    );
    let empty = python_call(
        &addr,
        "quiver.v1.FeatureService/GetOnlineFeatures",
        &serde_json::json!({
            "features": ["clicks:n"],
        }),
    );
    assert_eq!(empty["code"], "INVALID_ARGUMENT", "{empty}");
    assert!(
        empty["details"]
            .as_str()
            .unwrap()
            .contains("no entity keys"),
        "{empty}"
    );
    drop(n.broker);
}

/// A fresh node joining a cluster is NOT_SERVING until it has the shard map, the leader
/// has placed its replicas and they are caught up (it used to say SERVING within
/// milliseconds of listening, holding nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_map_placement_and_catch_up() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 2, &settings);
    let _procs: Vec<NodeProcess> = members
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    wait_serving(&ep, 8, 2, &[1, 2].into()).await;
    AdminServiceClient::connect(ep.clone())
        .await
        .unwrap()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await
        .unwrap();
    let ts = now_ms();
    let records: Vec<(String, String)> = (0..5_000)
        .map(|i| {
            (
                format!("u{i}"),
                format!(r#"{{"ts": {ts}, "n": {i}, "score": 0.5}}"#),
            )
        })
        .collect();
    produce(&broker, "clicks", &records).await;

    let third = allocate(root.path(), 3);
    write_config(&third, &settings, &[], &[members[0].addr()]);
    let _p3 = NodeProcess::start_member(&third, 1, None);
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(third.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut not_serving_seen = 0;
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "quiver.v1.Readiness".into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(ServingStatus::NotServing as i32);
        if status == ServingStatus::Serving as i32 {
            break;
        }
        not_serving_seen += 1;
        assert!(Instant::now() < deadline, "node 3 never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // At the first SERVING: node 3 holds its share of the replicas, and each has read
    // every record of its partitions.
    let map = map_from(&third.endpoint()).await.unwrap();
    let mine: BTreeSet<u32> = map
        .shards
        .iter()
        .filter(|s| s.replicas.iter().any(|r| r.node_id == 3))
        .map(|s| s.shard)
        .collect();
    assert!(
        mine.len() >= 5,
        "node 3 ready holding {mine:?} of 16 replicas over 3 nodes"
    );
    let status = AdminServiceClient::connect(third.endpoint())
        .await
        .unwrap()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local: BTreeSet<u32> = status.shards.iter().map(|s| s.shard).collect();
    assert!(mine.is_subset(&local), "assigned {mine:?}, open {local:?}");
    for s in &status.shards {
        for p in &s.partitions {
            assert!(
                p.reached_end,
                "ready while shard {} {} has not caught up: {p:?}",
                s.shard, p.topic
            );
        }
        assert!(
            s.partitions
                .iter()
                .any(|p| p.topic == "clicks" && p.records_applied > 0),
            "shard {}: {s:?}",
            s.shard
        );
    }
    assert!(not_serving_seen > 0, "readiness said SERVING at once");
}

fn raft_term(metrics_port: u16) -> Option<f64> {
    metric(metrics_port, "quiver_control_raft_term", &[])
}

/// The value of the first sample of `name` with every label pair of `labels` in a
/// node's exposition.
fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = scrape(port)?;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// Forming a cluster, the first elected leader stays (no second election a second
/// later), even with a voter that starts late; a view applied the moment a leader is
/// known goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_leader_stays_and_an_early_apply_succeeds() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let settings = ClusterSettings::new(broker.bootstrap());
    let members = initial_members(root.path(), 3, &settings);
    // Two voters now, the third 1.5 s later: its election timer would have run while the
    // leader's first appends could not reach it.
    let mut procs: Vec<NodeProcess> = members[..2]
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let ep = members[0].endpoint();
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(map) = map_from(&ep).await
            && let Some(l) = map.members.iter().find(|m| m.is_leader)
        {
            break l.node_id;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let applied = AdminServiceClient::connect(ep.clone())
        .await
        .unwrap()
        .apply_definitions(ApplyDefinitionsRequest {
            toml: VIEWS.into(),
            dry_run: false,
        })
        .await;
    assert!(applied.is_ok(), "apply right after formation: {applied:?}");
    let term = raft_term(members[0].metrics).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    procs.push(NodeProcess::start_member(&members[2], 1, None));
    wait_serving(&ep, 8, 2, &[1, 2, 3].into()).await;
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for m in &members {
            if let Some(t) = raft_term(m.metrics) {
                assert!(
                    t <= term,
                    "node {}: term moved from {term} to {t}: leadership changed",
                    m.id
                );
            }
        }
        let map = map_from(&ep).await.unwrap();
        let now = map.members.iter().find(|m| m.is_leader).map(|m| m.node_id);
        assert_eq!(now, Some(leader), "leader changed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_secret(dir: &Path, name: &str, secret: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, secret).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn auth_toml(dir: &Path) -> (String, String) {
    let admin = "bootstrap-admin-secret-0123456789";
    let boot = write_secret(dir, "bootstrap.token", admin);
    let cluster = write_secret(dir, "cluster.token", "cluster-member-secret-0123456789");
    (
        format!(
            "[auth]\nenabled = true\nbootstrap_token_file = \"{}\"\ncluster_token_file = \"{}\"\n",
            boot.display(),
            cluster.display()
        ),
        admin.to_owned(),
    )
}

/// An RPC that needs an authenticated reader and nothing else (no shard, no view).
async fn list_views(endpoint: &str, c: &Credentials) -> Result<(), tonic::Status> {
    let channel = channel(endpoint, c)
        .await
        .ok_or_else(|| tonic::Status::unavailable("cannot connect"))?;
    AdminServiceClient::new(channel)
        .list_views(quiver_proto::v1::ListViewsRequest {})
        .await
        .map(|_| ())
}

fn bearer(token: &str) -> Credentials {
    Credentials {
        tls: None,
        token: Some(token.to_owned()),
    }
}

/// A node restarted after a token was revoked while it was down never accepts it: until
/// its control-plane state has caught up with the leader it answers UNAVAILABLE (the
/// client goes elsewhere), then UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_a_node_was_down_is_refused_from_its_first_answer() {
    let broker = Broker::start();
    broker.create_topic("clicks", 8);
    broker.create_topic("secret", 8);
    let root = tempfile::tempdir().unwrap();
    let mut settings = ClusterSettings::new(broker.bootstrap());
    let (security, admin) = auth_toml(root.path());
    settings.security_toml = security;
    let members = initial_members(root.path(), 3, &settings);
    let mut procs: BTreeMap<u64, NodeProcess> = members
        .iter()
        .map(|m| (m.id, NodeProcess::start_member(m, 1, None)))
        .collect();
    let admin_creds = bearer(&admin);
    let connect = |ep: String, c: Credentials| async move { channel(&ep, &c).await.unwrap() };
    let ep1 = members[0].endpoint();
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let mut admin_client =
            AdminServiceClient::new(connect(ep1.clone(), admin_creds.clone()).await);
        if admin_client
            .apply_definitions(ApplyDefinitionsRequest {
                toml: VIEWS.into(),
                dry_run: false,
            })
            .await
            .is_ok()
            && let Ok(t) = admin_client
                .create_token(CreateTokenRequest {
                    name: "ranker".into(),
                    role: "reader".into(),
                    views: vec![],
                })
                .await
        {
            break t.into_inner();
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not accept admin calls"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reader = bearer(&token.token);
    let ep3 = members[2].endpoint();
    // Node 3 knows the token.
    let deadline = Instant::now() + Duration::from_secs(30);
    while list_views(&ep3, &reader).await.is_err() {
        assert!(Instant::now() < deadline, "node 3 never accepted the token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    procs.remove(&3).unwrap().terminate();
    AdminServiceClient::new(connect(ep1.clone(), admin_creds.clone()).await)
        .revoke_token(RevokeTokenRequest {
            id: token.id.clone(),
        })
        .await
        .unwrap();
    procs.insert(3, NodeProcess::start_member(&members[2], 2, None));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut unavailable = 0;
    loop {
        match list_views(&ep3, &reader).await {
            Ok(_) => panic!("node 3 answered a revoked token after its restart"),
            Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
            Err(s) if s.code() == tonic::Code::Unauthenticated => {
                assert!(s.message().contains("revoked"), "{s:?}");
                break;
            }
            Err(s) => panic!("unexpected answer {s:?}"),
        }
        assert!(Instant::now() < deadline, "node 3 never caught up");
    }
    eprintln!("{unavailable} UNAVAILABLE answers before node 3 caught up");
}

/// Refusals for a missing view grant are counted; GetStatus shows a reader only its
/// granted views' streams; CPU time keeps its fraction; the dead-letter counter exists
/// without a dead-letter topic; a node's log file has no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_logs_tell_the_truth() {
    let root = tempfile::tempdir().unwrap();
    let (security, admin) = auth_toml(root.path());
    let admin_creds = bearer(&admin);
    let n = one_node(Some(security), &admin_creds).await;
    let ep = n.member.endpoint();
    wait_ingested(&ep, &admin_creds).await;
    let token = AdminServiceClient::new(channel(&ep, &admin_creds).await.unwrap())
        .create_token(CreateTokenRequest {
            name: "clicks-only".into(),
            role: "reader".into(),
            views: vec!["clicks".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let reader = bearer(&token.token);
    let port = n.member.metrics;
    let denied = |port| {
        metric(
            port,
            "quiver_auth_denied_total",
            &[("reason", "permission_denied")],
        )
        .unwrap_or(0.0)
    };
    let before = denied(port);
    let refused = lookup(&ep, &reader, &["secret:s"]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        denied(port),
        before + 1.0,
        "the view-grant refusal is counted"
    );

    let status = AdminServiceClient::new(channel(&ep, &reader).await.unwrap())
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let streams: BTreeSet<&str> = status
        .shards
        .iter()
        .flat_map(|s| s.partitions.iter().map(|p| p.topic.as_str()))
        .collect();
    assert_eq!(
        streams,
        ["clicks"].into(),
        "a reader of clicks sees {streams:?}"
    );
    assert!(status.shards.iter().all(|s| s.row_count_estimate == 0));

    let text = scrape(port).unwrap();
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    assert_eq!(
        metric(
            port,
            "quiver_ingest_dead_letters_total",
            &[("result", "queued")]
        ),
        Some(0.0),
        "dead letters exported at 0 without a dead-letter topic"
    );
    // CPU time as the kernel counts it (10 ms ticks), not truncated to whole seconds:
    // compare with /proc at a moment the kernel's figure has a fraction far from 0.
    let ticks = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..50 {
            let _ = lookup(&ep, &admin_creds, &["clicks:n"]).await;
        }
        let before = ticks(n.proc.pid());
        let exported = metric(port, "process_cpu_seconds_total", &[]).unwrap();
        let after = ticks(n.proc.pid());
        if before.fract() > 0.2 && before.fract() < 0.8 && after - before < 0.05 {
            assert!(
                exported >= before - 1e-9 && exported <= after + 1e-9,
                "exported {exported}, /proc {before}..{after}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no usable CPU sample");
    }
    let log = std::fs::read_to_string(n.proc.log_path()).unwrap();
    assert!(!log.is_empty());
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the log file");
}
