//! Gaps in a partition's offsets: whether a delivered record follows the last one, and
//! when a gap is re-read or accepted (see [`judge_offset`]); [`ConsumerOffsets`] keeps the
//! consumer's position per topic and applies the judgement.

use std::collections::HashMap;

use metrics::counter;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// What a record's offset says about the consumer's position.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// The next record (or the first one seen).
    InOrder,
    /// Records were skipped: re-read from `expected`.
    Refetch { expected: i64 },
    /// Records were skipped and re-reading did not find them: a genuine gap.
    AcceptGap { expected: i64 },
}

/// Judges `offset` against `expected` (the offset after the last delivered record) and the
/// gap being re-fetched, updating the latter; a gap is re-read `refetches` times before it
/// is accepted.
///
/// Why gaps are re-read: a broker may expose a high watermark before the records below it
/// are readable (Tansu advances it before storing the batch). A fetch in between returns
/// the later batches, and a consumer that trusts it skips the missing records forever:
/// found by the chaos suite (a replica rebuilt under load lacked an acknowledged write).
/// Re-reading from the expected offset finds them a moment later; a gap that persists is
/// genuine (compaction, transaction markers) and is accepted.
pub(super) fn judge_offset(
    expected: Option<i64>,
    offset: i64,
    gap: &mut Option<(i64, i64, u32)>,
    refetches: u32,
) -> Position {
    let Some(expected) = expected.filter(|e| offset > *e) else {
        *gap = None;
        return Position::InOrder;
    };
    let attempts = match gap {
        Some((e, o, n)) if *e == expected && *o == offset => *n,
        _ => 0,
    };
    if attempts >= refetches {
        *gap = None;
        Position::AcceptGap { expected }
    } else {
        *gap = Some((expected, offset, attempts + 1));
        Position::Refetch { expected }
    }
}

/// What the consumer delivered, per topic: the offset after its last record (unknown
/// after an assignment from the beginning until the first record), and the offset gap
/// being re-fetched (expected, delivered, attempts so far).
#[derive(Default)]
pub(super) struct ConsumerOffsets {
    pub(super) next: HashMap<String, i64>,
    gap: HashMap<String, (i64, i64, u32)>,
}

impl ConsumerOffsets {
    /// Judges the record at `offset` of `topic` against the last one delivered; `Some(expected)`
    /// when the batch must end here and the consumer re-read from `expected` (a gap that
    /// may yet fill), else the record is taken (in order, or past a gap given up on).
    pub(super) fn judge(
        &mut self,
        topic: &str,
        offset: i64,
        refetches: u32,
        shard_label: &str,
    ) -> Option<i64> {
        let mut gap = self.gap.remove(topic);
        let position = judge_offset(self.next.get(topic).copied(), offset, &mut gap, refetches);
        if let Some(g) = gap {
            self.gap.insert(topic.to_owned(), g);
        }
        match position {
            Position::InOrder => {}
            Position::Refetch { expected } => {
                // Not consumed: the batch ends here and the consumer goes back.
                let attempt = self.gap.get(topic).map_or(0, |g| g.2);
                counter!(m::INGEST_GAP_REFETCHES, "shard" => shard_label.to_owned()).increment(1);
                if attempt == 1 {
                    info!(
                        topic,
                        expected, offset, "offset gap; re-reading from the expected offset"
                    );
                } else {
                    debug!(
                        topic,
                        expected, offset, attempt, "offset gap persists; re-reading"
                    );
                }
                return Some(expected);
            }
            Position::AcceptGap { expected } => {
                counter!(m::INGEST_OFFSET_GAPS, "shard" => shard_label.to_owned())
                    .increment((offset - expected) as u64);
                warn!(
                    topic,
                    expected,
                    offset,
                    refetches,
                    "offsets missing from the partition; continuing after them"
                );
            }
        }
        match self.next.get_mut(topic) {
            Some(next) => *next = offset + 1,
            None => {
                self.next.insert(topic.to_owned(), offset + 1);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_offsets_pass() {
        let mut gap = None;
        assert_eq!(judge_offset(None, 7, &mut gap, 10), Position::InOrder);
        assert_eq!(judge_offset(Some(8), 8, &mut gap, 10), Position::InOrder);
        // Below the expected offset (a re-delivery after a seek): not a gap.
        assert_eq!(judge_offset(Some(8), 5, &mut gap, 10), Position::InOrder);
        assert_eq!(gap, None);
    }

    #[test]
    fn a_gap_is_refetched_then_accepted_if_it_persists() {
        let mut gap = None;
        for attempt in 1..=3 {
            assert_eq!(
                judge_offset(Some(10), 13, &mut gap, 3),
                Position::Refetch { expected: 10 }
            );
            assert_eq!(gap, Some((10, 13, attempt)));
        }
        assert_eq!(
            judge_offset(Some(10), 13, &mut gap, 3),
            Position::AcceptGap { expected: 10 }
        );
        assert_eq!(gap, None);
        // Re-reading disabled: accepted at once.
        assert_eq!(
            judge_offset(Some(10), 13, &mut gap, 0),
            Position::AcceptGap { expected: 10 }
        );
    }

    #[test]
    fn a_gap_that_fills_in_is_forgotten() {
        let mut gap = None;
        assert_eq!(
            judge_offset(Some(10), 13, &mut gap, 10),
            Position::Refetch { expected: 10 }
        );
        // The re-fetch delivers the missing record: in order, the gap is cleared.
        assert_eq!(judge_offset(Some(10), 10, &mut gap, 10), Position::InOrder);
        assert_eq!(gap, None);
        // A different gap later starts its own count.
        assert_eq!(
            judge_offset(Some(20), 21, &mut gap, 10),
            Position::Refetch { expected: 20 }
        );
        assert_eq!(gap, Some((20, 21, 1)));
    }
}
