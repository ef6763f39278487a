//! The definition file format (TOML), as written by users. See `docs/REGISTRY.md`.
//!
//! These structs mirror the file one to one; [`super::validate`] turns them into the
//! typed model and reports every problem with the object it belongs to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole definition file: any number of entities, views and feature services.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionFile {
    /// `[[entity]]` tables.
    #[serde(default, rename = "entity")]
    pub entities: Vec<EntityDef>,
    /// `[[view]]` tables.
    #[serde(default, rename = "view")]
    pub views: Vec<ViewDef>,
    /// `[[feature_service]]` tables.
    #[serde(default, rename = "feature_service")]
    pub feature_services: Vec<FeatureServiceDef>,
    /// New view versions being built (re-ingested) while the previous version serves.
    /// Written by the node, not by users: applying a `[[view]]` with a higher version
    /// puts it here until it is promoted.
    #[serde(
        default,
        rename = "pending_view",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pending_views: Vec<ViewDef>,
    /// Earlier versions kept after another took over (a promotion, a rollback, or the
    /// view's deletion), so a rollback can serve them again. Written by the node.
    #[serde(
        default,
        rename = "retained_view",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub retained_views: Vec<super::lifecycle::RetainedViewDef>,
    /// Versions whose rows every replica deletes (retention passed, or replaced while
    /// being built); their numbers are never used again. Written by the node.
    #[serde(
        default,
        rename = "dropped_view_version",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dropped_versions: Vec<super::lifecycle::DroppedVersion>,
}

/// `[[entity]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntityDef {
    /// Entity name.
    pub name: String,
    /// `"string"` or `"int64"`.
    pub key_type: String,
    /// Optional description.
    #[serde(default)]
    pub description: String,
}

/// `[[view]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewDef {
    /// View name.
    pub name: String,
    /// Version, default 1.
    #[serde(default)]
    pub version: Option<u32>,
    /// Entity name.
    pub entity: String,
    /// TTL as a duration such as `"7d"` or `"90m"`; absent or `"0s"` never expires.
    #[serde(default)]
    pub ttl: Option<String>,
    /// How long past row versions (an aggregation view: its events) are kept for as-of
    /// lookups and training sets, e.g. `"30d"`; absent keeps none (see
    /// `docs/POINT_IN_TIME.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// Owner.
    #[serde(default)]
    pub owner: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `[view.source]`
    pub source: SourceDef,
    /// `[[view.feature]]`
    #[serde(default, rename = "feature")]
    pub features: Vec<FeatureDef>,
    /// `[view.aggregation]`: present on aggregation views (features computed from raw
    /// events; see `docs/AGGREGATIONS.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<AggregationDef>,
    /// `[[view.input]]`: the raw event fields an aggregation view reads.
    #[serde(default, rename = "input", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<FeatureDef>,
}

/// `[view.aggregation]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationDef {
    /// How far behind the shard's event-time watermark an event may be and still count,
    /// default `"5m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness: Option<String>,
    /// How far after its Kafka timestamp an event may be stamped, default `"1d"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_future: Option<String>,
    /// `"clock"` (default) or `"event_time"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leading_edge: Option<String>,
}

/// `[view.source]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// Kafka topic.
    pub topic: String,
    /// `"json"` (default) or `"protobuf"`.
    #[serde(default)]
    pub format: Option<String>,
    /// Field with the event time; absent uses the Kafka record timestamp.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// `"seconds"`, `"millis"` (default) or `"micros"` for numeric event times.
    #[serde(default)]
    pub event_time_unit: Option<String>,
}

/// `[[view.feature]]` (and `[[view.input]]`, which uses name, type and source_field)
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    /// Feature name.
    pub name: String,
    /// Type name, e.g. `"float64"`; required except on aggregation features (where it is
    /// derived from the function and the input).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// Source field, default the feature name.
    #[serde(default)]
    pub source_field: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Aggregation features: the function (`count`, `sum`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Aggregation features: the input aggregated (a `[[view.input]]` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Aggregation features: the window (`"1h"`, `"7d"`, `"lifetime"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Aggregation features: the hop (tile resolution); default from the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<String>,
    /// Aggregation features: `input op constant`; only matching events count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `last_n`: how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
}

/// `[[feature_service]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureServiceDef {
    /// Service name.
    pub name: String,
    /// References `view:feature` or `view:*`.
    pub features: Vec<String>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Owner.
    #[serde(default)]
    pub owner: String,
}

impl DefinitionFile {
    /// Parses TOML text.
    ///
    /// # Errors
    /// Returns the TOML parser's message, which names the line and the offending key.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}
