//! How a caller reaches a node: plaintext or TLS (optionally presenting a client
//! certificate for mutual TLS), and the bearer token sent with every call.
//!
//! Shared by the smart client, `quiverctl`, the bench and chaos tools, and the nodes
//! themselves (Raft and control-plane calls to peers), so every caller speaks to a
//! secured cluster the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Errors of building caller credentials or endpoints.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate, key or token file could not be read.
    #[error("reading {what} file {path}: {source}")]
    Read {
        /// Which setting (`tls CA`, `tls certificate`, …).
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is inconsistent or malformed.
    #[error("{0}")]
    Invalid(String),
    /// tonic refused the endpoint or TLS settings.
    #[error("endpoint {endpoint}: {message}")]
    Endpoint {
        /// The address.
        endpoint: String,
        /// tonic's message.
        message: String,
    },
}

/// HTTP/2 flow-control window of each call (stream), in bytes, that every quiver
/// endpoint and server grants its peer: how much of one response (or request) may be in
/// flight before the receiver acknowledges it.
///
/// h2's default, 65,535 bytes, is smaller than a 100 × 50 lookup's response (46 KB) plus
/// the next one: with several calls in flight on a connection, the sender stalled for a
/// WINDOW_UPDATE round trip per ~64 KB. 1 MiB holds a 1,000-key × 100-feature float64
/// answer (~0.9 MB) in one flight; a larger one costs a round trip per MiB. The receiver
/// still reads as fast as it decodes, so this is a bound, not a buffer that is filled.
pub const STREAM_WINDOW_BYTES: u32 = 1 << 20;

/// HTTP/2 flow-control window of a whole connection, in bytes (see
/// [`STREAM_WINDOW_BYTES`]): bounds what all calls on one connection may have in flight
/// unread, i.e. the memory a slow reader can be made to hold per connection.
pub const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

/// TLS settings of a caller (PEM contents, already read).
#[derive(Clone, Debug, Default)]
pub struct TlsClientSettings {
    /// CA certificates that sign the nodes' certificates; `None` uses no custom roots
    /// (then the node's certificate must chain to a root tonic already trusts).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the node's certificate against; default: the host of the address.
    pub server_name: Option<String>,
}

impl TlsClientSettings {
    /// Reads the PEM files: CA (optional), client certificate and key (both or neither).
    ///
    /// # Errors
    /// [`TransportError::Read`] for an unreadable file, [`TransportError::Invalid`] if
    /// only one of certificate and key is given.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<Self, TransportError> {
        let ca_pem = ca.map(|p| read("tls CA", p)).transpose()?;
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("tls certificate", c)?, read("tls key", k)?)),
            (None, None) => None,
            _ => {
                return Err(TransportError::Invalid(
                    "a client certificate needs both the certificate and the key file".into(),
                ));
            }
        };
        Ok(TlsClientSettings {
            ca_pem,
            identity,
            server_name: server_name.filter(|s| !s.is_empty()),
        })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a bearer token from a file (surrounding whitespace removed).
///
/// # Errors
/// [`TransportError::Read`] if unreadable, [`TransportError::Invalid`] if empty.
pub fn read_token_file(path: &Path) -> Result<String, TransportError> {
    let text = read("token", path)?;
    let token = String::from_utf8_lossy(&text).trim().to_owned();
    if token.is_empty() {
        return Err(TransportError::Invalid(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// Everything a caller presents: TLS settings and a bearer token, each optional.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// TLS; `None` speaks plaintext.
    pub tls: Option<TlsClientSettings>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Credentials {
    /// No TLS, no token (a node with auth disabled).
    pub fn none() -> Self {
        Credentials::default()
    }

    /// The URI for `addr` (`host:port` or a full URI): `https://` under TLS.
    pub fn uri(&self, addr: &str) -> String {
        if addr.contains("://") {
            if self.tls.is_some() {
                return addr.replacen("http://", "https://", 1);
            }
            return addr.to_owned();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// An endpoint for `addr` with TLS applied (connect options are the caller's).
    ///
    /// # Errors
    /// [`TransportError::Endpoint`] if the address or TLS settings are invalid.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TransportError> {
        let uri = self.uri(addr);
        let err = |e: tonic::transport::Error| TransportError::Endpoint {
            endpoint: uri.clone(),
            message: error_chain(&e),
        };
        let ep = Endpoint::from_shared(uri.clone())
            .map_err(err)?
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        let Some(tls) = &self.tls else {
            return Ok(ep);
        };
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            cfg = cfg.ca_certificate(Certificate::from_pem(ca));
        } else {
            cfg = cfg.with_enabled_roots();
        }
        if let Some((cert, key)) = &tls.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &tls.server_name {
            cfg = cfg.domain_name(name.clone());
        }
        ep.tls_config(cfg).map_err(err)
    }

    /// A lazily connecting channel to `addr` with the usual client options, wrapped so
    /// every call carries the token.
    ///
    /// # Errors
    /// As [`Credentials::endpoint`], or [`TransportError::Invalid`] for a token that is
    /// not a valid header value.
    pub fn lazy_channel(
        &self,
        addr: &str,
        connect_timeout: Duration,
    ) -> Result<AuthChannel, TransportError> {
        let channel = self
            .endpoint(addr)?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        self.wrap(channel)
    }

    /// Wraps an established channel so every call carries the token.
    ///
    /// # Errors
    /// [`TransportError::Invalid`] for a token that is not a valid header value.
    pub fn wrap(&self, channel: Channel) -> Result<AuthChannel, TransportError> {
        Ok(InterceptedService::new(channel, self.interceptor()?))
    }

    /// The interceptor adding this token.
    ///
    /// # Errors
    /// [`TransportError::Invalid`] for a token that is not a valid header value.
    pub fn interceptor(&self) -> Result<BearerToken, TransportError> {
        let header = match &self.token {
            None => None,
            Some(t) => Some(Arc::new(format!("Bearer {t}").parse().map_err(|_| {
                TransportError::Invalid("token contains characters not allowed in a header".into())
            })?)),
        };
        Ok(BearerToken { header })
    }
}

/// A channel whose calls carry the caller's bearer token.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every call (nothing if no token).
#[derive(Clone, Debug, Default)]
pub struct BearerToken {
    header: Option<Arc<MetadataValue<Ascii>>>,
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut()
                .insert("authorization", h.as_ref().clone());
        }
        Ok(req)
    }
}

/// The error and its sources on one line (tonic's transport errors hide the cause, e.g.
/// "invalid peer certificate: UnknownIssuer", in the source chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
