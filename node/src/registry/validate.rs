//! Validation of definition files against the current registry.
//!
//! Every rule reports the object it belongs to, so a user can fix a file from the message
//! alone. Validation is pure: nothing changes until the whole file passes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::definition::{DefinitionFile, EntityDef, FeatureDef, FeatureServiceDef, ViewDef};
use super::model::{
    Entity, Feature, FeatureService, FeatureType, FeatureView, KeyType, RecordFormat, Source,
    TimeUnit,
};
use super::{RegistryError, RegistrySnapshot};

const MAX_NAME_LEN: usize = 64;
/// Upper bound of features per view; keeps rows and responses bounded.
pub const MAX_FEATURES_PER_VIEW: usize = 1024;

/// Checks that `name` is `[a-z][a-z0-9_]*` and at most 64 characters.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "{kind} name {name:?} is invalid: use 1-{MAX_NAME_LEN} characters [a-z0-9_], starting with a letter"
        ));
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), String> {
    // Kafka's legal topic characters and length.
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "source topic {topic:?} is not a valid Kafka topic name ([a-zA-Z0-9._-], 1-249 characters)"
        ));
    }
    Ok(())
}

fn entity_from_def(def: &EntityDef) -> Result<Entity, String> {
    check_name("entity", &def.name)?;
    let key_type = match def.key_type.as_str() {
        "string" => KeyType::String,
        "int64" => KeyType::Int64,
        other => {
            return Err(format!(
                "entity {:?}: key_type {other:?} is not supported (expected \"string\" or \"int64\")",
                def.name
            ));
        }
    };
    Ok(Entity {
        name: def.name.clone(),
        key_type,
        description: def.description.clone(),
    })
}

fn feature_from_def(view: &str, def: &FeatureDef) -> Result<Feature, String> {
    check_name("feature", &def.name).map_err(|e| format!("view {view:?}: {e}"))?;
    let known = || {
        let known: Vec<_> = FeatureType::ALL.iter().map(|t| t.as_str()).collect();
        known.join(", ")
    };
    let Some(type_name) = def.value_type.as_deref() else {
        return Err(format!(
            "view {view:?}, feature {:?}: has no type (expected one of {})",
            def.name,
            known()
        ));
    };
    let value_type = FeatureType::parse(type_name).ok_or_else(|| {
        format!(
            "view {view:?}, feature {:?}: type {type_name:?} is unknown (expected one of {})",
            def.name,
            known()
        )
    })?;
    let aggregation_only = [
        ("function", def.function.is_some()),
        ("input", def.input.is_some()),
        ("window", def.window.is_some()),
        ("hop", def.hop.is_some()),
        ("filter", def.filter.is_some()),
        ("n", def.n.is_some()),
    ];
    if let Some((key, _)) = aggregation_only.iter().find(|(_, set)| *set) {
        return Err(format!(
            "view {view:?}, feature {:?}: {key} applies only to aggregation views (add a [view.aggregation] table)",
            def.name
        ));
    }
    let source_field = def.source_field.clone().unwrap_or_else(|| def.name.clone());
    if source_field.is_empty() {
        return Err(format!(
            "view {view:?}, feature {:?}: source_field is empty",
            def.name
        ));
    }
    Ok(Feature {
        name: def.name.clone(),
        value_type,
        source_field,
        description: def.description.clone(),
    })
}

fn parse_ttl(view: &str, ttl: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(text) = ttl else { return Ok(None) };
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("view {view:?}: ttl {text:?} is not a duration like \"7d\" or \"90m\": {e}")
    })?;
    Ok((!d.is_zero()).then_some(d))
}

/// The longest `history` a view may keep.
pub const MAX_HISTORY: Duration = Duration::from_secs(400 * 86_400);

fn parse_history(view: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(text) = text else { return Ok(None) };
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("view {view:?}: history {text:?} is not a duration like \"30d\" or \"12h\": {e}")
    })?;
    if d < Duration::from_secs(60) || d > MAX_HISTORY {
        return Err(format!(
            "view {view:?}: history {text:?} must be between 1m and 400d"
        ));
    }
    Ok(Some(d))
}

fn view_from_def(
    def: &ViewDef,
    entities: &BTreeMap<String, Entity>,
) -> Result<FeatureView, String> {
    check_name("view", &def.name)?;
    let name = def.name.as_str();
    if !entities.contains_key(&def.entity) {
        return Err(format!(
            "view {name:?}: entity {:?} is not defined",
            def.entity
        ));
    }
    let version = def.version.unwrap_or(1);
    if version == 0 {
        return Err(format!("view {name:?}: version must be 1 or greater"));
    }
    check_topic(&def.source.topic).map_err(|e| format!("view {name:?}: {e}"))?;
    let format = match def.source.format.as_deref().unwrap_or("json") {
        "json" => RecordFormat::Json,
        "protobuf" => RecordFormat::Protobuf,
        other => {
            return Err(format!(
                "view {name:?}: source format {other:?} is not supported (expected \"json\" or \"protobuf\")"
            ));
        }
    };
    let event_time_unit = match def.source.event_time_unit.as_deref().unwrap_or("millis") {
        "seconds" => TimeUnit::Seconds,
        "millis" => TimeUnit::Millis,
        "micros" => TimeUnit::Micros,
        other => {
            return Err(format!(
                "view {name:?}: event_time_unit {other:?} is not supported (expected \"seconds\", \"millis\" or \"micros\")"
            ));
        }
    };
    if format == RecordFormat::Protobuf && def.source.event_time_field.is_some() {
        return Err(format!(
            "view {name:?}: event_time_field does not apply to protobuf sources (FeatureRow.event_time_micros carries it)"
        ));
    }
    if def.features.is_empty() {
        return Err(format!(
            "view {name:?}: a view needs at least one [[view.feature]]"
        ));
    }
    if def.features.len() > MAX_FEATURES_PER_VIEW {
        return Err(format!(
            "view {name:?}: {} features exceed the limit of {MAX_FEATURES_PER_VIEW}",
            def.features.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut features = Vec::with_capacity(def.features.len());
    for f in &def.features {
        if !seen.insert(f.name.as_str()) {
            return Err(format!(
                "view {name:?}: feature {:?} is defined twice",
                f.name
            ));
        }
        if def.aggregation.is_none() {
            features.push(feature_from_def(name, f)?);
        }
    }
    let mut view = FeatureView {
        name: def.name.clone(),
        version,
        entity: def.entity.clone(),
        features,
        ttl: parse_ttl(name, def.ttl.as_deref())?,
        history: parse_history(name, def.history.as_deref())?,
        owner: def.owner.clone(),
        description: def.description.clone(),
        tags: def.tags.clone(),
        source: Source {
            topic: def.source.topic.clone(),
            format,
            event_time_field: def.source.event_time_field.clone(),
            event_time_unit,
        },
        aggregation: None,
    };
    match &def.aggregation {
        None if !def.inputs.is_empty() => Err(format!(
            "view {name:?}: [[view.input]] applies only to aggregation views (add a [view.aggregation] table)"
        )),
        None => Ok(view),
        Some(agg) => {
            let mut seen = HashSet::new();
            let mut inputs = Vec::with_capacity(def.inputs.len());
            for f in &def.inputs {
                if !seen.insert(f.name.as_str()) {
                    return Err(format!(
                        "view {name:?}: input {:?} is defined twice",
                        f.name
                    ));
                }
                inputs.push(
                    feature_from_def(name, f).map_err(|e| e.replace(", feature ", ", input "))?,
                );
            }
            let input_view = FeatureView {
                features: inputs.clone(),
                ..view.clone()
            };
            let (features, aggregation) =
                super::aggregation::from_defs(name, agg, inputs, &def.features, input_view)?;
            view.features = features;
            view.aggregation = Some(std::sync::Arc::new(aggregation));
            Ok(view)
        }
    }
}

/// Checks that `new` may replace `old` in place: same version, entity and source, and the
/// old features as an unchanged prefix (rows are stored positionally).
fn check_compatible(old: &FeatureView, new: &FeatureView) -> Result<(), String> {
    let name = &new.name;
    debug_assert_eq!(
        new.version, old.version,
        "other versions are handled by the caller"
    );
    let bump = "is an incompatible change; apply it as a new view version";
    if new.entity != old.entity {
        return Err(format!(
            "view {name:?}: changing the entity from {:?} to {:?} {bump}",
            old.entity, new.entity
        ));
    }
    if new.source.topic != old.source.topic || new.source.format != old.source.format {
        return Err(format!(
            "view {name:?}: changing the source topic or format {bump}"
        ));
    }
    if new.source.event_time_field != old.source.event_time_field
        || new.source.event_time_unit != old.source.event_time_unit
    {
        return Err(format!(
            "view {name:?}: changing the event-time field or unit {bump}"
        ));
    }
    if new.history.unwrap_or_default() > old.history.unwrap_or_default() {
        // The versions before the change were not kept: a new version re-ingests the
        // topic and keeps them from its start.
        return Err(format!(
            "view {name:?}: keeping history, or more of it, {bump} (which re-ingests the topic and keeps row versions from its start)"
        ));
    }
    if old.aggregation.is_some() || new.aggregation.is_some() {
        // Tiles hold each feature's partial state by position within its resolution:
        // only the description, owner, tags and TTL may change in place.
        if new.aggregation != old.aggregation || new.features.len() != old.features.len() {
            return Err(format!(
                "view {name:?}: changing an aggregation view's inputs, features or [view.aggregation] {bump}"
            ));
        }
    }
    for (i, f) in old.features.iter().enumerate() {
        match new.features.get(i) {
            Some(n)
                if n.name == f.name
                    && n.value_type == f.value_type
                    && n.source_field == f.source_field => {}
            Some(n) if n.name == f.name => {
                return Err(format!(
                    "view {name:?}: feature {:?} changes type or source field ({} → {}); this {bump}",
                    f.name,
                    f.value_type.as_str(),
                    n.value_type.as_str()
                ));
            }
            _ => {
                return Err(format!(
                    "view {name:?}: feature {:?} is removed or moved; features may only be appended, anything else {bump}",
                    f.name
                ));
            }
        }
    }
    Ok(())
}

fn service_from_def(
    def: &FeatureServiceDef,
    views: &BTreeMap<String, std::sync::Arc<FeatureView>>,
) -> Result<FeatureService, String> {
    check_name("feature service", &def.name)?;
    if def.features.is_empty() {
        return Err(format!(
            "feature service {:?}: it lists no features",
            def.name
        ));
    }
    let mut refs = Vec::new();
    for r in &def.features {
        let resolved = super::resolve_reference(views, r)
            .map_err(|e| format!("feature service {:?}: {e}", def.name))?;
        refs.extend(
            resolved
                .into_iter()
                .map(|(v, f)| (v.name.clone(), v.features[f].name.clone())),
        );
    }
    Ok(FeatureService {
        name: def.name.clone(),
        features: refs,
        description: def.description.clone(),
        owner: def.owner.clone(),
    })
}

/// Validates `file` on top of `current` and returns the resulting snapshot plus a
/// human-readable list of changes. `current` is not modified.
pub(crate) fn apply_to(
    current: &RegistrySnapshot,
    file: &DefinitionFile,
) -> Result<(RegistrySnapshot, Vec<String>), RegistryError> {
    let invalid = RegistryError::Invalid;
    let mut next = current.clone();
    let mut changes = Vec::new();

    let mut names = HashSet::new();
    for def in &file.entities {
        if !names.insert(def.name.as_str()) {
            return Err(invalid(format!(
                "entity {:?} is defined twice in the file",
                def.name
            )));
        }
        let entity = entity_from_def(def).map_err(invalid)?;
        match next.entities.get(&entity.name) {
            Some(old) if old.key_type != entity.key_type => {
                return Err(RegistryError::Incompatible(format!(
                    "entity {:?}: key_type cannot change from {} to {}",
                    entity.name,
                    old.key_type.as_str(),
                    entity.key_type.as_str()
                )));
            }
            Some(old) if *old == entity => {}
            Some(_) => changes.push(format!("entity {}: updated", entity.name)),
            None => changes.push(format!("entity {}: created", entity.name)),
        }
        next.entities.insert(entity.name.clone(), entity);
    }

    let mut names = HashSet::new();
    for def in &file.views {
        if !names.insert(def.name.as_str()) {
            return Err(invalid(format!(
                "view {:?} is defined twice in the file",
                def.name
            )));
        }
        let view = view_from_def(def, &next.entities).map_err(invalid)?;
        super::lifecycle::check_version_unused(current, &view)?;
        match next.views.get(&view.name) {
            Some(old) if **old == view => {}
            Some(old) if view.version > old.version => {
                // A new version: re-ingested into its own key space while `old` serves.
                if next.pending.get(&view.name).is_some_and(|p| **p == view) {
                    continue;
                }
                changes.push(format!(
                    "view {} v{}: building (re-ingesting topic {:?} from the start; v{} serves until every replica has caught up)",
                    view.name, view.version, view.source.topic, old.version
                ));
                next.pending
                    .insert(view.name.clone(), std::sync::Arc::new(view));
                continue;
            }
            Some(old) if view.version < old.version => {
                return Err(RegistryError::Incompatible(format!(
                    "view {:?}: version {} is older than the serving version {}",
                    view.name, view.version, old.version
                )));
            }
            Some(old) => {
                check_compatible(old, &view).map_err(RegistryError::Incompatible)?;
                changes.push(format!(
                    "view {} v{}: updated (compatible)",
                    view.name, view.version
                ));
            }
            None if current
                .views
                .values()
                .any(|v| v.source.topic == view.source.topic) =>
            {
                // The topic is already being consumed: backfill the new view from the
                // topic's start before it serves.
                if next.pending.get(&view.name).is_some_and(|p| **p == view) {
                    continue;
                }
                changes.push(format!(
                    "view {} v{}: building (topic {:?} is already consumed; re-ingesting it from the start before the view serves)",
                    view.name, view.version, view.source.topic
                ));
                next.pending
                    .insert(view.name.clone(), std::sync::Arc::new(view));
                continue;
            }
            None => changes.push(format!("view {} v{}: created", view.name, view.version)),
        }
        next.views
            .insert(view.name.clone(), std::sync::Arc::new(view));
    }
    // Pending versions recorded by the node (persisted registry, replicated state).
    for def in &file.pending_views {
        let view = view_from_def(def, &next.entities).map_err(invalid)?;
        next.pending
            .insert(view.name.clone(), std::sync::Arc::new(view));
    }
    let entities = next.entities.clone();
    super::lifecycle::load(&mut next, file, |d| view_from_def(d, &entities))?;

    let mut names = HashSet::new();
    for def in &file.feature_services {
        if !names.insert(def.name.as_str()) {
            return Err(invalid(format!(
                "feature service {:?} is defined twice in the file",
                def.name
            )));
        }
        let svc = service_from_def(def, &next.views).map_err(invalid)?;
        match next.feature_services.get(&svc.name) {
            Some(old) if **old == svc => {}
            Some(_) => changes.push(format!("feature service {}: updated", svc.name)),
            None => changes.push(format!("feature service {}: created", svc.name)),
        }
        next.feature_services
            .insert(svc.name.clone(), std::sync::Arc::new(svc));
    }

    // A feature service defined earlier must still resolve after view changes.
    for svc in next.feature_services.values() {
        for (v, f) in &svc.features {
            let ok = next
                .views
                .get(v)
                .is_some_and(|view| view.feature_index(f).is_some());
            if !ok {
                return Err(RegistryError::Incompatible(format!(
                    "feature service {:?} references {v}:{f}, which would no longer exist",
                    svc.name
                )));
            }
        }
    }
    if !changes.is_empty() {
        next.generation = current.generation + 1;
    }
    Ok((next, changes))
}
