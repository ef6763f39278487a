//! Windowed aggregations computed by the shard replicas (aggregation views).
//!
//! Every replica of a shard reads the same log in the same order, so each computes the
//! same aggregates by itself, deterministically, in the same `WriteBatch` as the offsets
//! it consumed — a restart or a redelivered record never double counts.
//!
//! - **Tiles.** Per (view, version, entity) one stored value ([`tiles`]) holds, for each
//!   tile resolution (hop) of the view, the partial aggregates ([`acc`]) of the events in
//!   each tile `[start, start + hop)`. An event updates its tile of every resolution.
//! - **Windows** are sawtooth: at query time `q` a feature with window `W` and hop `h`
//!   merges the tiles starting at or after `floor(q − W, h)`; since `q` is never before
//!   the newest event ingested, that is exactly the events with `t ≥ floor(q − W, h)`.
//! - **Bounded storage.** Tiles older than every window of their resolution at the
//!   shard's event-time watermark are dropped when the entity is next written; an entity
//!   holds at most `Σ (longest window / hop + 1)` tiles over its resolutions
//!   ([`crate::registry::aggregation::Aggregation::max_tiles_per_entity`]), and entities
//!   with no event within the longest window are removed by compaction.
//! - **Lateness.** The watermark is the newest event time ingested for the view version on
//!   the shard (stored with the offsets). An event more than `allowed_lateness` behind it
//!   is dropped and counted; a tombstone erases the entity's aggregates.
//!
//! - **As of a time.** A view with `history` also keeps every counted event; [`as_of`]
//!   rebuilds an entity's tiles at a past time from them.
//!
//! `docs/AGGREGATIONS.md` is the user-facing rule; `read` answers lookups.

pub mod acc;
pub mod as_of;
#[cfg(test)]
mod as_of_oracle_tests;
#[cfg(test)]
mod body_tests;
pub mod codec;
pub mod hll;
#[cfg(test)]
mod oracle_tests;
pub mod read;
pub mod split;
pub mod stored;
pub mod tiles;

/// Why stored tiles could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggError {
    /// Shorter than a length says.
    #[error("tile value truncated")]
    Truncated,
    /// Not a valid encoding.
    #[error("corrupt tile value: {0}")]
    Corrupt(&'static str),
}
