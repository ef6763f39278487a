//! Applying aggregation events: read-modify-write of each entity's tile set, with the
//! view version's event-time watermark, in the ingest batch's `WriteBatch`.

use std::borrow::Cow;
use std::collections::HashMap;

use rocksdb::WriteBatch;
use tracing::warn;

use super::{AggEvent, ApplyOutcome, CF_HISTORY, CF_META, CF_ROWS, HistoryWriter, ShardStore};
use crate::aggregate::split;
use crate::aggregate::tiles::{BodyAt, TileSet};
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
    /// empty), and the watermarks are written. Deterministic in the events alone. Of a
    /// view that keeps history, every tombstone and accepted event is also written to the
    /// history (a late one is not: no lookup ever counted it).
    pub(super) fn apply_events(
        &self,
        events: &[AggEvent],
        wb: &mut WriteBatch,
        history: &mut HistoryWriter,
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
        // The recent tiles of every entity in one multi-get; older tiles (the body) are
        // read only when an event lands among them or the boundary moves past some.
        let stored = self.db.batched_multi_get_cf(
            rows,
            keys_in_order.iter().map(|e| e.key.as_slice()),
            false,
        );
        let stored: Vec<Option<rocksdb::DBPinnableSlice<'_>>> = stored
            .into_iter()
            .map(|r| r.map_err(|e| self.rocks(e)))
            .collect::<Result<_, _>>()?;
        // Decoded lazily on first use; `None` until then.
        let mut entities: Vec<Option<Entity<'_>>> = vec![None; keys_in_order.len()];
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
            let entity = entities[slot].get_or_insert_with(|| {
                let set = decode(agg, stored[slot].as_deref(), &ev.key);
                Entity {
                    stored_body: set.body_at == BodyAt::Stored,
                    set,
                    joined: false,
                }
            });
            if let Some(meta) = ev.history
                && (ev.values.is_none()
                    || !wm.is_some_and(|w| {
                        ev.event_time_micros < w.saturating_sub(agg.allowed_lateness_micros)
                    }))
            {
                history.put_event(self.cf(CF_HISTORY), wb, ev, meta);
                outcome.history_written += 1;
            }
            let Some(values) = &ev.values else {
                // A tombstone erases the entity's aggregates, whatever its time: both
                // values are rewritten (empty: deleted).
                entity.set = TileSet::empty(agg);
                entity.joined = true;
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
            if !entity.joined && split::lands_in_body(agg, &entity.set, t) {
                self.join_body(agg, entity, &ev.key)?;
            }
            match entity.set.add(agg, t, values, now) {
                Ok(n) => outcome.tiles_written += n,
                Err(e) => {
                    // A corrupt stored state: start the entity over rather than block.
                    warn!(key = ?String::from_utf8_lossy(&ev.key), error = %e, "corrupt tile state replaced");
                    entity.set = TileSet::empty(agg);
                    entity.joined = true;
                    outcome.tiles_written += entity.set.add(agg, t, values, now).unwrap_or(0);
                }
            }
            counter.applied += 1;
            outcome.applied += 1;
        }
        let mut buf = Vec::new();
        for (ev, entity) in keys_in_order.iter().zip(entities) {
            let (Some(mut entity), Some(agg)) = (entity, ev.view.aggregation.as_deref()) else {
                continue;
            };
            let (_, _, wm) = &wms[&(ev.view.name.as_str(), ev.view.version)];
            let wm = wm.unwrap_or(i64::MIN);
            let boundary = split::boundary(wm);
            if !entity.joined && split::head_crosses(agg, &entity.set, boundary) {
                self.join_body(agg, &mut entity, &ev.key)?;
            }
            let head = if entity.joined {
                let (mut body, mut head) = split::split(agg, entity.set, boundary);
                body.trim(agg, wm);
                head.trim(agg, wm);
                head.body_ends = split::last_starts(&body);
                match split::summarize(agg, &mut body) {
                    Ok(n) => outcome.rollups += n,
                    Err(e) => {
                        // Without summaries a window reads the body's tiles one by one.
                        warn!(key = ?String::from_utf8_lossy(&ev.key), error = %e, "day summaries not written");
                        body.days.iter_mut().for_each(|d| *d = Default::default());
                    }
                }
                head.body_at = BodyAt::Absent;
                if !body.is_empty() {
                    body.encode(&mut buf);
                    if buf.len() <= split::INLINE_BODY_MAX {
                        // A copy: `buf` is reused for the head. Only on a join (a body
                        // rewrite, about once a day per entity), not per event.
                        head.body_at = BodyAt::Inline(Cow::Owned(buf.clone()));
                    } else {
                        wb.put_cf(rows, body_key(&ev.key), &buf);
                        head.body_at = BodyAt::Stored;
                    }
                }
                if entity.stored_body && head.body_at != BodyAt::Stored {
                    wb.delete_cf(rows, body_key(&ev.key));
                }
                head
            } else {
                let mut head = entity.set;
                head.trim(agg, wm);
                head
            };
            if split::keep_head(&head) {
                head.encode(&mut buf);
                wb.put_cf(rows, &ev.key, &buf);
            } else {
                wb.delete_cf(rows, &ev.key);
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

/// One entity's tiles while a batch updates them.
#[derive(Clone)]
struct Entity<'a> {
    /// The recent tiles, or all of them once `joined`.
    set: TileSet<'a>,
    /// Whether the entity's body may be stored in its own value (before this batch).
    stored_body: bool,
    /// The older tiles were read and joined in (or the entity was erased): both values are
    /// written back.
    joined: bool,
}

/// The key of an entity's older tiles from the key of its recent ones.
fn body_key(head_key: &[u8]) -> Vec<u8> {
    let mut k = head_key.to_vec();
    k[0] = keys::TILE_BODY_TAG;
    k
}

impl ShardStore {
    /// Reads an entity's older tiles (inside its head, or in their own value) and joins
    /// them in front of its recent ones.
    fn join_body<'a>(
        &self,
        agg: &Aggregation,
        entity: &mut Entity<'a>,
        key: &[u8],
    ) -> Result<(), StorageError> {
        let mut head = std::mem::replace(&mut entity.set, TileSet::empty(agg));
        let key = body_key(key);
        let body: TileSet<'a> = match std::mem::replace(&mut head.body_at, BodyAt::Absent) {
            BodyAt::Absent => TileSet::empty(agg),
            BodyAt::Inline(Cow::Borrowed(b)) => decode(agg, Some(b), &key),
            BodyAt::Inline(Cow::Owned(b)) => decode(agg, Some(&b), &key).into_owned(),
            BodyAt::Stored => {
                let raw = self
                    .db
                    .get_cf(self.cf(CF_ROWS), &key)
                    .map_err(|e| self.rocks(e))?;
                decode(agg, raw.as_deref(), &key).into_owned()
            }
        };
        entity.set = split::join(body, head);
        entity.joined = true;
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
