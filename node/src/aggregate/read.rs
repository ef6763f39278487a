//! Answering lookups from an entity's encoded tiles, without decoding them into
//! structures: each wanted feature's window is merged straight from the stored bytes
//! into a running state, which is then written into its response column.

use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::FeatureStatus;

use super::AggError;
use super::acc::{Acc, AccKind};
use super::codec::{Cursor, Scalar};
use super::hll;
use super::stored::stored_groups;
use super::tiles::{newest, tile_start};
use crate::registry::aggregation::{Aggregation, Function, LeadingEdge};

/// Reusable state for answering one view's features over many entities.
pub struct Answerer<'v> {
    agg: &'v Aggregation,
    /// Per feature: its state kind, and whether the request wants it.
    kinds: Vec<AccKind>,
    wanted: Vec<bool>,
    /// Whether any wanted feature is in each group.
    groups_wanted: Vec<bool>,
}

/// The query time `q` of a lookup at wall-clock `now_micros`, when the shard's event-time
/// watermark for the view is `watermark` (`None`: no event ingested): `None` when the
/// view answers from event time and nothing was ingested.
pub fn query_time(agg: &Aggregation, now_micros: i64, watermark: Option<i64>) -> Option<i64> {
    match agg.leading_edge {
        LeadingEdge::Clock => Some(watermark.map_or(now_micros, |w| w.max(now_micros))),
        LeadingEdge::EventTime => watermark,
    }
}

impl<'v> Answerer<'v> {
    /// Prepares to answer `wanted` (feature indexes of the view).
    pub fn new(agg: &'v Aggregation, wanted: impl IntoIterator<Item = usize>) -> Self {
        let kinds: Vec<AccKind> = super::tiles::kinds(agg).collect();
        let mut w = vec![false; kinds.len()];
        let mut groups_wanted = vec![false; agg.groups.len()];
        for f in wanted {
            w[f] = true;
            groups_wanted[agg.features[f].group] = true;
        }
        Answerer {
            agg,
            kinds,
            wanted: w,
            groups_wanted,
        }
    }

    /// Running states, one per feature (allocated once, reused for every entity).
    pub fn states(&self) -> Vec<Acc<'static>> {
        self.kinds.iter().map(|k| k.running()).collect()
    }

    /// Merges the windows at query time `q` of the wanted features from an entity's
    /// stored parts (older tiles, recent tiles; either may be missing) into `states`
    /// (reset first). Returns the entity's newest event time and the tiles read.
    ///
    /// # Errors
    /// [`AggError`] on a corrupt value.
    pub fn merge<'a>(
        &self,
        parts: [Option<&'a [u8]>; 2],
        q: i64,
        states: &mut [Acc<'a>],
    ) -> Result<(i64, u32), AggError> {
        for (s, k) in states.iter_mut().zip(&self.kinds) {
            s.reset(*k);
        }
        let (mut newest_all, mut tiles) = (i64::MIN, 0u32);
        // Older tiles first: `last` and `last_n` merge oldest first.
        for blob in parts.into_iter().flatten() {
            let (newest, n) = self.merge_one(blob, q, states)?;
            newest_all = newest_all.max(newest);
            tiles = tiles.saturating_add(n);
        }
        Ok((newest_all, tiles))
    }

    fn merge_one<'a>(
        &self,
        blob: &'a [u8],
        q: i64,
        states: &mut [Acc<'a>],
    ) -> Result<(i64, u32), AggError> {
        let newest = newest(blob)?;
        let mut tiles = 0u32;
        stored_groups(
            self.agg,
            blob,
            |gi, group| {
                let n = group.len();
                tiles = tiles.saturating_add(n as u32);
                // Each feature's day column beside its tile column (none without days).
                let mut day_columns = group.day_columns;
                for (&fi, col) in self.agg.groups[gi].features.iter().zip(group.columns) {
                    let day_col = day_columns.next();
                    if !self.wanted[fi] {
                        continue;
                    }
                    let f = &self.agg.features[fi];
                    let kind = self.kinds[fi];
                    let Some(w) = f.window_micros else {
                        merge_range(kind, col, 0, n, n, &mut states[fi])?;
                        continue;
                    };
                    let cutoff = tile_start(q.saturating_sub(w), f.hop_micros);
                    let from = group.first_from(cutoff);
                    if group.days() == 0 {
                        merge_range(kind, col, from, n, n, &mut states[fi])?;
                        continue;
                    }
                    // Tiles up to the first whole day in the window, then a state per day
                    // (every day of a body's tiles has its summary).
                    let whole = tile_start(cutoff.saturating_add(DAY - 1), DAY);
                    let to = group.first_from(whole);
                    merge_range(kind, col, from, to, n, &mut states[fi])?;
                    let days = group.days();
                    let first_day = group.first_day_from(whole);
                    let day_col = day_col.ok_or(AggError::Corrupt("day summary column missing"))?;
                    merge_range(kind, day_col, first_day, days, days, &mut states[fi])?;
                }
                Ok(())
            },
            |gi| self.groups_wanted[gi],
        )?;
        Ok((newest, tiles))
    }

    /// Writes feature `fi`'s answer from its merged state into `b` (NOT_FOUND when its
    /// window counted nothing), with event time `t` (the entity's newest event).
    pub fn finish(&self, fi: usize, state: &Acc<'_>, b: &mut ColumnBuilder, t: i64) {
        if state.n() == 0 {
            b.push_missing(FeatureStatus::NotFound, 0);
            return;
        }
        let f = &self.agg.features[fi];
        match state {
            Acc::Count(n) => b.push_i64(*n as i64, t),
            Acc::Distinct(_, hll::Sketch::Running(regs)) => b.push_i64(regs.estimate(), t),
            // Running sketches are registers (`AccKind::running`).
            Acc::Distinct(..) => b.push_null(t),
            Acc::SumI(_, v) | Acc::MinI(_, v) | Acc::MaxI(_, v) => b.push_i64(*v, t),
            Acc::SumF(n, s) if f.function == Function::Avg => b.push_f64(s / *n as f64, t),
            Acc::SumF(_, v) | Acc::MinF(_, v) | Acc::MaxF(_, v) => b.push_f64(*v, t),
            Acc::Moments(n, _, m2) => {
                let var = m2 / *n as f64;
                b.push_f64(
                    if f.function == Function::Stddev {
                        var.sqrt()
                    } else {
                        var
                    },
                    t,
                );
            }
            Acc::Last(_, _, v) => push_scalar(b, v, t),
            Acc::LastN(_, items) => {
                use quiver_proto::v1::FeatureType as W;
                match b.feature_type() {
                    W::Int64List => b.push_i64s(
                        items.iter().map(|(_, v)| match v {
                            Scalar::Int(x) => *x,
                            _ => 0,
                        }),
                        t,
                    ),
                    W::Float64List => b.push_f64s(
                        items.iter().map(|(_, v)| match v {
                            Scalar::Float(x) => *x,
                            _ => 0.0,
                        }),
                        t,
                    ),
                    _ => b.push_strs(
                        items.iter().map(|(_, v)| match v {
                            Scalar::Bytes(x) => x.as_ref(),
                            _ => &[][..],
                        }),
                        t,
                    ),
                }
            }
        }
    }
}

const DAY: i64 = 24 * 3_600_000_000;

/// Merges states `from..to` of a column of `n` states into `state`.
fn merge_range<'a>(
    kind: AccKind,
    col: &'a [u8],
    from: usize,
    to: usize,
    n: usize,
    state: &mut Acc<'a>,
) -> Result<(), AggError> {
    if from >= to {
        return Ok(());
    }
    match kind.fixed_width() {
        Some(width) => {
            if col.len() != n * width {
                return Err(AggError::Corrupt("fixed column of another length"));
            }
            kind.merge_fixed(&col[from * width..to * width], state);
        }
        None => {
            let mut c = Cursor { buf: col };
            for i in 0..to {
                if i < from {
                    kind.skip(&mut c)?;
                } else {
                    kind.merge(&mut c, state)?;
                }
            }
        }
    }
    Ok(())
}

fn push_scalar(b: &mut ColumnBuilder, v: &Scalar<'_>, t: i64) {
    match v {
        Scalar::Bool(x) => b.push_bool(*x, t),
        Scalar::Int(x) => b.push_i64(*x, t),
        Scalar::Float(x) => b.push_f64(*x, t),
        Scalar::Bytes(x) => b.push_blob(x, t),
    }
}
