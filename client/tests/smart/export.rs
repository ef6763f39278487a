//! Training-set export against an in-process cluster: label sets (Parquet and CSV) in,
//! Parquet out, every feature value equal to a brute-force oracle of the as-of rules
//! (out-of-order events, late arrivals, deletions, the TTL); label columns kept in order;
//! bad label files refused naming the row or column, with no output left behind.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit as ArrowUnit};
use quiver_client::export::{ExportError, ExportOptions, export, export_through_node};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::inprocess::{InProcessCluster, now_ms};

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "profile"
entity = "user"
ttl = "40m"
history = "7d"
[view.source]
topic = "profile"
event_time_field = "ts"
event_time_unit = "millis"
[[view.feature]]
name = "score"
type = "float64"
[[view.feature]]
name = "tier"
type = "string"
[[view.feature]]
name = "visits"
type = "int64_list"
"#;

const USERS: usize = 40;
const MIN: i64 = 60_000;

/// One produced version: user, event time, arrival (Kafka timestamp), ms; `None`: deleted.
#[derive(Debug, Clone)]
struct Version {
    user: usize,
    ts: i64,
    arrival: i64,
    score: Option<f64>,
}

fn oracle(versions: &[Version], user: usize, t_ms: i64) -> Option<Option<(f64, i64)>> {
    // Same user → same partition, produced in order: the index is the offset order.
    let (_, v) = versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v.user == user && v.arrival <= t_ms)
        .max_by_key(|(i, v)| (v.ts, *i))?;
    let score = v.score?;
    if t_ms - v.ts > 40 * MIN {
        return Some(None);
    }
    Some(Some((score, v.ts)))
}

async fn produce(cluster: &InProcessCluster) -> (Vec<Version>, i64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.mock.bootstrap_servers())
        .set("linger.ms", "1")
        // The cluster's partitioner: each key in its shard's partition.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    // Three hours of arrivals ending now, one version a minute-ish; one in five stamped
    // up to an hour before it arrived (late); one in twelve a deletion.
    let end = now_ms();
    let start = end - 180 * MIN;
    let mut versions = Vec::new();
    for i in 0..600i64 {
        let arrival = start + i * 18_000;
        let user = (i as usize * 13) % USERS;
        let ts = if i % 5 == 2 {
            arrival - (i * 7_919) % (60 * MIN)
        } else {
            arrival - i % 3
        };
        let score = (i % 12 != 5).then_some(i as f64 * 0.5 + 0.25);
        let key = format!("u{user:02}");
        let payload = score.map(|s| {
            format!(
                r#"{{"ts": {ts}, "score": {s}, "tier": "t{}", "visits": [{i}, {}]}}"#,
                i % 4,
                i * 2
            )
        });
        let mut rec = FutureRecord::to("profile").key(&key).timestamp(arrival);
        if let Some(p) = &payload {
            rec = rec.payload(p);
        }
        // A deletion carries its event time in a header-less tombstone: the Kafka timestamp.
        producer
            .send(rec, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let ts = if score.is_none() { arrival } else { ts };
        versions.push(Version {
            user,
            ts,
            arrival,
            score,
        });
    }
    (versions, end)
}

/// Label rows: (user, time ms) spread over the span, and a label column.
fn labels(n: usize, end: i64) -> Vec<(usize, i64, i64)> {
    let mut x = 7u64;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let user = (x >> 33) as usize % USERS;
            let t = end - 190 * MIN + ((x >> 13) % (195 * MIN as u64)) as i64;
            (user, t, i as i64 % 2)
        })
        .collect()
}

fn write_parquet(path: &std::path::Path, rows: &[(usize, i64, i64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(ArrowUnit::Microsecond, None),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("u{:02}", r.0)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.1 * 1000),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn check(out: &[RecordBatch], rows: &[(usize, i64, i64)], versions: &[Version], ctx: &str) {
    let total: usize = out.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, rows.len(), "{ctx}: one output row per label row");
    let mut i = 0;
    let (mut present, mut missing, mut expired) = (0, 0, 0);
    for b in out {
        let user = b.column_by_name("user_id").unwrap().as_string::<i32>();
        let label = b
            .column_by_name("label")
            .unwrap()
            .as_primitive::<Int64Type>();
        let score = b
            .column_by_name("profile:score")
            .unwrap()
            .as_primitive::<Float64Type>();
        let tier = b.column_by_name("profile:tier").unwrap().as_string::<i32>();
        let visits = b.column_by_name("profile:visits").unwrap().as_list::<i32>();
        let status = b
            .column_by_name("profile:score__status")
            .unwrap()
            .as_string::<i32>();
        for r in 0..b.num_rows() {
            let (u, t, l) = rows[i];
            assert_eq!(user.value(r), format!("u{u:02}"), "{ctx}: row {i} order");
            assert_eq!(label.value(r), l, "{ctx}: row {i} label kept");
            match oracle(versions, u, t) {
                None => {
                    missing += 1;
                    assert!(score.is_null(r), "{ctx}: row {i}");
                    assert_eq!(status.value(r), "NOT_FOUND", "{ctx}: row {i}");
                }
                Some(None) => {
                    expired += 1;
                    assert!(score.is_null(r) && tier.is_null(r), "{ctx}: row {i}");
                    assert_eq!(status.value(r), "EXPIRED", "{ctx}: row {i}");
                }
                Some(Some((s, _))) => {
                    present += 1;
                    assert_eq!(status.value(r), "PRESENT", "{ctx}: row {i} u{u:02} at {t}");
                    assert_eq!(score.value(r), s, "{ctx}: row {i} u{u:02} at {t}");
                    let n = ((s - 0.25) / 0.5) as i64;
                    assert_eq!(tier.value(r), format!("t{}", n % 4), "{ctx}: row {i}");
                    let v = visits.value(r);
                    assert_eq!(
                        v.as_primitive::<Int64Type>().values().to_vec(),
                        vec![n, n * 2],
                        "{ctx}: row {i}"
                    );
                }
            }
            i += 1;
        }
    }
    assert!(
        present > 100 && missing > 10 && expired > 10,
        "{ctx}: the label set must exercise every status ({present} present, {missing} missing, {expired} expired)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_equals_the_as_of_oracle_for_parquet_and_csv_labels() {
    let cluster = InProcessCluster::start(3, 4, 2, "murmur2", &["profile"], VIEWS).await;
    let (versions, end) = produce(&cluster).await;
    let client = cluster.client().await;
    // Wait until every version is in: the newest one of its user answers as of `end`.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let l = quiver_client::Lookup::features(["profile:score"])
            .keys((0..USERS).map(|u| format!("u{u:02}")))
            .as_of_micros(end * 1000 + 1000)
            .exclude_late_arrivals(true);
        let r = client.get_online_features(&l).await.unwrap();
        let done = (0..USERS).all(|u| match oracle(&versions, u, end + 1) {
            Some(Some((s, _))) => r.f64(u, 0) == Some(s),
            _ => r.f64(u, 0).is_none(),
        });
        if done {
            break;
        }
        let wrong: Vec<_> = (0..USERS)
            .map(|u| {
                (
                    u,
                    oracle(&versions, u, end + 1),
                    r.f64(u, 0),
                    r.status(u, 0),
                )
            })
            .filter(|(_, o, g, _)| match o {
                Some(Some((s, _))) => *g != Some(*s),
                _ => g.is_some(),
            })
            .take(5)
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not finish: {wrong:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = labels(3_000, end);
    let opts = ExportOptions {
        features: vec!["profile:*".into()],
        key_column: "user_id".into(),
        time_column: "ts".into(),
        status_columns: true,
        chunk_rows: 257,
        parallel: 3,
        ..Default::default()
    };

    let (input, out) = (
        dir.path().join("labels.parquet"),
        dir.path().join("train.parquet"),
    );
    write_parquet(&input, &rows);
    let mut seen = Vec::new();
    let summary = export(&client, &input, &out, &opts, |n| seen.push(n))
        .await
        .unwrap();
    assert_eq!((summary.rows, summary.features), (3_000, 3));
    assert_eq!(seen.last(), Some(&3_000), "progress reaches the end");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    check(&read_parquet(&out), &rows, &versions, "parquet labels");

    // The same labels as CSV with RFC 3339 times.
    let csv = dir.path().join("labels.csv");
    let mut text = String::from("user_id,ts,label\n");
    for (u, t, l) in &rows {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(*t as u64);
        text.push_str(&format!(
            "u{u:02},{},{l}\n",
            humantime::format_rfc3339_millis(time)
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let out_csv = dir.path().join("train-csv.parquet");
    export(&client, &csv, &out_csv, &opts, |_| {})
        .await
        .unwrap();
    check(&read_parquet(&out_csv), &rows, &versions, "csv labels");

    // Through one node's ExportFeatures stream (it reads the shards it lacks from their
    // replicas): the same training set, for every node asked.
    let none = quiver_proto::transport::Credentials::none();
    for (i, addr) in cluster.addrs.iter().enumerate() {
        let out_node = dir.path().join(format!("train-node{i}.parquet"));
        let mut seen = Vec::new();
        let summary = export_through_node(&none, addr, &input, &out_node, &opts, |n| seen.push(n))
            .await
            .unwrap();
        assert_eq!((summary.rows, summary.features), (3_000, 3));
        assert_eq!(seen.last(), Some(&3_000));
        check(
            &read_parquet(&out_node),
            &rows,
            &versions,
            &format!("through node {addr}"),
        );
    }
    // A chunk the node refuses ends the export with the node's error; nothing is written.
    let out_bad = dir.path().join("bad-node.parquet");
    let e = export_through_node(
        &none,
        &cluster.addrs[0],
        &input,
        &out_bad,
        &ExportOptions {
            features: vec!["profile:nope".into()],
            ..opts.clone()
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ExportError::Lookup { first: 0, .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(!out_bad.exists(), "no partial output");

    // Bad label files: the row or column named, nothing left at the output.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "user_id,ts,label\nu01,2026-11-30T10:00:00Z,1\nu02,yesterday,0\n",
    )
    .unwrap();
    let out_bad = dir.path().join("bad.parquet");
    let e = export(&client, &bad, &out_bad, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ExportError::Labels { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("row 2: time \"yesterday\" in column \"ts\""),
        "{e}"
    );
    assert!(!out_bad.exists(), "no partial output");
    let e = export(
        &client,
        &input,
        &out_bad,
        &ExportOptions {
            key_column: "user".into(),
            ..opts.clone()
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("no column \"user\" (columns: user_id, ts, label)"),
        "{e}"
    );
    assert!(!out_bad.exists());
    cluster.stop().await;
}
