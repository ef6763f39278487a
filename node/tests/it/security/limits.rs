//! Hostile input: every limit answers with its own clear error while the node keeps
//! serving well-behaved clients; admission control sheds with RESOURCE_EXHAUSTED.

use std::time::Duration;

use futures::future::join_all;
use quiver_proto::transport::AuthChannel;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::*;
use tonic::Code;

use super::{BOOTSTRAP, SecureNode};

fn lookup(keys: Vec<EntityKey>, features: &[&str]) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        entity_keys: keys,
        ..Default::default()
    }
}

fn ok_lookup() -> GetOnlineFeaturesRequest {
    lookup(vec!["u1".into()], &["scores:score"])
}

/// A lookup that waits (up to `ms`) for a watermark the shard will not reach.
fn held_lookup(ms: u32) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        min_watermarks: vec![ShardWatermark {
            shard: 0,
            offsets: vec![TopicOffset {
                topic: "scores".into(),
                next_offset: 1 << 40,
            }],
        }],
        watermark_wait_ms: ms,
        ..lookup(vec!["held".into()], &["scores:score"])
    }
}

fn row(key: &str, name: &str, kind: Kind) -> PushRow {
    PushRow {
        entity_key: Some(key.into()),
        event_time_micros: 0,
        features: [(name.to_owned(), Value { kind: Some(kind) })].into(),
        delete: false,
    }
}

fn push(rows: Vec<PushRow>) -> PushRequest {
    PushRequest {
        view: "scores".into(),
        rows,
    }
}

async fn expect_err<T: std::fmt::Debug>(
    r: impl std::future::Future<Output = Result<T, tonic::Status>>,
    code: Code,
    needle: &str,
) {
    let e = r.await.expect_err(needle);
    assert_eq!(e.code(), code, "{needle}: {e:?}");
    assert!(
        e.message().contains(needle),
        "{:?} should name {needle:?}",
        e.message()
    );
}

struct Clients {
    node: SecureNode,
}

impl Clients {
    fn features(&self, token: &str) -> FeatureServiceClient<AuthChannel> {
        FeatureServiceClient::new(self.node.channel(&self.node.creds(Some(token))))
    }

    async fn still_serving(&self) {
        self.features(BOOTSTRAP)
            .get_online_features(ok_lookup())
            .await
            .expect("a well-behaved client is served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_triggers_its_error_and_the_node_keeps_serving() {
    let node = SecureNode::start(|f, _| {
        let l = &mut f.limits;
        l.max_batch_keys = 10;
        l.max_features_per_request = 3;
        l.max_request_bytes = 4096;
        l.max_key_bytes = 64;
        l.max_string_bytes = 32;
        l.max_vector_len = 4;
        l.max_push_rows = 5;
        l.max_concurrent_requests_per_connection = 4;
        l.max_inflight_requests = 8;
        l.max_push_rows_per_second = 5;
        l.max_watermark_wait = Duration::from_secs(3);
    })
    .await;
    let c = Clients { node };
    let mut f = c.features(BOOTSTRAP);

    // Request-shape limits: INVALID_ARGUMENT naming the limit, nothing done.
    let keys = |n: usize| {
        (0..n)
            .map(|i| EntityKey::from(format!("k{i}")))
            .collect::<Vec<_>>()
    };
    expect_err(
        f.get_online_features(lookup(keys(11), &["scores:score"])),
        Code::InvalidArgument,
        "max_batch_keys",
    )
    .await;
    expect_err(
        f.get_online_features(lookup(
            keys(1),
            &["scores:score", "scores:tag", "scores:emb", "scores:score"],
        )),
        Code::InvalidArgument,
        "max_features_per_request",
    )
    .await;
    expect_err(
        f.get_online_features(lookup(keys(1), &["scores:*", "scores:score"])),
        Code::InvalidArgument,
        "max_features_per_request",
    )
    .await;
    expect_err(
        f.get_online_features(lookup(vec!["x".repeat(65).into()], &["scores:score"])),
        Code::InvalidArgument,
        "max_key_bytes",
    )
    .await;
    let big = lookup(keys(1), &[&format!("scores:{}", "f".repeat(5000))]);
    expect_err(
        f.get_online_features(big),
        Code::InvalidArgument,
        "max_request_bytes",
    )
    .await;
    expect_err(
        f.push(push(vec![row(
            "u",
            "tag",
            Kind::StringValue("s".repeat(33)),
        )])),
        Code::InvalidArgument,
        "max_string_bytes",
    )
    .await;
    expect_err(
        f.push(push(vec![row(
            "u",
            "emb",
            Kind::Float32Vector(FloatVector {
                values: vec![0.0; 5],
            }),
        )])),
        Code::InvalidArgument,
        "max_vector_len",
    )
    .await;
    expect_err(
        f.push(push(vec![row(
            &"k".repeat(65),
            "score",
            Kind::Int64Value(1),
        )])),
        Code::InvalidArgument,
        "max_key_bytes",
    )
    .await;
    expect_err(
        f.push(push(
            (0..6)
                .map(|i| row(&format!("u{i}"), "score", Kind::Int64Value(1)))
                .collect(),
        )),
        Code::InvalidArgument,
        "max_push_rows",
    )
    .await;
    c.still_serving().await;

    // Pushed rows per second per token (5): rows are counted, not requests; a push the
    // grant refuses spends nothing; one writer's quota is not another's.
    let mut admin = quiver_proto::v1::admin_service_client::AdminServiceClient::new(
        c.node.channel(&c.node.creds(Some(BOOTSTRAP))),
    );
    let mut writers = Vec::new();
    for (name, views) in [
        ("fast", vec![]),
        ("calm", vec![]),
        ("narrow", vec!["secret".to_owned()]),
    ] {
        let t = admin
            .create_token(CreateTokenRequest {
                name: name.into(),
                role: "writer".into(),
                views,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        writers.push(t);
    }
    let rows = |n: i64| -> Vec<PushRow> {
        (0..n)
            .map(|i| row(&format!("p{i}"), "score", Kind::Int64Value(i)))
            .collect()
    };
    let mut fast = c.features(&writers[0].token);
    fast.push(push(rows(4))).await.expect("4 of 5 rows");
    // One request, but 2 rows where 1 is left: refused whole, naming the quota, the
    // principal and when the rows fit.
    let e = fast.push(push(rows(2))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("max_push_rows_per_second")
            && e.message().contains(&writers[0].id)
            && e.message().contains("ms, retry"),
        "{e:?}"
    );
    c.features(&writers[1].token)
        .push(push(rows(5)))
        .await
        .expect("another token's quota is its own");
    let mut narrow = c.features(&writers[2].token);
    for _ in 0..10 {
        let e = narrow.push(push(rows(1))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    narrow
        .push(PushRequest {
            view: "secret".into(),
            rows: (0..5)
                .map(|i| row(&format!("s{i}"), "ssn", Kind::StringValue("x".into())))
                .collect(),
        })
        .await
        .expect("refused pushes spent none of the quota");

    // Concurrent requests per connection: one connection floods with held lookups; the
    // excess is refused at once, and another connection is served meanwhile.
    let flood = c.features(BOOTSTRAP);
    let holders: Vec<_> = (0..10)
        .map(|_| {
            let mut f = flood.clone();
            tokio::spawn(async move { f.get_online_features(held_lookup(2500)).await })
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    for h in holders {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(h.await.unwrap()).await;
        });
    }
    drop(tx);
    let first = rx
        .recv()
        .await
        .unwrap()
        .expect_err("the first answer is a refusal");
    assert_eq!(first.code(), Code::ResourceExhausted, "{first:?}");
    assert!(
        first
            .message()
            .contains("Too many active requests for the connection"),
        "{first:?}"
    );
    c.still_serving().await;
    let mut refused = 1;
    let mut behind = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Err(e) if e.code() == Code::ResourceExhausted => refused += 1,
            Err(e) if e.code() == Code::Unavailable => behind += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (refused, behind),
        (6, 4),
        "4 held on the connection, 6 refused"
    );

    // Requests in flight on the node: three connections of four held lookups exceed 8.
    let conns: Vec<_> = (0..3).map(|_| c.features(BOOTSTRAP)).collect();
    let mut calls = Vec::new();
    for conn in &conns {
        for _ in 0..4 {
            let mut f = conn.clone();
            calls.push(async move { f.get_online_features(held_lookup(1500)).await });
        }
    }
    let probe = async {
        // The health service answers even while the node sheds.
        let mut h =
            tonic_health::pb::health_client::HealthClient::new(c.node.channel(&c.node.creds(None)));
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
    };
    let (results, health) = tokio::join!(join_all(calls), probe);
    health.expect("health answers");
    let shed: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.code() == Code::ResourceExhausted)
        .collect();
    assert_eq!(shed.len(), 4, "{results:?}");
    assert!(
        shed.iter()
            .all(|e| e.message().contains("max_inflight_requests")),
        "{shed:?}"
    );
    c.still_serving().await;
    c.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lookup_queue_sheds_with_resource_exhausted() {
    let node = SecureNode::start(|f, _| {
        f.limits.max_concurrent_lookups = 1;
        f.limits.max_queued_lookups = 0;
    })
    .await;
    let c = Clients { node };
    let keys: Vec<EntityKey> = (0..500).map(|i| EntityKey::from(format!("k{i}"))).collect();
    let mut shed = None;
    for _round in 0..20 {
        let calls = (0..64).map(|_| {
            let mut f = c.features(BOOTSTRAP);
            let req = lookup(keys.clone(), &["scores:*"]);
            async move { f.get_online_features(req).await }
        });
        let results = join_all(calls).await;
        for r in results {
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Code::ResourceExhausted => shed = Some(e),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        if shed.is_some() {
            break;
        }
    }
    let e = shed.expect("64 concurrent lookups over one permit and no queue shed some");
    assert!(e.message().contains("max_queued_lookups"), "{e:?}");
    c.still_serving().await;
    c.node.stop().await;
}
