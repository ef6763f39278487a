//! Per-principal lookup quotas: a token's own quota and its role's (`[quotas]`), keys and
//! requests counted after the grant check, refused with `quota_exhausted` naming the quota
//! and a retry hint, one principal's quota never touching another's.

use std::time::Duration;

use quiver_proto::ErrorCode;
use quiver_proto::transport::AuthChannel;
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::*;
use tonic::Code;

use super::{BOOTSTRAP, SecureNode};

fn lookup(n: usize, features: &[&str]) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        entity_keys: (0..n).map(|i| format!("k{i}").into()).collect(),
        ..Default::default()
    }
}

async fn token(
    node: &SecureNode,
    name: &str,
    views: &[&str],
    keys: Option<u32>,
    requests: Option<u32>,
) -> FeatureServiceClient<AuthChannel> {
    let mut admin = AdminServiceClient::new(node.channel(&node.creds(Some(BOOTSTRAP))));
    let t = admin
        .create_token(CreateTokenRequest {
            name: name.into(),
            role: "reader".into(),
            views: views.iter().map(|v| (*v).to_owned()).collect(),
            lookup_keys_per_second: keys,
            lookups_per_second: requests,
        })
        .await
        .unwrap()
        .into_inner();
    FeatureServiceClient::new(node.channel(&node.creds(Some(&t.token))))
}

fn quota_error(s: &tonic::Status, needle: &str) {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        ErrorCode::from_status(s),
        Some(ErrorCode::QuotaExhausted),
        "{s:?}"
    );
    assert!(s.message().contains(needle), "{s:?}");
    let wait = quiver_proto::error::retry_after_from_status(s).expect("a retry hint");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_quotas_per_token_and_role() {
    // Readers get 50 keys per second by role; tokens may carry their own quota.
    let node = SecureNode::start(|f, _| f.quotas.reader.keys_per_second = 50).await;

    // A token's own key quota (20 keys/s on a one-member cluster: the whole share).
    let mut keyed = token(&node, "keyed", &[], Some(20), None).await;
    for _ in 0..2 {
        keyed
            .get_online_features(lookup(10, &["scores:score"]))
            .await
            .unwrap();
    }
    let e = keyed
        .get_online_features(lookup(10, &["scores:score"]))
        .await
        .unwrap_err();
    quota_error(&e, "20 keys per second");
    // Larger than the whole quota: never admitted, so not worth a retry.
    let e = keyed
        .get_online_features(lookup(21, &["scores:score"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A token's own request quota, and one the grant refuses spends nothing.
    let mut narrow = token(&node, "narrow", &["secret"], None, Some(3)).await;
    for _ in 0..5 {
        let e = narrow
            .get_online_features(lookup(1, &["scores:score"]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    for _ in 0..3 {
        narrow
            .get_online_features(lookup(1, &["secret:ssn"]))
            .await
            .unwrap();
    }
    let e = narrow
        .get_online_features(lookup(1, &["secret:ssn"]))
        .await
        .unwrap_err();
    quota_error(&e, "3 requests per second");

    // Another principal: untouched by both, held to its role's quota.
    let mut other = token(&node, "other", &[], None, None).await;
    // Large lookups, so the refill between them (50 keys/s) cannot decide the outcome on
    // a slow machine: the third needs 500 ms of refill.
    for _ in 0..2 {
        other
            .get_online_features(lookup(25, &["scores:score"]))
            .await
            .unwrap();
    }
    let e = other
        .get_online_features(lookup(25, &["scores:score"]))
        .await
        .unwrap_err();
    quota_error(&e, "50 keys per second");
    // Buckets refill with time (20 keys/s: 12 after 600 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    keyed
        .get_online_features(lookup(10, &["scores:score"]))
        .await
        .unwrap();
    node.stop().await;
}
