//! An entity's tiles: every partial aggregate of one (view, version, entity), stored as one
//! value so that ingest updates it with one read-modify-write and a lookup reads it with
//! one point read — the same number of RocksDB operations as a plain row.
//!
//! Column-major, so a lookup merges a window with a tight loop over fixed-width words
//! and ingest touches only the bytes of the tile an event lands in:
//!
//! ```text
//! u8 format (0xA3) | u8 flags | i64 LE newest event time (µs) |
//! [flags & INLINE_BODY: varint byte length | the entity's body, itself a tile set] |
//! varint groups |
//! per group (one per tile resolution): varint byte length |
//!   i64 LE body end (in a head: the last tile start of the body, i64::MIN if none) |
//!   u32 LE tiles | tiles × i64 LE start (ascending) |
//!   per feature of the group: u32 LE byte length | column |
//!   u32 LE days, then if any: days × i64 LE day start | per feature: u32 LE length | column
//! column: fixed-width states (acc::AccKind::fixed_width): tiles × entry;
//!         otherwise tiles × the state's variable encoding (see acc)
//! ```
//!
//! The *days* section is a summary per day of a body's tiles (`super::split`), so a long
//! window reads whole days as one state each.
//!
//! The flags of a head say where the entity's older tiles (its body, `super::split`) are:
//! `0` in their own value (or, in a head written before the flags existed, possibly
//! none), [`FLAG_INLINE_BODY`] inside the head, [`FLAG_NO_BODY`] nowhere.
//!
//! The fixed header matches a row's, so the TTL compaction filter reads the newest event
//! time the same way.

use std::borrow::Cow;

use quiver_proto::v1::value::Kind;

use super::AggError;
use super::acc::AccKind;
use super::codec::{Cursor, Scalar, put_varint};
use super::stored::{BodyRef, layout, stored_groups};
use crate::registry::aggregation::{Aggregation, Constant, Filter};

/// Format byte of an encoded tile set.
pub const TILES_FORMAT: u8 = 0xA3;
/// Bytes before the groups.
pub const HEADER_LEN: usize = 10;
/// The empty variable-width state (`varint n = 0`).
const EMPTY_STATE: &[u8] = &[0];
/// Flag of a head carrying its body inline, after the header.
pub const FLAG_INLINE_BODY: u8 = 0x01;
/// Flag of a head whose entity has no body.
pub const FLAG_NO_BODY: u8 = 0x02;

/// Where an entity's older tiles (its body) are, as its head records it.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyAt<'a> {
    /// In their own value under the body key (or, for a head written before the flags
    /// existed, possibly nowhere: reading the body key tells).
    Stored,
    /// Inside the head: the body's encoded tile set.
    Inline(Cow<'a, [u8]>),
    /// Nowhere: the entity has no older tiles.
    Absent,
}

impl BodyAt<'_> {
    fn flags(&self) -> u8 {
        match self {
            BodyAt::Stored => 0,
            BodyAt::Inline(_) => FLAG_INLINE_BODY,
            BodyAt::Absent => FLAG_NO_BODY,
        }
    }
}

/// One feature's states over a group's tiles, being updated.
#[derive(Debug, Clone, PartialEq)]
pub enum Column<'a> {
    /// Fixed-width entries, one per tile.
    Fixed {
        /// Bytes per entry.
        width: usize,
        /// `tiles × width` bytes.
        data: Vec<u8>,
    },
    /// One encoded state per tile; untouched ones stay borrowed from the stored value.
    Var(Vec<Cow<'a, [u8]>>),
}

/// One tile resolution's tiles, being updated.
#[derive(Debug, Clone, PartialEq)]
pub struct Group<'a> {
    /// Tile starts, µs, ascending (0 for the lifetime tile).
    pub starts: Vec<i64>,
    /// One column per feature of the group, in slot order.
    pub columns: Vec<Column<'a>>,
}

/// An entity's tiles, decoded for an update.
#[derive(Debug, Clone, PartialEq)]
pub struct TileSet<'a> {
    /// Newest event time counted, µs (`i64::MIN` when empty).
    pub newest: i64,
    /// Per tile resolution.
    pub groups: Vec<Group<'a>>,
    /// Per group, the smallest tile start an event updated since decoding (`i64::MAX`:
    /// none): whether the stored body must be rewritten ([`super::split`]).
    pub touched: Vec<i64>,
    /// Per group, in a head: the last tile start of the stored body (`i64::MIN`: none).
    pub body_ends: Vec<i64>,
    /// Per group, the day summaries written with it (bodies only; recomputed whenever a
    /// body is written, never decoded for an update).
    pub days: Vec<DaySummaries>,
    /// In a head: where the body is (`Absent` in a body and in an empty set).
    pub body_at: BodyAt<'a>,
}

/// One summary state per feature per day of a group's tiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaySummaries {
    /// Day starts, ascending.
    pub starts: Vec<i64>,
    /// Per feature, its states over the days, encoded as a column.
    pub columns: Vec<Vec<u8>>,
}

/// The kind of each feature's state, by feature index.
pub fn kinds(agg: &Aggregation) -> impl Iterator<Item = AccKind> + '_ {
    agg.features
        .iter()
        .map(|f| AccKind::of(f, f.input.map(|i| agg.inputs[i].value_type)))
}

/// Reads the newest event time from an encoded tile set's header.
///
/// # Errors
/// [`AggError`] if the header is not a tile set's.
pub fn newest(blob: &[u8]) -> Result<i64, AggError> {
    if blob.len() < HEADER_LEN {
        return Err(AggError::Truncated);
    }
    if blob[0] != TILES_FORMAT {
        return Err(AggError::Corrupt("not a tile set"));
    }
    Ok(i64::from_le_bytes(blob[2..10].try_into().expect("8 bytes")))
}

/// Floor of `t` to a multiple of `hop` (0 for the lifetime tile).
pub fn tile_start(t: i64, hop: i64) -> i64 {
    if hop == 0 {
        0
    } else {
        t.div_euclid(hop).saturating_mul(hop)
    }
}

impl<'a> TileSet<'a> {
    /// No tiles.
    pub fn empty(agg: &Aggregation) -> Self {
        let kinds: Vec<AccKind> = kinds(agg).collect();
        Self::empty_of(agg, &kinds)
    }

    /// No tiles, with the aggregation's state kinds already at hand.
    fn empty_of(agg: &Aggregation, kinds: &[AccKind]) -> Self {
        TileSet {
            newest: i64::MIN,
            touched: vec![i64::MAX; agg.groups.len()],
            body_ends: vec![i64::MIN; agg.groups.len()],
            days: vec![DaySummaries::default(); agg.groups.len()],
            body_at: BodyAt::Absent,
            groups: agg
                .groups
                .iter()
                .map(|g| Group {
                    starts: Vec::new(),
                    columns: g
                        .features
                        .iter()
                        .map(|&f| match kinds[f].fixed_width() {
                            Some(width) => Column::Fixed {
                                width,
                                data: Vec::new(),
                            },
                            None => Column::Var(Vec::new()),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Whether it holds no tile.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.starts.is_empty())
    }

    /// Tiles held (for tests and the storage bound).
    pub fn tile_count(&self) -> usize {
        self.groups.iter().map(|g| g.starts.len()).sum()
    }

    /// Decodes `blob` for an update: fixed columns are copied, variable ones split into
    /// borrowed states (decoded only when an event lands in their tile).
    ///
    /// # Errors
    /// [`AggError`] on a truncated or corrupt value, or one of another shape.
    pub fn decode(agg: &Aggregation, blob: &'a [u8]) -> Result<Self, AggError> {
        let kinds: Vec<AccKind> = kinds(agg).collect();
        let mut set = TileSet::empty_of(agg, &kinds);
        set.newest = newest(blob)?;
        set.body_at = match layout(blob)?.0 {
            BodyRef::Stored => BodyAt::Stored,
            BodyRef::Inline(b) => BodyAt::Inline(Cow::Borrowed(b)),
            BodyRef::Absent => BodyAt::Absent,
        };
        stored_groups(
            agg,
            blob,
            |gi, stored| {
                let n = stored.len();
                set.body_ends[gi] = stored.body_end;
                let group = &mut set.groups[gi];
                group.starts = (0..n).map(|i| stored.start(i)).collect();
                for ((col, raw), &f) in group
                    .columns
                    .iter_mut()
                    .zip(stored.columns)
                    .zip(&agg.groups[gi].features)
                {
                    match col {
                        Column::Fixed { width, data } => {
                            if raw.len() != n * *width {
                                return Err(AggError::Corrupt("fixed column of another length"));
                            }
                            data.extend_from_slice(raw);
                        }
                        Column::Var(cells) => {
                            let mut c = Cursor { buf: raw };
                            for _ in 0..n {
                                let before = c.buf;
                                kinds[f].skip(&mut c)?;
                                cells.push(Cow::Borrowed(&before[..before.len() - c.buf.len()]));
                            }
                        }
                    }
                }
                Ok(())
            },
            |_| true,
        )?;
        Ok(set)
    }

    /// A copy that owns all its bytes.
    pub fn into_owned(self) -> TileSet<'static> {
        TileSet {
            newest: self.newest,
            touched: self.touched,
            body_ends: self.body_ends,
            days: self.days,
            body_at: match self.body_at {
                BodyAt::Inline(b) => BodyAt::Inline(Cow::Owned(b.into_owned())),
                BodyAt::Stored => BodyAt::Stored,
                BodyAt::Absent => BodyAt::Absent,
            },
            groups: self
                .groups
                .into_iter()
                .map(|g| Group {
                    starts: g.starts,
                    columns: g
                        .columns
                        .into_iter()
                        .map(|c| match c {
                            Column::Fixed { width, data } => Column::Fixed { width, data },
                            Column::Var(cells) => Column::Var(
                                cells
                                    .into_iter()
                                    .map(|c| Cow::Owned(c.into_owned()))
                                    .collect(),
                            ),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Encodes into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(TILES_FORMAT);
        out.push(self.body_at.flags());
        out.extend_from_slice(&self.newest.to_le_bytes());
        if let BodyAt::Inline(body) = &self.body_at {
            put_varint(out, body.len() as u64);
            out.extend_from_slice(body);
        }
        put_varint(out, self.groups.len() as u64);
        let mut body = Vec::with_capacity(256);
        for ((g, end), days) in self.groups.iter().zip(&self.body_ends).zip(&self.days) {
            body.clear();
            body.extend_from_slice(&end.to_le_bytes());
            body.extend_from_slice(&(g.starts.len() as u32).to_le_bytes());
            for s in &g.starts {
                body.extend_from_slice(&s.to_le_bytes());
            }
            for col in &g.columns {
                let at = body.len();
                body.extend_from_slice(&[0; 4]);
                match col {
                    Column::Fixed { data, .. } => body.extend_from_slice(data),
                    Column::Var(cells) => cells.iter().for_each(|c| body.extend_from_slice(c)),
                }
                let len = (body.len() - at - 4) as u32;
                body[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            body.extend_from_slice(&(days.starts.len() as u32).to_le_bytes());
            if !days.starts.is_empty() {
                for s in &days.starts {
                    body.extend_from_slice(&s.to_le_bytes());
                }
                for col in &days.columns {
                    body.extend_from_slice(&(col.len() as u32).to_le_bytes());
                    body.extend_from_slice(col);
                }
            }
            put_varint(out, body.len() as u64);
            out.extend_from_slice(&body);
        }
    }

    /// Counts one event at `t` with inputs `values` (the aggregation's inputs in order)
    /// into its tile of every resolution, unless that tile is already older than every
    /// window of its resolution at watermark `wm`. Returns the tiles updated.
    ///
    /// # Errors
    /// [`AggError`] if a stored state it updates is corrupt.
    pub fn add(
        &mut self,
        agg: &Aggregation,
        t: i64,
        values: &'a [Option<Kind>],
        wm: i64,
    ) -> Result<u64, AggError> {
        let mut updated = 0;
        for ((g, group), touched) in agg
            .groups
            .iter()
            .zip(self.groups.iter_mut())
            .zip(self.touched.iter_mut())
        {
            let start = tile_start(t, g.hop_micros);
            if g.window_micros
                .is_some_and(|w| start < tile_start(wm.saturating_sub(w), g.hop_micros))
            {
                continue;
            }
            let i = match group.starts.binary_search(&start) {
                Ok(i) => i,
                Err(i) => {
                    group.starts.insert(i, start);
                    for col in &mut group.columns {
                        match col {
                            Column::Fixed { width, data } => {
                                data.splice(i * *width..i * *width, std::iter::repeat_n(0, *width));
                            }
                            Column::Var(cells) => cells.insert(i, Cow::Borrowed(EMPTY_STATE)),
                        }
                    }
                    i
                }
            };
            for (col, &fi) in group.columns.iter_mut().zip(&g.features) {
                let f = &agg.features[fi];
                if f.filter.as_ref().is_some_and(|x| !passes(x, values)) {
                    continue;
                }
                let v = f.input.and_then(|i| scalar(values.get(i)?.as_ref()));
                if f.input.is_some() && v.is_none() {
                    continue;
                }
                let kind = AccKind::of(f, f.input.map(|i| agg.inputs[i].value_type));
                match col {
                    Column::Fixed { width, data } => {
                        let e = &mut data[i * *width..(i + 1) * *width];
                        let mut acc = kind.read_fixed(e);
                        acc.add(v.as_ref(), t, f.n);
                        acc.write_fixed(e);
                    }
                    Column::Var(cells) => {
                        let mut acc = kind.read(&mut Cursor { buf: &cells[i] })?;
                        acc.add(v.as_ref(), t, f.n);
                        let mut buf = Vec::new();
                        acc.put(&mut buf);
                        cells[i] = Cow::Owned(buf);
                    }
                }
            }
            updated += 1;
            *touched = (*touched).min(start);
        }
        self.newest = self.newest.max(t);
        Ok(updated)
    }

    /// Drops the tiles older than every window of their resolution at watermark `wm`.
    pub fn trim(&mut self, agg: &Aggregation, wm: i64) {
        for (g, group) in agg.groups.iter().zip(self.groups.iter_mut()) {
            if let Some(w) = g.window_micros {
                let cutoff = tile_start(wm.saturating_sub(w), g.hop_micros);
                let k = group.starts.partition_point(|s| *s < cutoff);
                if k == 0 {
                    continue;
                }
                group.starts.drain(..k);
                for col in &mut group.columns {
                    match col {
                        Column::Fixed { width, data } => {
                            data.drain(..k * *width);
                        }
                        Column::Var(cells) => {
                            cells.drain(..k);
                        }
                    }
                }
            }
        }
    }
}

/// An input value as a scalar (lists are not inputs).
pub(super) fn scalar(v: Option<&Kind>) -> Option<Scalar<'_>> {
    Some(match v? {
        Kind::BoolValue(b) => Scalar::Bool(*b),
        Kind::Int64Value(i) => Scalar::Int(*i),
        Kind::Float64Value(d) => Scalar::Float(*d),
        Kind::StringValue(s) => Scalar::Bytes(s.as_bytes().into()),
        Kind::BytesValue(b) => Scalar::Bytes(b.as_slice().into()),
        _ => return None,
    })
}

/// Whether the event's inputs satisfy `filter` (a null input never does; NaN only `!=`).
pub fn passes(filter: &Filter, values: &[Option<Kind>]) -> bool {
    let Some(v) = values.get(filter.input).and_then(|v| v.as_ref()) else {
        return false;
    };
    let ord = match (v, &filter.constant) {
        (Kind::BoolValue(a), Constant::Bool(b)) => a.cmp(b),
        (Kind::Int64Value(a), Constant::Int(b)) => a.cmp(b),
        (Kind::Float64Value(a), Constant::Float(b)) => match a.partial_cmp(b) {
            Some(o) => o,
            None => return filter.op == crate::registry::aggregation::CmpOp::Ne,
        },
        (Kind::StringValue(a), Constant::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
        _ => return false,
    };
    filter.op.holds(ord)
}
