//! One cached row: every column's cell of one entity key, copied out of the response it
//! arrived in into one compact byte string (one allocation per row, none per value), and
//! pushed back into the column builders of a later result.
//!
//! Per column: the type (1 byte), the status (1 byte; `NULL` for PRESENT and null), the
//! event time (8 bytes), then the value by type — bool 1 byte; int64 / float64 8 bytes;
//! string / bytes a u32 length and the bytes; vectors and lists a u32 count and the
//! elements; a string list a u32 count and each string as length and bytes. Little
//! endian; floats bit-exact.

use quiver_proto::packed::{ColumnBuilder, ValueRef};
use quiver_proto::v1::{FeatureStatus, FeatureType, PackedColumn};

/// Status byte of a PRESENT cell whose feature is null.
const NULL: u8 = 0xFF;

/// Appends row `row` of `cols` to `out`.
pub(crate) fn encode(cols: &[PackedColumn], row: usize, out: &mut Vec<u8>) {
    for c in cols {
        out.push(c.feature_type() as u8);
        let status = c.status_at(row);
        let value = (status == FeatureStatus::Present)
            .then(|| c.value(row))
            .flatten();
        out.push(match (status, value) {
            (FeatureStatus::Present, None) => NULL,
            (s, _) => s as u8,
        });
        out.extend_from_slice(&c.event_time_at(row).to_le_bytes());
        let Some(v) = value else { continue };
        let len = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
        match v {
            ValueRef::Bool(b) => out.push(u8::from(b)),
            ValueRef::Int64(i) => out.extend_from_slice(&i.to_le_bytes()),
            ValueRef::Float64(f) => out.extend_from_slice(&f.to_le_bytes()),
            ValueRef::String(s) => {
                len(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Bytes(b) => {
                len(out, b.len());
                out.extend_from_slice(b);
            }
            ValueRef::Float32Vector(v) => {
                len(out, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            ValueRef::Int64List(v) => {
                len(out, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            ValueRef::Float64List(v) => {
                len(out, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            ValueRef::StringList(l) => {
                len(out, l.len());
                for s in l.iter() {
                    len(out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
}

/// A cursor over an encoded row; every read is bounds-checked (`None`: corrupt).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn word(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.word()?))
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.word()?))
    }

    /// `n` fixed-width elements (checked against the bytes left before reading).
    fn array<T>(
        &mut self,
        width: usize,
        f: impl Fn(&[u8]) -> T,
    ) -> Option<impl Iterator<Item = T>> {
        let n = self.u32()?;
        let bytes = self.take(n.checked_mul(width)?)?;
        Some(bytes.chunks_exact(width).map(f))
    }
}

/// Pushes an encoded row into `builders` (one per column, in order). `false` if the row
/// does not fit them (another column count or type: the layout changed) — the caller
/// treats it as a miss; builders may then hold a partial row and must be discarded.
pub(crate) fn decode_into(bytes: &[u8], builders: &mut [ColumnBuilder]) -> bool {
    let mut r = Reader(bytes);
    for b in builders.iter_mut() {
        if decode_cell(&mut r, b).is_none() {
            return false;
        }
    }
    r.0.is_empty()
}

fn decode_cell(r: &mut Reader<'_>, b: &mut ColumnBuilder) -> Option<()> {
    let ty = FeatureType::try_from(i32::from(r.u8()?)).ok()?;
    if ty != b.feature_type() {
        return None;
    }
    let status = r.u8()?;
    let t = r.i64()?;
    if status == NULL {
        b.push_null(t);
        return Some(());
    }
    let status = FeatureStatus::try_from(i32::from(status)).ok()?;
    if status != FeatureStatus::Present {
        b.push_missing(status, t);
        return Some(());
    }
    match ty {
        FeatureType::Bool => b.push_bool(r.u8()? != 0, t),
        FeatureType::Int64 => b.push_i64(r.i64()?, t),
        FeatureType::Float64 => b.push_f64(r.f64()?, t),
        FeatureType::String | FeatureType::Bytes => {
            let n = r.u32()?;
            b.push_blob(r.take(n)?, t);
        }
        FeatureType::Float32Vector => {
            let v = r.array(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))?;
            b.push_f32s(v, t);
        }
        FeatureType::Int64List => {
            let v = r.array(8, |c| i64::from_le_bytes(c.try_into().unwrap_or_default()))?;
            b.push_i64s(v, t);
        }
        FeatureType::Float64List => {
            let v = r.array(8, |c| f64::from_le_bytes(c.try_into().unwrap_or_default()))?;
            b.push_f64s(v, t);
        }
        FeatureType::StringList => {
            let n = r.u32()?;
            // Each string is at least its 4-byte length: a corrupt count cannot make the
            // split below run past the row.
            if n.checked_mul(4)? > r.0.len() {
                return None;
            }
            let mut items: Vec<&[u8]> = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.u32()?;
                items.push(r.take(len)?);
            }
            b.push_strs(items, t);
        }
        FeatureType::Unspecified => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::v1::value::Kind;
    use quiver_proto::v1::{DoubleList, FloatVector, Int64List, StringList};

    /// A column of `ty` with the given cells (`None`: null; `Some(None)` … see below).
    fn column(name: &str, ty: FeatureType, cells: &[Cell]) -> PackedColumn {
        let mut b = ColumnBuilder::new(name.into(), ty, cells.len(), true);
        for (i, c) in cells.iter().enumerate() {
            let t = 1_000 + i as i64;
            match c {
                Cell::Value(k) => b.push_kind(Some(k), t),
                Cell::Null => b.push_null(t),
                Cell::Missing(s) => b.push_missing(*s, t),
            }
        }
        b.finish()
    }

    enum Cell {
        Value(Kind),
        Null,
        Missing(FeatureStatus),
    }

    #[test]
    fn every_type_and_status_round_trips_bit_exactly() {
        use Cell::*;
        let cols = vec![
            column(
                "v:b",
                FeatureType::Bool,
                &[
                    Value(Kind::BoolValue(true)),
                    Null,
                    Missing(FeatureStatus::NotFound),
                ],
            ),
            column(
                "v:i",
                FeatureType::Int64,
                &[
                    Value(Kind::Int64Value(i64::MIN)),
                    Value(Kind::Int64Value(-1)),
                    Missing(FeatureStatus::Expired),
                ],
            ),
            column(
                "v:f",
                FeatureType::Float64,
                &[
                    Value(Kind::Float64Value(f64::from_bits(0x7ff8_dead_beef_0001))),
                    Value(Kind::Float64Value(-0.0)),
                    Null,
                ],
            ),
            column(
                "v:s",
                FeatureType::String,
                &[
                    Value(Kind::StringValue("héllo".into())),
                    Value(Kind::StringValue(String::new())),
                    Null,
                ],
            ),
            column(
                "v:y",
                FeatureType::Bytes,
                &[
                    Value(Kind::BytesValue(vec![0, 255, 7])),
                    Null,
                    Value(Kind::BytesValue(vec![])),
                ],
            ),
            column(
                "v:e",
                FeatureType::Float32Vector,
                &[
                    Value(Kind::Float32Vector(FloatVector {
                        values: vec![0.5, f32::MIN_POSITIVE],
                    })),
                    Value(Kind::Float32Vector(FloatVector { values: vec![1.0] })),
                    Null,
                ],
            ),
            column(
                "v:il",
                FeatureType::Int64List,
                &[
                    Value(Kind::Int64List(Int64List {
                        values: vec![1, 2, 3],
                    })),
                    Value(Kind::Int64List(Int64List { values: vec![] })),
                    Missing(FeatureStatus::NotFound),
                ],
            ),
            column(
                "v:fl",
                FeatureType::Float64List,
                &[
                    Value(Kind::Float64List(DoubleList { values: vec![1.5] })),
                    Null,
                    Null,
                ],
            ),
            column(
                "v:sl",
                FeatureType::StringList,
                &[
                    Value(Kind::StringList(StringList {
                        values: vec!["a".into(), "".into(), "ccc".into()],
                    })),
                    Value(Kind::StringList(StringList { values: vec![] })),
                    Null,
                ],
            ),
        ];
        // Rows back in reverse order: the copy is per row, not positional.
        let mut builders: Vec<ColumnBuilder> = cols
            .iter()
            .map(|c| ColumnBuilder::new(c.name.clone(), c.feature_type(), 3, true))
            .collect();
        for row in (0..3).rev() {
            let mut bytes = Vec::new();
            encode(&cols, row, &mut bytes);
            assert!(decode_into(&bytes, &mut builders), "row {row}");
        }
        let back: Vec<PackedColumn> = builders.into_iter().map(ColumnBuilder::finish).collect();
        for (c, b) in cols.iter().zip(&back) {
            for row in 0..3 {
                let r = 2 - row;
                assert_eq!(c.status_at(row), b.status_at(r), "{} row {row}", c.name);
                assert_eq!(c.is_null(row), b.is_null(r), "{} row {row}", c.name);
                assert_eq!(
                    c.event_time_at(row),
                    b.event_time_at(r),
                    "{} row {row}",
                    c.name
                );
                let (x, y) = (
                    c.value(row).map(|v| v.to_kind()),
                    b.value(r).map(|v| v.to_kind()),
                );
                match (&x, &y) {
                    (Some(Kind::Float64Value(a)), Some(Kind::Float64Value(b))) => {
                        assert_eq!(a.to_bits(), b.to_bits());
                    }
                    _ => assert_eq!(x, y, "{} row {row}", c.name),
                }
            }
        }
    }

    #[test]
    fn a_row_of_another_layout_or_corrupt_bytes_is_refused() {
        let cols = vec![column(
            "v:i",
            FeatureType::Int64,
            &[Cell::Value(Kind::Int64Value(7))],
        )];
        let mut bytes = Vec::new();
        encode(&cols, 0, &mut bytes);
        let mut wrong_type = vec![ColumnBuilder::new(
            "v:i".into(),
            FeatureType::Float64,
            1,
            false,
        )];
        assert!(!decode_into(&bytes, &mut wrong_type));
        let mut two = vec![
            ColumnBuilder::new("v:i".into(), FeatureType::Int64, 1, false),
            ColumnBuilder::new("v:j".into(), FeatureType::Int64, 1, false),
        ];
        assert!(!decode_into(&bytes, &mut two));
        for cut in 0..bytes.len() {
            let mut one = vec![ColumnBuilder::new(
                "v:i".into(),
                FeatureType::Int64,
                1,
                false,
            )];
            assert!(!decode_into(&bytes[..cut], &mut one), "cut at {cut}");
        }
        let sl = vec![column(
            "v:sl",
            FeatureType::StringList,
            &[Cell::Value(Kind::StringList(StringList {
                values: vec!["x".into()],
            }))],
        )];
        let mut bytes = Vec::new();
        encode(&sl, 0, &mut bytes);
        bytes[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut one = vec![ColumnBuilder::new(
            "v:sl".into(),
            FeatureType::StringList,
            1,
            false,
        )];
        assert!(!decode_into(&bytes, &mut one));
    }
}
