//! As-of answers of aggregation views against a brute-force oracle: randomised streams
//! (out of order, late beyond the lateness, duplicates, tombstones, records stamped after
//! they arrived) go through the real store into a view with `history`; lookups as of many
//! times, under both rules, are answered through the real executor and compared with the
//! oracle's window rule applied to the records that count at that time.

use std::collections::HashMap;
use std::sync::Arc;

use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{AsOf, EntityKey, GetOnlineFeaturesRequest, PackedColumn};
use quiver_proto::{Partitioner, ShardId};

use super::oracle_tests::{DEFS, HOUR, MIN, Oracle, Rng, T0, check, random_events};
use super::tiles::tile_start;
use crate::config::NodeConfigFile;
use crate::registry::{Registry, RegistrySnapshot};
use crate::serve::ServeError;
use crate::serve::lookup::{ExecError, ReadMode, execute, replicas_for};
use crate::serve::plan::plan_lookup;
use crate::storage::TestShard;
use crate::storage::history::{AsOfRule, HistoryMeta};
use crate::storage::{
    AggEvent, IngestBatch, ShardStore, StorageConfig, StorageEngine, TopicProgress, keys,
};

/// One record as the log holds it, and whether the replicas counted it.
struct Logged {
    entity: String,
    t: i64,
    arrival: i64,
    values: Option<Vec<Option<Kind>>>,
    /// Counted (a tombstone always is; an event unless late).
    counted: bool,
}

fn defs(history: &str) -> String {
    DEFS.replacen(
        "name = \"txn\"\nentity = \"user\"\n",
        &format!("name = \"txn\"\nentity = \"user\"\nhistory = \"{history}\"\n"),
        1,
    )
}

fn as_of_lookup(
    store: &Arc<ShardStore>,
    snap: &RegistrySnapshot,
    features: &[String],
    entities: &[String],
    t: i64,
    rule: AsOfRule,
    now: i64,
) -> Result<Vec<PackedColumn>, ServeError> {
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let req = GetOnlineFeaturesRequest {
        features: features.to_vec(),
        entity_keys: entities
            .iter()
            .map(|e| EntityKey::from(e.as_str()))
            .collect(),
        as_of: Some(AsOf {
            time_micros: t,
            key_times_micros: Vec::new(),
            exclude_late_arrivals: rule == AsOfRule::ArrivedBy,
        }),
        ..Default::default()
    };
    let plan = plan_lookup(&req, snap, &limits, Partitioner::Murmur2, 1)?;
    let local = HashMap::from([(ShardId(0), store.clone())]);
    let replicas = replicas_for(&plan, &local, 0).unwrap();
    match execute(&plan, &replicas, now, ReadMode::Full) {
        Ok(resp) => Ok(resp.into_response().packed_columns),
        Err(ExecError::Serve(e)) => Err(e),
        Err(ExecError::NeedsIo) => panic!("a full read never needs another pass"),
    }
}

/// The oracle's state as of `t` under `rule`: the counted records that count then,
/// replayed in log order.
fn oracle_at(log: &[Logged], t: i64, rule: AsOfRule) -> Oracle {
    let mut o = Oracle::default();
    for r in log.iter().filter(|r| r.counted) {
        let counts = match rule {
            AsOfRule::EventTime => r.t <= t,
            AsOfRule::ArrivedBy => r.arrival <= t,
        };
        if !counts {
            continue;
        }
        match &r.values {
            None => {
                o.events.remove(&r.entity);
            }
            Some(v) => o
                .events
                .entry(r.entity.clone())
                .or_default()
                .push((r.t, v.clone())),
        }
    }
    o
}

fn run_seed(seed: u64) {
    let TestShard {
        store,
        engine: _engine,
        dir: _dir,
    } = TestShard::open();
    let registry = Registry::in_memory();
    registry.apply_toml(&defs("400d"), false).unwrap();
    let snap = registry.snapshot();
    let view = snap.views["txn"].clone();
    let agg = view.aggregation.clone().unwrap();
    let mut rng = Rng(seed);
    // The live rule decides what is counted; the log keeps when each record arrived:
    // mostly a little after its stamp, sometimes before it (a producer clock ahead).
    let mut live = Oracle::default();
    let mut log: Vec<Logged> = Vec::new();
    let mut clock = i64::MIN;
    for e in random_events(&mut rng, 300) {
        clock = clock.max(e.t);
        let arrival = clock + rng.below(5 * MIN as u64) as i64 - 2 * MIN;
        let before = (live.events.get(&e.entity).map_or(0, Vec::len), live.wm);
        live.apply(&e, agg.allowed_lateness_micros);
        let counted = e.values.is_none()
            || (live.events.get(&e.entity).map_or(0, Vec::len), live.wm) != before;
        log.push(Logged {
            entity: e.entity,
            t: e.t,
            arrival,
            values: e.values,
            counted,
        });
    }
    assert!(log.iter().any(|r| !r.counted), "seed {seed}: nothing late");
    let mut offset = 0usize;
    while offset < log.len() {
        let n = (1 + rng.below(30) as usize).min(log.len() - offset);
        let mut batch = IngestBatch {
            progress: vec![TopicProgress {
                topic: "txns".into(),
                next_offset: (offset + n) as i64,
                consumed: n as u64,
                malformed: 0,
            }],
            ..Default::default()
        };
        for (i, r) in log[offset..offset + n].iter().enumerate() {
            batch.events.push(AggEvent {
                topic: 0,
                view: view.clone(),
                key: keys::tile_key("txn", 1, r.entity.as_bytes()),
                event_time_micros: r.t,
                values: r.values.clone(),
                history: Some(HistoryMeta {
                    offset: (offset + i) as i64,
                    arrival_micros: r.arrival,
                }),
            });
        }
        store.apply(&batch).unwrap();
        offset += n;
    }
    assert_eq!(
        store.count_history_entries().unwrap(),
        log.iter().filter(|r| r.counted).count() as u64,
        "seed {seed}: every counted record, and only those, is in the history"
    );

    // Windowed features only (a lifetime one cannot answer as of a time; checked below).
    let windowed: Vec<usize> = (0..agg.features.len())
        .filter(|&f| agg.features[f].window_micros.is_some())
        .collect();
    let names: Vec<String> = windowed
        .iter()
        .map(|&f| format!("txn:{}", view.features[f].name))
        .collect();
    let entities: Vec<String> = (0..5).map(|u| format!("u{u}")).collect();
    let (first, last) = (log[0].t.min(log[0].arrival), clock);
    let now = last + 24 * HOUR;
    let mut times: Vec<i64> = (0..12)
        .map(|_| first + rng.below((last - first + 2 * HOUR) as u64) as i64)
        .collect();
    // Around tile boundaries too, and at the stamps and arrivals of records themselves.
    for hop in [MIN, 10 * MIN, HOUR] {
        let b = tile_start(times[0], hop) + hop;
        times.extend([b - 1, b]);
    }
    for _ in 0..6 {
        let r = &log[rng.below(log.len() as u64) as usize];
        times.extend([r.t, r.arrival, r.t - 1]);
    }
    for &t in &times {
        for rule in [AsOfRule::EventTime, AsOfRule::ArrivedBy] {
            let cols = as_of_lookup(&store, &snap, &names, &entities, t, rule, now)
                .unwrap_or_else(|e| panic!("seed {seed}: as of T0 + {} µs: {e}", t - T0));
            let oracle = oracle_at(&log, t, rule);
            for (col, &fi) in cols.iter().zip(&windowed) {
                for (row, e) in entities.iter().enumerate() {
                    let want = oracle.answer(&view, fi, e, t);
                    let ctx = format!(
                        "seed {seed}, {} for {e} as of T0 + {} µs ({rule:?})",
                        view.features[fi].name,
                        t - T0
                    );
                    check(col, row, want.as_ref(), &ctx);
                }
            }
        }
    }

    // What cannot be answered is refused, naming why, and nothing else.
    let lifetime = (0..agg.features.len())
        .find(|&f| agg.features[f].window_micros.is_none())
        .map(|f| format!("txn:{}", view.features[f].name))
        .unwrap();
    let e = as_of_lookup(
        &store,
        &snap,
        &[lifetime],
        &entities,
        last,
        AsOfRule::EventTime,
        now,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ServeError::InvalidArgument(m) if m.contains("whole lifetime")),
        "{e}"
    );
    let week = "txn:qty_max_7d".to_string();
    let e = as_of_lookup(
        &store,
        &snap,
        &[week],
        &entities,
        now - 395 * 24 * HOUR,
        AsOfRule::EventTime,
        now,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ServeError::InvalidArgument(m)
            if m.contains("older than the history view \"txn\" keeps")
                && m.contains("qty_max_7d")),
        "{e}"
    );
}

#[test]
fn aggregates_as_of_equal_the_brute_force_oracle() {
    for seed in 1..=6 {
        run_seed(seed);
    }
}

#[test]
fn an_aggregation_view_without_history_keeps_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let engine = StorageEngine::new(StorageConfig::for_test(dir.path().to_path_buf())).unwrap();
    let store = engine
        .open_shard(ShardId(0), 1, Partitioner::Murmur2)
        .unwrap();
    let registry = Registry::in_memory();
    registry.apply_toml(DEFS, false).unwrap();
    let view = registry.snapshot().views["txn"].clone();
    let batch = IngestBatch {
        progress: vec![TopicProgress {
            topic: "txns".into(),
            next_offset: 1,
            consumed: 1,
            malformed: 0,
        }],
        events: vec![AggEvent {
            topic: 0,
            view,
            key: keys::tile_key("txn", 1, b"u0"),
            event_time_micros: T0,
            values: Some(vec![Some(Kind::Float64Value(1.0)), None, None, None]),
            history: None,
        }],
        ..Default::default()
    };
    assert_eq!(store.apply(&batch).unwrap().applied, 1);
    assert_eq!(store.count_history_entries().unwrap(), 0);
}
