//! An aggregation view's part of a lookup: every entity's head (its recent tiles, and
//! its older ones when they are small enough to ride inside it) in one batch of point
//! reads per shard, then the bodies stored in their own values, for just the entities
//! whose heads say so, in a second batch; then each entity's windows merged into its
//! answers ([`crate::aggregate::read`]).

use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::FeatureStatus;
use rocksdb::DBPinnableSlice;

use super::{ExecError, ReadMode, read_error, split_keys};
use crate::aggregate::AggError;
use crate::aggregate::stored::{BodyRef, layout};
use crate::registry::aggregation::Aggregation;
use crate::serve::ServeError;
use crate::serve::as_of::ShardRead;
use crate::serve::plan::{LookupPlan, ViewPlan};
use crate::storage::keys;

type Fetched<'a> = Vec<Result<Option<DBPinnableSlice<'a>>, rocksdb::Error>>;

/// Fills `vp`'s columns (an aggregation view) for every row of `plan`, each shard's
/// entities answered at that shard's query time `q[shard position]`.
///
/// # Errors
/// A read error ([`ExecError::NeedsIo`] for a cached-only read that needs the disk), or
/// a corrupt stored value.
#[allow(clippy::too_many_arguments)] // one lookup's parts, as `execute` holds them
pub(super) fn fill_view(
    plan: &LookupPlan,
    agg: &Aggregation,
    vp: &ViewPlan,
    reads: &[ShardRead<'_, '_>],
    locate: &[(u32, u32)],
    q: &[Option<i64>],
    now_micros: i64,
    mode: ReadMode,
    columns: &mut [ColumnBuilder],
) -> Result<(), ExecError> {
    let cached_only = mode == ReadMode::CachedOnly;
    let (name, version) = (&vp.view.name, vp.view.version);
    let mut key_buf: Vec<u8> = Vec::new();
    let mut key_ends: Vec<usize> = Vec::new();
    // Per shard: its entities' heads, then (positions among them, results) of the
    // bodies stored apart. The pinned values stay valid while `reads` lives.
    let mut heads: Vec<Fetched<'_>> = Vec::with_capacity(reads.len());
    let mut bodies: Vec<(Vec<u32>, Fetched<'_>)> = Vec::with_capacity(reads.len());
    for (_, rows, read) in reads {
        key_buf.clear();
        key_ends.clear();
        for &row in rows.iter() {
            keys::encode_tile_key(name, version, plan.key(row as usize), &mut key_buf);
            key_ends.push(key_buf.len());
        }
        let got = read.get_rows(split_keys(&key_buf, 0, &key_ends).iter(), cached_only);
        key_buf.clear();
        key_ends.clear();
        let mut apart = Vec::new();
        for (i, head) in got.iter().enumerate() {
            // A corrupt head is reported when it is answered.
            if let Ok(Some(h)) = head
                && matches!(layout(h), Ok((BodyRef::Stored, _)))
            {
                keys::encode_tile_body_key(name, version, plan.key(rows[i] as usize), &mut key_buf);
                key_ends.push(key_buf.len());
                apart.push(i as u32);
            }
        }
        let got_bodies = if apart.is_empty() {
            Vec::new()
        } else {
            read.get_rows(split_keys(&key_buf, 0, &key_ends).iter(), cached_only)
        };
        heads.push(got);
        bodies.push((apart, got_bodies));
    }
    let mut fill = AggregateFill::new(agg, vp);
    for &(si, i) in locate {
        let (si, i) = (si as usize, i as usize);
        let shard = reads[si].0;
        let head = pinned(&heads[si][i], shard)?;
        let (apart, got) = &bodies[si];
        let body = match apart.binary_search(&(i as u32)) {
            Ok(k) => pinned(&got[k], shard)?,
            Err(_) => None,
        };
        fill.row(head, body, q[si], now_micros, columns)
            .map_err(|e| ServeError::Storage(format!("shard {shard}: {e}")))?;
    }
    fill.record_tiles(locate.len());
    Ok(())
}

/// A fetched value's bytes, or its read error.
fn pinned<'p>(
    r: &'p Result<Option<DBPinnableSlice<'_>>, rocksdb::Error>,
    shard: quiver_proto::ShardId,
) -> Result<Option<&'p [u8]>, ExecError> {
    r.as_ref()
        .map(|v| v.as_deref())
        .map_err(|e| read_error(shard, e.clone()))
}

/// Answers an aggregation view's features for one entity after another.
pub(in crate::serve) struct AggregateFill<'v, 'a> {
    answerer: crate::aggregate::read::Answerer<'v>,
    states: Vec<crate::aggregate::acc::Acc<'a>>,
    vp: &'v ViewPlan,
    /// Tiles read for this request.
    tiles: u64,
}

impl<'v, 'a> AggregateFill<'v, 'a> {
    pub(in crate::serve) fn new(
        agg: &'v crate::registry::aggregation::Aggregation,
        vp: &'v ViewPlan,
    ) -> Self {
        let wanted = (vp.wanted.iter().enumerate()).filter_map(|(f, &w)| w.then_some(f));
        let answerer = crate::aggregate::read::Answerer::new(agg, wanted);
        AggregateFill {
            states: answerer.states(),
            answerer,
            vp,
            tiles: 0,
        }
    }

    /// Records the tiles read per entity (one histogram sample per request and view).
    pub(in crate::serve) fn record_tiles(&self, entities: usize) {
        if entities > 0 {
            metrics::histogram!(crate::metrics::AGG_TILES_PER_READ)
                .record(self.tiles as f64 / entities as f64);
        }
    }

    /// Appends one entity's answers at query time `q`: `head` is its stored recent tiles,
    /// `stored_body` its older tiles when the head says they are in their own value (a
    /// body inside the head is read from it).
    pub(in crate::serve) fn row(
        &mut self,
        head: Option<&'a [u8]>,
        stored_body: Option<&'a [u8]>,
        q: Option<i64>,
        now_micros: i64,
        columns: &mut [ColumnBuilder],
    ) -> Result<(), AggError> {
        let body = match head.map(layout).transpose()? {
            Some((BodyRef::Inline(b), _)) => Some(b),
            Some((BodyRef::Stored, _)) => stored_body,
            Some((BodyRef::Absent, _)) | None => None,
        };
        let (true, Some(q)) = (head.is_some(), q) else {
            self.vp
                .columns
                .iter()
                .for_each(|c| columns[*c].push_missing(FeatureStatus::NotFound, 0));
            return Ok(());
        };
        let parts = [body, head];
        let (newest, tiles) = self.answerer.merge(parts, q, &mut self.states)?;
        self.tiles += u64::from(tiles);
        if self
            .vp
            .ttl_micros
            .is_some_and(|ttl| now_micros.saturating_sub(newest) > ttl)
        {
            self.vp
                .columns
                .iter()
                .for_each(|c| columns[*c].push_missing(FeatureStatus::Expired, newest));
            return Ok(());
        }
        for step in &self.vp.steps {
            self.answerer.finish(
                step.feature,
                &self.states[step.feature],
                &mut columns[step.column],
                newest,
            );
        }
        Ok(())
    }
}
