//! Command-line flags every quiver tool shares for reaching a secured cluster
//! (`quiverctl`, `quiver-bench`, `quiver-chaos`): TLS files and the bearer token.

use std::path::PathBuf;

use quiver_proto::transport::{Credentials, TlsClientSettings, TransportError, read_token_file};

/// TLS and token flags (each also read from a `QUIVER_*` environment variable).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Bearer token (from `quiverctl token create`). Prefer --token-file or the
    /// environment: a flag is visible to other users in the process list.
    #[arg(long, global = true, env = "QUIVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(
        long,
        global = true,
        env = "QUIVER_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Connect over TLS, verifying nodes with this CA certificate (PEM).
    #[arg(long, global = true, env = "QUIVER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --tls-key.
    #[arg(long, global = true, env = "QUIVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --tls-cert.
    #[arg(long, global = true, env = "QUIVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the nodes' certificates against (default: the address's host).
    #[arg(long, global = true, env = "QUIVER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl SecurityArgs {
    /// Whether any TLS flag is set (then connections use TLS).
    pub fn tls_enabled(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some()
    }

    /// Reads the files into [`Credentials`].
    ///
    /// # Errors
    /// [`TransportError`] naming an unreadable or empty file.
    pub fn credentials(&self) -> Result<Credentials, TransportError> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(f)) => Some(read_token_file(f)?),
            (None, None) => None,
        };
        let tls = if self.tls_enabled() {
            Some(TlsClientSettings::from_files(
                self.tls_ca.as_deref(),
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
                self.tls_server_name.clone(),
            )?)
        } else {
            None
        };
        Ok(Credentials { tls, token })
    }
}
