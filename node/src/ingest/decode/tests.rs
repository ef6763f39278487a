use std::collections::HashMap;

use quiver_proto::v1::Value;

use super::*;
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
source_field = "strings"

[[view]]
name = "card_pb"
entity = "card"
[view.source]
topic = "p"
format = "protobuf"
[[view.feature]]
name = "amount"
type = "float64"
"#;

fn views() -> (std::sync::Arc<FeatureView>, std::sync::Arc<FeatureView>) {
    let r = Registry::in_memory();
    r.apply_toml(DEFS, false).unwrap();
    let s = r.snapshot();
    (s.views["all_types"].clone(), s.views["card_pb"].clone())
}

fn raw<'a>(key: &'a [u8], payload: Option<&'a [u8]>) -> RawRecord<'a> {
    RawRecord {
        key: Some(key),
        payload,
        timestamp_millis: Some(1_000),
    }
}

#[test]
fn json_every_type() {
    let (v, _) = views();
    let payload = br#"{"ts": 1700000000123, "b": true, "i": -5, "f": 2.5, "s": "x", "y": "AAH/",
        "v": [0.5, 1], "il": [1, -2], "fl": [0.25], "strings": ["a", "b"], "extra": 1}"#;
    let d = decode_record(&v, KeyType::String, &raw(b"u1", Some(payload))).unwrap();
    assert_eq!(d.entity_key, b"u1");
    assert_eq!(d.event_time_micros, 1_700_000_000_123_000);
    let vals = d.values.unwrap();
    assert_eq!(vals[0], Some(Kind::BoolValue(true)));
    assert_eq!(vals[1], Some(Kind::Int64Value(-5)));
    assert_eq!(vals[2], Some(Kind::Float64Value(2.5)));
    assert_eq!(vals[3], Some(Kind::StringValue("x".into())));
    assert_eq!(vals[4], Some(Kind::BytesValue(vec![0, 1, 255])));
    assert_eq!(
        vals[5],
        Some(Kind::Float32Vector(FloatVector {
            values: vec![0.5, 1.0]
        }))
    );
    assert_eq!(
        vals[6],
        Some(Kind::Int64List(Int64List {
            values: vec![1, -2]
        }))
    );
    assert_eq!(
        vals[7],
        Some(Kind::Float64List(DoubleList { values: vec![0.25] }))
    );
    assert_eq!(
        vals[8],
        Some(Kind::StringList(StringList {
            values: vec!["a".into(), "b".into()]
        }))
    );
}

#[test]
fn json_missing_and_null_fields_are_null_and_rfc3339_times_parse() {
    let (v, _) = views();
    let d = decode_record(
        &v,
        KeyType::String,
        &raw(
            b"u",
            Some(br#"{"ts": "2026-01-02T03:04:05.5Z", "i": null}"#),
        ),
    )
    .unwrap();
    assert_eq!(d.event_time_micros, 1_767_323_045_500_000);
    assert!(d.values.unwrap().iter().all(Option::is_none));
}

#[test]
fn tombstones() {
    let (v, p) = views();
    for payload in [None, Some(&b"null"[..])] {
        let d = decode_record(&v, KeyType::String, &raw(b"u", payload)).unwrap();
        assert_eq!(d.values, None);
        assert_eq!(
            d.event_time_micros, 1_000_000,
            "tombstones are timed by the Kafka timestamp"
        );
    }
    assert_eq!(
        decode_record(&p, KeyType::Int64, &raw(b"7", None))
            .unwrap()
            .values,
        None
    );
}

#[test]
fn malformed_records_name_the_problem() {
    let (v, _) = views();
    type Case<'a> = (&'a [u8], Option<&'a [u8]>, &'a str);
    let cases: &[Case<'_>] = &[
        (b"u", Some(b"{not json"), "json"),
        (b"u", Some(b"[1,2]"), "json"),
        (b"u", Some(br#"{"i": 1}"#), "event_time"),
        (b"u", Some(br#"{"ts": true}"#), "event_time"),
        (b"u", Some(br#"{"ts": 1, "i": 1.5}"#), "field_type"),
        (b"u", Some(br#"{"ts": 1, "v": [1, "x"]}"#), "field_type"),
        (b"u", Some(br#"{"ts": 1, "y": "***"}"#), "field_type"),
        (b"", Some(br#"{"ts": 1}"#), "missing_key"),
        (b"\xff\xfe", Some(br#"{"ts": 1}"#), "bad_key"),
    ];
    for (key, payload, reason) in cases {
        let err = decode_record(&v, KeyType::String, &raw(key, *payload)).unwrap_err();
        assert_eq!(err.reason(), *reason, "{err}");
    }
    let err = decode_record(
        &v,
        KeyType::String,
        &raw(b"u", Some(br#"{"ts": 1, "i": "seven"}"#)),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field \"i\": expected int64, found a string"
    );
}

#[test]
fn int64_keys_must_be_canonical_decimal() {
    assert!(validate_entity_key(Some(b"42"), KeyType::Int64).is_ok());
    assert!(validate_entity_key(Some(b"-42"), KeyType::Int64).is_ok());
    for bad in [&b"042"[..], b"+1", b"1.0", b"x", b" 1"] {
        let err = validate_entity_key(Some(bad), KeyType::Int64).unwrap_err();
        assert_eq!(err.reason(), "bad_key");
    }
    assert_eq!(
        validate_entity_key(None, KeyType::String).unwrap_err(),
        DecodeError::MissingKey
    );
    let long = vec![b'a'; MAX_KEY_BYTES + 1];
    assert_eq!(
        validate_entity_key(Some(&long), KeyType::String)
            .unwrap_err()
            .reason(),
        "bad_key"
    );
}

#[test]
fn protobuf_rows() {
    let (_, p) = views();
    let mut features = HashMap::new();
    features.insert(
        "amount".to_owned(),
        Value {
            kind: Some(Kind::Float64Value(9.5)),
        },
    );
    let bytes = FeatureRow {
        event_time_micros: 77,
        features: features.clone(),
    }
    .encode_to_vec();
    let d = decode_record(&p, KeyType::Int64, &raw(b"12", Some(&bytes))).unwrap();
    assert_eq!(
        (d.event_time_micros, d.values),
        (77, Some(vec![Some(Kind::Float64Value(9.5))]))
    );
    // event_time 0 falls back to the Kafka timestamp.
    let bytes = FeatureRow {
        event_time_micros: 0,
        features,
    }
    .encode_to_vec();
    assert_eq!(
        decode_record(&p, KeyType::Int64, &raw(b"12", Some(&bytes)))
            .unwrap()
            .event_time_micros,
        1_000_000
    );
    // Wrong type and garbage are malformed.
    let mut wrong = HashMap::new();
    wrong.insert(
        "amount".to_owned(),
        Value {
            kind: Some(Kind::StringValue("9".into())),
        },
    );
    let bytes = FeatureRow {
        event_time_micros: 1,
        features: wrong,
    }
    .encode_to_vec();
    assert_eq!(
        decode_record(&p, KeyType::Int64, &raw(b"12", Some(&bytes)))
            .unwrap_err()
            .reason(),
        "field_type"
    );
    assert_eq!(
        decode_record(&p, KeyType::Int64, &raw(b"12", Some(&[0xff, 0xff, 0xff])))
            .unwrap_err()
            .reason(),
        "protobuf"
    );
}
