//! Backfill from files against an in-process cluster: a file with a bad row is refused
//! naming the row and column and produces nothing; a good file produces exactly its rows
//! (latest values and as-of answers equal an oracle of the file); a resumed backfill skips
//! the rows already acknowledged and leaves the served state as it was.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use quiver_client::Lookup;
use quiver_client::export::backfill::{BackfillError, BackfillOptions, backfill};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::inprocess::{InProcessCluster, now_ms};

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "profile"
entity = "user"
history = "30d"
[view.source]
topic = "profile"
event_time_field = "ts"
[[view.feature]]
name = "score"
type = "float64"
[[view.feature]]
name = "visits"
type = "int64_list"
"#;

const SHARDS: u32 = 4;

/// Records in the topic (sum of the partitions' end offsets).
fn produced(cluster: &InProcessCluster) -> i64 {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.mock.bootstrap_servers())
        .set("group.id", "count")
        .create()
        .unwrap();
    (0..SHARDS as i32)
        .map(|p| {
            c.fetch_watermarks("profile", p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .sum()
}

/// Rows: (user, event time µs, score, visits).
fn rows(n: usize, base: i64) -> Vec<(String, i64, f64, Vec<i64>)> {
    (0..n)
        .map(|i| {
            (
                format!("u{:02}", (i * 7) % 50),
                base + ((i * 7_919) % 100_000) as i64 * 1_000_000,
                i as f64 + 0.5,
                vec![i as i64, 1],
            )
        })
        .collect()
}

fn write(path: &std::path::Path, rows: &[(String, i64, f64, Vec<i64>)], key_nulls: &[usize]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", DataType::Int64, false),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "visits",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        ),
    ]));
    let keys: StringArray = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (!key_nulls.contains(&i)).then_some(r.0.clone()))
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(keys),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
                rows.iter()
                    .map(|r| Some(r.3.iter().map(|v| Some(*v)).collect::<Vec<_>>())),
            )),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The latest (`t` = None) or as-of-`t` score per user of `rows`: greatest event time,
/// ties to the later row.
fn oracle(rows: &[(String, i64, f64, Vec<i64>)], user: &str, t: Option<i64>) -> Option<f64> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.0 == user && t.is_none_or(|t| r.1 <= t))
        .max_by_key(|(i, r)| (r.1, *i))
        .map(|(_, r)| r.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_is_all_or_nothing_exact_and_resumable() {
    let cluster = InProcessCluster::start(3, SHARDS, 2, "murmur2", &["profile"], VIEWS).await;
    let client = cluster.client().await;
    let dir = tempfile::tempdir().unwrap();
    let base = (now_ms() - 5 * 86_400_000) * 1000;
    let data = rows(1_000, base);
    let opts = BackfillOptions {
        batch_rows: 120,
        ..Default::default()
    };

    // A missing key in row 731: refused, naming it; nothing produced.
    let bad = dir.path().join("bad.parquet");
    write(&bad, &data, &[730]);
    let e = backfill(&client, "profile", &bad, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, BackfillError::File { .. }), "{e}");
    assert!(
        e.to_string().contains("row 731: column \"key\" is null"),
        "{e}"
    );
    // An unparseable time and a column of the wrong type (CSV).
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "key,event_time,score\nu1,2026-11-01T00:00:00Z,1.5\nu2,soon,2.5\n",
    )
    .unwrap();
    let e = backfill(&client, "profile", &csv, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("row 2: time \"soon\" in column \"event_time\""),
        "{e}"
    );
    std::fs::write(&csv, "key,event_time,score\nu1,2026-11-01T00:00:00Z,high\n").unwrap();
    let e = backfill(&client, "profile", &csv, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("row 1: column \"score\": a Utf8 column cannot hold the view's float64"),
        "{e}"
    );
    std::fs::write(&csv, "key,event_time,rank\nu1,2026-11-01T00:00:00Z,3\n").unwrap();
    let e = backfill(&client, "profile", &csv, &opts, |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("column \"rank\" is not a field of the view (fields: score, visits)"),
        "{e}"
    );
    assert_eq!(produced(&cluster), 0, "a refused file produces nothing");

    // A good file: exactly its rows.
    let good = dir.path().join("good.parquet");
    write(&good, &data, &[]);
    let mut seen = 0;
    let s = backfill(&client, "profile", &good, &opts, |n| seen = n)
        .await
        .unwrap();
    assert_eq!((s.rows, s.pushed, seen), (1_000, 1_000, 1_000));
    assert_eq!(produced(&cluster), 1_000);
    let users: Vec<String> = (0..50).map(|u| format!("u{u:02}")).collect();
    let check = |label: &'static str| {
        let (client, users, data) = (&client, &users, &data);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            for t in [
                None,
                Some(base + 30_000_000_000),
                Some(base + 70_000_000_000),
            ] {
                loop {
                    let mut l = Lookup::features(["profile:score"]).keys(users.iter().cloned());
                    if let Some(t) = t {
                        l = l.as_of_micros(t);
                    }
                    let r = client.get_online_features(&l).await.unwrap();
                    let want: Vec<Option<f64>> = users.iter().map(|u| oracle(data, u, t)).collect();
                    let got: Vec<Option<f64>> = (0..users.len()).map(|i| r.f64(i, 0)).collect();
                    if got == want {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{label}, as of {t:?}: {got:?} != {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    check("after the backfill").await;

    // Run again: already done, nothing produced.
    let s = backfill(&client, "profile", &good, &opts, |_| {})
        .await
        .unwrap();
    assert_eq!((s.rows, s.pushed), (1_000, 0));
    assert_eq!(produced(&cluster), 1_000);

    // An interrupted run (400 rows acknowledged) resumes after them.
    let state = dir.path().join("good.parquet.backfill");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("done=1000", "done=400")).unwrap();
    let s = backfill(&client, "profile", &good, &opts, |_| {})
        .await
        .unwrap();
    assert_eq!((s.rows, s.pushed), (1_000, 600));
    assert_eq!(
        produced(&cluster),
        1_600,
        "only the rows after the resume point"
    );
    check("after the resumed run").await;
    cluster.stop().await;
}
