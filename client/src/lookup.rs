//! Lookup requests and their columnar results.
//!
//! A [`LookupResult`] holds one typed packed column per feature in request order
//! (`quiver.v1.PackedColumn`): values are read in place, never as a message per value;
//! duplicate keys share one fetched row.

use std::time::Duration;

use quiver_proto::packed::ValueRef;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, FeatureType, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
    PackedColumn,
};

use crate::error::ClientError;

use crate::watermark::Watermarks;

mod assemble;
pub(crate) mod entities;
mod split;

pub(crate) use assemble::{in_request_order, malformed, packed_columns};

/// A lookup: feature references (or a feature service) and a batch of entity keys.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub(crate) features: Vec<String>,
    pub(crate) feature_service: String,
    pub(crate) keys: Vec<EntityKey>,
    pub(crate) min_watermarks: Watermarks,
    pub(crate) deadline: Option<Duration>,
    pub(crate) event_times: bool,
    pub(crate) bypass_cache: bool,
    pub(crate) as_of: Option<AsOfSpec>,
    /// Keys per entity, for features spanning entities ([`Lookup::entity_keys_of`]).
    pub(crate) keys_by_entity: Vec<(String, Vec<EntityKey>)>,
}

/// The time(s) of an as-of lookup ([`Lookup::as_of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AsOfSpec {
    /// T for every key, µs (when `key_times` is empty).
    pub(crate) time: i64,
    /// T per key, in key order.
    pub(crate) key_times: Vec<i64>,
    pub(crate) exclude_late_arrivals: bool,
}

impl AsOfSpec {
    pub(crate) fn to_wire(&self, key_times: Vec<i64>) -> quiver_proto::v1::AsOf {
        quiver_proto::v1::AsOf {
            time_micros: if key_times.is_empty() { self.time } else { 0 },
            key_times_micros: key_times,
            exclude_late_arrivals: self.exclude_late_arrivals,
        }
    }
}

/// Microseconds since the Unix epoch of `t` (negative before it).
fn micros(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
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

    /// Also returns each value's event time ([`LookupResult::event_time_micros`]). Off by
    /// default: a timestamp per cell is as large as a float64 on the wire.
    pub fn event_times(mut self, on: bool) -> Self {
        self.event_times = on;
        self
    }

    /// Skips the client's row cache for this call (read from replicas; the answer does not
    /// fill the cache). No effect on a client without a cache.
    pub fn bypass_cache(mut self, bypass: bool) -> Self {
        self.bypass_cache = bypass;
        self
    }

    /// Reads every key's values as of `t` instead of the latest: the version with the
    /// greatest event time at or before `t`, within the view's TTL at `t`, from the row
    /// history of views defined with `history` (others are refused). Not cached.
    pub fn as_of(self, t: std::time::SystemTime) -> Self {
        self.as_of_micros(micros(t))
    }

    /// As [`Lookup::as_of`], with `t` in µs since the Unix epoch.
    pub fn as_of_micros(mut self, t: i64) -> Self {
        let spec = self.as_of.get_or_insert_with(AsOfSpec::default);
        spec.time = t;
        spec.key_times.clear();
        self
    }

    /// Reads each key as of its own time (µs since the Unix epoch), one per key in key
    /// order — a label set's timestamps (checked against the keys when the call starts).
    pub fn as_of_per_key(mut self, times: impl IntoIterator<Item = i64>) -> Self {
        let spec = self.as_of.get_or_insert_with(AsOfSpec::default);
        spec.key_times = times.into_iter().collect();
        self
    }

    /// With an as-of time: only versions that had arrived by it count (their Kafka
    /// timestamp), so the answer is what a lookup at that time returned — no late or
    /// backfilled event leaks into it.
    pub fn exclude_late_arrivals(mut self, on: bool) -> Self {
        self.as_of
            .get_or_insert_with(AsOfSpec::default)
            .exclude_late_arrivals = on;
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
            include_event_times: self.event_times,
            as_of: self.as_of.map(|a| {
                let times = a.key_times.clone();
                a.to_wire(times)
            }),
            ..Default::default()
        }
    }

    /// Checks the as-of part of the lookup against its keys (before anything is sent).
    pub(crate) fn check_as_of(&self) -> Result<(), ClientError> {
        let Some(a) = &self.as_of else { return Ok(()) };
        if !a.key_times.is_empty() && a.key_times.len() != self.rows() {
            return Err(ClientError::InvalidRequest(format!(
                "as_of_per_key has {} times for {} entity keys: give one per key, in key order",
                a.key_times.len(),
                self.rows()
            )));
        }
        if a.key_times.is_empty() && a.time == 0 {
            return Err(ClientError::InvalidRequest(
                "exclude_late_arrivals needs an as-of time: call as_of or as_of_per_key".into(),
            ));
        }
        Ok(())
    }
}

/// A columnar lookup result in request order: one typed [`PackedColumn`] per feature.
///
/// Values are read without a message or an allocation per value: [`LookupResult::value`]
/// borrows, the scalar accessors copy a number, and the typed column accessors
/// ([`LookupResult::f64_column`], [`LookupResult::f32_matrix`], …) hand out the column's
/// whole array to feed a model directly. A lookup answered by one node in request order
/// keeps that node's columns as they arrived; one fanned out over several nodes is merged
/// once, copying each value into place (no per-value allocation).
#[derive(Debug, Clone)]
pub struct LookupResult {
    columns: Vec<PackedColumn>,
    rows: usize,
    watermarks: Watermarks,
    /// The version each view was read at (see [`LookupResult::view_versions`]).
    view_versions: Vec<u32>,
}

impl LookupResult {
    /// A result of finished columns.
    pub(crate) fn from_columns(
        columns: Vec<PackedColumn>,
        rows: usize,
        watermarks: Watermarks,
    ) -> Self {
        LookupResult {
            columns,
            rows,
            watermarks,
            view_versions: Vec::new(),
        }
    }

    /// Sets the versions the answer was read at.
    pub(crate) fn with_view_versions(mut self, versions: Vec<u32>) -> Self {
        self.view_versions = versions;
        self
    }

    /// The version each view of the lookup was read at, in the order its feature list (or
    /// feature service) first names the views. One answer is always one version of each
    /// view, even while a version is promoted or rolled back. Empty from nodes that
    /// predate versioned answers.
    pub fn view_versions(&self) -> &[u32] {
        &self.view_versions
    }

    /// Number of entity keys (rows), duplicates included.
    pub fn row_count(&self) -> usize {
        self.rows
    }

    /// Number of feature columns.
    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// Column names (`view:feature`), in column order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// The position of column `name` (`view:feature`).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Column `column` as received (typed packed arrays; see `quiver.v1.PackedColumn`).
    pub fn column(&self, column: usize) -> Option<&PackedColumn> {
        self.columns.get(column)
    }

    /// The value at (`row`, `column`), borrowed; `None` if null or not PRESENT.
    pub fn value(&self, row: usize, column: usize) -> Option<ValueRef<'_>> {
        self.columns.get(column)?.value(row)
    }

    /// The value at (`row`, `column`) as an owned protobuf `Kind` (allocates for strings
    /// and lists; prefer [`LookupResult::value`] on hot paths).
    pub fn kind(&self, row: usize, column: usize) -> Option<Kind> {
        self.value(row, column).map(|v| v.to_kind())
    }

    /// The status at (`row`, `column`).
    pub fn status(&self, row: usize, column: usize) -> FeatureStatus {
        self.columns
            .get(column)
            .map_or(FeatureStatus::Unspecified, |c| c.status_at(row))
    }

    /// Event time (µs since the epoch) of the value at (`row`, `column`); 0 if NOT_FOUND,
    /// or if the lookup did not ask for event times ([`Lookup::event_times`]).
    pub fn event_time_micros(&self, row: usize, column: usize) -> i64 {
        self.columns.get(column).map_or(0, |c| c.event_time_at(row))
    }

    /// Whether (`row`, `column`) holds a value (PRESENT and not null): the validity of the
    /// typed column arrays.
    pub fn is_valid(&self, row: usize, column: usize) -> bool {
        self.columns
            .get(column)
            .is_some_and(|c| c.status_at(row) == FeatureStatus::Present && !c.is_null(row))
    }

    /// An int64 value, if present and of that type.
    pub fn i64(&self, row: usize, column: usize) -> Option<i64> {
        match self.value(row, column)? {
            ValueRef::Int64(v) => Some(v),
            _ => None,
        }
    }

    /// A float64 value, if present and of that type.
    pub fn f64(&self, row: usize, column: usize) -> Option<f64> {
        match self.value(row, column)? {
            ValueRef::Float64(v) => Some(v),
            _ => None,
        }
    }

    /// A string value, if present and of that type.
    pub fn str(&self, row: usize, column: usize) -> Option<&str> {
        match self.value(row, column)? {
            ValueRef::String(v) => Some(v),
            _ => None,
        }
    }

    /// A bool value, if present and of that type.
    pub fn bool(&self, row: usize, column: usize) -> Option<bool> {
        match self.value(row, column)? {
            ValueRef::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A bytes value, if present and of that type.
    pub fn bytes(&self, row: usize, column: usize) -> Option<&[u8]> {
        match self.value(row, column)? {
            ValueRef::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// A float32 vector (e.g. an embedding), if present and of that type.
    pub fn f32_vector(&self, row: usize, column: usize) -> Option<&[f32]> {
        match self.value(row, column)? {
            ValueRef::Float32Vector(v) => Some(v),
            _ => None,
        }
    }

    fn typed(&self, column: usize, ty: FeatureType) -> Option<&PackedColumn> {
        self.columns.get(column).filter(|c| c.feature_type() == ty)
    }

    /// A float64 column's values, one per row (0.0 where [`LookupResult::is_valid`] is
    /// false): a model's input without a copy.
    pub fn f64_column(&self, column: usize) -> Option<&[f64]> {
        Some(&self.typed(column, FeatureType::Float64)?.float64s)
    }

    /// An int64 column's values, one per row (0 where not valid).
    pub fn i64_column(&self, column: usize) -> Option<&[i64]> {
        Some(&self.typed(column, FeatureType::Int64)?.int64s)
    }

    /// A bool column's values, one per row (false where not valid).
    pub fn bool_column(&self, column: usize) -> Option<&[bool]> {
        Some(&self.typed(column, FeatureType::Bool)?.bools)
    }

    /// A float32-vector column whose vectors all have one length `d`, as a row-major
    /// rows × `d` matrix (zero rows where not valid) and `d`; `None` if the lengths
    /// differ (read them per row with [`LookupResult::f32_vector`]).
    pub fn f32_matrix(&self, column: usize) -> Option<(&[f32], usize)> {
        let c = self.typed(column, FeatureType::Float32Vector)?;
        (c.dimension > 0).then_some((c.float32s.as_slice(), c.dimension as usize))
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

    /// The size of this result as one PACKED response on the wire, in bytes.
    pub fn encoded_len(&self) -> usize {
        use prost::Message as _;
        GetOnlineFeaturesResponse {
            packed_columns: self.columns.clone(),
            row_count: self.rows as u32,
            watermarks: self.watermarks.to_wire(None),
            ..Default::default()
        }
        .encoded_len()
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
    pub fn get(&self, name: &str) -> Option<ValueRef<'a>> {
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
