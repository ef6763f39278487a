//! An entity's tiles: every partial aggregate of one (view, version, entity), stored as one
//! value so that ingest updates it with one read-modify-write and a lookup reads it with
//! one point read — the same cost as a plain row.
//!
//! ```text
//! u8 format (0xA1) | u8 flags (0) | i64 LE newest event time (µs) |
//! varint groups | per group: varint byte length | varint tiles |
//!   per tile: zigzag (start / hop) | one state per feature of the group (see acc)
//! ```
//!
//! Groups are the view's tile resolutions (features sharing a hop share tiles); tiles are
//! sorted by start. The fixed header matches a row's, so the TTL compaction filter reads
//! the newest event time the same way.

use quiver_proto::v1::value::Kind;

use super::AggError;
use super::acc::{Acc, AccKind};
use super::codec::{Cursor, Scalar, put_varint, put_zigzag};
use crate::registry::aggregation::{Aggregation, Constant, Filter};

/// Format byte of an encoded tile set.
pub const TILES_FORMAT: u8 = 0xA1;
/// Bytes before the groups.
pub const HEADER_LEN: usize = 10;

/// One tile: the partial aggregates of the events in `[start, start + hop)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile<'a> {
    /// Start, µs (0 for the lifetime tile).
    pub start: i64,
    /// One state per feature of the group, in slot order.
    pub accs: Vec<Acc<'a>>,
}

/// An entity's tiles, decoded for an update.
#[derive(Debug, Clone, PartialEq)]
pub struct TileSet<'a> {
    /// Newest event time counted, µs (`i64::MIN` when empty).
    pub newest: i64,
    /// Per group, its tiles by start.
    pub groups: Vec<Vec<Tile<'a>>>,
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
    if hop == 0 { 0 } else { t.div_euclid(hop) * hop }
}

impl<'a> TileSet<'a> {
    /// No tiles.
    pub fn empty(agg: &Aggregation) -> Self {
        TileSet {
            newest: i64::MIN,
            groups: vec![Vec::new(); agg.groups.len()],
        }
    }

    /// Whether it holds no tile.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(Vec::is_empty)
    }

    /// Decodes `blob`.
    ///
    /// # Errors
    /// [`AggError`] on a truncated or corrupt value, or one of another shape.
    pub fn decode(agg: &Aggregation, blob: &'a [u8]) -> Result<Self, AggError> {
        let newest = newest(blob)?;
        let mut c = Cursor {
            buf: &blob[HEADER_LEN..],
        };
        let n = c.varint()? as usize;
        if n != agg.groups.len() {
            return Err(AggError::Corrupt("tile groups differ from the view's"));
        }
        let kinds: Vec<AccKind> = kinds(agg).collect();
        let mut groups = Vec::with_capacity(n);
        for g in &agg.groups {
            let len = c.varint()? as usize;
            let mut gc = Cursor { buf: c.bytes(len)? };
            let tiles = gc.varint()? as usize;
            let mut list = Vec::with_capacity(tiles);
            for _ in 0..tiles {
                let start = gc.zigzag()?.saturating_mul(g.hop_micros);
                let accs = g
                    .features
                    .iter()
                    .map(|&f| kinds[f].read(&mut gc))
                    .collect::<Result<Vec<_>, _>>()?;
                list.push(Tile { start, accs });
            }
            groups.push(list);
        }
        Ok(TileSet { newest, groups })
    }

    /// Encodes into `out` (cleared first).
    pub fn encode(&self, agg: &Aggregation, out: &mut Vec<u8>) {
        out.clear();
        out.push(TILES_FORMAT);
        out.push(0);
        out.extend_from_slice(&self.newest.to_le_bytes());
        put_varint(out, self.groups.len() as u64);
        let mut body = Vec::new();
        for (g, tiles) in agg.groups.iter().zip(&self.groups) {
            body.clear();
            put_varint(&mut body, tiles.len() as u64);
            for tile in tiles {
                put_zigzag(
                    &mut body,
                    if g.hop_micros == 0 {
                        0
                    } else {
                        tile.start / g.hop_micros
                    },
                );
                for acc in &tile.accs {
                    acc.put(&mut body);
                }
            }
            put_varint(out, body.len() as u64);
            out.extend_from_slice(&body);
        }
    }

    /// Counts one event at `t` with inputs `values` (the aggregation's inputs in order)
    /// into its tile of every resolution, unless that tile is already older than every
    /// window of its resolution at watermark `wm`. Returns the tiles updated.
    pub fn add(&mut self, agg: &Aggregation, t: i64, values: &'a [Option<Kind>], wm: i64) -> u64 {
        let mut updated = 0;
        for (g, tiles) in agg.groups.iter().zip(self.groups.iter_mut()) {
            let start = tile_start(t, g.hop_micros);
            if g.window_micros
                .is_some_and(|w| start < tile_start(wm.saturating_sub(w), g.hop_micros))
            {
                continue;
            }
            let i = match tiles.binary_search_by_key(&start, |x| x.start) {
                Ok(i) => i,
                Err(i) => {
                    let accs = g
                        .features
                        .iter()
                        .map(|&f| {
                            let f = &agg.features[f];
                            AccKind::of(f, f.input.map(|i| agg.inputs[i].value_type)).empty()
                        })
                        .collect();
                    tiles.insert(i, Tile { start, accs });
                    i
                }
            };
            for (acc, &fi) in tiles[i].accs.iter_mut().zip(&g.features) {
                let f = &agg.features[fi];
                if f.filter.as_ref().is_some_and(|x| !passes(x, values)) {
                    continue;
                }
                let v = f.input.and_then(|i| scalar(values.get(i)?.as_ref()));
                if f.input.is_some() && v.is_none() {
                    continue;
                }
                acc.add(v.as_ref(), t, f.n);
            }
            updated += 1;
        }
        self.newest = self.newest.max(t);
        updated
    }

    /// Drops the tiles older than every window of their resolution at watermark `wm`.
    pub fn trim(&mut self, agg: &Aggregation, wm: i64) {
        for (g, tiles) in agg.groups.iter().zip(self.groups.iter_mut()) {
            if let Some(w) = g.window_micros {
                let cutoff = tile_start(wm.saturating_sub(w), g.hop_micros);
                let keep_from = tiles.partition_point(|x| x.start < cutoff);
                tiles.drain(..keep_from);
            }
        }
    }

    /// Tiles held (for tests and the storage bound).
    pub fn tile_count(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
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
