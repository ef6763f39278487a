//! The token commands of the cluster state machine (deterministic, no I/O).

use super::state::{ClusterState, CommandResult};
use crate::security::Role;
use crate::security::tokens::TokenRecord;

/// Longest token name.
const MAX_NAME: usize = 128;
/// Most view grants per token.
const MAX_VIEWS: usize = 1024;

fn invalid(reason: String) -> CommandResult {
    CommandResult::Rejected {
        invalid: true,
        reason,
    }
}

impl ClusterState {
    pub(super) fn create_token(&mut self, rec: &TokenRecord) -> CommandResult {
        if rec.name.trim().is_empty() || rec.name.len() > MAX_NAME {
            return invalid(format!("token name must be 1..={MAX_NAME} characters"));
        }
        if rec.role == Role::Node {
            return invalid("a token's role must be reader, writer or admin".into());
        }
        if rec.views.len() > MAX_VIEWS {
            return invalid(format!("a token may be granted at most {MAX_VIEWS} views"));
        }
        if let Some(v) = rec
            .views
            .iter()
            .find(|v| v.is_empty() || v.len() > MAX_NAME)
        {
            return invalid(format!("view grant {v:?} is not a view name"));
        }
        if rec.id.len() != 12 || rec.sha256.len() != 64 || rec.revoked_at_ms.is_some() {
            return invalid("malformed token record".into());
        }
        if let Some(existing) = self.tokens.get(&rec.id) {
            // The same command again (a proposal retried after its answer was lost): done.
            if existing == rec {
                return CommandResult::Applied {
                    epoch: self.epoch,
                    changes: Vec::new(),
                };
            }
            return CommandResult::rejected(format!("a token with id '{}' exists", rec.id));
        }
        self.tokens.insert(rec.id.clone(), rec.clone());
        CommandResult::Applied {
            epoch: self.epoch,
            changes: vec![format!(
                "token {} ({}, {}): created",
                rec.id, rec.name, rec.role
            )],
        }
    }

    pub(super) fn revoke_token(&mut self, id: &str, by: &str, at_ms: i64) -> CommandResult {
        let Some(rec) = self.tokens.get_mut(id) else {
            return CommandResult::Rejected {
                invalid: false,
                reason: format!("no token with id '{id}'"),
            };
        };
        if rec.revoked_at_ms.is_some() {
            // The same revocation again (a retried proposal): done.
            if rec.revoked_at_ms == Some(at_ms) && rec.revoked_by == by {
                return CommandResult::Applied {
                    epoch: self.epoch,
                    changes: Vec::new(),
                };
            }
            return CommandResult::rejected(format!("token '{id}' is already revoked"));
        }
        rec.revoked_at_ms = Some(at_ms);
        rec.revoked_by = by.to_owned();
        CommandResult::Applied {
            epoch: self.epoch,
            changes: vec![format!("token {id} ({}): revoked", rec.name)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Command;
    use super::*;

    fn record(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: "ranker".into(),
            role: Role::Reader,
            views: ["v".to_owned()].into(),
            sha256: "0".repeat(64),
            created_by: "admin".into(),
            created_at_ms: 1,
            revoked_at_ms: None,
            revoked_by: String::new(),
            lookup_keys_per_second: None,
            lookups_per_second: None,
        }
    }

    #[test]
    fn create_revoke_and_reject_bad_records_without_change() {
        let mut s = ClusterState::default();
        let ok = s.apply(&Command::CreateToken(record("0123456789ab")));
        assert!(matches!(ok, CommandResult::Applied { .. }), "{ok:?}");
        let before = s.clone();
        // The same command twice (a retried proposal) is a no-op, not an error.
        let again = s.apply(&Command::CreateToken(record("0123456789ab")));
        assert!(
            matches!(&again, CommandResult::Applied { changes, .. } if changes.is_empty()),
            "{again:?}"
        );
        assert_eq!(s, before);
        for bad in [
            TokenRecord {
                name: "other".into(),
                ..record("0123456789ab")
            },
            TokenRecord {
                role: Role::Node,
                ..record("aaaaaaaaaaaa")
            },
            TokenRecord {
                name: String::new(),
                ..record("bbbbbbbbbbbb")
            },
            TokenRecord {
                id: "short".into(),
                ..record("cccccccccccc")
            },
        ] {
            let r = s.apply(&Command::CreateToken(bad));
            assert!(matches!(r, CommandResult::Rejected { .. }), "{r:?}");
            assert_eq!(s, before, "a rejected command changes nothing");
        }
        let revoke = |s: &mut ClusterState, id: &str| {
            s.apply(&Command::RevokeToken {
                id: id.into(),
                revoked_by: "admin".into(),
                revoked_at_ms: 5,
            })
        };
        assert!(matches!(
            revoke(&mut s, "0123456789ab"),
            CommandResult::Applied { .. }
        ));
        assert_eq!(s.tokens["0123456789ab"].revoked_at_ms, Some(5));
        let after = s.clone();
        assert!(matches!(
            revoke(&mut s, "0123456789ab"),
            CommandResult::Applied { changes, .. } if changes.is_empty()
        ));
        assert!(matches!(
            s.apply(&Command::RevokeToken {
                id: "0123456789ab".into(),
                revoked_by: "someone else".into(),
                revoked_at_ms: 9,
            }),
            CommandResult::Rejected { .. }
        ));
        assert!(matches!(
            revoke(&mut s, "ffffffffffff"),
            CommandResult::Rejected { .. }
        ));
        assert_eq!(s, after);
    }
}
