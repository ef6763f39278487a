//! An entity's tiles live in two values: the *head* (key tag `0x02`: tiles starting at or
//! after the boundary, and the lifetime tile) and the *body* (tag `0x04`: older tiles).
//! In-order events land in the head, so ingest reads and rewrites only the small head per
//! batch; the body is read and rewritten only when the boundary moves past head tiles
//! (once a day), when a late event lands in it, or when the entity is erased. The head
//! records where the body ends, per resolution. A lookup reads both with one multi-get.
//!
//! The boundary at event-time watermark `wm` is `floor(wm − 2 h, 1 day)`: the head holds
//! between 2 and 26 hours of tiles. The body is trimmed when it is rewritten, so it may
//! keep tiles up to a day past their windows (never read: windows start later).

use super::tiles::{Column, Group, TileSet, tile_start};
use crate::registry::aggregation::Aggregation;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

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
