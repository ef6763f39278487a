//! Row history: every version of a row of a view with `history`, kept in the shard's
//! `history` column family for as-of lookups and training sets.
//!
//! An entry is keyed by entity, then event time and offset inverted
//! ([`keys::encode_history_key`]): an entity's newest version sorts first, and of two with
//! one event time the later record (the one last-write-wins kept). Its value is the
//! record's arrival time (its Kafka timestamp, i64 LE µs) followed by the encoded row
//! ([`super::row_codec`], tombstones included). Entries are written in the same
//! `WriteBatch` as the latest row and the offsets, whether or not the record won
//! last-write-wins: an older event arriving late is still the answer as of its time.
//!
//! Retention (`history = "30d"`): compaction drops an entry older than the cut-off
//! `now − history` once a newer entry of the same entity that is itself at or before the
//! cut-off — by event time and by arrival — has been seen: that one answers every time
//! from the cut-off on, under both semantics, so lookups as of any time within the
//! retention stay exact.

use std::ffi::{CStr, CString};

use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{DB, DBRawIteratorWithThreadMode};

use super::engine::TtlTable;
use super::{keys, row_codec};

/// Bytes of the arrival time before the row in an entry's value.
pub const ARRIVAL_LEN: usize = 8;

/// What a history entry records besides the row: where the record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMeta {
    /// Offset of the record in its partition.
    pub offset: i64,
    /// When it arrived: its Kafka timestamp, µs (log append time on topics configured so).
    pub arrival_micros: i64,
}

/// Encodes an entry's value: `arrival` then the encoded row.
pub fn encode_value(arrival_micros: i64, row: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&arrival_micros.to_le_bytes());
    out.extend_from_slice(row);
}

/// Splits an entry's value into (arrival time, encoded row); `None` if too short.
pub fn decode_value(value: &[u8]) -> Option<(i64, &[u8])> {
    let (a, row) = value.split_at_checked(ARRIVAL_LEN)?;
    Some((i64::from_le_bytes(a.try_into().ok()?), row))
}

/// Which version answers "as of T".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOfRule {
    /// The version with the greatest event time ≤ T (ties: the later record), whenever it
    /// arrived.
    EventTime,
    /// What a lookup at T returned: of the versions that had arrived by T, the one
    /// last-write-wins kept (greatest event time, ties: the later record).
    ArrivedBy,
}

/// Finds the version of an entity answering as of a time, with one iterator reused across
/// entities (on a snapshot).
pub struct AsOfReader<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    key: Vec<u8>,
}

impl<'a> AsOfReader<'a> {
    pub(super) fn new(iter: DBRawIteratorWithThreadMode<'a, DB>) -> Self {
        AsOfReader {
            iter,
            key: Vec::with_capacity(64),
        }
    }

    /// The encoded row of `(view, version, entity_key)` as of `t` under `rule`, or `None`
    /// when no version answers (the entity had no row then). Entries whose value is
    /// corrupt are an error.
    ///
    /// # Errors
    /// The iterator's error (e.g. `Incomplete` for a cache-only read that needs disk).
    pub fn find(
        &mut self,
        view: &str,
        version: u32,
        entity_key: &[u8],
        t: i64,
        rule: AsOfRule,
    ) -> Result<Option<&[u8]>, rocksdb::Error> {
        self.key.clear();
        keys::encode_history_prefix(view, version, entity_key, &mut self.key);
        let prefix = self.key.len();
        if rule == AsOfRule::EventTime {
            // The first entry at or after (entity, T inverted): the greatest time ≤ T.
            self.key.extend_from_slice(&keys::inverted_time(t));
        }
        self.iter.seek(&self.key);
        loop {
            let Some(k) = self.iter.key() else {
                self.iter.status()?;
                return Ok(None);
            };
            if k.len() != prefix + 16 || k[..prefix] != self.key[..prefix] {
                return Ok(None);
            }
            let value = self.iter.value().unwrap_or_default();
            match rule {
                AsOfRule::EventTime => break,
                // Newest first: the first version that had arrived is the one kept then.
                AsOfRule::ArrivedBy if decode_value(value).is_none_or(|(a, _)| a <= t) => break,
                AsOfRule::ArrivedBy => self.iter.next(),
            }
        }
        Ok(self.iter.value())
    }
}

/// One history entry as [`AsOfReader::each_entry`] passes it.
#[derive(Debug, Clone, Copy)]
pub struct HistoryEntry<'e> {
    /// Event time of the record, µs.
    pub event_time_micros: i64,
    /// Offset of the record in its partition.
    pub offset: i64,
    /// When it arrived, µs.
    pub arrival_micros: i64,
    /// The encoded row (an aggregation view: the event's inputs, or a tombstone).
    pub row: &'e [u8],
}

impl AsOfReader<'_> {
    /// Passes every entry of `(view, version, entity_key)` to `f`, newest event time
    /// first, until `f` returns `false`. An aggregation view's answer as of a time replays
    /// its events; a tombstone of any age counts, so the walk is the whole entity.
    ///
    /// # Errors
    /// The iterator's error; [`HistoryReadError::Corrupt`] for an entry whose value is
    /// too short to hold its arrival time.
    pub fn each_entry(
        &mut self,
        view: &str,
        version: u32,
        entity_key: &[u8],
        mut f: impl FnMut(HistoryEntry<'_>) -> bool,
    ) -> Result<(), HistoryReadError> {
        self.key.clear();
        keys::encode_history_prefix(view, version, entity_key, &mut self.key);
        self.iter.seek(&self.key);
        loop {
            let Some(k) = self.iter.key() else {
                return self.iter.status().map_err(HistoryReadError::Read);
            };
            if !k.starts_with(&self.key) || k.len() != self.key.len() + 16 {
                return Ok(());
            }
            let parsed = keys::parse_history_key(k).ok_or(HistoryReadError::Corrupt)?;
            let (arrival, row) = self
                .iter
                .value()
                .and_then(decode_value)
                .ok_or(HistoryReadError::Corrupt)?;
            let go_on = f(HistoryEntry {
                event_time_micros: parsed.event_time_micros,
                offset: parsed.offset,
                arrival_micros: arrival,
                row,
            });
            if !go_on {
                return Ok(());
            }
            self.iter.next();
        }
    }
}

/// Why [`AsOfReader::each_entry`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryReadError {
    /// RocksDB's error (e.g. `Incomplete` for a cache-only read that needs disk).
    #[error(transparent)]
    Read(rocksdb::Error),
    /// An entry that cannot be parsed.
    #[error("corrupt history entry")]
    Corrupt,
}

/// Creates a [`HistoryFilter`] per compaction (the filter keeps state across the keys of
/// one compaction, which RocksDB passes in order on one thread).
pub struct HistoryFilterFactory {
    /// Retention per (view, version): `Some(None)` for a view that keeps no history (its
    /// entries are dropped), missing for a view the node does not know (kept).
    pub retention: TtlTable,
    name: CString,
}

impl HistoryFilterFactory {
    /// A factory reading retentions from `retention`.
    pub fn new(retention: TtlTable) -> Self {
        HistoryFilterFactory {
            retention,
            name: CString::new("quiver_history_retention").expect("no NUL"),
        }
    }
}

impl CompactionFilterFactory for HistoryFilterFactory {
    type Filter = HistoryFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> HistoryFilter {
        HistoryFilter {
            retention: self.retention.clone(),
            now: super::engine::now_micros(),
            prefix: Vec::new(),
            boundary_seen: false,
            name: self.name.clone(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// Drops history entries past their view's retention (see the module docs).
pub struct HistoryFilter {
    retention: TtlTable,
    now: i64,
    /// Entity prefix of the previous key.
    prefix: Vec<u8>,
    /// An entry of that entity at or before the cut-off was seen (and kept).
    boundary_seen: bool,
    name: CString,
}

impl HistoryFilter {
    /// The decision for one entry.
    pub fn decide(&mut self, key: &[u8], value: &[u8]) -> Decision {
        let Some(k) = keys::parse_history_key(key) else {
            return Decision::Keep;
        };
        let retention = match self.retention.get(k.view, k.version) {
            None => return Decision::Keep,
            Some(None) => return Decision::Remove,
            Some(Some(r)) => r,
        };
        let prefix = &key[..keys::HistoryKey::prefix_len(key)];
        if prefix != self.prefix.as_slice() {
            self.prefix.clear();
            self.prefix.extend_from_slice(prefix);
            self.boundary_seen = false;
        }
        let cutoff = self
            .now
            .saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX));
        if k.event_time_micros > cutoff {
            return Decision::Keep;
        }
        if self.boundary_seen {
            return Decision::Remove;
        }
        // The first entry at or before the cut-off by event time: it answers from the
        // cut-off on only if it had also arrived by then.
        match decode_value(value) {
            Some((arrival, row)) if row_codec::decode_header(row).is_ok() => {
                self.boundary_seen = arrival <= cutoff;
            }
            _ => {}
        }
        Decision::Keep
    }
}

impl CompactionFilter for HistoryFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        self.decide(key, value)
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(view: &str, e: &[u8], t: i64, o: i64, arrival: i64) -> (Vec<u8>, Vec<u8>) {
        let mut k = Vec::new();
        keys::encode_history_key(view, 1, e, t, o, &mut k);
        let mut row = Vec::new();
        row_codec::encode_row(t, &[None], &mut row);
        let mut v = Vec::new();
        encode_value(arrival, &row, &mut v);
        (k, v)
    }

    #[test]
    fn retention_keeps_the_version_answering_at_the_cutoff() {
        let table = TtlTable::default();
        table.replace([
            (("h".to_owned(), 1), Some(Duration::from_secs(3600))),
            (("off".to_owned(), 1), None),
        ]);
        let mut f = HistoryFilterFactory::new(table).create(CompactionFilterContext {
            is_full_compaction: true,
            is_manual_compaction: true,
        });
        let now = f.now;
        let hour = 3_600_000_000;
        // Newest first, as a compaction passes them.
        let stream = [
            (entry("h", b"a", now - 10, 5, now), true),
            // At the cut-off by event time but arrived after it: kept, and does not
            // shadow the older one, which answered "arrived by" lookups at the cut-off.
            (entry("h", b"a", now - 2 * hour, 4, now - 1), true),
            (entry("h", b"a", now - 3 * hour, 3, now - 3 * hour), true),
            (entry("h", b"a", now - 4 * hour, 2, now - 4 * hour), false),
            (entry("h", b"a", now - 5 * hour, 1, now - 5 * hour), false),
            // Another entity starts afresh.
            (entry("h", b"b", now - 5 * hour, 1, now - 5 * hour), true),
            (entry("h", b"b", now - 6 * hour, 0, now - 6 * hour), false),
            // A view without history: dropped; an unknown view: kept.
            (entry("off", b"a", now, 0, now), false),
            (entry("gone", b"a", now - 9 * hour, 0, now), true),
        ];
        for ((k, v), keep) in stream {
            let d = f.decide(&k, &v);
            assert_eq!(
                matches!(d, Decision::Keep),
                keep,
                "{:?}",
                keys::parse_history_key(&k)
            );
        }
    }
}
