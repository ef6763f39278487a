//! As-of lookups against a brute-force oracle: random histories (out-of-order events,
//! duplicates of one event time, late arrivals, tombstones, TTL) applied through the real
//! store in random batches and read through the real executor at random times under both
//! rules; then retention: after a compaction the answers within the retention are the
//! same and older versions are gone.

use std::collections::HashMap;
use std::sync::Arc;

use quiver_proto::packed::ValueRef;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{AsOf, EntityKey, FeatureStatus, GetOnlineFeaturesRequest, PackedColumn};
use quiver_proto::{Partitioner, ShardId};

use crate::config::NodeConfigFile;
use crate::registry::{Registry, RegistrySnapshot};
use crate::serve::ServeError;
use crate::serve::lookup::{ExecError, ReadMode, execute, replicas_for};
use crate::serve::plan::plan_lookup;
use crate::storage::TestShard;
use crate::storage::history::HistoryMeta;
use crate::storage::row_codec::encode_row;
use crate::storage::{IngestBatch, RowWrite, ShardStore, StorageEngine, TopicProgress, keys};

const MIN: i64 = 60_000_000;
const HOUR: i64 = 60 * MIN;

const DEFS: &str = r#"
[[entity]]
name = "user"
key_type = "string"

[[view]]
name = "h"
entity = "user"
ttl = "3h"
history = "HISTORY"
[view.source]
topic = "t"
[[view.feature]]
name = "x"
type = "int64"
"#;

/// One version of an entity's row.
#[derive(Debug, Clone)]
struct Version {
    entity: usize,
    t: i64,
    offset: i64,
    arrival: i64,
    /// `None`: a tombstone.
    x: Option<i64>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51afd7ed558ccd);
        z ^ (z >> 33)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a lookup as of `t` must answer for `entity`: `None` NOT_FOUND, `Some(None)`
/// EXPIRED, `Some(Some(x))` PRESENT.
fn oracle(history: &[Version], entity: usize, t: i64, arrived_by: bool) -> Option<Option<i64>> {
    let v = history
        .iter()
        .filter(|v| v.entity == entity)
        .filter(|v| if arrived_by { v.arrival <= t } else { v.t <= t })
        .max_by_key(|v| (v.t, v.offset))?;
    let x = v.x?;
    if t - v.t > 3 * HOUR {
        return Some(None);
    }
    Some(Some(x))
}

/// A random history of `n` versions over 4 entities, with event times around `base`: in
/// order mostly, some out of order, some sharing an event time, some arriving late
/// (arrival long after the event), some tombstones.
fn random_history(rng: &mut Rng, n: usize, base: i64) -> Vec<Version> {
    let mut clock = base;
    (0..n as i64)
        .map(|offset| {
            clock += rng.below(20 * MIN as u64) as i64;
            let t = match rng.below(10) {
                0 => clock - rng.below(6 * HOUR as u64) as i64,
                1 => clock - clock % (30 * MIN),
                _ => clock,
            };
            let arrival = if rng.below(8) == 0 {
                clock + rng.below(5 * HOUR as u64) as i64
            } else {
                clock.max(t)
            };
            Version {
                entity: rng.below(4) as usize,
                t,
                offset,
                arrival,
                x: (rng.below(12) != 0).then(|| rng.below(1000) as i64),
            }
        })
        .collect()
}

fn store_with(
    history: &str,
) -> (
    tempfile::TempDir,
    StorageEngine,
    Arc<ShardStore>,
    Arc<RegistrySnapshot>,
) {
    let TestShard { store, engine, dir } = TestShard::open();
    let registry = Registry::in_memory();
    registry
        .apply_toml(&DEFS.replace("HISTORY", history), false)
        .unwrap();
    let snap = registry.snapshot();
    engine
        .history_retention()
        .replace([(("h".to_owned(), 1), snap.views["h"].history)]);
    (dir, engine, store, snap)
}

fn apply(store: &ShardStore, rng: &mut Rng, history: &[Version]) {
    let mut i = 0;
    let mut buf = Vec::new();
    while i < history.len() {
        let n = (1 + rng.below(30) as usize).min(history.len() - i);
        let writes = history[i..i + n]
            .iter()
            .map(|v| RowWrite {
                topic: 0,
                key: keys::row_key("h", 1, format!("u{}", v.entity).as_bytes()),
                event_time_micros: v.t,
                value: v.x.map(|x| {
                    encode_row(v.t, &[Some(Kind::Int64Value(x))], &mut buf);
                    buf.clone()
                }),
                history: Some(HistoryMeta {
                    offset: v.offset,
                    arrival_micros: v.arrival,
                }),
            })
            .collect();
        store
            .apply(&IngestBatch {
                writes,
                progress: vec![TopicProgress {
                    topic: "t".into(),
                    next_offset: (i + n) as i64,
                    consumed: n as u64,
                    malformed: 0,
                }],
                ..Default::default()
            })
            .unwrap();
        i += n;
    }
}

fn as_of(
    store: &Arc<ShardStore>,
    snap: &RegistrySnapshot,
    times: Vec<i64>,
    arrived_by: bool,
    now: i64,
) -> Result<PackedColumn, ServeError> {
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let req = GetOnlineFeaturesRequest {
        features: vec!["h:x".into()],
        entity_keys: (0..times.len())
            .map(|i| EntityKey::from(format!("u{}", i % 4).as_str()))
            .collect(),
        as_of: Some(AsOf {
            key_times_micros: times,
            exclude_late_arrivals: arrived_by,
            ..Default::default()
        }),
        ..Default::default()
    };
    let plan = plan_lookup(&req, snap, &limits, Partitioner::Murmur2, 1)?;
    let local = HashMap::from([(ShardId(0), store.clone())]);
    let replicas = replicas_for(&plan, &local, 0)?;
    match execute(&plan, &replicas, now, ReadMode::Full) {
        Ok(r) => {
            assert!(
                matches!(
                    execute(&plan, &replicas, now, ReadMode::CachedOnly),
                    Err(ExecError::NeedsIo)
                ),
                "as-of reads run off the async workers"
            );
            Ok(r.into_response().packed_columns.remove(0))
        }
        Err(ExecError::Serve(e)) => Err(e),
        Err(ExecError::NeedsIo) => unreachable!("a full read does not ask for I/O"),
    }
}

fn check(col: &PackedColumn, history: &[Version], times: &[i64], arrived_by: bool, ctx: &str) {
    for (row, t) in times.iter().enumerate() {
        let want = oracle(history, row % 4, *t, arrived_by);
        let got = match col.status_at(row) {
            FeatureStatus::NotFound => None,
            FeatureStatus::Expired => Some(None),
            FeatureStatus::Present => match col.value(row) {
                Some(ValueRef::Int64(x)) => Some(Some(x)),
                other => panic!("{ctx}: row {row}: {other:?}"),
            },
            s => panic!("{ctx}: row {row}: status {s:?}"),
        };
        assert_eq!(
            got,
            want,
            "{ctx}: u{} as of {t} (arrived by: {arrived_by})",
            row % 4
        );
    }
}

#[test]
fn as_of_lookups_equal_the_brute_force_oracle() {
    let base = 1_700_000_000_000_000;
    for seed in 1..=12u64 {
        let (_dir, _engine, store, snap) = store_with("400d");
        let mut rng = Rng(seed);
        let history = random_history(&mut rng, 300, base);
        apply(&store, &mut rng, &history);
        let end = history.iter().map(|v| v.arrival.max(v.t)).max().unwrap();
        for arrived_by in [false, true] {
            // Random times over the whole span and beyond, and every version's own event
            // time and arrival (and one µs before), where answers change.
            let mut times: Vec<i64> = (0..40)
                .map(|_| base - HOUR + rng.below((end - base + 2 * HOUR) as u64) as i64)
                .collect();
            for v in history.iter().step_by(7) {
                times.extend([v.t, v.t - 1, v.arrival, v.arrival - 1, v.t + 3 * HOUR + 1]);
            }
            let col = as_of(&store, &snap, times.clone(), arrived_by, end + HOUR).unwrap();
            check(&col, &history, &times, arrived_by, &format!("seed {seed}"));
        }
    }
}

#[test]
fn retention_keeps_every_answer_within_it_and_refuses_older_times() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for seed in 1..=6u64 {
        let (_dir, _engine, store, snap) = store_with("2h");
        let mut rng = Rng(seed + 50);
        // Ten hours of history ending now: most of it past the 2 h retention.
        let history: Vec<Version> = random_history(&mut rng, 200, now - 10 * HOUR)
            .into_iter()
            .filter(|v| v.t <= now && v.arrival <= now)
            .collect();
        apply(&store, &mut rng, &history);
        let before = store.count_history_entries().unwrap();
        let times: Vec<i64> = (0..60)
            .map(|_| now - 2 * HOUR + 60_000_000 + rng.below((2 * HOUR - 2 * MIN) as u64) as i64)
            .collect();
        store.compact_rows();
        let after = store.count_history_entries().unwrap();
        assert!(
            after < before,
            "seed {seed}: compaction kept all {before} versions"
        );
        for arrived_by in [false, true] {
            let col = as_of(&store, &snap, times.clone(), arrived_by, now).unwrap();
            check(
                &col,
                &history,
                &times,
                arrived_by,
                &format!("seed {seed} after compaction"),
            );
        }
        // Older than the retention: refused, naming it.
        let e = as_of(&store, &snap, vec![now - 3 * HOUR], false, now).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ServeError::InvalidArgument(_)), "{msg}");
        assert!(
            msg.contains("older than the history view \"h\" keeps (2h)"),
            "{msg}"
        );
    }
}

#[test]
fn bad_as_of_requests_are_refused_naming_the_problem() {
    let (_dir, _engine, store, snap) = store_with("1d");
    let limits = NodeConfigFile::default().validate().unwrap().limits;
    let req = |as_of: AsOf, keys: usize| GetOnlineFeaturesRequest {
        features: vec!["h:x".into()],
        entity_keys: (0..keys)
            .map(|i| EntityKey::from(format!("u{i}").as_str()))
            .collect(),
        as_of: Some(as_of),
        ..Default::default()
    };
    let err = |r: GetOnlineFeaturesRequest| {
        plan_lookup(&r, &snap, &limits, Partitioner::Murmur2, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(req(AsOf::default(), 2)).contains("as_of has no time"));
    let three = AsOf {
        key_times_micros: vec![1, 2, 3],
        ..Default::default()
    };
    assert!(err(req(three, 2)).contains("has 3 times for 2 entity keys"));
    // A view without history.
    let registry = Registry::in_memory();
    registry
        .apply_toml(&DEFS.replace("history = \"HISTORY\"\n", ""), false)
        .unwrap();
    let plain = registry.snapshot();
    let now = 1_700_000_000_000_000;
    let e = as_of(&store, &plain, vec![now], false, now).unwrap_err();
    assert!(e.to_string().contains("view \"h\" keeps no history"), "{e}");
}
