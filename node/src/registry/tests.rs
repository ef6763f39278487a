use super::*;

const BASE: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "user_stats"
entity = "user"
ttl = "7d"
owner = "fraud@example.com"
tags = { team = "fraud" }
[view.source]
topic = "user-stats"
event_time_field = "ts"
[[view.feature]]
name = "txn_count"
type = "int64"
[[view.feature]]
name = "avg_amount"
type = "float64"
source_field = "avg"

[[feature_service]]
name = "fraud_v1"
features = ["user_stats:*"]
"#;

fn registry() -> Registry {
    let r = Registry::in_memory();
    let changes = r.apply_toml(BASE, false).unwrap();
    assert_eq!(changes.len(), 3, "{changes:?}");
    r
}

#[test]
fn applies_a_valid_file() {
    let r = registry();
    let snap = r.snapshot();
    let view = &snap.views["user_stats"];
    assert_eq!(view.version, 1);
    assert_eq!(view.ttl, Some(std::time::Duration::from_secs(7 * 86400)));
    assert_eq!(view.features[1].source_field, "avg");
    assert_eq!(snap.feature_services["fraud_v1"].features.len(), 2);
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.topics(), vec!["user-stats".to_string()]);
}

#[test]
fn reapplying_the_same_file_changes_nothing() {
    let r = registry();
    assert!(r.apply_toml(BASE, false).unwrap().is_empty());
    assert_eq!(r.snapshot().generation, 1);
}

fn expect_err(r: &Registry, text: &str, needle: &str) {
    let before = r.snapshot();
    let err = r.apply_toml(text, false).unwrap_err().to_string();
    assert!(
        err.contains(needle),
        "error {err:?} should contain {needle:?}"
    );
    let after = r.snapshot();
    assert_eq!(
        before.generation, after.generation,
        "a rejected change must change nothing"
    );
    assert_eq!(before.views.len(), after.views.len());
}

#[test]
fn rejects_bad_definitions_with_named_errors() {
    let r = registry();
    expect_err(
        &r,
        "[[entity]]\nname = \"Bad Name\"\nkey_type = \"string\"",
        "entity name \"Bad Name\"",
    );
    expect_err(
        &r,
        "[[entity]]\nname = \"e\"\nkey_type = \"uuid\"",
        "key_type \"uuid\"",
    );
    expect_err(
        &r,
        "[[view]]\nname = \"v\"\nentity = \"nobody\"\n[view.source]\ntopic = \"t\"\n[[view.feature]]\nname = \"f\"\ntype = \"int64\"",
        "entity \"nobody\" is not defined",
    );
    expect_err(
        &r,
        "[[view]]\nname = \"v\"\nentity = \"user\"\n[view.source]\ntopic = \"t\"\n[[view.feature]]\nname = \"f\"\ntype = \"decimal\"",
        "type \"decimal\" is unknown",
    );
    expect_err(
        &r,
        "[[view]]\nname = \"v\"\nentity = \"user\"\nttl = \"soon\"\n[view.source]\ntopic = \"t\"\n[[view.feature]]\nname = \"f\"\ntype = \"int64\"",
        "ttl \"soon\"",
    );
    expect_err(
        &r,
        "[[view]]\nname = \"v\"\nentity = \"user\"\n[view.source]\ntopic = \"bad topic\"\n[[view.feature]]\nname = \"f\"\ntype = \"int64\"",
        "not a valid Kafka topic",
    );
    expect_err(
        &r,
        "[[feature_service]]\nname = \"s\"\nfeatures = [\"user_stats:nope\"]",
        "has no feature \"nope\"",
    );
    expect_err(&r, "[[view]]\nnam = 1", "definition file is not valid");
}

#[test]
fn compatible_and_incompatible_view_changes() {
    let r = registry();
    // Appending a feature and changing the TTL keeps the version's data.
    let text = BASE.replace("ttl = \"7d\"", "ttl = \"1d\"").replace(
        "[[feature_service]]",
        "[[view.feature]]\nname = \"last_country\"\ntype = \"string\"\n\n[[feature_service]]",
    );
    let changes = r.apply_toml(&text, false).unwrap();
    assert!(
        changes.iter().any(|c| c.contains("updated (compatible)")),
        "{changes:?}"
    );
    assert_eq!(r.snapshot().views["user_stats"].features.len(), 3);

    expect_err(
        &r,
        &BASE.replace("type = \"int64\"", "type = \"string\""),
        "changes type",
    );
    expect_err(
        &r,
        &BASE.replace("topic = \"user-stats\"", "topic = \"other\""),
        "incompatible change",
    );
    // Incompatible changes are accepted as a new version, built while v1 serves.
    let v2 = BASE
        .replace("ttl = \"7d\"", "ttl = \"7d\"\nversion = 2")
        .replace("type = \"int64\"", "type = \"string\"");
    let changes = r.apply_toml(&v2, false).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.contains("user_stats v2: building")),
        "{changes:?}"
    );
    let snap = r.snapshot();
    assert_eq!(snap.views["user_stats"].version, 1, "v1 keeps serving");
    assert_eq!(snap.pending["user_stats"].version, 2);
    assert!(
        r.apply_toml(&v2, false).unwrap().is_empty(),
        "re-applying the pending version changes nothing"
    );
    expect_err(&r, BASE, "is an incompatible change");
    r.promote("user_stats", 2, 0).unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.views["user_stats"].version, 2);
    assert!(snap.pending.is_empty());
    assert_eq!(
        snap.views["user_stats"].features[0].value_type,
        FeatureType::String
    );
    expect_err(&r, BASE, "version 1 is retained");
    assert!(r.promote("user_stats", 3, 0).is_err());
}

#[test]
fn dry_run_changes_nothing() {
    let r = Registry::in_memory();
    let changes = r.apply_toml(BASE, true).unwrap();
    assert_eq!(changes.len(), 3);
    assert!(r.snapshot().views.is_empty());
}

#[test]
fn persists_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.json");
    {
        let r = Registry::open(&path).unwrap();
        r.apply_toml(BASE, false).unwrap();
    }
    let r = Registry::open(&path).unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.views["user_stats"].features.len(), 2);
    assert_eq!(snap.feature_services.len(), 1);
}

#[test]
fn history_is_parsed_bounded_and_only_shrinks_in_place() {
    let r = registry();
    let with = |h: &str| BASE.replace("ttl = \"7d\"", &format!("ttl = \"7d\"\nhistory = \"{h}\""));
    expect_err(
        &r,
        &with("forever"),
        "history \"forever\" is not a duration",
    );
    expect_err(&r, &with("10s"), "must be between 1m and 400d");
    expect_err(&r, &with("500d"), "must be between 1m and 400d");
    // Keeping history the view did not keep needs a new version (which re-ingests).
    expect_err(&r, &with("30d"), "keeping history, or more of it");
    let v2 = with("30d").replace("ttl = \"7d\"", "ttl = \"7d\"\nversion = 2");
    r.apply_toml(&v2, false).unwrap();
    let snap = r.snapshot();
    let pending = &snap.pending["user_stats"];
    assert_eq!(
        pending.history,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    // On a serving version: keeping less is a compatible change, keeping more is not.
    let r = Registry::in_memory();
    r.apply_toml(&with("30d"), false).unwrap();
    r.apply_toml(&with("7d"), false).unwrap();
    let snap = r.snapshot();
    assert_eq!(
        snap.views["user_stats"].history,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
    assert_eq!(snap.views["user_stats"].version, 1);
    expect_err(&r, &with("8d"), "keeping history, or more of it");
}
