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

/// Floats written the ways producers write them (Python's `json.dumps`/`repr`, Rust's
/// Display and exponent forms, serde_json) read back bit-exact; float32 elements are
/// rounded once, to f32; int64 beyond 2^53 and at the extremes is exact.
#[test]
fn json_numbers_are_exact_in_every_producer_spelling() {
    let (v, _) = views();
    let mut seed = 3u64;
    let mut next = || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for _ in 0..20_000 {
        let f = f64::from_bits(next());
        let x = f32::from_bits(next() as u32);
        let i = next() as i64;
        if !f.is_finite() || !x.is_finite() {
            continue;
        }
        for (ftext, xtext) in [
            (format!("{f}"), format!("{x}")),
            (format!("{f:e}"), format!("{x:e}")),
            (format!("{f:?}"), format!("{}", f64::from(x))),
            (
                serde_json::to_string(&f).unwrap(),
                serde_json::to_string(&x).unwrap(),
            ),
        ] {
            let payload = format!(
                r#"{{"ts": 1, "f": {ftext}, "fl": [{ftext}], "v": [{xtext}], "i": {i}, "il": [{i}]}}"#
            );
            let d =
                decode_record(&v, KeyType::String, &raw(b"u", Some(payload.as_bytes()))).unwrap();
            let vals = d.values.unwrap();
            assert_eq!(vals[2], Some(Kind::Float64Value(f)), "{ftext}");
            match &vals[2] {
                Some(Kind::Float64Value(g)) => assert_eq!(g.to_bits(), f.to_bits(), "{ftext}"),
                other => panic!("{other:?}"),
            }
            match &vals[5] {
                Some(Kind::Float32Vector(g)) => {
                    assert_eq!(g.values[0].to_bits(), x.to_bits(), "{xtext}")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(vals[1], Some(Kind::Int64Value(i)));
            assert_eq!(
                vals[6],
                Some(Kind::Int64List(Int64List { values: vec![i] }))
            );
        }
    }
    // The value a lossy parser served 1 ulp off.
    let d = decode_record(
        &v,
        KeyType::String,
        &raw(
            b"u",
            Some(br#"{"ts": 1, "f": 0.9385380123269165, "i": 9223372036854775807}"#),
        ),
    )
    .unwrap();
    let vals = d.values.unwrap();
    assert_eq!(vals[2], Some(Kind::Float64Value(0.938_538_012_326_916_5)));
    assert_eq!(vals[1], Some(Kind::Int64Value(i64::MAX)));
}

#[test]
fn non_finite_floats_read_from_strings_and_pythons_bare_tokens_only_for_floats() {
    let (v, _) = views();
    let d = decode_record(
        &v,
        KeyType::String,
        &raw(b"u", Some(br#"{"ts": 1, "f": NaN, "fl": [Infinity, -Infinity, "NaN", -0.0], "v": ["Infinity"], "s": "NaN"}"#)),
    )
    .unwrap();
    let vals = d.values.unwrap();
    assert!(matches!(vals[2], Some(Kind::Float64Value(f)) if f.is_nan()));
    match &vals[7] {
        Some(Kind::Float64List(l)) => {
            assert_eq!(l.values[..2], [f64::INFINITY, f64::NEG_INFINITY]);
            assert!(l.values[2].is_nan());
            assert_eq!(l.values[3].to_bits(), (-0.0f64).to_bits());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        vals[5],
        Some(Kind::Float32Vector(FloatVector {
            values: vec![f32::INFINITY]
        }))
    );
    assert_eq!(
        vals[3],
        Some(Kind::StringValue("NaN".into())),
        "a string stays a string"
    );
    // A bare NaN where a string, int or bool is declared is a type error, not "NaN".
    for field in ["s", "i", "b", "sl", "il"] {
        let payload = format!(
            r#"{{"ts": 1, "{}": NaN}}"#,
            if field == "sl" { "strings" } else { field }
        );
        let err =
            decode_record(&v, KeyType::String, &raw(b"u", Some(payload.as_bytes()))).unwrap_err();
        assert_eq!(err.reason(), "field_type", "{field}: {err}");
    }
    // Out of range literals are errors, not infinities.
    for payload in [
        &br#"{"ts": 1, "f": 1e400}"#[..],
        br#"{"ts": 1, "v": [1e39]}"#,
        br#"{"ts": 1, "i": 9223372036854775808}"#,
    ] {
        let err = decode_record(&v, KeyType::String, &raw(b"u", Some(payload))).unwrap_err();
        assert_eq!(err.reason(), "field_type", "{err}");
    }
}

#[test]
fn numeric_event_times_convert_to_microseconds_exactly() {
    let r = Registry::in_memory();
    for (unit, text, want) in [
        ("seconds", "1732000000.123456", 1_732_000_000_123_456),
        ("seconds", "1732000000", 1_732_000_000_000_000),
        ("seconds", "1.7320000001234569e9", 1_732_000_000_123_456),
        ("millis", "1732000000123.456", 1_732_000_000_123_456),
        ("micros", "1732000000123456", 1_732_000_000_123_456),
        ("micros", "9007199254740993", 9_007_199_254_740_993),
    ] {
        r.apply_toml(
            &format!(
                "[[entity]]\nname = \"user\"\nkey_type = \"string\"\n[[view]]\nname = \"t_{unit}\"\nentity = \"user\"\n[view.source]\ntopic = \"t_{unit}\"\nevent_time_field = \"ts\"\nevent_time_unit = \"{unit}\"\n[[view.feature]]\nname = \"x\"\ntype = \"int64\"\n"
            ),
            false,
        )
        .unwrap();
        let v = r.snapshot().views[&format!("t_{unit}")].clone();
        let payload = format!(r#"{{"ts": {text}}}"#);
        let d = decode_record(&v, KeyType::String, &raw(b"u", Some(payload.as_bytes()))).unwrap();
        assert_eq!(d.event_time_micros, want, "{unit} {text}");
    }
}
