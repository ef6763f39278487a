//! The client-side row cache against real nodes: hits without sub-requests, single flight,
//! bounds, invalidation by pushes, view TTLs — and, under concurrent ingestion, pushes and
//! a node stopping, no read older than the session's floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use quiver_client::{CacheConfig, Client, FeatureStatus, Lookup, PushRow, Watermarks};
use quiver_proto::Partitioner;
use quiver_proto::v1::{ShardWatermark, TopicOffset};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::inprocess::{InProcessCluster, now_ms};

fn views(ttl: &str) -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "counter"
entity = "user"
{ttl}
[view.source]
topic = "counter"
event_time_field = "ts"
event_time_unit = "millis"
[[view.feature]]
name = "seq"
type = "int64"
[[view.feature]]
name = "label"
type = "string"
"#
    )
}

async fn cached_client(cluster: &InProcessCluster, cache: CacheConfig) -> Client {
    Client::builder()
        .seeds([cluster.addrs[0].clone()])
        .deadline(Duration::from_secs(5))
        .rng_seed(7)
        .cache(cache)
        .build()
        .await
        .unwrap()
}

fn read(keys: &[String]) -> Lookup {
    Lookup::features(["counter:seq", "counter:label"]).keys(keys.iter().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_coalescing_bounds_invalidation_and_view_ttl() {
    // Lookups may wait up to 5 s at the node for a token's watermark (the single-flight
    // step holds its leader there).
    let cluster = InProcessCluster::start_with(
        1,
        2,
        1,
        "murmur2",
        &["counter"],
        &views("ttl = \"3s\""),
        |f| f.limits.max_watermark_wait = Duration::from_secs(5),
    )
    .await;
    let shard = |k: &str| Partitioner::Murmur2.shard_for_key(k.as_bytes(), 2).0;
    let cache = CacheConfig {
        max_entries: 64,
        ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let client = cached_client(&cluster, cache).await;
    let keys: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let now = now_ms() * 1000;
    let wm = client
        .push(
            "counter",
            keys.iter().enumerate().map(|(i, k)| {
                PushRow::new(k.as_str())
                    .set("seq", i as i64)
                    .set("label", format!("l{i}"))
                    .event_time_micros(now)
            }),
        )
        .await
        .unwrap();

    // The first read fetches (read-your-writes through the push's watermark) and fills.
    let first = client
        .get_online_features(&read(&keys).min_watermarks(&wm))
        .await
        .unwrap();
    let before = client.stats();
    assert_eq!(before.cache_misses, 20);
    // The same lookup again, duplicates and a reordering included: every row from the
    // cache, not one sub-request, values identical.
    let mut again: Vec<String> = keys.iter().rev().cloned().collect();
    again.push(keys[3].clone());
    let second = client
        .get_online_features(&read(&again).min_watermarks(&wm))
        .await
        .unwrap();
    let after = client.stats();
    assert_eq!(
        after.sub_requests, before.sub_requests,
        "all rows were cached"
    );
    assert_eq!(after.cache_hits - before.cache_hits, 20);
    for (row, k) in again.iter().enumerate() {
        let i: usize = k[1..].parse().unwrap();
        assert_eq!(second.i64(row, 0), Some(i as i64));
        assert_eq!(second.str(row, 1), Some(format!("l{i}").as_str()));
        assert_eq!(second.i64(row, 0), first.i64(i, 0));
    }
    assert_eq!(
        second.watermarks().iter().count(),
        first.watermarks().iter().count()
    );

    // A push through the client drops the key's row: the next read is a miss and sees the
    // new value; the untouched keys still hit.
    let wm2 = client
        .push(
            "counter",
            [PushRow::new("u5")
                .set("seq", 500i64)
                .event_time_micros(now_ms() * 1000)],
        )
        .await
        .unwrap();
    let s = client.stats();
    let r = client
        .get_online_features(&read(&keys[5..6]).min_watermarks(&wm2))
        .await
        .unwrap();
    assert_eq!(r.i64(0, 0), Some(500));
    assert_eq!(client.stats().cache_misses - s.cache_misses, 1);
    // Rows read before the push are below the push's offsets, so a row of the pushed
    // key's shard misses even without a token; a row of the other shard still hits.
    let same = keys
        .iter()
        .find(|k| k.as_str() != "u5" && shard(k) == shard("u5"))
        .unwrap();
    let other = keys.iter().find(|k| shard(k) != shard("u5")).unwrap();
    let s = client.stats();
    client
        .get_online_features(&read(std::slice::from_ref(same)))
        .await
        .unwrap();
    let s2 = client.stats();
    assert_eq!(
        (
            s2.cache_misses - s.cache_misses,
            s2.cache_hits - s.cache_hits
        ),
        (1, 0)
    );
    client
        .get_online_features(&read(std::slice::from_ref(other)))
        .await
        .unwrap();
    let s3 = client.stats();
    assert_eq!(
        (
            s3.cache_misses - s2.cache_misses,
            s3.cache_hits - s2.cache_hits
        ),
        (0, 1)
    );

    // Single flight: 40 concurrent lookups of one cold key send one sub-request. They
    // read with a token one record ahead of the key's shard, so the node holds the
    // leader's sub-request until that record arrives: the record is produced only once
    // the 39 others follow the flight (however the runtime schedules them — without the
    // gate, a leader whose round trip completes within its first poll fills the row
    // before the others are polled, and they hit instead of following).
    let cold = vec!["cold-key".to_owned()];
    let cold_shard = shard("cold-key");
    let now_at = client
        .get_online_features(&read(&cold).bypass_cache(true))
        .await
        .unwrap();
    let ahead: Vec<ShardWatermark> = now_at
        .watermarks()
        .iter()
        .filter(|(s, _, _)| *s == cold_shard)
        .map(|(s, topic, next)| ShardWatermark {
            shard: s,
            offsets: vec![TopicOffset {
                topic: topic.to_owned(),
                next_offset: next + 1,
            }],
        })
        .collect();
    assert_eq!(ahead.len(), 1, "the cold key's shard has a watermark");
    let ahead = Watermarks::from_wire(&ahead);
    let filler = (0..)
        .map(|i| format!("filler{i}"))
        .find(|k| shard(k) == cold_shard)
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.mock.bootstrap_servers())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let s = client.stats();
    let lookups: Vec<Lookup> = (0..40)
        .map(|_| read(&cold).min_watermarks(&ahead))
        .collect();
    let gate = async {
        let deadline = Instant::now() + Duration::from_secs(4);
        while client.stats().cache_coalesced - s.cache_coalesced < 39 {
            assert!(Instant::now() < deadline, "{:?}", client.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let payload = json!({"ts": now_ms(), "seq": 1, "label": "gate"}).to_string();
        producer
            .send(
                FutureRecord::to("counter")
                    .partition(cold_shard as i32)
                    .key(&filler)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    };
    let (results, ()) = tokio::join!(
        join_all(lookups.iter().map(|l| client.get_online_features(l))),
        gate
    );
    for r in results {
        assert_eq!(r.unwrap().status(0, 0), FeatureStatus::NotFound);
    }
    let s2 = client.stats();
    assert_eq!(s2.sub_requests - s.sub_requests, 1, "{s2:?}");
    assert_eq!(s2.cache_coalesced - s.cache_coalesced, 39);
    assert_eq!(s2.cache_misses - s.cache_misses, 40, "{s2:?}");

    // Bounds: 500 distinct keys through a cache of 64 rows.
    let many: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    for chunk in many.chunks(50) {
        client.get_online_features(&read(chunk)).await.unwrap();
        let (usage, cap) = client.cache_usage().unwrap();
        assert!(
            usage.entries <= cap.entries && cap.entries <= 64,
            "{usage:?} {cap:?}"
        );
    }

    // View TTL 3 s: a value whose event time is 2 s old is cached for at most 1 s,
    // although the cache TTL is 60 s; once the node says EXPIRED, so does the client.
    let pushed_at = Instant::now();
    let old = now_ms() * 1000 - 2_000_000;
    let wm3 = client
        .push(
            "counter",
            [PushRow::new("aging")
                .set("seq", 1i64)
                .event_time_micros(old)],
        )
        .await
        .unwrap();
    let aging = vec!["aging".to_owned()];
    let r = client
        .get_online_features(&read(&aging).min_watermarks(&wm3))
        .await
        .unwrap();
    assert_eq!(r.status(0, 0), FeatureStatus::Present);
    assert!(
        pushed_at.elapsed() < Duration::from_millis(900),
        "too slow to test the TTL"
    );
    while pushed_at.elapsed() < Duration::from_millis(1300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client.get_online_features(&read(&aging)).await.unwrap();
    assert_eq!(
        r.status(0, 0),
        FeatureStatus::Expired,
        "a cached value outlived its view TTL"
    );

    // A lookup that bypasses the cache neither reads nor fills it.
    let s = client.stats();
    client
        .get_online_features(&read(&keys).bypass_cache(true))
        .await
        .unwrap();
    let s2 = client.stats();
    assert_eq!(
        (s2.cache_hits, s2.cache_misses),
        (s.cache_hits, s.cache_misses)
    );
    cluster.stop().await;
}

/// A small deterministic RNG for the readers' key choice.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

const STREAM_KEYS: usize = 40;
const PUSH_KEYS: usize = 5;

fn key_name(i: usize) -> String {
    if i < STREAM_KEYS {
        format!("s{i}")
    } else {
        format!("p{}", i - STREAM_KEYS)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cached_read_is_older_than_the_session_floor_under_ingestion_and_failover() {
    let mut cluster = InProcessCluster::start(3, 4, 2, "murmur2", &["counter"], &views("")).await;
    let client = cached_client(
        &cluster,
        CacheConfig {
            ttl: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    // Per key, the highest `seq` the session has returned (after the lookup completed).
    let seen: Arc<Vec<AtomicI64>> = Arc::new(
        (0..STREAM_KEYS + PUSH_KEYS)
            .map(|_| AtomicI64::new(-1))
            .collect(),
    );
    let lookups = Arc::new(AtomicU64::new(0));

    // Ingestion straight into Kafka: per key, `seq` only grows.
    let producer_task = {
        let stop = stop.clone();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.mock.bootstrap_servers())
            .set("linger.ms", "0")
            .create()
            .unwrap();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let payload = json!({"ts": now_ms(), "seq": i, "label": "stream"}).to_string();
                producer
                    .send(
                        FutureRecord::to("counter")
                            .key(&key_name(i % STREAM_KEYS))
                            .payload(&payload),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                i += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };

    // Pushes through the cached client, each read back with its token (read-your-writes).
    let pusher = {
        let (stop, client, seen) = (stop.clone(), client.clone(), seen.clone());
        tokio::spawn(async move {
            let mut j = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let k = STREAM_KEYS + (j as usize % PUSH_KEYS);
                let Ok(wm) = client
                    .push("counter", [PushRow::new(key_name(k)).set("seq", j)])
                    .await
                else {
                    continue; // a push failed over a stopping node: retried with the next j
                };
                let r = client
                    .get_online_features(&read(&[key_name(k)]).min_watermarks(&wm))
                    .await
                    .unwrap();
                let v = r.i64(0, 0).unwrap();
                assert!(
                    v >= j,
                    "read-your-writes: pushed {j} to {}, read {v}",
                    key_name(k)
                );
                seen[k].fetch_max(v, Ordering::SeqCst);
                j += 1;
            }
        })
    };

    // Readers share the client (one session): each lookup must return, per key, at least
    // what the session had returned before it started.
    let readers: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, client, seen, lookups) =
                (stop.clone(), client.clone(), seen.clone(), lookups.clone());
            tokio::spawn(async move {
                let mut rng = Rng(1000 + t);
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + rng.below(8) as usize;
                    let ks: Vec<usize> = (0..n)
                        .map(|_| rng.below((STREAM_KEYS + PUSH_KEYS) as u64) as usize)
                        .collect();
                    let floor: Vec<i64> =
                        ks.iter().map(|k| seen[*k].load(Ordering::SeqCst)).collect();
                    let names: Vec<String> = ks.iter().map(|k| key_name(*k)).collect();
                    let r = match client.get_online_features(&read(&names)).await {
                        Ok(r) => r,
                        // A node stopping mid-lookup may cost a deadline; never a stale row.
                        Err(e) if e.is_retryable() => continue,
                        Err(e) => panic!("{e}"),
                    };
                    for (row, k) in ks.iter().enumerate() {
                        let v = r.i64(row, 0).unwrap_or(-1);
                        assert!(
                            v >= floor[row],
                            "key {} read {v} after the session had seen {}",
                            key_name(*k),
                            floor[row]
                        );
                        seen[*k].fetch_max(v, Ordering::SeqCst);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                    // Paced: hits cost no I/O, and a spinning reader would starve the
                    // other tests' in-process nodes sharing this machine.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    let wait_lookups = |n: u64| {
        let lookups = lookups.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while lookups.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "readers stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_lookups(1500).await;
    let hits_before_failover = client.stats().cache_hits;
    // Failover: a node stops while everything runs.
    cluster.stop_node(1).await;
    let after = lookups.load(Ordering::Relaxed);
    wait_lookups(after + 1500).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    pusher.await.unwrap();
    producer_task.await.unwrap();
    let s = client.stats();
    assert!(
        hits_before_failover > 0 && s.cache_hits > hits_before_failover,
        "the cache served nothing, so this test proved nothing: {s:?}"
    );
    assert!(s.cache_misses > 0, "{s:?}");
    cluster.stop().await;
}
