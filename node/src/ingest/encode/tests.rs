use quiver_proto::v1::{DoubleList, EntityKey, FloatVector, Int64List, StringList};

use super::*;
use crate::ingest::decode::{RawRecord, decode_record};
use crate::registry::Registry;

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[entity]]
name = "card"
key_type = "int64"

[[view]]
name = "all_types"
entity = "user"
[view.source]
topic = "t"
event_time_field = "ts"
event_time_unit = "seconds"
[[view.feature]]
name = "b"
type = "bool"
[[view.feature]]
name = "i"
type = "int64"
[[view.feature]]
name = "f"
type = "float64"
source_field = "the_f"
[[view.feature]]
name = "s"
type = "string"
[[view.feature]]
name = "y"
type = "bytes"
[[view.feature]]
name = "v"
type = "float32_vector"
[[view.feature]]
name = "il"
type = "int64_list"
[[view.feature]]
name = "fl"
type = "float64_list"
[[view.feature]]
name = "sl"
type = "string_list"

[[view]]
name = "card_pb"
entity = "card"
[view.source]
topic = "p"
format = "protobuf"
[[view.feature]]
name = "amount"
type = "float64"
source_field = "amt"

[[view]]
name = "all_types_pb"
entity = "user"
[view.source]
topic = "tp"
format = "protobuf"
[[view.feature]]
name = "b"
type = "bool"
[[view.feature]]
name = "i"
type = "int64"
[[view.feature]]
name = "f"
type = "float64"
[[view.feature]]
name = "s"
type = "string"
[[view.feature]]
name = "y"
type = "bytes"
[[view.feature]]
name = "v"
type = "float32_vector"
[[view.feature]]
name = "il"
type = "int64_list"
[[view.feature]]
name = "fl"
type = "float64_list"
[[view.feature]]
name = "sl"
type = "string_list"

[[view]]
name = "kafka_time"
entity = "user"
[view.source]
topic = "k"
[[view.feature]]
name = "n"
type = "int64"
"#;

fn view(name: &str) -> std::sync::Arc<FeatureView> {
    let r = Registry::in_memory();
    r.apply_toml(DEFS, false).unwrap();
    r.snapshot().views[name].clone()
}

fn row(key: impl Into<EntityKey>, t: i64, features: &[(&str, Kind)]) -> PushRow {
    PushRow {
        entity_key: Some(key.into()),
        event_time_micros: t,
        features: features
            .iter()
            .map(|(n, k)| {
                (
                    (*n).to_owned(),
                    Value {
                        kind: Some(k.clone()),
                    },
                )
            })
            .collect(),
        delete: false,
    }
}

/// Decodes `rec` the way ingest does.
fn ingest(view: &FeatureView, key_type: KeyType, rec: &EncodedRecord) -> DecodedRecordParts {
    let d = decode_record(
        view,
        key_type,
        &RawRecord {
            key: Some(&rec.key),
            payload: rec.payload.as_deref(),
            timestamp_millis: Some(rec.timestamp_millis),
        },
    )
    .unwrap();
    (d.entity_key, d.event_time_micros, d.values)
}

type DecodedRecordParts = (Vec<u8>, i64, Option<Vec<Option<Kind>>>);

#[test]
fn json_round_trips_every_type_with_microsecond_event_time() {
    let v = view("all_types");
    let kinds = vec![
        Kind::BoolValue(true),
        Kind::Int64Value(i64::MIN),
        Kind::Float64Value(-0.1),
        Kind::StringValue("é\"x".into()),
        Kind::BytesValue(vec![0, 1, 255]),
        Kind::Float32Vector(FloatVector {
            values: vec![0.1, -3.4e38],
        }),
        Kind::Int64List(Int64List {
            values: vec![1, -2],
        }),
        Kind::Float64List(DoubleList {
            values: vec![1e-300],
        }),
        Kind::StringList(StringList {
            values: vec!["a".into(), String::new()],
        }),
    ];
    let names = ["b", "i", "f", "s", "y", "v", "il", "fl", "sl"];
    let features: Vec<(&str, Kind)> = names.iter().copied().zip(kinds.clone()).collect();
    let t = 1_700_000_000_123_457;
    let rec = encode_push_row(&v, KeyType::String, 0, &row("u1", t, &features), 1).unwrap();
    assert_eq!(rec.key, b"u1");
    let (key, et, values) = ingest(&v, KeyType::String, &rec);
    assert_eq!(key, b"u1");
    assert_eq!(et, t, "event time survives to the microsecond");
    assert_eq!(
        values.unwrap(),
        kinds.into_iter().map(Some).collect::<Vec<_>>()
    );
}

#[test]
fn protobuf_and_int64_keys_round_trip() {
    let v = view("card_pb");
    let r = row(42i64, 5, &[("amount", Kind::Float64Value(f64::NAN))]);
    let rec = encode_push_row(&v, KeyType::Int64, 0, &r, 1).unwrap();
    assert_eq!(rec.key, b"42");
    let (_, et, values) = ingest(&v, KeyType::Int64, &rec);
    assert_eq!(et, 5);
    assert!(matches!(values.unwrap()[0], Some(Kind::Float64Value(f)) if f.is_nan()));
}

#[test]
fn a_row_with_its_event_time_in_the_payload_is_stamped_with_its_arrival() {
    // A backfilled row (event time long ago) arrives now: its Kafka timestamp is the push's
    // time, so as-served history does not show it before then; the event time survives.
    let now = 1_800_000_000_000_000;
    let past = 1_700_000_000_123_457;
    let amount = [("amount", Kind::Float64Value(1.0))];
    for (name, key_type, r) in [
        ("all_types", KeyType::String, row("u1", past, &[])),
        ("card_pb", KeyType::Int64, row(42i64, past, &amount)),
    ] {
        let v = view(name);
        let rec = encode_push_row(&v, key_type, 0, &r, now).unwrap();
        assert_eq!(rec.timestamp_millis, now / 1000, "{name}");
        let (_, et, _) = ingest(&v, key_type, &rec);
        assert_eq!(et, past, "{name}");
    }
    // Without an event-time field the timestamp is the only carrier of the event time.
    let v = view("kafka_time");
    let rec = encode_push_row(&v, KeyType::String, 0, &row("u", 9_000_000, &[]), now).unwrap();
    assert_eq!(rec.timestamp_millis, 9_000);
}

#[test]
fn missing_features_are_null_and_zero_time_is_now() {
    let v = view("kafka_time");
    let rec = encode_push_row(&v, KeyType::String, 0, &row("u", 0, &[]), 7_000_123).unwrap();
    let (_, et, values) = ingest(&v, KeyType::String, &rec);
    // No event-time field: the Kafka timestamp carries it, in milliseconds.
    assert_eq!(et, 7_000_000);
    assert_eq!(values.unwrap(), vec![None]);
}

#[test]
fn deletes_are_tombstones() {
    let v = view("kafka_time");
    let mut r = row("u", 9_000, &[]);
    r.delete = true;
    let rec = encode_push_row(&v, KeyType::String, 0, &r, 1).unwrap();
    assert_eq!(rec.payload, None);
    let (_, et, values) = ingest(&v, KeyType::String, &rec);
    assert_eq!((et, values), (9_000, None));
}

#[test]
fn bad_rows_are_rejected_with_the_reason() {
    let v = view("all_types");
    let err = |r: PushRow| encode_push_row(&v, KeyType::String, 3, &r, 1).unwrap_err();
    let e = err(row("u", 1, &[("nope", Kind::BoolValue(true))]));
    assert!(
        e.contains("rows[3]") && e.contains("no feature \"nope\""),
        "{e}"
    );
    let e = err(row("u", 1, &[("i", Kind::StringValue("1".into()))]));
    assert!(e.contains("\"i\" is string") && e.contains("int64"), "{e}");
    let e = err(row(5i64, 1, &[]));
    assert!(e.contains("rows[3].entity_key is int64"), "{e}");
    let e = err(row("", 1, &[]));
    assert!(e.contains("0 bytes"), "{e}");
    let e = err(row("u", -1, &[]));
    assert!(e.contains("before 1970"), "{e}");
    let mut del = row("u", 1, &[("b", Kind::BoolValue(true))]);
    del.delete = true;
    assert!(err(del).contains("delete but also sets features"));
    let mut nokey = row("u", 1, &[]);
    nokey.entity_key = None;
    assert!(err(nokey).contains("has no value"));
}

/// Every feature type, random and edge-case values (subnormals, ±0, NaN, ±∞, int64
/// extremes, long non-ASCII strings, empty lists): a pushed row encoded in the view's
/// record format and decoded by ingest holds the same bits. JSON carries one NaN.
#[test]
fn push_encode_then_ingest_decode_is_bit_exact_for_every_type() {
    use quiver_testkit::values::{FEATURE_TYPES, NanBits, ValueGen, same_bits};
    let names = ["b", "i", "f", "s", "y", "v", "il", "fl", "sl"];
    for (view_name, nan) in [
        ("all_types", NanBits::AnyNan),
        ("all_types_pb", NanBits::Exact),
    ] {
        let v = view(view_name);
        let mut g = ValueGen::new(42);
        for n in 0..2_000 {
            let kinds: Vec<Kind> = FEATURE_TYPES.iter().map(|t| g.value(t)).collect();
            let features: Vec<(&str, Kind)> = names.iter().copied().zip(kinds.clone()).collect();
            let rec = encode_push_row(&v, KeyType::String, n, &row("k", 1, &features), 1)
                .unwrap_or_else(|e| panic!("{view_name} row {n}: {e}"));
            let (_, _, values) = ingest(&v, KeyType::String, &rec);
            for ((want, got), ty) in kinds.iter().zip(values.unwrap()).zip(FEATURE_TYPES) {
                let got = got.unwrap_or_else(|| panic!("{view_name} {ty}: value lost"));
                assert!(
                    same_bits(want, &got, nan),
                    "{view_name} row {n} {ty}: pushed {want:?}, ingested {got:?}"
                );
            }
        }
    }
}
