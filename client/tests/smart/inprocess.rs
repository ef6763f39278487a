//! An in-process cluster: real nodes with the Raft control plane over loopback gRPC, real
//! RocksDB, librdkafka's mock cluster.

use std::time::{Duration, Instant};

use quiver_client::{Client, NodeClient};
use quiver_node::config::NodeConfigFile;
use quiver_node::{Listeners, Node};
use quiver_proto::v1::ReplicaStateProto;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

/// Nodes and the mock broker; everything stops on drop of the cancel token's owner.
pub struct InProcessCluster {
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub addrs: Vec<String>,
    cancel: CancellationToken,
    /// Per node: its own token (a child of `cancel`) and the node, until stopped.
    nodes: Vec<(CancellationToken, Option<Node>)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl InProcessCluster {
    /// Starts `n` voters with `shards` shards, replication `r` and `partitioner`; creates
    /// `topics` with `shards` partitions and applies `views`; waits until every shard has
    /// `r` Serving replicas.
    pub async fn start(
        n: usize,
        shards: u32,
        r: u32,
        partitioner: &str,
        topics: &[&str],
        views: &str,
    ) -> Self {
        Self::start_with(n, shards, r, partitioner, topics, views, |_| {}).await
    }

    /// As [`InProcessCluster::start`], with `tweak` applied to every node's config.
    pub async fn start_with(
        n: usize,
        shards: u32,
        r: u32,
        partitioner: &str,
        topics: &[&str],
        views: &str,
        tweak: impl Fn(&mut NodeConfigFile),
    ) -> Self {
        let mock = MockCluster::new(1).unwrap();
        for t in topics {
            mock.create_topic(t, shards as i32, 1).unwrap();
        }
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let voters: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect();
        let cancel = CancellationToken::new();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut f = NodeConfigFile {
                node_id: i as u64 + 1,
                data_dir: dir.path().join("data"),
                ..Default::default()
            };
            f.server.grpc_addr = addrs[i].clone();
            f.server.metrics_addr = String::new();
            f.server.shutdown_grace = Duration::from_secs(2);
            f.server.shutdown_delay = Duration::ZERO;
            f.cluster.shard_count = shards;
            f.cluster.partitioner = partitioner.to_owned();
            f.kafka.bootstrap_servers = mock.bootstrap_servers();
            f.storage.block_cache_mib = 8;
            f.storage.write_buffer_mib = 8;
            f.ingest.poll_timeout = Duration::from_millis(20);
            f.control.enabled = true;
            f.auth.enabled = false;
            f.control.initial_voters = voters.clone();
            f.control.replication_factor = r;
            f.control.heartbeat_interval = Duration::from_millis(100);
            tweak(&mut f);
            let token = cancel.child_token();
            let node = Node::start(
                f.validate().unwrap(),
                Listeners { grpc: listener },
                token.clone(),
            )
            .await
            .unwrap();
            nodes.push((token, Some(node)));
            dirs.push(dir);
        }
        let cluster = InProcessCluster {
            mock,
            addrs,
            cancel,
            nodes,
            _dirs: dirs,
        };
        cluster.wait_serving(shards, r as usize).await;
        let mut admin = cluster.node_client(0).await;
        admin.apply_definitions(views, false).await.unwrap();
        cluster
    }

    pub async fn node_client(&self, i: usize) -> NodeClient {
        NodeClient::connect(format!("http://{}", self.addrs[i]))
            .await
            .unwrap()
    }

    async fn wait_serving(&self, shards: u32, r: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut c = self.node_client(0).await;
            if let Ok(map) = c.cluster_map().await
                && map.shards.len() == shards as usize
                && map.shards.iter().all(|s| {
                    s.replicas.len() == r
                        && s.replicas
                            .iter()
                            .all(|x| x.state == ReplicaStateProto::Serving as i32)
                })
            {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become Serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A smart client seeded with the first node only (it discovers the rest).
    pub async fn client(&self) -> Client {
        Client::builder()
            .seeds([self.addrs[0].clone()])
            .deadline(Duration::from_secs(5))
            .rng_seed(42)
            .build()
            .await
            .unwrap()
    }

    /// Stops node `i` (an ordered shutdown, like SIGTERM) and waits until it has.
    pub async fn stop_node(&mut self, i: usize) {
        let (token, node) = &mut self.nodes[i];
        token.cancel();
        if let Some(n) = node.take() {
            n.wait().await.unwrap();
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for (_, n) in self.nodes {
            if let Some(n) = n {
                n.wait().await.unwrap();
            }
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
