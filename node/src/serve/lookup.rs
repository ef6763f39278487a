//! The read path, independent of gRPC: validate and plan a `GetOnlineFeatures` request
//! against the registry, then execute it with one batched multi-get per (shard, view) and
//! assemble the columnar response.
//!
//! Execution is synchronous RocksDB work; the gRPC handler runs it on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quiver_proto::v1::{
    FeatureColumn, FeatureStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
    ShardWatermark, TopicOffset, Value,
};
use quiver_proto::{Partitioner, ShardId};

use super::ServeError;
use crate::config::Limits;
use crate::ingest::encode::entity_key_bytes;
use crate::registry::{FeatureView, KeyType, RegistrySnapshot};
use crate::storage::{ShardStore, keys, row_codec};

/// The features of one view a request wants.
#[derive(Debug)]
struct ViewPlan {
    view: Arc<FeatureView>,
    /// `slots[i]`: decode slot of feature `i`, if wanted.
    slots: Vec<Option<usize>>,
    /// Number of decode slots (distinct wanted features).
    slot_count: usize,
    /// `(decode slot, response column)`; a feature named twice has two outputs, one slot.
    outputs: Vec<(usize, usize)>,
}

/// A validated request, ready to execute.
#[derive(Debug)]
pub struct LookupPlan {
    column_names: Vec<String>,
    views: Vec<ViewPlan>,
    /// Entity key bytes (the Kafka key), in request order.
    keys: Vec<Vec<u8>>,
    /// Row positions per shard.
    by_shard: BTreeMap<ShardId, Vec<usize>>,
    /// Requested minimum watermarks for the shards this request reads.
    min_watermarks: BTreeMap<ShardId, BTreeMap<String, i64>>,
}

impl LookupPlan {
    /// Shards this request reads.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.by_shard.keys().copied()
    }

    /// Minimum watermarks the request demands, per shard it reads.
    pub fn min_watermarks(&self) -> &BTreeMap<ShardId, BTreeMap<String, i64>> {
        &self.min_watermarks
    }

    /// The views the request reads (for view grants).
    pub fn view_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.views.iter().map(|v| v.view.name.as_str())
    }

    /// Number of entity keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Serialises an entity key the way producers key their records.
fn key_bytes(
    index: usize,
    key: &quiver_proto::v1::EntityKey,
    entity: &str,
    key_type: KeyType,
) -> Result<Vec<u8>, ServeError> {
    entity_key_bytes(
        &format!("entity_keys[{index}]"),
        key.kind.as_ref(),
        key_type,
    )
    .map_err(|e| ServeError::InvalidArgument(format!("{e} (entity {entity:?})")))
}

/// Validates `req` and plans it. Changes nothing; every error names what was wrong.
///
/// # Errors
/// [`ServeError::InvalidArgument`] for malformed requests and exceeded limits,
/// [`ServeError::NotFound`] for unknown views, features and feature services.
pub fn plan_lookup(
    req: &GetOnlineFeaturesRequest,
    registry: &RegistrySnapshot,
    limits: &Limits,
    partitioner: Partitioner,
    shard_count: u32,
) -> Result<LookupPlan, ServeError> {
    let invalid = |m: String| ServeError::InvalidArgument(m);
    if req.entity_keys.is_empty() {
        return Err(invalid(
            "request has no entity keys: set `entity_keys` to at least one key".into(),
        ));
    }
    if req.entity_keys.len() > limits.max_batch_keys {
        return Err(invalid(format!(
            "batch of {} entity keys exceeds the limit max_batch_keys = {}",
            req.entity_keys.len(),
            limits.max_batch_keys
        )));
    }
    // Resolve references to (view, feature index), in request order.
    let mut wanted: Vec<(Arc<FeatureView>, usize)> = Vec::new();
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
            for r in &req.features {
                if !r.contains(':') {
                    return Err(invalid(format!(
                        "feature reference {r:?} must look like \"view:feature\" or \"view:*\""
                    )));
                }
                let resolved = crate::registry::resolve_reference(&registry.views, r)
                    .map_err(ServeError::NotFound)?;
                wanted.extend(resolved.into_iter().map(|(v, i)| (v.clone(), i)));
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
                wanted.push((view.clone(), idx));
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
    let entity = wanted[0].0.entity.clone();
    if let Some((v, _)) = wanted.iter().find(|(v, _)| v.entity != entity) {
        return Err(invalid(format!(
            "all features of one request must share an entity: view {:?} is keyed by {:?}, view {:?} by {:?}",
            wanted[0].0.name, entity, v.name, v.entity
        )));
    }
    let key_type = registry
        .entities
        .get(&entity)
        .map(|e| e.key_type)
        .ok_or_else(|| ServeError::NotFound(format!("entity {entity:?} is not registered")))?;

    let mut views: Vec<ViewPlan> = Vec::new();
    let mut column_names = Vec::with_capacity(wanted.len());
    for (col, (view, idx)) in wanted.into_iter().enumerate() {
        column_names.push(format!("{}:{}", view.name, view.features[idx].name));
        let vp = match views.iter_mut().position(|p| Arc::ptr_eq(&p.view, &view)) {
            Some(i) => &mut views[i],
            None => {
                let n = view.features.len();
                views.push(ViewPlan {
                    view,
                    slots: vec![None; n],
                    slot_count: 0,
                    outputs: Vec::new(),
                });
                views.last_mut().expect("just pushed")
            }
        };
        // A feature named twice is decoded once and copied into each of its columns.
        let slot = match vp.slots[idx] {
            Some(s) => s,
            None => {
                let s = vp.slot_count;
                vp.slots[idx] = Some(s);
                vp.slot_count += 1;
                s
            }
        };
        vp.outputs.push((slot, col));
    }

    let mut keys = Vec::with_capacity(req.entity_keys.len());
    let mut by_shard: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (i, k) in req.entity_keys.iter().enumerate() {
        let bytes = key_bytes(i, k, &entity, key_type)?;
        if bytes.len() > limits.max_key_bytes {
            return Err(invalid(format!(
                "entity key {i} is {} bytes, exceeding the limit max_key_bytes = {}",
                bytes.len(),
                limits.max_key_bytes
            )));
        }
        by_shard
            .entry(partitioner.shard_for_key(&bytes, shard_count))
            .or_default()
            .push(i);
        keys.push(bytes);
    }
    let mut min_watermarks = BTreeMap::new();
    for wm in &req.min_watermarks {
        let shard = ShardId(wm.shard);
        if by_shard.contains_key(&shard) {
            let offsets: BTreeMap<String, i64> = wm
                .offsets
                .iter()
                .map(|o| (o.topic.clone(), o.next_offset))
                .collect();
            min_watermarks.insert(shard, offsets);
        }
    }
    Ok(LookupPlan {
        column_names,
        views,
        keys,
        by_shard,
        min_watermarks,
    })
}

/// A watermark on the wire.
fn wire_watermark(shard: ShardId, wm: &BTreeMap<String, i64>) -> ShardWatermark {
    ShardWatermark {
        shard: shard.0,
        offsets: wm
            .iter()
            .map(|(t, o)| TopicOffset {
                topic: t.clone(),
                next_offset: *o,
            })
            .collect(),
    }
}

/// Whether `have` has reached every offset in `want` (topics it does not know count as 0).
pub fn watermark_reached(have: &BTreeMap<String, i64>, want: &BTreeMap<String, i64>) -> bool {
    want.iter()
        .all(|(t, o)| have.get(t).copied().unwrap_or(0) >= *o)
}

/// Executes `plan` against the local shard stores at time `now_micros`.
///
/// # Errors
/// [`ServeError::WrongShard`] if a key's shard is not replicated here,
/// [`ServeError::Storage`] on a RocksDB read error.
pub fn execute_lookup(
    plan: &LookupPlan,
    shards: &HashMap<ShardId, Arc<ShardStore>>,
    now_micros: i64,
) -> Result<GetOnlineFeaturesResponse, ServeError> {
    let n = plan.keys.len();
    let mut columns: Vec<FeatureColumn> = plan
        .column_names
        .iter()
        .map(|name| FeatureColumn {
            name: name.clone(),
            values: vec![Value::default(); n],
            statuses: vec![FeatureStatus::NotFound as i32; n],
            event_times_micros: vec![0; n],
        })
        .collect();
    let mut watermarks = Vec::with_capacity(plan.by_shard.len());
    let mut storage_keys: Vec<Vec<u8>> = Vec::new();
    for (shard, rows) in &plan.by_shard {
        let store = shards.get(shard).ok_or(ServeError::WrongShard {
            shard: *shard,
            epoch: 0,
        })?;
        let _span =
            tracing::debug_span!("shard_read", shard = shard.0, keys = rows.len()).entered();
        // Rows and watermark from one snapshot: the watermark reported is exactly the
        // state the rows reflect, so a client demanding it elsewhere never reads older.
        let read = store.consistent_read();
        let wm = read
            .watermark()
            .map_err(|e| ServeError::Storage(e.to_string()))?;
        watermarks.push(wire_watermark(*shard, &wm));
        for vp in &plan.views {
            storage_keys.clear();
            storage_keys.extend(
                rows.iter()
                    .map(|&r| keys::row_key(&vp.view.name, vp.view.version, &plan.keys[r])),
            );
            let ttl_micros = vp.view.ttl.map(|t: Duration| t.as_micros() as i64);
            let mut decoded = vec![None; vp.slot_count];
            for (&row, res) in rows.iter().zip(read.get_rows(storage_keys.iter())) {
                let Some(bytes) =
                    res.map_err(|e| ServeError::Storage(format!("shard {shard}: {e}")))?
                else {
                    continue;
                };
                decoded.iter_mut().for_each(|d| *d = None);
                let header = row_codec::decode_selected(&bytes, &vp.slots, &mut decoded)
                    .map_err(|e| ServeError::Storage(format!("shard {shard}: corrupt row: {e}")))?;
                if header.tombstone {
                    continue;
                }
                let expired = ttl_micros
                    .is_some_and(|ttl| now_micros.saturating_sub(header.event_time_micros) > ttl);
                for &(slot, col) in &vp.outputs {
                    let c = &mut columns[col];
                    c.event_times_micros[row] = header.event_time_micros;
                    if expired {
                        c.statuses[row] = FeatureStatus::Expired as i32;
                        continue;
                    }
                    let value = decoded[slot].clone();
                    // A null feature in a present row is reported PRESENT with no value:
                    // the row exists and says "no value".
                    c.statuses[row] = FeatureStatus::Present as i32;
                    c.values[row] = Value { kind: value };
                }
            }
        }
    }
    Ok(GetOnlineFeaturesResponse {
        columns,
        watermarks,
    })
}
