//! Monotonic reads across failover: once the client has seen a value, no replica behind
//! it may answer, even when the fresh replica dies and the only one left is stale.

use std::time::{Duration, Instant};

use quiver_client::{ClientError, Lookup, PushRow};
use quiver_proto::ErrorCode;
use quiver_proto::Partitioner;

use quiver_testkit::NodeProcess;

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

    // Take the stale replica down (SIGSTOP would not do: the broker answers its pending
    // long-poll fetch into the socket buffer, and it applies v2 on resume), write v2 and
    // read it from the fresh replica.
    cluster.procs.remove(&stale).unwrap().kill_9();
    let wm2 = client
        .push("acct", [PushRow::new(key).set("f0", 2i64)])
        .await
        .unwrap();
    let r = client
        .get_online_features(&read().min_watermarks(&wm2))
        .await
        .unwrap();
    assert_eq!(r.i64(0, 0), Some(2));

    // Bring the stale replica back while the broker is frozen, so it cannot catch up, and
    // kill the fresh one: the only live replica holds v1.
    cluster.broker.pause();
    let m = cluster.member(stale).clone();
    cluster.procs.insert(
        stale,
        NodeProcess::start_on(&m.config, &m.dir, 2, m.grpc, m.metrics),
    );
    cluster.procs.remove(&fresh).unwrap().kill_9();
    // Wait until the restarted node has reopened its replica.
    let mut c = cluster.node(stale).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let direct = loop {
        match c.get_online_features(read()).await {
            Ok(r) => break r,
            // Still opening its replica: UNAVAILABLE (it is placed there), or
            // WRONG_SHARD before the node has caught up with the assignment.
            Err(e)
                if matches!(
                    e.code(),
                    Some(ErrorCode::Unavailable | ErrorCode::WrongShard)
                ) =>
            {
                assert!(
                    Instant::now() < deadline,
                    "node {stale} never reopened the shard"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        direct.i64(0, 0),
        Some(1),
        "the surviving replica is stale (precondition)"
    );

    // No live replica has v2, so every read must fail explicitly: returning v1 would go
    // back in time.
    for _ in 0..3 {
        match client.get_online_features(&read()).await {
            Ok(r) => panic!(
                "the client answered {:?} while the only live replica is stale",
                r.i64(0, 0)
            ),
            Err(e @ (ClientError::DeadlineExceeded { .. } | ClientError::BudgetExhausted(_))) => {
                println!("monotonic: read refused: {e}");
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
