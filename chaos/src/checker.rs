//! The invariants, judged on a [`History`] alone (openraft's tests-turmoil oracle idea):
//!
//! - **lost write**: after healing, every replica of a key's shard serves the acknowledged
//!   write with the latest event time, or a newer attempted one;
//! - **monotonic read**: within one reader, no shard's watermark and no key's value ever
//!   goes back;
//! - **phantom**: every value read (during the run or at the end) was written: its `seq`
//!   was attempted for that key, its event time is that write's and its row is whole;
//! - **version**: every answer reports one version of the view, and one that served
//!   while the lookup ran (the version-swap scenario's log of serving versions, within
//!   [`VERSION_SLACK_US`]: the nemesis learns of a change by polling one node).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{History, Seen};

/// Which invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// An acknowledged write is missing on a replica after healing.
    LostWrite,
    /// A reader saw something older than it had already seen.
    MonotonicRead,
    /// A value that was never written.
    Phantom,
    /// An answer at no version, several, or one that did not serve while it ran.
    Version,
}

/// How far a read's window is widened when matched against the serving-version log.
pub const VERSION_SLACK_US: u64 = 2_000_000;

/// One violation, described for a human.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// What was seen against what was expected.
    pub detail: String,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Violations per invariant (every invariant is listed, 0 when it held).
    pub counts: BTreeMap<String, u64>,
    /// The first violations of each invariant (at most [`Verdict::EXAMPLES`] each).
    pub examples: Vec<Violation>,
    /// Keys with an acknowledged write, each checked on every replica.
    pub keys_checked: u64,
    /// Final (key, replica) reads checked.
    pub final_reads_checked: u64,
    /// Values read during the run checked.
    pub values_checked: u64,
    /// Successful reads per view version they report.
    pub reads_by_version: BTreeMap<u32, u64>,
}

impl Verdict {
    /// Examples kept per invariant.
    pub const EXAMPLES: usize = 5;

    fn new() -> Self {
        let mut v = Verdict::default();
        for i in [
            Invariant::LostWrite,
            Invariant::MonotonicRead,
            Invariant::Phantom,
            Invariant::Version,
        ] {
            v.counts.insert(name(i).to_string(), 0);
        }
        v
    }

    fn flag(&mut self, invariant: Invariant, detail: impl FnOnce() -> String) {
        let n = self.counts.entry(name(invariant).to_string()).or_default();
        *n += 1;
        if *n as usize <= Self::EXAMPLES {
            self.examples.push(Violation {
                invariant,
                detail: detail(),
            });
        }
    }

    /// Violations of `invariant`.
    pub fn count(&self, invariant: Invariant) -> u64 {
        self.counts.get(name(invariant)).copied().unwrap_or(0)
    }

    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }
}

/// The invariant's name in reports.
pub fn name(i: Invariant) -> &'static str {
    match i {
        Invariant::LostWrite => "lost_write",
        Invariant::MonotonicRead => "monotonic_read",
        Invariant::Phantom => "phantom",
        Invariant::Version => "version",
    }
}

/// Judges `h`.
pub fn check(h: &History) -> Verdict {
    let mut v = Verdict::new();
    check_versions(h, &mut v);
    let attempted: HashSet<(u32, i64)> = h.writes.iter().map(|w| (w.key, w.seq)).collect();
    let mut latest_acked: HashMap<u32, i64> = HashMap::new();
    for w in h.writes.iter().filter(|w| w.acked.is_some()) {
        let e = latest_acked.entry(w.key).or_insert(w.seq);
        *e = (*e).max(w.seq);
    }
    let phantom = |v: &mut Verdict, key: u32, s: &Seen, what: &str| {
        if !attempted.contains(&(key, s.seq)) {
            v.flag(Invariant::Phantom, || {
                format!("{what}: user-{key} = seq {} which was never written", s.seq)
            });
        } else if s.event_time_us != h.event_time_base_us + s.seq {
            v.flag(Invariant::Phantom, || {
                format!(
                    "{what}: user-{key} seq {} carries event time {} (written with {})",
                    s.seq,
                    s.event_time_us,
                    h.event_time_base_us + s.seq
                )
            });
        } else if !s.check_ok {
            v.flag(Invariant::Phantom, || {
                format!(
                    "{what}: user-{key} seq {} is torn (check feature does not match)",
                    s.seq
                )
            });
        }
    };

    // Monotonic reads and phantoms during the run. Readers are open loop: one reader's
    // lookups overlap, and only what a lookup that had *completed* before another was
    // issued (at or after its due time) binds that other one — lookups in flight together
    // may come back in either order. `floor` holds what completed lookups saw.
    let mut shard_floor: HashMap<(u32, u32), i64> = HashMap::new();
    let mut key_floor: HashMap<(u32, u32), i64> = HashMap::new();
    let mut reads: Vec<&crate::history::Read> =
        h.reads.iter().filter(|r| r.error.is_none()).collect();
    reads.sort_by_key(|r| (r.reader, r.intended_us));
    // Completed-by time, index into `reads`; per reader (reset when the reader changes).
    let mut in_flight: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut reader = None;
    for (i, r) in reads.iter().enumerate() {
        if reader != Some(r.reader) {
            in_flight.clear();
            reader = Some(r.reader);
        }
        while let Some(&Reverse((done, j))) = in_flight.peek() {
            if done > r.intended_us {
                break;
            }
            in_flight.pop();
            let earlier = reads[j];
            for (shard, wm) in &earlier.watermarks {
                let f = shard_floor.entry((r.reader, *shard)).or_insert(*wm);
                *f = (*f).max(*wm);
            }
            for (key, seen) in &earlier.rows {
                if let Some(s) = seen {
                    let f = key_floor.entry((r.reader, *key)).or_insert(s.seq);
                    *f = (*f).max(s.seq);
                }
            }
        }
        for (shard, wm) in &r.watermarks {
            if let Some(prev) = shard_floor.get(&(r.reader, *shard))
                && wm < prev
            {
                v.flag(Invariant::MonotonicRead, || {
                    format!(
                        "reader {} at {:.3}s: shard {shard} answered at watermark {wm} after {prev}",
                        r.reader,
                        r.intended_us as f64 / 1e6
                    )
                });
            }
        }
        for (key, seen) in &r.rows {
            v.values_checked += 1;
            let prev = key_floor.get(&(r.reader, *key)).copied();
            match (seen, prev) {
                (Some(s), _) => {
                    phantom(&mut v, *key, s, "read");
                    if let Some(p) = prev
                        && s.seq < p
                    {
                        v.flag(Invariant::MonotonicRead, || {
                            format!(
                                "reader {} at {:.3}s: user-{key} went back from seq {p} to {}",
                                r.reader,
                                r.intended_us as f64 / 1e6,
                                s.seq
                            )
                        });
                    }
                }
                (None, Some(p)) => v.flag(Invariant::MonotonicRead, || {
                    format!(
                        "reader {} at {:.3}s: user-{key} vanished after seq {p} was read",
                        r.reader,
                        r.intended_us as f64 / 1e6
                    )
                }),
                (None, None) => {}
            }
        }
        in_flight.push(Reverse((r.intended_us + r.latency_us, i)));
    }

    // No acknowledged write lost, on any replica.
    let mut replicas_with_key: HashMap<u32, u64> = HashMap::new();
    for f in &h.final_reads {
        v.final_reads_checked += 1;
        *replicas_with_key.entry(f.key).or_default() += 1;
        let acked = latest_acked.get(&f.key).copied();
        match (&f.value, acked) {
            (Some(s), _) => {
                phantom(&mut v, f.key, s, &format!("final read on node {}", f.node));
                if let Some(a) = acked
                    && s.seq < a
                {
                    v.flag(Invariant::LostWrite, || {
                        format!(
                            "node {} (shard {}): user-{} holds seq {} but seq {a} was acknowledged",
                            f.node, f.shard, f.key, s.seq
                        )
                    });
                }
            }
            (None, Some(a)) => v.flag(Invariant::LostWrite, || {
                format!(
                    "node {} (shard {}): user-{} has no row but seq {a} was acknowledged",
                    f.node, f.shard, f.key
                )
            }),
            (None, None) => {}
        }
    }
    for (key, seq) in &latest_acked {
        if !replicas_with_key.contains_key(key) {
            v.flag(Invariant::LostWrite, || {
                format!("user-{key}: seq {seq} was acknowledged but no replica was read for it")
            });
        }
    }
    v.keys_checked = latest_acked.len() as u64;
    v
}

/// The versions that served at some time in `[from, to]`, by the swap log (version 1
/// from the start).
fn serving_during(swaps: &[(u64, u32)], from: u64, to: u64) -> Vec<u32> {
    let mut at_from = 1;
    let mut out = Vec::new();
    for &(t, version) in swaps {
        if t <= from {
            at_from = version;
        } else if t <= to {
            out.push(version);
        }
    }
    out.push(at_from);
    out
}

/// The version invariant over every successful read that reports versions.
fn check_versions(h: &History, v: &mut Verdict) {
    for r in h.reads.iter().filter(|r| r.error.is_none()) {
        let [version] = r.versions[..] else {
            if !r.versions.is_empty() {
                v.flag(Invariant::Version, || {
                    format!(
                        "reader {} at {:.3}s: the answer reports versions {:?} of one view",
                        r.reader,
                        r.intended_us as f64 / 1e6,
                        r.versions
                    )
                });
            }
            continue;
        };
        *v.reads_by_version.entry(version).or_default() += 1;
        let from = r.intended_us.saturating_sub(VERSION_SLACK_US);
        let to = r.intended_us + r.latency_us + VERSION_SLACK_US;
        let serving = serving_during(&h.swaps, from, to);
        if !serving.contains(&version) {
            v.flag(Invariant::Version, || {
                format!(
                    "reader {} at {:.3}s: answered at version {version}, while {serving:?} served",
                    r.reader,
                    r.intended_us as f64 / 1e6
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Ack, FinalRead, Read, Via, Write};

    const BASE: i64 = 1_000_000;

    fn write(key: u32, seq: i64, acked: bool) -> Write {
        Write {
            error: None,
            key,
            seq,
            via: Via::Kafka,
            sent_us: seq as u64,
            acked: acked.then_some(Ack {
                shard: key % 2,
                next_offset: seq,
            }),
        }
    }

    fn seen(seq: i64) -> Option<Seen> {
        Some(Seen {
            seq,
            event_time_us: BASE + seq,
            check_ok: true,
        })
    }

    fn read(reader: u32, at: u64, rows: Vec<(u32, Option<Seen>)>, wm: Vec<(u32, i64)>) -> Read {
        Read {
            reader,
            intended_us: at,
            latency_us: 1,
            error: None,
            rows,
            watermarks: wm,
            versions: Vec::new(),
        }
    }

    fn final_read(node: u64, key: u32, value: Option<Seen>) -> FinalRead {
        FinalRead {
            node,
            shard: key % 2,
            key,
            value,
        }
    }

    /// Two keys, both replicas up to date, reads moving forward: clean.
    fn healthy() -> History {
        History {
            event_time_base_us: BASE,
            writes: vec![
                write(1, 1, true),
                write(2, 2, true),
                write(1, 3, true),
                write(1, 4, false),
            ],
            reads: vec![
                read(0, 10, vec![(1, seen(1)), (2, None)], vec![(1, 5)]),
                read(
                    0,
                    20,
                    vec![(1, seen(3)), (2, seen(2))],
                    vec![(1, 7), (0, 3)],
                ),
                // Another reader may be behind the first one: sessions are independent.
                read(1, 25, vec![(1, seen(1))], vec![(1, 5)]),
                // The unacknowledged write may be visible.
                read(1, 30, vec![(1, seen(4))], vec![(1, 9)]),
            ],
            swaps: Vec::new(),
            final_reads: vec![
                final_read(1, 1, seen(4)),
                final_read(2, 1, seen(3)),
                final_read(1, 2, seen(2)),
                final_read(3, 2, seen(2)),
            ],
            readers: Default::default(),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let v = check(&healthy());
        assert!(v.ok(), "{:?}", v.examples);
        assert_eq!(v.keys_checked, 2);
        assert_eq!(v.final_reads_checked, 4);
    }

    #[test]
    fn a_lost_write_is_flagged() {
        // A replica holds an older value than the last acknowledged one.
        let mut h = healthy();
        h.final_reads[1].value = seen(1);
        let v = check(&h);
        assert_eq!(v.count(Invariant::LostWrite), 1, "{:?}", v.examples);
        assert!(v.examples[0].detail.contains("seq 3 was acknowledged"));
        // A replica without the row at all.
        let mut h = healthy();
        h.final_reads[3].value = None;
        assert_eq!(check(&h).count(Invariant::LostWrite), 1);
        // A key whose replicas were never read.
        let mut h = healthy();
        h.final_reads.retain(|f| f.key != 2);
        assert_eq!(check(&h).count(Invariant::LostWrite), 1);
    }

    #[test]
    fn a_non_monotonic_read_is_flagged() {
        // The same reader sees the key go back from seq 3 to seq 1.
        let mut h = healthy();
        h.reads.push(read(0, 40, vec![(1, seen(1))], vec![(1, 7)]));
        let v = check(&h);
        assert_eq!(v.count(Invariant::MonotonicRead), 1, "{:?}", v.examples);
        // A shard's watermark goes back.
        let mut h = healthy();
        h.reads.push(read(0, 40, vec![], vec![(0, 2)]));
        assert_eq!(check(&h).count(Invariant::MonotonicRead), 1);
        // A key that was seen disappears.
        let mut h = healthy();
        h.reads.push(read(0, 40, vec![(2, None)], vec![]));
        assert_eq!(check(&h).count(Invariant::MonotonicRead), 1);
        // Failed lookups carry nothing and are not judged.
        let mut h = healthy();
        let mut failed = read(0, 40, vec![(1, seen(1))], vec![(1, 0)]);
        failed.error = Some("deadline".into());
        h.reads.push(failed);
        assert!(check(&h).ok());
    }

    #[test]
    fn a_phantom_value_is_flagged() {
        // A value never written, during the run.
        let mut h = healthy();
        h.reads.push(read(1, 40, vec![(2, seen(99))], vec![]));
        let v = check(&h);
        assert_eq!(v.count(Invariant::Phantom), 1, "{:?}", v.examples);
        // Written for another key.
        let mut h = healthy();
        h.final_reads[2].value = seen(3);
        assert_eq!(check(&h).count(Invariant::Phantom), 1);
        // Right seq, wrong event time.
        let mut h = healthy();
        h.reads[0].rows[0].1 = Some(Seen {
            seq: 1,
            event_time_us: BASE + 7,
            check_ok: true,
        });
        assert_eq!(check(&h).count(Invariant::Phantom), 1);
        // A torn row.
        let mut h = healthy();
        h.final_reads[0].value = Some(Seen {
            seq: 4,
            event_time_us: BASE + 4,
            check_ok: false,
        });
        assert_eq!(check(&h).count(Invariant::Phantom), 1);
    }

    #[test]
    fn only_a_lookup_completed_before_another_was_issued_binds_it() {
        // Open loop: reader 0's lookups due at 10 and 20 overlap (the first takes 50);
        // they may come back in either order. A lookup due at 100, after both completed,
        // must not go back.
        let mut h = healthy();
        let slow = |at, seq, wm| Read {
            latency_us: 50,
            ..read(0, at, vec![(1, seen(seq))], vec![(1, wm)])
        };
        h.reads = vec![slow(10, 3, 7), slow(20, 1, 5)];
        let v = check(&h);
        assert!(v.ok(), "overlapping lookups flagged: {:?}", v.examples);
        h.reads.push(read(0, 100, vec![(1, seen(1))], vec![(1, 5)]));
        let v = check(&h);
        assert!(
            !v.ok(),
            "a lookup issued after seq 3 was read went back to seq 1"
        );
        assert!(
            v.examples
                .iter()
                .any(|e| e.detail.contains("went back from seq 3 to 1")),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn reads_must_report_one_version_that_served_while_they_ran() {
        let mut h = healthy();
        // v2 promoted at 10 s, v1 again at 20 s (rollback).
        h.swaps = vec![(10_000_000, 2), (20_000_000, 1)];
        let at = |t: u64, versions: Vec<u32>| Read {
            versions,
            ..read(0, t, Vec::new(), Vec::new())
        };
        h.reads = vec![
            at(1_000_000, vec![1]),
            at(15_000_000, vec![2]),
            // Within the slack around a swap either side is right.
            at(9_000_000, vec![2]),
            at(21_000_000, vec![2]),
            at(30_000_000, vec![1]),
            // A node that predates versioned answers reports none: not judged.
            at(31_000_000, vec![]),
        ];
        let v = check(&h);
        assert!(v.ok(), "{:?}", v.examples);
        assert_eq!(v.reads_by_version, BTreeMap::from([(1, 2), (2, 3)]));
        h.reads = vec![
            at(15_000_000, vec![1]),
            at(40_000_000, vec![2]),
            at(5, vec![1, 2]),
        ];
        let v = check(&h);
        assert_eq!(v.count(Invariant::Version), 3, "{:?}", v.examples);
    }
}
