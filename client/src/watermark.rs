//! Watermarks: per shard, the offsets a replica has applied. They make reads monotonic
//! (the client asks every replica for at least what it has already seen) and pushes
//! readable (a push returns the offsets it produced).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use quiver_proto::v1::{ShardWatermark, TopicOffset};

/// A set of minimum offsets per shard and topic: a read-your-writes token.
///
/// Its text form (`Display` / `FromStr`) can travel between services, e.g. in an HTTP
/// header: `3:user_txn=1042,5:user_txn=77` (topics are percent-free names without `,`,
/// `:` or `=`, which Kafka topic names never contain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks {
    shards: BTreeMap<u32, BTreeMap<String, i64>>,
}

impl Watermarks {
    /// No constraint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is no constraint.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The offsets required of `shard`, if any.
    pub fn shard(&self, shard: u32) -> Option<&BTreeMap<String, i64>> {
        self.shards.get(&shard)
    }

    /// Every (shard, topic, next offset), ordered by shard then topic.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str, i64)> {
        self.shards
            .iter()
            .flat_map(|(s, t)| t.iter().map(move |(topic, o)| (*s, topic.as_str(), *o)))
    }

    /// Raises this to at least `other` (per shard and topic maximum).
    pub fn merge(&mut self, other: &Watermarks) {
        for (shard, topics) in &other.shards {
            self.merge_shard(*shard, topics.iter().map(|(t, o)| (t.as_str(), *o)));
        }
    }

    /// Whether `offsets` (one shard's, as a replica answered) reach this set's minimum for
    /// `shard`: every topic required is there, at least as far.
    pub fn covers(&self, shard: u32, offsets: &BTreeMap<String, i64>) -> bool {
        self.shards.get(&shard).is_none_or(|need| {
            need.iter()
                .all(|(t, o)| offsets.get(t).is_some_and(|have| have >= o))
        })
    }

    /// Raises `shard` to at least `offsets`.
    pub(crate) fn raise_shard(&mut self, shard: u32, offsets: &BTreeMap<String, i64>) {
        self.merge_shard(shard, offsets.iter().map(|(t, o)| (t.as_str(), *o)));
    }

    /// Raises this to at least the wire watermarks `wms`.
    pub fn merge_wire(&mut self, wms: &[ShardWatermark]) {
        for wm in wms {
            self.merge_shard(
                wm.shard,
                wm.offsets.iter().map(|o| (o.topic.as_str(), o.next_offset)),
            );
        }
    }

    fn merge_shard<'a>(&mut self, shard: u32, offsets: impl Iterator<Item = (&'a str, i64)>) {
        let entry = self.shards.entry(shard).or_default();
        for (topic, offset) in offsets {
            match entry.get_mut(topic) {
                Some(o) => *o = (*o).max(offset),
                None => {
                    entry.insert(topic.to_owned(), offset);
                }
            }
        }
    }

    /// Wire form, restricted to `shards` (all shards if `None`).
    pub(crate) fn to_wire(&self, shards: Option<&[u32]>) -> Vec<ShardWatermark> {
        let one = |(shard, topics): (&u32, &BTreeMap<String, i64>)| ShardWatermark {
            shard: *shard,
            offsets: topics
                .iter()
                .map(|(t, o)| TopicOffset {
                    topic: t.clone(),
                    next_offset: *o,
                })
                .collect(),
        };
        match shards {
            None => self.shards.iter().map(one).collect(),
            Some(list) => list
                .iter()
                .filter_map(|s| self.shards.get_key_value(s))
                .map(one)
                .collect(),
        }
    }

    /// Builds from wire watermarks.
    pub fn from_wire(wms: &[ShardWatermark]) -> Self {
        let mut w = Watermarks::new();
        w.merge_wire(wms);
        w
    }
}

impl fmt::Display for Watermarks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (shard, topics) in &self.shards {
            for (topic, offset) in topics {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{shard}:{topic}={offset}")?;
            }
        }
        Ok(())
    }
}

/// A malformed watermark token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed watermark token {0:?}: expected \"shard:topic=offset,...\"")]
pub struct BadToken(pub String);

impl FromStr for Watermarks {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut w = Watermarks::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let bad = || BadToken(part.to_owned());
            let (shard, rest) = part.split_once(':').ok_or_else(bad)?;
            let (topic, offset) = rest.rsplit_once('=').ok_or_else(bad)?;
            let shard: u32 = shard.parse().map_err(|_| bad())?;
            let offset: i64 = offset.parse().map_err(|_| bad())?;
            if topic.is_empty() || offset < 0 {
                return Err(bad());
            }
            w.merge_shard(shard, std::iter::once((topic, offset)));
        }
        Ok(w)
    }
}

/// The highest watermark this client has seen per shard: every sub-request asks for at
/// least it, so no replica can answer with older data after a failover.
#[derive(Debug, Default)]
pub(crate) struct SessionWatermarks {
    seen: Mutex<Watermarks>,
}

impl SessionWatermarks {
    /// Minimums for a sub-request reading `shards`: the session's merged with `extra`.
    pub(crate) fn minimums(&self, shards: &[u32], extra: &Watermarks) -> Vec<ShardWatermark> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if extra.is_empty() {
            return seen.to_wire(Some(shards));
        }
        let mut w = Watermarks::new();
        for s in shards {
            for src in [&*seen, extra] {
                if let Some(t) = src.shard(*s) {
                    w.merge_shard(*s, t.iter().map(|(k, v)| (k.as_str(), *v)));
                }
            }
        }
        w.to_wire(None)
    }

    /// The floor of `shards`: the session's offsets raised to `extra`'s, per shard.
    pub(crate) fn floors(
        &self,
        shards: impl Iterator<Item = u32>,
        extra: &Watermarks,
    ) -> Watermarks {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = Watermarks::new();
        for s in shards {
            for src in [&*seen, extra] {
                if let Some(t) = src.shard(s) {
                    w.merge_shard(s, t.iter().map(|(k, v)| (k.as_str(), *v)));
                }
            }
        }
        w
    }

    /// Records what a replica answered with.
    pub(crate) fn observe(&self, wms: &[ShardWatermark]) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .merge_wire(wms);
    }

    /// A copy of everything seen.
    pub(crate) fn snapshot(&self) -> Watermarks {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(shard: u32, topic: &str, o: i64) -> ShardWatermark {
        ShardWatermark {
            shard,
            offsets: vec![TopicOffset {
                topic: topic.into(),
                next_offset: o,
            }],
        }
    }

    #[test]
    fn merge_keeps_the_maximum_per_topic() {
        let mut w = Watermarks::from_wire(&[wm(1, "a", 10), wm(2, "a", 5)]);
        w.merge_wire(&[wm(1, "a", 7), wm(1, "b", 3), wm(2, "a", 9)]);
        assert_eq!(w.to_string(), "1:a=10,1:b=3,2:a=9");
        assert_eq!(w.to_string().parse::<Watermarks>().unwrap(), w);
        assert_eq!("".parse::<Watermarks>().unwrap(), Watermarks::new());
        for bad in ["x", "1:a", "a:b=1", "1:a=x", "1:=3", "1:a=-1"] {
            assert!(bad.parse::<Watermarks>().is_err(), "{bad}");
        }
    }

    #[test]
    fn session_minimums_cover_only_the_shards_read() {
        let s = SessionWatermarks::default();
        s.observe(&[wm(1, "a", 10), wm(2, "a", 4)]);
        s.observe(&[wm(1, "a", 8)]);
        assert_eq!(s.minimums(&[1], &Watermarks::new()), vec![wm(1, "a", 10)]);
        let extra = Watermarks::from_wire(&[wm(2, "a", 6), wm(3, "a", 1)]);
        assert_eq!(
            s.minimums(&[2, 3], &extra),
            vec![wm(2, "a", 6), wm(3, "a", 1)]
        );
        assert!(s.minimums(&[9], &extra).is_empty());
    }
}
