//! Packed repeated fields written as whole slices: what prost's packed encoders write,
//! without their `BufMut` call (and capacity check) per element.

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Bytes a packed field `tag` of `payload` bytes takes (nothing when empty, as prost).
pub(super) fn bytes_len(tag: u32, payload: usize) -> usize {
    if payload == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(payload as u64) + payload
    }
}

/// A packed field `tag` whose elements are one byte each, given as those bytes.
pub(super) fn put_bytes(tag: u32, payload: &[u8], buf: &mut impl BufMut) {
    if payload.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(payload.len() as u64, buf);
    buf.put_slice(payload);
}

/// A packed field `tag` of fixed-width elements, each written as `le(element)` (its
/// little-endian bytes), through a stack buffer: one `put_slice` per 4 KiB. A short
/// field (most columns of a one-key answer hold one value) goes through a 64-byte buffer
/// instead: zeroing 4 KiB per column was 1.75 µs of a 1 × 50 answer's encoding.
pub(super) fn put_fixed<T, const W: usize>(
    tag: u32,
    values: &[T],
    le: impl Fn(&T) -> [u8; W],
    buf: &mut impl BufMut,
) {
    if values.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint((W * values.len()) as u64, buf);
    if W * values.len() <= 64 {
        put_chunks::<T, W, 64>(values, le, buf);
    } else {
        put_chunks::<T, W, 4096>(values, le, buf);
    }
}

/// `values` as `le(element)` bytes, through a stack buffer of `C` bytes.
fn put_chunks<T, const W: usize, const C: usize>(
    values: &[T],
    le: impl Fn(&T) -> [u8; W],
    buf: &mut impl BufMut,
) {
    let mut chunk = [0u8; C];
    for part in values.chunks(C / W) {
        for (out, v) in chunk.chunks_exact_mut(W).zip(part) {
            out.copy_from_slice(&le(v));
        }
        buf.put_slice(&chunk[..W * part.len()]);
    }
}

#[cfg(test)]
mod tests {
    use prost::encoding::{bool, double, float, int32, sfixed64};

    use super::*;

    fn bytes(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        encode(&mut b);
        b
    }

    /// `got` (bytes, length) is prost's `want`.
    fn same(what: &str, n: usize, want: (Vec<u8>, usize), got: Vec<u8>, got_len: usize) {
        assert_eq!(got, want.0, "{what}, {n}");
        assert_eq!(got_len, want.1, "{what} length, {n}");
    }

    /// Byte for byte prost's packed encodings, and their lengths, across chunk edges.
    #[test]
    fn slices_encode_as_prost_packs_them() {
        for n in [
            0usize, 1, 2, 7, 8, 9, 16, 17, 64, 65, 511, 512, 513, 1024, 1500, 4097,
        ] {
            let f64s: Vec<f64> = (0..n).map(|i| i as f64 * -1.5 + 0.25).collect();
            let i64s: Vec<i64> = (0..n).map(|i| (i as i64 - 700) * 1_000_003).collect();
            let f32s: Vec<f32> = (0..n).map(|i| i as f32 / 3.0).collect();
            let bools: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            let small: Vec<i32> = (0..n).map(|i| (i % 4) as i32).collect();
            let small_bytes: Vec<u8> = small.iter().map(|&s| s as u8).collect();

            let double = (
                bytes(|b| double::encode_packed(7, &f64s, b)),
                double::encoded_len_packed(7, &f64s),
            );
            same(
                "double",
                n,
                double,
                bytes(|b| put_fixed(7, &f64s, |v| v.to_le_bytes(), b)),
                bytes_len(7, 8 * n),
            );
            let fixed = (
                bytes(|b| sfixed64::encode_packed(13, &i64s, b)),
                sfixed64::encoded_len_packed(13, &i64s),
            );
            same(
                "sfixed64",
                n,
                fixed,
                bytes(|b| put_fixed(13, &i64s, |v| v.to_le_bytes(), b)),
                bytes_len(13, 8 * n),
            );
            let float = (
                bytes(|b| float::encode_packed(8, &f32s, b)),
                float::encoded_len_packed(8, &f32s),
            );
            same(
                "float",
                n,
                float,
                bytes(|b| put_fixed(8, &f32s, |v| v.to_le_bytes(), b)),
                bytes_len(8, 4 * n),
            );
            let bools_ = (
                bytes(|b| bool::encode_packed(5, &bools, b)),
                bool::encoded_len_packed(5, &bools),
            );
            same(
                "bool",
                n,
                bools_,
                bytes(|b| put_fixed(5, &bools, |v| [u8::from(*v)], b)),
                bytes_len(5, n),
            );
            let statuses = (
                bytes(|b| int32::encode_packed(3, &small, b)),
                int32::encoded_len_packed(3, &small),
            );
            same(
                "statuses",
                n,
                statuses,
                bytes(|b| put_bytes(3, &small_bytes, b)),
                bytes_len(3, n),
            );
        }
    }
}
