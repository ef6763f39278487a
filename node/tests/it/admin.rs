//! Registry changes through the admin RPC.

use quiver_proto::v1::{ApplyDefinitionsRequest, DescribeViewRequest, ListViewsRequest};
use serde_json::json;
use tonic::Code;

use crate::harness::{Kafka, TestNode, config};
use crate::ingest::{DEFS, key};

const NEW_VIEW: &str = r#"
[[view]]
name = "sessions"
entity = "user"
[view.source]
topic = "sessions"
[[view.feature]]
name = "n"
type = "int64"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_validates_checks_partitions_and_starts_ingesting() {
    let kafka = Kafka::new(&[("profile", 4), ("cards", 4), ("wrong", 3)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let mut admin = node.admin.clone();
    let apply = |toml: &str, dry_run: bool| ApplyDefinitionsRequest {
        toml: toml.into(),
        dry_run,
    };

    let err = admin
        .apply_definitions(apply("[[view]]\nname = 1", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .apply_definitions(apply(&NEW_VIEW.replace("int64", "decimal"), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"decimal\""), "{}", err.message());
    let err = admin
        .apply_definitions(apply(
            &NEW_VIEW.replace("topic = \"sessions\"", "topic = \"wrong\""),
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("3 partitions"), "{}", err.message());
    let err = admin
        .apply_definitions(apply(NEW_VIEW, false))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "topic does not exist yet: {}",
        err.message()
    );
    let list = admin
        .list_views(ListViewsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.views.len(), 2, "rejected changes changed nothing");

    kafka.mock.create_topic("sessions", 4, 1).unwrap();
    let changes = admin
        .apply_definitions(apply(NEW_VIEW, true))
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(changes, ["view sessions v1: created"]);
    assert_eq!(
        admin
            .list_views(ListViewsRequest {})
            .await
            .unwrap()
            .into_inner()
            .views
            .len(),
        2,
        "dry run"
    );
    admin
        .apply_definitions(apply(NEW_VIEW, false))
        .await
        .unwrap();
    let described = admin
        .describe_view(DescribeViewRequest {
            name: "sessions".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        described
            .definition_json
            .contains("\"topic\": \"sessions\""),
        "{}",
        described.definition_json
    );

    // The new topic is consumed without a restart.
    kafka.send_json("sessions", "u", json!({"n": 5})).await;
    node.wait_consumed("sessions", 1).await;
    let col = node
        .lookup(&["sessions:n"], vec![key("u")])
        .await
        .unwrap()
        .columns
        .remove(0);
    assert_eq!(
        col.values[0].kind,
        Some(quiver_proto::v1::value::Kind::Int64Value(5))
    );
    node.stop().await;

    // The registry survives a restart.
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let list = node
        .admin
        .clone()
        .list_views(ListViewsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.views.len(), 3);
    node.stop().await;
}
