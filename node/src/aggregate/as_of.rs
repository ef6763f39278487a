//! Aggregation views as of a time: the tiles an entity had, rebuilt from the events its
//! history keeps (a view with `history`; [`crate::storage::history`]).
//!
//! The answer as of `T` is the window ending at `T` (query time `q = T`, the sawtooth
//! rule of live lookups) over the records that count at `T`:
//!
//! - [`AsOfRule::EventTime`]: the records stamped at or before `T`;
//! - [`AsOfRule::ArrivedBy`]: the records that had arrived by `T` (their Kafka
//!   timestamp), whatever their stamp — what a lookup at `T` counted.
//!
//! Those are replayed in log order (offsets), a tombstone erasing the events before it,
//! into a fresh tile set, which the live answerer then reads at `T`. Only events the
//! replicas counted are in the history (one dropped as late never was), so training and
//! serving count the same events.

use quiver_proto::v1::value::Kind;

use super::AggError;
use super::tiles::TileSet;
use crate::registry::aggregation::Aggregation;
use crate::storage::history::{AsOfRule, HistoryEntry};
use crate::storage::row_codec;

/// One recorded event (or tombstone, `values: None`) of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Offset of its record: the order events were applied in.
    pub offset: i64,
    /// Event time, µs.
    pub event_time_micros: i64,
    /// Input values in the aggregation's input order; `None` for a tombstone.
    pub values: Option<Vec<Option<Kind>>>,
}

/// Collects an entity's history entries that count as of `t` under `rule`.
#[derive(Debug, Default)]
pub struct Replay {
    records: Vec<Recorded>,
    corrupt: bool,
}

impl Replay {
    /// Starts an entity afresh (the buffer is reused).
    pub fn clear(&mut self) {
        self.records.clear();
        self.corrupt = false;
    }

    /// Takes `entry` if it counts as of `t` under `rule`.
    pub fn offer(&mut self, entry: HistoryEntry<'_>, t: i64, rule: AsOfRule) {
        let counts = match rule {
            AsOfRule::EventTime => entry.event_time_micros <= t,
            AsOfRule::ArrivedBy => entry.arrival_micros <= t,
        };
        if !counts {
            return;
        }
        match row_codec::decode_row(entry.row) {
            Ok(row) => self.records.push(Recorded {
                offset: entry.offset,
                event_time_micros: entry.event_time_micros,
                values: (!row.header.tombstone).then_some(row.values),
            }),
            Err(_) => self.corrupt = true,
        }
    }

    /// The entity's tile set as of `t`, encoded into `out` (cleared first); `false` when
    /// no event counts (the entity had no aggregates then).
    ///
    /// # Errors
    /// [`AggError::Corrupt`] when an entry of the history could not be decoded.
    pub fn encode_tiles(
        &mut self,
        agg: &Aggregation,
        t: i64,
        out: &mut Vec<u8>,
    ) -> Result<bool, AggError> {
        out.clear();
        if self.corrupt {
            return Err(AggError::Corrupt("history entry of an aggregation view"));
        }
        self.records.sort_unstable_by_key(|r| r.offset);
        // Only what follows the last tombstone counts.
        let from = self
            .records
            .iter()
            .rposition(|r| r.values.is_none())
            .map_or(0, |i| i + 1);
        let mut set = TileSet::empty(agg);
        let mut any = false;
        for r in &self.records[from..] {
            let values = r.values.as_deref().expect("tombstones are before `from`");
            // Tiles are trimmed against `t`: only ones its windows read are kept.
            set.add(agg, r.event_time_micros, values, t)?;
            any = true;
        }
        if any {
            set.encode(out);
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_counts_at_t_is_taken() {
        let mut row = Vec::new();
        row_codec::encode_row(10, &[Some(Kind::Int64Value(1))], &mut row);
        let entry = |t, offset, arrival| HistoryEntry {
            event_time_micros: t,
            offset,
            arrival_micros: arrival,
            row: &row,
        };
        let mut r = Replay::default();
        // Stamped before T but arrived after it: counts by event time only.
        r.offer(entry(10, 0, 30), 20, AsOfRule::EventTime);
        r.offer(entry(10, 0, 30), 20, AsOfRule::ArrivedBy);
        // Stamped after T, arrived before it: counts by arrival only.
        r.offer(entry(25, 1, 15), 20, AsOfRule::EventTime);
        r.offer(entry(25, 1, 15), 20, AsOfRule::ArrivedBy);
        let offsets: Vec<(i64, i64)> = r
            .records
            .iter()
            .map(|x| (x.offset, x.event_time_micros))
            .collect();
        assert_eq!(offsets, [(0, 10), (1, 25)]);
        r.offer(
            HistoryEntry {
                row: b"x",
                ..entry(1, 2, 1)
            },
            20,
            AsOfRule::EventTime,
        );
        assert!(r.corrupt, "a row that does not decode is remembered");
    }
}
