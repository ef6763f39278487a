//! Fixed-width states: numeric states stored as arrays of little-endian words over a
//! group's tiles, so a window merges with a tight loop instead of decoding varints.

use super::{Acc, AccKind, fold, merge_moments};
use crate::aggregate::codec::Scalar;
use crate::registry::FeatureType;

/// Word `i` of a fixed-width entry.
fn word(e: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(e[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

impl AccKind {
    /// Bytes of a fixed-width state (stored as an array over a group's tiles, merged
    /// without decoding varints), or `None` for a variable-width one. Fixed entries are
    /// little-endian words: `n` then the value words; all zeros is the empty state.
    pub fn fixed_width(self) -> Option<usize> {
        match self {
            AccKind::Count => Some(8),
            AccKind::SumI
            | AccKind::SumF
            | AccKind::MinI
            | AccKind::MaxI
            | AccKind::MinF
            | AccKind::MaxF => Some(16),
            AccKind::Moments => Some(24),
            AccKind::Last(FeatureType::Bool | FeatureType::Int64 | FeatureType::Float64) => {
                Some(24)
            }
            _ => None,
        }
    }

    /// Decodes a fixed-width entry (ingest side).
    pub(in crate::aggregate) fn read_fixed(self, e: &[u8]) -> Acc<'static> {
        let n = word(e, 0);
        if n == 0 {
            return self.empty();
        }
        let a = if e.len() >= 16 { word(e, 1) } else { 0 };
        let b = if e.len() >= 24 { word(e, 2) } else { 0 };
        match self {
            AccKind::Count => Acc::Count(n),
            AccKind::SumI => Acc::SumI(n, a as i64),
            AccKind::MinI => Acc::MinI(n, a as i64),
            AccKind::MaxI => Acc::MaxI(n, a as i64),
            AccKind::SumF => Acc::SumF(n, f64::from_bits(a)),
            AccKind::MinF => Acc::MinF(n, f64::from_bits(a)),
            AccKind::MaxF => Acc::MaxF(n, f64::from_bits(a)),
            AccKind::Moments => Acc::Moments(n, f64::from_bits(a), f64::from_bits(b)),
            AccKind::Last(ty) => Acc::Last(n, a as i64, scalar_of_bits(ty, b)),
            _ => self.empty(),
        }
    }

    /// Merges fixed-width entries (oldest first) into `into`, a running state.
    pub(in crate::aggregate) fn merge_fixed(self, entries: &[u8], into: &mut Acc<'_>) {
        let Some(w) = self.fixed_width() else { return };
        let entries = entries.chunks_exact(w).filter(|e| word(e, 0) > 0);
        match (self, into) {
            (AccKind::Count, Acc::Count(m)) => *m += entries.map(|e| word(e, 0)).sum::<u64>(),
            (AccKind::SumI, Acc::SumI(m, s)) => {
                for e in entries {
                    *m += word(e, 0);
                    *s = s.wrapping_add(word(e, 1) as i64);
                }
            }
            (AccKind::SumF, Acc::SumF(m, s)) => {
                for e in entries {
                    *m += word(e, 0);
                    *s += f64::from_bits(word(e, 1));
                }
            }
            (AccKind::MinI, Acc::MinI(m, v)) => {
                entries.for_each(|e| fold(m, v, word(e, 0), word(e, 1) as i64, |a, b| a.min(b)))
            }
            (AccKind::MaxI, Acc::MaxI(m, v)) => {
                entries.for_each(|e| fold(m, v, word(e, 0), word(e, 1) as i64, |a, b| a.max(b)))
            }
            (AccKind::MinF, Acc::MinF(m, v)) => {
                entries.for_each(|e| fold(m, v, word(e, 0), f64::from_bits(word(e, 1)), f64::min))
            }
            (AccKind::MaxF, Acc::MaxF(m, v)) => {
                entries.for_each(|e| fold(m, v, word(e, 0), f64::from_bits(word(e, 1)), f64::max))
            }
            (AccKind::Moments, Acc::Moments(m, mean, m2)) => {
                for e in entries {
                    let (mb, m2b) = (f64::from_bits(word(e, 1)), f64::from_bits(word(e, 2)));
                    merge_moments((&mut *m, &mut *mean, &mut *m2), word(e, 0), mb, m2b);
                }
            }
            (AccKind::Last(ty), Acc::Last(m, t, v)) => {
                for e in entries {
                    let tb = word(e, 1) as i64;
                    if *m == 0 || tb >= *t {
                        *t = tb;
                        *v = scalar_of_bits(ty, word(e, 2));
                    }
                    *m += word(e, 0);
                }
            }
            _ => {}
        }
    }
}

/// A bool, int64 or float64 scalar from its 64-bit word.
fn scalar_of_bits(ty: FeatureType, b: u64) -> Scalar<'static> {
    match ty {
        FeatureType::Bool => Scalar::Bool(b != 0),
        FeatureType::Int64 => Scalar::Int(b as i64),
        _ => Scalar::Float(f64::from_bits(b)),
    }
}

impl Acc<'_> {
    /// Writes a fixed-width state into `e` (its [`AccKind::fixed_width`] bytes).
    pub(in crate::aggregate) fn write_fixed(&self, e: &mut [u8]) {
        let bits = |v: &Scalar<'_>| match v {
            Scalar::Bool(b) => u64::from(*b),
            Scalar::Int(i) => *i as u64,
            Scalar::Float(f) => f.to_bits(),
            Scalar::Bytes(_) => 0,
        };
        let words: [u64; 3] = match self {
            Acc::Count(n) => [*n, 0, 0],
            Acc::SumI(n, v) | Acc::MinI(n, v) | Acc::MaxI(n, v) => [*n, *v as u64, 0],
            Acc::SumF(n, v) | Acc::MinF(n, v) | Acc::MaxF(n, v) => [*n, v.to_bits(), 0],
            Acc::Moments(n, mean, m2) => [*n, mean.to_bits(), m2.to_bits()],
            Acc::Last(n, t, v) => [*n, *t as u64, bits(v)],
            Acc::LastN(..) | Acc::Distinct(..) => [0, 0, 0],
        };
        for (chunk, w) in e.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
    }
}
