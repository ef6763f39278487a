//! Encoding pushed rows as Kafka records of a view's source topic: the inverse of
//! [`super::decode`], so a pushed row is ingested by the same path as any produced record.
//!
//! - Key: the entity key as the partitioner hashes it (UTF-8 text, or canonical decimal
//!   for int64 entities).
//! - JSON views: an object of `source_field → value` (bytes base64); the event time goes
//!   into the view's `event_time_field` as an RFC 3339 string with microseconds, or, if the
//!   view has none, into the Kafka timestamp (millisecond precision).
//! - Protobuf views: a `quiver.v1.FeatureRow` keyed by source field.
//! - A delete is a null payload timed by the Kafka timestamp.
//!
//! Every row is validated first; an error names the row and what was wrong.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use prost::Message as _;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{FeatureRow, PushRow, Value};
use serde_json::{Map, Value as Json};

use super::decode::kind_matches;
use crate::registry::model::KeyType;
use crate::registry::{FeatureView, RecordFormat};
use crate::storage::keys;

/// A record ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRecord {
    /// Kafka key: the entity key bytes.
    pub key: Vec<u8>,
    /// Payload; `None` for a delete.
    pub payload: Option<Vec<u8>>,
    /// Kafka timestamp, milliseconds since the epoch: when the push arrived if the payload
    /// carries the event time (what "arrived by" of as-served history reads), else the
    /// event time (a delete, or a JSON view without an event-time field, whose event time
    /// only the timestamp can carry).
    pub timestamp_millis: i64,
    /// The row's event time, µs.
    pub event_time_micros: i64,
}

/// A float as JSON: a number (serde_json writes the shortest text that parses back to the
/// same bits), or the string spelling of a non-finite value, which decode accepts for
/// float features ([`quiver_proto::json_number`]).
fn json_float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Json::String(
                quiver_proto::json_number::f64_text(f)
                    .trim_matches('"')
                    .to_owned(),
            )
        },
        Json::Number,
    )
}

fn json_value(kind: &Kind) -> Json {
    match kind {
        Kind::BoolValue(b) => Json::Bool(*b),
        Kind::Int64Value(i) => Json::from(*i),
        Kind::Float64Value(f) => json_float(*f),
        Kind::StringValue(s) => Json::String(s.clone()),
        Kind::BytesValue(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // Widened exactly; its shortest f64 text parses back to the same f32.
        Kind::Float32Vector(v) => {
            Json::Array(v.values.iter().map(|f| json_float(f64::from(*f))).collect())
        }
        Kind::Int64List(v) => Json::Array(v.values.iter().map(|i| Json::from(*i)).collect()),
        Kind::Float64List(v) => Json::Array(v.values.iter().map(|f| json_float(*f)).collect()),
        Kind::StringList(v) => Json::Array(v.values.iter().cloned().map(Json::String).collect()),
    }
}

/// Validates `row` (number `index` of the push) against `view` and encodes it.
/// `now_micros` times rows whose event time is 0.
///
/// # Errors
/// A message naming the row and what was wrong; nothing is produced then.
pub fn encode_push_row(
    view: &FeatureView,
    key_type: KeyType,
    index: usize,
    row: &PushRow,
    now_micros: i64,
) -> Result<EncodedRecord, String> {
    let at = format!("rows[{index}]");
    let mut key = Vec::new();
    keys::append_entity_key(
        &format_args!("{at}.entity_key"),
        row.entity_key.as_ref().and_then(|k| k.kind.as_ref()),
        key_type,
        &mut key,
    )?;
    let event_time_micros = match row.event_time_micros {
        0 => now_micros,
        t if t < 0 => {
            return Err(format!(
                "{at}.event_time_micros is {t}; event times before 1970 are not supported"
            ));
        }
        t => t,
    };
    let event_time_millis = event_time_micros / 1000;
    if row.delete {
        if !row.features.is_empty() {
            return Err(format!("{at} is a delete but also sets features"));
        }
        return Ok(EncodedRecord {
            key,
            payload: None,
            timestamp_millis: event_time_millis,
            event_time_micros,
        });
    }
    // Unknown names are errors: a typo must not silently write nulls.
    if let Some(name) = row
        .features
        .keys()
        .find(|n| view.feature_index(n).is_none())
    {
        return Err(format!(
            "{at}: view {:?} has no feature {name:?}",
            view.name
        ));
    }
    let value_of = |name: &str| -> Result<Option<&Kind>, String> {
        let Some(Value { kind: Some(k) }) = row.features.get(name) else {
            return Ok(None);
        };
        let f = &view.features[view.feature_index(name).expect("checked above")];
        if !kind_matches(f.value_type, k) {
            return Err(format!(
                "{at}: feature {name:?} is {}, but the view declares {}",
                k.type_name(),
                f.value_type.as_str()
            ));
        }
        Ok(Some(k))
    };
    let payload = match view.source.format {
        RecordFormat::Json => {
            let mut obj = Map::new();
            for f in &view.features {
                if let Some(k) = value_of(&f.name)? {
                    obj.insert(f.source_field.clone(), json_value(k));
                }
            }
            if let Some(field) = &view.source.event_time_field {
                let t = UNIX_EPOCH + Duration::from_micros(event_time_micros as u64);
                obj.insert(
                    field.clone(),
                    Json::String(humantime::format_rfc3339_micros(t).to_string()),
                );
            }
            serde_json::to_vec(&Json::Object(obj)).expect("a JSON value serialises")
        }
        RecordFormat::Protobuf => {
            let mut out = FeatureRow {
                event_time_micros,
                ..Default::default()
            };
            for f in &view.features {
                if let Some(k) = value_of(&f.name)? {
                    out.features.insert(
                        f.source_field.clone(),
                        Value {
                            kind: Some(k.clone()),
                        },
                    );
                }
            }
            out.encode_to_vec()
        }
    };
    // A backfilled or corrected row arrives now, whatever its event time: as-served
    // history (`exclude_late_arrivals`) must not show it at earlier times.
    let carries_event_time = match view.source.format {
        RecordFormat::Json => view.source.event_time_field.is_some(),
        RecordFormat::Protobuf => true,
    };
    Ok(EncodedRecord {
        key,
        payload: Some(payload),
        timestamp_millis: if carries_event_time {
            now_micros / 1000
        } else {
            event_time_millis
        },
        event_time_micros,
    })
}

#[cfg(test)]
mod tests;
