//! The admin service's token RPCs: create (the secret is returned once; the cluster
//! stores its hash), revoke, list. Every change is written to the audit log.

use quiver_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, ListTokensResponse, RevokeTokenRequest, TokenInfo,
};

use super::ServeError;
use crate::control::plane::{ControlPlane, wall_clock_ms};
use crate::control::state::Command;
use crate::security::tokens::{TokenRecord, generate};
use crate::security::{Principal, Role, audit};
use crate::state::NodeState;

fn control(state: &NodeState) -> Result<&ControlPlane, ServeError> {
    state.control.as_deref().ok_or_else(|| {
        ServeError::FailedPrecondition(
            "tokens live in the replicated cluster state: this node runs without [control] (static mode), which accepts only the bootstrap token and certificate identities".into(),
        )
    })
}

async fn propose(
    plane: &ControlPlane,
    cmd: Command,
    action: &str,
    principal: &Principal,
) -> Result<Vec<String>, ServeError> {
    let result = ServeError::changes_of(plane.propose(cmd).await);
    match &result {
        Ok(changes) => audit::change(
            action,
            &principal.to_string(),
            "applied",
            &changes.join("; "),
        ),
        Err(e) => audit::change(action, &principal.to_string(), "rejected", &e.to_string()),
    }
    result
}

/// `CreateToken`.
///
/// # Errors
/// `InvalidArgument` (role, name, views), `FailedPrecondition` (static mode),
/// `Unavailable` (no control-plane leader).
pub async fn create(
    state: &NodeState,
    principal: &Principal,
    req: CreateTokenRequest,
) -> Result<CreateTokenResponse, ServeError> {
    let plane = control(state)?;
    let role = match Role::parse(&req.role) {
        Some(r @ (Role::Reader | Role::Writer | Role::Admin)) => r,
        _ => {
            return Err(ServeError::InvalidArgument(format!(
                "role {:?} is not reader, writer or admin",
                req.role
            )));
        }
    };
    let new = generate().map_err(ServeError::Unavailable)?;
    let record = TokenRecord {
        id: new.id.clone(),
        name: req.name,
        role,
        views: req.views.into_iter().collect(),
        sha256: new.sha256,
        created_by: principal.to_string(),
        created_at_ms: wall_clock_ms(),
        revoked_at_ms: None,
        revoked_by: String::new(),
        lookup_keys_per_second: req.lookup_keys_per_second,
        lookups_per_second: req.lookups_per_second,
    };
    propose(
        plane,
        Command::CreateToken(record),
        "create_token",
        principal,
    )
    .await?;
    Ok(CreateTokenResponse {
        id: new.id,
        token: new.token,
    })
}

/// `RevokeToken`.
///
/// # Errors
/// `FailedPrecondition` (unknown or already revoked, static mode), `Unavailable`.
pub async fn revoke(
    state: &NodeState,
    principal: &Principal,
    req: RevokeTokenRequest,
) -> Result<(), ServeError> {
    let plane = control(state)?;
    let cmd = Command::RevokeToken {
        id: req.id,
        revoked_by: principal.to_string(),
        revoked_at_ms: wall_clock_ms(),
    };
    propose(plane, cmd, "revoke_token", principal)
        .await
        .map(|_| ())
}

/// `ListTokens`: ids, names, roles, grants and history; never hashes or secrets.
///
/// # Errors
/// `FailedPrecondition` in static mode.
pub fn list(state: &NodeState) -> Result<ListTokensResponse, ServeError> {
    let plane = control(state)?;
    let tokens = plane
        .state()
        .tokens
        .values()
        .map(|t| TokenInfo {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.to_string(),
            views: t.views.iter().cloned().collect(),
            created_by: t.created_by.clone(),
            created_at_ms: t.created_at_ms,
            revoked_at_ms: t.revoked_at_ms.unwrap_or(0),
            revoked_by: t.revoked_by.clone(),
            lookup_keys_per_second: t.lookup_keys_per_second,
            lookups_per_second: t.lookups_per_second,
        })
        .collect();
    Ok(ListTokensResponse { tokens })
}
