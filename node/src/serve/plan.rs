//! Planning a lookup. A request's feature list (or feature service) compiles once per
//! registry generation into a [`CompiledPlan`] — resolved views, decode slots, response
//! columns with their types — kept in a [`PlanCache`]: a hot request does no string
//! parsing and no registry walk. Per request only the keys are planned: each key's bytes
//! (the Kafka key), its shard, and the minimum watermarks of the shards it reads.
//!
//! A registry change moves the generation, which empties the cache: a retyped feature is
//! never read through a stale plan.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use quiver_proto::lookup_request::{LookupRequest, reference_text};
use quiver_proto::packed::{ColumnPool, PoolBudget};
use quiver_proto::v1::FeatureType as WireType;
use quiver_proto::{Partitioner, ShardId};

use super::ServeError;
use crate::config::Limits;
use crate::registry::model::FeatureType;
use crate::registry::{FeatureView, KeyType, RegistrySnapshot};
use crate::storage::keys;
use crate::storage::row_codec::FixedLayout;

/// The features of one view a plan reads.
#[derive(Debug)]
pub struct ViewPlan {
    /// The view (its serving version at compile time).
    pub view: Arc<FeatureView>,
    /// `wanted[feature index]`: whether the plan reads the feature.
    pub wanted: Vec<bool>,
    /// Every response column this view fills, in request order, for rows that are missing
    /// or expired.
    pub columns: Vec<usize>,
    /// What a present row's decode does, in ascending feature order: read feature
    /// `feature`, push it into column `column` (a feature named twice has two steps, next
    /// to each other, and is read once). Flat, so a row's decode walks one slice.
    pub steps: Vec<DecodeStep>,
    /// The view's TTL in µs.
    pub ttl_micros: Option<i64>,
    /// Where each feature of the view's rows sits when every feature is present, if all
    /// are fixed-width (bool, float64): such rows are read at offsets, column by column.
    pub fixed: Option<FixedLayout>,
}

/// One column's value from one stored feature (see [`ViewPlan::steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStep {
    /// Position of the feature in the view's rows.
    pub feature: usize,
    /// Response column the value goes to.
    pub column: usize,
}

/// A resolved feature list: what every request naming it reads.
#[derive(Debug)]
pub struct CompiledPlan {
    /// Registry generation it was compiled against.
    pub generation: u64,
    /// That registry's cluster-wide revision (answers carry it).
    pub revision: u64,
    /// The entity all views are keyed by, and its key type.
    pub entity: String,
    /// Key type of the entity.
    pub key_type: KeyType,
    /// Response columns' types, in request order.
    pub types: Vec<WireType>,
    /// Response columns' names (`view:feature`, or `view@version:feature` when pinned),
    /// in request order, shared by every answer of the plan (a response names its
    /// columns from this list instead of cloning a `String` per column per request).
    pub names: Arc<[String]>,
    /// Views read, in first-use order.
    pub views: Vec<ViewPlan>,
    /// Column builders of this plan's answers, kept for the next request (budgeted by
    /// the [`PlanCache`]; a plan compiled outside it keeps none).
    pub builders: Arc<ColumnPool>,
}

impl CompiledPlan {
    /// The views the plan reads (for view grants).
    pub fn view_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.views.iter().map(|v| v.view.name.as_str())
    }
}

/// The wire type of a registry feature type.
pub fn wire_type(t: FeatureType) -> WireType {
    match t {
        FeatureType::Bool => WireType::Bool,
        FeatureType::Int64 => WireType::Int64,
        FeatureType::Float64 => WireType::Float64,
        FeatureType::String => WireType::String,
        FeatureType::Bytes => WireType::Bytes,
        FeatureType::Float32Vector => WireType::Float32Vector,
        FeatureType::Int64List => WireType::Int64List,
        FeatureType::Float64List => WireType::Float64List,
        FeatureType::StringList => WireType::StringList,
    }
}

/// Resolves the request's `features` or `feature_service`: each (view version, feature
/// index, whether the reference pinned the version).
fn resolve(
    req: &LookupRequest,
    registry: &RegistrySnapshot,
    limits: &Limits,
) -> Result<Vec<(Arc<FeatureView>, usize, bool)>, ServeError> {
    let invalid = ServeError::InvalidArgument;
    let mut wanted: Vec<(Arc<FeatureView>, usize, bool)> = Vec::new();
    match (req.features.is_empty(), req.feature_service.is_empty()) {
        (true, true) => {
            return Err(invalid(
                "request names no features: set `features` or `feature_service`".into(),
            ));
        }
        (false, false) => {
            return Err(invalid(
                "set either `features` or `feature_service`, not both".into(),
            ));
        }
        (false, true) => {
            if req.features.len() > limits.max_features_per_request {
                return Err(invalid(format!(
                    "{} feature references exceed the limit max_features_per_request = {}",
                    req.features.len(),
                    limits.max_features_per_request
                )));
            }
            for (i, r) in req.features.iter().enumerate() {
                let r = reference_text(i, r).map_err(|e| invalid(e.to_string()))?;
                if !r.contains(':') {
                    return Err(invalid(format!(
                        "feature reference {r:?} must look like \"view:feature\" or \"view:*\""
                    )));
                }
                let (resolved, pinned) = crate::registry::resolve_read_reference(registry, r)
                    .map_err(ServeError::NotFound)?;
                wanted.extend(resolved.into_iter().map(|(v, i)| (v.clone(), i, pinned)));
            }
        }
        (true, false) => {
            let svc = registry
                .feature_services
                .get(&req.feature_service)
                .ok_or_else(|| {
                    ServeError::NotFound(format!(
                        "feature service {:?} is not registered",
                        req.feature_service
                    ))
                })?;
            for (v, f) in &svc.features {
                let view = registry
                    .views
                    .get(v)
                    .ok_or_else(|| ServeError::NotFound(format!("view {v:?} is not registered")))?;
                let idx = view.feature_index(f).ok_or_else(|| {
                    ServeError::NotFound(format!("view {v:?} has no feature {f:?}"))
                })?;
                wanted.push((view.clone(), idx, false));
            }
        }
    }
    if wanted.len() > limits.max_features_per_request {
        return Err(invalid(format!(
            "request expands to {} features, exceeding the limit max_features_per_request = {}",
            wanted.len(),
            limits.max_features_per_request
        )));
    }
    Ok(wanted)
}

/// Compiles the feature list of `req` against `registry`.
///
/// # Errors
/// [`ServeError::InvalidArgument`] for a malformed list or exceeded limit,
/// [`ServeError::NotFound`] for unknown views, features and feature services.
pub fn compile(
    req: &LookupRequest,
    registry: &RegistrySnapshot,
    limits: &Limits,
) -> Result<CompiledPlan, ServeError> {
    let wanted = resolve(req, registry, limits)?;
    let entity = wanted[0].0.entity.clone();
    if let Some((v, _, _)) = wanted.iter().find(|(v, _, _)| v.entity != entity) {
        return Err(ServeError::InvalidArgument(format!(
            "all features of one request must share an entity: view {:?} is keyed by {:?}, view {:?} by {:?} (the smart client, quiverctl and the Python SDK split such a lookup per entity: keys per entity)",
            wanted[0].0.name, entity, v.name, v.entity
        )));
    }
    let key_type = registry
        .entities
        .get(&entity)
        .map(|e| e.key_type)
        .ok_or_else(|| ServeError::NotFound(format!("entity {entity:?} is not registered")))?;
    let mut views: Vec<ViewPlan> = Vec::new();
    let mut types = Vec::with_capacity(wanted.len());
    let mut names = Vec::with_capacity(wanted.len());
    for (col, (view, idx, pinned)) in wanted.into_iter().enumerate() {
        let feature = &view.features[idx];
        names.push(if pinned {
            format!("{}@{}:{}", view.name, view.version, feature.name)
        } else {
            format!("{}:{}", view.name, feature.name)
        });
        types.push(wire_type(feature.value_type));
        let vp = match views.iter().position(|p| Arc::ptr_eq(&p.view, &view)) {
            Some(i) => &mut views[i],
            None => {
                let n = view.features.len();
                let ttl_micros = view
                    .ttl
                    .map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
                let fixed = FixedLayout::of(view.features.iter().map(|f| f.value_type));
                views.push(ViewPlan {
                    view,
                    wanted: vec![false; n],
                    columns: Vec::new(),
                    steps: Vec::new(),
                    ttl_micros,
                    fixed,
                });
                views.last_mut().expect("just pushed")
            }
        };
        vp.wanted[idx] = true;
        vp.steps.push(DecodeStep {
            feature: idx,
            column: col,
        });
        vp.columns.push(col);
    }
    // Feature order; the sort is stable, so a feature named twice keeps its columns in
    // request order, next to each other.
    for vp in &mut views {
        vp.steps.sort_by_key(|s| s.feature);
    }
    Ok(CompiledPlan {
        generation: registry.generation,
        revision: registry.revision,
        entity,
        key_type,
        types,
        names: names.into(),
        views,
        builders: Arc::default(),
    })
}

/// Most feature lists cached per generation; past it the cache starts over (a bound on
/// memory against a caller inventing feature lists, not an expected steady state).
const PLAN_CACHE_ENTRIES: usize = 4096;

#[derive(Default)]
struct CacheInner {
    generation: u64,
    /// Keyed by the references as field 1 encodes them, one slice
    /// ([`quiver_proto::lookup_request::FeatureRefs::encoded`]): a hit hashes and
    /// compares those bytes, with no UTF-8 check and no `String`. foldhash, not SipHash: every hit hashes the whole list (~600 bytes for
    /// a 1 × 50 lookup); its per-process random seed keeps crafted collisions
    /// impractical, and entries are bounded by [`PLAN_CACHE_ENTRIES`] either way.
    by_features: HashMap<Box<[u8]>, Arc<CompiledPlan>, foldhash::fast::RandomState>,
    by_service: HashMap<String, Arc<CompiledPlan>>,
}

/// Bytes all plans' [`ColumnPool`]s may keep together: room for ~800 sets of 1 × 50
/// builders, far more than the requests in flight on a node.
const BUILDER_POOL_BYTES: usize = 16 << 20;

/// Compiled plans by (registry generation, feature list or feature service).
pub struct PlanCache {
    inner: RwLock<CacheInner>,
    /// Shared by the builder pools of the cached plans.
    builder_budget: Arc<PoolBudget>,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache {
            inner: RwLock::default(),
            builder_budget: Arc::new(PoolBudget::new(BUILDER_POOL_BYTES)),
        }
    }
}

impl PlanCache {
    /// The plan of `req`'s feature list under `registry`, compiled at most once per
    /// generation. Failures are not cached.
    ///
    /// # Errors
    /// As [`compile`].
    pub fn plan(
        &self,
        req: &LookupRequest,
        registry: &RegistrySnapshot,
        limits: &Limits,
    ) -> Result<Arc<CompiledPlan>, ServeError> {
        {
            let c = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if c.generation == registry.generation {
                let hit = if req.feature_service.is_empty() {
                    c.by_features.get(req.features.encoded())
                } else if req.features.is_empty() {
                    c.by_service.get(&req.feature_service)
                } else {
                    None
                };
                if let Some(p) = hit {
                    return Ok(p.clone());
                }
            }
        }
        let mut compiled = compile(req, registry, limits)?;
        compiled.builders = Arc::new(ColumnPool::new(self.builder_budget.clone()));
        let plan = Arc::new(compiled);
        let mut c = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if c.generation != registry.generation
            || c.by_features.len() + c.by_service.len() >= PLAN_CACHE_ENTRIES
        {
            *c = CacheInner {
                generation: registry.generation,
                ..Default::default()
            };
        }
        if req.feature_service.is_empty() {
            c.by_features
                .insert(req.features.encoded().into(), plan.clone());
        } else {
            c.by_service
                .insert(req.feature_service.clone(), plan.clone());
        }
        Ok(plan)
    }

    /// Cached plans (for tests and metrics).
    pub fn len(&self) -> usize {
        let c = self.inner.read().unwrap_or_else(|p| p.into_inner());
        c.by_features.len() + c.by_service.len()
    }

    /// Bytes the cached plans' builder pools keep now.
    pub fn builder_pool_bytes(&self) -> usize {
        self.builder_budget.used()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request planned for execution: its compiled plan and its keys.
#[derive(Debug)]
pub struct LookupPlan {
    /// The compiled feature list.
    pub compiled: Arc<CompiledPlan>,
    /// Entity key bytes of every row, concatenated; row `i` is
    /// `key_bytes[key_ends[i-1]..key_ends[i]]`.
    key_bytes: Vec<u8>,
    key_ends: Vec<u32>,
    /// Row indexes per shard, in request order.
    pub by_shard: BTreeMap<ShardId, Vec<u32>>,
    /// Whether the response carries event times.
    pub event_times: bool,
    /// Set for an as-of lookup.
    pub as_of: Option<AsOfPlan>,
}

/// The times an as-of lookup reads at.
#[derive(Debug, Clone)]
pub struct AsOfPlan {
    /// T per row, µs.
    pub times: Vec<i64>,
    /// Which version answers.
    pub rule: crate::storage::history::AsOfRule,
}

impl AsOfPlan {
    /// Checks that every view of `compiled` can answer as of every time at wall-clock
    /// `now_micros`: it keeps history, and the oldest T is within its retention — for an
    /// aggregation view, the start of every wanted window at the oldest T (a feature
    /// without a window would need every event ever, so it cannot answer as of a time).
    ///
    /// # Errors
    /// [`ServeError::InvalidArgument`] naming the view (or feature) and its retention.
    pub fn check(&self, compiled: &CompiledPlan, now_micros: i64) -> Result<(), ServeError> {
        let oldest = self.times.iter().copied().min().unwrap_or(now_micros);
        for vp in &compiled.views {
            let v = &vp.view;
            let Some(history) = v.history else {
                return Err(ServeError::InvalidArgument(format!(
                    "view {:?} keeps no history, so it cannot answer as of a time (set `history` in its definition, e.g. history = \"30d\")",
                    v.name
                )));
            };
            let retention = i64::try_from(history.as_micros()).unwrap_or(i64::MAX);
            let kept_from = now_micros.saturating_sub(retention);
            let too_old = |needs_from: i64, what: String| {
                ServeError::InvalidArgument(format!(
                    "as-of time {} is older than the history view {:?} keeps ({}){what}: it can answer as of {} or later",
                    crate::serve::as_of::rfc3339(oldest),
                    v.name,
                    humantime::format_duration(history),
                    crate::serve::as_of::rfc3339(
                        kept_from.saturating_add(oldest.saturating_sub(needs_from))
                    ),
                ))
            };
            let Some(agg) = &v.aggregation else {
                if oldest < kept_from {
                    return Err(too_old(oldest, String::new()));
                }
                continue;
            };
            for (fi, &wanted) in vp.wanted.iter().enumerate() {
                let f = &agg.features[fi];
                if !wanted {
                    continue;
                }
                let Some(w) = f.window_micros else {
                    return Err(ServeError::InvalidArgument(format!(
                        "feature {:?} of view {:?} aggregates over its whole lifetime: as of a time it would need every event ever, and the view keeps {} of them (ask for windowed features)",
                        v.features[fi].name,
                        v.name,
                        humantime::format_duration(history),
                    )));
                };
                let needs_from =
                    crate::aggregate::tiles::tile_start(oldest.saturating_sub(w), f.hop_micros);
                if needs_from < kept_from {
                    return Err(too_old(
                        needs_from,
                        format!(" for the window of feature {:?}", v.features[fi].name),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl LookupPlan {
    /// Rows (entity keys) of the request.
    pub fn key_count(&self) -> usize {
        self.key_ends.len()
    }

    /// The entity key bytes of row `row`.
    pub fn key(&self, row: usize) -> &[u8] {
        let start = if row == 0 {
            0
        } else {
            self.key_ends[row - 1] as usize
        };
        &self.key_bytes[start..self.key_ends[row] as usize]
    }

    /// Shards the request reads.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.by_shard.keys().copied()
    }
}

/// Plans `req`'s keys under `compiled`. Changes nothing; every error names the key.
///
/// # Errors
/// [`ServeError::InvalidArgument`] for an empty or over-limit batch, a key of the wrong
/// type, an empty or over-long key.
pub fn plan_keys(
    req: &LookupRequest,
    compiled: Arc<CompiledPlan>,
    limits: &Limits,
    partitioner: Partitioner,
    shard_count: u32,
) -> Result<LookupPlan, ServeError> {
    let invalid = ServeError::InvalidArgument;
    let n = req.entity_keys.len();
    if n == 0 {
        return Err(invalid(
            "request has no entity keys: set `entity_keys` to at least one key".into(),
        ));
    }
    if n > limits.max_batch_keys {
        return Err(invalid(format!(
            "batch of {n} entity keys exceeds the limit max_batch_keys = {}",
            limits.max_batch_keys
        )));
    }
    let mut key_bytes = Vec::with_capacity(n * 16);
    let mut key_ends = Vec::with_capacity(n);
    let mut by_shard: BTreeMap<ShardId, Vec<u32>> = BTreeMap::new();
    for (i, k) in req.entity_keys.iter().enumerate() {
        let start = key_bytes.len();
        keys::append_entity_key(
            &format_args!("entity_keys[{i}]"),
            k.kind.as_ref(),
            compiled.key_type,
            &mut key_bytes,
        )
        .map_err(|e| invalid(format!("{e} (entity {:?})", compiled.entity)))?;
        let len = key_bytes.len() - start;
        if len > limits.max_key_bytes {
            return Err(invalid(format!(
                "entity key {i} is {len} bytes, exceeding the limit max_key_bytes = {}",
                limits.max_key_bytes
            )));
        }
        by_shard
            .entry(partitioner.shard_for_key(&key_bytes[start..], shard_count))
            .or_default()
            .push(i as u32);
        key_ends.push(key_bytes.len() as u32);
    }
    let as_of = req
        .as_of
        .as_ref()
        .map(|a| super::as_of::plan(a, n))
        .transpose()?;
    Ok(LookupPlan {
        compiled,
        key_bytes,
        key_ends,
        by_shard,
        event_times: req.include_event_times
            || req.encoding == quiver_proto::v1::ResponseEncoding::Cells as i32,
        as_of,
    })
}

/// Compiles and plans `req` without a cache (tools, fuzzing, benchmarks).
///
/// # Errors
/// As [`compile`] and [`plan_keys`].
pub fn plan_lookup(
    req: impl Into<LookupRequest>,
    registry: &RegistrySnapshot,
    limits: &Limits,
    partitioner: Partitioner,
    shard_count: u32,
) -> Result<LookupPlan, ServeError> {
    let req = req.into();
    let compiled = Arc::new(compile(&req, registry, limits)?);
    plan_keys(&req, compiled, limits, partitioner, shard_count)
}
