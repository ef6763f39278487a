//! Security: TLS on the gRPC port (with certificate reload), authentication of callers
//! (bearer tokens kept hashed in the cluster state, client certificates, the cluster
//! token members present to each other), authorisation of every RPC by role and view
//! grants, admission control, per-principal push quotas and the audit log.
//!
//! The threat model and how each part answers it: `docs/SECURITY.md`.

pub mod audit;
pub mod guard;
pub mod principal;
pub mod rate;
pub mod tls;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use quiver_proto::transport::{Credentials, TlsClientSettings, read_token_file};

pub use guard::{Authenticator, GuardLayer};
pub use principal::{Credential, Need, Principal, Role};

use crate::config::{AuthSection, TlsSection};

/// Whether and how client certificates are requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not requested.
    None,
    /// Verified against the CA if presented.
    Optional,
    /// Required (mutual TLS): connections without a certificate signed by the CA fail.
    Required,
}

/// TLS settings of the gRPC server.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
    /// CA for client (and peer) certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// File check period; `None`: never reload.
    pub reload_interval: Option<Duration>,
}

/// A certificate identity's role and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityGrant {
    /// Role.
    pub role: Role,
    /// Views; `None`: every view.
    pub views: Option<BTreeSet<String>>,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Whether calls are checked at all.
    pub enabled: bool,
    /// SHA-256 (hex) of the bootstrap admin token.
    pub bootstrap_sha256: Option<String>,
    /// SHA-256 (hex) of the cluster token.
    pub cluster_sha256: Option<String>,
    /// Certificate identities by name.
    pub identities: BTreeMap<String, IdentityGrant>,
    /// Lookup quotas by role (`[quotas]`).
    pub quotas: principal::RoleQuotas,
}

/// Everything security-related a node runs with.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// TLS on the gRPC port; `None`: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Authentication and authorisation.
    pub auth: AuthConfig,
    /// What this node presents when it calls its peers.
    pub peer_credentials: Credentials,
}

impl SecurityConfig {
    /// Plaintext, auth disabled (in-process tests).
    pub fn insecure() -> Self {
        SecurityConfig {
            tls: None,
            auth: AuthConfig {
                enabled: false,
                bootstrap_sha256: None,
                cluster_sha256: None,
                identities: BTreeMap::new(),
                quotas: Default::default(),
            },
            peer_credentials: Credentials::none(),
        }
    }

    /// Validates the `[tls]` and `[auth]` sections, reading the token files and
    /// checking that the certificate files load.
    ///
    /// # Errors
    /// A message naming the key and what is wrong with it.
    pub fn from_sections(
        tls: &TlsSection,
        auth: &AuthSection,
        cluster_mode: bool,
    ) -> Result<Self, String> {
        let path = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        let client_auth = match tls.client_auth.as_str() {
            "none" => ClientAuth::None,
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                return Err(format!(
                    "tls.client_auth {other:?} is not \"none\", \"optional\" or \"required\""
                ));
            }
        };
        let server_tls = match (path(&tls.cert_file), path(&tls.key_file)) {
            (None, None) => {
                if path(&tls.ca_file).is_some() || client_auth != ClientAuth::None {
                    return Err(
                        "tls.ca_file / tls.client_auth need tls.cert_file and tls.key_file".into(),
                    );
                }
                None
            }
            (Some(cert_file), Some(key_file)) => {
                let ca_file = path(&tls.ca_file);
                if client_auth != ClientAuth::None && ca_file.is_none() {
                    return Err(format!(
                        "tls.client_auth = {:?} needs tls.ca_file (the CA that signs client certificates)",
                        tls.client_auth
                    ));
                }
                let cfg = ServerTlsConfig {
                    cert_file,
                    key_file,
                    ca_file,
                    client_auth,
                    reload_interval: (!tls.reload_interval.is_zero())
                        .then_some(tls.reload_interval),
                };
                tls::load(&cfg).map_err(|e| e.to_string())?;
                Some(cfg)
            }
            _ => return Err("tls.cert_file and tls.key_file must be set together".into()),
        };
        let read = |key: &str, p: &PathBuf| -> Result<Option<String>, String> {
            path(p)
                .map(|p| read_token_file(&p).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let bootstrap = read("auth.bootstrap_token_file", &auth.bootstrap_token_file)?;
        let cluster = read("auth.cluster_token_file", &auth.cluster_token_file)?;
        for (key, t) in [
            ("auth.bootstrap_token_file", &bootstrap),
            ("auth.cluster_token_file", &cluster),
        ] {
            if t.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!("{key}: the token must be at least 16 characters"));
            }
        }
        let mut identities = BTreeMap::new();
        for (i, id) in auth.identities.iter().enumerate() {
            if id.name.is_empty() {
                return Err(format!("auth.identities[{i}].name is empty"));
            }
            let role = Role::parse(&id.role).ok_or_else(|| {
                format!(
                    "auth.identities[{i}].role {:?} is not reader, writer, admin or node",
                    id.role
                )
            })?;
            let views = (!id.views.is_empty()).then(|| id.views.iter().cloned().collect());
            if identities
                .insert(id.name.clone(), IdentityGrant { role, views })
                .is_some()
            {
                return Err(format!("auth.identities: {:?} is listed twice", id.name));
            }
        }
        if auth.enabled
            && !identities.is_empty()
            && server_tls.as_ref().is_none_or(|t| t.ca_file.is_none())
        {
            return Err(
                "auth.identities need tls.ca_file and tls.client_auth = \"optional\" or \"required\""
                    .into(),
            );
        }
        let member_certs = server_tls.as_ref().is_some_and(|t| t.ca_file.is_some())
            && identities.values().any(|g| g.role == Role::Node);
        if auth.enabled && cluster_mode && cluster.is_none() && !member_certs {
            return Err("auth is enabled in cluster mode, but members cannot authenticate to each other: set auth.cluster_token_file (the same secret on every node), or tls.ca_file with an [[auth.identities]] entry of role \"node\" matching the nodes' certificates".into());
        }
        let peer_tls = match &server_tls {
            None => None,
            Some(t) => Some(
                TlsClientSettings::from_files(
                    t.ca_file.as_deref(),
                    Some(&t.cert_file),
                    Some(&t.key_file),
                    Some(tls.server_name.clone()),
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        Ok(SecurityConfig {
            tls: server_tls,
            auth: AuthConfig {
                enabled: auth.enabled,
                bootstrap_sha256: bootstrap
                    .as_deref()
                    .map(|t| tokens::sha256_hex(t.as_bytes())),
                cluster_sha256: cluster.as_deref().map(|t| tokens::sha256_hex(t.as_bytes())),
                identities,
                quotas: Default::default(),
            },
            peer_credentials: Credentials {
                tls: peer_tls,
                token: cluster,
            },
        })
    }
}
