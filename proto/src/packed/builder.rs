//! [`ColumnBuilder`]: a packed column built row by row.

use super::ValueRef;
use crate::v1::value::Kind;
use crate::v1::{FeatureStatus, FeatureType, PackedColumn};

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

    /// The column's name as built (empty for a column of a [`super::PackedAnswer`] that
    /// names its columns from a shared list).
    pub fn name(&self) -> &str {
        &self.col.name
    }

    /// Names the column.
    pub fn set_name(&mut self, name: String) {
        self.col.name = name;
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

    /// Lays a float32-vector column out as [`Self::finish`] would (a no-op for other
    /// types); after this the builder only encodes.
    pub(super) fn seal(&mut self) {
        if self.col.feature_type() == FeatureType::Float32Vector {
            densify_vectors(&mut self.col);
        }
    }

    /// Bytes of [`Self::encode_raw`] with the column named `name`.
    pub(super) fn encoded_len(&self, name: &str) -> usize {
        use prost::encoding::{bool, bytes, double, float, int32, sfixed64, uint32};
        let c = &self.col;
        let blob = if self.blob.is_empty() {
            0
        } else {
            bytes::encoded_len(9, &self.blob)
        };
        (if name.is_empty() {
            0
        } else {
            // A string field: tag, length, UTF-8 bytes.
            prost::encoding::key_len(1)
                + prost::encoding::encoded_len_varint(name.len() as u64)
                + name.len()
        }) + (if c.r#type == 0 {
            0
        } else {
            int32::encoded_len(2, &c.r#type)
        }) + int32::encoded_len_packed(3, &c.statuses)
            + uint32::encoded_len_packed(4, &c.null_rows)
            + bool::encoded_len_packed(5, &c.bools)
            + sfixed64::encoded_len_packed(6, &c.int64s)
            + double::encoded_len_packed(7, &c.float64s)
            + float::encoded_len_packed(8, &c.float32s)
            + blob
            + uint32::encoded_len_packed(10, &c.offsets)
            + uint32::encoded_len_packed(11, &c.list_offsets)
            + (if c.dimension == 0 {
                0
            } else {
                uint32::encoded_len(12, &c.dimension)
            })
            + sfixed64::encoded_len_packed(13, &c.event_times_micros)
    }

    /// The fields of the sealed column named `name`, byte for byte what prost encodes
    /// for `self.finish()` with that name, without moving the column out of the builder.
    pub(super) fn encode_raw(&self, name: &str, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{bool, bytes, double, float, int32, sfixed64, uint32};
        let c = &self.col;
        if !name.is_empty() {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
        }
        if c.r#type != 0 {
            int32::encode(2, &c.r#type, buf);
        }
        int32::encode_packed(3, &c.statuses, buf);
        uint32::encode_packed(4, &c.null_rows, buf);
        bool::encode_packed(5, &c.bools, buf);
        sfixed64::encode_packed(6, &c.int64s, buf);
        double::encode_packed(7, &c.float64s, buf);
        float::encode_packed(8, &c.float32s, buf);
        if !self.blob.is_empty() {
            bytes::encode(9, &self.blob, buf);
        }
        uint32::encode_packed(10, &c.offsets, buf);
        uint32::encode_packed(11, &c.list_offsets, buf);
        if c.dimension != 0 {
            uint32::encode(12, &c.dimension, buf);
        }
        sfixed64::encode_packed(13, &c.event_times_micros, buf);
    }
}

/// Lays out a float32-vector column as a matrix when every present vector has the same
/// non-zero length.
fn densify_vectors(col: &mut PackedColumn) {
    if col.dimension != 0 {
        // Laid out already (a sealed builder being finished).
        return;
    }
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
