//! The closed set of error codes on quiver's wire.
//!
//! The node maps every error to one code; the code determines the gRPC status and whether
//! a client should retry elsewhere. The code's name travels in the `quiver-error-code`
//! metadata entry so clients branch on it rather than on message text.

use std::fmt;

/// Metadata key carrying [`ErrorCode::as_str`] on error responses.
pub const ERROR_CODE_METADATA_KEY: &str = "quiver-error-code";
/// Metadata key carrying the node's current cluster-map epoch on `wrong_shard` errors, so
/// a client knows whether to refresh its map.
pub const EPOCH_METADATA_KEY: &str = "quiver-epoch";

/// Metadata key a node sets on lookup responses while it drains for shutdown (it still
/// answers): smart clients prefer the shards' other replicas from then on.
pub const DRAINING_METADATA_KEY: &str = "quiver-draining";

/// Metadata key listing, on `behind` errors, every shard of the request that had not
/// reached its requested watermark (comma-separated ids), so a client retries those shards
/// elsewhere and keeps the others on the node.
pub const BEHIND_SHARDS_METADATA_KEY: &str = "quiver-behind-shards";

/// Metadata key listing, on `unavailable` errors, the shards of the request whose replicas
/// are placed on the node but still opening (it just started, or the replica was just
/// added) (comma-separated ids): the cluster map is right and another replica answers them
/// at once, so a client moves just those and keeps the others on the node.
pub const OPENING_SHARDS_METADATA_KEY: &str = "quiver-opening-shards";

/// Metadata key carrying, on `quota_exhausted` errors, how many milliseconds until the
/// caller's quota holds the request again.
pub const RETRY_AFTER_MS_METADATA_KEY: &str = "quiver-retry-after-ms";

/// Reads the wait a node attached to a `quota_exhausted` error, if any.
pub fn retry_after_from_status(status: &tonic::Status) -> Option<std::time::Duration> {
    let ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_MS_METADATA_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// Reads the lagging shards a node attached to a `behind` error (empty if none).
pub fn behind_shards_from_status(status: &tonic::Status) -> Vec<u32> {
    shards_from_metadata(status, BEHIND_SHARDS_METADATA_KEY)
}

/// Reads the shards a node attached to an `unavailable` error because its replicas of
/// them are still opening (empty if none).
pub fn opening_shards_from_status(status: &tonic::Status) -> Vec<u32> {
    shards_from_metadata(status, OPENING_SHARDS_METADATA_KEY)
}

fn shards_from_metadata(status: &tonic::Status, key: &str) -> Vec<u32> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Reads the epoch a node attached to an error, if any.
pub fn epoch_from_status(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(EPOCH_METADATA_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether `status` is a failure of the connection itself, not a node's answer: tonic
/// turns transport (HTTP/2, TLS, socket) errors into statuses that carry their cause as
/// the status' source; a status a node sent carries none.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    ErrorCode::from_status(status).is_none() && std::error::Error::source(status).is_some()
}

/// What a caller may do after a failed call: the one definition nodes (Raft peers) and
/// clients share, so they never disagree on which failures are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Retrying the same request cannot succeed (it is wrong, not allowed, or the node
    /// failed in a way another attempt would repeat).
    Never,
    /// The node does not hold the shard: refresh the shard map and route again.
    Reroute,
    /// The node answered that it cannot serve this now (behind, overloaded, shutting
    /// down): try another replica, or this one after a backoff.
    Elsewhere,
    /// No answer from the node (transport failure, deadline, cancelled connection): try
    /// another replica and count it against the node.
    NodeDown,
    /// The caller's own quota is spent: the same request succeeds after a wait, on any
    /// node. Not a node fault: do not fail over (another node enforces the same quota's
    /// share), back off and retry.
    Later,
}

impl Retry {
    /// The classification of any status a call returned: by its quiver error code when a
    /// node sent one, else by the gRPC code the transport or tonic produced.
    pub fn of_status(status: &tonic::Status) -> Retry {
        match ErrorCode::from_status(status) {
            Some(code) => code.retry(),
            // A connection failure whatever code tonic gave it: an HTTP/2 stream reset by
            // a GOAWAY of a node shutting down arrives as `Internal` ("not a result of an
            // error"), yet that node never processed the request.
            None if is_transport_failure(status) => Retry::NodeDown,
            None => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => Retry::NodeDown,
                // tonic's own load shedding (a full per-connection limit).
                tonic::Code::ResourceExhausted => Retry::Elsewhere,
                _ => Retry::Never,
            },
        }
    }
}

/// A wire-level error classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or violates a limit; retrying it unchanged cannot succeed.
    InvalidArgument,
    /// A named view, feature, entity or feature service does not exist.
    NotFound,
    /// The object exists and the change conflicts with it (e.g. incompatible view change).
    FailedPrecondition,
    /// This node does not hold a replica of the shard asked for.
    WrongShard,
    /// The replica is behind the watermark the request requires.
    Behind,
    /// The node is overloaded or shutting down; retry elsewhere.
    Unavailable,
    /// A node's queue or in-flight limit is full; retry elsewhere or later, with backoff.
    ResourceExhausted,
    /// The caller's quota (per principal) is spent; retry after the wait the error names.
    QuotaExhausted,
    /// A bug or storage failure on the node.
    Internal,
    /// No valid credentials: the token is missing, unknown, malformed or revoked.
    Unauthenticated,
    /// The caller's role or grants do not allow the call.
    PermissionDenied,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::FailedPrecondition,
        ErrorCode::WrongShard,
        ErrorCode::Behind,
        ErrorCode::Unavailable,
        ErrorCode::ResourceExhausted,
        ErrorCode::QuotaExhausted,
        ErrorCode::Internal,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    /// The gRPC status code this error is sent with.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::WrongShard => tonic::Code::FailedPrecondition,
            ErrorCode::Behind => tonic::Code::Unavailable,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::ResourceExhausted | ErrorCode::QuotaExhausted => {
                tonic::Code::ResourceExhausted
            }
            ErrorCode::Internal => tonic::Code::Internal,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        }
    }

    /// What a caller may do after this error ([`Retry`]).
    pub fn retry(self) -> Retry {
        match self {
            ErrorCode::WrongShard => Retry::Reroute,
            // Behind a watermark, overloaded (a full queue or in-flight limit: another
            // replica has its own), shutting down: the request is fine, this replica
            // cannot take it now.
            ErrorCode::Behind | ErrorCode::Unavailable | ErrorCode::ResourceExhausted => {
                Retry::Elsewhere
            }
            ErrorCode::QuotaExhausted => Retry::Later,
            ErrorCode::InvalidArgument
            | ErrorCode::NotFound
            | ErrorCode::FailedPrecondition
            | ErrorCode::Internal
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied => Retry::Never,
        }
    }

    /// Whether the same request may succeed on another replica or later.
    pub fn is_retryable(self) -> bool {
        self.retry() != Retry::Never
    }

    /// Stable name used in metadata and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::WrongShard => "wrong_shard",
            ErrorCode::Behind => "behind",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::QuotaExhausted => "quota_exhausted",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
        }
    }

    /// Parses [`ErrorCode::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invalid_argument" => ErrorCode::InvalidArgument,
            "not_found" => ErrorCode::NotFound,
            "failed_precondition" => ErrorCode::FailedPrecondition,
            "wrong_shard" => ErrorCode::WrongShard,
            "behind" => ErrorCode::Behind,
            "unavailable" => ErrorCode::Unavailable,
            "resource_exhausted" => ErrorCode::ResourceExhausted,
            "quota_exhausted" => ErrorCode::QuotaExhausted,
            "internal" => ErrorCode::Internal,
            "unauthenticated" => ErrorCode::Unauthenticated,
            "permission_denied" => ErrorCode::PermissionDenied,
            _ => return None,
        })
    }

    /// Builds a `tonic::Status` carrying this code in metadata.
    pub fn to_status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.grpc_code(), message);
        status.metadata_mut().insert(
            ERROR_CODE_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// Reads the code from a status returned by a quiver node, if it carries one.
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        let v = status.metadata().get(ERROR_CODE_METADATA_KEY)?;
        Self::parse(v.to_str().ok()?)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classes_of_codes_and_bare_statuses() {
        assert_eq!(ErrorCode::WrongShard.retry(), Retry::Reroute);
        assert_eq!(ErrorCode::QuotaExhausted.retry(), Retry::Later);
        assert!(ErrorCode::QuotaExhausted.is_retryable());
        let mut quota = ErrorCode::QuotaExhausted.to_status("spent");
        assert_eq!(quota.code(), tonic::Code::ResourceExhausted);
        assert_eq!(retry_after_from_status(&quota), None);
        quota
            .metadata_mut()
            .insert(RETRY_AFTER_MS_METADATA_KEY, "250".parse().unwrap());
        assert_eq!(
            retry_after_from_status(&quota),
            Some(std::time::Duration::from_millis(250))
        );
        for code in [
            ErrorCode::Behind,
            ErrorCode::Unavailable,
            ErrorCode::ResourceExhausted,
        ] {
            assert_eq!(code.retry(), Retry::Elsewhere, "{code}");
            assert!(code.is_retryable());
            assert_eq!(Retry::of_status(&code.to_status("x")), Retry::Elsewhere);
        }
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::FailedPrecondition,
            ErrorCode::Internal,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
        ] {
            assert_eq!(code.retry(), Retry::Never, "{code}");
            assert!(!code.is_retryable());
        }
        // Without a quiver code the gRPC code decides: a transport failure is a node down,
        // tonic's load shedding is "elsewhere", anything else final.
        assert_eq!(
            Retry::of_status(&tonic::Status::unavailable("connection refused")),
            Retry::NodeDown
        );
        assert_eq!(
            Retry::of_status(&tonic::Status::deadline_exceeded("t")),
            Retry::NodeDown
        );
        assert_eq!(
            Retry::of_status(&tonic::Status::resource_exhausted("shed")),
            Retry::Elsewhere
        );
        assert_eq!(
            Retry::of_status(&tonic::Status::invalid_argument("bad")),
            Retry::Never
        );
    }

    #[test]
    fn status_round_trip_keeps_code() {
        for code in ErrorCode::ALL {
            let status = code.to_status("boom");
            assert_eq!(status.code(), code.grpc_code());
            assert_eq!(ErrorCode::from_status(&status), Some(code));
            assert_eq!(status.message(), "boom");
        }
    }
}
