//! `GetSchema`: what a client needs to validate requests before sending them.

use quiver_proto::v1::{
    EntitySchema, FeatureSchema, FeatureServiceSchema, RequestLimits, Schema, ViewSchema,
};

use crate::registry::FeatureView;
use crate::security::Principal;
use crate::state::NodeState;
use crate::storage::keys::MAX_KEY_BYTES;

fn clamp(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The serving registry (the views `principal` is granted, and the feature services
/// made only of them) and this node's limits.
pub fn schema(state: &NodeState, principal: &Principal) -> Schema {
    let r = state.registry.snapshot();
    let l = &state.limits;
    Schema {
        registry_version: r.revision,
        entities: r
            .entities
            .values()
            .map(|e| EntitySchema {
                name: e.name.clone(),
                key_type: e.key_type.as_str().to_owned(),
            })
            .collect(),
        views: r
            .views
            .values()
            .filter(|v| principal.may_use_view(&v.name))
            .map(|v| view_schema(v))
            .collect(),
        retained_views: r
            .retained_versions()
            .filter(|v| principal.may_use_view(&v.name))
            .map(|v| view_schema(v))
            .collect(),
        feature_services: r
            .feature_services
            .values()
            .filter(|s| principal.may_use_all(s.features.iter().map(|(v, _)| v.as_str())))
            .map(|s| FeatureServiceSchema {
                name: s.name.clone(),
                features: s.features.iter().map(|(v, f)| format!("{v}:{f}")).collect(),
            })
            .collect(),
        limits: Some(RequestLimits {
            max_batch_keys: clamp(l.max_batch_keys),
            max_features_per_request: clamp(l.max_features_per_request),
            max_request_bytes: l.max_request_bytes as u64,
            max_push_rows: clamp(l.max_push_rows),
            max_key_bytes: clamp(l.max_key_bytes.min(MAX_KEY_BYTES)),
        }),
    }
}

fn view_schema(v: &FeatureView) -> ViewSchema {
    let schema = |f: &crate::registry::Feature| FeatureSchema {
        name: f.name.clone(),
        r#type: f.value_type.as_str().to_owned(),
    };
    ViewSchema {
        name: v.name.clone(),
        version: v.version,
        entity: v.entity.clone(),
        features: v.features.iter().map(schema).collect(),
        topic: v.source.topic.clone(),
        ttl_micros: v
            .ttl
            .map_or(0, |t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX)),
        push_fields: v
            .aggregation
            .iter()
            .flat_map(|a| &a.inputs)
            .map(schema)
            .collect(),
    }
}
