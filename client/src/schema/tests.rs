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
    assert!(invalid(s.check_lookup(&f(&["u:a", "c:*"]), "", &keys)).contains("share an entity"));
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
