//! Control-plane errors, typed: callers decide on the variant (retry, give up, report),
//! never on the text of a message.

use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use quiver_proto::NodeId;
use quiver_proto::error::Retry;

/// Errors of control-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The Raft database could not be opened or read.
    #[error("raft storage: {0}")]
    Storage(String),
    /// Raft failed to start, or refused an operation for a reason retrying cannot change
    /// (e.g. a membership change conflicting with one in progress).
    #[error("raft: {0}")]
    Raft(String),
    /// Raft stopped on this node (a storage failure, a panic, shutdown): no retry on this
    /// node can succeed; it needs a restart.
    #[error("the control plane stopped on this node: {0}")]
    Fatal(String),
    /// No leader is known yet, or it could not be reached: transient.
    #[error("no reachable control-plane leader: {0}")]
    NoLeader(NoLeader),
    /// The leader answered a read-index round but this node did not apply up to that
    /// index in time.
    #[error("this node did not apply up to the leader's read index {index} in time")]
    Lagging {
        /// The leader's read index.
        index: u64,
    },
    /// The leader answered a forwarded call with an error retrying cannot change (e.g. it
    /// refused this node's credentials).
    #[error("leader {leader} refused the call: {message}")]
    Refused {
        /// The leader's node id.
        leader: NodeId,
        /// Its answer.
        message: String,
    },
    /// The command was rejected by the state machine.
    #[error("{reason}")]
    Rejected {
        /// Input was invalid (vs. conflicting with the state).
        invalid: bool,
        /// Why.
        reason: String,
    },
}

/// Why no leader took a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoLeader {
    /// None is known (an election has not finished).
    #[error("no leader elected yet")]
    NotElected,
    /// This node believed it led but no longer does.
    #[error("leadership is changing")]
    Changing,
    /// This node does not lead; Raft names the leader it knows, if any.
    #[error("this node does not lead (leader: {leader:?})")]
    NotLeader {
        /// The leader Raft knows.
        leader: Option<NodeId>,
    },
    /// The leader did not answer (transport failure, timeout, or it answered that it
    /// cannot take the call now).
    #[error("leader {leader} at {addr} did not answer: {detail}")]
    Unreachable {
        /// The leader's node id.
        leader: NodeId,
        /// Its address.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// No member accepted this node's join.
    #[error("no member accepted the join")]
    JoinNotAccepted,
}

impl ControlError {
    /// Whether trying again (after a backoff, perhaps at a new leader) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::NoLeader(_) | ControlError::Lagging { .. }
        )
    }

    /// A failed Raft write (`client_write`, membership changes) by kind: not the leader
    /// (transient), Raft stopped (fatal), or refused.
    pub fn from_write(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ControlError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ControlError::NoLeader(NoLeader::NotLeader {
                    leader: f.leader_id.map(NodeId),
                })
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                ControlError::Raft(c.to_string())
            }
            RaftError::Fatal(f) => ControlError::Fatal(f.to_string()),
        }
    }

    /// What a forwarded call's failure at `leader` means: a leader that did not answer,
    /// or answered that it cannot take it now, is transient; any other answer is final.
    pub fn from_leader_status(leader: NodeId, addr: &str, status: &tonic::Status) -> ControlError {
        match Retry::of_status(status) {
            Retry::Never => ControlError::Refused {
                leader,
                message: status.message().to_string(),
            },
            Retry::Elsewhere | Retry::NodeDown | Retry::Reroute | Retry::Later => {
                ControlError::NoLeader(NoLeader::Unreachable {
                    leader,
                    addr: addr.to_string(),
                    detail: status.message().to_string(),
                })
            }
        }
    }

    /// A forwarded call to `leader` that did not answer within its bound.
    pub fn timed_out(leader: NodeId, addr: &str) -> ControlError {
        ControlError::NoLeader(NoLeader::Unreachable {
            leader,
            addr: addr.to_string(),
            detail: "timed out".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{Fatal, ForwardToLeader};
    use quiver_proto::ErrorCode;

    use super::*;

    #[test]
    fn raft_write_failures_are_classified_by_kind_not_text() {
        let forward = ControlError::from_write(RaftError::APIError(
            ClientWriteError::ForwardToLeader(ForwardToLeader::new(3, BasicNode::default())),
        ));
        assert!(
            matches!(
                forward,
                ControlError::NoLeader(NoLeader::NotLeader {
                    leader: Some(NodeId(3))
                })
            ),
            "{forward:?}"
        );
        assert!(forward.is_transient());
        let stopped = ControlError::from_write(RaftError::Fatal(Fatal::Stopped));
        assert!(matches!(stopped, ControlError::Fatal(_)), "{stopped:?}");
        assert!(!stopped.is_transient(), "a stopped Raft is not 'no leader'");
        assert!(!ControlError::from_write(RaftError::Fatal(Fatal::Panicked)).is_transient());
    }

    #[test]
    fn a_leaders_answer_is_transient_only_when_it_could_not_take_the_call() {
        let down = ControlError::from_leader_status(
            NodeId(1),
            "h:1",
            &tonic::Status::unavailable("connection refused"),
        );
        assert!(down.is_transient(), "{down:?}");
        let busy = ControlError::from_leader_status(
            NodeId(1),
            "h:1",
            &ErrorCode::Unavailable.to_status("x"),
        );
        assert!(busy.is_transient());
        let refused = ControlError::from_leader_status(
            NodeId(1),
            "h:1",
            &ErrorCode::Unauthenticated.to_status("bad cluster token"),
        );
        assert!(
            matches!(&refused, ControlError::Refused { leader: NodeId(1), message } if message == "bad cluster token"),
            "{refused:?}"
        );
        assert!(!refused.is_transient());
        assert!(ControlError::timed_out(NodeId(2), "h:2").is_transient());
    }
}
