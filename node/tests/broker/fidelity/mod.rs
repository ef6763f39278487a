//! What a new user finds first, against real `quiver-node` processes and the real broker:
//! stock gRPC tools connect (Python's grpcio with reflection v1alpha), malformed requests
//! are refused, replicas are spread evenly, the first leader stays, readiness means the
//! node can serve, a token revoked while a node was down is refused from its first
//! answer, the metrics say what happened, and a tenant flooding past its quota leaves the
//! other tenants alone.

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
    GetOnlineFeaturesRequest, GetStatusRequest, RevokeTokenRequest,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use quiver_testkit::{
    Broker, ClusterSettings, Member, NodeProcess, all_serving_on, allocate, initial_members,
    write_config,
};

mod formation;
mod metrics;
mod placement;
mod reflection;
mod tenants;
mod tokens;

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
            && all_serving_on(&map, p as usize, r, |n| on.contains(&n))
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
