use super::*;
use crate::registry::{FeatureType, Registry};

const ENTITY: &str = r#"
[[entity]]
name = "user"
key_type = "string"
"#;

/// `user_stats` at `version`, its one feature typed `ty`.
fn view(version: u32, ty: &str) -> String {
    format!(
        r#"
[[view]]
name = "user_stats"
version = {version}
entity = "user"
[view.source]
topic = "user-stats"
[[view.feature]]
name = "amount"
type = "{ty}"
"#
    )
}

const SERVICE: &str = r#"
[[feature_service]]
name = "fraud"
features = ["user_stats:*"]
"#;

const T0: i64 = 1_800_000_000_000;

/// A registry serving v2 (float64) with v1 (int64) retained since `T0`.
fn promoted() -> Registry {
    let r = Registry::in_memory();
    r.apply_toml(&format!("{ENTITY}{}{SERVICE}", view(1, "int64")), false)
        .unwrap();
    r.apply_toml(&view(2, "float64"), false).unwrap();
    assert_eq!(r.snapshot().pending["user_stats"].version, 2);
    r.promote("user_stats", 2, T0).unwrap();
    r
}

fn serving(r: &Registry) -> (u32, FeatureType) {
    let snap = r.snapshot();
    let v = &snap.views["user_stats"];
    (v.version, v.features[0].value_type)
}

fn retained(r: &Registry) -> Vec<(u32, i64)> {
    r.snapshot()
        .retained
        .get("user_stats")
        .map(|m| m.iter().map(|(v, r)| (*v, r.retired_at_ms)).collect())
        .unwrap_or_default()
}

fn rollback_to(r: &Registry, to: Option<u32>, at: i64) -> Result<u32, RegistryError> {
    r.change(|f| rollback(f, "user_stats", to, at))
}

#[test]
fn a_promotion_retains_the_version_it_replaces() {
    let r = promoted();
    assert_eq!(serving(&r), (2, FeatureType::Float64));
    assert_eq!(retained(&r), vec![(1, T0)]);
    let snap = r.snapshot();
    assert!(snap.pending.is_empty());
    // Retained versions are kept current: their topic is still consumed.
    assert_eq!(snap.live_versions().count(), 2);
    assert_eq!(snap.topics(), vec!["user-stats".to_string()]);
}

#[test]
fn rollback_serves_the_version_retired_last_and_retains_the_serving_one() {
    let r = promoted();
    let generation = r.snapshot().generation;
    assert_eq!(rollback_to(&r, None, T0 + 10).unwrap(), 1);
    assert_eq!(serving(&r), (1, FeatureType::Int64));
    assert_eq!(retained(&r), vec![(2, T0 + 10)]);
    assert!(r.snapshot().generation > generation);
    // And forward again, by number.
    assert_eq!(rollback_to(&r, Some(2), T0 + 20).unwrap(), 2);
    assert_eq!(serving(&r), (2, FeatureType::Float64));
    assert_eq!(retained(&r), vec![(1, T0 + 20)]);
    // The service resolves against whichever version serves.
    let snap = r.snapshot();
    assert_eq!(snap.feature_services["fraud"].features.len(), 1);
}

#[test]
fn bad_rollbacks_name_what_is_wrong_and_change_nothing() {
    let r = promoted();
    let before = r.definitions();
    let err = rollback_to(&r, Some(2), T0).unwrap_err();
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("version 2 already serves"),
        "{err}"
    );
    let err = rollback_to(&r, Some(7), T0).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err}");
    assert!(
        err.to_string()
            .contains("no retained version 7 (retained: v1)"),
        "{err}"
    );
    let err = r.change(|f| rollback(f, "nope", None, T0)).unwrap_err();
    assert!(
        err.to_string().contains("\"nope\" is not registered"),
        "{err}"
    );
    assert_eq!(r.definitions(), before);

    let fresh = Registry::in_memory();
    fresh
        .apply_toml(&format!("{ENTITY}{}", view(1, "int64")), false)
        .unwrap();
    let err = rollback_to(&fresh, None, T0).unwrap_err();
    assert!(
        err.to_string()
            .contains("no retained version to roll back to (v1 serves"),
        "{err}"
    );
}

#[test]
fn version_numbers_are_never_used_twice() {
    let r = promoted();
    rollback_to(&r, Some(1), T0 + 1).unwrap();
    // v2 is retained: applying a v2 definition again is refused (rollback serves it).
    let err = r.apply_toml(&view(2, "string"), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("version 2 is retained: `quiverctl view rollback` serves it again; a new definition needs version 3"),
        "{err}"
    );
    // Dropped: refused too, naming the next free number.
    r.change(|f| Ok((drop_version(f, "user_stats", 2)?, ())))
        .unwrap();
    assert!(retained(&r).is_empty());
    let dropped: Vec<_> = r.snapshot().dropped.iter().cloned().collect();
    assert_eq!(
        dropped,
        vec![DroppedVersion {
            view: "user_stats".into(),
            version: 2
        }]
    );
    let err = r.apply_toml(&view(2, "string"), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("version 2 was used before; a new definition needs version 3"),
        "{err}"
    );
    // A new number builds as usual.
    r.apply_toml(&view(3, "string"), false).unwrap();
    assert_eq!(r.snapshot().pending["user_stats"].version, 3);
}

#[test]
fn a_pending_version_replaced_by_another_is_dropped() {
    let r = promoted();
    r.apply_toml(&view(3, "string"), false).unwrap();
    r.apply_toml(&view(4, "bool"), false).unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.pending["user_stats"].version, 4);
    assert!(snap.dropped.contains(&DroppedVersion {
        view: "user_stats".into(),
        version: 3
    }));
    // Through the state machine's path as well.
    let base = r.definitions();
    let (merged, next, _) = crate::registry::validate_merge(
        &base,
        &DefinitionFile::from_toml(&view(5, "int64")).unwrap(),
    )
    .unwrap();
    assert!(merged.dropped_versions.iter().any(|d| d.version == 4));
    assert!(next.dropped.iter().any(|d| d.version == 4));
}

#[test]
fn deleting_a_view_retains_it_and_a_rollback_restores_it() {
    let r = promoted();
    let before = r.definitions();
    let err = r
        .change(|f| Ok((delete_view(f, "user_stats", T0 + 5)?, ())))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Incompatible(_)), "{err}");
    assert!(
        err.to_string().contains("used by feature service(s) fraud"),
        "{err}"
    );
    assert_eq!(r.definitions(), before);
    r.change(|f| Ok((delete_feature_service(f, "fraud")?, ())))
        .unwrap();
    r.change(|f| Ok((delete_view(f, "user_stats", T0 + 5)?, ())))
        .unwrap();
    let snap = r.snapshot();
    assert!(!snap.views.contains_key("user_stats"));
    assert_eq!(retained(&r), vec![(1, T0), (2, T0 + 5)]);
    // Deleting it again says how to restore it.
    let err = r
        .change(|f| Ok((delete_view(f, "user_stats", T0 + 6)?, ())))
        .unwrap_err();
    assert!(err.to_string().contains("already deleted"), "{err}");
    // The entity still keys retained versions.
    let err = r
        .change(|f| Ok((delete_entity(f, "user")?, ())))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("keys view version(s) user_stats v1, user_stats v2"),
        "{err}"
    );
    // Restored: the version deleted last serves again.
    assert_eq!(rollback_to(&r, None, T0 + 7).unwrap(), 2);
    assert_eq!(serving(&r), (2, FeatureType::Float64));
    assert_eq!(retained(&r), vec![(1, T0)]);
}

#[test]
fn retention_expires_the_oldest_first() {
    let r = promoted();
    rollback_to(&r, Some(1), T0 + 1_000).unwrap();
    let file = r.definitions();
    let hour = Duration::from_secs(3600);
    assert!(expired(&file, hour, T0 + 1_000).is_empty());
    assert!(expired(&file, hour, T0 + 3_600_000 + 999).is_empty());
    assert_eq!(
        expired(&file, hour, T0 + 3_601_000),
        vec![("user_stats".to_string(), 2)]
    );
}

#[test]
fn definition_files_cannot_write_the_lifecycle_sections() {
    let r = promoted();
    let text = format!(
        "{}\n[[dropped_view_version]]\nview = \"user_stats\"\nversion = 1\n",
        view(3, "int64")
    );
    let err = r.apply_toml(&text, false).unwrap_err();
    assert!(err.to_string().contains("written by quiver"), "{err}");
    assert!(r.snapshot().dropped.is_empty());
}

#[test]
fn the_state_machine_counts_registry_changes_and_rejects_bad_steps_unchanged() {
    use crate::control::state::{ClusterState, Command, CommandResult};
    let mut s = ClusterState::default();
    let file = DefinitionFile::from_toml(&format!("{ENTITY}{}", view(1, "int64"))).unwrap();
    let apply = |file: DefinitionFile| Command::ApplyDefinitions {
        file,
        applied_by: "admin".into(),
        applied_at_ms: T0,
    };
    assert!(matches!(
        s.apply(&apply(file)),
        CommandResult::Applied { .. }
    ));
    assert_eq!(s.registry_revision, 1);
    s.apply(&apply(
        DefinitionFile::from_toml(&view(2, "float64")).unwrap(),
    ));
    assert_eq!(s.registry_revision, 2);
    s.apply(&Command::PromoteView {
        view: "user_stats".into(),
        version: 2,
        at_ms: T0,
    });
    assert_eq!(s.registry_revision, 3);
    let before = s.clone();
    let r = s.apply(&Command::RollbackView {
        view: "user_stats".into(),
        to: Some(9),
        by: "admin".into(),
        at_ms: T0 + 1,
    });
    assert!(
        matches!(r, CommandResult::Rejected { invalid: false, .. }),
        "{r:?}"
    );
    assert_eq!(s, before);
    let r = s.apply(&Command::RollbackView {
        view: "user_stats".into(),
        to: None,
        by: "admin".into(),
        at_ms: T0 + 1,
    });
    let CommandResult::Applied { changes, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        changes,
        vec!["view user_stats v1: serving again (rollback by admin at 1800000000001)".to_string()]
    );
    assert_eq!(s.registry_revision, 4);
    assert_eq!(s.registry.views[0].version, Some(1));
    s.apply(&Command::DropViewVersion {
        view: "user_stats".into(),
        version: 2,
    });
    assert_eq!(s.registry_revision, 5);
    assert!(s.registry.retained_views.is_empty());
    assert_eq!(s.registry.dropped_versions.len(), 1);
}

#[test]
fn pinned_references_read_the_serving_or_a_retained_version_and_say_why_not() {
    let r = promoted();
    r.apply_toml(&view(3, "string"), false).unwrap();
    let snap = r.snapshot();
    let read = |reference: &str| {
        crate::registry::resolve_read_reference(&snap, reference).map(|(pairs, pinned)| {
            (
                pairs
                    .iter()
                    .map(|(v, i)| (v.version, *i))
                    .collect::<Vec<_>>(),
                pinned,
            )
        })
    };
    assert_eq!(read("user_stats:amount"), Ok((vec![(2, 0)], false)));
    assert_eq!(read("user_stats@2:amount"), Ok((vec![(2, 0)], true)));
    assert_eq!(read("user_stats@1:*"), Ok((vec![(1, 0)], true)));
    let err = read("user_stats@3:amount").unwrap_err();
    assert!(
        err.contains("version 3 of view \"user_stats\" is still being built"),
        "{err}"
    );
    let err = read("user_stats@9:amount").unwrap_err();
    assert!(
        err.contains("no version 9 that serves or is retained (readable: [1, 2])"),
        "{err}"
    );
    let err = read("user_stats@1:nope").unwrap_err();
    assert!(err.contains("version 1 has no feature \"nope\""), "{err}");
    r.change(|f| Ok((drop_version(f, "user_stats", 1)?, ())))
        .unwrap();
    let snap = r.snapshot();
    let err = crate::registry::resolve_read_reference(&snap, "user_stats@1:amount").unwrap_err();
    assert!(err.contains("was dropped"), "{err}");
}
