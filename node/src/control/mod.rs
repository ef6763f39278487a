//! The control plane: cluster membership, shard assignment and the registry, replicated
//! with openraft. See `docs/ARCHITECTURE.md`.

pub mod control_service;
pub mod error;
pub mod log_store;
mod member;
pub mod network;
pub mod placement;
pub mod plane;
pub mod raft_service;
pub mod reconciler;
pub mod state;
pub mod state_machine;
pub mod tokens;
pub mod types;
