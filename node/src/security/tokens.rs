//! Bearer tokens: `qvr_<id>_<secret>`. The id is public (lists, logs, revocation); the
//! cluster state keeps only the SHA-256 of the whole token, so a leaked snapshot or log
//! does not leak credentials.

use std::collections::BTreeSet;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::principal::Role;

const PREFIX: &str = "qvr_";
const ID_HEX: usize = 12;
const SECRET_BYTES: usize = 32;

/// A token as stored in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (12 hex digits).
    pub id: String,
    /// What the token is for.
    pub name: String,
    /// Reader, writer or admin.
    pub role: Role,
    /// Views it may use; empty: every view.
    pub views: BTreeSet<String>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// Principal that created it.
    pub created_by: String,
    /// Leader clock at creation, ms since the epoch.
    pub created_at_ms: i64,
    /// When it was revoked (ms since the epoch); `None` while valid.
    pub revoked_at_ms: Option<i64>,
    /// Who revoked it.
    pub revoked_by: String,
    /// Its own lookup quota (keys per second), overriding its role's (`[quotas]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_keys_per_second: Option<u32>,
    /// Its own lookup quota (requests per second), overriding its role's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookups_per_second: Option<u32>,
}

/// A freshly generated token: the clear text (shown once) and its id and hash.
pub struct NewToken {
    /// Public id.
    pub id: String,
    /// The bearer token.
    pub token: String,
    /// Hex SHA-256 of `token`.
    pub sha256: String,
}

/// Generates a token from the system's secure random source.
///
/// # Errors
/// If the random source fails (the message says so).
pub fn generate() -> Result<NewToken, String> {
    let rng = SystemRandom::new();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id)
        .and_then(|()| rng.fill(&mut secret))
        .map_err(|_| "the system random source failed".to_owned())?;
    let id = hex(&id);
    use base64::Engine as _;
    let token = format!(
        "{PREFIX}{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let sha256 = sha256_hex(token.as_bytes());
    Ok(NewToken { id, token, sha256 })
}

/// The public id of a token in `qvr_<id>_<secret>` form, or `None` if it is not one.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let id = rest.get(..ID_HEX)?;
    let ok =
        id.bytes().all(|b| b.is_ascii_hexdigit()) && rest.as_bytes().get(ID_HEX) == Some(&b'_');
    (ok && rest.len() > ID_HEX + 1).then_some(id)
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Whether `token` hashes to `expected_hex`, comparing in constant time.
pub fn matches(token: &str, expected_hex: &str) -> bool {
    let got = sha256_hex(token.as_bytes());
    got.len() == expected_hex.len()
        && got
            .bytes()
            .zip(expected_hex.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_hash_and_differ() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert_ne!(a.token, b.token);
        assert_eq!(token_id(&a.token), Some(a.id.as_str()));
        assert!(matches(&a.token, &a.sha256));
        assert!(!matches(&b.token, &a.sha256));
        assert!(!a.sha256.contains(&a.token[PREFIX.len() + ID_HEX + 1..]));
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        for t in [
            "",
            "qvr_",
            "qvr_0123456789ab",
            "qvr_0123456789ab_",
            "xyz_0123456789ab_s",
            "qvr_0123456789zz_s",
        ] {
            assert_eq!(token_id(t), None, "{t:?}");
        }
        assert_eq!(token_id("qvr_0123456789ab_s"), Some("0123456789ab"));
    }
}
