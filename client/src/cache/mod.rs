//! The client-side row cache (off by default; [`crate::config::CacheConfig`]).
//!
//! A cached row is one entity key's answer to one *shape* (a feature list or service,
//! with or without event times), copied out of the response it arrived in together with
//! what makes it safe to serve again:
//!
//! - the **offsets** of its shard at which the replica read it. A row is served only if
//!   they reach the lookup's floor for that shard — the session's monotonic-read floor,
//!   the caller's `min_watermarks`, and the offsets of every push made through this
//!   client — so monotonic reads and read-your-writes hold exactly as without the cache:
//!   a row read before a newer state of its shard was seen is a miss, never an answer.
//!   (Under steady ingestion the floor moves with every answer, so hot rows of a busy
//!   shard are refetched about once per new watermark the client sees.)
//! - the **versions** of the views it was read at: a row of an older version than the
//!   newest this client has seen for its shape is a miss, and one result never mixes rows
//!   of different versions or column layouts.
//! - an **expiry**: the cache TTL, and for a view with a TTL the time its value expires
//!   on the node (event time + TTL: rows are then fetched with event times), whichever
//!   comes first.
//!
//! Pushes through the client drop their keys' rows. Concurrent misses of one key send one
//! sub-request (single flight, `flight.rs`). The store (`store.rs`) is bounded in rows and
//! bytes (CLOCK eviction). Metrics: `quiver_client_cache_{hits,misses,evictions,coalesced}_total`,
//! `quiver_client_cache_{entries,bytes}`.

mod flight;
mod lookup;
mod row;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_proto::v1::{FeatureType, PackedColumn};

use crate::config::CacheConfig;
use crate::lookup::Lookup;
use crate::router::key_bytes;
use crate::schema::ClientSchema;
use crate::watermark::Watermarks;

pub(crate) use lookup::lookup;
pub use store::Usage;

/// Shapes kept at most; lookups of further shapes bypass the cache.
const MAX_SHAPES: usize = 1024;

/// One cached row (see the module documentation).
pub(crate) struct CachedRow {
    cells: Box<[u8]>,
    shard: u32,
    offsets: Arc<BTreeMap<String, i64>>,
    versions: Arc<[u32]>,
    /// The registry revision the answer was planned on (orders `versions`; 0: unknown).
    revision: u64,
    layout: Arc<Layout>,
    expires: Instant,
}

impl CachedRow {
    /// Bytes of the encoded cells.
    pub(crate) fn size(&self) -> usize {
        self.cells.len()
    }

    #[cfg(test)]
    pub(crate) fn for_test(cells: Vec<u8>) -> CachedRow {
        CachedRow {
            cells: cells.into(),
            shard: 0,
            offsets: Arc::default(),
            versions: Arc::new([]),
            revision: 0,
            layout: Arc::new(Layout {
                id: 0,
                names: Vec::new(),
                types: Vec::new(),
                ttls: Vec::new(),
            }),
            expires: Instant::now(),
        }
    }
}

/// Column names and types of a shape's answers; `id` changes when they do.
pub(crate) struct Layout {
    id: u64,
    names: Vec<String>,
    types: Vec<FeatureType>,
    /// The TTL (µs) of each column's view, if it has one.
    ttls: Vec<Option<i64>>,
}

impl Layout {
    fn matches(&self, cols: &[PackedColumn]) -> bool {
        self.names.len() == cols.len()
            && cols
                .iter()
                .zip(self.names.iter().zip(&self.types))
                .all(|(c, (n, t))| c.name == *n && c.feature_type() == *t)
    }
}

#[derive(Default)]
struct ShapeState {
    layout: Option<Arc<Layout>>,
    /// The newest view versions seen for this shape.
    versions: Arc<[u32]>,
    /// The registry revision they were read at (0: from nodes without revisions).
    revision: u64,
}

/// A feature list (or service) as looked up, with its cache settings.
pub(crate) struct Shape {
    id: u32,
    features: Vec<String>,
    service: String,
    event_times: bool,
    /// The views read and their TTL (from the schema when the shape was made).
    view_ttls: Vec<(String, Option<Duration>)>,
    /// The cache TTL of the shape's rows.
    ttl: Duration,
    state: Mutex<ShapeState>,
}

impl Shape {
    /// Whether rows must be fetched with event times (to know when values expire).
    fn needs_times(&self) -> bool {
        self.event_times || self.view_ttls.iter().any(|(_, t)| t.is_some())
    }

    fn reads_view(&self, view: &str) -> bool {
        self.view_ttls.iter().any(|(v, _)| v == view)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ShapeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache key prefix of this shape's rows.
    fn prefix(&self) -> [u8; 4] {
        self.id.to_le_bytes()
    }

    /// The layout of `cols` (the current one if it matches, else a new one).
    fn layout_for(
        &self,
        cols: &[PackedColumn],
        next_id: &std::sync::atomic::AtomicU64,
    ) -> Arc<Layout> {
        let mut st = self.state();
        if let Some(l) = &st.layout
            && l.matches(cols)
        {
            return l.clone();
        }
        let ttl_of = |name: &str| {
            let view = name.split_once(':').map_or(name, |(v, _)| v);
            self.view_ttls
                .iter()
                .find(|(v, _)| v == view)
                .and_then(|(_, t)| *t)
                .map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
        };
        let l = Arc::new(Layout {
            id: next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            names: cols.iter().map(|c| c.name.clone()).collect(),
            types: cols.iter().map(PackedColumn::feature_type).collect(),
            ttls: cols.iter().map(|c| ttl_of(&c.name)).collect(),
        });
        st.layout = Some(l.clone());
        l
    }

    /// Records versions an answer was read at (planned on registry `revision`); whether
    /// they are the newest seen (rows read at older versions are returned to their caller
    /// but not cached). The newest are those of the highest revision — a rollback serves
    /// a lower version number — or, from nodes without revisions, the highest numbers.
    fn note_versions(&self, versions: &[u32], revision: u64) -> (bool, Arc<[u32]>) {
        let mut st = self.state();
        if st.versions.len() != versions.len() {
            // First answer, or the shape now reads other views (a service redefined).
            st.versions = versions.into();
            st.revision = revision;
        } else if revision > 0 || st.revision > 0 {
            if revision > st.revision {
                st.versions = versions.into();
                st.revision = revision;
            }
        } else if versions.iter().zip(st.versions.iter()).any(|(a, b)| a > b) {
            st.versions = versions
                .iter()
                .zip(st.versions.iter())
                .map(|(a, b)| *a.max(b))
                .collect();
        }
        (&*st.versions == versions, st.versions.clone())
    }
}

/// The cache of one client.
pub(crate) struct RowCache {
    config: CacheConfig,
    store: store::Store,
    flights: flight::Flights,
    shapes: Mutex<HashMap<u64, Vec<Arc<Shape>>>>,
    next_shape: std::sync::atomic::AtomicU32,
    next_layout: std::sync::atomic::AtomicU64,
    /// Offsets of the pushes made through this client: rows read below them are misses.
    push_floor: Mutex<Watermarks>,
    hasher: std::collections::hash_map::RandomState,
}

impl RowCache {
    pub(crate) fn new(config: CacheConfig) -> RowCache {
        RowCache {
            store: store::Store::new(config.max_entries, config.max_bytes),
            config,
            flights: flight::Flights::default(),
            shapes: Mutex::new(HashMap::new()),
            next_shape: Default::default(),
            next_layout: std::sync::atomic::AtomicU64::new(1),
            push_floor: Mutex::new(Watermarks::new()),
            hasher: Default::default(),
        }
    }

    /// The shape of `lookup` if its rows may be cached (every view it reads is cached by
    /// the config, and the shape table is not full).
    pub(crate) fn shape(&self, schema: &ClientSchema, lookup: &Lookup) -> Option<Arc<Shape>> {
        if lookup.bypass_cache || lookup.as_of.is_some() {
            // Rows are cached as the latest values; a past time reads history.
            return None;
        }
        let hash = self.hasher.hash_one((
            &lookup.features,
            &lookup.feature_service,
            lookup.event_times,
        ));
        let mut shapes = self.shapes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shapes.get(&hash).and_then(|v| {
            v.iter().find(|s| {
                s.features == lookup.features
                    && s.service == lookup.feature_service
                    && s.event_times == lookup.event_times
            })
        }) {
            return Some(s.clone());
        }
        if shapes.values().map(Vec::len).sum::<usize>() >= MAX_SHAPES {
            return None;
        }
        let view_ttls = schema.views_of(&lookup.features, &lookup.feature_service)?;
        let mut ttl = self.config.ttl;
        for (v, _) in &view_ttls {
            if !self.config.views.is_empty() {
                match self.config.views.get(v) {
                    None => return None,
                    Some(Some(t)) => ttl = ttl.min(*t),
                    Some(None) => {}
                }
            }
        }
        let shape = Arc::new(Shape {
            id: self
                .next_shape
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            features: lookup.features.clone(),
            service: lookup.feature_service.clone(),
            event_times: lookup.event_times,
            view_ttls,
            ttl,
            state: Mutex::default(),
        });
        shapes.entry(hash).or_default().push(shape.clone());
        Some(shape)
    }

    /// After a push of `keys` into `view` that produced `offsets`: drops the keys' rows
    /// and raises the push floor, so no row read before the push is served again.
    pub(crate) fn pushed<'k>(
        &self,
        view: &str,
        keys: impl Iterator<Item = &'k quiver_proto::v1::EntityKey>,
        offsets: &Watermarks,
    ) {
        self.push_floor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge(offsets);
        let shapes: Vec<Arc<Shape>> = self
            .shapes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .filter(|s| s.reads_view(view))
            .cloned()
            .collect();
        if shapes.is_empty() {
            return;
        }
        let mut scratch = Vec::new();
        for k in keys {
            let bytes = key_bytes(k);
            for s in &shapes {
                scratch.clear();
                scratch.extend_from_slice(&s.prefix());
                scratch.extend_from_slice(&bytes);
                self.store.remove(&scratch);
            }
        }
    }

    /// Raises `floor` to the push floor of `shards`.
    fn raise_to_pushes(&self, floor: &mut Watermarks, shards: &[u32]) {
        let pushes = self.push_floor.lock().unwrap_or_else(|p| p.into_inner());
        if pushes.is_empty() {
            return;
        }
        for s in shards {
            if let Some(t) = pushes.shard(*s) {
                floor.raise_shard(*s, t);
            }
        }
    }

    /// Rows and bytes held.
    pub(crate) fn usage(&self) -> store::Usage {
        self.store.usage()
    }

    /// The configured bounds, as the store applies them.
    pub(crate) fn capacity(&self) -> store::Usage {
        self.store.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            id: 1,
            features: vec!["a:x".into(), "b:y".into()],
            service: String::new(),
            event_times: false,
            view_ttls: vec![("a".into(), None), ("b".into(), None)],
            ttl: Duration::from_secs(1),
            state: Mutex::default(),
        }
    }

    impl Shape {
        fn note_versions_old(&self, versions: &[u32]) -> (bool, Arc<[u32]>) {
            self.note_versions(versions, 0)
        }
    }

    #[test]
    fn with_revisions_the_newest_registry_decides_even_a_lower_version() {
        let s = shape();
        assert!(s.note_versions(&[2, 1], 5).0);
        // Rolled back to v1 at revision 6: current, although a lower number.
        assert!(s.note_versions(&[1, 1], 6).0);
        assert!(
            !s.note_versions(&[2, 1], 5).0,
            "a replica that has not applied the rollback is not cached"
        );
        assert_eq!(&*s.note_versions(&[2, 1], 5).1, &[1, 1]);
        assert!(s.note_versions(&[1, 1], 6).0);
    }

    #[test]
    fn versions_only_move_forward_and_older_answers_are_not_current() {
        let s = shape();
        assert!(s.note_versions_old(&[1, 1]).0);
        // One view promoted: the newest seen moves; the old combination is no longer current.
        assert!(s.note_versions_old(&[2, 1]).0);
        assert!(
            !s.note_versions_old(&[1, 1]).0,
            "a lagging replica's answer is not cached"
        );
        assert_eq!(&*s.note_versions_old(&[1, 1]).1, &[2, 1]);
        // Views moving apart (a replica ahead on one, behind on the other): the newest of
        // each, which neither answer is.
        assert!(!s.note_versions_old(&[1, 3]).0);
        assert_eq!(&*s.note_versions_old(&[2, 3]).1, &[2, 3]);
        assert!(s.note_versions_old(&[2, 3]).0);
        // The shape now reads other views (its service was redefined): start over.
        assert!(s.note_versions_old(&[1]).0);
    }
}
