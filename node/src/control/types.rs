//! openraft type configuration of the control-plane group.

use std::io::Cursor;

use super::state::{Command, CommandResult};

openraft::declare_raft_types!(
    /// The control plane's Raft types: commands are [`Command`]s, nodes are addressed by
    /// their gRPC address (`BasicNode`), snapshots are the serialised state in memory (the
    /// state is metadata: kilobytes to a few megabytes).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft handle of the control-plane group.
pub type Raft = openraft::Raft<TypeConfig>;
