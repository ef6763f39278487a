//! The read path's contract: limits and bad requests, watermarks, health and reflection.

use std::time::{Duration, Instant};

use quiver_proto::v1::{EntityKey, GetOnlineFeaturesRequest, ShardWatermark, TopicOffset};
use quiver_proto::{ErrorCode, Partitioner};
use serde_json::json;
use tonic::Code;

use crate::harness::{Kafka, TestNode, config};
use crate::ingest::{DEFS, key, now_ms};

async fn expect_error(node: &TestNode, req: GetOnlineFeaturesRequest, code: Code, needle: &str) {
    let err = node
        .features
        .clone()
        .get_online_features(req)
        .await
        .expect_err("request must be rejected");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(
        err.message().contains(needle),
        "message {:?} should mention {needle:?}",
        err.message()
    );
    assert!(
        ErrorCode::from_status(&err).is_some(),
        "errors carry the quiver error code"
    );
}

/// A lookup whose feature references are arbitrary bytes (a caller's encoder need not
/// be ours), sent as `GetOnlineFeatures`.
async fn raw_lookup(
    node: &TestNode,
    features: Vec<Vec<u8>>,
) -> Result<quiver_proto::v1::GetOnlineFeaturesResponse, tonic::Status> {
    let request = quiver_proto::lookup_request::LookupRequest {
        features: features.into_iter().collect(),
        entity_keys: vec![key("a")],
        ..Default::default()
    };
    let mut grpc = tonic::client::Grpc::new(node.channel.clone());
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<
        quiver_proto::lookup_request::LookupRequest,
        quiver_proto::v1::GetOnlineFeaturesResponse,
    >::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/quiver.v1.FeatureService/GetOnlineFeatures",
    );
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

fn req(features: &[&str], keys: Vec<EntityKey>) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: features.iter().map(|s| s.to_string()).collect(),
        entity_keys: keys,
        // The per-cell form: these checks read `columns`.
        encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_requests_are_rejected_with_clear_codes() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, DEFS);
    cfg.limits.max_batch_keys = 10;
    cfg.limits.max_features_per_request = 5;
    cfg.limits.max_request_bytes = 2000;
    let node = TestNode::start(cfg).await;
    kafka
        .send_json("profile", "a", json!({"ts": now_ms(), "i": 1}))
        .await;
    node.wait_consumed("profile", 1).await;

    let many: Vec<EntityKey> = (0..11).map(|i| key(&format!("k{i}"))).collect();
    expect_error(
        &node,
        req(&["profile:i"], many),
        Code::InvalidArgument,
        "max_batch_keys = 10",
    )
    .await;
    expect_error(
        &node,
        req(&["profile:*"], vec![key("a")]),
        Code::InvalidArgument,
        "max_features_per_request = 5",
    )
    .await;
    let big = vec![
        key(&"x".repeat(900)),
        key(&"y".repeat(900)),
        key(&"z".repeat(900)),
    ];
    expect_error(
        &node,
        req(&["profile:i"], big),
        Code::InvalidArgument,
        "max_request_bytes = 2000",
    )
    .await;
    expect_error(
        &node,
        req(&["nope:i"], vec![key("a")]),
        Code::NotFound,
        "view \"nope\" is not registered",
    )
    .await;
    expect_error(
        &node,
        req(&["profile:nope"], vec![key("a")]),
        Code::NotFound,
        "has no feature \"nope\"",
    )
    .await;
    expect_error(
        &node,
        req(&["profile"], vec![key("a")]),
        Code::InvalidArgument,
        "must look like",
    )
    .await;
    expect_error(
        &node,
        req(&["profile:i"], vec![EntityKey::from(7i64)]),
        Code::InvalidArgument,
        "entity_keys[0] is int64",
    )
    .await;
    expect_error(
        &node,
        req(&["profile:i"], vec![EntityKey { kind: None }]),
        Code::InvalidArgument,
        "entity_keys[0] has no value",
    )
    .await;
    expect_error(
        &node,
        req(&[], vec![key("a")]),
        Code::InvalidArgument,
        "names no features",
    )
    .await;
    expect_error(
        &node,
        req(&["profile:i", "card_pb:amount"], vec![key("a")]),
        Code::InvalidArgument,
        "share an entity",
    )
    .await;
    let svc = GetOnlineFeaturesRequest {
        feature_service: "ghost".into(),
        entity_keys: vec![key("a")],
        // The per-cell form: these checks read `columns`.
        encoding: quiver_proto::v1::ResponseEncoding::Cells as i32,
        ..Default::default()
    };
    expect_error(&node, svc, Code::NotFound, "feature service \"ghost\"").await;
    let both = GetOnlineFeaturesRequest {
        feature_service: "svc".into(),
        ..req(&["profile:i"], vec![key("a")])
    };
    expect_error(&node, both, Code::InvalidArgument, "not both").await;

    // A reference that is not UTF-8 (the node decodes references as bytes and checks
    // them when it plans): INVALID_ARGUMENT naming it, like any malformed reference.
    let raw = raw_lookup(&node, vec![b"profile:i".to_vec(), b"profile:\xff".to_vec()])
        .await
        .expect_err("not UTF-8");
    assert_eq!(raw.code(), Code::InvalidArgument, "{}", raw.message());
    assert!(
        raw.message().contains("feature reference 1 is not UTF-8"),
        "{}",
        raw.message()
    );
    // A zstd-compressed request is decoded like a plain one.
    let compressed = node
        .features
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Zstd)
        .get_online_features(req(&["profile:i"], vec![key("a")]))
        .await
        .expect("a compressed request answers")
        .into_inner();
    assert_eq!(
        compressed.columns[0].values[0].kind,
        Some(quiver_proto::v1::value::Kind::Int64Value(1))
    );

    // Rejections changed nothing: a valid request still answers.
    let resp = node.lookup(&["profile:i"], vec![key("a")]).await.unwrap();
    assert_eq!(
        resp.columns[0].values[0].kind,
        Some(quiver_proto::v1::value::Kind::Int64Value(1))
    );
    // An empty batch is malformed, like the smart client says before sending it.
    expect_error(
        &node,
        req(&["profile:i"], vec![]),
        Code::InvalidArgument,
        "no entity keys",
    )
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_watermarks_wait_or_answer_behind() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &kafka.bootstrap, 4, DEFS);
    cfg.limits.max_watermark_wait = Duration::from_millis(300);
    let node = TestNode::start(cfg).await;
    let (partition, offset) = kafka
        .send_json("profile", "a", json!({"ts": now_ms(), "i": 1}))
        .await;
    assert_eq!(
        partition as u32,
        Partitioner::Murmur2.shard_for_key(b"a", 4).0
    );
    // Asking for the record just produced (next offset = offset + 1) waits until applied.
    let mut r = req(&["profile:i"], vec![key("a")]);
    r.min_watermarks = vec![ShardWatermark {
        shard: partition as u32,
        offsets: vec![TopicOffset {
            topic: "profile".into(),
            next_offset: offset + 1,
        }],
    }];
    let resp = node.features.clone().get_online_features(r.clone()).await;
    // Either it was applied within the wait, or the replica says it is behind; never stale.
    match resp {
        Ok(resp) => assert_eq!(
            resp.into_inner().columns[0].values[0].kind,
            Some(quiver_proto::v1::value::Kind::Int64Value(1))
        ),
        Err(e) => assert_eq!(ErrorCode::from_status(&e), Some(ErrorCode::Behind)),
    }
    node.wait_consumed("profile", 1).await;
    // A watermark the replica cannot reach is answered with BEHIND (retryable) in bounded time.
    r.min_watermarks[0].offsets[0].next_offset = offset + 100;
    let started = std::time::Instant::now();
    let err = node
        .features
        .clone()
        .get_online_features(r)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(ErrorCode::from_status(&err), Some(ErrorCode::Behind));
    assert!(ErrorCode::Behind.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_reflection_listing() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let mut health = HealthClient::new(node.channel.clone());
    for service in ["quiver.v1.FeatureService", "quiver.v1.AdminService", ""] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
    let mut reflection = ServerReflectionClient::new(node.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "quiver.v1.FeatureService",
        "quiver.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    node.stop().await;
}

/// Readiness (`quiver.v1.Readiness`) follows catch-up; liveness does not. With the broker
/// unreachable the node serves (stored data) but is not ready; with it, it becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_served_only_once_replicas_are_caught_up() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    async fn status(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
        health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1)
    }

    // No broker listens on port 1: nothing can be caught up.
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), "127.0.0.1:1", 4, DEFS)).await;
    let mut health = HealthClient::new(node.channel.clone());
    // Several readiness cycles (every 500 ms): never ready, always live.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            status(&mut health, "quiver.v1.Readiness").await,
            ServingStatus::NotServing as i32,
            "ready without a reachable broker"
        );
        assert_eq!(
            status(&mut health, "quiver.v1.FeatureService").await,
            ServingStatus::Serving as i32
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop().await;

    // With the broker: ready once every replica reached the end of its partitions.
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let mut health = HealthClient::new(node.channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&mut health, "quiver.v1.Readiness").await != ServingStatus::Serving as i32 {
        assert!(Instant::now() < deadline, "not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
}
