//! The validated registry model: entities, feature views and feature services.
//!
//! Objects here are immutable once built; a registry change builds a new
//! [`RegistrySnapshot`](super::RegistrySnapshot) and swaps it in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The type of an entity's join key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// UTF-8 string; the Kafka record key is its UTF-8 bytes.
    String,
    /// 64-bit signed integer; the Kafka record key is its decimal text (e.g. `b"42"`).
    Int64,
}

impl KeyType {
    /// Name used in definition files.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Int64 => "int64",
        }
    }
}

/// A named join key (e.g. `user_id: string`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// Unique entity name.
    pub name: String,
    /// Type of its key values.
    pub key_type: KeyType,
    /// Free-text description.
    pub description: String,
}

/// The type of a feature's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    /// `bool`
    Bool,
    /// `int64`
    Int64,
    /// `float64`
    Float64,
    /// UTF-8 `string`
    String,
    /// Opaque `bytes`
    Bytes,
    /// `float32_vector`, e.g. an embedding.
    Float32Vector,
    /// `int64_list`
    Int64List,
    /// `float64_list`
    Float64List,
    /// `string_list`
    StringList,
}

impl FeatureType {
    /// Every type, for validation messages and tests.
    pub const ALL: [FeatureType; 9] = [
        FeatureType::Bool,
        FeatureType::Int64,
        FeatureType::Float64,
        FeatureType::String,
        FeatureType::Bytes,
        FeatureType::Float32Vector,
        FeatureType::Int64List,
        FeatureType::Float64List,
        FeatureType::StringList,
    ];

    /// Name used in definition files.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Bool => "bool",
            FeatureType::Int64 => "int64",
            FeatureType::Float64 => "float64",
            FeatureType::String => "string",
            FeatureType::Bytes => "bytes",
            FeatureType::Float32Vector => "float32_vector",
            FeatureType::Int64List => "int64_list",
            FeatureType::Float64List => "float64_list",
            FeatureType::StringList => "string_list",
        }
    }

    /// Parses a definition-file type name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One typed feature of a view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    /// Feature name, unique within the view.
    pub name: String,
    /// Value type.
    pub value_type: FeatureType,
    /// Field of the source record the value is read from.
    pub source_field: String,
    /// Free-text description.
    pub description: String,
}

/// How records of a source topic are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// A JSON object per record.
    Json,
    /// A `quiver.v1.FeatureRow` protobuf message per record.
    Protobuf,
}

/// Unit of a numeric event-time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Seconds since the Unix epoch.
    Seconds,
    /// Milliseconds since the Unix epoch.
    Millis,
    /// Microseconds since the Unix epoch.
    Micros,
}

/// Where a view's rows come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// Kafka topic; it must have exactly `shard_count` partitions.
    pub topic: String,
    /// Record encoding.
    pub format: RecordFormat,
    /// JSON field holding the event time; `None` uses the Kafka record timestamp.
    pub event_time_field: Option<String>,
    /// Unit of a numeric event-time field (strings are parsed as RFC 3339).
    pub event_time_unit: TimeUnit,
}

/// A named, versioned table keyed by one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureView {
    /// Unique view name.
    pub name: String,
    /// Version; part of the storage key so versions never share rows.
    pub version: u32,
    /// Name of the entity the view is keyed by.
    pub entity: String,
    /// Features in declaration order; the order is the storage order.
    pub features: Vec<Feature>,
    /// Rows older than this (by event time) are EXPIRED; `None` never expires.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// How long past row versions (an aggregation view: its accepted events) are kept
    /// (by event time) for as-of lookups; `None` keeps none.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub history: Option<Duration>,
    /// Owning team or person.
    pub owner: String,
    /// Free-text description.
    pub description: String,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// Source topic and record format.
    pub source: Source,
    /// Present on aggregation views: how each feature is computed from raw events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<std::sync::Arc<super::aggregation::Aggregation>>,
}

impl FeatureView {
    /// The view whose features a source record carries: the inputs of an aggregation
    /// view, the view itself otherwise (what ingest decodes and `Push` validates).
    pub fn record_view(&self) -> &FeatureView {
        match &self.aggregation {
            Some(a) => &a.input_view,
            None => self,
        }
    }

    /// Returns the index of feature `name` in storage order.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }
}

/// A named set of `view:feature` references a model uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureService {
    /// Unique service name.
    pub name: String,
    /// Resolved references, each `(view, feature)`.
    pub features: Vec<(String, String)>,
    /// Free-text description.
    pub description: String,
    /// Owning team or person.
    pub owner: String,
}
