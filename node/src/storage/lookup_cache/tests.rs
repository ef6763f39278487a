use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LookupCache, SEGMENTS, charge, fresh_generation};

fn key(i: u32) -> Vec<u8> {
    format!("row-key-{i:08}").into_bytes()
}

fn row(i: u32, version: u32) -> Vec<u8> {
    let mut v = vec![1u8; 40];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v[4..8].copy_from_slice(&version.to_le_bytes());
    v
}

/// Deterministic draws below `n` (xorshift64 from `seed`).
fn draws(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

#[test]
fn answers_only_its_generation_and_key() {
    let cache = LookupCache::new(1 << 20, false);
    let seq = AtomicU64::new(4);
    let (g, other) = (fresh_generation(), fresh_generation());
    cache.insert_if_unchanged(g, b"a", b"row a", &seq, 4);
    assert_eq!(cache.get(g, b"a").as_deref(), Some(&b"row a"[..]));
    assert!(cache.get(other, b"a").is_none(), "another generation");
    assert!(cache.get(g, b"b").is_none(), "another key");
    assert_eq!(cache.usage(), charge(1, 5));
}

#[test]
fn a_fill_from_an_older_snapshot_does_not_land() {
    let cache = LookupCache::new(1 << 20, false);
    let g = fresh_generation();
    // A write began (odd) or ended (the next even) after the snapshot at 4.
    for now in [5, 6] {
        let seq = AtomicU64::new(now);
        cache.insert_if_unchanged(g, b"a", b"old", &seq, 4);
        assert!(cache.get(g, b"a").is_none(), "sequence {now}");
    }
    assert_eq!(cache.usage(), 0);
}

#[test]
fn writes_replace_or_forget_cached_rows_and_fill_only_if_asked() {
    let cache = LookupCache::new(1 << 20, false);
    let seq = AtomicU64::new(0);
    let g = fresh_generation();
    cache.written(g, b"a", Some(b"new"));
    assert!(cache.get(g, b"a").is_none(), "ingest does not fill");
    cache.insert_if_unchanged(g, b"a", b"v1", &seq, 0);
    cache.written(g, b"a", Some(b"v2, longer"));
    assert_eq!(cache.get(g, b"a").as_deref(), Some(&b"v2, longer"[..]));
    assert_eq!(cache.usage(), charge(1, 10));
    cache.written(g, b"a", None);
    assert!(cache.get(g, b"a").is_none(), "a tombstone forgets");
    assert_eq!(cache.usage(), 0);
    // The freed slot is reused.
    cache.insert_if_unchanged(g, b"b", b"vb", &seq, 0);
    assert_eq!(cache.get(g, b"b").as_deref(), Some(&b"vb"[..]));

    let filled = LookupCache::new(1 << 20, true);
    filled.written(g, b"a", Some(b"new"));
    assert_eq!(filled.get(g, b"a").as_deref(), Some(&b"new"[..]), "filled");
    filled.written(g, b"t", None);
    assert!(filled.get(g, b"t").is_none(), "a tombstone is not cached");
    filled.written(g, b"a", None);
    assert!(filled.get(g, b"a").is_none());
    assert_eq!(filled.usage(), 0);
}

/// Random fills, writes, tombstones and reads against a map of the latest rows: a read
/// answers the latest row or nothing (evicted), never an older one, and the cache stays
/// within its budget.
#[test]
fn never_answers_a_stale_row_and_stays_within_budget() {
    never_stale_within_budget(false);
}

/// The same, with every write cached.
#[test]
fn filled_by_ingest_never_answers_a_stale_row_and_stays_within_budget() {
    never_stale_within_budget(true);
}

fn never_stale_within_budget(fill_on_ingest: bool) {
    let budget = 64 << 10;
    let cache = LookupCache::new(budget, fill_on_ingest);
    let seq = AtomicU64::new(0);
    let g = fresh_generation();
    let mut latest: HashMap<u32, Option<Vec<u8>>> = HashMap::new();
    let mut next = draws(0x9e37_79b9_7f4a_7c15u64);
    let (mut hits, mut evicted_somewhere) = (0, false);
    for step in 0..60_000u32 {
        let k = next(2_000) as u32;
        match next(10) {
            0..=2 => {
                // An ingest write: odd, update, even.
                seq.fetch_add(1, Ordering::AcqRel);
                let v = (next(5) > 0).then(|| row(k, step));
                cache.written(g, &key(k), v.as_deref());
                latest.insert(k, v);
                seq.fetch_add(1, Ordering::Release);
            }
            3..=5 => {
                // A reader's fill from the current state.
                let now = seq.load(Ordering::Acquire);
                if let Some(Some(v)) = latest.get(&k) {
                    cache.insert_if_unchanged(g, &key(k), v, &seq, now);
                }
            }
            _ => {
                if let Some(got) = cache.get(g, &key(k)) {
                    hits += 1;
                    assert_eq!(
                        Some(&got[..]),
                        latest.get(&k).and_then(|v| v.as_deref()),
                        "key {k} at step {step}"
                    );
                } else if matches!(latest.get(&k), Some(Some(_))) {
                    evicted_somewhere = true;
                }
            }
        }
        assert!(
            cache.usage() <= budget,
            "usage {} at step {step}",
            cache.usage()
        );
    }
    assert!(hits > 1_000, "the cache answered ({hits} hits)");
    assert!(evicted_somewhere, "the budget made it evict");
}

/// Ingest fills: a row read between writes keeps its place while written rows nobody
/// reads come and go.
#[test]
fn a_hot_row_survives_a_stream_of_written_ones() {
    let budget = SEGMENTS * charge(16, 40) * 8;
    let cache = LookupCache::new(budget, true);
    let g = fresh_generation();
    let hot = key(0);
    cache.written(g, &hot, Some(&row(0, 0)));
    for i in 1..5_000 {
        assert!(
            cache.get(g, &hot).is_some(),
            "evicted after {i} written rows"
        );
        cache.written(g, &key(i), Some(&row(i, 0)));
    }
    let kept = (1..5_000)
        .filter(|&i| cache.get(g, &key(i)).is_some())
        .count();
    assert!(kept > 0 && kept <= 8 * SEGMENTS, "{kept} written rows kept");
    assert!(cache.usage() <= budget);
}

/// CLOCK: a row read between inserts keeps its place while cold rows come and go.
#[test]
fn a_hot_row_survives_a_stream_of_cold_ones() {
    let budget = SEGMENTS * charge(16, 40) * 8;
    let cache = LookupCache::new(budget, false);
    let seq = AtomicU64::new(0);
    let g = fresh_generation();
    let hot = key(0);
    cache.insert_if_unchanged(g, &hot, &row(0, 0), &seq, 0);
    for i in 1..5_000 {
        assert!(cache.get(g, &hot).is_some(), "evicted after {i} cold rows");
        cache.insert_if_unchanged(g, &key(i), &row(i, 0), &seq, 0);
    }
    // Most cold rows were evicted: the cache holds about eight per segment.
    let kept = (1..5_000)
        .filter(|&i| cache.get(g, &key(i)).is_some())
        .count();
    assert!(kept <= 8 * SEGMENTS, "{kept} cold rows kept");
}

#[test]
fn a_row_larger_than_a_segment_is_not_cached() {
    let cache = LookupCache::new(SEGMENTS * 1_000, false);
    let seq = AtomicU64::new(0);
    let g = fresh_generation();
    cache.insert_if_unchanged(g, b"big", &[7u8; 2_000], &seq, 0);
    assert!(cache.get(g, b"big").is_none());
    cache.insert_if_unchanged(g, b"small", &[7u8; 100], &seq, 0);
    cache.written(g, b"small", Some(&[8u8; 2_000]));
    assert!(
        cache.get(g, b"small").is_none(),
        "grown past the segment: forgotten"
    );
    assert_eq!(cache.usage(), 0);
}

/// A batch probe answers, key by key, what the cache holds: hits, misses, another
/// generation's rows, keys asked twice, batches of one and across several chunks.
#[test]
fn a_batch_probe_answers_what_the_cache_holds() {
    let cache = LookupCache::new(64 << 20, false);
    let seq = AtomicU64::new(0);
    let (g, other) = (fresh_generation(), fresh_generation());
    let mut held: HashMap<(u64, u32), Vec<u8>> = HashMap::new();
    for i in 0..600u32 {
        // Every third key is not cached; every fifth is cached in another generation.
        let generation = if i % 5 == 0 { other } else { g };
        if i % 3 != 0 {
            cache.insert_if_unchanged(generation, &key(i), &row(i, 1), &seq, 0);
            held.insert((generation, i), row(i, 1));
        }
    }
    let mut next = draws(0x2545_f491_4f6c_dd1du64);
    let (mut hits, mut misses) = (0, 0);
    for round in 0..400 {
        let len = match round % 4 {
            0 => 1,
            1 => 16,
            2 => 17,
            _ => next(70) as usize,
        };
        let ids: Vec<u32> = (0..len).map(|_| next(700) as u32).collect();
        let keys: Vec<Vec<u8>> = ids.iter().map(|&i| key(i)).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut out = vec![None];
        cache.get_many(g, &refs, &mut out);
        assert!(out.remove(0).is_none(), "appends to what out held");
        assert_eq!(out.len(), ids.len(), "round {round}");
        for (&i, got) in ids.iter().zip(&out) {
            let want = held.get(&(g, i));
            assert_eq!(
                got.as_deref(),
                want.map(Vec::as_slice),
                "key {i}, round {round}"
            );
            if want.is_some() {
                hits += 1
            } else {
                misses += 1
            }
        }
    }
    assert!(
        hits > 1_000 && misses > 1_000,
        "{hits} hits, {misses} misses"
    );
}

/// Batch probes, which hold several segments' locks at once, next to writers taking
/// one at a time: every answer is a row some write left, and nobody deadlocks.
#[test]
fn batch_probes_beside_writers_finish_and_answer_written_rows() {
    let cache = std::sync::Arc::new(LookupCache::new(1 << 20, true));
    let g = fresh_generation();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let mut next = draws(0x9e37_79b9_7f4a_7c15u64 ^ (t + 1));
                let mut out = Vec::new();
                for step in 0..20_000u32 {
                    if t < 2 {
                        let k = next(500) as u32;
                        cache.written(g, &key(k), Some(&row(k, step)));
                    } else {
                        let keys: Vec<Vec<u8>> =
                            (0..next(40)).map(|_| key(next(500) as u32)).collect();
                        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                        out.clear();
                        cache.get_many(g, &refs, &mut out);
                        for (k, got) in keys.iter().zip(&out) {
                            if let Some(got) = got {
                                // row(i, _) starts with i: the row is the key's.
                                assert_eq!(&got[..4], &key_id(k).to_le_bytes()[..]);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !threads.iter().all(|t| t.is_finished()) {
        assert!(
            std::time::Instant::now() < deadline,
            "a probe or a write never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for t in threads {
        t.join().expect("no thread panicked");
    }
}

fn key_id(key: &[u8]) -> u32 {
    std::str::from_utf8(&key[8..]).unwrap().parse().unwrap()
}
