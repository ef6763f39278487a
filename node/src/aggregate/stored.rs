//! A stored tile set read in place: where its body is and its groups' bytes, split
//! without copying or collecting (a lookup does this per entity and part), with every
//! length checked against the value (the format: [`super::tiles`]).

use super::AggError;
use super::codec::Cursor;
use super::tiles::{FLAG_INLINE_BODY, FLAG_NO_BODY, HEADER_LEN, newest};
use crate::registry::aggregation::Aggregation;

/// Where a stored head says its body is, borrowed from the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRef<'a> {
    /// In its own value (or, for a head written before the flags existed, possibly none).
    Stored,
    /// Inside the head: the body's encoded tile set.
    Inline(&'a [u8]),
    /// The entity has no body.
    Absent,
}

/// Splits an encoded tile set into where its body is and the bytes of its groups.
///
/// # Errors
/// [`AggError`] if the header is not a tile set's or the inline body is truncated.
pub fn layout(blob: &[u8]) -> Result<(BodyRef<'_>, &[u8]), AggError> {
    newest(blob)?;
    let mut c = Cursor {
        buf: &blob[HEADER_LEN..],
    };
    let flags = blob[1];
    let body = if flags & FLAG_INLINE_BODY != 0 {
        let len = c.varint()? as usize;
        BodyRef::Inline(c.bytes(len)?)
    } else if flags & FLAG_NO_BODY != 0 {
        BodyRef::Absent
    } else {
        BodyRef::Stored
    };
    Ok((body, c.buf))
}

/// A group as stored: its tile starts and its columns' bytes, borrowed.
pub(super) struct StoredGroup<'a> {
    /// In a head, the last tile start of the body.
    pub(super) body_end: i64,
    /// `tiles × 8` bytes of starts.
    pub(super) starts: &'a [u8],
    /// The columns, in slot order.
    pub(super) columns: Columns<'a>,
    /// `days × 8` bytes of day starts (empty without day summaries).
    pub(super) day_starts: &'a [u8],
    /// The day summaries' columns, in slot order (none without).
    pub(super) day_columns: Columns<'a>,
}

/// A group's columns as stored, one after another (`u32 LE length | bytes` each), their
/// lengths checked when the group was split: iterating yields each column's bytes without
/// collecting them (a lookup splits a group per entity and part).
#[derive(Debug, Clone, Copy)]
pub(super) struct Columns<'a>(&'a [u8]);

impl<'a> Columns<'a> {
    /// Splits `count` columns off the front of `c`.
    fn split(c: &mut Cursor<'a>, count: usize) -> Result<Self, AggError> {
        let all = c.buf;
        for _ in 0..count {
            let n = c.u32_le()? as usize;
            c.bytes(n)?;
        }
        Ok(Columns(&all[..all.len() - c.buf.len()]))
    }
}

impl<'a> Iterator for Columns<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let (col, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        self.0 = rest;
        Some(col)
    }
}

impl StoredGroup<'_> {
    pub(super) fn len(&self) -> usize {
        self.starts.len() / 8
    }

    pub(super) fn days(&self) -> usize {
        self.day_starts.len() / 8
    }

    /// Index of the first day summary starting at or after `t`.
    pub(super) fn first_day_from(&self, t: i64) -> usize {
        first_at_or_after(self.day_starts, t)
    }

    pub(super) fn start(&self, i: usize) -> i64 {
        i64::from_le_bytes(self.starts[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    }

    /// Index of the first tile starting at or after `t`.
    pub(super) fn first_from(&self, t: i64) -> usize {
        first_at_or_after(self.starts, t)
    }
}

/// Index of the first of the LE i64 `starts` at or after `t` (they ascend).
fn first_at_or_after(starts: &[u8], t: i64) -> usize {
    let at = |i: usize| i64::from_le_bytes(starts[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let (mut lo, mut hi) = (0, starts.len() / 8);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if at(mid) < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Splits the groups of a stored tile set, checking its shape against `agg` (`wanted`:
/// which groups to split; the others are skipped).
pub(super) fn stored_groups<'a>(
    agg: &Aggregation,
    blob: &'a [u8],
    mut visit: impl FnMut(usize, StoredGroup<'a>) -> Result<(), AggError>,
    wanted: impl Fn(usize) -> bool,
) -> Result<(), AggError> {
    let (_, groups) = layout(blob)?;
    let mut c = Cursor { buf: groups };
    if c.varint()? as usize != agg.groups.len() {
        return Err(AggError::Corrupt("tile groups differ from the view's"));
    }
    for (gi, g) in agg.groups.iter().enumerate() {
        let len = c.varint()? as usize;
        let body = c.bytes(len)?;
        if !wanted(gi) {
            continue;
        }
        let mut b = Cursor { buf: body };
        let body_end = i64::from_le_bytes(b.bytes(8)?.try_into().expect("8 bytes"));
        let tiles = b.u32_le()? as usize;
        let starts = b.bytes(tiles.checked_mul(8).ok_or(AggError::Truncated)?)?;
        let columns = Columns::split(&mut b, g.features.len())?;
        let days = b.u32_le()? as usize;
        let day_starts = b.bytes(days.checked_mul(8).ok_or(AggError::Truncated)?)?;
        let day_columns = Columns::split(&mut b, if days > 0 { g.features.len() } else { 0 })?;
        visit(
            gi,
            StoredGroup {
                body_end,
                starts,
                columns,
                day_starts,
                day_columns,
            },
        )?;
    }
    Ok(())
}
