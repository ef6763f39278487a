//! The PACKED encoding says exactly what the per-cell form says — every feature type,
//! nulls, EXPIRED, NOT_FOUND, deleted rows, several views in one request, a feature named
//! twice, `view:*`, a feature service — and the plan cache never serves a stale plan.

use std::time::Duration;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    FeatureStatus, FeatureType, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
    ResponseEncoding,
};
use quiver_testkit::values::{FEATURE_TYPES, NanBits, ValueGen, same_bits};
use serde_json::json;

use crate::harness::{Kafka, TestNode, config, eventually};
use crate::ingest::{key, now_ms};

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "all"
entity = "user"
ttl = "1h"
[view.source]
topic = "all"
event_time_field = "ts"
[[view.feature]]
name = "bool"
type = "bool"
[[view.feature]]
name = "int64"
type = "int64"
[[view.feature]]
name = "float64"
type = "float64"
[[view.feature]]
name = "string"
type = "string"
[[view.feature]]
name = "bytes"
type = "bytes"
[[view.feature]]
name = "float32_vector"
type = "float32_vector"
[[view.feature]]
name = "int64_list"
type = "int64_list"
[[view.feature]]
name = "float64_list"
type = "float64_list"
[[view.feature]]
name = "string_list"
type = "string_list"

[[view]]
name = "more"
entity = "user"
[view.source]
topic = "more"
event_time_field = "ts"
[[view.feature]]
name = "x"
type = "int64"
[[view.feature]]
name = "y"
type = "string"

[[feature_service]]
name = "svc"
features = ["more:y", "all:float32_vector", "all:int64"]
"#;

/// A JSON record value for `k` (non-finite floats as their string spellings).
fn json_value(k: &Kind) -> serde_json::Value {
    use base64::Engine as _;
    let float = |f: f64| {
        serde_json::Number::from_f64(f).map_or_else(
            || json!(quiver_proto::json_number::f64_text(f).trim_matches('"')),
            serde_json::Value::Number,
        )
    };
    match k {
        Kind::BoolValue(b) => json!(b),
        Kind::Int64Value(i) => json!(i),
        Kind::Float64Value(f) => float(*f),
        Kind::StringValue(s) => json!(s),
        Kind::BytesValue(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Kind::Float32Vector(v) => v.values.iter().map(|f| float(f64::from(*f))).collect(),
        Kind::Int64List(v) => json!(v.values),
        Kind::Float64List(v) => v.values.iter().map(|f| float(*f)).collect(),
        Kind::StringList(v) => json!(v.values),
    }
}

async fn lookup(
    node: &TestNode,
    features: &[&str],
    service: &str,
    keys: &[String],
    encoding: ResponseEncoding,
) -> GetOnlineFeaturesResponse {
    node.features
        .clone()
        .get_online_features(GetOnlineFeaturesRequest {
            features: features.iter().map(|s| s.to_string()).collect(),
            feature_service: service.to_owned(),
            entity_keys: keys.iter().map(|k| key(k)).collect(),
            encoding: encoding as i32,
            include_event_times: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The packed and the per-cell answers to the same request agree cell by cell.
async fn assert_same_answers(node: &TestNode, features: &[&str], service: &str, keys: &[String]) {
    let packed = lookup(node, features, service, keys, ResponseEncoding::Packed).await;
    let cells = lookup(node, features, service, keys, ResponseEncoding::Cells).await;
    assert!(packed.columns.is_empty() && cells.packed_columns.is_empty());
    assert_eq!(packed.row_count as usize, keys.len());
    assert_eq!(packed.packed_columns.len(), cells.columns.len());
    assert_eq!(packed.watermarks, cells.watermarks);
    for (p, c) in packed.packed_columns.iter().zip(&cells.columns) {
        assert_eq!(p.name, c.name);
        p.validate(keys.len()).unwrap();
        for row in 0..keys.len() {
            assert_eq!(p.statuses[row], c.statuses[row], "{} row {row}", p.name);
            assert_eq!(
                p.event_time_at(row),
                c.event_times_micros[row],
                "{} row {row}",
                p.name
            );
            let pv = p.value(row).map(|v| v.to_kind());
            match (&pv, &c.values[row].kind) {
                (Some(a), Some(b)) => assert!(
                    same_bits(a, b, NanBits::Exact),
                    "{} row {row}: {a:?} vs {b:?}",
                    p.name
                ),
                (None, None) => {}
                other => panic!("{} row {row}: {other:?}", p.name),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_answers_equal_the_per_cell_form_for_every_case() {
    let kafka = Kafka::new(&[("all", 4), ("more", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let t = now_ms();
    let mut g = ValueGen::new(9);
    let mut keys: Vec<String> = Vec::new();
    let mut produced = 0;
    for i in 0..60 {
        let k = format!("u{i}");
        let mut doc = serde_json::Map::new();
        doc.insert("ts".into(), json!(t - i));
        for ty in FEATURE_TYPES {
            // Every seventh value missing: PRESENT rows with null features.
            if (i + ty.len() as i64) % 7 != 0 {
                doc.insert(ty.into(), json_value(&g.value(ty)));
            }
        }
        if i % 10 == 3 {
            // Older than the one-hour TTL: EXPIRED.
            doc.insert("ts".into(), json!(t - 2 * 3_600_000));
        }
        kafka
            .send_json("all", &k, serde_json::Value::Object(doc))
            .await;
        produced += 1;
        if i % 2 == 0 {
            kafka
                .send_json("more", &k, json!({"ts": t, "x": i, "y": format!("y{i}")}))
                .await;
        }
        if i % 10 == 7 {
            // Deleted: NOT_FOUND.
            kafka
                .send("all", Some(k.as_bytes()), None, Some(t + 1))
                .await;
            produced += 1;
        }
        keys.push(k);
    }
    keys.push("never-written".into());
    keys.push("u5".into()); // a duplicate key
    node.wait_consumed("all", produced).await;
    node.wait_consumed("more", 30).await;

    assert_same_answers(&node, &["all:*"], "", &keys).await;
    assert_same_answers(
        &node,
        &[
            "all:float64",
            "more:x",
            "all:string",
            "all:float64",
            "more:*",
        ],
        "",
        &keys,
    )
    .await;
    assert_same_answers(&node, &[], "svc", &keys).await;
    // Spot checks of the packed form itself.
    let p = lookup(
        &node,
        &["all:*", "more:x"],
        "",
        &keys,
        ResponseEncoding::Packed,
    )
    .await;
    let types: Vec<FeatureType> = p.packed_columns.iter().map(|c| c.feature_type()).collect();
    assert_eq!(
        &types[..3],
        [FeatureType::Bool, FeatureType::Int64, FeatureType::Float64]
    );
    let row = |k: &str| keys.iter().position(|x| x == k).unwrap();
    assert_eq!(
        p.packed_columns[0].status_at(row("u3")),
        FeatureStatus::Expired
    );
    assert_eq!(
        p.packed_columns[0].status_at(row("u7")),
        FeatureStatus::NotFound
    );
    assert_eq!(
        p.packed_columns[0].status_at(row("never-written")),
        FeatureStatus::NotFound
    );
    assert_eq!(
        p.packed_columns[9].status_at(row("u1")),
        FeatureStatus::NotFound,
        "no `more` row"
    );
    assert_eq!(p.packed_columns[9].int64s[row("u2")], 2);
    // Without the request flag there are no event times on the wire.
    let no_times = node
        .features
        .clone()
        .get_online_features(GetOnlineFeaturesRequest {
            features: vec!["all:int64".into()],
            entity_keys: vec![key("u1")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no_times.packed_columns[0].event_times_micros.is_empty());
    node.stop().await;
}

/// A registry change (a feature appended, a feature retyped in a new version) is visible
/// to the next lookup of a feature list whose plan was cached: never a stale plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_cache_follows_every_registry_change() {
    let kafka = Kafka::new(&[("all", 4), ("more", 4)]);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path(), &kafka.bootstrap, 4, DEFS)).await;
    let t = now_ms();
    kafka
        .send_json("more", "a", json!({"ts": t, "x": 41, "y": "why"}))
        .await;
    node.wait_consumed("more", 1).await;
    let keys = vec!["a".to_string()];
    let before = lookup(&node, &["more:*"], "", &keys, ResponseEncoding::Packed).await;
    assert_eq!(before.packed_columns.len(), 2);
    // Appending a feature: the cached `more:*` plan must not hide it.
    let appended = DEFS.replace(
        "[[view.feature]]\nname = \"y\"\ntype = \"string\"\n",
        "[[view.feature]]\nname = \"y\"\ntype = \"string\"\n[[view.feature]]\nname = \"z\"\ntype = \"float64\"\n",
    );
    node.admin
        .clone()
        .apply_definitions(quiver_proto::v1::ApplyDefinitionsRequest {
            toml: appended.clone(),
            dry_run: false,
        })
        .await
        .unwrap();
    let after = lookup(&node, &["more:*"], "", &keys, ResponseEncoding::Packed).await;
    let names: Vec<&str> = after
        .packed_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["more:x", "more:y", "more:z"]);
    assert!(
        after.packed_columns[2].is_null(0),
        "a row older than the feature: null"
    );
    // Retyping x (int64 → string) is a new version, re-ingested and then promoted: from
    // then on `more:x` is a string column, never int64 read through the old plan.
    let retyped = appended
        .replace(
            "name = \"x\"\ntype = \"int64\"",
            "name = \"x\"\ntype = \"string\"",
        )
        .replace(
            "name = \"more\"\nentity = \"user\"\n",
            "name = \"more\"\nentity = \"user\"\nversion = 2\n",
        );
    node.admin
        .clone()
        .apply_definitions(quiver_proto::v1::ApplyDefinitionsRequest {
            toml: retyped,
            dry_run: false,
        })
        .await
        .unwrap();
    kafka
        .send_json(
            "more",
            "a",
            json!({"ts": t + 1, "x": "forty-two", "y": "why"}),
        )
        .await;
    eventually(Duration::from_secs(30), "version 2 serves", || async {
        let r = lookup(&node, &["more:x"], "", &keys, ResponseEncoding::Packed).await;
        let c = &r.packed_columns[0];
        (c.feature_type() == FeatureType::String).then(|| c.value(0).map(|v| v.to_kind()))
    })
    .await
    .map(|v| assert_eq!(v, Kind::StringValue("forty-two".into())))
    .unwrap();
    node.stop().await;
}
