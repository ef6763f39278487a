//! Monotonic reads across failover: once the client has seen a value, no replica behind
//! it may answer, even when the fresh replica dies and the only one left is stale.

use std::time::{Duration, Instant};

use quiver_client::{ClientError, Lookup, PushRow};
use quiver_proto::ErrorCode;
use quiver_proto::Partitioner;

use crate::procs::ProcCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_never_answers_after_a_fresher_read() {
    // No failure detection during the test: the map keeps both replicas listed.
    let mut cluster = ProcCluster::start(|s| s.dead_after = Duration::from_secs(120)).await;
    let client = cluster
        .client(|b| {
            b.deadline(Duration::from_millis(1500))
                .attempt_timeout(Duration::from_millis(300))
        })
        .await;
    let key = "acct-monotonic";
    let read = || Lookup::features(["acct:f0"]).keys([key]);

    // v1 everywhere.
    let wm1 = client
        .push("acct", [PushRow::new(key).set("f0", 1i64)])
        .await
        .unwrap();
    let map = cluster.map(1).await;
    let shard = Partitioner::Murmur2
        .shard_for_key(key.as_bytes(), cluster.settings.shard_count)
        .0;
    let replicas: Vec<u64> = map.shards[shard as usize]
        .replicas
        .iter()
        .map(|r| r.node_id)
        .collect();
    let (fresh, stale) = (replicas[0], replicas[1]);
    for node in [fresh, stale] {
        let mut c = cluster.node(node).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.get_online_features(read().min_watermarks(&wm1)).await {
                Ok(r) => {
                    assert_eq!(r.i64(0, 0), Some(1));
                    break;
                }
                Err(e) if e.code() == Some(ErrorCode::Behind) => {
                    assert!(Instant::now() < deadline, "node {node} never applied v1");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    // Freeze the stale replica, write v2, read it (from the fresh replica).
    cluster.procs[&stale].pause();
    let wm2 = client
        .push("acct", [PushRow::new(key).set("f0", 2i64)])
        .await
        .unwrap();
    let r = client
        .get_online_features(&read().min_watermarks(&wm2))
        .await
        .unwrap();
    assert_eq!(r.i64(0, 0), Some(2));

    // Now the stale replica runs but cannot catch up (broker frozen), and the fresh one
    // dies: the only live replica holds v1.
    cluster.broker.pause();
    cluster.procs[&stale].resume();
    cluster.procs.remove(&fresh).unwrap().kill_9();
    let direct = cluster
        .node(stale)
        .await
        .get_online_features(read())
        .await
        .unwrap();
    assert_eq!(
        direct.i64(0, 0),
        Some(1),
        "the surviving replica is stale (precondition)"
    );

    for _ in 0..3 {
        match client.get_online_features(&read()).await {
            Ok(r) => assert_eq!(r.i64(0, 0), Some(2), "the client went back in time"),
            Err(e @ (ClientError::DeadlineExceeded { .. } | ClientError::BudgetExhausted(_))) => {
                assert!(
                    matches!(e.code(), Some(ErrorCode::Behind | ErrorCode::Unavailable)),
                    "{e}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    // Once the broker is back the replica catches up and the read succeeds.
    cluster.broker.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get_online_features(&read()).await {
            assert_eq!(r.i64(0, 0), Some(2));
            break;
        }
        assert!(Instant::now() < deadline, "the replica never caught up");
    }
}
