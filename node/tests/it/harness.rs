//! An in-process node against librdkafka's mock cluster, plus helpers to produce and poll.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_node::config::NodeConfig;
use quiver_node::{Listeners, Node};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    EntityKey, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, GetStatusRequest,
    GetStatusResponse,
};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Polls `f` until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Kafka {
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub bootstrap: String,
    producer: FutureProducer,
}

impl Kafka {
    pub fn new(topics: &[(&str, i32)]) -> Self {
        let mock = MockCluster::new(1).expect("mock cluster");
        for (t, p) in topics {
            mock.create_topic(t, *p, 1).expect("create topic");
        }
        let bootstrap = mock.bootstrap_servers();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        Kafka {
            mock,
            bootstrap,
            producer,
        }
    }

    /// Produces one record and returns (partition, offset).
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp_ms: Option<i64>,
    ) -> (i32, i64) {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        if let Some(t) = timestamp_ms {
            rec = rec.timestamp(t);
        }
        let d = self
            .producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        (d.partition, d.offset)
    }

    pub async fn send_json(&self, topic: &str, key: &str, json: serde_json::Value) -> (i32, i64) {
        let bytes = serde_json::to_vec(&json).unwrap();
        self.send(topic, Some(key.as_bytes()), Some(&bytes), None)
            .await
    }
}

pub struct TestNode {
    pub node: Option<Node>,
    pub cancel: CancellationToken,
    pub features: FeatureServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub channel: Channel,
}

impl TestNode {
    pub async fn start(config: NodeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_with_listener(config, listener).await
    }

    pub async fn start_with_listener(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let node = Node::start(config, Listeners { grpc: listener }, cancel.clone())
            .await
            .expect("node starts");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TestNode {
            node: Some(node),
            cancel,
            features: FeatureServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel.clone()),
            channel,
        }
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.node
            .take()
            .unwrap()
            .wait()
            .await
            .expect("clean shutdown");
    }

    pub async fn status(&self) -> GetStatusResponse {
        self.admin
            .clone()
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Records consumed per topic, summed over shards.
    pub async fn next_offsets(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for s in self.status().await.shards {
            for p in s.partitions {
                *out.entry(p.topic).or_default() += p.next_offset;
            }
        }
        out
    }

    /// Waits until the node has consumed `n` records of `topic` (over all partitions).
    pub async fn wait_consumed(&self, topic: &str, n: i64) {
        eventually(
            Duration::from_secs(30),
            &format!("{n} records of {topic} consumed"),
            || async {
                (self.next_offsets().await.get(topic).copied().unwrap_or(0) >= n).then_some(())
            },
        )
        .await
    }

    pub async fn lookup(
        &self,
        features: &[&str],
        keys: Vec<EntityKey>,
    ) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
        let req = GetOnlineFeaturesRequest {
            features: features.iter().map(|s| s.to_string()).collect(),
            entity_keys: keys,
            // The per-cell form: these checks read `columns`.
            encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
            ..Default::default()
        };
        self.features
            .clone()
            .get_online_features(req)
            .await
            .map(|r| r.into_inner())
    }
}

pub fn config(dir: &std::path::Path, bootstrap: &str, shard_count: u32, defs: &str) -> NodeConfig {
    let path = dir.join("defs.toml");
    std::fs::write(&path, defs).unwrap();
    let mut c = NodeConfig::for_test(dir.join("data"), bootstrap, shard_count);
    c.definition_files = vec![path];
    c
}
