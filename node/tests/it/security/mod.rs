//! Security: the authorisation matrix, TLS and mutual TLS, certificate reload, limits and
//! admission control, against real nodes.

mod authz;
mod limits;
mod quotas;
mod replicated;
mod tls;

use std::path::Path;
use std::time::Duration;

use quiver_node::config::{NodeConfig, NodeConfigFile};
use quiver_node::{Listeners, Node};
use quiver_proto::transport::{AuthChannel, Credentials};
use tokio_util::sync::CancellationToken;

use crate::harness::eventually;

pub const BOOTSTRAP: &str = "bootstrap-admin-secret-0001";
pub const CLUSTER: &str = "cluster-member-secret-0001";

pub const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "scores"
entity = "user"
[view.source]
topic = "scores"
event_time_field = "ts"
[[view.feature]]
name = "score"
type = "int64"
[[view.feature]]
name = "tag"
type = "string"
[[view.feature]]
name = "emb"
type = "float32_vector"
[[view]]
name = "secret"
entity = "user"
[view.source]
topic = "secret"
event_time_field = "ts"
[[view.feature]]
name = "ssn"
type = "string"
"#;

/// A single-member cluster with auth on (bootstrap and cluster tokens in files).
pub struct SecureNode {
    pub addr: String,
    pub cancel: CancellationToken,
    pub node: Option<Node>,
    pub kafka: crate::harness::Kafka,
    _dir: tempfile::TempDir,
}

impl SecureNode {
    pub async fn start(tweak: impl FnOnce(&mut NodeConfigFile, &Path)) -> SecureNode {
        let kafka = crate::harness::Kafka::new(&[("scores", 2), ("secret", 2)]);
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = secure_config(dir.path(), &addr, &kafka.bootstrap, tweak);
        let cancel = CancellationToken::new();
        let node = Node::start(config, Listeners { grpc: listener }, cancel.clone())
            .await
            .expect("node starts");
        let n = SecureNode {
            addr,
            cancel,
            node: Some(node),
            kafka,
            _dir: dir,
        };
        // A leader, then the views (applied with the bootstrap token).
        let admin = n.creds(Some(BOOTSTRAP));
        eventually(Duration::from_secs(30), "views applied", || async {
            let mut c =
                quiver_proto::v1::admin_service_client::AdminServiceClient::new(n.channel(&admin));
            c.apply_definitions(quiver_proto::v1::ApplyDefinitionsRequest {
                toml: VIEWS.into(),
                dry_run: false,
            })
            .await
            .ok()
        })
        .await;
        // Every shard placed here and every view readable.
        eventually(Duration::from_secs(30), "shards serve lookups", || async {
            let mut c = quiver_proto::v1::feature_service_client::FeatureServiceClient::new(
                n.channel(&admin),
            );
            c.get_online_features(quiver_proto::v1::GetOnlineFeaturesRequest {
                features: vec![
                    "scores:score".into(),
                    "scores:tag".into(),
                    "secret:*".into(),
                ],
                entity_keys: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                ..Default::default()
            })
            .await
            .ok()
        })
        .await;
        n
    }

    pub fn creds(&self, token: Option<&str>) -> Credentials {
        Credentials {
            tls: None,
            token: token.map(str::to_owned),
        }
    }

    pub fn channel(&self, creds: &Credentials) -> AuthChannel {
        creds
            .lazy_channel(&self.addr, Duration::from_secs(2))
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(n) = self.node.take() {
            n.wait().await.unwrap();
        }
    }
}

pub fn secure_config(
    dir: &Path,
    addr: &str,
    bootstrap: &str,
    tweak: impl FnOnce(&mut NodeConfigFile, &Path),
) -> NodeConfig {
    let bootstrap_file = dir.join("bootstrap-token");
    let cluster_file = dir.join("cluster-token");
    std::fs::write(&bootstrap_file, BOOTSTRAP).unwrap();
    std::fs::write(&cluster_file, CLUSTER).unwrap();
    let mut f = NodeConfigFile {
        node_id: 1,
        data_dir: dir.join("data"),
        ..Default::default()
    };
    f.server.grpc_addr = addr.to_owned();
    f.server.metrics_addr = String::new();
    f.server.shutdown_grace = Duration::from_secs(2);
    f.server.shutdown_delay = Duration::ZERO;
    f.cluster.shard_count = 2;
    f.kafka.bootstrap_servers = bootstrap.to_owned();
    f.storage.block_cache_mib = 8;
    f.storage.write_buffer_mib = 8;
    f.ingest.poll_timeout = Duration::from_millis(20);
    f.control.enabled = true;
    f.control.voters = 1;
    f.control.replication_factor = 1;
    f.control.initial_voters = vec![format!("1@{addr}")];
    f.control.heartbeat_interval = Duration::from_millis(100);
    f.auth.enabled = true;
    f.auth.bootstrap_token_file = bootstrap_file;
    f.auth.cluster_token_file = cluster_file;
    tweak(&mut f, dir);
    f.validate().unwrap()
}
