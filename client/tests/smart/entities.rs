//! A feature service spanning two entities (a user's and a merchant's features for one
//! transaction), read with keys per entity: the smart client splits it per entity (each
//! part sharded and fanned out on its own) and joins the answer in the service's order.

use std::time::Duration;

use quiver_client::{ClientError, FeatureStatus, Lookup, PushRow};

use crate::inprocess::InProcessCluster;

const VIEWS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[entity]]
name = "merchant"
key_type = "int64"
[[view]]
name = "user_stats"
entity = "user"
[view.source]
topic = "users"
[[view.feature]]
name = "spend"
type = "float64"
[[view.feature]]
name = "txns"
type = "int64"
[[view]]
name = "merchant_stats"
entity = "merchant"
[view.source]
topic = "merchants"
[[view.feature]]
name = "risk"
type = "float64"
[[feature_service]]
name = "fraud"
features = ["user_stats:spend", "merchant_stats:risk", "user_stats:txns"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_two_entities_is_read_with_keys_per_entity() {
    let cluster = InProcessCluster::start(3, 4, 2, "murmur2", &["users", "merchants"], VIEWS).await;
    let client = cluster.client().await;
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let mut wm = client
        .push(
            "user_stats",
            users.iter().enumerate().map(|(i, u)| {
                PushRow::new(u.as_str())
                    .set("spend", i as f64 * 1.5)
                    .set("txns", i as i64)
            }),
        )
        .await
        .unwrap();
    wm.merge(
        &client
            .push(
                "merchant_stats",
                (0..30i64).map(|m| PushRow::new(m).set("risk", m as f64 / 100.0)),
            )
            .await
            .unwrap(),
    );
    // Row i: user u{i}, merchant 29 - i; the last row's merchant does not exist.
    let merchants: Vec<i64> = (0..30)
        .map(|i| if i == 29 { 999 } else { 29 - i })
        .collect();
    let lookup = Lookup::feature_service("fraud")
        .entity_keys_of("user", users.iter().cloned())
        .entity_keys_of("merchant", merchants.clone())
        .min_watermarks(&wm)
        .deadline(Duration::from_secs(10));
    let r = client.get_online_features(&lookup).await.unwrap();
    let names: Vec<&str> = r.feature_names().collect();
    assert_eq!(
        names,
        ["user_stats:spend", "merchant_stats:risk", "user_stats:txns"]
    );
    assert_eq!(r.row_count(), 30);
    for (i, merchant) in merchants.iter().enumerate() {
        assert_eq!(r.f64(i, 0), Some(i as f64 * 1.5), "row {i}");
        assert_eq!(r.i64(i, 2), Some(i as i64), "row {i}");
        if i == 29 {
            assert_eq!(r.status(i, 1), FeatureStatus::NotFound);
        } else {
            assert_eq!(r.f64(i, 1), Some(*merchant as f64 / 100.0), "row {i}");
        }
    }
    // The answer's watermarks cover both entities' shards.
    for (shard, topic, offset) in wm.iter() {
        let got = r
            .watermarks()
            .shard(shard)
            .and_then(|o| o.get(topic))
            .copied();
        assert!(
            got.is_some_and(|g| g >= offset),
            "shard {shard} {topic}: read at {got:?}, pushed up to {offset}"
        );
    }

    // Explicit references across entities work the same way.
    let r = client
        .get_online_features(
            &Lookup::features(["merchant_stats:*", "user_stats:spend"])
                .entity_keys_of("merchant", [3i64])
                .entity_keys_of("user", ["u7"])
                .min_watermarks(&wm),
        )
        .await
        .unwrap();
    assert_eq!(r.f64(0, 0), Some(0.03));
    assert_eq!(r.f64(0, 1), Some(7.0 * 1.5));

    // Keys of one entity for a two-entity service: refused before sending, saying why.
    let before = client.stats().sub_requests;
    match client
        .get_online_features(&Lookup::feature_service("fraud").keys(["u1"]))
        .await
    {
        Err(ClientError::InvalidRequest(m)) => {
            assert!(m.contains("must share an entity"), "{m}")
        }
        other => panic!("one entity's keys for a two-entity service: {other:?}"),
    }
    match client
        .get_online_features(
            &Lookup::feature_service("fraud")
                .entity_keys_of("user", ["u1", "u2"])
                .entity_keys_of("merchant", [1i64]),
        )
        .await
    {
        Err(ClientError::InvalidRequest(m)) => {
            assert!(m.contains("every entity needs one key per row"), "{m}")
        }
        other => panic!("ragged entity keys: {other:?}"),
    }
    match client
        .get_online_features(&Lookup::feature_service("fraud").entity_keys_of("user", ["u1"]))
        .await
    {
        Err(ClientError::InvalidRequest(m)) => {
            assert!(m.contains("entity \"merchant\", which has no keys"), "{m}")
        }
        other => panic!("a missing entity: {other:?}"),
    }
    match client
        .get_online_features(
            &Lookup::feature_service("fraud")
                .entity_keys_of("user", ["u1"])
                .entity_keys_of("merchant", ["not-an-int"]),
        )
        .await
    {
        Err(ClientError::InvalidRequest(m)) => assert!(m.contains("int64"), "{m}"),
        other => panic!("a string key for an int64 entity: {other:?}"),
    }
    assert_eq!(
        client.stats().sub_requests,
        before,
        "bad lookups send nothing"
    );
    cluster.stop().await;
}
