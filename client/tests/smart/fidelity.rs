//! Every value comes back with the bits it went in with: random and edge-case values of
//! every feature type (subnormals, ±0, NaN, ±∞, int64 extremes, integers beyond 2^53,
//! long non-ASCII strings, empty lists), produced to a real broker as JSON (spelled the
//! ways producers spell numbers, Python's bare `NaN` included) and as protobuf, and
//! pushed through the smart client, read back through the smart client, the raw gRPC
//! response and `quiverctl get --output json`.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use prost::Message as _;
use quiver_client::{Client, Lookup, PushRow, Watermarks};
use quiver_proto::json_number;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    DoubleList, FeatureRow, FeatureStatus, FloatVector, Int64List, StringList, Value,
};
use quiver_proto::v1::{ReplicaStateProto, ResponseEncoding};
use quiver_testkit::values::{FEATURE_TYPES, NanBits, ValueGen, same_bits};
use quiver_testkit::{Broker, ClusterSettings, NodeProcess, initial_members};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::value::RawValue;

const P: u32 = 4;
const ROWS: usize = 40;

fn definitions() -> String {
    let mut s = String::from("[[entity]]\nname = \"item\"\nkey_type = \"string\"\n");
    for (view, format) in [("fid_json", "json"), ("fid_pb", "protobuf")] {
        s.push_str(&format!(
            "[[view]]\nname = \"{view}\"\nentity = \"item\"\n[view.source]\ntopic = \"{view}\"\nformat = \"{format}\"\n"
        ));
        if format == "json" {
            s.push_str("event_time_field = \"ts\"\nevent_time_unit = \"micros\"\n");
        }
        for ty in FEATURE_TYPES {
            s.push_str(&format!(
                "[[view.feature]]\nname = \"{ty}\"\ntype = \"{ty}\"\n"
            ));
        }
    }
    s
}

/// Writes a float the way some producer would: one of Rust's spellings, the exponent
/// form, or (for non-finite values) Python's bare token or the string spelling.
fn float_text(f: f64, style: u64) -> String {
    if !f.is_finite() {
        let bare = if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        };
        return if style.is_multiple_of(2) {
            bare.to_owned()
        } else {
            format!("\"{bare}\"")
        };
    }
    match style % 4 {
        0 => format!("{f}"),
        1 => format!("{f:e}"),
        2 => format!("{f:?}"),
        _ => serde_json::to_string(&f).unwrap(),
    }
}

fn f32_text(f: f32, style: u64) -> String {
    if !f.is_finite() {
        return float_text(f64::from(f), style);
    }
    match style % 3 {
        0 => format!("{f:?}"),
        1 => format!("{f:e}"),
        // What Python writes for a numpy float32 converted to float.
        _ => format!("{:?}", f64::from(f)),
    }
}

/// A JSON record of `values` (in FEATURE_TYPES order), spelled by `style`.
fn json_record(values: &[Kind], ts: i64, style: u64) -> String {
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let mut fields = vec![format!("\"ts\": {ts}")];
    for (ty, v) in FEATURE_TYPES.iter().zip(values) {
        let text = match v {
            Kind::BoolValue(b) => b.to_string(),
            Kind::Int64Value(i) => i.to_string(),
            Kind::Float64Value(f) => float_text(*f, style),
            Kind::StringValue(s) => serde_json::to_string(s).unwrap(),
            Kind::BytesValue(b) => format!(
                "\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(b)
            ),
            Kind::Float32Vector(v) => list(v.values.iter().map(|f| f32_text(*f, style)).collect()),
            Kind::Int64List(v) => list(v.values.iter().map(i64::to_string).collect()),
            Kind::Float64List(v) => {
                list(v.values.iter().map(|f| float_text(*f, style + 1)).collect())
            }
            Kind::StringList(v) => serde_json::to_string(&v.values).unwrap(),
        };
        fields.push(format!("\"{ty}\": {text}"));
    }
    format!("{{{}}}", fields.join(", "))
}

fn protobuf_record(values: &[Kind], ts: i64) -> Vec<u8> {
    FeatureRow {
        event_time_micros: ts,
        features: FEATURE_TYPES
            .iter()
            .zip(values)
            .map(|(ty, v)| {
                (
                    (*ty).to_owned(),
                    Value {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The rows of one view: key, event time and values.
struct Rows {
    view: &'static str,
    nan: NanBits,
    rows: Vec<(String, i64, Vec<Kind>)>,
}

fn feature_refs(view: &str) -> Vec<String> {
    FEATURE_TYPES
        .iter()
        .map(|t| format!("{view}:{t}"))
        .collect()
}

/// Reads a value of type `ty` back from `quiverctl`'s JSON (as documented: floats are the
/// shortest text of their type, non-finite ones strings, bytes base64).
fn from_quiverctl(ty: &str, v: &RawValue) -> Kind {
    let text = v.get();
    let list = || serde_json::from_str::<Vec<&RawValue>>(text).unwrap();
    match ty {
        "bool" => Kind::BoolValue(text == "true"),
        "int64" => Kind::Int64Value(json_number::parse_i64(text).unwrap()),
        "float64" => Kind::Float64Value(json_number::parse_f64(text).unwrap()),
        "string" => Kind::StringValue(serde_json::from_str(text).unwrap()),
        "bytes" => Kind::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(serde_json::from_str::<String>(text).unwrap())
                .unwrap(),
        ),
        "float32_vector" => Kind::Float32Vector(FloatVector {
            values: list()
                .iter()
                .map(|x| json_number::parse_f32(x.get()).unwrap())
                .collect(),
        }),
        "int64_list" => Kind::Int64List(Int64List {
            values: list()
                .iter()
                .map(|x| json_number::parse_i64(x.get()).unwrap())
                .collect(),
        }),
        "float64_list" => Kind::Float64List(DoubleList {
            values: list()
                .iter()
                .map(|x| json_number::parse_f64(x.get()).unwrap())
                .collect(),
        }),
        "string_list" => Kind::StringList(StringList {
            values: serde_json::from_str(text).unwrap(),
        }),
        other => panic!("{other}"),
    }
}

async fn check_smart(client: &Client, set: &Rows, wm: &Watermarks) {
    let keys: Vec<&str> = set.rows.iter().map(|(k, _, _)| k.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = client
            .get_online_features(
                &Lookup::features(feature_refs(set.view))
                    .keys(keys.clone())
                    .min_watermarks(wm)
                    .event_times(true),
            )
            .await
            .unwrap();
        if (0..keys.len()).all(|row| r.status(row, 0) == FeatureStatus::Present) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "{}: rows not all ingested",
            set.view
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (row, (key, ts, values)) in set.rows.iter().enumerate() {
        for (col, want) in values.iter().enumerate() {
            let got = r
                .kind(row, col)
                .unwrap_or_else(|| panic!("{} {key} {}: null", set.view, FEATURE_TYPES[col]));
            assert!(
                same_bits(want, &got, set.nan),
                "{} {key} {} via the smart client: wrote {want:?}, read {got:?}",
                set.view,
                FEATURE_TYPES[col]
            );
            assert_eq!(
                r.event_time_micros(row, col),
                *ts,
                "{} {key}: event time",
                set.view
            );
        }
    }
}

/// The raw gRPC response, in both encodings, read with nothing but the generated types
/// (PACKED through `quiver_proto::packed`'s accessors).
async fn check_raw(endpoint: &str, set: &Rows) {
    let mut raw = FeatureServiceClient::connect(endpoint.to_owned())
        .await
        .unwrap();
    for encoding in [ResponseEncoding::Packed, ResponseEncoding::Cells] {
        let resp = raw
            .get_online_features(quiver_proto::v1::GetOnlineFeaturesRequest {
                features: feature_refs(set.view),
                entity_keys: set.rows.iter().map(|(k, _, _)| k.as_str().into()).collect(),
                encoding: encoding as i32,
                include_event_times: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for col in 0..FEATURE_TYPES.len() {
            for (row, (key, ts, values)) in set.rows.iter().enumerate() {
                let (got, t) = match encoding {
                    ResponseEncoding::Packed => {
                        let c = &resp.packed_columns[col];
                        c.validate(set.rows.len()).unwrap();
                        (c.value(row).map(|v| v.to_kind()), c.event_time_at(row))
                    }
                    ResponseEncoding::Cells => {
                        let c = &resp.columns[col];
                        (c.values[row].kind.clone(), c.event_times_micros[row])
                    }
                };
                let got = got.unwrap_or_else(|| panic!("{} {key}: null ({encoding:?})", set.view));
                assert!(
                    same_bits(&values[col], &got, set.nan),
                    "{} {key} {} in the raw {encoding:?} response: wrote {:?}, read {got:?}",
                    set.view,
                    FEATURE_TYPES[col],
                    values[col]
                );
                assert_eq!(t, *ts, "{} {key}: event time ({encoding:?})", set.view);
            }
        }
    }
}

fn check_quiverctl(endpoint: &str, set: &Rows) {
    let keys: Vec<&str> = set.rows.iter().map(|(k, _, _)| k.as_str()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_quiverctl"))
        .args(["--addr", endpoint, "--output", "json", "get", "--features"])
        .arg(feature_refs(set.view).join(","))
        .arg("--keys")
        .arg(keys.join(","))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quiverctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[derive(serde::Deserialize)]
    struct Cell<'a> {
        #[serde(borrow)]
        value: &'a RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Row<'a> {
        key: String,
        #[serde(borrow)]
        features: std::collections::BTreeMap<String, Cell<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Doc<'a> {
        #[serde(borrow)]
        rows: Vec<Row<'a>>,
    }
    let doc: Doc<'_> = serde_json::from_slice(&out.stdout).unwrap();
    for (row, (key, _, values)) in doc.rows.iter().zip(&set.rows) {
        assert_eq!(&row.key, key);
        for (col, ty) in FEATURE_TYPES.iter().enumerate() {
            let cell = &row.features[&format!("{}:{ty}", set.view)];
            let got = from_quiverctl(ty, cell.value);
            assert!(
                same_bits(&values[col], &got, NanBits::AnyNan),
                "{} {key} {ty} via quiverctl: wrote {:?}, printed {}",
                set.view,
                values[col],
                cell.value.get()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_comes_back_bit_exact_through_every_path() {
    let broker = Broker::start();
    broker.create_topic("fid_json", P);
    broker.create_topic("fid_pb", P);
    let root = tempfile::tempdir().unwrap();
    let mut settings = ClusterSettings::new(broker.bootstrap());
    settings.shard_count = P;
    // R = N: the first node holds every shard, so the raw call to it answers every key.
    settings.replication_factor = 2;
    let members = initial_members(root.path(), 2, &settings);
    let _procs: Vec<NodeProcess> = members
        .iter()
        .map(|m| NodeProcess::start_member(m, 1, None))
        .collect();
    let endpoint = members[0].endpoint();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = match quiver_client::NodeClient::connect(endpoint.clone()).await {
            Ok(mut c) => c.apply_definitions(definitions(), false).await.is_ok(),
            Err(_) => false,
        };
        if applied {
            break;
        }
        assert!(Instant::now() < deadline, "definitions not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every shard served by both nodes before the client maps the cluster.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let map = match quiver_client::NodeClient::connect(endpoint.clone()).await {
            Ok(mut c) => c.cluster_map().await.ok(),
            Err(_) => None,
        };
        if map.is_some_and(|m| {
            m.shards.len() == P as usize
                && m.shards.iter().all(|s| {
                    s.replicas.len() == 2
                        && s.replicas
                            .iter()
                            .all(|r| r.state == ReplicaStateProto::Serving as i32)
                })
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "shards not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seeds: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    let client = Client::builder().seeds(seeds).build().await.unwrap();

    let mut g = ValueGen::new(2026);
    let base_ts = 1_732_000_000_123_456i64;
    let mut random_rows = |prefix: &str| -> Vec<(String, i64, Vec<Kind>)> {
        (0..ROWS)
            .map(|i| {
                let values: Vec<Kind> = FEATURE_TYPES.iter().map(|t| g.value(t)).collect();
                (format!("{prefix}-{i}"), base_ts + i as i64 * 7_919, values)
            })
            .collect()
    };
    let produced_json = Rows {
        view: "fid_json",
        nan: NanBits::AnyNan,
        rows: random_rows("pj"),
    };
    let produced_pb = Rows {
        view: "fid_pb",
        nan: NanBits::Exact,
        rows: random_rows("pp"),
    };
    let pushed_json = Rows {
        view: "fid_json",
        nan: NanBits::AnyNan,
        rows: random_rows("qj"),
    };
    let pushed_pb = Rows {
        view: "fid_pb",
        nan: NanBits::Exact,
        rows: random_rows("qp"),
    };

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (i, (key, ts, values)) in produced_json.rows.iter().enumerate() {
        let payload = json_record(values, *ts, i as u64);
        producer
            .send(
                FutureRecord::to("fid_json").key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    for (key, ts, values) in &produced_pb.rows {
        let payload = protobuf_record(values, *ts);
        producer
            .send(
                FutureRecord::to("fid_pb").key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let mut wm = Watermarks::default();
    for set in [&pushed_json, &pushed_pb] {
        let rows = set.rows.iter().map(|(key, ts, values)| {
            FEATURE_TYPES.iter().zip(values).fold(
                PushRow::new(key.as_str()).event_time_micros(*ts),
                |row, (ty, v)| {
                    row.set(
                        *ty,
                        Value {
                            kind: Some(v.clone()),
                        },
                    )
                },
            )
        });
        wm = client.push(set.view, rows).await.unwrap();
    }
    for set in [&produced_json, &produced_pb, &pushed_json, &pushed_pb] {
        check_smart(&client, set, &wm).await;
        check_raw(&endpoint, set).await;
        check_quiverctl(&endpoint, set);
    }
}
