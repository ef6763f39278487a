//! View versions: an incompatible change applied as a new version is re-ingested from the
//! topic's start into its own key space while the old version serves, then promoted.

use std::time::Duration;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{ApplyDefinitionsRequest, DescribeViewRequest, ListViewsRequest};
use serde_json::json;

use crate::harness::{Kafka, TestNode, config, eventually};
use crate::ingest::{key, now_ms};

/// Version 1 of view `stats` (shared by the version lifecycle tests).
pub(crate) const V1: &str = r#"
[[entity]]
name = "player"
key_type = "string"
[[view]]
name = "stats"
entity = "player"
version = 1
[view.source]
topic = "events"
event_time_field = "ts"
[[view.feature]]
name = "level"
type = "int64"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_reingested_while_the_old_serves_then_promoted() {
    let kafka = Kafka::new(&[("events", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, V1)).await;
    let t = now_ms();
    for i in 0..80 {
        kafka
            .send_json(
                "events",
                &format!("p{i}"),
                json!({"ts": t + i, "level": i, "tier": format!("gold-{i}")}),
            )
            .await;
    }
    node.wait_consumed("events", 80).await;

    // Same version, incompatible: rejected with a pointer to versions.
    let v1_string = V1.replace(
        "type = \"int64\"",
        "type = \"string\"\nsource_field = \"tier\"",
    );
    let mut admin = node.admin.clone();
    let err = admin
        .apply_definitions(ApplyDefinitionsRequest {
            toml: v1_string.clone(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("apply it as a new view version"),
        "{}",
        err.message()
    );

    // As version 2: accepted and built from the topic's start.
    let v2 = v1_string.replace("version = 1", "version = 2");
    let changes = admin
        .apply_definitions(ApplyDefinitionsRequest {
            toml: v2,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert!(
        changes.iter().any(|c| c.contains("stats v2: building")),
        "{changes:?}"
    );

    eventually(Duration::from_secs(30), "version 2 promoted", || async {
        let views = node
            .admin
            .clone()
            .list_views(ListViewsRequest {})
            .await
            .ok()?
            .into_inner();
        (views.views.iter().find(|v| v.name == "stats")?.version == 2).then_some(())
    })
    .await;
    // Every record produced before the new version existed was re-ingested into it.
    let keys = (0..80).map(|i| key(&format!("p{i}"))).collect();
    let col = node
        .lookup(&["stats:level"], keys)
        .await
        .unwrap()
        .columns
        .remove(0);
    for i in 0..80 {
        assert_eq!(
            col.values[i].kind,
            Some(Kind::StringValue(format!("gold-{i}"))),
            "p{i}"
        );
    }
    // New records flow into the promoted version.
    kafka
        .send_json(
            "events",
            "p-new",
            json!({"ts": t + 1000, "level": 1, "tier": "silver"}),
        )
        .await;
    node.wait_consumed("events", 81).await;
    let col = node
        .lookup(&["stats:level"], vec![key("p-new")])
        .await
        .unwrap()
        .columns
        .remove(0);
    assert_eq!(col.values[0].kind, Some(Kind::StringValue("silver".into())));
    let described = admin
        .describe_view(DescribeViewRequest {
            name: "stats".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        described.definition_json.contains("\"version\": 2"),
        "{}",
        described.definition_json
    );
    // Older versions are refused.
    let err = admin
        .apply_definitions(ApplyDefinitionsRequest {
            toml: V1.into(),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("version 1 is retained"),
        "{}",
        err.message()
    );

    // A brand-new view on the already-consumed topic is backfilled before it serves.
    let other = "[[view]]\nname = \"tiers\"\nentity = \"player\"\n[view.source]\ntopic = \"events\"\nevent_time_field = \"ts\"\n[[view.feature]]\nname = \"tier\"\ntype = \"string\"\n";
    let changes = admin
        .apply_definitions(ApplyDefinitionsRequest {
            toml: other.into(),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert!(
        changes.iter().any(|c| c.contains("tiers v1: building")),
        "{changes:?}"
    );
    eventually(
        Duration::from_secs(30),
        "new view backfilled and serving",
        || async {
            let resp = node
                .lookup(&["tiers:tier"], vec![key("p0"), key("p79")])
                .await
                .ok()?;
            let col = &resp.columns[0];
            (col.values[0].kind == Some(Kind::StringValue("gold-0".into()))
                && col.values[1].kind == Some(Kind::StringValue("gold-79".into())))
            .then_some(())
        },
    )
    .await;
    node.stop().await;
}
