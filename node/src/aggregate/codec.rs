//! Byte-level helpers of the tile encoding: varints, zigzag, fixed-width words, and
//! typed scalars (an input value as stored in `last`/`last_n` states).

use std::borrow::Cow;

use super::AggError;
use crate::registry::FeatureType;

/// A reader over an encoded tile set.
pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn varint(&mut self) -> Result<u64, AggError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(AggError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(AggError::Corrupt("varint longer than 10 bytes"))
    }

    pub(super) fn zigzag(&mut self) -> Result<i64, AggError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub(super) fn u32_le(&mut self) -> Result<u32, AggError> {
        let (v, rest) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or(AggError::Truncated)?;
        self.buf = rest;
        Ok(u32::from_le_bytes(*v))
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], AggError> {
        if self.buf.len() < n {
            return Err(AggError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn f64(&mut self) -> Result<f64, AggError> {
        let b = self.bytes(8)?;
        Ok(f64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub(super) fn u8(&mut self) -> Result<u8, AggError> {
        Ok(self.bytes(1)?[0])
    }

    /// A scalar of input type `ty`.
    pub(super) fn scalar(&mut self, ty: FeatureType) -> Result<Scalar<'a>, AggError> {
        Ok(match ty {
            FeatureType::Bool => Scalar::Bool(self.u8()? != 0),
            FeatureType::Int64 => Scalar::Int(self.zigzag()?),
            FeatureType::Float64 => Scalar::Float(self.f64()?),
            _ => {
                let n = self.varint()? as usize;
                Scalar::Bytes(Cow::Borrowed(self.bytes(n)?))
            }
        })
    }
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// One input value: bool, int64, float64, or the bytes of a string or bytes input.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// bool
    Bool(bool),
    /// int64
    Int(i64),
    /// float64
    Float(f64),
    /// string (UTF-8, checked at ingest) or bytes
    Bytes(Cow<'a, [u8]>),
}

impl Scalar<'_> {
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Bool(b) => out.push(u8::from(*b)),
            Scalar::Int(v) => put_zigzag(out, *v),
            Scalar::Float(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Bytes(b) => {
                put_varint(out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }

    /// A copy that owns its bytes.
    pub fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Int(v) => Scalar::Int(v),
            Scalar::Float(v) => Scalar::Float(v),
            Scalar::Bytes(b) => Scalar::Bytes(Cow::Owned(b.into_owned())),
        }
    }

    /// The bytes hashed by `count_distinct`: a type tag and the value (floats by bits,
    /// with every NaN the same and -0.0 equal to 0.0).
    pub(super) fn hash(&self) -> u64 {
        let mut h = Fnv::default();
        match self {
            Scalar::Bool(b) => h.write(&[1, u8::from(*b)]),
            Scalar::Int(v) => {
                h.write(&[2]);
                h.write(&v.to_le_bytes());
            }
            Scalar::Float(v) => {
                let bits = if v.is_nan() {
                    f64::NAN.to_bits()
                } else if *v == 0.0 {
                    0
                } else {
                    v.to_bits()
                };
                h.write(&[3]);
                h.write(&bits.to_le_bytes());
            }
            Scalar::Bytes(b) => {
                h.write(&[4]);
                h.write(b);
            }
        }
        h.finish()
    }
}

/// FNV-1a over the bytes, then the murmur3 64-bit finaliser for avalanche: stable across
/// releases and platforms (sketches are stored), unlike `std`'s hasher.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_varints_round_trip() {
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        put_zigzag(&mut out, i64::MIN);
        put_zigzag(&mut out, -3);
        Scalar::Float(-0.5).put(&mut out);
        Scalar::Bytes(Cow::Borrowed(b"abc")).put(&mut out);
        Scalar::Bool(true).put(&mut out);
        let mut c = Cursor { buf: &out };
        assert_eq!(c.varint().unwrap(), u64::MAX);
        assert_eq!(c.zigzag().unwrap(), i64::MIN);
        assert_eq!(c.zigzag().unwrap(), -3);
        assert_eq!(c.scalar(FeatureType::Float64).unwrap(), Scalar::Float(-0.5));
        assert_eq!(
            c.scalar(FeatureType::String).unwrap(),
            Scalar::Bytes(Cow::Borrowed(b"abc"))
        );
        assert_eq!(c.scalar(FeatureType::Bool).unwrap(), Scalar::Bool(true));
        assert!(c.buf.is_empty());
        assert!(matches!(c.u8(), Err(AggError::Truncated)));
    }

    #[test]
    fn hashes_are_stable_and_typed() {
        // Stored sketches depend on these values never changing.
        assert_eq!(Scalar::Int(1).hash(), Scalar::Int(1).hash());
        assert_ne!(Scalar::Int(1).hash(), Scalar::Float(1.0).hash());
        assert_eq!(Scalar::Float(0.0).hash(), Scalar::Float(-0.0).hash());
        assert_eq!(Scalar::Int(42).hash(), 5_866_971_867_983_537_413);
    }
}
