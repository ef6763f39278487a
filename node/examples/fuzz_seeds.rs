//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/seed-*`): valid and
//! near-valid inputs for each parser, so fuzzing starts from the interesting shapes.
//!
//! `cargo run -p quiver-node --example fuzz_seeds -- fuzz/corpus`

use std::path::{Path, PathBuf};

use prost::Message as _;
use quiver_node::storage::row_codec::{encode_row, encode_tombstone};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::*;

fn write(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    for (i, s) in seeds.into_iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i:02}")), s)?;
    }
    Ok(())
}

fn record(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![key.len() as u8];
    v.extend_from_slice(key);
    v.extend_from_slice(payload);
    v
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

fn all_kinds() -> Vec<(&'static str, Kind)> {
    vec![
        ("b", Kind::BoolValue(true)),
        ("i", Kind::Int64Value(-42)),
        ("f", Kind::Float64Value(0.25)),
        ("s", Kind::StringValue("héllo".into())),
        ("y", Kind::BytesValue(vec![0, 255, 7])),
        (
            "v",
            Kind::Float32Vector(FloatVector {
                values: vec![1.0, -2.5, 3.0],
            }),
        ),
        (
            "il",
            Kind::Int64List(Int64List {
                values: vec![1, i64::MAX, i64::MIN],
            }),
        ),
        (
            "fl",
            Kind::Float64List(DoubleList {
                values: vec![0.5, 1e300],
            }),
        ),
        (
            "sl",
            Kind::StringList(StringList {
                values: vec!["a".into(), String::new()],
            }),
        ),
    ]
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );

    let json = [
        r#"{"ts": 1700000000000000, "b": true, "i": 7, "f": 1.5, "s": "x", "y": "AAEC", "v": [1, 2.5], "il": [1, 2], "fl": [0.1], "sl": ["a", "b"]}"#,
        r#"{"ts": "2026-11-24T06:00:00Z", "i": 9223372036854775807, "f": -0.0}"#,
        r#"{"i": "7", "f": "NaN", "v": [1e40], "il": [1.5]}"#,
        r#"{"ts": -1, "s": null, "b": 1, "sl": [1, null]}"#,
        r#"[1, 2, 3]"#,
        r#"{"ts": 1, "y": "not base64!", "v": "x"}"#,
        r#"{"#,
        "",
    ];
    write(
        &dir,
        "decode_json",
        json.iter()
            .enumerate()
            .map(|(i, p)| record(format!("user-{i}").as_bytes(), p.as_bytes()))
            .chain([record(b"", b"{}"), vec![3, b'k', b'e', b'y']])
            .collect(),
    )?;

    let row = |t: i64, kinds: &[(&str, Kind)]| {
        FeatureRow {
            event_time_micros: t,
            features: kinds
                .iter()
                .map(|(n, k)| ((*n).to_owned(), value(k.clone())))
                .collect(),
        }
        .encode_to_vec()
    };
    let kinds = all_kinds();
    let wrong = vec![
        ("i", Kind::StringValue("seven".into())),
        ("v", Kind::Int64List(Int64List { values: vec![1] })),
    ];
    write(
        &dir,
        "decode_protobuf",
        vec![
            record(b"12", &row(1_700_000_000_000_000, &kinds)),
            record(b"-9", &row(0, &kinds[..3])),
            record(b"9223372036854775807", &row(5, &wrong)),
            record(b"abc", &row(1, &kinds)),
            record(b"7", &[0x0a, 0xff, 0xff]),
            record(b"7", &[]),
        ],
    )?;

    let mut defs = vec![quiver_node::fuzzing::DEFINITIONS.as_bytes().to_vec()];
    defs.push(include_bytes!("../../docs/examples/views.toml").to_vec());
    defs.push(
        b"[[view]]\nname = \"v\"\nentity = \"nobody\"\n[view.source]\ntopic = \"t\"\n".to_vec(),
    );
    defs.push(b"[[entity]]\nname = \"Bad Name\"\nkey_type = \"uuid\"\n".to_vec());
    defs.push(b"[[view]]\nname = \"all_json\"\nversion = 2\nentity = \"user\"\nttl = \"1h\"\n[view.source]\ntopic = \"j\"\n[[view.feature]]\nname = \"i\"\ntype = \"string\"\n".to_vec());
    defs.push(
        b"[[feature_service]]\nname = \"s\"\nfeatures = [\"all_json:*\", \"missing:x\"]\n".to_vec(),
    );
    write(&dir, "view_definition", defs)?;

    let lookup = |req: GetOnlineFeaturesRequest| {
        let mut v = vec![0u8];
        v.extend(req.encode_to_vec());
        v
    };
    let push = |req: PushRequest| {
        let mut v = vec![1u8];
        v.extend(req.encode_to_vec());
        v
    };
    let keys = |n: usize| {
        (0..n)
            .map(|i| EntityKey::from(format!("u{i}")))
            .collect::<Vec<_>>()
    };
    write(
        &dir,
        "request",
        vec![
            lookup(GetOnlineFeaturesRequest {
                features: vec!["all_json:*".into(), "all_json:i".into()],
                entity_keys: keys(3),
                ..Default::default()
            }),
            lookup(GetOnlineFeaturesRequest {
                feature_service: "svc".into(),
                entity_keys: keys(2),
                min_watermarks: vec![ShardWatermark {
                    shard: 3,
                    offsets: vec![TopicOffset {
                        topic: "j".into(),
                        next_offset: 10,
                    }],
                }],
                watermark_wait_ms: 5,
                ..Default::default()
            }),
            lookup(GetOnlineFeaturesRequest {
                features: vec!["all_pb:i".into()],
                entity_keys: vec![EntityKey::from(5_i64), EntityKey::from("x")],
                ..Default::default()
            }),
            lookup(GetOnlineFeaturesRequest {
                features: vec!["all_json:i".into(), "all_pb:i".into(), "nope".into()],
                feature_service: "svc".into(),
                entity_keys: keys(65),
                ..Default::default()
            }),
            push(PushRequest {
                view: "all_json".into(),
                rows: vec![PushRow {
                    entity_key: Some("u1".into()),
                    event_time_micros: 0,
                    features: all_kinds()
                        .into_iter()
                        .map(|(n, k)| (n.to_owned(), value(k)))
                        .collect(),
                    delete: false,
                }],
            }),
            push(PushRequest {
                view: "all_pb".into(),
                rows: vec![
                    PushRow {
                        entity_key: Some(EntityKey::from(3_i64)),
                        event_time_micros: -5,
                        features: Default::default(),
                        delete: true,
                    },
                    PushRow {
                        entity_key: Some("bad".into()),
                        event_time_micros: 1,
                        features: [("zz".to_owned(), value(Kind::BoolValue(false)))].into(),
                        delete: false,
                    },
                ],
            }),
        ],
    )?;

    let mut rows = Vec::new();
    let mut r = Vec::new();
    encode_row(
        1_700_000_000_000_000,
        &all_kinds()
            .into_iter()
            .map(|(_, k)| Some(k))
            .collect::<Vec<_>>(),
        &mut r,
    );
    rows.push(r.clone());
    rows.push(r[..r.len() / 2].to_vec());
    let mut r2 = Vec::new();
    encode_row(-1, &[None, Some(Kind::Int64Value(3)), None], &mut r2);
    rows.push(r2);
    let mut t = Vec::new();
    encode_tombstone(99, &mut t);
    rows.push(t);
    rows.push(vec![0xff; 12]);
    rows.push(Vec::new());
    write(&dir, "row_codec", rows)?;
    println!("seed corpora written under {}", dir.display());
    Ok(())
}
