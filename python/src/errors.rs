//! Client errors as Python exceptions.
//!
//! The exception classes live in `quiver/errors.py` (so they carry docstrings and can be
//! caught by users who never import the native module); this side only picks the code.

use pyo3::prelude::*;
use quiver_client::ClientError;
use quiver_client::export::ExportError;

/// The snake-case code of `e`: quiver's error code when a node or the client named one,
/// else the gRPC status's meaning.
pub(crate) fn code_of(e: &ClientError) -> &'static str {
    if matches!(e, ClientError::DeadlineExceeded { .. }) {
        return "deadline_exceeded";
    }
    if let Some(code) = e.code() {
        return code.as_str();
    }
    match e.grpc_code() {
        Some(tonic_code) => grpc_code_name(tonic_code),
        None => "unavailable",
    }
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => "invalid_argument",
        Code::NotFound => "not_found",
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => "failed_precondition",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Unavailable | Code::Cancelled => "unavailable",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unimplemented => "unimplemented",
        _ => "internal",
    }
}

/// A `quiver.errors` exception of class `code` carrying `message`.
pub(crate) fn raise(code: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("quiver.errors")
            .and_then(|m| m.getattr("_from_code"))
            .and_then(|f| f.call1((code, message.clone())));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            // The pure-Python half is missing (the native module imported on its own).
            Err(_) => pyo3::exceptions::PyRuntimeError::new_err(format!("{code}: {message}")),
        }
    })
}

/// `e` as the matching `quiver.errors` exception.
pub(crate) fn client_error(e: ClientError) -> PyErr {
    raise(code_of(&e), e.to_string())
}

/// An invalid argument found on this side, before anything was sent.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    raise("invalid_argument", message.into())
}

/// An export's failure: a lookup's error keeps its code, the rest is a bad argument (the
/// label set or the options) or an I/O failure.
pub(crate) fn export_error(e: ExportError) -> PyErr {
    match &e {
        ExportError::Lookup { source, .. } => raise(code_of(source), e.to_string()),
        ExportError::Labels { .. } | ExportError::Invalid(_) => {
            raise("invalid_argument", e.to_string())
        }
        ExportError::Output { .. } => pyo3::exceptions::PyOSError::new_err(e.to_string()),
    }
}
