//! A long-lived client follows the registry: after a feature is retyped (a new view
//! version, built and promoted while the client runs), pushes of the new type go through
//! and reads return it, without restarting the client; the old type is then refused.

use std::time::{Duration, Instant};

use quiver_client::{ClientError, Lookup, PushRow};

use crate::inprocess::InProcessCluster;

fn views(version: u32, score_type: &str) -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_type = "string"
[[view]]
name = "profile"
version = {version}
entity = "user"
[view.source]
topic = "profile"
[[view.feature]]
name = "score"
type = "{score_type}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_client_follows_a_retyped_feature() {
    let cluster =
        InProcessCluster::start(1, 2, 1, "murmur2", &["profile"], &views(1, "float64")).await;
    let client = cluster.client().await;
    client
        .push("profile", [PushRow::new("u1").set("score", 0.5)])
        .await
        .unwrap();

    let mut admin = cluster.node_client(0).await;
    admin
        .apply_definitions(views(2, "int64"), false)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let described = admin.describe_view("profile").await.unwrap();
        // The serving definition (a pending one is listed under "pending").
        let v: serde_json::Value = serde_json::from_str(&described).unwrap();
        if v["version"] == 2 && v["features"][0]["value_type"] == "int64" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 2 was never promoted: {described}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A lookup answered on the new registry: the client's schema follows it before the
    // next request is checked (no refused request needed to notice).
    client
        .get_online_features(&Lookup::features(["profile:score"]).keys(["u1"]))
        .await
        .unwrap();
    let schema = client.push_schema("profile").await.unwrap();
    assert_eq!(
        schema.fields,
        vec![("score".to_string(), "int64".to_string())],
        "the cached schema followed the registry"
    );
    // The client's schema says int64 now: the push goes through.
    let wm = client
        .push("profile", [PushRow::new("u1").set("score", 7i64)])
        .await
        .unwrap();
    let r = client
        .get_online_features(
            &Lookup::features(["profile:score"])
                .keys(["u1"])
                .min_watermarks(&wm),
        )
        .await
        .unwrap();
    assert_eq!(r.i64(0, 0), Some(7));
    // And the old type is refused now, naming the declared one.
    match client
        .push("profile", [PushRow::new("u1").set("score", 0.25)])
        .await
    {
        Err(ClientError::InvalidRequest(m)) => assert!(m.contains("declares int64"), "{m}"),
        other => panic!("a float64 score after the retype: {other:?}"),
    }
    cluster.stop().await;
}
