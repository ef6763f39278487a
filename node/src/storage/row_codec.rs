//! Row value encoding (format version 1).
//!
//! ```text
//! u8 format (=1) | u8 flags (bit 0: tombstone) | i64 LE event time (µs) |
//! varint n | n × feature
//! feature = u8 tag | payload
//!   0 null | 1 bool: u8 | 2 int64: zigzag varint | 3 float64: 8 B LE
//!   4 string, 5 bytes: varint len + bytes | 6 float32 vector: varint n + n × 4 B LE
//!   7 int64 list: varint n + n × zigzag varint | 8 float64 list: varint n + n × 8 B LE
//!   9 string list: varint n + n × (varint len + bytes)
//! ```
//!
//! Features are positional in the view's declaration order; views only ever append
//! features within a version, so a row written before a feature existed decodes with the
//! new feature missing (reported NOT_FOUND). The fixed-offset header lets the TTL
//! compaction filter read the event time without decoding the row. Decoding never panics
//! on corrupt bytes; it returns [`CodecError`].

mod fields;
mod fixed;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{DoubleList, FloatVector, Int64List, StringList};

pub use fields::{FieldRef, RowFields};
pub use fixed::FixedLayout;

/// Current row format version.
pub const ROW_FORMAT_V1: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 10;

/// Why a stored row could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value is shorter than its header or a length says.
    #[error("row value truncated")]
    Truncated,
    /// Unknown format version byte.
    #[error("unknown row format version {0}")]
    UnknownFormat(u8),
    /// Unknown feature tag.
    #[error("unknown feature tag {0}")]
    UnknownTag(u8),
    /// A string is not valid UTF-8.
    #[error("string feature is not valid UTF-8")]
    InvalidUtf8,
    /// A varint is longer than 10 bytes.
    #[error("varint overflow")]
    VarintOverflow,
}

/// The fixed part of every row value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowHeader {
    /// Event time of the record that wrote the row, µs since the Unix epoch.
    pub event_time_micros: i64,
    /// The row was deleted; kept as a marker so older events cannot resurrect it.
    pub tombstone: bool,
}

/// Reads the header of a row value.
///
/// # Errors
/// [`CodecError::Truncated`] or [`CodecError::UnknownFormat`].
pub fn decode_header(value: &[u8]) -> Result<RowHeader, CodecError> {
    if value.len() < HEADER_LEN {
        return Err(CodecError::Truncated);
    }
    if value[0] != ROW_FORMAT_V1 {
        return Err(CodecError::UnknownFormat(value[0]));
    }
    let event_time_micros =
        i64::from_le_bytes(value[2..10].try_into().map_err(|_| CodecError::Truncated)?);
    Ok(RowHeader {
        event_time_micros,
        tombstone: value[1] & FLAG_TOMBSTONE != 0,
    })
}

fn put_header(out: &mut Vec<u8>, event_time_micros: i64, tombstone: bool) {
    out.push(ROW_FORMAT_V1);
    out.push(if tombstone { FLAG_TOMBSTONE } else { 0 });
    out.extend_from_slice(&event_time_micros.to_le_bytes());
}

/// Encodes a tombstone marker into `out` (cleared first).
pub fn encode_tombstone(event_time_micros: i64, out: &mut Vec<u8>) {
    out.clear();
    put_header(out, event_time_micros, true);
    put_varint(out, 0);
}

/// Encodes a row into `out` (cleared first). `None` is a null feature.
pub fn encode_row(event_time_micros: i64, values: &[Option<Kind>], out: &mut Vec<u8>) {
    out.clear();
    put_header(out, event_time_micros, false);
    put_varint(out, values.len() as u64);
    for v in values {
        encode_value(v.as_ref(), out);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn encode_value(v: Option<&Kind>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(Kind::BoolValue(b)) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Some(Kind::Int64Value(i)) => {
            out.push(2);
            put_varint(out, zigzag(*i));
        }
        Some(Kind::Float64Value(f)) => {
            out.push(3);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Some(Kind::StringValue(s)) => {
            out.push(4);
            put_bytes(out, s.as_bytes());
        }
        Some(Kind::BytesValue(b)) => {
            out.push(5);
            put_bytes(out, b);
        }
        Some(Kind::Float32Vector(v)) => {
            out.push(6);
            put_varint(out, v.values.len() as u64);
            for f in &v.values {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Some(Kind::Int64List(l)) => {
            out.push(7);
            put_varint(out, l.values.len() as u64);
            for i in &l.values {
                put_varint(out, zigzag(*i));
            }
        }
        Some(Kind::Float64List(l)) => {
            out.push(8);
            put_varint(out, l.values.len() as u64);
            for f in &l.values {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Some(Kind::StringList(l)) => {
            out.push(9);
            put_varint(out, l.values.len() as u64);
            for s in &l.values {
                put_bytes(out, s.as_bytes());
            }
        }
    }
}

/// A cursor over an encoded row.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintOverflow)
    }

    /// A length or count, checked against the bytes left so corrupt input cannot make us
    /// allocate more than the value's size.
    fn len(&mut self, min_item_size: usize) -> Result<usize, CodecError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| CodecError::Truncated)?;
        if n.saturating_mul(min_item_size) > self.buf.len() {
            return Err(CodecError::Truncated);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = self.len(1)?;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| CodecError::InvalidUtf8)
    }

    fn f64(&mut self) -> Result<f64, CodecError> {
        Ok(f64::from_le_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| CodecError::Truncated)?,
        ))
    }

    fn value(&mut self) -> Result<Option<Kind>, CodecError> {
        let tag = self.u8()?;
        Ok(Some(match tag {
            0 => return Ok(None),
            1 => Kind::BoolValue(self.u8()? != 0),
            2 => Kind::Int64Value(unzigzag(self.varint()?)),
            3 => Kind::Float64Value(self.f64()?),
            4 => Kind::StringValue(self.string()?),
            5 => {
                let n = self.len(1)?;
                Kind::BytesValue(self.take(n)?.to_vec())
            }
            6 => {
                let n = self.len(4)?;
                let raw = self.take(n * 4)?;
                let values = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Kind::Float32Vector(FloatVector { values })
            }
            7 => {
                let n = self.len(1)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(unzigzag(self.varint()?));
                }
                Kind::Int64List(Int64List { values })
            }
            8 => {
                let n = self.len(8)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.f64()?);
                }
                Kind::Float64List(DoubleList { values })
            }
            9 => {
                let n = self.len(1)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.string()?);
                }
                Kind::StringList(StringList { values })
            }
            other => return Err(CodecError::UnknownTag(other)),
        }))
    }

    /// Skips one value without allocating.
    fn skip_value(&mut self) -> Result<(), CodecError> {
        let tag = self.u8()?;
        match tag {
            0 => {}
            1 => {
                self.take(1)?;
            }
            2 => {
                self.varint()?;
            }
            3 => {
                self.take(8)?;
            }
            4 | 5 => {
                let n = self.len(1)?;
                self.take(n)?;
            }
            6 => {
                let n = self.len(4)?;
                self.take(n * 4)?;
            }
            7 => {
                let n = self.len(1)?;
                for _ in 0..n {
                    self.varint()?;
                }
            }
            8 => {
                let n = self.len(8)?;
                self.take(n * 8)?;
            }
            9 => {
                let n = self.len(1)?;
                for _ in 0..n {
                    let m = self.len(1)?;
                    self.take(m)?;
                }
            }
            other => return Err(CodecError::UnknownTag(other)),
        }
        Ok(())
    }
}

/// A fully decoded row.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRow {
    /// Header.
    pub header: RowHeader,
    /// Values in storage order; `None` is null.
    pub values: Vec<Option<Kind>>,
}

/// Decodes a whole row.
///
/// # Errors
/// Any [`CodecError`] on corrupt input.
pub fn decode_row(value: &[u8]) -> Result<DecodedRow, CodecError> {
    let header = decode_header(value)?;
    let mut r = Reader {
        buf: &value[HEADER_LEN..],
    };
    let n = r.len(1)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(r.value()?);
    }
    Ok(DecodedRow { header, values })
}

/// Decodes only the features a lookup wants.
///
/// `slots[i]` is the output position of feature `i`, or `None` to skip it; `out` has one
/// entry per output position and receives the values (features the row does not have,
/// because it predates them, stay `None`). Decoding stops after the last wanted feature.
///
/// # Errors
/// Any [`CodecError`] on corrupt input.
pub fn decode_selected(
    value: &[u8],
    slots: &[Option<usize>],
    out: &mut [Option<Kind>],
) -> Result<RowHeader, CodecError> {
    let header = decode_header(value)?;
    let mut r = Reader {
        buf: &value[HEADER_LEN..],
    };
    let n = r.len(1)?;
    let last_wanted = slots.iter().rposition(Option::is_some);
    let Some(last_wanted) = last_wanted else {
        return Ok(header);
    };
    for slot in slots.iter().take(n.min(last_wanted + 1)) {
        match slot {
            Some(pos) => {
                let v = r.value()?;
                if let Some(dst) = out.get_mut(*pos) {
                    *dst = v;
                }
            }
            None => r.skip_value()?,
        }
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Option<Kind>> {
        vec![
            Some(Kind::BoolValue(true)),
            Some(Kind::Int64Value(-123_456_789_012)),
            Some(Kind::Float64Value(3.25)),
            Some(Kind::StringValue("héllo".into())),
            Some(Kind::BytesValue(vec![0, 255, 7])),
            Some(Kind::Float32Vector(FloatVector {
                values: vec![0.5, -1.0, 1e-3],
            })),
            Some(Kind::Int64List(Int64List {
                values: vec![i64::MIN, 0, i64::MAX],
            })),
            Some(Kind::Float64List(DoubleList {
                values: vec![f64::MAX, -0.0],
            })),
            Some(Kind::StringList(StringList {
                values: vec!["a".into(), String::new()],
            })),
            None,
        ]
    }

    #[test]
    fn every_type_round_trips() {
        let mut buf = Vec::new();
        encode_row(1_700_000_000_000_000, &sample(), &mut buf);
        let row = decode_row(&buf).unwrap();
        assert_eq!(
            row.header,
            RowHeader {
                event_time_micros: 1_700_000_000_000_000,
                tombstone: false
            }
        );
        assert_eq!(row.values, sample());
    }

    #[test]
    fn selected_decode_picks_and_reorders() {
        let mut buf = Vec::new();
        encode_row(5, &sample(), &mut buf);
        // Want feature 8 first, then feature 1; skip everything else.
        let mut slots = vec![None; 12];
        slots[8] = Some(0);
        slots[1] = Some(1);
        slots[11] = Some(2); // beyond the row: predates the feature
        let mut out = vec![None, None, None];
        let h = decode_selected(&buf, &slots, &mut out).unwrap();
        assert_eq!(h.event_time_micros, 5);
        assert_eq!(out[0], sample()[8]);
        assert_eq!(out[1], sample()[1]);
        assert_eq!(out[2], None);
    }

    #[test]
    fn tombstone_header() {
        let mut buf = Vec::new();
        encode_tombstone(-42, &mut buf);
        let h = decode_header(&buf).unwrap();
        assert!(h.tombstone);
        assert_eq!(h.event_time_micros, -42);
        assert!(decode_row(&buf).unwrap().values.is_empty());
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode_row(5, &sample(), &mut buf);
        for cut in 0..buf.len() {
            // Every strict prefix is either an error or (for a prefix ending exactly on a
            // value boundary) impossible because the count says more values follow.
            assert!(decode_row(&buf[..cut]).is_err(), "prefix {cut} decoded");
        }
        assert_eq!(decode_header(&[9; 10]), Err(CodecError::UnknownFormat(9)));
        let mut bad = buf.clone();
        bad[HEADER_LEN + 1] = 200; // first feature tag
        assert_eq!(decode_row(&bad), Err(CodecError::UnknownTag(200)));
        // A huge count must not allocate: it is checked against the bytes left.
        let mut huge = Vec::new();
        put_header(&mut huge, 0, false);
        put_varint(&mut huge, u64::MAX >> 1);
        assert_eq!(decode_row(&huge), Err(CodecError::Truncated));
    }
}
