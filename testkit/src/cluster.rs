//! Config files for a cluster of `quiver-node` processes on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::free_port;

/// Cluster-wide settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Shard count P (= partitions of every source topic).
    pub shard_count: u32,
    /// Replicas per shard.
    pub replication_factor: u32,
    /// `"murmur2"` or `"crc32"`.
    pub partitioner: String,
    /// A node silent this long is dead and its replicas move.
    pub dead_after: Duration,
    /// Longest wait of a lookup for a requested watermark.
    pub max_watermark_wait: Duration,
    /// RocksDB block cache per node, MiB.
    pub block_cache_mib: u32,
    /// RocksDB row cache per node, MiB (0: none).
    pub row_cache_mib: u32,
    /// quiver's lookup cache per node, MiB (0: none).
    pub lookup_cache_mib: u32,
    /// `server.shutdown_delay`: 0 by default (tests stop nodes often and have no load
    /// balancer to wait for); the drain tests set it.
    pub shutdown_delay: Duration,
    /// TOML appended to every node's config: its `[tls]` and `[auth]` sections. The
    /// default disables auth (a rig on loopback that tests something else).
    pub security_toml: String,
    /// `registry.version_retention` (the node's default, 7 days, when `None`).
    pub version_retention: Option<Duration>,
    /// `ingest.poll_timeout`: 50 ms by default (tests stop nodes often).
    pub poll_timeout: Duration,
    /// `ingest.lag_refresh_interval`: 500 ms by default (tests wait for lag figures).
    pub lag_refresh_interval: Duration,
    /// `control.heartbeat_interval`: 200 ms by default (tests wait for the map).
    pub heartbeat_interval: Duration,
    /// `kafka.properties`: extra librdkafka properties of the nodes' Kafka clients.
    pub kafka_properties: Vec<(String, String)>,
}

impl ClusterSettings {
    /// Defaults for a small, quick cluster: P = 8, R = 2, murmur2, dead after 3 s.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClusterSettings {
            bootstrap: bootstrap.into(),
            shard_count: 8,
            replication_factor: 2,
            partitioner: "murmur2".into(),
            dead_after: Duration::from_secs(3),
            max_watermark_wait: Duration::from_millis(200),
            block_cache_mib: 16,
            row_cache_mib: 8,
            lookup_cache_mib: 8,
            shutdown_delay: Duration::ZERO,
            security_toml: "[auth]\nenabled = false\n".into(),
            version_retention: None,
            poll_timeout: Duration::from_millis(50),
            lag_refresh_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(200),
            kafka_properties: Vec::new(),
        }
    }
}

/// One member's ports, directory and config file.
#[derive(Debug, Clone)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// The address the node binds and advertises (`127.0.0.1`, or a network namespace's
    /// address).
    pub host: String,
    /// gRPC port (fixed before start: it is in the voters list).
    pub grpc: u16,
    /// Prometheus port.
    pub metrics: u16,
    /// The member's directory (config, data, logs).
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
}

impl Member {
    /// `id@127.0.0.1:port`, as `control.initial_voters` lists it.
    pub fn voter(&self) -> String {
        format!("{}@{}:{}", self.id, self.host, self.grpc)
    }

    /// `http://<host>:<grpc>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.grpc)
    }

    /// `<host>:<grpc>`, as `control.seeds` lists it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.grpc)
    }
}

fn toml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `properties = { "k" = "v", ... }` and a newline, or nothing when there are none.
/// Keys and values are ASCII librdkafka settings: Rust's quoting of them is TOML's.
fn kafka_properties_toml(props: &[(String, String)]) -> String {
    if props.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}"))
        .collect();
    format!("properties = {{ {} }}\n", pairs.join(", "))
}

/// Allocates loopback ports and a directory under `root` for member `id`.
pub fn allocate(root: &Path, id: u64) -> Member {
    allocate_on(root, id, "127.0.0.1")
}

/// Allocates ports and a directory under `root` for member `id` bound to `host`. Ports
/// are picked free on loopback; inside a network namespace of its own any port is free.
pub fn allocate_on(root: &Path, id: u64, host: &str) -> Member {
    let dir = root.join(format!("node{id}"));
    std::fs::create_dir_all(&dir).expect("create member dir");
    Member {
        id,
        host: host.to_string(),
        grpc: free_port(),
        metrics: free_port(),
        config: dir.join("node.toml"),
        dir,
    }
}

/// Writes `m`'s config: cluster mode, with `voters` as the initial voters (empty when
/// joining) and `seeds` to join through.
pub fn write_config(m: &Member, s: &ClusterSettings, voters: &[String], seeds: &[String]) {
    let text = format!(
        r#"version = 1
node_id = {id}
data_dir = "{data}"
[server]
grpc_addr = "{host}:{grpc}"
metrics_addr = "{host}:{metrics}"
shutdown_grace = "2s"
shutdown_delay = "{delay}ms"
[cluster]
shard_count = {p}
partitioner = "{partitioner}"
[kafka]
bootstrap_servers = "{bootstrap}"
{kafka_properties}[ingest]
poll_timeout = "{poll}ms"
lag_refresh_interval = "{lag}ms"
[storage]
block_cache_mib = {cache}
row_cache_mib = {row_cache}
lookup_cache_mib = {lookup_cache}
write_buffer_mib = 16
[limits]
max_watermark_wait = "{wait}ms"
[control]
enabled = true
initial_voters = [{voters}]
seeds = [{seeds}]
replication_factor = {r}
heartbeat_interval = "{heartbeat}ms"
dead_after = "{dead}ms"
{registry}{security}
"#,
        id = m.id,
        host = m.host,
        data = m.dir.join("data").display(),
        grpc = m.grpc,
        metrics = m.metrics,
        p = s.shard_count,
        partitioner = s.partitioner,
        bootstrap = s.bootstrap,
        wait = s.max_watermark_wait.as_millis(),
        voters = toml_list(voters),
        seeds = toml_list(seeds),
        r = s.replication_factor,
        dead = s.dead_after.as_millis(),
        cache = s.block_cache_mib,
        row_cache = s.row_cache_mib,
        lookup_cache = s.lookup_cache_mib,
        delay = s.shutdown_delay.as_millis(),
        poll = s.poll_timeout.as_millis(),
        lag = s.lag_refresh_interval.as_millis(),
        heartbeat = s.heartbeat_interval.as_millis(),
        kafka_properties = kafka_properties_toml(&s.kafka_properties),
        security = s.security_toml,
        registry = s.version_retention.map_or(String::new(), |r| format!(
            "[registry]\nversion_retention = \"{}ms\"\n",
            r.as_millis()
        )),
    );
    std::fs::write(&m.config, text).expect("write node config");
}

/// Allocates `n` members (ids 1..=n) that all start as initial voters, and writes their
/// configs.
pub fn initial_members(root: &Path, n: u64, s: &ClusterSettings) -> Vec<Member> {
    let members: Vec<Member> = (1..=n).map(|id| allocate(root, id)).collect();
    let voters: Vec<String> = members.iter().map(Member::voter).collect();
    for m in &members {
        write_config(m, s, &voters, &[]);
    }
    members
}

/// Whether `map` has `shards` shards, each with `r` replicas, every one of them Serving
/// on a node `on` accepts (the condition tests wait for after forming or changing a
/// cluster).
pub fn all_serving_on(
    map: &quiver_proto::v1::ClusterMap,
    shards: usize,
    r: usize,
    on: impl Fn(u64) -> bool,
) -> bool {
    use quiver_proto::v1::ReplicaStateProto;
    map.shards.len() == shards
        && map.shards.iter().all(|s| {
            s.replicas.len() == r
                && s.replicas
                    .iter()
                    .all(|x| x.state == ReplicaStateProto::Serving as i32 && on(x.node_id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_carry_the_intervals_and_kafka_properties_they_are_given() {
        let root = std::env::temp_dir().join(format!("testkit-cluster-{}", std::process::id()));
        let m = allocate(&root, 1);
        let mut s = ClusterSettings::new("127.0.0.1:9092");
        write_config(&m, &s, &[m.voter()], &[]);
        let rig = std::fs::read_to_string(&m.config).unwrap();
        assert!(rig.contains("poll_timeout = \"50ms\""), "{rig}");
        assert!(rig.contains("lag_refresh_interval = \"500ms\""), "{rig}");
        assert!(rig.contains("heartbeat_interval = \"200ms\""), "{rig}");
        assert!(!rig.contains("properties"), "{rig}");

        s.poll_timeout = Duration::from_millis(100);
        s.lag_refresh_interval = Duration::from_secs(5);
        s.heartbeat_interval = Duration::from_millis(500);
        s.kafka_properties = vec![
            ("fetch.wait.max.ms".into(), "500".into()),
            ("client.rack".into(), "a\"b".into()),
        ];
        write_config(&m, &s, &[m.voter()], &[]);
        let quiet = std::fs::read_to_string(&m.config).unwrap();
        assert!(quiet.contains("poll_timeout = \"100ms\""), "{quiet}");
        assert!(
            quiet.contains("lag_refresh_interval = \"5000ms\""),
            "{quiet}"
        );
        assert!(quiet.contains("heartbeat_interval = \"500ms\""), "{quiet}");
        assert!(
            quiet.contains(
                "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\nproperties = { \"fetch.wait.max.ms\" = \"500\", \"client.rack\" = \"a\\\"b\" }\n[ingest]"
            ),
            "{quiet}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
