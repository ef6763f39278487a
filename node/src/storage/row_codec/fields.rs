//! Borrowed decoding for the read path: the wanted features of a row as [`FieldRef`]s
//! that point into the stored bytes, so a lookup copies each value once — into its
//! response column — and allocates nothing per value.

use super::{CodecError, HEADER_LEN, Reader, RowHeader, decode_header, unzigzag};

/// One feature of a stored row, borrowed from the row's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// Null.
    Null,
    /// bool.
    Bool(bool),
    /// int64.
    Int64(i64),
    /// float64.
    Float64(f64),
    /// string (checked UTF-8).
    Str(&'a str),
    /// bytes.
    Bytes(&'a [u8]),
    /// float32 vector: little-endian f32s.
    Float32s(&'a [u8]),
    /// int64 list: `count` zigzag varints.
    Int64s(usize, &'a [u8]),
    /// float64 list: little-endian f64s.
    Float64s(&'a [u8]),
    /// string list: `count` × (varint length + UTF-8 bytes), every string checked.
    Strs(usize, &'a [u8]),
}

impl<'a> FieldRef<'a> {
    /// The elements of a float32 vector.
    pub fn f32s(raw: &'a [u8]) -> impl Iterator<Item = f32> + 'a {
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The elements of a float64 list.
    pub fn f64s(raw: &'a [u8]) -> impl Iterator<Item = f64> + 'a {
        raw.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }

    /// The elements of an int64 list (already checked to hold `count` varints).
    pub fn i64s(count: usize, raw: &'a [u8]) -> impl Iterator<Item = i64> + 'a {
        let mut r = Reader { buf: raw };
        (0..count).map(move |_| unzigzag(r.varint().unwrap_or(0)))
    }

    /// The strings of a string list (already checked).
    pub fn strs(count: usize, raw: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader { buf: raw };
        (0..count).map(move |_| r.len(1).and_then(|n| r.take(n)).unwrap_or_default())
    }
}

impl<'a> Reader<'a> {
    /// The next feature, borrowed; lists are checked whole (their end found, strings
    /// checked UTF-8) so their iterators cannot fail later.
    fn field(&mut self) -> Result<FieldRef<'a>, CodecError> {
        let tag = self.u8()?;
        Ok(match tag {
            0 => FieldRef::Null,
            1 => FieldRef::Bool(self.u8()? != 0),
            2 => FieldRef::Int64(unzigzag(self.varint()?)),
            3 => FieldRef::Float64(self.f64()?),
            4 => {
                let n = self.len(1)?;
                let b = self.take(n)?;
                FieldRef::Str(std::str::from_utf8(b).map_err(|_| CodecError::InvalidUtf8)?)
            }
            5 => {
                let n = self.len(1)?;
                FieldRef::Bytes(self.take(n)?)
            }
            6 => {
                let n = self.len(4)?;
                FieldRef::Float32s(self.take(n * 4)?)
            }
            7 => {
                let n = self.len(1)?;
                let start = self.buf;
                for _ in 0..n {
                    self.varint()?;
                }
                FieldRef::Int64s(n, &start[..start.len() - self.buf.len()])
            }
            8 => {
                let n = self.len(8)?;
                FieldRef::Float64s(self.take(n * 8)?)
            }
            9 => {
                let n = self.len(1)?;
                let start = self.buf;
                for _ in 0..n {
                    let m = self.len(1)?;
                    std::str::from_utf8(self.take(m)?).map_err(|_| CodecError::InvalidUtf8)?;
                }
                FieldRef::Strs(n, &start[..start.len() - self.buf.len()])
            }
            other => return Err(CodecError::UnknownTag(other)),
        })
    }
}

/// A row's features read in ascending feature order, each wanted one borrowed and the
/// ones between skipped without decoding; the header is read once, by [`RowFields::open`].
#[derive(Debug)]
pub struct RowFields<'a> {
    r: Reader<'a>,
    /// Index of the feature the cursor is before.
    next: usize,
    /// Features the row holds.
    count: usize,
}

impl<'a> RowFields<'a> {
    /// The header of `value` and a cursor before its first feature (a tombstone holds
    /// none).
    ///
    /// # Errors
    /// Any [`CodecError`] of the header or the feature count.
    pub fn open(value: &'a [u8]) -> Result<(RowHeader, RowFields<'a>), CodecError> {
        let header = decode_header(value)?;
        let mut r = Reader {
            buf: &value[HEADER_LEN..],
        };
        let count = if header.tombstone { 0 } else { r.len(1)? };
        Ok((header, RowFields { r, next: 0, count }))
    }

    /// Feature `index`, skipping the features between the cursor and it. A feature the
    /// row predates (appended to the view after the row was written) is
    /// [`FieldRef::Null`]: the row exists and says "no value".
    ///
    /// `index` must not be before the cursor (a feature already read or skipped); reading
    /// the wanted features in ascending order, each once, keeps to that.
    ///
    /// # Errors
    /// Any [`CodecError`] of the features up to `index`.
    #[inline]
    pub fn read(&mut self, index: usize) -> Result<FieldRef<'a>, CodecError> {
        debug_assert!(
            index >= self.next,
            "feature {index} read after {}",
            self.next
        );
        if index >= self.count {
            return Ok(FieldRef::Null);
        }
        while self.next < index {
            self.r.skip_value()?;
            self.next += 1;
        }
        self.next += 1;
        self.r.field()
    }
}

#[cfg(test)]
mod tests {
    use quiver_proto::v1::value::Kind;
    use quiver_proto::v1::{DoubleList, FloatVector, Int64List, StringList};

    use super::super::{decode_selected, encode_row};
    use super::*;

    /// The borrowed fields say exactly what the allocating decoder says.
    #[test]
    fn borrowed_fields_match_the_decoded_values() {
        let values = vec![
            Some(Kind::BoolValue(true)),
            Some(Kind::Int64Value(i64::MIN)),
            None,
            Some(Kind::Float64Value(-0.0)),
            Some(Kind::StringValue("héllo 🦀".into())),
            Some(Kind::BytesValue(vec![0, 255])),
            Some(Kind::Float32Vector(FloatVector {
                values: vec![1.5, f32::MIN_POSITIVE],
            })),
            Some(Kind::Int64List(Int64List {
                values: vec![-1, i64::MAX, 0],
            })),
            Some(Kind::Float64List(DoubleList { values: vec![] })),
            Some(Kind::StringList(StringList {
                values: vec!["a".into(), String::new(), "日本".into()],
            })),
        ];
        let mut row = Vec::new();
        encode_row(42, &values, &mut row);
        let every: Vec<Option<usize>> = (0..values.len()).map(Some).collect();
        let mut owned = vec![None; values.len()];
        decode_selected(&row, &every, &mut owned).unwrap();
        // Every subset of the features (and two the row predates), read in ascending
        // order: each read says what the allocating decoder says, and the features in
        // between are skipped, not returned.
        let wanted_sets = 1u32 << (values.len() + 2);
        for set in 0..wanted_sets {
            let (h, mut fields) = RowFields::open(&row).unwrap();
            assert_eq!(h.event_time_micros, 42);
            for index in (0..values.len() + 2).filter(|i| set & (1 << i) != 0) {
                let got = as_kind(fields.read(index).unwrap());
                let want = owned.get(index).cloned().flatten();
                assert_eq!(got, want, "feature {index} of set {set:b}");
            }
        }
        // A tombstone holds no features.
        let mut tomb = Vec::new();
        super::super::encode_tombstone(7, &mut tomb);
        let (h, mut fields) = RowFields::open(&tomb).unwrap();
        assert!(h.tombstone);
        assert_eq!(fields.read(0).unwrap(), FieldRef::Null);
        // Corrupt bytes are an error, never a panic; a row cut inside the features is an
        // error for the feature it cuts.
        for cut in 0..row.len() {
            let read_all = RowFields::open(&row[..cut]).and_then(|(_, mut fields)| {
                (0..values.len()).try_for_each(|i| fields.read(i).map(drop))
            });
            assert!(read_all.is_err(), "a row cut to {cut} bytes read whole");
        }
    }

    fn as_kind(f: FieldRef<'_>) -> Option<Kind> {
        match f {
            FieldRef::Null => None,
            FieldRef::Bool(b) => Some(Kind::BoolValue(b)),
            FieldRef::Int64(i) => Some(Kind::Int64Value(i)),
            FieldRef::Float64(x) => Some(Kind::Float64Value(x)),
            FieldRef::Str(s) => Some(Kind::StringValue(s.to_owned())),
            FieldRef::Bytes(b) => Some(Kind::BytesValue(b.to_vec())),
            FieldRef::Float32s(raw) => Some(Kind::Float32Vector(FloatVector {
                values: FieldRef::f32s(raw).collect(),
            })),
            FieldRef::Int64s(n, raw) => Some(Kind::Int64List(Int64List {
                values: FieldRef::i64s(n, raw).collect(),
            })),
            FieldRef::Float64s(raw) => Some(Kind::Float64List(DoubleList {
                values: FieldRef::f64s(raw).collect(),
            })),
            FieldRef::Strs(n, raw) => Some(Kind::StringList(StringList {
                values: FieldRef::strs(n, raw)
                    .map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .collect(),
            })),
        }
    }
}
