//! Label extraction and feature columns, without a cluster (the end-to-end test is
//! `client/tests/smart/export.rs`).

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::{FeatureStatus, FeatureType, GetOnlineFeaturesResponse};

use super::ExportOptions;
use super::columns::append;
use crate::LookupResult;

fn opts() -> ExportOptions {
    ExportOptions {
        features: vec!["v:*".into()],
        key_column: "k".into(),
        time_column: "t".into(),
        ..Default::default()
    }
}

fn batch(keys: Vec<Option<&str>>, times: Vec<Option<i64>>) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("t", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(Int64Array::from(times)),
        ],
    )
    .unwrap()
}

#[test]
fn integer_times_take_the_unit_and_null_keys_or_times_name_the_row() {
    let path = std::path::Path::new("labels.parquet");
    let mut o = opts();
    o.time_unit = "ms".parse().unwrap();
    let c = super::labels::chunk_for_tests(
        path,
        batch(vec![Some("a"), Some("b")], vec![Some(5), Some(-2)]),
        0,
        &o,
    )
    .unwrap();
    assert_eq!(c.times, vec![5_000, -2_000]);
    assert_eq!(c.keys.len(), 2);
    let e = super::labels::chunk_for_tests(
        path,
        batch(vec![Some("a"), None], vec![Some(1), Some(2)]),
        10,
        &o,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("row 12: column \"k\" is null"), "{e}");
    let e = super::labels::chunk_for_tests(path, batch(vec![Some("a")], vec![None]), 0, &o)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("row 1: column \"t\" is null"), "{e}");
    o.int_keys = true;
    let e = super::labels::chunk_for_tests(path, batch(vec![Some("x1")], vec![Some(1)]), 0, &o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("row 1: key \"x1\" in column \"k\" is not an int64"),
        "{e}"
    );
    assert!("hours".parse::<super::TimeUnit>().is_err());
}

#[test]
fn feature_columns_are_typed_with_nulls_where_not_present() {
    let labels = batch(
        vec![Some("a"), Some("b"), Some("c")],
        vec![Some(1), Some(2), Some(3)],
    );
    let mut score = ColumnBuilder::new("v:score".into(), FeatureType::Int64, 3, false);
    score.push_i64(7, 0);
    score.push_missing(FeatureStatus::NotFound, 0);
    score.push_missing(FeatureStatus::Expired, 5);
    let mut tags = ColumnBuilder::new("v:tags".into(), FeatureType::StringList, 3, false);
    tags.push_strs([&b"x"[..], b"yz"], 0);
    tags.push_null(0);
    tags.push_strs(std::iter::empty(), 0);
    let result = LookupResult::new(GetOnlineFeaturesResponse {
        packed_columns: vec![score.finish(), tags.finish()],
        row_count: 3,
        ..Default::default()
    })
    .unwrap();
    let out = append(&labels, &result, true).unwrap();
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "k",
            "t",
            "v:score",
            "v:score__status",
            "v:tags",
            "v:tags__status"
        ]
    );
    let s = out.column(2).as_primitive::<Int64Type>();
    assert_eq!((s.value(0), s.is_null(1), s.is_null(2)), (7, true, true));
    let st = out.column(3).as_string::<i32>();
    assert_eq!(
        (st.value(0), st.value(1), st.value(2)),
        ("PRESENT", "NOT_FOUND", "EXPIRED")
    );
    let tags = out.column(4).as_list::<i32>();
    let first = tags.value(0);
    let first = first.as_string::<i32>();
    assert_eq!((first.value(0), first.value(1)), ("x", "yz"));
    assert!(tags.is_null(1), "a null list is null");
    assert_eq!(tags.value(2).len(), 0, "an empty list is empty, not null");
    // A label column named like a feature is refused.
    let clash = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "v:score",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let e = append(&clash, &result, false).unwrap_err();
    assert!(e.contains("already has a column named \"v:score\""), "{e}");
}
