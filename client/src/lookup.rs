//! Lookup requests and columnar results.

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse, ShardWatermark,
};

/// A lookup request under construction.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    req: GetOnlineFeaturesRequest,
}

impl Lookup {
    /// Looks up explicit references `view:feature` (or `view:*`).
    pub fn features<S: Into<String>>(refs: impl IntoIterator<Item = S>) -> Self {
        Lookup {
            req: GetOnlineFeaturesRequest {
                features: refs.into_iter().map(Into::into).collect(),
                ..Default::default()
            },
        }
    }

    /// Looks up every feature of a feature service.
    pub fn feature_service(name: impl Into<String>) -> Self {
        Lookup {
            req: GetOnlineFeaturesRequest {
                feature_service: name.into(),
                ..Default::default()
            },
        }
    }

    /// Sets the entity keys, in the order results are wanted.
    pub fn keys<K: Into<EntityKey>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.req.entity_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Requires replicas to have applied at least these watermarks.
    pub fn min_watermarks(mut self, wms: Vec<ShardWatermark>) -> Self {
        self.req.min_watermarks = wms;
        self
    }

    /// The wire request.
    pub fn into_request(self) -> GetOnlineFeaturesRequest {
        self.req
    }
}

/// A columnar lookup result; accessors borrow from it, nothing is copied.
#[derive(Debug, Clone)]
pub struct LookupResult {
    resp: GetOnlineFeaturesResponse,
}

impl LookupResult {
    /// Wraps a response.
    pub fn new(resp: GetOnlineFeaturesResponse) -> Self {
        LookupResult { resp }
    }

    /// Number of entity keys (rows).
    pub fn row_count(&self) -> usize {
        self.resp.columns.first().map_or(0, |c| c.values.len())
    }

    /// Feature names (`view:feature`) in column order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.resp.columns.iter().map(|c| c.name.as_str())
    }

    /// Index of a feature column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.resp.columns.iter().position(|c| c.name == name)
    }

    /// The value at (`row`, `column`), `None` if null or not PRESENT.
    pub fn value(&self, row: usize, column: usize) -> Option<&Kind> {
        self.resp
            .columns
            .get(column)?
            .values
            .get(row)?
            .kind
            .as_ref()
    }

    /// The status at (`row`, `column`).
    pub fn status(&self, row: usize, column: usize) -> FeatureStatus {
        self.resp
            .columns
            .get(column)
            .and_then(|c| c.statuses.get(row))
            .and_then(|s| FeatureStatus::try_from(*s).ok())
            .unwrap_or(FeatureStatus::Unspecified)
    }

    /// Event time (µs since the epoch) of the value at (`row`, `column`); 0 if NOT_FOUND.
    pub fn event_time_micros(&self, row: usize, column: usize) -> i64 {
        self.resp
            .columns
            .get(column)
            .and_then(|c| c.event_times_micros.get(row))
            .copied()
            .unwrap_or(0)
    }

    /// An int64 value, if present and of that type.
    pub fn i64(&self, row: usize, column: usize) -> Option<i64> {
        match self.value(row, column)? {
            Kind::Int64Value(v) => Some(*v),
            _ => None,
        }
    }

    /// A float64 value, if present and of that type.
    pub fn f64(&self, row: usize, column: usize) -> Option<f64> {
        match self.value(row, column)? {
            Kind::Float64Value(v) => Some(*v),
            _ => None,
        }
    }

    /// A string value, if present and of that type.
    pub fn str(&self, row: usize, column: usize) -> Option<&str> {
        match self.value(row, column)? {
            Kind::StringValue(v) => Some(v),
            _ => None,
        }
    }

    /// A bool value, if present and of that type.
    pub fn bool(&self, row: usize, column: usize) -> Option<bool> {
        match self.value(row, column)? {
            Kind::BoolValue(v) => Some(*v),
            _ => None,
        }
    }

    /// The watermarks of the shards that answered.
    pub fn watermarks(&self) -> &[ShardWatermark] {
        &self.resp.watermarks
    }

    /// The raw response.
    pub fn response(&self) -> &GetOnlineFeaturesResponse {
        &self.resp
    }
}
