//! [`ColumnView`]: a fixed-width packed column read in place from the bytes a node sent,
//! and [`gather_views`], which merges such columns of several sub-responses into one.
//!
//! When the smart client fans a lookup out, each node's answer is only an intermediate:
//! its columns are merged into the lookup's columns and dropped. Decoding them first into
//! `PackedColumn`s allocated three arrays per column per node and copied every value
//! twice (wire → part → result); in a 100 × 50 lookup over two nodes that was ~100
//! allocations of memory no cache had seen and a third of the client's CPU. A view
//! instead keeps slices of the received bytes (statuses as one byte each, values as
//! little-endian words) and the merge reads each value once from the wire.
//!
//! Only the columns that [`gather`] merges on its typed path are viewed: bool, int64,
//! float64 and float32 vectors laid out as a matrix, whose arrays are exactly as long as
//! the rows require. Anything else — another type, a status that is not one byte, a
//! repeated field sent unpacked or in two pieces, a malformed field — is not a view
//! ([`ColumnView::parse`] answers `None`), and the caller decodes that column with the
//! generated decoder, which also reports what is wrong with it. Both paths give the same
//! column (`tests::gather_views_equals_gather_of_the_decoded_columns`).

use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::v1::{FeatureStatus, FeatureType, PackedColumn};

/// One fixed-width packed column of a received response, read in place (see the module
/// docs). Every array has been checked against the column's row count.
#[derive(Debug, Clone, Default)]
pub struct ColumnView<'a> {
    name: &'a str,
    ty: i32,
    dimension: u32,
    /// One byte per row: every status the view accepts is a one-byte varint.
    statuses: &'a [u8],
    /// Rows that are PRESENT with a null value, ascending (decoded: usually none).
    null_rows: Vec<u32>,
    /// Bools: one byte per row; int64 and float64: 8 bytes per row; float32 vectors:
    /// 4 × dimension bytes per row.
    values: &'a [u8],
    /// 8 bytes per row, or none.
    event_times: &'a [u8],
}

/// The fields of a column as they appear on the wire, before they are checked.
#[derive(Default)]
struct Fields<'a> {
    name: &'a [u8],
    ty: i32,
    dimension: u32,
    statuses: Option<&'a [u8]>,
    null_rows: Option<&'a [u8]>,
    bools: Option<&'a [u8]>,
    int64s: Option<&'a [u8]>,
    float64s: Option<&'a [u8]>,
    float32s: Option<&'a [u8]>,
    event_times: Option<&'a [u8]>,
}

impl<'a> ColumnView<'a> {
    /// Reads `bytes`, one encoded `PackedColumn` (without its length prefix), as a view
    /// of `rows` rows; `None` if the column is not a fixed-width one laid out exactly for
    /// `rows` (see the module docs), including when it is malformed.
    pub fn parse(bytes: &'a [u8], rows: usize) -> Option<Self> {
        let f = Fields::read(bytes)?;
        let ty = FeatureType::try_from(f.ty).ok()?;
        let dim = f.dimension as usize;
        let (values, width) = match ty {
            FeatureType::Bool => (f.bools, 1),
            FeatureType::Int64 => (f.int64s, 8),
            FeatureType::Float64 => (f.float64s, 8),
            FeatureType::Float32Vector if dim > 0 => (f.float32s, dim.checked_mul(4)?),
            _ => return None,
        };
        let values = values.unwrap_or_default();
        let statuses = f.statuses.unwrap_or_default();
        let event_times = f.event_times.unwrap_or_default();
        let one_byte_each = |b: &[u8]| b.len() == rows && b.iter().all(|&x| x < 0x80);
        if !one_byte_each(statuses)
            || values.len() != rows.checked_mul(width)?
            || (ty == FeatureType::Bool && !one_byte_each(values))
            || !(event_times.is_empty() || event_times.len() == rows.checked_mul(8)?)
        {
            return None;
        }
        let null_rows = varints_u32(f.null_rows.unwrap_or_default())?;
        if null_rows.windows(2).any(|w| w[0] >= w[1])
            || null_rows.last().is_some_and(|&r| r as usize >= rows)
        {
            return None;
        }
        Some(ColumnView {
            name: std::str::from_utf8(f.name).ok()?,
            ty: f.ty,
            dimension: f.dimension,
            statuses,
            null_rows,
            values,
            event_times,
        })
    }

    /// The column's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Rows in the column.
    pub fn row_count(&self) -> usize {
        self.statuses.len()
    }

    fn status_at(&self, row: usize) -> FeatureStatus {
        FeatureStatus::try_from(i32::from(self.statuses[row])).unwrap_or(FeatureStatus::Unspecified)
    }

    fn is_null(&self, row: usize) -> bool {
        !self.null_rows.is_empty() && self.null_rows.binary_search(&(row as u32)).is_ok()
    }

    fn has_value(&self, row: usize) -> bool {
        self.status_at(row) == FeatureStatus::Present && !self.is_null(row)
    }

    fn word(bytes: &[u8], row: usize) -> [u8; 8] {
        bytes[row * 8..row * 8 + 8]
            .try_into()
            .expect("a slice of 8 bytes")
    }
}

impl<'a> Fields<'a> {
    /// The fields of `bytes`; `None` at anything the view does not read in place.
    fn read(mut bytes: &'a [u8]) -> Option<Self> {
        let mut f = Fields::default();
        while !bytes.is_empty() {
            let (tag, wire_type) = decode_key(&mut bytes).ok()?;
            match wire_type {
                WireType::Varint => {
                    let v = decode_varint(&mut bytes).ok()?;
                    // As prost converts them: the low bits, last occurrence wins.
                    match tag {
                        2 => f.ty = v as i32,
                        12 => f.dimension = v as u32,
                        // An unpacked element of a repeated field.
                        3..=5 | 10 | 11 => return None,
                        _ => {}
                    }
                }
                WireType::LengthDelimited => {
                    let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
                    let value = bytes.get(..len)?;
                    bytes.advance(len);
                    let slot = match tag {
                        1 => {
                            f.name = value;
                            continue;
                        }
                        3 => &mut f.statuses,
                        4 => &mut f.null_rows,
                        5 => &mut f.bools,
                        6 => &mut f.int64s,
                        7 => &mut f.float64s,
                        8 => &mut f.float32s,
                        13 => &mut f.event_times,
                        // The blob and offsets of other types, or an unknown field.
                        _ => continue,
                    };
                    // A repeated field in two pieces is legal protobuf; leave it to prost.
                    if slot.replace(value).is_some() {
                        return None;
                    }
                }
                WireType::SixtyFourBit => {
                    if matches!(tag, 6 | 7 | 13) {
                        return None;
                    }
                    bytes = bytes.get(8..)?;
                }
                WireType::ThirtyTwoBit => {
                    if tag == 8 {
                        return None;
                    }
                    bytes = bytes.get(4..)?;
                }
                WireType::StartGroup | WireType::EndGroup => return None,
            }
        }
        Some(f)
    }
}

/// The varints of `bytes` as prost converts a `uint32` (the low 32 bits); `None` if one
/// is malformed.
fn varints_u32(mut bytes: &[u8]) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(decode_varint(&mut bytes).ok()? as u32);
    }
    Some(out)
}

/// What [`gather`](super::gather) returns for the same columns decoded: column `i` of the
/// result is row `rows[i].1` of `parts[rows[i].0]`, named and typed as the first part,
/// with event times if the first part has them. `None` where `gather` would not take its
/// typed path (parts of different types or dimensions; float32 vectors of which no
/// requested row has a value), if `parts` is empty, or if a row points outside its part:
/// the caller then decodes the columns and calls `gather`.
pub fn gather_views(parts: &[ColumnView<'_>], rows: &[(u32, u32)]) -> Option<PackedColumn> {
    let first = parts.first()?;
    let in_range = rows.iter().all(|&(p, r)| {
        parts
            .get(p as usize)
            .is_some_and(|c| (r as usize) < c.row_count())
    });
    let same_layout = parts
        .iter()
        .all(|c| c.ty == first.ty && c.dimension == first.dimension);
    if !in_range || !same_layout {
        return None;
    }
    let ty = FeatureType::try_from(first.ty).ok()?;
    if ty == FeatureType::Float32Vector
        && !rows
            .iter()
            .any(|&(p, r)| parts[p as usize].has_value(r as usize))
    {
        return None;
    }
    let n = rows.len();
    let d = first.dimension as usize;
    let event_times = !first.event_times.is_empty();
    let mut out = PackedColumn {
        name: first.name.to_owned(),
        r#type: first.ty,
        statuses: Vec::with_capacity(n),
        ..Default::default()
    };
    match ty {
        FeatureType::Bool => out.bools.reserve_exact(n),
        FeatureType::Int64 => out.int64s.reserve_exact(n),
        FeatureType::Float64 => out.float64s.reserve_exact(n),
        _ => {
            out.dimension = first.dimension;
            out.float32s = vec![0.0; n * d];
        }
    }
    if event_times {
        out.event_times_micros.reserve_exact(n);
    }
    for (i, &(p, r)) in rows.iter().enumerate() {
        let (c, r) = (&parts[p as usize], r as usize);
        let status = c.status_at(r);
        out.statuses.push(status as i32);
        let null = status == FeatureStatus::Present && c.is_null(r);
        if null {
            out.null_rows.push(i as u32);
        }
        if event_times {
            let t = if c.event_times.is_empty() {
                0
            } else {
                i64::from_le_bytes(ColumnView::word(c.event_times, r))
            };
            out.event_times_micros.push(t);
        }
        // A row without a value (missing, or null) is zero, as the builder pads it.
        let has = status == FeatureStatus::Present && !null;
        match ty {
            FeatureType::Bool => out.bools.push(has && c.values[r] != 0),
            FeatureType::Int64 => out.int64s.push(if has {
                i64::from_le_bytes(ColumnView::word(c.values, r))
            } else {
                0
            }),
            FeatureType::Float64 => out.float64s.push(if has {
                f64::from_le_bytes(ColumnView::word(c.values, r))
            } else {
                0.0
            }),
            _ if has => {
                let src = &c.values[r * d * 4..(r + 1) * d * 4];
                for (o, b) in out.float32s[i * d..(i + 1) * d]
                    .iter_mut()
                    .zip(src.chunks_exact(4))
                {
                    *o = f32::from_le_bytes(b.try_into().expect("chunks of 4 bytes"));
                }
            }
            _ => {}
        }
    }
    Some(out)
}
