//! The credentials a harness's own clients present (probes, admin calls, load and
//! workload clients), for tools that can run their cluster secured (`quiver-chaos`,
//! `quiver-bench` with `--secure`): set once per run, before any client is made.

use std::path::Path;
use std::sync::RwLock;

use quiver_proto::transport::{Credentials, TlsClientSettings, TransportError};

use crate::pki::SecureRig;

static CREDENTIALS: RwLock<Option<Credentials>> = RwLock::new(None);

/// The run's credentials (none unless [`secure_rig`] or [`install`] set them).
pub fn credentials() -> Credentials {
    CREDENTIALS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Sets the run's credentials.
pub fn install(credentials: Credentials) {
    *CREDENTIALS.write().unwrap_or_else(|p| p.into_inner()) = Some(credentials);
}

/// Creates a mutual-TLS rig under `dir` (CA, node and client certificates; nodes
/// authenticate members and the harness by certificate) and makes the harness's clients
/// use it. Returns the `[tls]`/`[auth]` TOML for the nodes.
///
/// # Errors
/// If the certificate files cannot be read back.
pub fn secure_rig(dir: &Path) -> Result<String, TransportError> {
    let rig = SecureRig::create(dir);
    let tls = TlsClientSettings::from_files(
        Some(&rig.ca_file),
        Some(&rig.client_cert),
        Some(&rig.client_key),
        Some(rig.server_name.clone()),
    )?;
    install(Credentials {
        tls: Some(tls),
        token: None,
    });
    Ok(rig.node_toml)
}
