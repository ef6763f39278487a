//! Applying aggregation events: read-modify-write of each entity's tile set, with the
//! view version's event-time watermark, in the ingest batch's `WriteBatch`.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use tracing::warn;

use super::{AggEvent, ApplyOutcome, CF_META, CF_ROWS, ShardStore};
use crate::aggregate::tiles::TileSet;
use crate::registry::aggregation::Aggregation;
use crate::storage::{StorageError, keys};

/// A view version's watermark: (meta key, as stored before the batch, as now).
type Watermarks = (Vec<u8>, Option<i64>, Option<i64>);

impl ShardStore {
    /// The event-time watermark of `(view, version)` as last written (`None`: no event).
    fn stored_event_watermark(&self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_META), key)
            .map_err(|e| self.rocks(e))?;
        Ok(v.and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map(i64::from_le_bytes))
    }

    /// Applies `events` in order into `wb`: per event, a tombstone erases the entity's
    /// tiles; an event more than the view's `allowed_lateness` behind the view version's
    /// watermark is dropped (counted late); any other is counted into its tiles and moves
    /// the watermark. Then every touched entity is trimmed and written (or deleted when
    /// empty), and the watermarks are written. Deterministic in the events alone.
    pub(super) fn apply_events(
        &self,
        events: &[AggEvent],
        wb: &mut WriteBatch,
        per_topic: &mut [ApplyOutcome],
        outcome: &mut ApplyOutcome,
    ) -> Result<(), StorageError> {
        let rows = self.cf(CF_ROWS);
        let mut wms: HashMap<(&str, u32), Watermarks> = HashMap::new();
        let mut slot_of: HashMap<&[u8], usize> = HashMap::new();
        let mut keys_in_order: Vec<&AggEvent> = Vec::new();
        for ev in events {
            let id = (ev.view.name.as_str(), ev.view.version);
            if let std::collections::hash_map::Entry::Vacant(slot) = wms.entry(id) {
                let key = keys::event_watermark_key(id.0, id.1);
                let wm = self.stored_event_watermark(&key)?;
                slot.insert((key, wm, wm));
            }
            if !slot_of.contains_key(ev.key.as_slice()) {
                slot_of.insert(&ev.key, keys_in_order.len());
                keys_in_order.push(ev);
            }
        }
        let stored =
            self.db
                .batched_multi_get_cf(rows, keys_in_order.iter().map(|e| &e.key), false);
        let stored: Vec<Option<rocksdb::DBPinnableSlice<'_>>> = stored
            .into_iter()
            .map(|r| r.map_err(|e| self.rocks(e)))
            .collect::<Result<_, _>>()?;
        // Decoded lazily on first use; `None` until then.
        let mut sets: Vec<Option<TileSet<'_>>> = vec![None; keys_in_order.len()];
        let mut late: HashMap<&str, u64> = HashMap::new();
        for ev in events {
            let Some(agg) = ev.view.aggregation.as_deref() else {
                continue;
            };
            let slot = slot_of[ev.key.as_slice()];
            let (_, _, wm) = wms
                .get_mut(&(ev.view.name.as_str(), ev.view.version))
                .expect("seeded above");
            let counter = &mut per_topic[ev.topic];
            let set =
                sets[slot].get_or_insert_with(|| decode(agg, stored[slot].as_deref(), &ev.key));
            let Some(values) = &ev.values else {
                // A tombstone erases the entity's aggregates, whatever its time.
                *set = TileSet::empty(agg);
                counter.applied += 1;
                outcome.applied += 1;
                continue;
            };
            let t = ev.event_time_micros;
            if wm.is_some_and(|w| t < w.saturating_sub(agg.allowed_lateness_micros)) {
                *late.entry(ev.view.name.as_str()).or_default() += 1;
                counter.superseded += 1;
                outcome.superseded += 1;
                continue;
            }
            let now = wm.map_or(t, |w| w.max(t));
            *wm = Some(now);
            outcome.tiles_written += set.add(agg, t, values, now);
            counter.applied += 1;
            outcome.applied += 1;
        }
        let mut buf = Vec::new();
        for (ev, set) in keys_in_order.iter().zip(sets) {
            let (Some(mut set), Some(agg)) = (set, ev.view.aggregation.as_deref()) else {
                continue;
            };
            let (_, _, wm) = &wms[&(ev.view.name.as_str(), ev.view.version)];
            if let Some(wm) = wm {
                set.trim(agg, *wm);
            }
            if set.is_empty() {
                wb.delete_cf(rows, &ev.key);
            } else {
                set.encode(agg, &mut buf);
                wb.put_cf(rows, &ev.key, &buf);
            }
        }
        let meta = self.cf(CF_META);
        for (key, before, now) in wms.values() {
            if let (Some(now), true) = (now, now != before) {
                wb.put_cf(meta, key, now.to_le_bytes());
            }
        }
        outcome.late = late.into_iter().map(|(v, n)| (v.to_owned(), n)).collect();
        Ok(())
    }
}

/// Decodes a stored tile set; a corrupt one is logged and replaced by an empty one
/// rather than blocking the partition forever (as corrupt rows are overwritten).
fn decode<'a>(agg: &Aggregation, stored: Option<&'a [u8]>, key: &[u8]) -> TileSet<'a> {
    match stored.map(|b| TileSet::decode(agg, b)) {
        Some(Ok(set)) => set,
        Some(Err(e)) => {
            warn!(key = ?String::from_utf8_lossy(key), error = %e, "corrupt tile set replaced");
            TileSet::empty(agg)
        }
        None => TileSet::empty(agg),
    }
}
