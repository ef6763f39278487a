//! Decoding Kafka records into row changes of a feature view.
//!
//! - The Kafka record key is the entity key: UTF-8 text for string entities, canonical
//!   decimal text for int64 entities (the bytes the partitioner hashed).
//! - A null payload (or the JSON literal `null`) is a tombstone, timed by the Kafka
//!   record timestamp.
//! - JSON: one object per record; each feature reads its `source_field`; a missing or null
//!   field is a null value. Bytes are base64 (standard alphabet). Numbers are read exactly
//!   from their text by the feature's type; non-finite floats are the strings `"NaN"`,
//!   `"Infinity"`, `"-Infinity"` (or Python's bare tokens) — see
//!   [`quiver_proto::json_number`]. The event time comes from the view's
//!   `event_time_field` (a number in the configured unit, converted to microseconds
//!   exactly, or an RFC 3339 string) or, if none is configured, from the Kafka timestamp.
//! - Protobuf: a `quiver.v1.FeatureRow`; `event_time_micros == 0` means the Kafka timestamp.
//!
//! A type mismatch rejects the whole record (it is malformed): partially applying a row
//! would serve a mix of two events.

use std::borrow::Cow;

use base64::Engine as _;
use prost::Message as _;
use quiver_proto::json_number::{self, NumberError};
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{DoubleList, FeatureRow, FloatVector, Int64List, StringList};
use serde_json::value::RawValue;

use crate::registry::model::{FeatureType, KeyType, TimeUnit};
use crate::registry::{FeatureView, RecordFormat};
use crate::storage::keys::MAX_KEY_BYTES;

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

/// A JSON record's top-level fields, borrowed from the payload. Each feature's value is
/// parsed from its own text by the feature's type ([`quiver_proto::json_number`]), so no
/// number goes through a type it was not written for (a float64 through a lossy parser, a
/// float32 through f64, an int64 through a float), and fields no view reads are only
/// skimmed, never built into a tree.
struct JsonFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> JsonFields<'a> {
    /// The value of `name`; the last one if the record repeats it (as serde_json's maps do).
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// What a JSON payload holds at the top level.
enum JsonDoc<'a> {
    /// `null`: a tombstone.
    Null,
    /// An object.
    Object(JsonFields<'a>),
    /// Anything else (named for the error).
    Other(&'static str),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonDoc<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key<'a>(Cow<'a, str>);
        impl<'de: 'a, 'a> serde::Deserialize<'de> for Key<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Cow<'de, str>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                        Ok(Cow::Borrowed(v))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                        // Names with escapes are unescaped into a new string.
                        Ok(Cow::Owned(v.to_owned()))
                    }
                }
                d.deserialize_str(V).map(Key)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonDoc<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object or null")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonDoc::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(JsonDoc::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(JsonDoc::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(JsonDoc::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(JsonDoc::Other("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(JsonDoc::Other("a string"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonDoc::Other("an array"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push((k.0, v));
                }
                Ok(JsonDoc::Object(JsonFields(fields)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The kind of JSON value `text` is, for error messages.
fn json_type_name(text: &str) -> String {
    match text.trim_start().as_bytes().first() {
        Some(b'n') => "null".into(),
        Some(b't' | b'f') => "a boolean".into(),
        Some(b'"') => "a string".into(),
        Some(b'[') => "an array".into(),
        Some(b'{') if text.contains("\\u0000non-finite") => "a non-finite number".into(),
        Some(b'{') => "an object".into(),
        _ => {
            let mut shown: String = text.chars().take(40).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            format!("the number {shown}")
        }
    }
}

fn json_event_time(field: &str, unit: TimeUnit, v: Option<&RawValue>) -> Result<i64, DecodeError> {
    let v = v.ok_or_else(|| DecodeError::EventTime(format!("field {field:?} is missing")))?;
    let text = v.get();
    if text.starts_with('"') {
        let s: Cow<'_, str> = serde_json::from_str(text)
            .map_err(|e| DecodeError::EventTime(format!("field {field:?}: {e}")))?;
        let t = humantime::parse_rfc3339_weak(&s).map_err(|e| {
            DecodeError::EventTime(format!("field {field:?}: {s:?} is not RFC 3339: {e}"))
        })?;
        let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| {
            DecodeError::EventTime(format!("field {field:?}: {s:?} is before 1970"))
        })?;
        return i64::try_from(d.as_micros()).map_err(|_| {
            DecodeError::EventTime(format!("field {field:?}: {s:?} is out of range"))
        });
    }
    let scale = match unit {
        TimeUnit::Seconds => 6,
        TimeUnit::Millis => 3,
        TimeUnit::Micros => 0,
    };
    json_number::decimal_to_scaled_i64(text, scale).map_err(|e| match e {
        NumberError::Type(_) => DecodeError::EventTime(format!(
            "field {field:?}: expected a number or an RFC 3339 string, found {}",
            json_type_name(text)
        )),
        NumberError::Range(_) => {
            DecodeError::EventTime(format!("field {field:?}: {text} is out of range"))
        }
    })
}

/// Parses a JSON list whose elements each parse with `item`.
fn json_list<T>(text: &str, mut item: impl FnMut(&str) -> Option<T>) -> Option<Vec<T>> {
    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    items.iter().map(|v| item(v.get())).collect()
}

fn json_value(field: &str, ty: FeatureType, v: &RawValue) -> Result<Option<Kind>, DecodeError> {
    let text = v.get().trim();
    let mismatch = |found: String| DecodeError::FieldType {
        field: field.to_owned(),
        expected: ty.as_str(),
        found,
    };
    if text == "null" {
        return Ok(None);
    }
    let number = |r: Result<Kind, NumberError>| {
        r.map_err(|e| match e {
            NumberError::Type(_) => mismatch(json_type_name(text)),
            NumberError::Range(t) => mismatch(format!("{text}, outside the {t} range")),
        })
    };
    let parsed = |ok: Option<Kind>| ok.ok_or_else(|| mismatch(json_type_name(text)));
    let kind = match ty {
        FeatureType::Bool => parsed(match text {
            "true" => Some(Kind::BoolValue(true)),
            "false" => Some(Kind::BoolValue(false)),
            _ => None,
        })?,
        FeatureType::Int64 => number(json_number::parse_i64(text).map(Kind::Int64Value))?,
        FeatureType::Float64 => number(json_number::parse_f64(text).map(Kind::Float64Value))?,
        FeatureType::String => parsed(
            text.starts_with('"')
                .then(|| serde_json::from_str::<String>(text).ok())
                .flatten()
                .map(Kind::StringValue),
        )?,
        FeatureType::Bytes => {
            let s = text
                .starts_with('"')
                .then(|| serde_json::from_str::<Cow<'_, str>>(text).ok())
                .flatten()
                .ok_or_else(|| mismatch(json_type_name(text)))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|_| DecodeError::FieldType {
                    field: field.to_owned(),
                    expected: "bytes (base64)",
                    found: "a string that is not base64".into(),
                })?;
            Kind::BytesValue(b)
        }
        FeatureType::Float32Vector => parsed(
            json_list(text, |t| json_number::parse_f32(t).ok())
                .map(|values| Kind::Float32Vector(FloatVector { values })),
        )?,
        FeatureType::Int64List => parsed(
            json_list(text, |t| json_number::parse_i64(t).ok())
                .map(|values| Kind::Int64List(Int64List { values })),
        )?,
        FeatureType::Float64List => parsed(
            json_list(text, |t| json_number::parse_f64(t).ok())
                .map(|values| Kind::Float64List(DoubleList { values })),
        )?,
        FeatureType::StringList => parsed(
            text.starts_with('[')
                .then(|| serde_json::from_str::<Vec<String>>(text).ok())
                .flatten()
                .map(|values| Kind::StringList(StringList { values })),
        )?,
    };
    Ok(Some(kind))
}

/// Parses a JSON payload; Python's bare `NaN`/`Infinity` tokens are accepted (see
/// [`json_number::quote_non_finite_tokens`]), at the cost of a second parse only for
/// records that have them.
fn with_json_doc<T>(
    payload: &[u8],
    f: impl FnOnce(JsonDoc<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    match serde_json::from_slice::<JsonDoc<'_>>(payload) {
        Ok(doc) => f(doc),
        Err(e) => match json_number::quote_non_finite_tokens(payload) {
            Some(fixed) => match serde_json::from_slice::<JsonDoc<'_>>(&fixed) {
                Ok(doc) => f(doc),
                Err(_) => Err(DecodeError::Json(e.to_string())),
            },
            None => Err(DecodeError::Json(e.to_string())),
        },
    }
}

fn decode_json(
    view: &FeatureView,
    raw: &RawRecord<'_>,
    entity_key: Vec<u8>,
    payload: &[u8],
) -> Result<DecodedRecord, DecodeError> {
    with_json_doc(payload, |doc| {
        let obj = match doc {
            JsonDoc::Null => {
                return Ok(DecodedRecord {
                    entity_key,
                    event_time_micros: kafka_time(raw)?,
                    values: None,
                });
            }
            JsonDoc::Object(o) => o,
            JsonDoc::Other(what) => return Err(DecodeError::Json(format!("found {what}"))),
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
