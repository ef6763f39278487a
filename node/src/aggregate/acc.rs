//! Partial aggregates: the state one feature keeps per tile, how an event updates it
//! (ingest), and how the tiles of a window merge into an answer (lookup).
//!
//! Encodings (every state starts with `varint n`, the values it counted; nothing else
//! follows when `n = 0`):
//!
//! ```text
//! count                 varint n
//! sum (int64)           varint n | zigzag sum (wrapping)
//! sum (float64), avg    varint n | f64 sum
//! min, max              varint n | zigzag or f64 value
//! stddev, variance      varint n | f64 mean | f64 m2      (Welford; merged by Chan et al.)
//! last                  varint n | zigzag t | scalar
//! last_n                varint n | varint k | k × (zigzag t | scalar), oldest first
//! count_distinct        varint n | sketch (see hll)
//! ```

use super::AggError;
use super::codec::{Cursor, Scalar, put_varint, put_zigzag};
use super::hll::{Registers, Sketch, SketchRef};
use crate::registry::FeatureType;
use crate::registry::aggregation::{AggFeature, Function};

/// Which state a feature keeps, from its function and input type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccKind {
    /// Events or non-null inputs.
    Count,
    /// int64 sum.
    SumI,
    /// float64 sum (also `avg`, int64 inputs converted to float64).
    SumF,
    /// int64 minimum.
    MinI,
    /// int64 maximum.
    MaxI,
    /// float64 minimum (NaN inputs skipped).
    MinF,
    /// float64 maximum (NaN inputs skipped).
    MaxF,
    /// Count, mean and sum of squared deviations.
    Moments,
    /// Newest value, of the input type.
    Last(FeatureType),
    /// Newest `n` values, of the input type.
    LastN(FeatureType, usize),
    /// HyperLogLog sketch.
    Distinct,
}

impl AccKind {
    /// The state of `f` whose input (if any) has type `input`.
    pub fn of(f: &AggFeature, input: Option<FeatureType>) -> AccKind {
        let float = input == Some(FeatureType::Float64);
        match f.function {
            Function::Count => AccKind::Count,
            Function::Sum if float => AccKind::SumF,
            Function::Sum => AccKind::SumI,
            Function::Avg => AccKind::SumF,
            Function::Min if float => AccKind::MinF,
            Function::Min => AccKind::MinI,
            Function::Max if float => AccKind::MaxF,
            Function::Max => AccKind::MaxI,
            Function::Stddev | Function::Variance => AccKind::Moments,
            Function::Last => AccKind::Last(input.unwrap_or(FeatureType::Int64)),
            Function::LastN => AccKind::LastN(input.unwrap_or(FeatureType::Int64), f.n),
            Function::CountDistinct => AccKind::Distinct,
        }
    }

    /// An empty state (ingest side).
    pub fn empty(self) -> Acc<'static> {
        match self {
            AccKind::Count => Acc::Count(0),
            AccKind::SumI => Acc::SumI(0, 0),
            AccKind::SumF => Acc::SumF(0, 0.0),
            AccKind::MinI => Acc::MinI(0, 0),
            AccKind::MaxI => Acc::MaxI(0, 0),
            AccKind::MinF => Acc::MinF(0, 0.0),
            AccKind::MaxF => Acc::MaxF(0, 0.0),
            AccKind::Moments => Acc::Moments(0, 0.0, 0.0),
            AccKind::Last(_) => Acc::Last(0, 0, Scalar::Bool(false)),
            AccKind::LastN(..) => Acc::LastN(0, Vec::new()),
            AccKind::Distinct => Acc::Distinct(0, Sketch::default()),
        }
    }

    /// An empty running answer (lookup side): like [`Self::empty`], but a sketch is a
    /// dense register set the window's sketches merge into.
    pub fn running(self) -> Acc<'static> {
        match self {
            AccKind::Distinct => Acc::Distinct(0, Sketch::Running(Registers::default())),
            k => k.empty(),
        }
    }

    /// Decodes one stored state (ingest side: the state is then updated and re-encoded).
    pub(super) fn read<'a>(self, c: &mut Cursor<'a>) -> Result<Acc<'a>, AggError> {
        let n = c.varint()?;
        if n == 0 {
            return Ok(self.empty());
        }
        Ok(match self {
            AccKind::Count => Acc::Count(n),
            AccKind::SumI => Acc::SumI(n, c.zigzag()?),
            AccKind::SumF => Acc::SumF(n, c.f64()?),
            AccKind::MinI => Acc::MinI(n, c.zigzag()?),
            AccKind::MaxI => Acc::MaxI(n, c.zigzag()?),
            AccKind::MinF => Acc::MinF(n, c.f64()?),
            AccKind::MaxF => Acc::MaxF(n, c.f64()?),
            AccKind::Moments => Acc::Moments(n, c.f64()?, c.f64()?),
            AccKind::Last(ty) => Acc::Last(n, c.zigzag()?, c.scalar(ty)?),
            AccKind::LastN(ty, cap) => {
                let k = c.varint()? as usize;
                if k > cap.max(1) {
                    return Err(AggError::Corrupt("last_n state longer than n"));
                }
                let mut items = Vec::with_capacity(k);
                for _ in 0..k {
                    items.push((c.zigzag()?, c.scalar(ty)?));
                }
                Acc::LastN(n, items)
            }
            AccKind::Distinct => Acc::Distinct(n, Sketch::read(c)?),
        })
    }

    /// Decodes the next stored state and merges it into `into` (a [`Self::running`]
    /// state of this kind). Tiles are merged oldest first. Allocation-free except for
    /// `last_n` items.
    pub(super) fn merge<'a>(self, c: &mut Cursor<'a>, into: &mut Acc<'a>) -> Result<(), AggError> {
        let n = c.varint()?;
        if n == 0 {
            return Ok(());
        }
        match (self, into) {
            (AccKind::Count, Acc::Count(m)) => *m += n,
            (AccKind::SumI, Acc::SumI(m, s)) => {
                *m += n;
                *s = s.wrapping_add(c.zigzag()?);
            }
            (AccKind::SumF, Acc::SumF(m, s)) => {
                *m += n;
                *s += c.f64()?;
            }
            (AccKind::MinI, Acc::MinI(m, v)) => fold(m, v, n, c.zigzag()?, |a, b| a.min(b)),
            (AccKind::MaxI, Acc::MaxI(m, v)) => fold(m, v, n, c.zigzag()?, |a, b| a.max(b)),
            (AccKind::MinF, Acc::MinF(m, v)) => fold(m, v, n, c.f64()?, f64::min),
            (AccKind::MaxF, Acc::MaxF(m, v)) => fold(m, v, n, c.f64()?, f64::max),
            (AccKind::Moments, Acc::Moments(m, mean, m2)) => {
                merge_moments((m, mean, m2), n, c.f64()?, c.f64()?);
            }
            (AccKind::Last(ty), Acc::Last(m, t, v)) => {
                let (tb, vb) = (c.zigzag()?, c.scalar(ty)?);
                if *m == 0 || tb >= *t {
                    (*t, *v) = (tb, vb);
                }
                *m += n;
            }
            (AccKind::LastN(ty, cap), Acc::LastN(m, items)) => {
                let k = c.varint()? as usize;
                if k > cap.max(1) {
                    return Err(AggError::Corrupt("last_n state longer than n"));
                }
                for _ in 0..k {
                    items.push((c.zigzag()?, c.scalar(ty)?));
                }
                if items.len() > cap {
                    items.drain(..items.len() - cap);
                }
                *m += n;
            }
            (AccKind::Distinct, Acc::Distinct(m, Sketch::Running(regs))) => {
                SketchRef::read(c)?.merge_into(regs);
                *m += n;
            }
            _ => return Err(AggError::Corrupt("running state of another kind")),
        }
        Ok(())
    }
}

impl AccKind {
    /// Skips the next stored state.
    pub(super) fn skip(self, c: &mut Cursor<'_>) -> Result<(), AggError> {
        let n = c.varint()?;
        if n == 0 {
            return Ok(());
        }
        match self {
            AccKind::Count => {}
            AccKind::SumI | AccKind::MinI | AccKind::MaxI => {
                c.zigzag()?;
            }
            AccKind::SumF | AccKind::MinF | AccKind::MaxF => {
                c.f64()?;
            }
            AccKind::Moments => {
                c.bytes(16)?;
            }
            AccKind::Last(ty) => {
                c.zigzag()?;
                c.scalar(ty)?;
            }
            AccKind::LastN(ty, _) => {
                for _ in 0..c.varint()? {
                    c.zigzag()?;
                    c.scalar(ty)?;
                }
            }
            AccKind::Distinct => {
                SketchRef::read(c)?;
            }
        }
        Ok(())
    }
}

/// Merges the moments `(n, mean, m2)` of another state into `(m, mean, m2)` (Chan et al.).
fn merge_moments((m, mean, m2): (&mut u64, &mut f64, &mut f64), n: u64, mb: f64, m2b: f64) {
    let total = *m + n;
    let delta = mb - *mean;
    let (na, nb, nt) = (*m as f64, n as f64, total as f64);
    *mean += delta * nb / nt;
    *m2 += m2b + delta * delta * na * nb / nt;
    *m = total;
}

fn fold<T: Copy>(m: &mut u64, v: &mut T, n: u64, b: T, pick: impl Fn(T, T) -> T) {
    *v = if *m == 0 { b } else { pick(*v, b) };
    *m += n;
}

/// One feature's partial aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc<'a> {
    /// n
    Count(u64),
    /// n, wrapping sum
    SumI(u64, i64),
    /// n, sum
    SumF(u64, f64),
    /// n, minimum
    MinI(u64, i64),
    /// n, maximum
    MaxI(u64, i64),
    /// n, minimum
    MinF(u64, f64),
    /// n, maximum
    MaxF(u64, f64),
    /// n, mean, sum of squared deviations
    Moments(u64, f64, f64),
    /// n, event time and value of the newest
    Last(u64, i64, Scalar<'a>),
    /// n, the newest items oldest first
    LastN(u64, Vec<(i64, Scalar<'a>)>),
    /// n, sketch
    Distinct(u64, Sketch),
}

impl<'a> Acc<'a> {
    /// Empties a running state in place, keeping its allocations.
    pub fn reset(&mut self, kind: AccKind) {
        match self {
            Acc::LastN(n, items) => {
                *n = 0;
                items.clear();
            }
            Acc::Distinct(n, Sketch::Running(regs)) => {
                *n = 0;
                regs.reset();
            }
            other => *other = kind.running(),
        }
    }

    /// Values counted.
    pub fn n(&self) -> u64 {
        match self {
            Acc::Count(n)
            | Acc::SumI(n, _)
            | Acc::SumF(n, _)
            | Acc::MinI(n, _)
            | Acc::MaxI(n, _)
            | Acc::MinF(n, _)
            | Acc::MaxF(n, _)
            | Acc::Moments(n, ..)
            | Acc::Last(n, ..)
            | Acc::LastN(n, _)
            | Acc::Distinct(n, _) => *n,
        }
    }

    /// Counts an event at `t` whose input is `v`. `count` counts every call (the caller
    /// skips events whose input is null when the feature has an input); the others skip
    /// `None`.
    pub fn add(&mut self, v: Option<&Scalar<'a>>, t: i64, cap: usize) {
        match (self, v) {
            (Acc::Count(n), _) => *n += 1,
            (_, None) => {}
            (Acc::SumI(n, s), Some(Scalar::Int(x))) => {
                *n += 1;
                *s = s.wrapping_add(*x);
            }
            (Acc::SumF(n, s), Some(x)) => {
                if let Some(x) = as_f64(x) {
                    *n += 1;
                    *s += x;
                }
            }
            (Acc::MinI(n, m), Some(Scalar::Int(x))) => fold(n, m, 1, *x, |a, b| a.min(b)),
            (Acc::MaxI(n, m), Some(Scalar::Int(x))) => fold(n, m, 1, *x, |a, b| a.max(b)),
            (Acc::MinF(n, m), Some(Scalar::Float(x))) if !x.is_nan() => fold(n, m, 1, *x, f64::min),
            (Acc::MaxF(n, m), Some(Scalar::Float(x))) if !x.is_nan() => fold(n, m, 1, *x, f64::max),
            (Acc::Moments(n, mean, m2), Some(x)) => {
                if let Some(x) = as_f64(x) {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            (Acc::Last(n, lt, lv), Some(x)) => {
                if *n == 0 || t >= *lt {
                    (*lt, *lv) = (t, x.clone());
                }
                *n += 1;
            }
            (Acc::LastN(n, items), Some(x)) => {
                // After every item at or before t: equal times keep log order.
                let at = items.partition_point(|(it, _)| *it <= t);
                items.insert(at, (t, x.clone()));
                if items.len() > cap {
                    items.remove(0);
                }
                *n += 1;
            }
            (Acc::Distinct(n, s), Some(x)) => {
                s.add(x.hash());
                *n += 1;
            }
            // A value of another type than the input's: impossible after decoding.
            _ => {}
        }
    }

    /// Appends the encoding.
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.n());
        if self.n() == 0 {
            return;
        }
        match self {
            Acc::Count(_) => {}
            Acc::SumI(_, v) | Acc::MinI(_, v) | Acc::MaxI(_, v) => put_zigzag(out, *v),
            Acc::SumF(_, v) | Acc::MinF(_, v) | Acc::MaxF(_, v) => {
                out.extend_from_slice(&v.to_le_bytes());
            }
            Acc::Moments(_, mean, m2) => {
                out.extend_from_slice(&mean.to_le_bytes());
                out.extend_from_slice(&m2.to_le_bytes());
            }
            Acc::Last(_, t, v) => {
                put_zigzag(out, *t);
                v.put(out);
            }
            Acc::LastN(_, items) => {
                put_varint(out, items.len() as u64);
                for (t, v) in items {
                    put_zigzag(out, *t);
                    v.put(out);
                }
            }
            Acc::Distinct(_, s) => s.put(out),
        }
    }
}

fn as_f64(x: &Scalar<'_>) -> Option<f64> {
    match x {
        Scalar::Int(v) => Some(*v as f64),
        Scalar::Float(v) => Some(*v),
        _ => None,
    }
}

mod fixed;
#[cfg(test)]
mod tests;
