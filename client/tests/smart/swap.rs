//! Cluster-wide swaps of a view's version under load: while readers look up keys on every
//! shard (each lookup fans out to several nodes), version 2 is built and promoted, then
//! rolled back to version 1 and forward again, through Raft. Every lookup succeeds, and
//! every answer is wholly one version: the two versions read different source fields, so
//! a mixed answer shows in its values. A reader pinned to version 1 (`v@1:x`) reads it
//! throughout, serving or retained.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quiver_client::{Lookup, NodeClient};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::inprocess::{InProcessCluster, now_ms};

const KEYS: usize = 60;
/// Version 2 reads field `b`, which every record sets to `OFFSET + a`.
const OFFSET: i64 = 1_000_000;

fn views(version: u32) -> String {
    let field = if version == 1 { "a" } else { "b" };
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "v"
version = {version}
entity = "user"
[view.source]
topic = "t"
event_time_field = "ts"
[[view.feature]]
name = "x"
type = "int64"
source_field = "{field}"
"#
    )
}

/// Waits until `admin` lists `version` of `v` as serving.
async fn wait_serving(admin: &mut NodeClient, version: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = admin.view_versions("v").await.unwrap();
        if listed
            .iter()
            .any(|v| v.version == version && v.state == "serving")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "v{version} never served: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    v1: AtomicU64,
    v2: AtomicU64,
    failed: AtomicU64,
    mixed: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_and_rollbacks_under_load_never_fail_or_mix_a_lookup() {
    let cluster = InProcessCluster::start(3, 4, 2, "murmur2", &["t"], &views(1)).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let payload = format!(
            r#"{{"ts": {}, "a": {i}, "b": {}}}"#,
            now_ms(),
            OFFSET + i as i64
        );
        producer
            .send(
                FutureRecord::to("t").key(k).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let client = Arc::new(cluster.client().await);
    let read = {
        let keys = keys.clone();
        move || Lookup::features(["v:x"]).keys(keys.iter().cloned())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get_online_features(&read()).await.unwrap();
        if (0..KEYS).all(|row| r.i64(row, 0) == Some(row as i64)) {
            break;
        }
        assert!(Instant::now() < deadline, "records never all served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Readers: every answer must be all version 1 or all version 2.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (client, tally, stop, read) =
            (client.clone(), tally.clone(), stop.clone(), read.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get_online_features(&read()).await {
                    Err(e) => {
                        eprintln!("lookup failed: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let got: Vec<Option<i64>> = (0..KEYS).map(|row| r.i64(row, 0)).collect();
                        let v1 = got.iter().enumerate().all(|(i, v)| *v == Some(i as i64));
                        let v2 = got
                            .iter()
                            .enumerate()
                            .all(|(i, v)| *v == Some(OFFSET + i as i64));
                        let which = match (v1, v2) {
                            (true, _) => &tally.v1,
                            (_, true) => &tally.v2,
                            _ => {
                                eprintln!("mixed answer: {got:?}");
                                &tally.mixed
                            }
                        };
                        which.fetch_add(1, Ordering::Relaxed);
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // A reader pinned to version 1: its values, before, during and after every swap.
    let pinned_ok = Arc::new(AtomicU64::new(0));
    let pinned = {
        let (client, tally, stop, keys, ok) = (
            client.clone(),
            tally.clone(),
            stop.clone(),
            keys.clone(),
            pinned_ok.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let lookup = Lookup::features(["v@1:x"]).keys(keys.iter().cloned());
                match client.get_online_features(&lookup).await {
                    Ok(r) if (0..KEYS).all(|row| r.i64(row, 0) == Some(row as i64)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("pinned read not version 1: {:?}", r.i64(0, 0));
                        tally.mixed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("pinned lookup failed: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut admin = cluster.node_client(1).await;
    admin.apply_definitions(views(2), false).await.unwrap();
    wait_serving(&mut admin, 2).await;
    let at = |t: &Tally| t.ok.load(Ordering::Relaxed);
    for to in [1, 2, 1] {
        // Some lookups on each side of every swap.
        let seen = at(&tally);
        let deadline = Instant::now() + Duration::from_secs(20);
        while at(&tally) < seen + 20 {
            assert!(Instant::now() < deadline, "readers stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let changes = admin.rollback_view("v", Some(to)).await.unwrap();
        assert!(
            changes
                .iter()
                .any(|c| c.contains(&format!("v{to}: serving again"))),
            "{changes:?}"
        );
    }
    let seen = at(&tally);
    let deadline = Instant::now() + Duration::from_secs(20);
    while at(&tally) < seen + 20 {
        assert!(Instant::now() < deadline, "readers stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    pinned.await.unwrap();
    assert!(pinned_ok.load(Ordering::Relaxed) > 0, "pinned reads ran");
    let (ok, v1, v2) = (
        tally.ok.load(Ordering::Relaxed),
        tally.v1.load(Ordering::Relaxed),
        tally.v2.load(Ordering::Relaxed),
    );
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "failed lookups");
    assert_eq!(
        tally.mixed.load(Ordering::Relaxed),
        0,
        "answers mixing versions"
    );
    assert!(
        v1 > 0 && v2 > 0,
        "both versions served: {v1} v1, {v2} v2 of {ok}"
    );
    // The last swap (to v1) is what every node serves now.
    let r = client.get_online_features(&read()).await.unwrap();
    assert!((0..KEYS).all(|row| r.i64(row, 0) == Some(row as i64)));
    cluster.stop().await;
}
