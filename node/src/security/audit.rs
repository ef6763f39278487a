//! The audit log: one structured line per administrative change or refused attempt, on
//! the `quiver::audit` target (route it with `RUST_LOG` / the JSON log format).

use tracing::info;

/// An administrative change was made (or attempted and rejected by validation).
pub fn change(action: &str, principal: &str, outcome: &str, detail: &str) {
    info!(
        target: "quiver::audit",
        audit = true,
        action,
        principal,
        outcome,
        detail,
        "audit"
    );
}

/// An administrative call was refused by authentication or authorisation.
pub fn denied(action: &str, principal: &str, reason: &str) {
    change(action, principal, "denied", reason);
}
