//! As-of lookups: a request's `as_of` checked and planned ([`plan`]), and a view's rows
//! read from its history at each key's time ([`fill_view`]) instead of its latest rows.

use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::AsOf;

use super::ServeError;
use super::lookup::{AggregateFill, ExecError, fill_row, read_error};
use super::plan::{AsOfPlan, LookupPlan, ViewPlan};
use crate::aggregate::as_of::Replay;
use crate::storage::history::{self, AsOfRule, HistoryReadError};

/// Plans `as_of` for a request of `n` keys. Changes nothing.
///
/// # Errors
/// [`ServeError::InvalidArgument`] when the times do not match the keys or are unset.
pub fn plan(as_of: &AsOf, n: usize) -> Result<AsOfPlan, ServeError> {
    let times = match as_of.key_times_micros.len() {
        0 if as_of.time_micros == 0 => {
            return Err(ServeError::InvalidArgument(
                "as_of has no time: set `as_of.time_micros` (every key) or `as_of.key_times_micros` (one per key)"
                    .into(),
            ));
        }
        0 => vec![as_of.time_micros; n],
        m if m == n => as_of.key_times_micros.clone(),
        m => {
            return Err(ServeError::InvalidArgument(format!(
                "as_of.key_times_micros has {m} times for {n} entity keys: give one per key, in entity_keys order"
            )));
        }
    };
    Ok(AsOfPlan {
        times,
        rule: if as_of.exclude_late_arrivals {
            AsOfRule::ArrivedBy
        } else {
            AsOfRule::EventTime
        },
    })
}

/// `micros` since the Unix epoch as RFC 3339 (for messages).
pub fn rfc3339(micros: i64) -> String {
    u64::try_from(micros)
        .ok()
        .map(|m| std::time::UNIX_EPOCH + std::time::Duration::from_micros(m))
        .map_or_else(
            || format!("{micros} µs since the epoch"),
            |t| humantime::format_rfc3339_micros(t).to_string(),
        )
}

/// One shard's part of a lookup: the shard, its rows, its snapshot.
pub type ShardRead<'a, 'r> = (
    quiver_proto::ShardId,
    &'r Vec<u32>,
    crate::storage::ConsistentRead<'a>,
);

/// Fills `vp`'s columns for every row of `plan` from the view's history, each row as of
/// its time (TTL judged at that time too). `locate[row]` is the row's index in `reads`.
///
/// # Errors
/// A read error, or a corrupt stored entry.
pub fn fill_view(
    plan: &LookupPlan,
    as_of: &AsOfPlan,
    vp: &ViewPlan,
    reads: &[ShardRead<'_, '_>],
    locate: &[(u32, u32)],
    columns: &mut [ColumnBuilder],
) -> Result<(), ExecError> {
    if let Some(agg) = &vp.view.aggregation {
        return fill_aggregation(plan, as_of, vp, agg, reads, locate, columns);
    }
    let mut readers: Vec<_> = reads.iter().map(|(_, _, r)| r.as_of(false)).collect();
    for (row, &(si, _)) in locate.iter().enumerate() {
        let shard = reads[si as usize].0;
        let t = as_of.times[row];
        let found = readers[si as usize]
            .find(&vp.view.name, vp.view.version, plan.key(row), t, as_of.rule)
            .map_err(|e| read_error(shard, e))?;
        let stored = match found {
            Some(v) => Some(
                history::decode_value(v)
                    .map(|(_, row)| row)
                    .ok_or_else(|| {
                        ServeError::Storage(format!("shard {shard}: corrupt history entry"))
                    })?,
            ),
            None => None,
        };
        fill_row(vp, shard, stored, t, columns)?;
    }
    Ok(())
}

/// Fills an aggregation view's columns for every row, each entity's tiles rebuilt as of
/// its row's time from the events its history keeps ([`crate::aggregate::as_of`]).
fn fill_aggregation(
    plan: &LookupPlan,
    as_of: &AsOfPlan,
    vp: &ViewPlan,
    agg: &crate::registry::aggregation::Aggregation,
    reads: &[ShardRead<'_, '_>],
    locate: &[(u32, u32)],
    columns: &mut [ColumnBuilder],
) -> Result<(), ExecError> {
    let mut readers: Vec<_> = reads.iter().map(|(_, _, r)| r.as_of(false)).collect();
    let mut replay = Replay::default();
    // Every row's tiles first (the answerer's states borrow them while it merges).
    let mut tiles: Vec<Option<Vec<u8>>> = Vec::with_capacity(locate.len());
    for (row, &(si, _)) in locate.iter().enumerate() {
        let shard = reads[si as usize].0;
        let t = as_of.times[row];
        replay.clear();
        readers[si as usize]
            .each_entry(&vp.view.name, vp.view.version, plan.key(row), |e| {
                replay.offer(e, t, as_of.rule);
                true
            })
            .map_err(|e| match e {
                HistoryReadError::Read(e) => read_error(shard, e),
                e @ HistoryReadError::Corrupt => {
                    ServeError::Storage(format!("shard {shard}: {e}")).into()
                }
            })?;
        let mut blob = Vec::new();
        let any = replay
            .encode_tiles(agg, t, &mut blob)
            .map_err(|e| ServeError::Storage(format!("shard {shard}: {e}")))?;
        tiles.push(any.then_some(blob));
    }
    let mut fill = AggregateFill::new(agg, vp);
    for (row, blob) in tiles.iter().enumerate() {
        let t = as_of.times[row];
        fill.row(blob.as_deref(), None, Some(t), t, columns)
            .map_err(|e| ServeError::Storage(format!("as of {}: {e}", rfc3339(t))))?;
    }
    fill.record_tiles(tiles.len());
    Ok(())
}

#[cfg(test)]
mod tests;
