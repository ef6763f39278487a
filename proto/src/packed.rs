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

mod answer;
mod builder;
mod gather;
mod pool;
mod view;
mod watermark;
mod wire;

pub use answer::PackedAnswer;
pub use builder::ColumnBuilder;
pub use gather::gather;
pub use pool::{ColumnPool, PoolBudget};
pub use view::{ColumnView, gather_views};
pub use watermark::EncodedWatermark;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod view_tests;
