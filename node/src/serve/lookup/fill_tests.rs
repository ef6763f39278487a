//! A row's answer ([`super::fill_row`]) against an oracle that decodes the whole row with
//! the allocating decoder and pushes each wanted column's value by the documented rule.

use prost::Message as _;
use quiver_proto::ShardId;
use quiver_proto::lookup_request::LookupRequest;
use quiver_proto::packed::ColumnBuilder;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{FeatureStatus, GetOnlineFeaturesRequest};
use quiver_testkit::values::{FEATURE_TYPES, ValueGen};

use super::{ExecError, fill_row, fill_rows};
use crate::config::{Limits, NodeConfigFile};
use crate::registry::{Registry, RegistrySnapshot};
use crate::serve::plan::{CompiledPlan, compile};
use crate::storage::row_codec::{decode_row, encode_row, encode_tombstone};

const TTL_MICROS: i64 = 3_600_000_000;
const NOW: i64 = 1_000 * TTL_MICROS;

fn defs() -> String {
    view_defs("v", &FEATURE_TYPES)
}

/// Entity `user` and view `view` (TTL 1 h) with features `f0..` of `types`.
fn view_defs(view: &str, types: &[&str]) -> String {
    let mut t = format!(
        "[[entity]]\nname = \"user\"\nkey_type = \"string\"\n[[view]]\nname = \"{view}\"\nentity = \"user\"\nttl = \"1h\"\n[view.source]\ntopic = \"t\"\n",
    );
    for (i, ty) in types.iter().enumerate() {
        t.push_str(&format!(
            "[[view.feature]]\nname = \"f{i}\"\ntype = \"{ty}\"\n"
        ));
    }
    t
}

/// Case `case`'s feature list over view `view` of `types` features and its compiled plan:
/// every tenth case `view:*`, the others 1 to `most` random features (repeats, any order).
fn random_plan(
    rng: &mut Rng,
    snapshot: &RegistrySnapshot,
    limits: &Limits,
    view: &str,
    types: usize,
    most: u64,
    case: usize,
) -> (Vec<usize>, CompiledPlan) {
    let features: Vec<usize> = if case.is_multiple_of(10) {
        (0..types).collect()
    } else {
        (0..1 + rng.below(most))
            .map(|_| rng.below(types as u64) as usize)
            .collect()
    };
    let refs = if case.is_multiple_of(10) {
        vec![format!("{view}:*")]
    } else {
        features.iter().map(|f| format!("{view}:f{f}")).collect()
    };
    let req = LookupRequest::from(GetOnlineFeaturesRequest {
        features: refs,
        ..Default::default()
    });
    let plan = compile(&req, snapshot, limits).unwrap();
    (features, plan)
}

/// Random rows and choices from a fixed seed: the same cases every run.
struct Rng(ValueGen);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.bits() % n
    }

    /// A value of feature `f`'s type (edge values included), or null.
    fn value(&mut self, f: usize) -> Option<Kind> {
        (self.below(6) != 0).then(|| self.0.value(FEATURE_TYPES[f]))
    }

    /// A stored row: absent, a tombstone, expired, or present with a prefix of the
    /// features (a row written before the later ones were appended).
    fn row(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.below(8) {
            0 => return None,
            1 => encode_tombstone(NOW - 5, &mut out),
            kind => {
                let held = if self.below(3) == 0 {
                    self.below(FEATURE_TYPES.len() as u64 + 1) as usize
                } else {
                    FEATURE_TYPES.len()
                };
                let values: Vec<Option<Kind>> = (0..held).map(|f| self.value(f)).collect();
                let age = if kind == 2 {
                    TTL_MICROS + 1
                } else {
                    TTL_MICROS
                };
                encode_row(NOW - age, &values, &mut out);
            }
        }
        Some(out)
    }
}

/// The answer by the rule: no row or a tombstone is NOT_FOUND (time 0); a row older than
/// the TTL is EXPIRED (its time); otherwise each column's feature, null when the row is
/// null there or predates it.
fn oracle(
    plan: &CompiledPlan,
    features: &[usize],
    row: Option<&[u8]>,
    columns: &mut [ColumnBuilder],
) {
    let decoded = row.map(|r| decode_row(r).unwrap());
    for (c, &f) in features.iter().enumerate() {
        match &decoded {
            None => columns[c].push_missing(FeatureStatus::NotFound, 0),
            Some(d) if d.header.tombstone => columns[c].push_missing(FeatureStatus::NotFound, 0),
            Some(d) if NOW - d.header.event_time_micros > TTL_MICROS => {
                columns[c].push_missing(FeatureStatus::Expired, d.header.event_time_micros);
            }
            Some(d) => columns[c].push_kind(
                d.values.get(f).and_then(Option::as_ref),
                d.header.event_time_micros,
            ),
        }
    }
    assert_eq!(plan.types.len(), features.len());
}

fn builders(plan: &CompiledPlan, rows: usize) -> Vec<ColumnBuilder> {
    plan.types
        .iter()
        .map(|&ty| ColumnBuilder::new(String::new(), ty, rows, true))
        .collect()
}

/// Random feature lists (repeats, any order, `v:*`) over random rows of every kind:
/// every column equals the oracle's, statuses, values, nulls and event times.
#[test]
fn a_rows_answer_is_its_decoded_values_by_the_rule() {
    let registry = Registry::in_memory();
    registry.apply_toml(&defs(), false).unwrap();
    let snapshot = registry.snapshot();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let mut seeded = ValueGen::new(0x5eed_f111);
    // NaN is not equal to itself: the columns are compared with `==`.
    seeded.non_finite = false;
    let mut rng = Rng(seeded);
    for case in 0..200 {
        let (features, plan) = random_plan(
            &mut rng,
            &snapshot,
            &limits,
            "v",
            FEATURE_TYPES.len(),
            12,
            case,
        );
        let vp = &plan.views[0];
        let rows: Vec<Option<Vec<u8>>> = (0..20).map(|_| rng.row()).collect();
        let mut got = builders(&plan, rows.len());
        let mut want = builders(&plan, rows.len());
        for row in &rows {
            fill_row(vp, ShardId(0), row.as_deref(), NOW, &mut got)
                .unwrap_or_else(|_| panic!("case {case}: row {row:?} failed"));
            oracle(&plan, &features, row.as_deref(), &mut want);
        }
        for (c, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert_eq!(
                g.finish(),
                w.finish(),
                "case {case} ({features:?}), column {c}"
            );
        }
    }
}

/// A stored value of another type than the declared one, or a corrupt row, is an error
/// that names the shard, never a value.
#[test]
fn a_mistyped_or_corrupt_row_is_an_error() {
    let registry = Registry::in_memory();
    registry.apply_toml(&defs(), false).unwrap();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let req = LookupRequest::from(GetOnlineFeaturesRequest {
        features: vec!["v:f1".into(), "v:f3".into()],
        ..Default::default()
    });
    let plan = compile(&req, &registry.snapshot(), &limits).unwrap();
    let mut row = Vec::new();
    // f1 is int64; a string stored there is not an int64.
    encode_row(NOW, &[None, Some(Kind::StringValue("x".into()))], &mut row);
    let mut columns = builders(&plan, 1);
    let err = fill_row(&plan.views[0], ShardId(3), Some(&row), NOW, &mut columns);
    let Err(ExecError::Serve(e)) = err else {
        panic!("a mistyped value was answered")
    };
    assert!(e.to_string().contains("shard 3"), "{e}");
    // A row cut inside f3's bytes.
    let values = vec![
        Some(Kind::BoolValue(true)),
        Some(Kind::Int64Value(-7)),
        None,
        Some(Kind::StringValue("héllo".into())),
    ];
    encode_row(NOW, &values, &mut row);
    let cut = &row[..row.len() - 2];
    let mut columns = builders(&plan, 1);
    let err = fill_row(&plan.views[0], ShardId(3), Some(cut), NOW, &mut columns);
    assert!(
        matches!(err, Err(ExecError::Serve(ref e)) if e.to_string().contains("corrupt row")),
        "a cut row was answered"
    );
}

/// The features of view `w`: fixed-width only, so its rows have a [`FixedLayout`].
///
/// [`FixedLayout`]: crate::storage::row_codec::FixedLayout
const FIXED_TYPES: [&str; 6] = ["float64", "bool", "float64", "float64", "bool", "float64"];

/// Runs of rows of a fixed layout, read at offsets column by column ([`fill_rows`]),
/// answer bit for bit what the oracle does, with the runs broken by every other kind of
/// row (absent, tombstone, expired, a null, one that predates a feature, one from before
/// the TTL's edge); NaN payloads and signed zeros included.
#[test]
fn runs_of_fixed_layout_rows_answer_what_the_oracle_does() {
    let registry = Registry::in_memory();
    registry
        .apply_toml(&view_defs("w", &FIXED_TYPES), false)
        .unwrap();
    let snapshot = registry.snapshot();
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let mut rng = Rng(ValueGen::new(0xf1ed_0ff5));
    let mut runs = 0;
    for case in 0..300 {
        let (features, plan) = random_plan(
            &mut rng,
            &snapshot,
            &limits,
            "w",
            FIXED_TYPES.len(),
            10,
            case,
        );
        let vp = &plan.views[0];
        assert!(
            vp.fixed.is_some(),
            "a view of bools and float64s has a layout"
        );
        let rows: Vec<Option<Vec<u8>>> = (0..40)
            .map(|_| {
                let mut out = Vec::new();
                let full = |rng: &mut Rng| -> Vec<Option<Kind>> {
                    FIXED_TYPES.iter().map(|t| Some(rng.0.value(t))).collect()
                };
                match rng.below(12) {
                    0 => return None,
                    1 => encode_tombstone(NOW - 5, &mut out),
                    2 => encode_row(NOW - TTL_MICROS - 1, &full(&mut rng), &mut out),
                    3 => {
                        let mut v = full(&mut rng);
                        v[rng.below(FIXED_TYPES.len() as u64) as usize] = None;
                        encode_row(NOW - 9, &v, &mut out);
                    }
                    4 => {
                        let held = rng.below(FIXED_TYPES.len() as u64) as usize;
                        encode_row(NOW - 9, &full(&mut rng)[..held], &mut out);
                    }
                    // Exactly at the TTL: not expired.
                    5 => encode_row(NOW - TTL_MICROS, &full(&mut rng), &mut out),
                    _ => encode_row(
                        NOW - rng.below(TTL_MICROS as u64) as i64,
                        &full(&mut rng),
                        &mut out,
                    ),
                }
                Some(out)
            })
            .collect();
        runs += rows
            .iter()
            .filter(|r| {
                r.as_deref()
                    .is_some_and(|r| vp.fixed.as_ref().unwrap().header(r).is_some())
            })
            .count();
        let mut got = builders(&plan, rows.len());
        let mut want = builders(&plan, rows.len());
        fill_rows(
            vp,
            rows.iter().map(|r| Ok((ShardId(0), r.as_deref()))),
            NOW,
            &mut got,
        )
        .unwrap_or_else(|_| panic!("case {case} failed"));
        for row in &rows {
            oracle(&plan, &features, row.as_deref(), &mut want);
        }
        for (c, (g, w)) in got.into_iter().zip(want).enumerate() {
            assert_eq!(
                g.finish().encode_to_vec(),
                w.finish().encode_to_vec(),
                "case {case} ({features:?}), column {c}"
            );
        }
    }
    assert!(runs > 300 * 20, "only {runs} rows were read at offsets");
}
