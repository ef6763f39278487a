//! Exactness against a brute-force oracle: randomised event streams (out of order within
//! the lateness, late beyond it, duplicates, tombstones, several entities on one shard)
//! are applied through the real store in random batches and answered through the real
//! lookup executor at many query times (tile boundaries included); the oracle keeps every
//! counted event and computes each feature from the documented window rule directly.

use std::collections::HashMap;
use std::sync::Arc;

use quiver_proto::packed::ValueRef;
use quiver_proto::v1::PackedColumn;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{EntityKey, FeatureStatus, GetOnlineFeaturesRequest};
use quiver_proto::{Partitioner, ShardId};

use super::tiles::{BodyAt, TileSet, tile_start};
use crate::config::NodeConfigFile;
use crate::registry::aggregation::{AggFeature, Function};
use crate::registry::{FeatureView, Registry};
use crate::serve::lookup::{ReadMode, execute, replicas_for};
use crate::serve::plan::plan_lookup;
use crate::storage::TestShard;
use crate::storage::{
    AggEvent, IngestBatch, ShardStore, StorageConfig, StorageEngine, TopicProgress, keys,
};

pub(super) const MIN: i64 = 60_000_000;
pub(super) const HOUR: i64 = 60 * MIN;
/// 2023-11-14T22:13:20Z, a tile boundary of every resolution used here.
pub(super) const T0: i64 = 1_700_000_000_000_000 - 1_700_000_000_000_000 % (24 * HOUR);

pub(super) const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "txn"
entity = "user"
[view.source]
topic = "txns"
event_time_field = "ts"
[view.aggregation]
allowed_lateness = "20m"
[[view.input]]
name = "amount"
type = "float64"
[[view.input]]
name = "qty"
type = "int64"
[[view.input]]
name = "merchant"
type = "string"
[[view.input]]
name = "flag"
type = "bool"
[[view.feature]]
name = "n_1h"
function = "count"
window = "1h"
[[view.feature]]
name = "n_big_10m"
function = "count"
input = "amount"
window = "10m"
filter = "amount > 50"
[[view.feature]]
name = "amount_sum_1h"
function = "sum"
input = "amount"
window = "1h"
[[view.feature]]
name = "qty_sum_24h"
function = "sum"
input = "qty"
window = "24h"
[[view.feature]]
name = "amount_avg_2h"
function = "avg"
input = "amount"
window = "2h"
hop = "10m"
[[view.feature]]
name = "amount_min_1h"
function = "min"
input = "amount"
window = "1h"
[[view.feature]]
name = "qty_max_7d"
function = "max"
input = "qty"
window = "7d"
[[view.feature]]
name = "amount_std_1d"
function = "stddev"
input = "amount"
window = "1d"
[[view.feature]]
name = "qty_var_life"
function = "variance"
input = "qty"
window = "lifetime"
[[view.feature]]
name = "merchant_last_1h"
function = "last"
input = "merchant"
window = "1h"
[[view.feature]]
name = "merchant_last3_30m"
function = "last_n"
input = "merchant"
window = "30m"
n = 3
[[view.feature]]
name = "amount_last5_1d"
function = "last_n"
input = "amount"
window = "1d"
n = 5
[[view.feature]]
name = "merchants_7d"
function = "count_distinct"
input = "merchant"
window = "7d"
[[view.feature]]
name = "flag_last"
function = "last"
input = "flag"
window = "lifetime"
[[view.feature]]
name = "m1_qty_sum_3h"
function = "sum"
input = "qty"
window = "3h"
filter = "merchant == 'm1'"
[[view.feature]]
name = "qty_min_life"
function = "min"
input = "qty"
window = "lifetime"
"#;

/// splitmix64: deterministic, seedable.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
pub(super) struct Event {
    pub(super) entity: String,
    pub(super) t: i64,
    /// amount, qty, merchant, flag; `None`: tombstone.
    pub(super) values: Option<Vec<Option<Kind>>>,
}

pub(super) fn random_events(rng: &mut Rng, n: usize) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(n);
    let mut clock = T0;
    for _ in 0..n {
        let entity = format!("u{}", rng.below(4));
        // Time moves on by 0–20 minutes, sometimes by days; events are stamped up to 30
        // minutes behind it (the lateness is 20 minutes: some are dropped).
        clock += if rng.below(40) == 0 {
            26 * HOUR
        } else {
            rng.below(20 * MIN as u64) as i64
        };
        // One in 30 arrives hours to days late: dropped under a short lateness, counted
        // into older tiles (the stored body) under a long one.
        let t = if rng.below(30) == 0 {
            clock - rng.below(3 * 24 * HOUR as u64) as i64
        } else {
            clock - rng.below(30 * MIN as u64) as i64
        };
        let roll = rng.below(100);
        if roll < 3 {
            out.push(Event {
                entity,
                t,
                values: None,
            });
            continue;
        }
        if roll < 8 && !out.is_empty() {
            // A duplicate of an earlier record (same content, counted again).
            let i = rng.below(out.len() as u64) as usize;
            let e = out[i].clone();
            out.push(e);
            continue;
        }
        let amount = match rng.below(10) {
            0 => None,
            _ => Some(Kind::Float64Value((rng.below(10_000) as f64) / 100.0)),
        };
        let qty = match rng.below(12) {
            0 => None,
            _ => Some(Kind::Int64Value(rng.below(200) as i64 - 50)),
        };
        let merchant = Some(Kind::StringValue(format!("m{}", rng.below(6))));
        let flag = Some(Kind::BoolValue(rng.below(2) == 0));
        out.push(Event {
            entity,
            t,
            values: Some(vec![amount, qty, merchant, flag]),
        });
    }
    out
}

/// One counted event: its time and inputs.
pub(super) type Counted = (i64, Vec<Option<Kind>>);

/// The oracle's state: per entity the counted events in log order, and the watermark.
#[derive(Default)]
pub(super) struct Oracle {
    pub(super) events: HashMap<String, Vec<Counted>>,
    pub(super) wm: Option<i64>,
}

impl Oracle {
    pub(super) fn apply(&mut self, e: &Event, lateness: i64) {
        let Some(values) = &e.values else {
            self.events.remove(&e.entity);
            return;
        };
        if self.wm.is_some_and(|w| e.t < w - lateness) {
            return;
        }
        self.wm = Some(self.wm.map_or(e.t, |w| w.max(e.t)));
        self.events
            .entry(e.entity.clone())
            .or_default()
            .push((e.t, values.clone()));
    }

    /// The answer of `f` for `entity` at query time `q`: `None` is NOT_FOUND.
    pub(super) fn answer(
        &self,
        view: &FeatureView,
        fi: usize,
        entity: &str,
        q: i64,
    ) -> Option<Answer> {
        let agg = view.aggregation.as_ref().unwrap();
        let f: &AggFeature = &agg.features[fi];
        let mut picked: Vec<(i64, usize, Option<&Kind>)> = Vec::new();
        for (seq, (t, vals)) in self.events.get(entity)?.iter().enumerate() {
            if f.window_micros
                .is_some_and(|w| *t < tile_start(q - w, f.hop_micros))
            {
                continue;
            }
            if f.filter
                .as_ref()
                .is_some_and(|x| !super::tiles::passes(x, vals))
            {
                continue;
            }
            let v = f.input.and_then(|i| vals[i].as_ref());
            if f.input.is_some() && v.is_none() {
                continue;
            }
            picked.push((*t, seq, v));
        }
        let nums: Vec<f64> = picked
            .iter()
            .filter_map(|(_, _, v)| match v {
                Some(Kind::Float64Value(x)) => Some(*x),
                Some(Kind::Int64Value(x)) => Some(*x as f64),
                _ => None,
            })
            .collect();
        let ints: Vec<i64> = picked
            .iter()
            .filter_map(|(_, _, v)| match v {
                Some(Kind::Int64Value(x)) => Some(*x),
                _ => None,
            })
            .collect();
        if picked.is_empty() {
            return None;
        }
        let float_input = matches!(picked[0].2, Some(Kind::Float64Value(_)));
        let n = nums.len() as f64;
        let mean = nums.iter().sum::<f64>() / n;
        let var = nums.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        picked.sort_by_key(|(t, seq, _)| (*t, *seq));
        Some(match f.function {
            Function::Count => Answer::I(picked.len() as i64),
            Function::Sum if float_input => Answer::F(nums.iter().sum()),
            Function::Sum => Answer::I(ints.iter().fold(0i64, |a, b| a.wrapping_add(*b))),
            Function::Avg => Answer::F(mean),
            Function::Min if float_input => {
                Answer::F(nums.iter().copied().fold(f64::INFINITY, f64::min))
            }
            Function::Max if float_input => {
                Answer::F(nums.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            }
            Function::Min => Answer::I(*ints.iter().min()?),
            Function::Max => Answer::I(*ints.iter().max()?),
            Function::Variance => Answer::F(var),
            Function::Stddev => Answer::F(var.sqrt()),
            Function::Last => Answer::K(picked.last()?.2.cloned()),
            Function::LastN => Answer::L(
                picked
                    .iter()
                    .rev()
                    .take(f.n)
                    .rev()
                    .map(|(_, _, v)| v.cloned())
                    .collect(),
            ),
            Function::CountDistinct => {
                let mut d: Vec<String> = picked.iter().map(|(_, _, v)| format!("{v:?}")).collect();
                d.sort();
                d.dedup();
                Answer::Approx(d.len() as i64)
            }
        })
    }
}

#[derive(Debug)]
pub(super) enum Answer {
    I(i64),
    F(f64),
    K(Option<Kind>),
    L(Vec<Option<Kind>>),
    Approx(i64),
}

pub(super) fn check(col: &PackedColumn, row: usize, want: Option<&Answer>, ctx: &str) {
    let Some(want) = want else {
        assert_eq!(
            col.status_at(row),
            FeatureStatus::NotFound,
            "{ctx}: want NOT_FOUND"
        );
        return;
    };
    assert_eq!(
        col.status_at(row),
        FeatureStatus::Present,
        "{ctx}: want {want:?}"
    );
    let got = col.value(row).unwrap_or_else(|| panic!("{ctx}: no value"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    match (want, got) {
        (Answer::I(w), ValueRef::Int64(g)) => assert_eq!(w, &g, "{ctx}"),
        (Answer::F(w), ValueRef::Float64(g)) => {
            assert!(close(w.to_owned(), g), "{ctx}: {w} vs {g}")
        }
        (Answer::K(w), g) => assert_eq!(w.clone(), Some(g.to_kind()), "{ctx}"),
        (Answer::L(w), g) => {
            let kind = g.to_kind();
            let got: Vec<Option<Kind>> = match kind {
                Kind::StringList(l) => l
                    .values
                    .into_iter()
                    .map(|s| Some(Kind::StringValue(s)))
                    .collect(),
                Kind::Float64List(l) => l
                    .values
                    .into_iter()
                    .map(|x| Some(Kind::Float64Value(x)))
                    .collect(),
                Kind::Int64List(l) => l
                    .values
                    .into_iter()
                    .map(|x| Some(Kind::Int64Value(x)))
                    .collect(),
                other => panic!("{ctx}: not a list: {other:?}"),
            };
            assert_eq!(w, &got[..], "{ctx}");
        }
        (Answer::Approx(w), ValueRef::Int64(g)) => {
            assert!(
                (w - g).abs() <= 1 + w / 20,
                "{ctx}: {w} distinct, estimated {g}"
            );
        }
        (w, g) => panic!("{ctx}: want {w:?}, got {g:?}"),
    }
}

fn lookup(
    store: &Arc<ShardStore>,
    snap: &crate::registry::RegistrySnapshot,
    entities: &[String],
    now: i64,
) -> Vec<PackedColumn> {
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let req = GetOnlineFeaturesRequest {
        features: vec!["txn:*".into()],
        entity_keys: entities
            .iter()
            .map(|e| EntityKey::from(e.as_str()))
            .collect(),
        ..Default::default()
    };
    let plan = plan_lookup(&req, snap, &limits, Partitioner::Murmur2, 1).unwrap();
    let local = HashMap::from([(ShardId(0), store.clone())]);
    let replicas = replicas_for(&plan, &local, 0).unwrap();
    let resp =
        execute(&plan, &replicas, now, ReadMode::Full).unwrap_or_else(|_| panic!("lookup failed"));
    resp.into_response().packed_columns
}

/// Applies `events` as one ingest batch ending at log offset `offset + len` (and to the
/// oracle); returns the day states rolled up.
pub(super) fn apply_batch(
    store: &ShardStore,
    view: &Arc<FeatureView>,
    oracle: &mut Oracle,
    events: &[Event],
    offset: i64,
) -> u64 {
    let lateness = view.aggregation.as_ref().unwrap().allowed_lateness_micros;
    let mut batch = IngestBatch {
        progress: vec![TopicProgress {
            topic: "txns".into(),
            next_offset: offset + events.len() as i64,
            consumed: events.len() as u64,
            malformed: 0,
        }],
        ..Default::default()
    };
    for e in events {
        oracle.apply(e, lateness);
        batch.events.push(AggEvent {
            topic: 0,
            view: view.clone(),
            key: keys::tile_key("txn", 1, e.entity.as_bytes()),
            event_time_micros: e.t,
            values: e.values.clone(),
            history: None,
        });
    }
    store.apply(&batch).unwrap().rollups
}

/// Where the runs found entities' bodies at their ends.
#[derive(Default)]
struct BodyShapes {
    inline: u32,
    stored: u32,
}

/// Runs one random stream against the oracle; returns the day states rolled up.
fn run_seed(seed: u64, lateness: &str, shapes: &mut BodyShapes) -> u64 {
    let TestShard {
        store,
        engine: _engine,
        dir: _dir,
    } = TestShard::open();
    let registry = Registry::in_memory();
    registry
        .apply_toml(&DEFS.replace("\"20m\"", &format!("{lateness:?}")), false)
        .unwrap();
    let snap = registry.snapshot();
    let view = snap.views["txn"].clone();
    let agg = view.aggregation.clone().unwrap();
    let mut rng = Rng(seed);
    let events = random_events(&mut rng, 400);
    let mut oracle = Oracle::default();
    let mut offset = 0i64;
    let (mut i, mut rollups) = (0, 0);
    while i < events.len() {
        let n = (1 + rng.below(40) as usize).min(events.len() - i);
        rollups += apply_batch(&store, &view, &mut oracle, &events[i..i + n], offset);
        offset += n as i64;
        i += n;
        // Query now and then while the stream is applied, not only at its end.
        if rng.below(4) == 0 {
            compare(&store, &snap, &view, &oracle, oracle.wm.unwrap_or(T0), seed);
        }
    }
    let wm = oracle.wm.unwrap();
    // Tile boundaries of every resolution, just before and after, and later times.
    let mut times = vec![wm - 5 * MIN, wm, wm + 1];
    for hop in [MIN, 10 * MIN, 5 * MIN, HOUR, 24 * HOUR] {
        let b = tile_start(wm, hop) + hop;
        times.extend([b - 1, b, b + 1]);
    }
    times.extend([
        wm + 59 * MIN,
        wm + 3 * HOUR,
        wm + 30 * HOUR,
        wm + 8 * 24 * HOUR,
    ]);
    for now in times {
        compare(&store, &snap, &view, &oracle, now, seed);
    }
    // Storage stays within the documented bound (recent and older tiles together), and
    // the head says truly where the body is.
    let bound = agg.max_tiles_per_entity() as usize;
    for u in 0..4 {
        let head_key = keys::tile_key("txn", 1, format!("u{u}").as_bytes());
        let mut body_key = head_key.clone();
        body_key[0] = keys::TILE_BODY_TAG;
        let get = |k: &Vec<u8>| store.get_rows([k]).remove(0).unwrap().map(|v| v.to_vec());
        let (head, body) = (get(&head_key), get(&body_key));
        let Some(head) = head else {
            assert!(body.is_none(), "seed {seed}: u{u} has a body and no head");
            continue;
        };
        let set = TileSet::decode(&agg, &head).unwrap();
        let mut tiles = set.tile_count();
        match &set.body_at {
            BodyAt::Inline(inline) => {
                assert!(
                    body.is_none(),
                    "seed {seed}: u{u}'s body is inline and stored"
                );
                assert!(inline.len() <= super::split::INLINE_BODY_MAX);
                tiles += TileSet::decode(&agg, inline).unwrap().tile_count();
                shapes.inline += 1;
            }
            BodyAt::Stored => {
                let body = body.expect("a head saying its body is stored has one");
                assert!(
                    body.len() > super::split::INLINE_BODY_MAX,
                    "seed {seed}: u{u}'s small body is stored apart"
                );
                tiles += TileSet::decode(&agg, &body).unwrap().tile_count();
                shapes.stored += 1;
            }
            BodyAt::Absent => assert!(
                body.is_none(),
                "seed {seed}: u{u}'s head says it has no body"
            ),
        }
        assert!(tiles <= bound, "seed {seed}: {tiles} tiles > bound {bound}");
    }
    rollups
}

pub(super) fn compare(
    store: &Arc<ShardStore>,
    snap: &crate::registry::RegistrySnapshot,
    view: &FeatureView,
    oracle: &Oracle,
    now: i64,
    seed: u64,
) {
    let entities: Vec<String> = (0..5).map(|u| format!("u{u}")).collect();
    let cols = lookup(store, snap, &entities, now);
    let q = oracle.wm.map_or(now, |w| w.max(now));
    for (fi, col) in cols.iter().enumerate() {
        for (row, e) in entities.iter().enumerate() {
            let want = oracle.answer(view, fi, e, q);
            let ctx = format!(
                "seed {seed}, {} for {e} at q = T0 + {} µs",
                view.features[fi].name,
                q - T0
            );
            check(col, row, want.as_ref(), &ctx);
        }
    }
}

#[test]
fn aggregates_equal_the_brute_force_oracle() {
    let mut rollups = 0;
    let mut shapes = BodyShapes::default();
    for seed in 1..=8 {
        rollups += run_seed(seed, "20m", &mut shapes);
        rollups += run_seed(seed + 100, "3d", &mut shapes);
    }
    // The streams span weeks: older tiles were rolled up into day states (and answers
    // read them, above), and kept both inside heads and in their own values.
    assert!(rollups > 0, "no day summary was rolled up");
    assert!(
        shapes.inline > 0 && shapes.stored > 0,
        "bodies: {} inline, {} stored apart",
        shapes.inline,
        shapes.stored
    );
}

#[test]
fn watermark_and_tiles_survive_reopening() {
    // The event-time watermark is stored with the tiles: an event late against the
    // stored watermark is dropped after a reopen as before it.
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::in_memory();
    registry.apply_toml(DEFS, false).unwrap();
    let snap = registry.snapshot();
    let view = snap.views["txn"].clone();
    let event = |t: i64| AggEvent {
        topic: 0,
        view: view.clone(),
        key: keys::tile_key("txn", 1, b"u0"),
        event_time_micros: t,
        values: Some(vec![Some(Kind::Float64Value(1.0)), None, None, None]),
        history: None,
    };
    let batch = |events: Vec<AggEvent>, next: i64| IngestBatch {
        events,
        progress: vec![TopicProgress {
            topic: "txns".into(),
            next_offset: next,
            consumed: 1,
            malformed: 0,
        }],
        ..Default::default()
    };
    {
        let engine = StorageEngine::new(StorageConfig::for_test(dir.path().to_path_buf())).unwrap();
        let store = engine
            .open_shard(ShardId(0), 1, Partitioner::Murmur2)
            .unwrap();
        store.apply(&batch(vec![event(T0 + 5 * HOUR)], 1)).unwrap();
    }
    let engine = StorageEngine::new(StorageConfig::for_test(dir.path().to_path_buf())).unwrap();
    let store = Arc::new(
        engine
            .open_shard(ShardId(0), 1, Partitioner::Murmur2)
            .unwrap(),
    );
    let out = store.apply(&batch(vec![event(T0 + 4 * HOUR)], 2)).unwrap();
    assert_eq!(out.late, vec![("txn".to_owned(), 1)]);
    let cols = lookup(&store, &snap, &["u0".to_owned()], T0 + 5 * HOUR);
    let n = cols.iter().find(|c| c.name == "txn:n_1h").unwrap();
    assert_eq!(n.value(0), Some(ValueRef::Int64(1)));
}
