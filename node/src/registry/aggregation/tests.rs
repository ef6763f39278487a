use crate::registry::{FeatureType, Registry};

const HEAD: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "txn_aggs"
entity = "user"
[view.source]
topic = "txns"
event_time_field = "ts"
[view.aggregation]
[[view.input]]
name = "amount"
type = "float64"
[[view.input]]
name = "merchant"
type = "string"
"#;

fn with_feature(feature: &str) -> String {
    format!("{HEAD}[[view.feature]]\n{feature}\n")
}

#[test]
fn a_valid_view_derives_each_feature_type() {
    let r = Registry::in_memory();
    let text = format!(
        "{HEAD}{}",
        [
            "name = \"n_1h\"\nfunction = \"count\"\nwindow = \"1h\"",
            "name = \"sum_1h\"\nfunction = \"sum\"\ninput = \"amount\"\nwindow = \"1h\"",
            "name = \"avg_7d\"\nfunction = \"avg\"\ninput = \"amount\"\nwindow = \"7d\"",
            "name = \"last3\"\nfunction = \"last_n\"\ninput = \"merchant\"\nwindow = \"lifetime\"\nn = 3",
            "name = \"merchants\"\nfunction = \"count_distinct\"\ninput = \"merchant\"\nwindow = \"90d\"",
            "name = \"big\"\nfunction = \"count\"\ninput = \"amount\"\nwindow = \"10m\"\nfilter = \"amount >= 100.5\"",
        ]
        .iter()
        .map(|f| format!("[[view.feature]]\n{f}\n"))
        .collect::<String>()
    );
    r.apply_toml(&text, false).unwrap();
    let snap = r.snapshot();
    let v = &snap.views["txn_aggs"];
    let types: Vec<_> = v.features.iter().map(|f| f.value_type).collect();
    use FeatureType as T;
    assert_eq!(
        types,
        vec![
            T::Int64,
            T::Float64,
            T::Float64,
            T::StringList,
            T::Int64,
            T::Int64
        ]
    );
    let agg = v.aggregation.as_ref().unwrap();
    // Default hops: 1h → 5m, 7d → 1h, 90d → 1d, 10m → 1m; lifetime has none.
    let hops: Vec<_> = agg
        .features
        .iter()
        .map(|f| f.hop_micros / 60_000_000)
        .collect();
    assert_eq!(hops, vec![5, 5, 60, 0, 1440, 1]);
    assert_eq!(agg.groups.len(), 5, "one tile group per resolution");
    // Describe shows window, hop and tile resolution.
    let json = serde_json::to_value(v.as_ref()).unwrap();
    let f = &json["aggregation"]["features"][2];
    assert_eq!(f["window"], "7days");
    assert_eq!(f["hop"], "1h");
    assert_eq!(f["tile_resolution"], "1h");
    assert_eq!(
        json["aggregation"]["features"][5]["filter"],
        "amount >= 100.5"
    );
    // Pushes to the view carry the raw inputs.
    assert_eq!(v.record_view().features.len(), 2);
    assert_eq!(v.record_view().features[0].name, "amount");
}

#[test]
fn bad_definitions_are_refused_naming_the_feature_and_change_nothing() {
    let cases = [
        (
            "name = \"f\"\nfunction = \"median\"\ninput = \"amount\"\nwindow = \"1h\"",
            "feature \"f\": function \"median\" is unknown",
        ),
        (
            "name = \"f\"\nfunction = \"sum\"\ninput = \"amount\"\nwindow = \"1h\"\nhop = \"7m\"",
            "feature \"f\": window \"1h\" is not a multiple of its hop \"7m\"",
        ),
        (
            "name = \"f\"\nfunction = \"sum\"\ninput = \"amount\"\nwindow = \"61m\"",
            "feature \"f\": window \"61m\" is not a multiple of its hop \"5m\" (the default for this window; set hop)",
        ),
        (
            "name = \"f\"\nfunction = \"sum\"\ninput = \"merchant\"\nwindow = \"1h\"",
            "feature \"f\": function sum cannot take a string input",
        ),
        (
            "name = \"f\"\nfunction = \"avg\"\ninput = \"amt\"\nwindow = \"1h\"",
            "feature \"f\": input \"amt\" is not a declared [[view.input]] (declared: amount, merchant)",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\nwindow = \"1h\"\nfilter = \"amt > 3\"",
            "feature \"f\": filter \"amt > 3\": \"amt\" is not a declared [[view.input]]",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\nwindow = \"1h\"\nfilter = \"merchant == m1\"",
            "is not a quoted string",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\nwindow = \"100d\"",
            "feature \"f\": window \"100d\" is outside 1m..=90d",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\nwindow = \"30s\"",
            "feature \"f\": window \"30s\" is outside 1m..=90d",
        ),
        (
            "name = \"f\"\nfunction = \"last_n\"\ninput = \"merchant\"\nwindow = \"1h\"\nn = 101",
            "feature \"f\": n = 101 is outside 1..=100",
        ),
        (
            "name = \"f\"\nfunction = \"last_n\"\ninput = \"amount\"\nwindow = \"1h\"",
            "feature \"f\": last_n needs n",
        ),
        (
            "name = \"f\"\nfunction = \"sum\"\nwindow = \"1h\"",
            "feature \"f\": function sum needs an input",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\ntype = \"float64\"\nwindow = \"1h\"",
            "feature \"f\": type \"float64\" does not match what count returns here (int64)",
        ),
        (
            "name = \"f\"\nfunction = \"count\"",
            "feature \"f\": has no window",
        ),
        (
            "name = \"f\"\nfunction = \"count\"\nwindow = \"1d\"\nhop = \"1m\"",
            "1440 tiles; at most 1000",
        ),
    ];
    for (feature, want) in cases {
        let r = Registry::in_memory();
        let before = r.snapshot().generation;
        let err = r
            .apply_toml(&with_feature(feature), false)
            .expect_err(feature)
            .to_string();
        assert!(err.contains(want), "{feature}:\n got {err}\nwant {want}");
        assert!(err.contains("view \"txn_aggs\""), "{err}");
        assert_eq!(r.snapshot().generation, before, "nothing applied");
        assert!(r.snapshot().views.is_empty());
    }
    // Aggregation keys on a plain view are refused too.
    let plain = "[[entity]]\nname = \"user\"\nkey_type = \"string\"\n[[view]]\nname = \"p\"\nentity = \"user\"\n[view.source]\ntopic = \"t\"\n[[view.feature]]\nname = \"x\"\ntype = \"int64\"\nwindow = \"1h\"\n";
    let err = Registry::in_memory()
        .apply_toml(plain, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("feature \"x\": window applies only to aggregation views"),
        "{err}"
    );
}

#[test]
fn an_aggregation_view_changes_only_by_a_new_version() {
    let r = Registry::in_memory();
    let one = with_feature("name = \"n\"\nfunction = \"count\"\nwindow = \"1h\"");
    r.apply_toml(&one, false).unwrap();
    let longer = one.replace("window = \"1h\"", "window = \"2h\"");
    let err = r.apply_toml(&longer, false).unwrap_err().to_string();
    assert!(err.contains("apply it as a new view version"), "{err}");
    // Metadata may change in place.
    let described = one.replace("[view.source]", "description = \"counts\"\n[view.source]");
    r.apply_toml(&described, false).unwrap();
    assert_eq!(r.snapshot().views["txn_aggs"].description, "counts");
    // A new version builds beside the serving one.
    let v2 = longer.replace(
        "entity = \"user\"\n[view.source]",
        "entity = \"user\"\nversion = 2\n[view.source]",
    );
    let changes = r.apply_toml(&v2, false).unwrap();
    assert!(
        changes.iter().any(|c| c.contains("v2: building")),
        "{changes:?}"
    );
}

#[test]
fn the_documented_example_applies() {
    let text = include_str!("../../../../docs/examples/aggregations.toml");
    let r = Registry::in_memory();
    r.apply_toml(text, false).unwrap();
    let snap = r.snapshot();
    let agg = snap.views["user_txn_aggs"].aggregation.clone().unwrap();
    assert_eq!(agg.features.len(), 10);
    // 1h at 5m (13) + 24h/7d at 1h (169, and 26 + 1 older) + 30d at 1d (31, and 1 + 1
    // older) + lifetime (1).
    assert_eq!(agg.max_tiles_per_entity(), 13 + (169 + 27) + (31 + 2) + 1);
}

#[test]
fn history_on_an_aggregation_view_keeps_its_events() {
    let r = Registry::in_memory();
    let text = with_feature("name = \"n\"\nfunction = \"count\"\nwindow = \"1h\"").replace(
        "entity = \"user\"\n",
        "entity = \"user\"\nhistory = \"30d\"\n",
    );
    r.apply_toml(&text, false).unwrap();
    let snap = r.snapshot();
    let view = snap.views.values().next().expect("the view applied");
    assert!(view.aggregation.is_some());
    assert_eq!(
        view.history,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
}
