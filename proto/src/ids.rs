//! The two ids everything is keyed by: a shard ([`ShardId`]) and a node ([`NodeId`]).
//! Bare integers on the wire (protobuf `uint32`/`uint64`) and in persisted state (serde
//! transparent), typed everywhere in between so one is never passed for the other.

use std::fmt;

/// Index of a shard, equal to the Kafka partition number it mirrors.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A node's id: its `node_id` setting, its Raft id, its id in the cluster map.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        NodeId(id)
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_persist_as_bare_integers_also_as_map_keys() {
        // The control state is persisted (Raft log, snapshots) with these inside: the
        // typed ids must read and write exactly what the bare integers did.
        let map: std::collections::BTreeMap<NodeId, Vec<ShardId>> =
            [(NodeId(7), vec![ShardId(0), ShardId(3)])].into();
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, r#"{"7":[0,3]}"#);
        let back: std::collections::BTreeMap<NodeId, Vec<ShardId>> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
        let bare: std::collections::BTreeMap<u64, Vec<u32>> = serde_json::from_str(&text).unwrap();
        assert_eq!(bare[&7], vec![0, 3]);
    }
}
