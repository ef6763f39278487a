//! Feature values for fidelity tests: every feature type, with the values that break lossy
//! paths (subnormals, ±0, the extremes of int64 and of the float types, integers beyond
//! 2^53, NaN and ±∞, long and non-ASCII strings, empty lists), from a seed; and bit-exact
//! comparison of what came back with what went in.

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{DoubleList, FloatVector, Int64List, StringList};

/// Every feature type, as definition files name them.
pub const FEATURE_TYPES: [&str; 9] = [
    "bool",
    "int64",
    "float64",
    "string",
    "bytes",
    "float32_vector",
    "int64_list",
    "float64_list",
    "string_list",
];

/// A deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct ValueGen {
    state: u64,
    /// Whether to produce NaN and ±∞ (JSON views carry them as strings; the test of a
    /// path that cannot carry them turns this off).
    pub non_finite: bool,
}

const F64_EDGES: [f64; 12] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.225_073_858_507_201e-308, // largest subnormal
    f64::MIN_POSITIVE,
    f64::MAX,
    f64::MIN,
    f64::EPSILON,
    0.938_538_012_326_916_5, // served 1 ulp off by a lossy JSON parser
    0.1,
    9_007_199_254_740_993.0,
];

const F32_EDGES: [f32; 9] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1.175_494_2e-38,
    f32::MAX,
    f32::MIN,
    0.1,
    16_777_217.0,
];

const I64_EDGES: [i64; 8] = [
    0,
    -1,
    i64::MAX,
    i64::MIN,
    (1 << 53) + 1,
    -(1 << 53) - 1,
    1 << 62,
    i64::MIN + 1,
];

const STRING_EDGES: [&str; 6] = [
    "",
    "é",
    "日本語テキスト",
    "🦀 emoji",
    "quote \" back\\slash",
    "nul\u{0}tab\t",
];

impl ValueGen {
    /// A generator for `seed`, producing non-finite floats too.
    pub fn new(seed: u64) -> Self {
        ValueGen {
            state: seed,
            non_finite: true,
        }
    }

    /// 64 pseudo-random bits.
    pub fn bits(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    /// A float64: an edge case one time in four, otherwise uniformly random bits.
    pub fn f64(&mut self) -> f64 {
        loop {
            let f = match self.below(8) {
                0 | 1 => F64_EDGES[self.below(F64_EDGES.len())],
                2 if self.non_finite => [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][self.below(3)],
                3 => (self.bits() >> 11) as f64 / (1u64 << 53) as f64, // in [0, 1)
                _ => f64::from_bits(self.bits()),
            };
            if self.non_finite || f.is_finite() {
                return f;
            }
        }
    }

    /// A float32, likewise.
    pub fn f32(&mut self) -> f32 {
        loop {
            let f = match self.below(8) {
                0 | 1 => F32_EDGES[self.below(F32_EDGES.len())],
                2 if self.non_finite => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][self.below(3)],
                _ => f32::from_bits(self.bits() as u32),
            };
            if self.non_finite || f.is_finite() {
                return f;
            }
        }
    }

    /// An int64.
    pub fn i64(&mut self) -> i64 {
        if self.below(3) == 0 {
            I64_EDGES[self.below(I64_EDGES.len())]
        } else {
            self.bits() as i64
        }
    }

    /// A string: an edge case, or random text of 0..2000 characters mixing ASCII and
    /// multi-byte characters.
    pub fn string(&mut self) -> String {
        if self.below(3) == 0 {
            return STRING_EDGES[self.below(STRING_EDGES.len())].to_owned();
        }
        let len = [0, 1, 7, 64, 2_000][self.below(5)];
        (0..len)
            .map(|_| match self.below(6) {
                0 => char::from_u32(0x80 + self.below(0x700) as u32).unwrap_or('x'),
                1 => char::from_u32(0x4e00 + self.below(0x5000) as u32).unwrap_or('y'),
                2 => char::from_u32(0x1f600 + self.below(0x40) as u32).unwrap_or('z'),
                _ => char::from(b' ' + self.below(95) as u8),
            })
            .collect()
    }

    fn len(&mut self) -> usize {
        [0, 1, 3, 17][self.below(4)]
    }

    /// A value of feature type `ty` (one of [`FEATURE_TYPES`]).
    ///
    /// # Panics
    /// On an unknown type name.
    pub fn value(&mut self, ty: &str) -> Kind {
        match ty {
            "bool" => Kind::BoolValue(self.bits() & 1 == 1),
            "int64" => Kind::Int64Value(self.i64()),
            "float64" => Kind::Float64Value(self.f64()),
            "string" => Kind::StringValue(self.string()),
            "bytes" => {
                let n = [0, 1, 33, 1000][self.below(4)];
                Kind::BytesValue((0..n).map(|_| self.bits() as u8).collect())
            }
            "float32_vector" => {
                let n = self.len();
                Kind::Float32Vector(FloatVector {
                    values: (0..n).map(|_| self.f32()).collect(),
                })
            }
            "int64_list" => {
                let n = self.len();
                Kind::Int64List(Int64List {
                    values: (0..n).map(|_| self.i64()).collect(),
                })
            }
            "float64_list" => {
                let n = self.len();
                Kind::Float64List(DoubleList {
                    values: (0..n).map(|_| self.f64()).collect(),
                })
            }
            "string_list" => {
                let n = self.len();
                Kind::StringList(StringList {
                    values: (0..n).map(|_| self.string()).collect(),
                })
            }
            other => panic!("unknown feature type {other}"),
        }
    }
}

/// How NaN is compared: exact payload bits (protobuf paths), or any NaN for any NaN
/// (JSON has one spelling of NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NanBits {
    /// Every bit must match.
    Exact,
    /// A NaN matches a NaN; every other value must match bit for bit.
    AnyNan,
}

fn f64_same(a: f64, b: f64, nan: NanBits) -> bool {
    a.to_bits() == b.to_bits() || (nan == NanBits::AnyNan && a.is_nan() && b.is_nan())
}

fn f32_same(a: f32, b: f32, nan: NanBits) -> bool {
    a.to_bits() == b.to_bits() || (nan == NanBits::AnyNan && a.is_nan() && b.is_nan())
}

/// Whether `got` is `want` bit for bit (floats compared by their bits, so `-0.0 ≠ 0.0`).
pub fn same_bits(want: &Kind, got: &Kind, nan: NanBits) -> bool {
    match (want, got) {
        (Kind::Float64Value(a), Kind::Float64Value(b)) => f64_same(*a, *b, nan),
        (Kind::Float32Vector(a), Kind::Float32Vector(b)) => {
            a.values.len() == b.values.len()
                && a.values
                    .iter()
                    .zip(&b.values)
                    .all(|(x, y)| f32_same(*x, *y, nan))
        }
        (Kind::Float64List(a), Kind::Float64List(b)) => {
            a.values.len() == b.values.len()
                && a.values
                    .iter()
                    .zip(&b.values)
                    .all(|(x, y)| f64_same(*x, *y, nan))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bits_tells_signed_zeros_and_nans_apart() {
        let z = Kind::Float64Value(0.0);
        let nz = Kind::Float64Value(-0.0);
        assert!(!same_bits(&z, &nz, NanBits::AnyNan));
        let n1 = Kind::Float64Value(f64::NAN);
        let n2 = Kind::Float64Value(f64::from_bits(f64::NAN.to_bits() | 1));
        assert!(same_bits(&n1, &n2, NanBits::AnyNan));
        assert!(!same_bits(&n1, &n2, NanBits::Exact));
        let mut g = ValueGen::new(1);
        for ty in FEATURE_TYPES {
            for _ in 0..50 {
                let v = g.value(ty);
                assert!(same_bits(&v, &v.clone(), NanBits::Exact), "{ty}");
            }
        }
    }
}
