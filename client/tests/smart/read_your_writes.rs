//! Read-your-writes: a push's watermark makes the next read see it, every time, while
//! other records stream into the same partitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver_client::{Lookup, PushRow};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::inprocess::{InProcessCluster, now_ms};

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "balance"
entity = "user"
[view.source]
topic = "balance"
event_time_field = "ts"
event_time_unit = "millis"
[[view.feature]]
name = "amount"
type = "int64"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_read_with_its_watermark_sees_the_write() {
    let cluster = InProcessCluster::start(3, 4, 2, "murmur2", &["balance"], VIEWS).await;
    let client = cluster.client().await;

    // Concurrent ingestion into the same topic and partitions.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let stop = stop.clone();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.mock.bootstrap_servers())
            .set("linger.ms", "2")
            .create()
            .unwrap();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bg-{}", i % 200);
                let payload = json!({"ts": now_ms(), "amount": i}).to_string();
                producer
                    .send(
                        FutureRecord::to("balance").key(&key).payload(&payload),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };

    for i in 0..150i64 {
        let key = format!("user-{}", i % 7);
        let wm = client
            .push("balance", [PushRow::new(key.as_str()).set("amount", i)])
            .await
            .unwrap();
        assert!(!wm.is_empty());
        let r = client
            .get_online_features(
                &Lookup::features(["balance:amount"])
                    .keys([key.as_str()])
                    .min_watermarks(&wm),
            )
            .await
            .unwrap();
        assert_eq!(
            r.i64(0, 0),
            Some(i),
            "read {i} of {key} did not see its push"
        );
        // The answering replica's watermark covers the push.
        let shard = wm.iter().next().unwrap();
        assert!(
            r.watermarks()
                .iter()
                .any(|(s, t, o)| s == shard.0 && t == shard.1 && o >= shard.2),
            "{:?} vs {wm}",
            r.watermarks()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let produced = background.await.unwrap();
    assert!(produced > 0, "no concurrent ingestion happened");
    assert_eq!(client.stats().failed_requests, 0);
    cluster.stop().await;
}
