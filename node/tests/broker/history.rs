//! Row history against the real broker and a node process: while records stream in,
//! live lookups are recorded at known times; afterwards as-of lookups at those times with
//! `exclude_late_arrivals` return exactly what was served — across a SIGKILL and restart
//! of the node in the middle — while as-of by event time differs where late events
//! arrived (they count from their event time); and a training set of every (key, served
//! time) pair exported through the `ExportFeatures` stream equals what was served.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quiver_proto::Partitioner;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::{
    AsOf, EntityKey, GetOnlineFeaturesRequest, PackedColumn, ShardWatermark, TopicOffset,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use quiver_testkit::{Broker, NodeProcess};

const SHARDS: u32 = 2;
const USERS: usize = 50;
const ROUNDS: usize = 24;
const PER_ROUND: usize = 30;

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "profile"
entity = "user"
ttl = "90m"
history = "7d"
[view.source]
topic = "profile"
event_time_field = "ts"
[[view.feature]]
name = "score"
type = "int64"
[[view.feature]]
name = "tier"
type = "string"
"#;

fn config(dir: &std::path::Path, bootstrap: &str) -> std::path::PathBuf {
    let defs = dir.join("defs.toml");
    std::fs::write(&defs, DEFS).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
node_id = 1
data_dir = "{data}"
[cluster]
shard_count = {SHARDS}
partitioner = "murmur2"
[kafka]
bootstrap_servers = "{bootstrap}"
[ingest]
poll_timeout = "50ms"
[limits]
max_watermark_wait = "30s"
[registry]
definition_files = ["{defs}"]
[auth]
enabled = false
"#,
            data = dir.join("data").display(),
            defs = defs.display(),
        ),
    )
    .unwrap();
    cfg
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn keys() -> Vec<EntityKey> {
    (0..USERS)
        .map(|u| EntityKey::from(format!("u{u:02}").as_str()))
        .collect()
}

/// Produces one round: `PER_ROUND` records stamped (Kafka timestamp) strictly after
/// `after_micros`, most with event time now, one in four up to two hours old (a late
/// arrival), some of those older than the TTL. Returns the next offsets per partition.
async fn produce_round(
    producer: &FutureProducer,
    round: usize,
    after_micros: i64,
    end: &mut BTreeMap<i32, i64>,
) {
    let arrival_ms = (now_micros() / 1000).max(after_micros / 1000 + 1);
    let sends = (0..PER_ROUND).map(|i| {
        let n = round * PER_ROUND + i;
        let user = format!("u{:02}", (n * 7 + round) % USERS);
        let ts = if n % 4 == 1 {
            arrival_ms - ((n * 7919) % 7_200_000) as i64
        } else {
            arrival_ms - (n % 5) as i64
        };
        let payload = format!(r#"{{"ts": {ts}, "score": {n}, "tier": "t{}"}}"#, n % 3);
        async move {
            let rec = FutureRecord::to("profile")
                .key(user.as_bytes())
                .payload(payload.as_bytes())
                .timestamp(arrival_ms);
            let d = producer
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
            (d.partition, d.offset)
        }
    });
    for (p, o) in futures::future::join_all(sends).await {
        let e = end.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
}

async fn lookup(node: &NodeProcess, req: GetOnlineFeaturesRequest) -> Vec<PackedColumn> {
    let mut c = FeatureServiceClient::connect(node.endpoint())
        .await
        .unwrap();
    c.get_online_features(req)
        .await
        .unwrap()
        .into_inner()
        .packed_columns
}

fn request(end: &BTreeMap<i32, i64>, as_of: Option<AsOf>) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: vec!["profile:*".into()],
        entity_keys: keys(),
        include_event_times: true,
        min_watermarks: end
            .iter()
            .map(|(p, o)| ShardWatermark {
                shard: *p as u32,
                offsets: vec![TopicOffset {
                    topic: "profile".into(),
                    next_offset: *o,
                }],
            })
            .collect(),
        as_of,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_with_exclude_late_arrivals_returns_what_was_served_across_kill_9() {
    let broker = Broker::start();
    broker.create_topic("profile", SHARDS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &broker.bootstrap());
    let mut node = NodeProcess::start(&cfg, dir.path(), 1);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("partitioner", Partitioner::Murmur2.librdkafka_name())
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let mut end = BTreeMap::new();
    // (T, what a lookup at T served)
    let mut served: Vec<(i64, Vec<PackedColumn>)> = Vec::new();
    let mut last_t = 0;
    for round in 0..ROUNDS {
        produce_round(&producer, round, last_t, &mut end).await;
        if round == ROUNDS / 2 {
            node.kill_9();
            eprintln!("killed the node with SIGKILL after round {round}");
            node = NodeProcess::start(&cfg, dir.path(), 2);
        }
        // Everything acknowledged so far arrived before T; the node has applied it all
        // when it answers (min watermarks), and nothing else (the next round is stamped
        // after T).
        let t = now_micros();
        served.push((t, lookup(&node, request(&end, None)).await));
        last_t = t;
    }
    let mut differs = 0;
    for (i, (t, live)) in served.iter().enumerate() {
        let as_of = |exclude| AsOf {
            time_micros: *t,
            exclude_late_arrivals: exclude,
            ..Default::default()
        };
        let replay = lookup(&node, request(&end, Some(as_of(true)))).await;
        assert_eq!(
            &replay, live,
            "round {i}: as of T with exclude_late_arrivals"
        );
        if lookup(&node, request(&end, Some(as_of(false)))).await != *live {
            differs += 1;
        }
    }
    assert!(
        differs > 0,
        "late arrivals must change some answer by event time"
    );
    // One request, each key at its own round's time.
    let pick = |u: usize| u % ROUNDS;
    let per_key = lookup(
        &node,
        request(
            &end,
            Some(AsOf {
                key_times_micros: (0..USERS).map(|u| served[pick(u)].0).collect(),
                exclude_late_arrivals: true,
                ..Default::default()
            }),
        ),
    )
    .await;
    for (c, col) in per_key.iter().enumerate() {
        for u in 0..USERS {
            let live = &served[pick(u)].1[c];
            assert_eq!(
                (col.status_at(u), col.value(u), col.event_time_at(u)),
                (live.status_at(u), live.value(u), live.event_time_at(u)),
                "u{u:02}, column {}",
                col.name
            );
        }
    }
    // The training set of every (key, served time) pair, exported through the node's
    // ExportFeatures stream in chunks (as a label set would be, keys shuffled across
    // rounds), is exactly what was served.
    let pairs: Vec<(usize, usize)> = (0..ROUNDS)
        .flat_map(|r| (0..USERS).map(move |u| (r, u)))
        .collect();
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..order.len()).rev() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        order.swap(i, (rng % (i as u64 + 1)) as usize);
    }
    const CHUNK: usize = 173;
    let chunks: Vec<GetOnlineFeaturesRequest> = order
        .chunks(CHUNK)
        .map(|c| GetOnlineFeaturesRequest {
            entity_keys: c.iter().map(|&i| keys()[pairs[i].1].clone()).collect(),
            as_of: Some(AsOf {
                key_times_micros: c.iter().map(|&i| served[pairs[i].0].0).collect(),
                exclude_late_arrivals: true,
                ..Default::default()
            }),
            ..request(&end, None)
        })
        .collect();
    let n_chunks = chunks.len();
    let mut stream = FeatureServiceClient::connect(node.endpoint())
        .await
        .unwrap()
        .export_features(futures::stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    let mut answered = 0;
    for (ci, c) in order.chunks(CHUNK).enumerate() {
        let answer = stream
            .message()
            .await
            .unwrap()
            .expect("an answer per chunk");
        for (row, &i) in c.iter().enumerate() {
            let (r, u) = pairs[i];
            for (col, live) in answer.packed_columns.iter().zip(&served[r].1) {
                assert_eq!(
                    (col.status_at(row), col.value(row), col.event_time_at(row)),
                    (live.status_at(u), live.value(u), live.event_time_at(u)),
                    "export chunk {ci} row {row}: u{u:02} as of round {r}, column {}",
                    col.name
                );
            }
        }
        answered += 1;
    }
    assert_eq!(answered, n_chunks);
    assert!(
        stream.message().await.unwrap().is_none(),
        "no answer beyond the chunks"
    );
    node.terminate();
}
