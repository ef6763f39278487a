//! Lookup requests and their columnar results.
//!
//! A [`LookupResult`] keeps the node responses it was assembled from and an index from
//! request row to (response, row): reading a value borrows it from the response it
//! arrived in; nothing is copied to reassemble request order, and duplicate keys share
//! one fetched row.

use std::time::Duration;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureColumn, FeatureStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
};

use crate::watermark::Watermarks;

/// A lookup: feature references (or a feature service) and a batch of entity keys.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub(crate) features: Vec<String>,
    pub(crate) feature_service: String,
    pub(crate) keys: Vec<EntityKey>,
    pub(crate) min_watermarks: Watermarks,
    pub(crate) deadline: Option<Duration>,
}

impl Lookup {
    /// Looks up explicit references `view:feature` (or `view:*`), in column order.
    pub fn features<S: Into<String>>(refs: impl IntoIterator<Item = S>) -> Self {
        Lookup {
            features: refs.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Looks up every feature of a registered feature service.
    pub fn feature_service(name: impl Into<String>) -> Self {
        Lookup {
            feature_service: name.into(),
            ..Default::default()
        }
    }

    /// Sets the entity keys, in the order results are wanted. Duplicates are fetched once.
    pub fn keys<K: Into<EntityKey>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Requires replicas to have applied at least `wm` (e.g. from [`crate::Client::push`]):
    /// read-your-writes.
    pub fn min_watermarks(mut self, wm: &Watermarks) -> Self {
        self.min_watermarks.merge(wm);
        self
    }

    /// Overrides the client's deadline for this call.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The entity keys.
    pub fn entity_keys(&self) -> &[EntityKey] {
        &self.keys
    }

    /// The wire request for one node, with every key.
    pub fn into_request(self) -> GetOnlineFeaturesRequest {
        GetOnlineFeaturesRequest {
            features: self.features,
            feature_service: self.feature_service,
            entity_keys: self.keys,
            min_watermarks: self.min_watermarks.to_wire(None),
            watermark_wait_ms: 0,
        }
    }
}

/// A columnar lookup result, read per row and per feature without copying.
#[derive(Debug, Clone)]
pub struct LookupResult {
    parts: Vec<GetOnlineFeaturesResponse>,
    /// Request row → (part, row within the part).
    rows: Vec<(u32, u32)>,
    watermarks: Watermarks,
}

impl LookupResult {
    /// Wraps one response covering every row in order.
    pub fn new(resp: GetOnlineFeaturesResponse) -> Self {
        let n = resp.columns.first().map_or(0, |c| c.values.len());
        let watermarks = Watermarks::from_wire(&resp.watermarks);
        LookupResult {
            parts: vec![resp],
            rows: (0..n as u32).map(|r| (0, r)).collect(),
            watermarks,
        }
    }

    /// Assembles sub-responses; `rows[i]` locates request row `i`.
    pub(crate) fn assemble(parts: Vec<GetOnlineFeaturesResponse>, rows: Vec<(u32, u32)>) -> Self {
        let mut watermarks = Watermarks::new();
        for p in &parts {
            watermarks.merge_wire(&p.watermarks);
        }
        LookupResult {
            parts,
            rows,
            watermarks,
        }
    }

    fn cell(&self, row: usize, column: usize) -> Option<(&FeatureColumn, usize)> {
        let (part, r) = *self.rows.get(row)?;
        let col = self.parts.get(part as usize)?.columns.get(column)?;
        Some((col, r as usize))
    }

    /// Number of entity keys (rows), duplicates included.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Number of feature columns.
    pub fn column_count(&self) -> usize {
        self.parts.first().map_or(0, |p| p.columns.len())
    }

    /// Feature names (`view:feature`) in column order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.parts
            .first()
            .into_iter()
            .flat_map(|p| p.columns.iter().map(|c| c.name.as_str()))
    }

    /// Index of a feature column by name (`view:feature`).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.parts
            .first()?
            .columns
            .iter()
            .position(|c| c.name == name)
    }

    /// The value at (`row`, `column`); `None` if null or not PRESENT.
    pub fn value(&self, row: usize, column: usize) -> Option<&Kind> {
        let (c, r) = self.cell(row, column)?;
        c.values.get(r)?.kind.as_ref()
    }

    /// The status at (`row`, `column`).
    pub fn status(&self, row: usize, column: usize) -> FeatureStatus {
        self.cell(row, column)
            .and_then(|(c, r)| c.statuses.get(r))
            .and_then(|s| FeatureStatus::try_from(*s).ok())
            .unwrap_or(FeatureStatus::Unspecified)
    }

    /// Event time (µs since the epoch) of the value at (`row`, `column`); 0 if NOT_FOUND.
    pub fn event_time_micros(&self, row: usize, column: usize) -> i64 {
        self.cell(row, column)
            .and_then(|(c, r)| c.event_times_micros.get(r).copied())
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

    /// A bytes value, if present and of that type.
    pub fn bytes(&self, row: usize, column: usize) -> Option<&[u8]> {
        match self.value(row, column)? {
            Kind::BytesValue(v) => Some(v),
            _ => None,
        }
    }

    /// A float32 vector (e.g. an embedding), if present and of that type.
    pub fn f32_vector(&self, row: usize, column: usize) -> Option<&[f32]> {
        match self.value(row, column)? {
            Kind::Float32Vector(v) => Some(&v.values),
            _ => None,
        }
    }

    /// Row `row` as a view that reads features by name.
    pub fn row(&self, row: usize) -> Row<'_> {
        Row { result: self, row }
    }

    /// The highest watermark of every shard that answered: pass it as
    /// [`Lookup::min_watermarks`] elsewhere to read at least this state.
    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    /// The node responses this result was assembled from.
    pub fn responses(&self) -> &[GetOnlineFeaturesResponse] {
        &self.parts
    }
}

/// One row of a [`LookupResult`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    result: &'a LookupResult,
    row: usize,
}

impl<'a> Row<'a> {
    /// The value of feature `name` (`view:feature`), if PRESENT and not null.
    pub fn get(&self, name: &str) -> Option<&'a Kind> {
        self.result.value(self.row, self.result.column_index(name)?)
    }

    /// The status of feature `name`; `Unspecified` if the result has no such column.
    pub fn status(&self, name: &str) -> FeatureStatus {
        self.result
            .column_index(name)
            .map_or(FeatureStatus::Unspecified, |c| {
                self.result.status(self.row, c)
            })
    }

    /// Event time (µs) of feature `name`'s row.
    pub fn event_time_micros(&self, name: &str) -> i64 {
        self.result
            .column_index(name)
            .map_or(0, |c| self.result.event_time_micros(self.row, c))
    }
}
