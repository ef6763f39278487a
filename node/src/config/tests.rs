use quiver_proto::{Partitioner, ShardId};

use super::*;

#[test]
fn defaults_validate() {
    let c = NodeConfigFile::default().validate().unwrap();
    assert_eq!(c.shards.len(), 8);
    assert_eq!(c.partitioner, Partitioner::Murmur2);
}

#[test]
fn the_documented_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/node.toml");
    let c = NodeConfigFile::load(&path).unwrap().validate().unwrap();
    assert_eq!(
        c.ingest.dead_letter_topic.as_deref(),
        Some("quiver-dead-letters")
    );
    let views =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/views.toml");
    let registry = crate::registry::Registry::in_memory();
    registry
        .apply_toml(&std::fs::read_to_string(views).unwrap(), false)
        .unwrap();
    assert_eq!(registry.snapshot().views.len(), 2);
}

#[test]
fn cluster_mode_settings() {
    let mut f = NodeConfigFile::default();
    f.control.enabled = true;
    f.control.initial_voters = vec!["1@127.0.0.1:7070".into(), "2@127.0.0.1:7071".into()];
    f.control.replication_factor = 3;
    // Auth is on by default: members need a way to authenticate to each other.
    let e = f.validate().unwrap_err().to_string();
    assert!(e.contains("auth.cluster_token_file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("cluster-token");
    std::fs::write(&token, "0123456789abcdef-cluster\n").unwrap();
    f.auth.cluster_token_file = token;
    let c = f.validate().unwrap().control.unwrap();
    assert_eq!(
        c.peer_credentials.token.as_deref(),
        Some("0123456789abcdef-cluster")
    );
    assert_eq!(c.initial_voters.len(), 2);
    assert_eq!(
        c.advertise_addr, "127.0.0.1:7070",
        "defaults to the gRPC address"
    );
    assert_eq!(c.settings.replication_factor, 3);
    assert_eq!(c.settings.shard_count, 8);
    assert!(
        NodeConfigFile::default()
            .validate()
            .unwrap()
            .control
            .is_none()
    );
}

#[test]
fn parses_a_full_file() {
    let text = r#"
version = 1
node_id = 3
data_dir = "/tmp/q"
[server]
grpc_addr = "0.0.0.0:7000"
metrics_addr = ""
shutdown_grace = "5s"
[cluster]
shard_count = 4
partitioner = "crc32"
shards = [3, 1]
[kafka]
bootstrap_servers = "k:9092"
properties = { "fetch.min.bytes" = "1" }
dead_letter_topic = "dlq"
[ingest]
max_batch_records = 10
poll_timeout = "50ms"
[limits]
max_batch_keys = 5
[storage]
lookup_cache_mib = 64
lookup_cache_fill_on_ingest = false
[registry]
definition_files = ["a.toml"]
"#;
    let file: NodeConfigFile = toml::from_str(text).unwrap();
    let c = file.validate().unwrap();
    assert_eq!(c.node_id, quiver_proto::NodeId(3));
    assert_eq!(c.shards, vec![ShardId(1), ShardId(3)]);
    assert_eq!(c.partitioner, Partitioner::Crc32);
    assert_eq!(c.metrics_addr, None);
    assert_eq!(c.ingest.dead_letter_topic.as_deref(), Some("dlq"));
    assert_eq!(c.limits.max_batch_keys, 5);
    assert_eq!(c.storage.lookup_cache_bytes, 64 << 20);
    assert!(!c.storage.lookup_cache_fill_on_ingest);
    assert!(
        NodeConfigFile::default()
            .validate()
            .unwrap()
            .storage
            .lookup_cache_fill_on_ingest,
        "ingest fills the lookup cache by default"
    );
    assert_eq!(
        c.limits.max_features_per_request, 1000,
        "unset keys keep defaults"
    );
}

#[test]
fn rejects_bad_values_by_name() {
    type Mutation = fn(&mut NodeConfigFile);
    let cases: Vec<(Mutation, &str)> = vec![
        (|f| f.cluster.shard_count = 0, "cluster.shard_count"),
        (
            |f| f.cluster.partitioner = "fnv".into(),
            "cluster.partitioner",
        ),
        (|f| f.cluster.shards = vec![9], "cluster.shards contains 9"),
        (|f| f.server.grpc_addr = "nope".into(), "server.grpc_addr"),
        (|f| f.limits.max_batch_keys = 0, "limits.max_batch_keys"),
        (|f| f.log.format = "xml".into(), "log.format"),
        (
            |f| f.limits.max_pushes_per_second = Some(1000),
            "replaced by limits.max_push_rows_per_second",
        ),
        (
            |f| f.limits.max_push_rows_per_second = 10,
            "below limits.max_push_rows",
        ),
        (|f| f.version = 2, "version = 2"),
        (
            |f| {
                f.control.enabled = true;
                f.control.initial_voters = vec!["nope".into()];
            },
            "control.initial_voters entry \"nope\"",
        ),
        (|f| f.control.enabled = true, "set initial_voters"),
        (
            |f| {
                f.control.enabled = true;
                f.control.seeds = vec!["127.0.0.1:7070".into()];
                f.control.voters = 2;
            },
            "control.voters = 2",
        ),
    ];
    for (mutate, needle) in cases {
        let mut f = NodeConfigFile::default();
        mutate(&mut f);
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    let err = toml::from_str::<NodeConfigFile>("bogus = 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn security_sections_are_validated_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    type Change = Box<dyn Fn(&mut NodeConfigFile)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|f| f.tls.cert_file = "/x/cert.pem".into()),
            "tls.cert_file and tls.key_file",
        ),
        (
            Box::new(|f| f.tls.client_auth = "sometimes".into()),
            "tls.client_auth",
        ),
        (
            Box::new(|f| f.tls.ca_file = "/x/ca.pem".into()),
            "need tls.cert_file",
        ),
        (
            Box::new(|f| {
                f.tls.cert_file = "/nonexistent/cert.pem".into();
                f.tls.key_file = "/nonexistent/key.pem".into();
            }),
            "tls.cert_file /nonexistent/cert.pem",
        ),
        (
            Box::new(move |f| f.auth.bootstrap_token_file = short.clone()),
            "at least 16",
        ),
        (
            Box::new(|f| f.auth.bootstrap_token_file = "/nonexistent/token".into()),
            "auth.bootstrap_token_file",
        ),
        (
            Box::new(|f| {
                f.auth.identities = vec![crate::config::IdentitySection {
                    name: "app".into(),
                    role: "superuser".into(),
                    views: vec![],
                }]
            }),
            "auth.identities[0].role",
        ),
        (
            Box::new(|f| f.limits.max_key_bytes = 100_000),
            "limits.max_key_bytes",
        ),
        (
            Box::new(|f| f.limits.max_inflight_requests = 0),
            "limits.max_inflight_requests",
        ),
    ];
    for (change, needle) in cases {
        let mut f = NodeConfigFile::default();
        change(&mut f);
        let e = f.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    }
    let c = NodeConfigFile::default().validate().unwrap();
    assert!(
        c.security.auth.enabled,
        "auth is on unless disabled explicitly"
    );
    assert!(c.security.tls.is_none());
}
