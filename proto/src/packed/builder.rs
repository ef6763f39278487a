//! [`ColumnBuilder`]: a packed column built row by row.

use super::{ValueRef, wire};
use crate::v1::value::Kind;
use crate::v1::{FeatureStatus, FeatureType, PackedColumn};

/// Builds one packed column row by row (rows must be pushed in order, each once).
///
/// It keeps the column's type and its statuses apart from the `PackedColumn` it fills:
/// the type is read per pushed value (prost's getter converts the `i32` each time), and a
/// status is one byte (every `FeatureStatus` is below 128, so its varint is that byte),
/// which lets the encoder write a column's statuses with one copy instead of a varint
/// per row.
#[derive(Debug)]
pub struct ColumnBuilder {
    col: PackedColumn,
    ty: FeatureType,
    /// One `FeatureStatus` per row, as a byte.
    statuses: Vec<u8>,
    blob: Vec<u8>,
    event_times: bool,
    /// Once sealed: the bytes of every field but the name ([`Self::encoded_len`] is
    /// asked twice per column, for the size check and for the length prefix, and walked
    /// its offsets and null rows each time).
    sealed_len: Option<usize>,
}

impl ColumnBuilder {
    /// A builder for a column of `ty` named `name` with room for `rows` rows; event times
    /// are kept only with `event_times`.
    pub fn new(name: String, ty: FeatureType, rows: usize, event_times: bool) -> Self {
        let mut b = ColumnBuilder {
            col: PackedColumn::default(),
            ty,
            statuses: Vec::new(),
            blob: Vec::new(),
            event_times,
            sealed_len: None,
        };
        b.reset(ty, rows, event_times);
        b.col.name = name;
        b
    }

    /// Empties the builder for a new unnamed column of `ty` with room for `rows` rows,
    /// keeping the capacity of its arrays (a reused builder allocates nothing for a
    /// column no longer than its previous ones).
    pub fn reset(&mut self, ty: FeatureType, rows: usize, event_times: bool) {
        let PackedColumn {
            name,
            r#type,
            statuses,
            null_rows,
            bools,
            int64s,
            float64s,
            float32s,
            blob,
            offsets,
            list_offsets,
            dimension,
            event_times_micros,
        } = &mut self.col;
        name.clear();
        *r#type = ty as i32;
        statuses.clear();
        null_rows.clear();
        bools.clear();
        int64s.clear();
        float64s.clear();
        float32s.clear();
        offsets.clear();
        list_offsets.clear();
        *dimension = 0;
        event_times_micros.clear();
        if !blob.is_empty() {
            *blob = bytes::Bytes::new();
        }
        match ty {
            FeatureType::Bool => bools.reserve(rows),
            FeatureType::Int64 => int64s.reserve(rows),
            FeatureType::Float64 => float64s.reserve(rows),
            FeatureType::String | FeatureType::Bytes => {
                offsets.reserve(rows + 1);
                offsets.push(0);
            }
            FeatureType::StringList => {
                offsets.push(0);
                list_offsets.reserve(rows + 1);
                list_offsets.push(0);
            }
            _ => {
                list_offsets.reserve(rows + 1);
                list_offsets.push(0);
            }
        }
        if event_times {
            event_times_micros.reserve(rows);
        }
        self.ty = ty;
        self.statuses.clear();
        self.statuses.reserve(rows);
        self.blob.clear();
        self.event_times = event_times;
        self.sealed_len = None;
    }

    /// Heap bytes the builder holds (its arrays' capacities), what keeping it for reuse
    /// costs.
    pub fn retained_bytes(&self) -> usize {
        fn cap<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        let c = &self.col;
        c.name.capacity()
            + cap(&c.statuses)
            + cap(&c.null_rows)
            + cap(&c.bools)
            + cap(&c.int64s)
            + cap(&c.float64s)
            + cap(&c.float32s)
            + c.blob.len()
            + cap(&c.offsets)
            + cap(&c.list_offsets)
            + cap(&c.event_times_micros)
            + cap(&self.statuses)
            + cap(&self.blob)
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
        self.ty
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.statuses.len()
    }

    /// Pads the value arrays for a row without a value.
    fn pad(&mut self) {
        let c = &mut self.col;
        match self.ty {
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

    #[inline]
    fn time(&mut self, event_time_micros: i64) {
        if self.event_times {
            self.col.event_times_micros.push(event_time_micros);
        }
    }

    /// A row without a value: `status` NOT_FOUND or EXPIRED.
    pub fn push_missing(&mut self, status: FeatureStatus, event_time_micros: i64) {
        self.statuses.push(status as u8);
        self.pad();
        self.time(event_time_micros);
    }

    /// A PRESENT row whose feature is null.
    pub fn push_null(&mut self, event_time_micros: i64) {
        let row = self.rows() as u32;
        self.col.null_rows.push(row);
        self.statuses.push(FeatureStatus::Present as u8);
        self.pad();
        self.time(event_time_micros);
    }

    /// Starts a PRESENT row with a value; the caller pushes exactly the value's payload
    /// with one of the `value_*` methods.
    #[inline]
    fn present(&mut self, event_time_micros: i64) {
        self.statuses.push(FeatureStatus::Present as u8);
        self.time(event_time_micros);
    }

    /// A PRESENT bool.
    #[inline]
    pub fn push_bool(&mut self, v: bool, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.bools.push(v);
    }

    /// A PRESENT int64.
    #[inline]
    pub fn push_i64(&mut self, v: i64, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.int64s.push(v);
    }

    /// A PRESENT float64.
    #[inline]
    pub fn push_f64(&mut self, v: f64, event_time_micros: i64) {
        self.present(event_time_micros);
        self.col.float64s.push(v);
    }

    /// A PRESENT string or bytes value.
    #[inline]
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
        if self.ty == FeatureType::Float32Vector {
            densify_vectors(&mut self.col, &self.statuses);
        }
        let mut col = std::mem::take(&mut self.col);
        col.statuses = self.statuses.iter().map(|&s| i32::from(s)).collect();
        if !self.blob.is_empty() || !col.offsets.is_empty() {
            col.blob = self.blob.into();
        }
        col
    }

    /// Lays a float32-vector column out as [`Self::finish`] would (a no-op for other
    /// types); after this the builder only encodes.
    pub(super) fn seal(&mut self) {
        if self.ty == FeatureType::Float32Vector {
            densify_vectors(&mut self.col, &self.statuses);
        }
        self.sealed_len = Some(self.unnamed_len());
    }

    /// Bytes of [`Self::encode_raw`] with the column named `name`.
    pub(super) fn encoded_len(&self, name: &str) -> usize {
        let named = if name.is_empty() {
            0
        } else {
            // A string field: tag, length, UTF-8 bytes.
            prost::encoding::key_len(1)
                + prost::encoding::encoded_len_varint(name.len() as u64)
                + name.len()
        };
        let rest = match self.sealed_len {
            Some(len) => {
                debug_assert_eq!(len, self.unnamed_len(), "a sealed column changed");
                len
            }
            None => self.unnamed_len(),
        };
        named + rest
    }

    /// Bytes of every field of [`Self::encode_raw`] but the name.
    fn unnamed_len(&self) -> usize {
        use prost::encoding::{bytes, int32, uint32};
        let c = &self.col;
        let blob = if self.blob.is_empty() {
            0
        } else {
            bytes::encoded_len(9, &self.blob)
        };
        (if c.r#type == 0 {
            0
        } else {
            int32::encoded_len(2, &c.r#type)
        }) + wire::bytes_len(3, self.statuses.len())
            + uint32::encoded_len_packed(4, &c.null_rows)
            + wire::bytes_len(5, c.bools.len())
            + wire::bytes_len(6, 8 * c.int64s.len())
            + wire::bytes_len(7, 8 * c.float64s.len())
            + wire::bytes_len(8, 4 * c.float32s.len())
            + blob
            + uint32::encoded_len_packed(10, &c.offsets)
            + uint32::encoded_len_packed(11, &c.list_offsets)
            + (if c.dimension == 0 {
                0
            } else {
                uint32::encoded_len(12, &c.dimension)
            })
            + wire::bytes_len(13, 8 * c.event_times_micros.len())
    }

    /// The fields of the sealed column named `name`, byte for byte what prost encodes
    /// for `self.finish()` with that name, without moving the column out of the builder.
    /// Fixed-width arrays and the one-byte statuses go out as whole slices, not a
    /// `BufMut` call per element as prost's packed encoders make.
    pub(super) fn encode_raw(&self, name: &str, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{bytes, int32, uint32};
        let c = &self.col;
        if !name.is_empty() {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
        }
        if c.r#type != 0 {
            int32::encode(2, &c.r#type, buf);
        }
        wire::put_bytes(3, &self.statuses, buf);
        uint32::encode_packed(4, &c.null_rows, buf);
        wire::put_fixed(5, &c.bools, |b| [u8::from(*b)], buf);
        wire::put_fixed(6, &c.int64s, |v| v.to_le_bytes(), buf);
        wire::put_fixed(7, &c.float64s, |v| v.to_le_bytes(), buf);
        wire::put_fixed(8, &c.float32s, |v| v.to_le_bytes(), buf);
        if !self.blob.is_empty() {
            bytes::encode(9, &self.blob, buf);
        }
        uint32::encode_packed(10, &c.offsets, buf);
        uint32::encode_packed(11, &c.list_offsets, buf);
        if c.dimension != 0 {
            uint32::encode(12, &c.dimension, buf);
        }
        wire::put_fixed(13, &c.event_times_micros, |v| v.to_le_bytes(), buf);
    }
}

/// Lays out a float32-vector column as a matrix when every present vector has the same
/// non-zero length.
fn densify_vectors(col: &mut PackedColumn, statuses: &[u8]) {
    if col.dimension != 0 {
        // Laid out already (a sealed builder being finished).
        return;
    }
    let rows = statuses.len();
    let mut dim = None;
    for (r, &status) in statuses.iter().enumerate() {
        let len = col.list_offsets[r + 1] - col.list_offsets[r];
        let has_value = status == FeatureStatus::Present as u8
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
