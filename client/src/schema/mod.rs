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
mod tests {
    use quiver_proto::v1::{EntitySchema, FeatureSchema, FeatureServiceSchema, Value, ViewSchema};

    use super::*;

    fn schema() -> ClientSchema {
        ClientSchema::new(Schema {
            registry_version: 1,
            entities: vec![
                EntitySchema {
                    name: "user".into(),
                    key_type: "string".into(),
                },
                EntitySchema {
                    name: "card".into(),
                    key_type: "int64".into(),
                },
            ],
            views: vec![
                ViewSchema {
                    name: "u".into(),
                    version: 1,
                    entity: "user".into(),
                    features: vec![
                        FeatureSchema {
                            name: "a".into(),
                            r#type: "float64".into(),
                        },
                        FeatureSchema {
                            name: "b".into(),
                            r#type: "string".into(),
                        },
                    ],
                    topic: "t".into(),
                    ttl_micros: 0,
                    push_fields: vec![],
                },
                ViewSchema {
                    name: "c".into(),
                    version: 1,
                    entity: "card".into(),
                    features: vec![],
                    topic: "c".into(),
                    ttl_micros: 0,
                    push_fields: vec![],
                },
                ViewSchema {
                    name: "aggs".into(),
                    version: 1,
                    entity: "user".into(),
                    features: vec![FeatureSchema {
                        name: "amount_sum_1h".into(),
                        r#type: "float64".into(),
                    }],
                    topic: "raw".into(),
                    ttl_micros: 0,
                    push_fields: vec![FeatureSchema {
                        name: "amount".into(),
                        r#type: "float64".into(),
                    }],
                },
            ],
            feature_services: vec![FeatureServiceSchema {
                name: "svc".into(),
                features: vec!["u:a".into()],
            }],
            limits: Some(RequestLimits {
                max_batch_keys: 3,
                max_features_per_request: 2,
                max_request_bytes: 1 << 20,
                max_push_rows: 2,
                max_key_bytes: 8,
            }),
            // u@0 is retained: v1 serves (a rolled-back view).
            retained_views: vec![ViewSchema {
                name: "u".into(),
                version: 0,
                entity: "user".into(),
                features: vec![FeatureSchema {
                    name: "old".into(),
                    r#type: "int64".into(),
                }],
                topic: "t".into(),
                ttl_micros: 0,
                push_fields: vec![],
            }],
        })
    }

    #[test]
    fn knows_refs_names_views_readable_versions_and_services() {
        let s = schema();
        let f = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(s.knows_refs(&f(&["u:a", "u@1:b", "u@0:old", "u:*"]), ""));
        assert!(!s.knows_refs(&f(&["u:nosuch"]), ""));
        // A pinned version that neither serves nor is retained (pending, dropped).
        assert!(!s.knows_refs(&f(&["u@3:b"]), ""));
        assert!(!s.knows_refs(&f(&["u:a", "gone:a"]), ""));
        assert!(!s.knows_refs(&f(&["gone@2:a"]), ""));
        assert!(s.knows_refs(&[], "svc"));
        assert!(!s.knows_refs(&[], "nosvc"));
    }

    #[test]
    fn a_lookup_may_pin_the_serving_or_a_retained_version() {
        let s = schema();
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keys = [EntityKey::from("k")];
        assert_eq!(s.check_lookup(&f(&["u@1:a", "u@0:old"]), "", &keys), Ok(()));
        assert_eq!(s.check_lookup(&f(&["u@0:*"]), "", &keys), Ok(()));
        assert!(matches!(
            s.check_lookup(&f(&["u@0:a"]), "", &keys),
            Err(Problem::Unknown(m)) if m.contains("view \"u@0\" has no feature \"a\"")
        ));
        // One view after another within a lookup: each reference is checked against
        // its own view and version, whatever the previous reference named.
        assert!(matches!(
            s.check_lookup(&f(&["u:a", "u:b", "u:zz"]), "", &keys),
            Err(Problem::Unknown(m)) if m.contains("view \"u\" has no feature \"zz\"")
        ));
        assert!(matches!(
            s.check_lookup(&f(&["u@0:old", "u:old"]), "", &keys),
            Err(Problem::Unknown(m)) if m.contains("view \"u\" has no feature \"old\"")
        ));
        assert!(matches!(
            s.check_lookup(&f(&["u:a", "u@0:a"]), "", &keys),
            Err(Problem::Unknown(m)) if m.contains("view \"u@0\" has no feature \"a\"")
        ));
        assert!(matches!(
            s.check_lookup(&f(&["u@7:a"]), "", &keys),
            Err(Problem::Unknown(m)) if m.contains("no version 7 that serves or is retained")
        ));
        assert!(
            invalid(s.check_lookup(&f(&["u@x:a"]), "", &keys))
                .contains("\"x\" is not a version number")
        );
        // Pushes name the view, never a version.
        assert!(matches!(s.push_schema("u@0"), Err(Problem::Unknown(_))));
    }

    fn invalid(r: Result<(), Problem>) -> String {
        match r {
            Err(Problem::Invalid(m) | Problem::Mismatch(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn lookups_are_checked_before_sending() {
        let s = schema();
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keys = [EntityKey::from("k")];
        assert_eq!(s.check_lookup(&f(&["u:a", "u:b"]), "", &keys), Ok(()));
        assert_eq!(s.check_lookup(&[], "svc", &keys), Ok(()));
        assert!(
            matches!(s.check_lookup(&f(&["u:zz"]), "", &keys), Err(Problem::Unknown(m)) if m.contains("no feature \"zz\""))
        );
        assert!(matches!(
            s.check_lookup(&f(&["nope:a"]), "", &keys),
            Err(Problem::Unknown(_))
        ));
        assert!(matches!(
            s.check_lookup(&[], "nope", &keys),
            Err(Problem::Unknown(_))
        ));
        assert!(invalid(s.check_lookup(&f(&["u:a"]), "", &[])).contains("no entity keys"));
        let four = vec![EntityKey::from("k"); 4];
        assert!(invalid(s.check_lookup(&f(&["u:a"]), "", &four)).contains("max_batch_keys = 3"));
        assert!(
            invalid(s.check_lookup(&f(&["u:a"]), "", &[EntityKey::from(5i64)]))
                .contains("entity_keys[0] is int64, but entity \"user\" has string keys")
        );
        assert!(
            invalid(s.check_lookup(&f(&["u:a"]), "", &[EntityKey::from("123456789")]))
                .contains("9 bytes")
        );
        assert!(invalid(s.check_lookup(&f(&["u:*", "u:a"]), "", &keys)).contains("expands to 3"));
        assert!(
            invalid(s.check_lookup(&f(&["u:a", "c:*"]), "", &keys)).contains("share an entity")
        );
        assert!(invalid(s.check_lookup(&f(&["ua"]), "", &keys)).contains("view:feature"));
        assert!(invalid(s.check_lookup(&f(&["u:a"]), "svc", &keys)).contains("not both"));
    }

    /// What a newer registry could make right is a `Mismatch` (refresh, then reject);
    /// what no registry could is `Invalid` (reject at once).
    #[test]
    fn problems_a_fresher_schema_could_fix_are_mismatches() {
        let s = schema();
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keys = vec![EntityKey::from("k1")];
        let mismatch = |r: Result<(), Problem>| matches!(r, Err(Problem::Mismatch(_)));
        let invalid_now = |r: Result<(), Problem>| matches!(r, Err(Problem::Invalid(_)));
        let row = |k: EntityKey, f: &[(&str, Value)]| PushRow {
            entity_key: Some(k),
            event_time_micros: 1,
            features: f.iter().map(|(n, v)| (n.to_string(), v.clone())).collect(),
            delete: false,
        };
        // A retyped feature, a retyped entity key, a changed limit, a re-keyed view.
        assert!(mismatch(
            s.check_push("u", &[row("k".into(), &[("a", "x".into())])])
        ));
        assert!(mismatch(s.check_lookup(
            &f(&["u:a"]),
            "",
            &[EntityKey::from(5)]
        )));
        assert!(mismatch(s.check_lookup(
            &f(&["u:a"]),
            "",
            &[EntityKey::from("123456789")]
        )));
        let four: Vec<EntityKey> = (0..4).map(|i| EntityKey::from(format!("k{i}"))).collect();
        assert!(mismatch(s.check_lookup(&f(&["u:a"]), "", &four)));
        assert!(mismatch(s.check_lookup(&f(&["u:a", "c:*"]), "", &keys)));
        // Malformed under any registry.
        assert!(invalid_now(s.check_lookup(&f(&["u:a"]), "", &[])));
        assert!(invalid_now(s.check_lookup(&f(&["ua"]), "", &keys)));
        assert!(invalid_now(s.check_lookup(&f(&["u:a"]), "svc", &keys)));
        assert!(invalid_now(s.check_lookup(
            &f(&["u:a"]),
            "",
            &[EntityKey::from("")]
        )));
        assert!(invalid_now(s.check_lookup(
            &f(&["u:a"]),
            "",
            &[EntityKey { kind: None }]
        )));
        assert!(invalid_now(s.check_push("u", &[])));
        let mut negative = row("k".into(), &[("a", 1.5.into())]);
        negative.event_time_micros = -1;
        assert!(invalid_now(s.check_push("u", &[negative])));
    }

    #[test]
    fn int_key_lengths_match_their_decimal_text() {
        let s = schema(); // max_key_bytes = 8
        for i in [0i64, 7, -7, 9_999_999, -999_999, 10_000_000, i64::MIN] {
            let fits = i.to_string().len() <= 8;
            let r = s.check_keys("card", "k", std::iter::once(Some(&EntityKey::from(i))));
            assert_eq!(r.is_ok(), fits, "{i}");
        }
    }

    #[test]
    fn pushes_are_checked_before_sending() {
        let s = schema();
        let row = |k: EntityKey, f: &[(&str, Value)]| PushRow {
            entity_key: Some(k),
            event_time_micros: 1,
            features: f.iter().map(|(n, v)| (n.to_string(), v.clone())).collect(),
            delete: false,
        };
        assert_eq!(
            s.check_push("u", &[row("k".into(), &[("a", 1.5.into())])]),
            Ok(())
        );
        assert!(
            invalid(s.check_push("u", &[row("k".into(), &[("a", "x".into())])]))
                .contains("feature \"a\" is string, but the view declares float64")
        );
        assert!(matches!(
            s.check_push("u", &[row("k".into(), &[("q", 1.5.into())])]),
            Err(Problem::Unknown(_))
        ));
        assert!(invalid(s.check_push("u", &[])).contains("no rows"));
        let three = vec![row("k".into(), &[]); 3];
        assert!(invalid(s.check_push("u", &three)).contains("max_push_rows = 2"));
        assert!(invalid(s.check_push("c", &[row("k".into(), &[])])).contains("int64 keys"));
        // An aggregation view takes its raw inputs, not its computed features.
        assert_eq!(
            s.check_push("aggs", &[row("k".into(), &[("amount", 2.0.into())])]),
            Ok(())
        );
        assert!(matches!(
            s.check_push("aggs", &[row("k".into(), &[("amount_sum_1h", 2.0.into())])]),
            Err(Problem::Unknown(_))
        ));
    }
}
