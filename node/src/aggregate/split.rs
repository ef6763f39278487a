//! An entity's tiles live in two values: the *head* (key tag `0x02`: tiles starting at or
//! after the boundary, and the lifetime tile) and the *body* (tag `0x04`: older tiles).
//! In-order events land in the head, so ingest reads and rewrites only the small head per
//! batch; the body is read and rewritten only when the boundary moves past head tiles
//! (once a day), when a late event lands in it, or when the entity is erased. The head
//! records where the body ends, per resolution, and where the body is: a body of at most
//! [`INLINE_BODY_MAX`] bytes rides inside its head (`tiles::BodyAt::Inline`), so a lookup
//! of such an entity is one point read; a larger one is its own value, read by a second
//! batch of reads for just the entities whose heads say so.
//!
//! The boundary at event-time watermark `wm` is `floor(wm − 2 h, 1 day)`: the head holds
//! between 2 and 26 hours of tiles. The body is trimmed when it is rewritten, so it may
//! keep tiles up to a day past their windows (never read: windows start later).
//!
//! A body also carries, for resolutions finer than a day serving windows longer than a
//! day, one summary state per feature per day ([`summarize`]): a window reads its tiles
//! only up to the first whole day, then a state per day (a 7-day window at 1-hour hops:
//! at most 23 tiles and 7 days from the body instead of 167 tiles).

use super::acc::AccKind;
use super::codec::Cursor;
use super::tiles::{BodyAt, Column, DaySummaries, Group, TileSet, kinds, tile_start};
use crate::registry::aggregation::Aggregation;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// The largest encoded body kept inside its head. Every head rewrite (once per ingest
/// batch touching the entity) copies the inline body, so this bounds what ingest pays
/// for saving a lookup its second point read; an entity with a larger body (dense or
/// long windows, distinct-count sketches) keeps it in its own value.
pub const INLINE_BODY_MAX: usize = 2048;

/// The head/body boundary at watermark `wm`.
pub fn boundary(wm: i64) -> i64 {
    tile_start(wm.saturating_sub(2 * HOUR), DAY)
}

/// The largest tile start of each group of `body` (`i64::MIN` when none): what the head
/// records, so ingest knows without reading the body whether an event lands in it.
pub fn last_starts(body: &TileSet<'_>) -> Vec<i64> {
    body.groups
        .iter()
        .map(|g| g.starts.last().copied().unwrap_or(i64::MIN))
        .collect()
}

/// Whether an event at `t` lands in a tile at or before the stored body's last one.
pub fn lands_in_body(agg: &Aggregation, head: &TileSet<'_>, t: i64) -> bool {
    agg.groups
        .iter()
        .zip(&head.body_ends)
        .any(|(g, end)| g.hop_micros != 0 && tile_start(t, g.hop_micros) <= *end)
}

/// Whether some recent tile now starts before the boundary (it moves to the body).
pub fn head_crosses(agg: &Aggregation, head: &TileSet<'_>, boundary: i64) -> bool {
    agg.groups
        .iter()
        .zip(&head.groups)
        .any(|(g, hg)| g.hop_micros != 0 && hg.starts.first().is_some_and(|s| *s < boundary))
}

/// Whether a head must be stored: it has tiles, or it records a stored body (deleting it
/// would lose where the body ends).
pub fn keep_head(head: &TileSet<'_>) -> bool {
    !head.is_empty() || head.body_ends.iter().any(|e| *e != i64::MIN)
}

/// One entity's tiles from its stored body and head (body tiles first).
pub fn join<'a>(body: TileSet<'a>, head: TileSet<'a>) -> TileSet<'a> {
    let mut out = head;
    // All the tiles are in one set now; where the body goes is decided when it is written.
    out.body_at = BodyAt::Absent;
    out.newest = out.newest.max(body.newest);
    for (g, b) in out.groups.iter_mut().zip(body.groups) {
        if b.starts.is_empty() {
            continue;
        }
        let mut starts = b.starts;
        starts.append(&mut g.starts);
        g.starts = starts;
        for (col, bcol) in g.columns.iter_mut().zip(b.columns) {
            match (col, bcol) {
                (Column::Fixed { data, .. }, Column::Fixed { data: mut bd, .. }) => {
                    bd.append(data);
                    *data = bd;
                }
                (Column::Var(cells), Column::Var(mut bc)) => {
                    bc.append(cells);
                    *cells = bc;
                }
                // Both decoded against the same aggregation: same column kinds.
                _ => {}
            }
        }
    }
    out
}

/// Splits into (body, head) at `boundary`; the lifetime tile stays in the head.
pub fn split<'a>(agg: &Aggregation, set: TileSet<'a>, boundary: i64) -> (TileSet<'a>, TileSet<'a>) {
    let mut body = TileSet::empty(agg);
    body.newest = set.newest;
    let mut head = set;
    for ((g, hg), bg) in agg
        .groups
        .iter()
        .zip(head.groups.iter_mut())
        .zip(body.groups.iter_mut())
    {
        if g.hop_micros == 0 {
            continue;
        }
        let k = hg.starts.partition_point(|s| *s < boundary);
        if k == 0 {
            continue;
        }
        move_front(hg, bg, k);
    }
    (body, head)
}

/// Moves the first `k` tiles of `from` to the (empty) `to`.
fn move_front<'a>(from: &mut Group<'a>, to: &mut Group<'a>, k: usize) {
    to.starts = from.starts.drain(..k).collect();
    for (fc, tc) in from.columns.iter_mut().zip(to.columns.iter_mut()) {
        match (fc, tc) {
            (Column::Fixed { width, data }, Column::Fixed { data: td, .. }) => {
                *td = data.drain(..k * *width).collect();
            }
            (Column::Var(cells), Column::Var(tcells)) => {
                *tcells = cells.drain(..k).collect();
            }
            _ => {}
        }
    }
}

/// Computes `body`'s day summaries: per group finer than a day with a window longer than a
/// day, per day holding tiles, each feature's tiles of that day merged into one state (the
/// roll-up of fine tiles into coarse ones). Returns the day states computed.
///
/// # Errors
/// [`super::AggError`] if a stored state is corrupt.
pub fn summarize(agg: &Aggregation, body: &mut TileSet<'_>) -> Result<u64, super::AggError> {
    let kinds: Vec<AccKind> = kinds(agg).collect();
    let mut rolled = 0u64;
    for ((g, group), days) in agg
        .groups
        .iter()
        .zip(&body.groups)
        .zip(body.days.iter_mut())
    {
        *days = DaySummaries::default();
        if g.hop_micros == 0 || g.hop_micros >= DAY || g.window_micros.is_none_or(|w| w <= DAY) {
            continue;
        }
        // Tile index ranges of each day.
        let mut ranges: Vec<(i64, usize, usize)> = Vec::new();
        for (i, s) in group.starts.iter().enumerate() {
            let day = tile_start(*s, DAY);
            match ranges.last_mut() {
                Some((d, _, end)) if *d == day => *end = i + 1,
                _ => ranges.push((day, i, i + 1)),
            }
        }
        days.starts = ranges.iter().map(|(d, ..)| *d).collect();
        for (col, &fi) in group.columns.iter().zip(&g.features) {
            let kind = kinds[fi];
            let mut out = Vec::new();
            for &(_, from, to) in &ranges {
                let mut state = kind.running();
                match col {
                    Column::Fixed { width, data } => {
                        kind.merge_fixed(&data[from * *width..to * *width], &mut state);
                        let at = out.len();
                        out.resize(at + *width, 0);
                        state.write_fixed(&mut out[at..]);
                    }
                    Column::Var(cells) => {
                        for cell in &cells[from..to] {
                            kind.merge(&mut Cursor { buf: cell }, &mut state)?;
                        }
                        state.put(&mut out);
                    }
                }
            }
            days.columns.push(out);
            rolled += ranges.len() as u64;
        }
    }
    Ok(rolled)
}
