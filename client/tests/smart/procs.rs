//! A process cluster: the Tansu broker and three `quiver-node` processes (R = 2), one view
//! of ten int64 features, and a known value for every key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientBuilder, Lookup, NodeClient};
use quiver_proto::v1::ClusterMap;
use quiver_testkit::{Broker, ClusterSettings, Member, NodeProcess, all_serving_on};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

pub const FEATURES: usize = 10;

pub fn views() -> String {
    let mut v = String::from(
        r#"
[[entity]]
name = "account"
key_type = "string"
[[view]]
name = "acct"
entity = "account"
[view.source]
topic = "acct"
event_time_field = "ts"
event_time_unit = "millis"
"#,
    );
    for f in 0..FEATURES {
        v.push_str(&format!(
            "[[view.feature]]\nname = \"f{f}\"\ntype = \"int64\"\n"
        ));
    }
    v
}

/// The feature references of the view, `acct:f0` … `acct:f9`.
pub fn feature_refs() -> Vec<String> {
    (0..FEATURES).map(|f| format!("acct:f{f}")).collect()
}

/// The value of feature `f` of key number `k` at version `v`.
pub fn value(k: usize, f: usize, v: i64) -> i64 {
    v * 1_000_000 + (k * FEATURES + f) as i64
}

pub struct ProcCluster {
    pub broker: Broker,
    pub members: Vec<Member>,
    pub procs: BTreeMap<u64, NodeProcess>,
    pub settings: ClusterSettings,
    _root: tempfile::TempDir,
}

impl ProcCluster {
    pub async fn start(customise: impl FnOnce(&mut ClusterSettings)) -> Self {
        let broker = Broker::start();
        let root = tempfile::tempdir().unwrap();
        let mut settings = ClusterSettings::new(broker.bootstrap());
        customise(&mut settings);
        broker.create_topic("acct", settings.shard_count);
        let members = quiver_testkit::initial_members(root.path(), 3, &settings);
        let procs = members
            .iter()
            .map(|m| {
                (
                    m.id,
                    NodeProcess::start_on(&m.config, &m.dir, 1, m.grpc, m.metrics),
                )
            })
            .collect();
        let cluster = ProcCluster {
            broker,
            members,
            procs,
            settings,
            _root: root,
        };
        cluster.wait_serving(&[1, 2, 3]).await;
        cluster
            .node(1)
            .await
            .apply_definitions(views(), false)
            .await
            .unwrap();
        cluster
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members.iter().find(|m| m.id == id).unwrap()
    }

    pub async fn node(&self, id: u64) -> NodeClient {
        NodeClient::connect(self.member(id).endpoint())
            .await
            .unwrap()
    }

    pub async fn map(&self, id: u64) -> ClusterMap {
        self.node(id).await.cluster_map().await.unwrap()
    }

    /// Waits until every shard has R Serving replicas on `on`.
    pub async fn wait_serving(&self, on: &[u64]) -> ClusterMap {
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = self.settings.replication_factor as usize;
        loop {
            if let Ok(mut c) = NodeClient::connect(self.member(on[0]).endpoint()).await
                && let Ok(map) = c.cluster_map().await
                && all_serving_on(&map, self.settings.shard_count as usize, r, |n| {
                    on.contains(&n)
                })
            {
                return map;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not become Serving on {on:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Produces version `v` of keys `0..n` straight to Kafka, murmur2-partitioned by
    /// librdkafka, and waits for acknowledgements.
    pub async fn produce(&self, n: usize, v: i64) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let ts = crate::inprocess::now_ms() + v;
        let sends = (0..n).map(|k| {
            let mut doc = serde_json::Map::new();
            doc.insert("ts".into(), json!(ts));
            for f in 0..FEATURES {
                doc.insert(format!("f{f}"), json!(value(k, f, v)));
            }
            let key = format!("acct-{k}");
            let payload = serde_json::Value::Object(doc).to_string();
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to("acct").key(&key).payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
        });
        futures::future::join_all(sends).await;
    }

    /// A client seeded with every node.
    pub async fn client(&self, customise: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Client {
        let seeds: Vec<String> = self.members.iter().map(Member::endpoint).collect();
        customise(Client::builder().seeds(seeds).rng_seed(7))
            .build()
            .await
            .unwrap()
    }
}

/// Checks every value of `keys` (key numbers) in `r` is version `v`.
pub fn check(r: &quiver_client::LookupResult, keys: &[usize], v: i64) -> Result<(), String> {
    for (row, k) in keys.iter().enumerate() {
        for f in 0..FEATURES {
            let got = r.i64(row, f);
            if got != Some(value(*k, f, v)) {
                return Err(format!(
                    "acct-{k} f{f}: got {got:?}, want {}",
                    value(*k, f, v)
                ));
            }
        }
    }
    Ok(())
}

/// A lookup of `keys` (key numbers) for all ten features.
pub fn lookup(keys: &[usize]) -> Lookup {
    Lookup::features(feature_refs()).keys(keys.iter().map(|k| format!("acct-{k}")))
}

/// Waits until the client reads version `v` of all `n` keys.
pub async fn wait_ingested(client: &Client, n: usize, v: i64) {
    let keys: Vec<usize> = (0..n).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ok = true;
        for chunk in keys.chunks(500) {
            let r = client.get_online_features(&lookup(chunk)).await.unwrap();
            ok &= check(&r, chunk, v).is_ok();
        }
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "version {v} not ingested");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latency percentile of sorted `samples`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// One lookup of an open-loop reader: when it was due, how long it took, what went wrong.
pub type Sample = (Instant, Duration, Option<String>);

/// Open-loop readers: a lookup of `batch` random keys (of `keys`) is issued every
/// `period`, whether or not the previous ones have returned, and checked against version
/// `v` — so an outage counts every lookup that was due during it.
pub struct Readers {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Readers {
    pub fn start(client: Client, period: Duration, keys: usize, batch: usize, v: i64) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let cancel = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            // Lookups stay due on schedule: a late tick is issued at once, not skipped.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seed = 0x5EED_u64;
            let mut running = tokio::task::JoinSet::new();
            loop {
                let due = tokio::select! {
                    () = cancel.cancelled() => break,
                    t = ticks.tick() => t.into_std(),
                };
                let chosen: Vec<usize> = (0..batch)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as usize % keys
                    })
                    .collect();
                let client = client.clone();
                running.spawn(async move {
                    let outcome = match client.get_online_features(&lookup(&chosen)).await {
                        Ok(res) => check(&res, &chosen, v).err(),
                        Err(e) => Some(e.to_string()),
                    };
                    (due, due.elapsed(), outcome)
                });
            }
            running.join_all().await
        });
        Readers { stop, task }
    }

    /// Stops issuing, waits for the lookups in flight, returns every sample.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Asserts no sample failed.
pub fn assert_none_failed(samples: &[Sample]) {
    let failures: Vec<&String> = samples.iter().filter_map(|s| s.2.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} lookups failed, e.g. {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(3)]
    );
}
