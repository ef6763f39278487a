//! A lookup through the row cache: probe every distinct key, fetch the misses (one
//! flight per key across concurrent lookups), make sure the rows agree on column layout
//! and view versions, and assemble the result in request order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use metrics::counter;
use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::{FeatureStatus, PackedColumn};

use super::{CachedRow, Layout, RowCache, Shape, row};
use crate::batch::Call;
use crate::client::Inner;
use crate::error::ClientError;
use crate::lookup::{Lookup, LookupResult, malformed, packed_columns};
use crate::metrics as m;
use crate::router::{ShardedBatch, key_bytes, shard_batch};
use crate::shard_map_cache::RoutingTable;
use crate::watermark::Watermarks;

/// The distinct keys of a lookup, split by shard as any lookup is (`shard_batch`), with
/// each key's bytes (its cache key) and shard.
struct Keys<'k> {
    batch: ShardedBatch<'k>,
    bytes: Vec<Vec<u8>>,
    shard: Vec<u32>,
    /// The distinct shards, ascending.
    shards: Vec<u32>,
}

impl Keys<'_> {
    fn new<'k>(table: &RoutingTable, lookup: &'k Lookup) -> Keys<'k> {
        let batch = shard_batch(table, &lookup.keys);
        let bytes = batch.unique.iter().map(|k| key_bytes(k)).collect();
        let mut shard = vec![0; batch.unique.len()];
        for (s, us) in &batch.by_shard {
            for &u in us {
                shard[u as usize] = *s;
            }
        }
        Keys {
            shards: batch.by_shard.keys().copied().collect(),
            batch,
            bytes,
            shard,
        }
    }
}

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Looks `lookup` up through `cache` (its shape is `shape`).
pub(crate) async fn lookup(
    inner: &Inner,
    cache: &RowCache,
    lookup: &Lookup,
    shape: Arc<Shape>,
) -> Result<LookupResult, ClientError> {
    let deadline = Instant::now() + lookup.deadline.unwrap_or(inner.config.deadline);
    let keys = Keys::new(&inner.map.current(), lookup);
    let mut floor = inner
        .session
        .floors(keys.shards.iter().copied(), &lookup.min_watermarks);
    cache.raise_to_pushes(&mut floor, &keys.shards);
    let mut rows: Vec<Option<Arc<CachedRow>>> = vec![None; keys.bytes.len()];
    let misses = probe(
        inner,
        cache,
        &shape,
        &keys,
        &floor,
        &mut rows,
        0..keys.bytes.len(),
        true,
    );
    if !misses.is_empty() {
        let prefix = shape.prefix();
        let cache_keys: Vec<Vec<u8>> = misses
            .iter()
            .map(|&u| [&prefix[..], &keys.bytes[u]].concat())
            .collect();
        let (lead, follow, led) = cache.flights.claim(
            misses
                .iter()
                .zip(&cache_keys)
                .map(|(&u, k)| (u, k.as_slice())),
        );
        if !follow.is_empty() {
            inner
                .stats
                .cache_coalesced
                .fetch_add(follow.len() as u64, Ordering::Relaxed);
            counter!(m::CACHE_COALESCED).increment(follow.len() as u64);
        }
        let followed: Vec<usize> = follow.iter().map(|(u, _)| *u).collect();
        let leading = async {
            // The flights end as soon as their rows are in: a lookup following another's
            // flight while leading one the other follows must not wait for itself.
            let r = fetch(inner, cache, lookup, &shape, &keys, &lead, deadline, true).await;
            drop(led);
            r
        };
        let following = tokio::time::timeout_at(
            deadline.into(),
            join_all(follow.into_iter().map(|(_, f)| f.done())),
        );
        let (led_rows, waited) = tokio::join!(leading, following);
        for (u, r) in lead.iter().zip(led_rows?) {
            rows[*u] = Some(r);
        }
        if waited.is_err() {
            return Err(ClientError::DeadlineExceeded {
                deadline: lookup.deadline.unwrap_or(inner.config.deadline),
                last: None,
            });
        }
        let left = probe(
            inner,
            cache,
            &shape,
            &keys,
            &floor,
            &mut rows,
            followed.into_iter(),
            // Counted as misses already (coalesced): not counted twice.
            false,
        );
        if !left.is_empty() {
            let got = fetch(inner, cache, lookup, &shape, &keys, &left, deadline, true).await?;
            for (u, r) in left.iter().zip(got) {
                rows[*u] = Some(r);
            }
        }
    }
    // A lookup served wholly from the cache never waits on I/O: spend the task's
    // cooperative budget, so a caller looping on hot keys still lets its runtime's other
    // tasks (timers, the map watcher) run.
    tokio::task::consume_budget().await;
    let mut rows: Vec<Arc<CachedRow>> = rows
        .into_iter()
        .map(|r| r.ok_or_else(|| malformed("a key got no row")))
        .collect::<Result<_, _>>()?;
    // Rows cached under an older layout or older view versions than rows fetched just now
    // are fetched again (once): one result never mixes them.
    let stale = stale_rows(&rows);
    if !stale.is_empty() {
        let got = fetch(inner, cache, lookup, &shape, &keys, &stale, deadline, false).await?;
        for (u, r) in stale.iter().zip(got) {
            rows[*u] = r;
        }
        if rows.iter().any(|r| r.layout.id != rows[0].layout.id) {
            return Err(ClientError::Rpc(tonic::Status::unavailable(
                "replicas answered with different column layouts (a registry change is in progress); retry",
            )));
        }
    }
    assemble(&rows, &keys, lookup.event_times)
}

/// Probes `candidates`; valid rows go into `rows`, the others are returned (misses).
/// With `count`, hits and misses go to the stats and metrics.
#[allow(clippy::too_many_arguments)] // the pieces of one call, borrowed
fn probe(
    inner: &Inner,
    cache: &RowCache,
    shape: &Shape,
    keys: &Keys<'_>,
    floor: &Watermarks,
    rows: &mut [Option<Arc<CachedRow>>],
    candidates: impl Iterator<Item = usize>,
    count: bool,
) -> Vec<usize> {
    let (layout, versions) = {
        let st = shape.state();
        (st.layout.as_ref().map_or(0, |l| l.id), st.versions.clone())
    };
    let now = Instant::now();
    let mut scratch = Vec::with_capacity(64);
    let mut misses = Vec::new();
    let (mut hits, mut absent, mut expired, mut version, mut behind) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for u in candidates {
        scratch.clear();
        scratch.extend_from_slice(&shape.prefix());
        scratch.extend_from_slice(&keys.bytes[u]);
        let counter = match cache.store.get(&scratch) {
            None => &mut absent,
            Some(r) if now >= r.expires => &mut expired,
            Some(r) if r.layout.id != layout || r.versions != versions => &mut version,
            Some(r) if !floor.covers(r.shard, &r.offsets) => &mut behind,
            Some(r) => {
                rows[u] = Some(r);
                hits += 1;
                continue;
            }
        };
        *counter += 1;
        misses.push(u);
    }
    if !count {
        return misses;
    }
    inner.stats.cache_hits.fetch_add(hits, Ordering::Relaxed);
    inner
        .stats
        .cache_misses
        .fetch_add(misses.len() as u64, Ordering::Relaxed);
    if hits > 0 {
        counter!(m::CACHE_HITS).increment(hits);
    }
    for (reason, n) in [
        ("absent", absent),
        ("expired", expired),
        ("version", version),
        ("behind", behind),
    ] {
        if n > 0 {
            counter!(m::CACHE_MISSES, "reason" => reason).increment(n);
        }
    }
    misses
}

/// Fetches the distinct keys `which` from replicas; returns their rows in that order and,
/// with `fill`, caches those read at the newest versions seen.
#[allow(clippy::too_many_arguments)] // the pieces of one call, borrowed
async fn fetch(
    inner: &Inner,
    cache: &RowCache,
    lookup: &Lookup,
    shape: &Shape,
    keys: &Keys<'_>,
    which: &[usize],
    deadline: Instant,
    fill: bool,
) -> Result<Vec<Arc<CachedRow>>, ClientError> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ClientError::DeadlineExceeded {
            deadline: lookup.deadline.unwrap_or(inner.config.deadline),
            last: None,
        });
    }
    // The feature list is cloned per fetch (a miss), not per key.
    let sub = Lookup {
        features: lookup.features.clone(),
        feature_service: lookup.feature_service.clone(),
        keys: which
            .iter()
            .map(|&u| keys.batch.unique[u].clone())
            .collect(),
        min_watermarks: lookup.min_watermarks.clone(),
        deadline: Some(remaining),
        event_times: shape.needs_times(),
        bypass_cache: true,
        // Cached lookups are never as of a time (`Cache::shape`).
        as_of: None,
        keys_by_entity: Vec::new(),
    };
    let parts = Call::new(inner, &sub).run_parts().await?;
    let mut out: Vec<Option<Arc<CachedRow>>> = vec![None; which.len()];
    let prefix = shape.prefix();
    let mut key = Vec::with_capacity(64);
    for (resp, positions) in parts {
        let (current, _) = shape.note_versions(&resp.view_versions, resp.registry_revision);
        let versions: Arc<[u32]> = resp.view_versions.as_slice().into();
        let revision = resp.registry_revision;
        let offsets: HashMap<u32, Arc<BTreeMap<String, i64>>> = resp
            .watermarks
            .iter()
            .map(|w| {
                let o = w.offsets.iter().map(|o| (o.topic.clone(), o.next_offset));
                (w.shard, Arc::new(o.collect()))
            })
            .collect();
        let (cols, n) = packed_columns(resp)?;
        if n != positions.len() {
            return Err(malformed(
                "a sub-response has another row count than keys sent",
            ));
        }
        let layout = shape.layout_for(&cols, &cache.next_layout);
        let (now, now_us) = (Instant::now(), wall_micros());
        for (r, &pos) in positions.iter().enumerate() {
            let u = *which
                .get(pos as usize)
                .ok_or_else(|| malformed("a row maps to no key"))?;
            let mut cells = Vec::with_capacity(cols.len() * 18);
            row::encode(&cols, r, &mut cells);
            let row = Arc::new(CachedRow {
                cells: cells.into(),
                shard: keys.shard[u],
                offsets: offsets.get(&keys.shard[u]).cloned().unwrap_or_default(),
                versions: versions.clone(),
                revision,
                layout: layout.clone(),
                expires: now + expiry(shape.ttl, now_us, &layout, &cols, r),
            });
            if fill && current && row.expires > now {
                key.clear();
                key.extend_from_slice(&prefix);
                key.extend_from_slice(&keys.bytes[u]);
                cache.store.insert(&key, row.clone());
            }
            out[pos as usize] = Some(row);
        }
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| malformed("a key got no row")))
        .collect()
}

/// How long row `r` may be served: the cache TTL, cut to when its first value expires
/// on the node (event time + the view's TTL).
fn expiry(
    ttl: Duration,
    now_us: i64,
    layout: &Layout,
    cols: &[PackedColumn],
    r: usize,
) -> Duration {
    let mut left = ttl;
    for (c, view_ttl) in cols.iter().zip(&layout.ttls) {
        if let Some(t) = view_ttl
            && c.status_at(r) == FeatureStatus::Present
        {
            let until = c.event_time_at(r).saturating_add(*t).saturating_sub(now_us);
            left = left.min(Duration::from_micros(until.max(0) as u64));
        }
    }
    left
}

/// Rows whose layout or view versions are older than the newest among `rows`.
fn stale_rows(rows: &[Arc<CachedRow>]) -> Vec<usize> {
    let Some(newest) = rows.iter().max_by_key(|r| r.layout.id) else {
        return Vec::new();
    };
    let layout = newest.layout.id;
    // The versions of the newest registry revision; without revisions, the newest of each
    // view (see `Shape::note_versions`).
    let same_layout = rows.iter().filter(|r| r.layout.id == layout);
    let versions: Vec<u32> = match same_layout
        .clone()
        .filter(|r| r.revision > 0)
        .max_by_key(|r| r.revision)
    {
        Some(r) => r.versions.to_vec(),
        None => {
            let mut versions: Vec<u32> = newest.versions.to_vec();
            for r in same_layout {
                for (v, x) in versions.iter_mut().zip(r.versions.iter()) {
                    *v = (*v).max(*x);
                }
            }
            versions
        }
    };
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.layout.id != layout || *r.versions != versions[..])
        .map(|(u, _)| u)
        .collect()
}

/// The result in request order from one row per distinct key.
fn assemble(
    rows: &[Arc<CachedRow>],
    keys: &Keys<'_>,
    event_times: bool,
) -> Result<LookupResult, ClientError> {
    let n = keys.batch.row_to_unique.len();
    let Some(first) = rows.first() else {
        return Ok(LookupResult::from_columns(Vec::new(), n, Watermarks::new()));
    };
    let layout = &first.layout;
    let mut builders: Vec<ColumnBuilder> = layout
        .names
        .iter()
        .zip(&layout.types)
        .map(|(name, ty)| ColumnBuilder::new(name.clone(), *ty, n, event_times))
        .collect();
    for &u in &keys.batch.row_to_unique {
        if !row::decode_into(&rows[u as usize].cells, &mut builders) {
            return Err(malformed("a cached row does not fit the result's columns"));
        }
    }
    let mut watermarks = Watermarks::new();
    // Rows of one answer share their offsets: each is merged once.
    let mut seen: std::collections::HashSet<*const BTreeMap<String, i64>> = Default::default();
    for r in rows {
        if seen.insert(Arc::as_ptr(&r.offsets)) {
            watermarks.raise_shard(r.shard, &r.offsets);
        }
    }
    // Rows are served only at the shape's current versions: the first row's are all's.
    let versions = rows
        .first()
        .map(|r| r.versions.to_vec())
        .unwrap_or_default();
    Ok(LookupResult::from_columns(
        builders.into_iter().map(ColumnBuilder::finish).collect(),
        n,
        watermarks,
    )
    .with_view_versions(versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layout: u64, versions: &[u32]) -> Arc<CachedRow> {
        row_at(layout, 0, versions)
    }

    fn row_at(layout: u64, revision: u64, versions: &[u32]) -> Arc<CachedRow> {
        let mut r = CachedRow::for_test(Vec::new());
        r.versions = versions.into();
        r.revision = revision;
        r.layout = Arc::new(Layout {
            id: layout,
            names: Vec::new(),
            types: Vec::new(),
            ttls: Vec::new(),
        });
        Arc::new(r)
    }

    #[test]
    fn rows_older_than_the_newest_in_the_result_are_stale() {
        assert!(stale_rows(&[]).is_empty());
        assert!(stale_rows(&[row(1, &[2, 1]), row(1, &[2, 1])]).is_empty());
        assert_eq!(
            stale_rows(&[row(1, &[2, 1]), row(1, &[3, 1]), row(1, &[2, 1])]),
            vec![0, 2]
        );
        // A newer layout wins whatever the versions; rows of another layout are stale.
        assert_eq!(stale_rows(&[row(2, &[1]), row(1, &[5, 5])]), vec![1]);
        // Within a layout, the newest of each view: a row behind on any view is stale.
        assert_eq!(stale_rows(&[row(1, &[2, 1]), row(1, &[1, 2])]), vec![0, 1]);
        // With revisions, the newest registry's versions, even a rolled-back lower one.
        assert_eq!(
            stale_rows(&[
                row_at(1, 4, &[2, 1]),
                row_at(1, 5, &[1, 1]),
                row_at(1, 4, &[2, 1])
            ]),
            vec![0, 2]
        );
    }
}
