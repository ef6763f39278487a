//! Train/serve consistency end to end, against `quiver-node` processes and the Tansu
//! broker: while records stream in (some of them late), a client records what live
//! lookups serve at known times; one replica is killed with SIGKILL and restarted along
//! the way; afterwards a training set is exported for exactly those (key, time) pairs —
//! every value equals what was served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use quiver_client::export::{ExportOptions, export};
use quiver_client::{Lookup, LookupResult, Watermarks};
use quiver_testkit::NodeProcess;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::procs::{FEATURES, ProcCluster, views};

const KEYS: usize = 60;
const ROUNDS: usize = 18;
const PER_ROUND: usize = 25;

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The view with history over the cluster's topic (same features as `acct`).
fn history_views() -> String {
    let mut v = views();
    v.push_str("[[view]]\nname = \"acct_h\"\nentity = \"account\"\nhistory = \"7d\"\nttl = \"30m\"\n[view.source]\ntopic = \"acct\"\nevent_time_field = \"ts\"\nevent_time_unit = \"millis\"\n");
    for f in 0..FEATURES {
        v.push_str(&format!(
            "[[view.feature]]\nname = \"f{f}\"\ntype = \"int64\"\n"
        ));
    }
    v
}

/// One round of records, stamped (Kafka timestamp) after `after_micros`; one in four
/// with an event time up to an hour old. Returns the end offsets per partition.
async fn produce_round(
    producer: &FutureProducer,
    round: usize,
    after_micros: i64,
    end: &mut BTreeMap<i32, i64>,
) {
    let arrival = (now_micros() / 1000).max(after_micros / 1000 + 1);
    let sends = (0..PER_ROUND).map(|i| {
        let n = round * PER_ROUND + i;
        let key = format!("acct-{}", (n * 7 + round) % KEYS);
        let ts = if n % 4 == 1 {
            arrival - ((n * 7_919) % 3_600_000) as i64
        } else {
            arrival
        };
        let mut doc = serde_json::Map::new();
        doc.insert("ts".into(), serde_json::json!(ts));
        for f in 0..FEATURES {
            doc.insert(format!("f{f}"), serde_json::json!(n * 100 + f));
        }
        let payload = serde_json::Value::Object(doc).to_string();
        async move {
            let d = producer
                .send(
                    FutureRecord::to("acct")
                        .key(&key)
                        .payload(&payload)
                        .timestamp(arrival),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            (d.partition, d.offset)
        }
    });
    for (p, o) in futures::future::join_all(sends).await {
        let e = end.entry(p).or_default();
        *e = (*e).max(o + 1);
    }
}

fn token(end: &BTreeMap<i32, i64>) -> Watermarks {
    end.iter()
        .map(|(p, o)| format!("{p}:acct={o}"))
        .collect::<Vec<_>>()
        .join(",")
        .parse()
        .unwrap()
}

fn refs() -> Vec<String> {
    (0..FEATURES).map(|f| format!("acct_h:f{f}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_set_holds_exactly_what_was_served_across_kill_9() {
    let mut cluster = ProcCluster::start(|s| s.dead_after = Duration::from_secs(120)).await;
    cluster
        .node(1)
        .await
        .apply_definitions(history_views(), false)
        .await
        .unwrap();
    let client = cluster
        .client(|b| b.deadline(Duration::from_secs(10)))
        .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("acct-{k}")).collect();
    // The new view serves once every replica has caught up with the (empty) topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client
        .get_online_features(&Lookup::features(refs()).keys(["acct-0"]))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "acct_h never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut end = BTreeMap::new();
    let mut served: Vec<(i64, LookupResult)> = Vec::new();
    let mut last_t = 0;
    let mut killed = None;
    for round in 0..ROUNDS {
        produce_round(&producer, round, last_t, &mut end).await;
        if round == ROUNDS / 3 {
            cluster.procs.remove(&2).unwrap().kill_9();
            killed = Some(2);
            eprintln!("killed node 2 with SIGKILL after round {round}");
        }
        if round == 2 * ROUNDS / 3
            && let Some(id) = killed.take()
        {
            let m = cluster.member(id).clone();
            cluster.procs.insert(
                id,
                NodeProcess::start_on(&m.config, &m.dir, 2, m.grpc, m.metrics),
            );
            eprintln!("restarted node 2 after round {round}");
        }
        // Everything acknowledged arrived before T, and the replica read has applied it
        // (the watermarks); the next round is stamped after T.
        let t = now_micros();
        let lookup = Lookup::features(refs())
            .keys(keys.iter().cloned())
            .min_watermarks(&token(&end))
            .event_times(true);
        // No failed call: the surviving replica of every shard serves while node 2 is
        // down and while it catches up after its restart.
        let live = client.get_online_features(&lookup).await.unwrap();
        served.push((t, live));
        last_t = t;
    }

    // The label set: every (key, T) a live lookup answered.
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("account", DataType::Utf8, false),
        Field::new(
            "served_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let rows: Vec<(usize, usize)> = (0..ROUNDS)
        .flat_map(|r| (0..KEYS).map(move |k| (r, k)))
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, k)| keys[*k].clone()),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|(r, _)| served[*r].0),
            )),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&labels).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = dir.path().join("train.parquet");
    let opts = ExportOptions {
        features: refs(),
        key_column: "account".into(),
        time_column: "served_at".into(),
        status_columns: true,
        chunk_rows: 200,
        ..Default::default()
    };
    export(&client, &labels, &out, &opts, |_| {}).await.unwrap();

    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&out).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut i = 0;
    let (mut present, mut absent) = (0, 0);
    for b in &batches {
        for r in 0..b.num_rows() {
            let (round, k) = rows[i];
            let live = &served[round].1;
            for f in 0..FEATURES {
                let name = format!("acct_h:f{f}");
                let col = b.column_by_name(&name).unwrap().as_primitive::<Int64Type>();
                let status = b
                    .column_by_name(&format!("{name}__status"))
                    .unwrap()
                    .as_string::<i32>();
                let got = (!col.is_null(r)).then(|| col.value(r));
                assert_eq!(
                    (got, status.value(r)),
                    (
                        live.i64(k, f),
                        quiver_client::export::status_name(live.status(k, f))
                    ),
                    "acct-{k} f{f} as served after round {round}"
                );
            }
            if live.i64(k, 0).is_some() {
                present += 1;
            } else {
                absent += 1;
            }
            i += 1;
        }
    }
    assert_eq!(i, rows.len());
    assert!(
        present > 300 && absent > 30,
        "{present} present, {absent} absent"
    );
}
