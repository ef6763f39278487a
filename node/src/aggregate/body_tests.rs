//! Where an entity's older tiles live — inside its head while small, in their own value
//! beyond — followed through the real store as the body grows and shrinks, answers
//! checked against the oracle, and every truncation of a stored value refused.

use std::sync::Arc;

use quiver_proto::v1::value::Kind;

use super::oracle_tests::{DEFS, Event, HOUR, MIN, Oracle, T0, apply_batch, compare};
use super::tiles::{BodyAt, TileSet};
use crate::registry::aggregation::Aggregation;
use crate::registry::{FeatureView, Registry};
use crate::storage::{ShardStore, TestShard, keys};

/// Where `entity`'s head says its body is, and whether a body value is stored for it.
fn body_shape(store: &ShardStore, agg: &Aggregation, entity: &str) -> (&'static str, bool) {
    let head_key = keys::tile_key("txn", 1, entity.as_bytes());
    let mut body_key = head_key.clone();
    body_key[0] = keys::TILE_BODY_TAG;
    let get = |k: &Vec<u8>| store.get_rows([k]).remove(0).unwrap().map(|v| v.to_vec());
    let stored = get(&body_key).is_some();
    let Some(head) = get(&head_key) else {
        return ("no head", stored);
    };
    let shape = match TileSet::decode(agg, &head).unwrap().body_at {
        BodyAt::Inline(_) => "inline",
        BodyAt::Stored => "stored",
        BodyAt::Absent => "absent",
    };
    (shape, stored)
}

/// A shard and a registry holding the `txn` view of [`DEFS`].
fn txn_shard() -> (TestShard, Arc<crate::registry::RegistrySnapshot>) {
    let registry = Registry::in_memory();
    registry.apply_toml(DEFS, false).unwrap();
    (TestShard::open(), registry.snapshot())
}

/// Event `m` of entity `u0` at `t`, every input set, from merchant `m`.
fn u0_event(t: i64, m: i64) -> Event {
    Event {
        entity: "u0".into(),
        t,
        values: Some(vec![
            Some(Kind::Float64Value(m as f64 / 4.0)),
            Some(Kind::Int64Value(m % 17)),
            Some(Kind::StringValue(format!("m{m}"))),
            Some(Kind::BoolValue(m % 2 == 0)),
        ]),
    }
}

/// `days` days from `T0` of an event of `u0` every 20 minutes, each from another
/// merchant, an hour per batch (many tiles and sketches); returns the next log offset.
fn dense_days(store: &ShardStore, view: &Arc<FeatureView>, oracle: &mut Oracle, days: i64) -> i64 {
    let mut offset = 0;
    for hour in 0..days * 24 {
        let events: Vec<Event> = (0..3)
            .map(|k| u0_event(T0 + hour * HOUR + k * 20 * MIN, hour * 3 + k))
            .collect();
        apply_batch(store, view, oracle, &events, offset);
        offset += 3;
    }
    offset
}

#[test]
fn a_body_moves_between_its_head_and_its_own_value_as_it_grows_and_shrinks() {
    let (shard, snap) = txn_shard();
    let store = &shard.store;
    let view = snap.views["txn"].clone();
    let agg = view.aggregation.clone().unwrap();
    let mut oracle = Oracle::default();
    // Six days of an event every 20 minutes: a body too large for the head.
    let mut offset = dense_days(store, &view, &mut oracle, 6);
    assert_eq!(body_shape(store, &agg, "u0"), ("stored", true));
    let wm = oracle.wm.unwrap();
    for q in [wm, wm + HOUR, wm + 3 * 24 * HOUR] {
        compare(store, &snap, &view, &oracle, q, 0);
    }
    // A week later only the last two hours of those six days are still in the 7-day
    // window: the rewritten body is small and moves into the head; its own value goes.
    let late = T0 + 13 * 24 * HOUR - 2 * HOUR;
    apply_batch(store, &view, &mut oracle, &[u0_event(late, 1)], offset);
    offset += 1;
    assert_eq!(body_shape(store, &agg, "u0"), ("inline", false));
    for q in [late, late + HOUR, late + 5 * HOUR] {
        compare(store, &snap, &view, &oracle, q, 0);
    }
    // Another dense day and a half: the tiles the boundary passes make the body large
    // again, and it moves back to its own value.
    for hour in 1..36 {
        let events: Vec<Event> = (0..3)
            .map(|k| u0_event(late + hour * HOUR + k * 20 * MIN, 1000 + hour * 3 + k))
            .collect();
        apply_batch(store, &view, &mut oracle, &events, offset);
        offset += 3;
    }
    assert_eq!(body_shape(store, &agg, "u0"), ("stored", true));
    let wm = oracle.wm.unwrap();
    for q in [wm, wm + 2 * HOUR] {
        compare(store, &snap, &view, &oracle, q, 0);
    }
    // A tombstone erases head and body alike.
    let erase = Event {
        entity: "u0".into(),
        t: wm,
        values: None,
    };
    apply_batch(store, &view, &mut oracle, &[erase], offset);
    assert_eq!(body_shape(store, &agg, "u0"), ("no head", false));
    compare(store, &snap, &view, &oracle, wm + HOUR, 0);
}

/// The stored values of `entity`: its head, and its body when stored apart.
fn stored_values(store: &ShardStore, entity: &str) -> Vec<Vec<u8>> {
    let head_key = keys::tile_key("txn", 1, entity.as_bytes());
    let mut body_key = head_key.clone();
    body_key[0] = keys::TILE_BODY_TAG;
    store
        .get_rows([&head_key, &body_key])
        .into_iter()
        .filter_map(|v| v.unwrap().map(|v| v.to_vec()))
        .collect()
}

#[test]
fn every_truncation_of_a_stored_head_or_body_is_refused_as_corrupt() {
    use super::read::Answerer;
    let (shard, snap) = txn_shard();
    let store = &shard.store;
    let view = snap.views["txn"].clone();
    let agg = view.aggregation.clone().unwrap();
    let mut oracle = Oracle::default();
    // Three dense days (a head and a body stored apart, with day summaries), then a week
    // later one event (the small body moves inside the head).
    let offset = dense_days(store, &view, &mut oracle, 3);
    assert_eq!(body_shape(store, &agg, "u0"), ("stored", true));
    let mut values = stored_values(store, "u0");
    let late = T0 + 10 * 24 * HOUR - 2 * HOUR;
    apply_batch(store, &view, &mut oracle, &[u0_event(late, 1)], offset);
    assert_eq!(body_shape(store, &agg, "u0"), ("inline", false));
    values.extend(stored_values(store, "u0"));
    assert_eq!(
        values.len(),
        3,
        "head and body, then a head with its body inside"
    );

    let answerer = Answerer::new(&agg, 0..agg.features.len());
    for value in &values {
        let mut states = answerer.states();
        TileSet::decode(&agg, value).expect("the whole value decodes");
        answerer
            .merge([None, Some(value)], late, &mut states)
            .expect("the whole value merges");
        for len in 0..value.len() {
            let cut = &value[..len];
            assert!(
                TileSet::decode(&agg, cut).is_err(),
                "a value cut to {len} of {} bytes decoded",
                value.len()
            );
            let mut states = answerer.states();
            assert!(
                answerer
                    .merge([None, Some(cut)], late, &mut states)
                    .is_err(),
                "a value cut to {len} of {} bytes merged",
                value.len()
            );
        }
    }
}
