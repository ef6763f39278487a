//! The control plane: cluster membership, shard assignment and the registry, replicated
//! with openraft. See `docs/ARCHITECTURE.md`.

pub mod placement;
