//! Decoding Kafka records into row changes of a feature view.
//!
//! - The Kafka record key is the entity key: UTF-8 text for string entities, canonical
//!   decimal text for int64 entities (the bytes the partitioner hashed).
//! - A null payload (or the JSON literal `null`) is a tombstone, timed by the Kafka
//!   record timestamp.
//! - JSON: one object per record; each feature reads its `source_field`; a missing or null
//!   field is a null value. Bytes are base64 (standard alphabet). The event time comes from
//!   the view's `event_time_field` (a number in the configured unit, or an RFC 3339 string)
//!   or, if none is configured, from the Kafka timestamp.
//! - Protobuf: a `quiver.v1.FeatureRow`; `event_time_micros == 0` means the Kafka timestamp.
//!
//! A type mismatch rejects the whole record (it is malformed): partially applying a row
//! would serve a mix of two events.

use base64::Engine as _;
use prost::Message as _;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{DoubleList, FeatureRow, FloatVector, Int64List, StringList};
use serde_json::Value as Json;

use crate::registry::model::{FeatureType, KeyType, TimeUnit};
use crate::registry::{FeatureView, RecordFormat};

/// Longest accepted entity key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Why a record was rejected. [`DecodeError::reason`] is a bounded metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The record has no key, or an empty one.
    #[error("record has no key (the key must be the entity key)")]
    MissingKey,
    /// The key is not a valid key of the view's entity.
    #[error("record key is not a valid {expected} entity key: {detail}")]
    BadKey {
        /// Entity key type.
        expected: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The payload is not JSON or not an object.
    #[error("payload is not a JSON object: {0}")]
    Json(String),
    /// The payload is not a FeatureRow message.
    #[error("payload is not a quiver.v1.FeatureRow: {0}")]
    Protobuf(String),
    /// A field has the wrong type.
    #[error("field {field:?}: expected {expected}, found {found}")]
    FieldType {
        /// Source field.
        field: String,
        /// Declared feature type.
        expected: &'static str,
        /// What the record holds.
        found: String,
    },
    /// The event time is missing or invalid.
    #[error("event time: {0}")]
    EventTime(String),
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::MissingKey => "missing_key",
            DecodeError::BadKey { .. } => "bad_key",
            DecodeError::Json(_) => "json",
            DecodeError::Protobuf(_) => "protobuf",
            DecodeError::FieldType { .. } => "field_type",
            DecodeError::EventTime(_) => "event_time",
        }
    }
}

/// A record decoded for one view.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    /// Entity key bytes (the Kafka key).
    pub entity_key: Vec<u8>,
    /// Event time, µs since the Unix epoch.
    pub event_time_micros: i64,
    /// Feature values in the view's order, or `None` for a tombstone.
    pub values: Option<Vec<Option<Kind>>>,
}

/// The parts of a Kafka record decoding needs.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Record key.
    pub key: Option<&'a [u8]>,
    /// Record value; `None` is a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Kafka timestamp in milliseconds, if the record has one.
    pub timestamp_millis: Option<i64>,
}

/// Validates the Kafka key as an entity key of `key_type`.
///
/// # Errors
/// [`DecodeError::MissingKey`] or [`DecodeError::BadKey`].
pub fn validate_entity_key(key: Option<&[u8]>, key_type: KeyType) -> Result<&[u8], DecodeError> {
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or(DecodeError::MissingKey)?;
    let bad = |detail: String| DecodeError::BadKey {
        expected: key_type.as_str(),
        detail,
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(bad(format!(
            "{} bytes exceed the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    let text = std::str::from_utf8(key).map_err(|_| bad("not UTF-8".into()))?;
    if key_type == KeyType::Int64 {
        // Only the canonical form, or lookups (which print the integer) would miss it.
        let n: i64 = text
            .parse()
            .map_err(|_| bad(format!("{text:?} is not an integer")))?;
        if n.to_string() != text {
            return Err(bad(format!("{text:?} is not in canonical decimal form")));
        }
    }
    Ok(key)
}

fn kafka_time(raw: &RawRecord<'_>) -> Result<i64, DecodeError> {
    raw.timestamp_millis
        .filter(|t| *t >= 0)
        .map(|t| t.saturating_mul(1000))
        .ok_or_else(|| {
            DecodeError::EventTime(
                "no event-time field configured and the record has no Kafka timestamp".into(),
            )
        })
}

/// Decodes `raw` for `view`, whose entity has key type `key_type`.
///
/// # Errors
/// A [`DecodeError`] naming what is wrong; the record is then skipped as malformed.
pub fn decode_record(
    view: &FeatureView,
    key_type: KeyType,
    raw: &RawRecord<'_>,
) -> Result<DecodedRecord, DecodeError> {
    let entity_key = validate_entity_key(raw.key, key_type)?.to_vec();
    let payload = match raw.payload {
        None => {
            return Ok(DecodedRecord {
                entity_key,
                event_time_micros: kafka_time(raw)?,
                values: None,
            });
        }
        Some(p) => p,
    };
    match view.source.format {
        RecordFormat::Json => decode_json(view, raw, entity_key, payload),
        RecordFormat::Protobuf => decode_protobuf(view, raw, entity_key, payload),
    }
}

fn json_type_name(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(_) => "a boolean".into(),
        Json::Number(n) => format!("the number {n}"),
        Json::String(_) => "a string".into(),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

fn json_event_time(field: &str, unit: TimeUnit, v: Option<&Json>) -> Result<i64, DecodeError> {
    let v = v.ok_or_else(|| DecodeError::EventTime(format!("field {field:?} is missing")))?;
    match v {
        Json::Number(n) => {
            let micros_per = match unit {
                TimeUnit::Seconds => 1_000_000.0,
                TimeUnit::Millis => 1_000.0,
                TimeUnit::Micros => 1.0,
            };
            let f = n.as_f64().ok_or_else(|| {
                DecodeError::EventTime(format!("field {field:?}: {n} is out of range"))
            })?;
            let micros = f * micros_per;
            if !micros.is_finite() || micros.abs() > 9.0e18 {
                return Err(DecodeError::EventTime(format!(
                    "field {field:?}: {n} is out of range"
                )));
            }
            Ok(micros as i64)
        }
        Json::String(s) => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                DecodeError::EventTime(format!("field {field:?}: {s:?} is not RFC 3339: {e}"))
            })?;
            let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| {
                DecodeError::EventTime(format!("field {field:?}: {s:?} is before 1970"))
            })?;
            Ok(d.as_micros() as i64)
        }
        other => Err(DecodeError::EventTime(format!(
            "field {field:?}: expected a number or an RFC 3339 string, found {}",
            json_type_name(other)
        ))),
    }
}

fn json_value(field: &str, ty: FeatureType, v: &Json) -> Result<Option<Kind>, DecodeError> {
    let mismatch = || DecodeError::FieldType {
        field: field.to_owned(),
        expected: ty.as_str(),
        found: json_type_name(v),
    };
    if v.is_null() {
        return Ok(None);
    }
    let kind = match ty {
        FeatureType::Bool => Kind::BoolValue(v.as_bool().ok_or_else(mismatch)?),
        FeatureType::Int64 => Kind::Int64Value(v.as_i64().ok_or_else(mismatch)?),
        FeatureType::Float64 => Kind::Float64Value(v.as_f64().ok_or_else(mismatch)?),
        FeatureType::String => Kind::StringValue(v.as_str().ok_or_else(mismatch)?.to_owned()),
        FeatureType::Bytes => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| DecodeError::FieldType {
                    field: field.to_owned(),
                    expected: "bytes (base64)",
                    found: "a string that is not base64".into(),
                })?;
            Kind::BytesValue(b)
        }
        FeatureType::Float32Vector => {
            let a = v.as_array().ok_or_else(mismatch)?;
            let values = a
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            Kind::Float32Vector(FloatVector { values })
        }
        FeatureType::Int64List => {
            let a = v.as_array().ok_or_else(mismatch)?;
            let values = a
                .iter()
                .map(Json::as_i64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            Kind::Int64List(Int64List { values })
        }
        FeatureType::Float64List => {
            let a = v.as_array().ok_or_else(mismatch)?;
            let values = a
                .iter()
                .map(Json::as_f64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            Kind::Float64List(DoubleList { values })
        }
        FeatureType::StringList => {
            let a = v.as_array().ok_or_else(mismatch)?;
            let values = a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(mismatch)?;
            Kind::StringList(StringList { values })
        }
    };
    Ok(Some(kind))
}

fn decode_json(
    view: &FeatureView,
    raw: &RawRecord<'_>,
    entity_key: Vec<u8>,
    payload: &[u8],
) -> Result<DecodedRecord, DecodeError> {
    let doc: Json =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let obj = match doc {
        Json::Null => {
            return Ok(DecodedRecord {
                entity_key,
                event_time_micros: kafka_time(raw)?,
                values: None,
            });
        }
        Json::Object(o) => o,
        other => {
            return Err(DecodeError::Json(format!(
                "found {}",
                json_type_name(&other)
            )));
        }
    };
    let event_time_micros = match &view.source.event_time_field {
        Some(f) => json_event_time(f, view.source.event_time_unit, obj.get(f))?,
        None => kafka_time(raw)?,
    };
    let mut values = Vec::with_capacity(view.features.len());
    for f in &view.features {
        values.push(match obj.get(&f.source_field) {
            None => None,
            Some(v) => json_value(&f.source_field, f.value_type, v)?,
        });
    }
    Ok(DecodedRecord {
        entity_key,
        event_time_micros,
        values: Some(values),
    })
}

pub(crate) fn kind_matches(ty: FeatureType, k: &Kind) -> bool {
    matches!(
        (ty, k),
        (FeatureType::Bool, Kind::BoolValue(_))
            | (FeatureType::Int64, Kind::Int64Value(_))
            | (FeatureType::Float64, Kind::Float64Value(_))
            | (FeatureType::String, Kind::StringValue(_))
            | (FeatureType::Bytes, Kind::BytesValue(_))
            | (FeatureType::Float32Vector, Kind::Float32Vector(_))
            | (FeatureType::Int64List, Kind::Int64List(_))
            | (FeatureType::Float64List, Kind::Float64List(_))
            | (FeatureType::StringList, Kind::StringList(_))
    )
}

fn decode_protobuf(
    view: &FeatureView,
    raw: &RawRecord<'_>,
    entity_key: Vec<u8>,
    payload: &[u8],
) -> Result<DecodedRecord, DecodeError> {
    let mut row = FeatureRow::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let event_time_micros = if row.event_time_micros == 0 {
        kafka_time(raw)?
    } else {
        row.event_time_micros
    };
    let mut values = Vec::with_capacity(view.features.len());
    for f in &view.features {
        let kind = row.features.remove(&f.source_field).and_then(|v| v.kind);
        if let Some(k) = &kind
            && !kind_matches(f.value_type, k)
        {
            return Err(DecodeError::FieldType {
                field: f.source_field.clone(),
                expected: f.value_type.as_str(),
                found: k.type_name().to_owned(),
            });
        }
        values.push(kind);
    }
    Ok(DecodedRecord {
        entity_key,
        event_time_micros,
        values: Some(values),
    })
}

#[cfg(test)]
mod tests;
