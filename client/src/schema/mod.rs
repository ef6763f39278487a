//! The registry schema and node limits, cached so requests are validated before anything
//! is sent. The nodes are the authority; the cache only saves a round trip for requests
//! that are certainly wrong, so it never rejects what the cluster would accept: a name it
//! does not know, or a request that contradicts it (a type, an entity, a limit — the
//! registry may have changed since it was fetched), triggers one (coalesced) refresh before
//! the request is rejected. A freshly registered view is usable at once, and a long-lived
//! client follows a retyped feature without a restart.

use std::collections::{HashMap, HashSet};

use quiver_proto::v1::entity_key::Kind as KeyKind;
use quiver_proto::v1::{EntityKey, PushRow, RequestLimits, Schema};

mod cache;

pub(crate) use cache::SchemaCache;

/// Why a request failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Names something the cached schema does not have (refresh, then NotFound).
    Unknown(String),
    /// Contradicts the cached schema: a key or value type, an entity, a limit (refresh,
    /// then InvalidRequest if the fresh schema agrees).
    Mismatch(String),
    /// Malformed whatever the schema (InvalidRequest at once).
    Invalid(String),
}

#[derive(Debug, Clone)]
struct ViewInfo {
    version: u32,
    entity: String,
    /// Feature names in declaration order, with their type names.
    features: Vec<(String, String)>,
    /// The feature names, for the per-lookup check (a scan of `features` per reference
    /// was quadratic in the features a lookup names: ~1,250 comparisons at 50).
    names: HashSet<String>,
    /// Values older than this are served EXPIRED.
    ttl: Option<std::time::Duration>,
    /// What a pushed row carries: the features, or an aggregation view's raw inputs.
    push_fields: Vec<(String, String)>,
}

/// A validated, indexed [`Schema`].
#[derive(Debug, Clone)]
pub(crate) struct ClientSchema {
    registry_version: u64,
    entities: HashMap<String, String>,
    views: HashMap<String, ViewInfo>,
    /// Retained (earlier) versions a lookup may pin (`view@3:feature`).
    retained: HashMap<(String, u32), ViewInfo>,
    services: HashMap<String, Vec<String>>,
    limits: RequestLimits,
}

fn view_info(v: quiver_proto::v1::ViewSchema) -> (String, ViewInfo) {
    let info = ViewInfo {
        version: v.version,
        entity: v.entity,
        push_fields: if v.push_fields.is_empty() {
            v.features
                .iter()
                .map(|f| (f.name.clone(), f.r#type.clone()))
                .collect()
        } else {
            v.push_fields
                .into_iter()
                .map(|f| (f.name, f.r#type))
                .collect()
        },
        names: v.features.iter().map(|f| f.name.clone()).collect(),
        features: v.features.into_iter().map(|f| (f.name, f.r#type)).collect(),
        ttl: u64::try_from(v.ttl_micros)
            .ok()
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_micros),
    };
    (v.name, info)
}

impl ClientSchema {
    pub(crate) fn new(s: Schema) -> Self {
        ClientSchema {
            registry_version: s.registry_version,
            entities: s
                .entities
                .into_iter()
                .map(|e| (e.name, e.key_type))
                .collect(),
            views: s.views.into_iter().map(view_info).collect(),
            retained: s
                .retained_views
                .into_iter()
                .map(view_info)
                .map(|(name, v)| ((name, v.version), v))
                .collect(),
            services: s
                .feature_services
                .into_iter()
                .map(|f| (f.name, f.features))
                .collect(),
            limits: s.limits.unwrap_or(RequestLimits {
                max_batch_keys: u32::MAX,
                max_features_per_request: u32::MAX,
                max_request_bytes: u64::MAX,
                max_push_rows: u32::MAX,
                max_key_bytes: u32::MAX,
            }),
        }
    }

    /// Whether the registry this schema was read from has view `name`.
    pub(crate) fn has_view(&self, name: &str) -> bool {
        self.views.contains_key(name)
    }

    /// What a push to `view` carries: the entity's key type, the fields with their type
    /// names, and the most rows per push.
    pub(crate) fn push_schema(&self, view: &str) -> Result<crate::push::PushSchema, Problem> {
        let v = self.view(view)?;
        Ok(crate::push::PushSchema {
            key_type: self.entities.get(&v.entity).cloned().unwrap_or_default(),
            fields: v.push_fields.clone(),
            max_push_rows: self.limits.max_push_rows,
        })
    }

    /// The serving version of view `name`.
    fn view(&self, name: &str) -> Result<&ViewInfo, Problem> {
        self.views
            .get(name)
            .ok_or_else(|| Problem::Unknown(format!("view {name:?} is not registered")))
    }

    /// The version a lookup's view part names: `view` (serving) or `view@3` (pinned: the
    /// serving version if it is 3, else a retained one).
    fn read_view(&self, part: &str) -> Result<&ViewInfo, Problem> {
        let Some((name, version)) = part.split_once('@') else {
            return self.view(part);
        };
        let version: u32 = version.parse().map_err(|_| {
            Problem::Invalid(format!(
                "{part:?}: {version:?} is not a version number (pin a version as \"view@3:feature\")"
            ))
        })?;
        match self.views.get(name) {
            Some(v) if v.version == version => Ok(v),
            _ => self
                .retained
                .get(&(name.to_owned(), version))
                .ok_or_else(|| {
                    Problem::Unknown(format!(
                        "view {name:?} has no version {version} that serves or is retained"
                    ))
                }),
        }
    }

    fn check_keys<'a>(
        &self,
        entity: &str,
        what: &str,
        keys: impl Iterator<Item = Option<&'a EntityKey>>,
    ) -> Result<(), Problem> {
        let key_type = self
            .entities
            .get(entity)
            .ok_or_else(|| Problem::Unknown(format!("entity {entity:?} is not registered")))?;
        for (i, k) in keys.enumerate() {
            let Some(kind) = k.and_then(|k| k.kind.as_ref()) else {
                return Err(Problem::Invalid(format!("{what}[{i}] is empty")));
            };
            let got = kind.type_name();
            if got != key_type {
                return Err(Problem::Mismatch(format!(
                    "{what}[{i}] is {got}, but entity {entity:?} has {key_type} keys"
                )));
            }
            // The length of the Kafka key, without building it (the router does, once).
            let len = match kind {
                KeyKind::StringValue(s) => s.len(),
                KeyKind::Int64Value(i) => {
                    usize::from(*i < 0)
                        + i.unsigned_abs()
                            .checked_ilog10()
                            .map_or(1, |d| d as usize + 1)
                }
            };
            if len == 0 || len > self.limits.max_key_bytes as usize {
                let m = format!(
                    "{what}[{i}] is {len} bytes; keys must be 1..={} bytes",
                    self.limits.max_key_bytes
                );
                // An empty key is wrong under any schema; a long one only under this limit.
                return Err(if len == 0 {
                    Problem::Invalid(m)
                } else {
                    Problem::Mismatch(m)
                });
            }
        }
        Ok(())
    }

    /// The most keys one lookup may carry.
    pub(crate) fn max_batch_keys(&self) -> usize {
        self.limits.max_batch_keys as usize
    }

    /// Validates a lookup; returns the number of feature columns it expands to.
    pub(crate) fn check_lookup(
        &self,
        features: &[String],
        service: &str,
        keys: &[EntityKey],
    ) -> Result<(), Problem> {
        let invalid = |m: String| Err(Problem::Invalid(m));
        let mismatch = |m: String| Err(Problem::Mismatch(m));
        if keys.is_empty() {
            return invalid("the lookup has no entity keys".into());
        }
        if keys.len() > self.limits.max_batch_keys as usize {
            return mismatch(format!(
                "batch of {} entity keys exceeds the cluster's limit max_batch_keys = {}",
                keys.len(),
                self.limits.max_batch_keys
            ));
        }
        let resolved = self.references(features, service)?;
        let mut entity: Option<(&str, &str)> = None;
        let mut columns = 0usize;
        // The view of the previous reference: a lookup's references mostly share one.
        let mut last: Option<(&str, &ViewInfo)> = None;
        for r in resolved {
            let Some((view_name, feature)) = r.split_once(':') else {
                return invalid(format!(
                    "feature reference {r:?} must look like \"view:feature\" or \"view:*\""
                ));
            };
            let view = match last {
                Some((name, view)) if name == view_name => view,
                _ => self.read_view(view_name)?,
            };
            last = Some((view_name, view));
            if feature == "*" {
                columns += view.features.len();
            } else if view.names.contains(feature) {
                columns += 1;
            } else {
                return Err(Problem::Unknown(format!(
                    "view {view_name:?} has no feature {feature:?}"
                )));
            }
            match entity {
                None => entity = Some((view_name, &view.entity)),
                Some((first, e)) if e != view.entity => {
                    return mismatch(format!(
                        "all features of one lookup must share an entity: view {first:?} is keyed by {e:?}, view {view_name:?} by {:?}",
                        view.entity
                    ));
                }
                Some(_) => {}
            }
        }
        if columns > self.limits.max_features_per_request as usize {
            return mismatch(format!(
                "the lookup expands to {columns} features, exceeding the cluster's limit max_features_per_request = {}",
                self.limits.max_features_per_request
            ));
        }
        let (_, entity) = entity.expect("at least one reference");
        self.check_keys(entity, "entity_keys", keys.iter().map(Some))
    }

    /// A lookup's references: its own, or its feature service's.
    fn references<'a>(
        &'a self,
        features: &'a [String],
        service: &str,
    ) -> Result<&'a [String], Problem> {
        match (features.is_empty(), service.is_empty()) {
            (true, true) => Err(Problem::Invalid("the lookup names no features".into())),
            (false, false) => Err(Problem::Invalid(
                "set either feature references or a feature service, not both".into(),
            )),
            (false, true) => Ok(features),
            (true, false) => self
                .services
                .get(service)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    Problem::Unknown(format!("feature service {service:?} is not registered"))
                }),
        }
    }

    /// Each reference of a lookup (a feature service expanded) with the entity its view is
    /// keyed by and the columns it answers, in request order: how a lookup with keys per
    /// entity is split.
    pub(crate) fn entity_refs(
        &self,
        features: &[String],
        service: &str,
    ) -> Result<Vec<crate::lookup::entities::EntityRef>, Problem> {
        self.references(features, service)?
            .iter()
            .map(|r| {
                let Some((view_name, feature)) = r.split_once(':') else {
                    return Err(Problem::Invalid(format!(
                        "feature reference {r:?} must look like \"view:feature\" or \"view:*\""
                    )));
                };
                let view = self.read_view(view_name)?;
                let width = if feature == "*" {
                    view.features.len()
                } else if view.features.iter().any(|(n, _)| n == feature) {
                    1
                } else {
                    return Err(Problem::Unknown(format!(
                        "view {view_name:?} has no feature {feature:?}"
                    )));
                };
                let entity = view.entity.clone();
                Ok((r.clone(), entity, width))
            })
            .collect()
    }

    /// The views a (validated) lookup reads, in first-use order, with their TTLs; `None`
    /// if it names something this schema does not know.
    pub(crate) fn views_of(
        &self,
        features: &[String],
        service: &str,
    ) -> Option<Vec<(String, Option<std::time::Duration>)>> {
        let refs = if service.is_empty() {
            features
        } else {
            self.services.get(service)?.as_slice()
        };
        let mut out: Vec<(String, Option<std::time::Duration>)> = Vec::new();
        for r in refs {
            let (view, _) = r.split_once(':')?;
            if !out.iter().any(|(v, _)| v == view) {
                out.push((view.to_owned(), self.views.get(view)?.ttl));
            }
        }
        Some(out)
    }

    /// Whether this schema resolves every reference of `features` (or `service`): each
    /// view and feature — a pinned `view@N:feature` only while version N serves or is
    /// retained. (Only asked after a node refused a lookup: the allocation is no cost.)
    pub(crate) fn knows_refs(&self, features: &[String], service: &str) -> bool {
        self.entity_refs(features, service).is_ok()
    }

    /// Validates a push.
    pub(crate) fn check_push(&self, view_name: &str, rows: &[PushRow]) -> Result<(), Problem> {
        let invalid = |m: String| Err(Problem::Invalid(m));
        let mismatch = |m: String| Err(Problem::Mismatch(m));
        if rows.is_empty() {
            return invalid("the push has no rows".into());
        }
        if rows.len() > self.limits.max_push_rows as usize {
            return mismatch(format!(
                "push of {} rows exceeds the cluster's limit max_push_rows = {}",
                rows.len(),
                self.limits.max_push_rows
            ));
        }
        let view = self.view(view_name)?;
        self.check_keys(
            &view.entity,
            "rows.entity_key",
            rows.iter().map(|r| r.entity_key.as_ref()),
        )?;
        for (i, row) in rows.iter().enumerate() {
            if row.event_time_micros < 0 {
                return invalid(format!("rows[{i}] has a negative event time"));
            }
            if row.delete && !row.features.is_empty() {
                return invalid(format!("rows[{i}] is a delete but also sets features"));
            }
            for (name, value) in &row.features {
                let Some((_, ty)) = view.push_fields.iter().find(|(n, _)| n == name) else {
                    return Err(Problem::Unknown(format!(
                        "view {view_name:?} has no feature {name:?}"
                    )));
                };
                if let Some(k) = &value.kind
                    && k.type_name() != ty
                {
                    return mismatch(format!(
                        "rows[{i}]: feature {name:?} is {}, but the view declares {ty}",
                        k.type_name()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
