//! Fuzz harnesses, one function per target, shared by the `cargo fuzz` targets in
//! `fuzz/fuzz_targets/` and by the corpus replay test (`tests/fuzz_corpus.rs`), so a
//! crashing input found by the fuzzer becomes a regression test by being checked in.
//!
//! Each harness feeds arbitrary bytes to code that parses untrusted input and checks
//! properties beyond "does not panic" where they are cheap: a decoded record or row
//! re-encodes to the same bytes.

use std::sync::{Arc, OnceLock};

use prost::Message as _;
use quiver_proto::Partitioner;
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::v1::PushRequest;

use crate::config::Limits;
use crate::ingest::decode::{RawRecord, decode_record};
use crate::registry::{DefinitionFile, KeyType, Registry, RegistrySnapshot, validate_merge};
use crate::storage::row_codec::{decode_row, decode_selected, encode_row, encode_tombstone};

/// The registry the harnesses run against: every feature type, JSON and protobuf views.
pub const DEFINITIONS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
[[entity]]
name = "card"
key_type = "int64"
[[view]]
name = "all_json"
entity = "user"
[view.source]
topic = "j"
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
[[view]]
name = "all_pb"
entity = "card"
[view.source]
topic = "p"
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
name = "v"
type = "float32_vector"
[[view.feature]]
name = "sl"
type = "string_list"
[[feature_service]]
name = "svc"
features = ["all_json:i", "all_json:s"]
"#;

struct Fixture {
    snapshot: Arc<RegistrySnapshot>,
    file: DefinitionFile,
    limits: Limits,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let r = Registry::in_memory();
        r.apply_toml(DEFINITIONS, false)
            .expect("fuzz definitions are valid");
        let mut limits = crate::config::NodeConfigFile::default()
            .validate()
            .expect("default config is valid")
            .limits;
        limits.max_batch_keys = 64;
        Fixture {
            snapshot: r.snapshot(),
            file: DefinitionFile::from_toml(DEFINITIONS).expect("fuzz definitions parse"),
            limits,
        }
    })
}

/// Splits input into a Kafka record: byte 0 is the key length (capped at what remains),
/// the rest the payload; key lengths ≡ 3 (mod 7) make a tombstone (no payload).
fn record(data: &[u8]) -> RawRecord<'_> {
    let Some((&k, rest)) = data.split_first() else {
        return RawRecord {
            key: None,
            payload: None,
            timestamp_millis: None,
        };
    };
    let k = usize::from(k).min(rest.len());
    let (key, payload) = rest.split_at(k);
    RawRecord {
        key: Some(key),
        payload: (k % 7 != 3).then_some(payload),
        timestamp_millis: Some(1_700_000_000_000),
    }
}

fn decode_and_round_trip(view: &str, key_type: KeyType, data: &[u8]) {
    let f = fixture();
    let view = &f.snapshot.views[view];
    let Ok(rec) = decode_record(view, key_type, &record(data)) else {
        return;
    };
    let mut bytes = Vec::new();
    match &rec.values {
        None => encode_tombstone(rec.event_time_micros, &mut bytes),
        Some(values) => {
            assert_eq!(values.len(), view.features.len(), "one value per feature");
            encode_row(rec.event_time_micros, values, &mut bytes);
        }
    }
    let row = decode_row(&bytes).expect("a row we encoded decodes");
    let mut again = Vec::new();
    if rec.values.is_some() {
        encode_row(row.header.event_time_micros, &row.values, &mut again);
        assert_eq!(bytes, again, "row codec round trip");
    }
}

/// Kafka record (JSON payload) → row, and the row through the storage codec.
pub fn decode_json(data: &[u8]) {
    decode_and_round_trip("all_json", KeyType::String, data);
}

/// Kafka record (protobuf `FeatureRow` payload) → row, and through the storage codec.
pub fn decode_protobuf(data: &[u8]) {
    decode_and_round_trip("all_pb", KeyType::Int64, data);
}

/// View definition parsing and validation against the fixture registry.
pub fn view_definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = DefinitionFile::from_toml(text) else {
        return;
    };
    let _ = validate_merge(&DefinitionFile::default(), &file);
    let _ = validate_merge(&fixture().file, &file);
}

/// Request validation: byte 0 picks a lookup or a push; the rest is the protobuf message.
pub fn request(data: &[u8]) {
    let f = fixture();
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        // As the node decodes a lookup: references as bytes, UTF-8 checked by the plan.
        let Ok(req) = LookupRequest::decode(body) else {
            return;
        };
        if let Ok(plan) =
            crate::serve::plan::plan_lookup(req, &f.snapshot, &f.limits, Partitioner::Murmur2, 8)
        {
            assert!(plan.key_count() <= f.limits.max_batch_keys);
            assert!(plan.shards().all(|s| s.0 < 8));
        }
    } else {
        let Ok(req) = PushRequest::decode(body) else {
            return;
        };
        if crate::serve::validate::check_push_rows(&req.rows, &f.limits).is_err() {
            return;
        }
        let Some(view) = f.snapshot.views.get(&req.view) else {
            return;
        };
        let key_type = f.snapshot.entities[&view.entity].key_type;
        for (i, row) in req.rows.iter().enumerate() {
            let _ = crate::ingest::encode::encode_push_row(view, key_type, i, row, 1);
        }
    }
}

/// The storage row codec on arbitrary bytes (corrupt values on disk must not crash a
/// node): full and selective decoding; a row that decodes re-encodes identically.
pub fn row_codec(data: &[u8]) {
    if let Ok(row) = decode_row(data)
        && !row.header.tombstone
    {
        let mut bytes = Vec::new();
        encode_row(row.header.event_time_micros, &row.values, &mut bytes);
        let again = decode_row(&bytes).expect("re-encoded row decodes");
        let mut twice = Vec::new();
        encode_row(again.header.event_time_micros, &again.values, &mut twice);
        assert_eq!(bytes, twice, "row codec is stable");
    }
    let slots = [Some(1), None, Some(0), None, Some(2)];
    let mut out = vec![None; 3];
    let _ = decode_selected(data, &slots, &mut out);
}
