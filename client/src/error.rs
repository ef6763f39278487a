//! Client errors.

use quiver_proto::ErrorCode;

/// Errors returned by [`crate::Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// Address.
        endpoint: String,
        /// Transport message.
        message: String,
    },
    /// The node answered with an error.
    #[error("{}: {}", rpc_code_name(.0), .0.message())]
    Rpc(#[from] tonic::Status),
}

/// The quiver error code's name if the node sent one, else the gRPC code's.
fn rpc_code_name(status: &tonic::Status) -> String {
    match ErrorCode::from_status(status) {
        Some(code) => code.as_str().to_owned(),
        None => format!("{:?}", status.code()),
    }
}

impl ClientError {
    /// The node's error code, if it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Connect { .. } => Some(ErrorCode::Unavailable),
            ClientError::Rpc(s) => ErrorCode::from_status(s),
        }
    }

    /// The gRPC status code, if the node answered.
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Connect { .. } => None,
            ClientError::Rpc(s) => Some(s.code()),
        }
    }

    /// Whether the request may succeed elsewhere or later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Rpc(s) => match ErrorCode::from_status(s) {
                Some(code) => code.is_retryable(),
                None => matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ),
            },
        }
    }
}
