//! Client errors and their retry classification.

use std::time::Duration;

use quiver_proto::ErrorCode;
use quiver_proto::error::{Retry, is_transport_failure};

/// Errors returned by [`crate::Client`] and [`crate::NodeClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request is invalid; caught before anything was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A named view, feature, feature service or entity does not exist (checked against
    /// the registry the client cached, refreshed once before failing).
    #[error("not found: {0}")]
    NotFound(String),
    /// The node could not be reached.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// Address.
        endpoint: String,
        /// Transport message.
        message: String,
    },
    /// A node answered with an error, or the connection failed (a TLS handshake refused,
    /// a reset): then the message ends with the transport's causes.
    #[error("{}: {}{}", rpc_code_name(.0), .0.message(), transport_causes(.0))]
    Rpc(#[from] tonic::Status),
    /// No replica could answer in time; `last` is the last error seen, if any.
    #[error("deadline of {deadline:?} exceeded{}", last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    DeadlineExceeded {
        /// The call's deadline.
        deadline: Duration,
        /// The last failure before the deadline.
        last: Option<Box<ClientError>>,
    },
    /// Failing over was needed but the retry budget is spent (the cluster is shedding
    /// load or mostly down).
    #[error("retry budget exhausted after: {0}")]
    BudgetExhausted(Box<ClientError>),
    /// The cluster map lists no replica for a shard.
    #[error("no replica of shard {0} is known")]
    NoReplica(u32),
}

/// The quiver error code's name if the node sent one, else the gRPC code's.
fn rpc_code_name(status: &tonic::Status) -> String {
    match ErrorCode::from_status(status) {
        Some(code) => code.as_str().to_owned(),
        None => format!("{:?}", status.code()),
    }
}

/// `": cause: cause…"` for a transport failure (each cause once), else nothing: "transport
/// error" alone does not say that the node refused the client's certificate.
fn transport_causes(s: &tonic::Status) -> String {
    let mut said = s.message().to_owned();
    let start = said.len();
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = c.source();
    }
    said.split_off(start)
}

impl ClientError {
    /// The quiver error code this error corresponds to, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::InvalidRequest(_) => Some(ErrorCode::InvalidArgument),
            ClientError::NotFound(_) => Some(ErrorCode::NotFound),
            ClientError::Connect { .. } | ClientError::NoReplica(_) => Some(ErrorCode::Unavailable),
            ClientError::Rpc(s) => ErrorCode::from_status(s).or(match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    Some(ErrorCode::Unavailable)
                }
                _ if is_transport_failure(s) => Some(ErrorCode::Unavailable),
                _ => None,
            }),
            ClientError::DeadlineExceeded { last, .. } => last.as_ref().and_then(|e| e.code()),
            ClientError::BudgetExhausted(e) => e.code(),
        }
    }

    /// The gRPC status code, if a node answered.
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }

    /// Whether the same request may succeed on another replica or later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::InvalidRequest(_) | ClientError::NotFound(_) => false,
            ClientError::Connect { .. }
            | ClientError::NoReplica(_)
            | ClientError::DeadlineExceeded { .. }
            | ClientError::BudgetExhausted(_) => true,
            ClientError::Rpc(s) => Retry::of_status(s) != Retry::Never,
        }
    }

    /// Whether the caller's quota is spent (`quota_exhausted`): retry the same request
    /// after [`ClientError::retry_after`]; the client does not fail over on it.
    pub fn is_quota_exhausted(&self) -> bool {
        matches!(self, ClientError::Rpc(s) if Retry::of_status(s) == Retry::Later)
    }

    /// How long until the caller's quota holds the request again, when a node said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Rpc(s) => quiver_proto::error::retry_after_from_status(s),
            _ => None,
        }
    }

    /// The cluster-map epoch a node reported with a wrong-shard error.
    pub(crate) fn reported_epoch(&self) -> Option<u64> {
        match self {
            ClientError::Rpc(s) => quiver_proto::error::epoch_from_status(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retryability() {
        let transport = ClientError::Rpc(tonic::Status::unavailable("connection refused"));
        assert!(transport.is_retryable());
        assert_eq!(transport.code(), Some(ErrorCode::Unavailable));
        assert!(!ClientError::InvalidRequest("x".into()).is_retryable());
        assert_eq!(
            ClientError::InvalidRequest("x".into()).code(),
            Some(ErrorCode::InvalidArgument)
        );
        let behind = ClientError::Rpc(ErrorCode::Behind.to_status("x"));
        let late = ClientError::DeadlineExceeded {
            deadline: Duration::from_millis(5),
            last: Some(Box::new(behind)),
        };
        assert_eq!(late.code(), Some(ErrorCode::Behind));
        assert!(late.to_string().contains("last error: behind"), "{late}");
    }

    #[derive(Debug)]
    struct Cause(&'static str, Option<Box<Cause>>);
    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Cause {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn transport_failures_name_their_cause_and_are_unavailable() {
        let refused = Cause(
            "transport error",
            Some(Box::new(Cause(
                "connection error: received fatal alert: CertificateRequired",
                None,
            ))),
        );
        let e = ClientError::Rpc(tonic::Status::from_error(Box::new(refused)));
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert_eq!(
            e.to_string(),
            "Unknown: transport error: connection error: received fatal alert: CertificateRequired"
        );
        assert!(e.is_retryable());
        // A stream reset by the GOAWAY of a node shutting down: tonic says Internal, but
        // the node never processed it — retryable elsewhere, like any transport failure.
        let mut goaway = tonic::Status::internal(
            "h2 protocol error: http2 error: connection error received: not a result of an error",
        );
        goaway.set_source(std::sync::Arc::new(Cause("not a result of an error", None)));
        let goaway = ClientError::Rpc(goaway);
        assert_eq!(goaway.code(), Some(ErrorCode::Unavailable));
        assert!(goaway.is_retryable());
        assert_eq!(
            crate::retry::Recovery::of(&goaway),
            crate::retry::Recovery::of(&ClientError::Rpc(tonic::Status::unavailable("down")))
        );
        // A node's own Internal answer carries no cause: never retried.
        assert!(!ClientError::Rpc(tonic::Status::internal("bug")).is_retryable());
        // A node's own Unknown answer carries no cause: no code is invented for it.
        let answered = ClientError::Rpc(tonic::Status::unknown("boom"));
        assert_eq!(answered.code(), None);
        assert_eq!(answered.to_string(), "Unknown: boom");
    }
}
