//! The PACKED lookup encoding (`quiver.v1.PackedColumn`): building columns (the node from
//! stored rows, the client when it merges sub-responses) and reading them without a
//! message or an allocation per value.
//!
//! A column is read only after [`PackedColumn::validate`] has checked that its arrays
//! agree with its type and row count, so accessors index without panicking on what a
//! peer sent.

use crate::v1::value::Kind;
use crate::v1::{
    DoubleList, FeatureColumn, FeatureStatus, FeatureType, FloatVector, Int64List, PackedColumn,
    StringList, Value,
};

/// A borrowed value of one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// bool.
    Bool(bool),
    /// int64.
    Int64(i64),
    /// float64.
    Float64(f64),
    /// string.
    String(&'a str),
    /// bytes.
    Bytes(&'a [u8]),
    /// float32 vector.
    Float32Vector(&'a [f32]),
    /// int64 list.
    Int64List(&'a [i64]),
    /// float64 list.
    Float64List(&'a [f64]),
    /// string list.
    StringList(StrList<'a>),
}

/// The strings of one string-list cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrList<'a> {
    col: &'a PackedColumn,
    start: usize,
    end: usize,
}

impl<'a> StrList<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The strings, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let col = self.col;
        (self.start..self.end).map(move |j| col.blob_str(j).unwrap_or_default())
    }
}

impl ValueRef<'_> {
    /// The value as an owned protobuf `Kind` (allocates for strings and lists).
    pub fn to_kind(&self) -> Kind {
        match *self {
            ValueRef::Bool(b) => Kind::BoolValue(b),
            ValueRef::Int64(i) => Kind::Int64Value(i),
            ValueRef::Float64(f) => Kind::Float64Value(f),
            ValueRef::String(s) => Kind::StringValue(s.to_owned()),
            ValueRef::Bytes(b) => Kind::BytesValue(b.to_vec()),
            ValueRef::Float32Vector(v) => Kind::Float32Vector(FloatVector { values: v.to_vec() }),
            ValueRef::Int64List(v) => Kind::Int64List(Int64List { values: v.to_vec() }),
            ValueRef::Float64List(v) => Kind::Float64List(DoubleList { values: v.to_vec() }),
            ValueRef::StringList(l) => Kind::StringList(StringList {
                values: l.iter().map(str::to_owned).collect(),
            }),
        }
    }

    /// The feature type of the value.
    pub fn feature_type(&self) -> FeatureType {
        match self {
            ValueRef::Bool(_) => FeatureType::Bool,
            ValueRef::Int64(_) => FeatureType::Int64,
            ValueRef::Float64(_) => FeatureType::Float64,
            ValueRef::String(_) => FeatureType::String,
            ValueRef::Bytes(_) => FeatureType::Bytes,
            ValueRef::Float32Vector(_) => FeatureType::Float32Vector,
            ValueRef::Int64List(_) => FeatureType::Int64List,
            ValueRef::Float64List(_) => FeatureType::Float64List,
            ValueRef::StringList(_) => FeatureType::StringList,
        }
    }
}

impl FeatureType {
    /// The type a definition file names `name` (`"float32_vector"`), if any.
    pub fn from_name(name: &str) -> Option<FeatureType> {
        Some(match name {
            "bool" => FeatureType::Bool,
            "int64" => FeatureType::Int64,
            "float64" => FeatureType::Float64,
            "string" => FeatureType::String,
            "bytes" => FeatureType::Bytes,
            "float32_vector" => FeatureType::Float32Vector,
            "int64_list" => FeatureType::Int64List,
            "float64_list" => FeatureType::Float64List,
            "string_list" => FeatureType::StringList,
            _ => return None,
        })
    }
}

/// Why a packed column cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed column {column:?}: {problem}")]
pub struct PackedError {
    /// The column's name.
    pub column: String,
    /// What is inconsistent.
    pub problem: String,
}

impl PackedColumn {
    /// Rows in the column.
    pub fn row_count(&self) -> usize {
        self.statuses.len()
    }

    /// The feature type; `Unspecified` for an unknown value.
    pub fn feature_type(&self) -> FeatureType {
        FeatureType::try_from(self.r#type).unwrap_or(FeatureType::Unspecified)
    }

    /// Row `row`'s status.
    pub fn status_at(&self, row: usize) -> FeatureStatus {
        self.statuses
            .get(row)
            .and_then(|s| FeatureStatus::try_from(*s).ok())
            .unwrap_or(FeatureStatus::Unspecified)
    }

    /// Whether row `row` is PRESENT with a null value.
    pub fn is_null(&self, row: usize) -> bool {
        u32::try_from(row).is_ok_and(|r| self.null_rows.binary_search(&r).is_ok())
    }

    /// Event time (µs) of row `row`'s value; 0 if the response carries none.
    pub fn event_time_at(&self, row: usize) -> i64 {
        self.event_times_micros.get(row).copied().unwrap_or(0)
    }

    fn range(offsets: &[u32], i: usize) -> Option<(usize, usize)> {
        Some((*offsets.get(i)? as usize, *offsets.get(i + 1)? as usize))
    }

    fn blob_bytes(&self, j: usize) -> Option<&[u8]> {
        let (a, b) = Self::range(&self.offsets, j)?;
        self.blob.get(a..b)
    }

    fn blob_str(&self, j: usize) -> Option<&str> {
        std::str::from_utf8(self.blob_bytes(j)?).ok()
    }

    /// Row `row`'s value: `None` unless PRESENT and not null.
    pub fn value(&self, row: usize) -> Option<ValueRef<'_>> {
        if self.status_at(row) != FeatureStatus::Present || self.is_null(row) {
            return None;
        }
        let list = || Self::range(&self.list_offsets, row);
        Some(match self.feature_type() {
            FeatureType::Bool => ValueRef::Bool(*self.bools.get(row)?),
            FeatureType::Int64 => ValueRef::Int64(*self.int64s.get(row)?),
            FeatureType::Float64 => ValueRef::Float64(*self.float64s.get(row)?),
            FeatureType::String => ValueRef::String(self.blob_str(row)?),
            FeatureType::Bytes => ValueRef::Bytes(self.blob_bytes(row)?),
            FeatureType::Float32Vector => {
                let (a, b) = match self.dimension as usize {
                    0 => list()?,
                    d => (row * d, (row + 1) * d),
                };
                ValueRef::Float32Vector(self.float32s.get(a..b)?)
            }
            FeatureType::Int64List => {
                let (a, b) = list()?;
                ValueRef::Int64List(self.int64s.get(a..b)?)
            }
            FeatureType::Float64List => {
                let (a, b) = list()?;
                ValueRef::Float64List(self.float64s.get(a..b)?)
            }
            FeatureType::StringList => {
                let (start, end) = list()?;
                ValueRef::StringList(StrList {
                    col: self,
                    start,
                    end,
                })
            }
            FeatureType::Unspecified => return None,
        })
    }

    /// Checks that the arrays agree with the type and `rows`: every accessor then finds
    /// what it indexes. Strings are checked to be UTF-8.
    ///
    /// # Errors
    /// A [`PackedError`] naming the first inconsistency.
    pub fn validate(&self, rows: usize) -> Result<(), PackedError> {
        let bad = |problem: String| {
            Err(PackedError {
                column: self.name.clone(),
                problem,
            })
        };
        if self.statuses.len() != rows {
            return bad(format!("{} statuses for {rows} rows", self.statuses.len()));
        }
        if !self.event_times_micros.is_empty() && self.event_times_micros.len() != rows {
            return bad(format!(
                "{} event times for {rows} rows",
                self.event_times_micros.len()
            ));
        }
        if self.null_rows.windows(2).any(|w| w[0] >= w[1])
            || self.null_rows.last().is_some_and(|r| *r as usize >= rows)
        {
            return bad("null_rows are not ascending row indexes".into());
        }
        let offsets_ok = |offsets: &[u32], items: usize, end: usize| {
            offsets.len() == items + 1
                && offsets.first() == Some(&0)
                && offsets.windows(2).all(|w| w[0] <= w[1])
                && offsets.last().is_some_and(|l| *l as usize == end)
        };
        let ty = self.feature_type();
        let ok = match ty {
            FeatureType::Bool => self.bools.len() == rows,
            FeatureType::Int64 => self.int64s.len() == rows,
            FeatureType::Float64 => self.float64s.len() == rows,
            FeatureType::String | FeatureType::Bytes => {
                offsets_ok(&self.offsets, rows, self.blob.len())
            }
            FeatureType::Float32Vector => match self.dimension as usize {
                0 => offsets_ok(&self.list_offsets, rows, self.float32s.len()),
                d => self.float32s.len() == rows * d,
            },
            FeatureType::Int64List => offsets_ok(&self.list_offsets, rows, self.int64s.len()),
            FeatureType::Float64List => offsets_ok(&self.list_offsets, rows, self.float64s.len()),
            FeatureType::StringList => {
                let items = self.list_offsets.last().copied().unwrap_or(0) as usize;
                offsets_ok(&self.list_offsets, rows, items)
                    && offsets_ok(&self.offsets, items, self.blob.len())
            }
            FeatureType::Unspecified => false,
        };
        if !ok {
            return bad(format!(
                "arrays do not match type {} and {rows} rows",
                ty.as_str_name()
            ));
        }
        if matches!(ty, FeatureType::String | FeatureType::StringList) {
            let items = self.offsets.len().saturating_sub(1);
            if (0..items).any(|j| self.blob_str(j).is_none()) {
                return bad("a string is not UTF-8".into());
            }
        }
        Ok(())
    }

    /// The column in the CELLS encoding (a `Value` message per cell; event times as this
    /// column carries them).
    pub fn to_cells(&self) -> FeatureColumn {
        let rows = self.row_count();
        FeatureColumn {
            name: self.name.clone(),
            values: (0..rows)
                .map(|r| Value {
                    kind: self.value(r).map(|v| v.to_kind()),
                })
                .collect(),
            statuses: self.statuses.clone(),
            event_times_micros: (0..rows).map(|r| self.event_time_at(r)).collect(),
        }
    }
}

/// Builds one packed column row by row (rows must be pushed in order, each once).
#[derive(Debug)]
pub struct ColumnBuilder {
    col: PackedColumn,
    blob: Vec<u8>,
    event_times: bool,
}

impl ColumnBuilder {
    /// A builder for a column of `ty` named `name` with room for `rows` rows; event times
    /// are kept only with `event_times`.
    pub fn new(name: String, ty: FeatureType, rows: usize, event_times: bool) -> Self {
        let mut col = PackedColumn {
            name,
            r#type: ty as i32,
            statuses: Vec::with_capacity(rows),
            ..Default::default()
        };
        match ty {
            FeatureType::Bool => col.bools.reserve(rows),
            FeatureType::Int64 => col.int64s.reserve(rows),
            FeatureType::Float64 => col.float64s.reserve(rows),
            FeatureType::String | FeatureType::Bytes => {
                col.offsets.reserve(rows + 1);
                col.offsets.push(0);
            }
            FeatureType::StringList => {
                col.offsets.push(0);
                col.list_offsets.reserve(rows + 1);
                col.list_offsets.push(0);
            }
            _ => {
                col.list_offsets.reserve(rows + 1);
                col.list_offsets.push(0);
            }
        }
        if event_times {
            col.event_times_micros.reserve(rows);
        }
        ColumnBuilder {
            col,
            blob: Vec::new(),
            event_times,
        }
    }

    /// The column's type.
    pub fn feature_type(&self) -> FeatureType {
        self.col.feature_type()
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.col.statuses.len()
    }

    /// Pads the value arrays for a row without a value.
    fn pad(&mut self) {
        let c = &mut self.col;
        match c.feature_type() {
            FeatureType::Bool => c.bools.push(false),
            FeatureType::Int64 => c.int64s.push(0),
            FeatureType::Float64 => c.float64s.push(0.0),
            FeatureType::String | FeatureType::Bytes => c.offsets.push(self.blob.len() as u32),
            FeatureType::Float32Vector => c.list_offsets.push(c.float32s.len() as u32),
            FeatureType::Int64List => c.list_offsets.push(c.int64s.len() as u32),
            FeatureType::Float64List => c.list_offsets.push(c.float64s.len() as u32),
            FeatureType::StringList => {
                let items = c.offsets.len() as u32 - 1;
                c.list_offsets.push(items);
            }
            FeatureType::Unspecified => {}
        }
    }

    fn time(&mut self, event_time_micros: i64) {
        if self.event_times {
            self.col.event_times_micros.push(event_time_micros);
        }
    }

    /// A row without a value: `status` NOT_FOUND or EXPIRED.
    pub fn push_missing(&mut self, status: FeatureStatus, event_time_micros: i64) {
        self.col.statuses.push(status as i32);
        self.pad();
        self.time(event_time_micros);
    }

    /// A PRESENT row whose feature is null.
    pub fn push_null(&mut self, event_time_micros: i64) {
        let row = self.rows() as u32;
        self.col.null_rows.push(row);
        self.col.statuses.push(FeatureStatus::Present as i32);
        self.pad();
        self.time(event_time_micros);
    }

    /// Starts a PRESENT row with a value; the caller pushes exactly the value's payload
    /// with one of the `value_*` methods.
    fn present(&mut self, event_time_micros: i64) {
        self.col.statuses.push(FeatureStatus::Present as i32);
        self.time(event_time_micros);
    }

    /// A PRESENT bool.
    pub fn push_bool(&mut self, v: bool, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.bools.push(v);
    }

    /// A PRESENT int64.
    pub fn push_i64(&mut self, v: i64, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.int64s.push(v);
    }

    /// A PRESENT float64.
    pub fn push_f64(&mut self, v: f64, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.float64s.push(v);
    }

    /// A PRESENT string or bytes value.
    pub fn push_blob(&mut self, v: &[u8], event_time_micros: i64) {
        self.present(event_time_micros);
        self.blob.extend_from_slice(v);
        self.col.offsets.push(self.blob.len() as u32);
    }

    /// A PRESENT float32 vector.
    pub fn push_f32s(&mut self, v: impl IntoIterator<Item = f32>, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.float32s.extend(v);
        self.col.list_offsets.push(self.col.float32s.len() as u32);
    }

    /// A PRESENT int64 list.
    pub fn push_i64s(&mut self, v: impl IntoIterator<Item = i64>, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.int64s.extend(v);
        self.col.list_offsets.push(self.col.int64s.len() as u32);
    }

    /// A PRESENT float64 list.
    pub fn push_f64s(&mut self, v: impl IntoIterator<Item = f64>, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.float64s.extend(v);
        self.col.list_offsets.push(self.col.float64s.len() as u32);
    }

    /// A PRESENT string list.
    pub fn push_strs<'s>(&mut self, v: impl IntoIterator<Item = &'s [u8]>, event_time_micros: i64) {
        self.present(event_time_micros);
        for s in v {
            self.blob.extend_from_slice(s);
            self.col.offsets.push(self.blob.len() as u32);
        }
        let items = self.col.offsets.len() as u32 - 1;
        self.col.list_offsets.push(items);
    }

    /// A PRESENT value given by reference; a value of another type than the column's is
    /// pushed as null (a column has one type).
    pub fn push_value(&mut self, v: ValueRef<'_>, event_time_micros: i64) {
        let ty = self.feature_type();
        match v {
            ValueRef::Bool(b) if ty == FeatureType::Bool => self.push_bool(b, event_time_micros),
            ValueRef::Int64(i) if ty == FeatureType::Int64 => self.push_i64(i, event_time_micros),
            ValueRef::Float64(f) if ty == FeatureType::Float64 => {
                self.push_f64(f, event_time_micros)
            }
            ValueRef::String(s) if ty == FeatureType::String => {
                self.push_blob(s.as_bytes(), event_time_micros)
            }
            ValueRef::Bytes(b) if ty == FeatureType::Bytes => self.push_blob(b, event_time_micros),
            ValueRef::Float32Vector(v) if ty == FeatureType::Float32Vector => {
                self.push_f32s(v.iter().copied(), event_time_micros)
            }
            ValueRef::Int64List(v) if ty == FeatureType::Int64List => {
                self.push_i64s(v.iter().copied(), event_time_micros)
            }
            ValueRef::Float64List(v) if ty == FeatureType::Float64List => {
                self.push_f64s(v.iter().copied(), event_time_micros)
            }
            ValueRef::StringList(l) if ty == FeatureType::StringList => {
                self.push_strs(l.iter().map(str::as_bytes), event_time_micros)
            }
            _ => self.push_null(event_time_micros),
        }
    }

    /// A PRESENT value given as a protobuf `Kind` (`None`: null).
    pub fn push_kind(&mut self, v: Option<&Kind>, event_time_micros: i64) {
        match v {
            None => self.push_null(event_time_micros),
            Some(Kind::StringList(l)) if self.feature_type() == FeatureType::StringList => {
                self.push_strs(l.values.iter().map(String::as_bytes), event_time_micros)
            }
            Some(k) => {
                let r = match k {
                    Kind::BoolValue(b) => ValueRef::Bool(*b),
                    Kind::Int64Value(i) => ValueRef::Int64(*i),
                    Kind::Float64Value(f) => ValueRef::Float64(*f),
                    Kind::StringValue(s) => ValueRef::String(s),
                    Kind::BytesValue(b) => ValueRef::Bytes(b),
                    Kind::Float32Vector(v) => ValueRef::Float32Vector(&v.values),
                    Kind::Int64List(v) => ValueRef::Int64List(&v.values),
                    Kind::Float64List(v) => ValueRef::Float64List(&v.values),
                    // A string list into a column of another type: a type mismatch.
                    Kind::StringList(_) => return self.push_null(event_time_micros),
                };
                self.push_value(r, event_time_micros);
            }
        }
    }

    /// Copies row `row` of `from` (a validated column of the same type).
    pub fn push_row_of(&mut self, from: &PackedColumn, row: usize) {
        let t = from.event_time_at(row);
        match from.status_at(row) {
            FeatureStatus::Present => match from.value(row) {
                Some(v) => self.push_value(v, t),
                None => self.push_null(t),
            },
            other => self.push_missing(other, t),
        }
    }

    /// The finished column. A float32-vector column whose vectors all have one length
    /// `d` is laid out as a rows × `d` matrix (`dimension = d`; rows without a value are
    /// zeros).
    pub fn finish(mut self) -> PackedColumn {
        let mut col = std::mem::take(&mut self.col);
        if !self.blob.is_empty() || !col.offsets.is_empty() {
            col.blob = self.blob.into();
        }
        if col.feature_type() == FeatureType::Float32Vector {
            densify_vectors(&mut col);
        }
        col
    }
}

/// Lays out a float32-vector column as a matrix when every present vector has the same
/// non-zero length.
fn densify_vectors(col: &mut PackedColumn) {
    let rows = col.statuses.len();
    let mut dim = None;
    for r in 0..rows {
        let len = col.list_offsets[r + 1] - col.list_offsets[r];
        let has_value = col.statuses[r] == FeatureStatus::Present as i32
            && col.null_rows.binary_search(&(r as u32)).is_err();
        if !has_value {
            continue;
        }
        match dim {
            None => dim = Some(len),
            Some(d) if d == len => {}
            Some(_) => return,
        }
    }
    let Some(d) = dim.filter(|d| *d > 0) else {
        return;
    };
    let d = d as usize;
    if col.float32s.len() != rows * d {
        let mut dense = vec![0.0f32; rows * d];
        for r in 0..rows {
            let (a, b) = (
                col.list_offsets[r] as usize,
                col.list_offsets[r + 1] as usize,
            );
            if b - a == d {
                dense[r * d..(r + 1) * d].copy_from_slice(&col.float32s[a..b]);
            }
        }
        col.float32s = dense;
    }
    col.list_offsets = Vec::new();
    col.dimension = d as u32;
}

#[cfg(test)]
mod tests;
