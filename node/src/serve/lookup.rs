//! Executing a planned lookup, independent of gRPC: the replicas it reads resolved once
//! ([`replicas_for`]), then per shard its rows and watermark from one state — from the
//! lookup cache alone when a request of plain views finds every row of the shard there
//! ([`ShardStore::latest_rows_in_memory`]), else through one RocksDB snapshot with, per
//! view, one batched read through the lookup cache (`storage/lookup_cache.rs`; its misses
//! from RocksDB) — then every row
//! decoded in request order straight into typed packed columns
//! ([`quiver_proto::packed`]): each value is copied once, from the stored row into its
//! response column, with no message or allocation per value.
//!
//! Execution is synchronous RocksDB work. The handler first runs it with
//! [`ReadMode::CachedOnly`] on the async worker — memtables and block cache only, so it
//! can never wait on the disk — and only when some row is not in memory runs it again in
//! full on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quiver_proto::ShardId;
use quiver_proto::packed::{ColumnBuilder, EncodedWatermark, PackedAnswer};
use quiver_proto::v1::{GetOnlineFeaturesResponse, ShardWatermark, TopicOffset};

use super::ServeError;
use super::plan::LookupPlan;
use crate::gate::{Gate, GateGuard};
use crate::storage::lookup_cache::CachedRow;
use crate::storage::{RowBytes, ShardStore, is_topic_stream, keys};

/// Where a lookup may read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Memtables and block cache only; a row that needs disk I/O ends the attempt with
    /// [`ExecError::NeedsIo`].
    CachedOnly,
    /// Anything, disk included (run it on the blocking pool).
    Full,
}

/// Why an execution did not produce a response.
#[derive(Debug)]
pub enum ExecError {
    /// Some row is not in memory: run again with [`ReadMode::Full`] off the async workers.
    NeedsIo,
    /// A real failure.
    Serve(ServeError),
}

impl From<ServeError> for ExecError {
    fn from(e: ServeError) -> Self {
        ExecError::Serve(e)
    }
}

/// Whether `have` has reached every floor of `shard` among a request's minimum
/// watermarks `floors` (streams it does not know count as 0). Floors on pending streams
/// are ignored ([`is_topic_stream`]): a client holding one from an older node would find
/// every replica that already promoted the version "behind" it forever. A shard named
/// twice must reach both.
pub fn floors_reached(
    floors: &[ShardWatermark],
    shard: ShardId,
    have: &BTreeMap<String, i64>,
) -> bool {
    binding_floors(floors, shard).all(|o| have.get(&o.topic).copied().unwrap_or(0) >= o.next_offset)
}

/// The floors of `shard` a replica must reach: its topic streams'.
pub fn binding_floors(
    floors: &[ShardWatermark],
    shard: ShardId,
) -> impl Iterator<Item = &TopicOffset> {
    floors
        .iter()
        .filter(move |w| w.shard == shard.0)
        .flat_map(|w| &w.offsets)
        .filter(|o| is_topic_stream(&o.topic))
}

/// A replica a lookup reads: inside its gate, so closing the replica waits for the read.
pub type Reader = GateGuard<ShardStore>;

/// The local replicas `plan` reads, in its shard order (what [`execute`] takes), each
/// entered through its gate. The one place a lookup learns that this node does not hold
/// a shard: [`ServeError::WrongShard`] with the node's map `epoch`, so the client
/// refreshes its map at least to it.
///
/// # Errors
/// [`ServeError::WrongShard`] for the first shard of the plan not held here;
/// [`ServeError::Unavailable`] if its replica here is closing (moved away, or the node
/// stops).
pub fn replicas_for(
    plan: &LookupPlan,
    local: &HashMap<ShardId, Arc<ShardStore>>,
    epoch: u64,
) -> Result<Vec<Reader>, ServeError> {
    plan.shards()
        .map(|shard| {
            let store = local
                .get(&shard)
                .ok_or(ServeError::WrongShard { shard, epoch })?;
            Gate::enter(store).ok_or_else(|| {
                ServeError::Unavailable(format!("shard {shard}'s replica on this node is closing"))
            })
        })
        .collect()
}

/// Executes `plan` against `replicas` (from [`replicas_for`]: the plan's shards, in its
/// order) at time `now_micros`, answering in the PACKED encoding.
///
/// # Errors
/// [`ExecError::NeedsIo`] under [`ReadMode::CachedOnly`] when a row is not in memory;
/// [`ServeError::Storage`] on a read error or a corrupt row.
pub fn execute(
    plan: &LookupPlan,
    replicas: &[Reader],
    now_micros: i64,
    mode: ReadMode,
) -> Result<PackedAnswer, ExecError> {
    if replicas.len() != plan.by_shard.len() {
        return Err(ServeError::Storage(format!(
            "internal: {} replicas for a plan over {} shards",
            replicas.len(),
            plan.by_shard.len()
        ))
        .into());
    }
    let n = plan.key_count();
    let compiled = &plan.compiled;
    if let Some(as_of) = &plan.as_of {
        as_of.check(compiled, now_micros)?;
        if mode == ReadMode::CachedOnly {
            // History seeks run where they may wait on the disk.
            return Err(ExecError::NeedsIo);
        }
        let rule = match as_of.rule {
            crate::storage::history::AsOfRule::EventTime => "event_time",
            crate::storage::history::AsOfRule::ArrivedBy => "arrived_by",
        };
        metrics::counter!(crate::metrics::AS_OF_KEYS, "rule" => rule).increment(n as u64);
    }
    let mut sources = ShardSources::open(plan, replicas)?;
    // Unnamed: the answer names its columns from the plan's shared list.
    // Reused from an earlier answer of the plan when one was given back.
    let mut columns = compiled.builders.take(&compiled.types, n, plan.event_times);
    let reads = &sources.reads;
    let locate = &sources.locate;
    for (v, vp) in compiled.views.iter().enumerate() {
        if let Some(as_of) = &plan.as_of {
            super::as_of::fill_view(plan, as_of, vp, reads, locate, &mut columns)?;
            continue;
        }
        if let Some(agg) = &vp.view.aggregation {
            let q = reads
                .iter()
                .map(|(shard, _, read)| {
                    read.event_watermark(
                        &vp.view.name,
                        vp.view.version,
                        mode == ReadMode::CachedOnly,
                    )
                    .map(|wm| crate::aggregate::read::query_time(agg, now_micros, wm))
                    .map_err(|e| read_error(*shard, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            tiles::fill_view(
                plan,
                agg,
                vp,
                reads,
                locate,
                &q,
                now_micros,
                mode,
                &mut columns,
            )?;
            continue;
        }
        sources.fill_plain_view(plan, v, now_micros, mode, &mut columns)?;
    }
    // The builders are encoded where they are (`PackedAnswer`), not finished and moved.
    let head = GetOnlineFeaturesResponse {
        columns: Vec::new(),
        packed_columns: Vec::new(),
        row_count: n as u32,
        view_versions: compiled.views.iter().map(|v| v.view.version).collect(),
        registry_revision: compiled.revision,
        watermarks: Vec::new(),
    };
    Ok(PackedAnswer::named(head, columns, compiled.names.clone())
        .with_watermarks(std::mem::take(&mut sources.watermarks))
        .recycled_to(compiled.builders.clone()))
}

/// Where each shard of a lookup reads its rows from, in the plan's shard order.
struct ShardSources<'a, 'r> {
    /// The shards read through a snapshot (all of them unless the request reads plain
    /// views only), in shard order.
    reads: Vec<super::as_of::ShardRead<'a, 'r>>,
    /// Per shard: its rows from the lookup cache alone (row `i` of view `v` at
    /// `v * rows + i`), or `None` for a shard in `reads`.
    memory: Vec<Option<Vec<CachedRow>>>,
    /// Per shard: where it is read from and where its keys are.
    shards: Vec<ShardSource>,
    /// Per shard: the watermark its rows reflect (the replica's wire form, shared).
    watermarks: Vec<EncodedWatermark>,
    /// Request row → (shard position, index among the shard's rows).
    locate: Vec<(u32, u32)>,
    /// Without an as-of time: the storage keys of every (shard, view, row), shard by
    /// shard, then view by view, encoded once for the memory attempt and the reads (an
    /// aggregation view's are unused: its tiles have keys of their own).
    keys: Vec<u8>,
    /// `keys` split: key `j` ends at `key_ends[j]`.
    key_ends: Vec<usize>,
}

/// One shard of a lookup.
#[derive(Clone, Copy)]
struct ShardSource {
    shard: ShardId,
    /// Its request rows.
    rows: usize,
    /// Its index in [`ShardSources::reads`], if read through a snapshot.
    read: usize,
    /// The index in `key_ends` of its first key (view 0, row 0).
    first_key: usize,
}

impl<'a, 'r> ShardSources<'a, 'r> {
    /// Each shard's rows and watermark from one state. For a request of plain views
    /// only, a shard whose rows are all in the lookup cache is answered from it without a
    /// snapshot ([`ShardStore::latest_rows_in_memory`]); aggregations and as-of reads
    /// need one.
    fn open(plan: &'r LookupPlan, replicas: &'a [Reader]) -> Result<Self, ExecError> {
        let compiled = &plan.compiled;
        let plain =
            plan.as_of.is_none() && compiled.views.iter().all(|v| v.view.aggregation.is_none());
        let count = plan.by_shard.len();
        let mut out = ShardSources {
            reads: Vec::with_capacity(count),
            memory: Vec::with_capacity(count),
            shards: Vec::with_capacity(count),
            watermarks: Vec::with_capacity(count),
            locate: vec![(0u32, 0u32); plan.key_count()],
            keys: Vec::new(),
            key_ends: Vec::new(),
        };
        for (si, ((shard, rows), store)) in plan.by_shard.iter().zip(replicas).enumerate() {
            for (i, &row) in rows.iter().enumerate() {
                out.locate[row as usize] = (si as u32, i as u32);
            }
            let first_key = out.key_ends.len();
            if plan.as_of.is_none() {
                for vp in &compiled.views {
                    row_keys(plan, vp, rows, &mut out.keys, &mut out.key_ends);
                }
            }
            out.shards.push(ShardSource {
                shard: *shard,
                rows: rows.len(),
                read: out.reads.len(),
                first_key,
            });
            if plain {
                let all = out.keys_between(first_key, out.key_ends.len());
                if let Some((wm, cached)) = store.latest_rows_in_memory(&all) {
                    out.watermarks.push(wm.to_wire(shard.0));
                    out.memory.push(Some(cached));
                    continue;
                }
            }
            // Rows and watermark from one snapshot: the watermark reported is exactly the
            // state the rows reflect, so a client demanding it elsewhere never reads older.
            let read = store.consistent_read();
            let wm = read
                .watermark()
                .map_err(|e| ServeError::Storage(e.to_string()))?;
            out.watermarks.push(wm.to_wire(shard.0));
            out.memory.push(None);
            out.reads.push((*shard, rows, read));
        }
        Ok(out)
    }

    /// Keys `from..to` of `self.keys`.
    fn keys_between(&self, from: usize, to: usize) -> Vec<&[u8]> {
        let start = if from == 0 {
            0
        } else {
            self.key_ends[from - 1]
        };
        split_keys(&self.keys, start, &self.key_ends[from..to])
    }

    /// Appends plain view `v`'s answer for every request row to `columns`: rows from
    /// memory as they are, the others by one batched read per shard read through a
    /// snapshot.
    fn fill_plain_view(
        &self,
        plan: &LookupPlan,
        v: usize,
        now_micros: i64,
        mode: ReadMode,
        columns: &mut [ColumnBuilder],
    ) -> Result<(), ExecError> {
        let vp = &plan.compiled.views[v];
        // Pinned values stay valid while `self.reads` lives.
        let fetched: Vec<Vec<Result<Option<RowBytes<'_>>, rocksdb::Error>>> = self
            .shards
            .iter()
            .zip(&self.memory)
            .filter(|(_, m)| m.is_none())
            .map(|(s, _)| {
                let (_, _, read) = &self.reads[s.read];
                let from = s.first_key + v * s.rows;
                let keys = self.keys_between(from, from + s.rows);
                read.get_latest_rows(&keys, mode == ReadMode::CachedOnly)
            })
            .collect();
        let rows = self.locate.iter().map(|&(si, i)| {
            let (si, i) = (si as usize, i as usize);
            let s = self.shards[si];
            let value = match &self.memory[si] {
                Some(cached) => Some(&*cached[v * s.rows + i]),
                None => match &fetched[s.read][i] {
                    Ok(v) => v.as_deref(),
                    Err(e) => return Err(read_error(s.shard, e.clone())),
                },
            };
            Ok((s.shard, value))
        });
        fill_rows(vp, rows, now_micros, columns)
    }
}

/// Appends the storage keys of `rows` (request rows of one shard) in view `vp` to `buf`,
/// each one's end to `ends`.
fn row_keys(
    plan: &LookupPlan,
    vp: &super::plan::ViewPlan,
    rows: &[u32],
    buf: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    for &row in rows {
        keys::encode_row_key(&vp.view.name, vp.view.version, plan.key(row as usize), buf);
        ends.push(buf.len());
    }
}

/// The keys `buf[start..ends[0]]`, `buf[ends[0]..ends[1]]`, … as slices.
pub(super) fn split_keys<'k>(buf: &'k [u8], mut start: usize, ends: &[usize]) -> Vec<&'k [u8]> {
    ends.iter()
        .map(|&end| {
            let k = &buf[start..end];
            start = end;
            k
        })
        .collect()
}

/// A failed read: [`ExecError::NeedsIo`] for a cached-only read that needs the disk.
pub(super) fn read_error(shard: ShardId, e: rocksdb::Error) -> ExecError {
    if e.kind() == rocksdb::ErrorKind::Incomplete {
        ExecError::NeedsIo
    } else {
        ServeError::Storage(format!("shard {shard}: {e}")).into()
    }
}

/// The CELLS encoding of a PACKED response (a `Value` message per cell).
pub fn into_cells(mut resp: GetOnlineFeaturesResponse) -> GetOnlineFeaturesResponse {
    resp.columns = resp
        .packed_columns
        .drain(..)
        .map(|c| c.to_cells())
        .collect();
    resp
}

mod fill;
#[cfg(test)]
mod fill_tests;
#[cfg(test)]
mod tests;
mod tiles;

pub(in crate::serve) use fill::fill_row;
use fill::fill_rows;
pub(super) use tiles::AggregateFill;
