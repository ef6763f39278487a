//! TLS on the gRPC port: our own accept loop (so certificates can be reloaded without a
//! restart, and the handshake's peer certificates reach the authenticator), feeding
//! tonic a stream of established connections.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use metrics::counter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ClientAuth, ServerTlsConfig};
use crate::metrics as m;
use crate::tasks::Ticker;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are closed (a handshake flood
/// must not exhaust memory or CPU).
const MAX_HANDSHAKES: usize = 256;

/// Errors loading certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {path}: {message}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Path.
        path: String,
        /// Cause.
        message: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("tls: {0}")]
    Rustls(String),
}

fn pem_err(what: &'static str, path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError {
    let path = path.display().to_string();
    move |e| TlsError::Pem {
        what,
        path: path.clone(),
        message: e.to_string(),
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err(what, path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(what, path))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.display().to_string(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Builds the rustls server configuration from the files.
///
/// # Errors
/// [`TlsError`] naming the file or what rustls refused.
pub fn load(cfg: &ServerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs("tls.cert_file", &cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(pem_err("tls.key_file", &cfg.key_file))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (cfg.client_auth, &cfg.ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs("tls.ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Rustls(format!("tls.ca_file: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| TlsError::Rustls(format!("tls.ca_file: {e}")))?,
            )
        }
    };
    let mut sc = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("tls.cert_file / tls.key_file: {e}")))?;
    sc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(sc))
}

/// The server's TLS configuration, replaced when its files change.
pub struct ReloadingTls {
    cfg: ServerTlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl ReloadingTls {
    /// Loads the files.
    ///
    /// # Errors
    /// As [`load`].
    pub fn new(cfg: ServerTlsConfig) -> Result<Arc<Self>, TlsError> {
        let current = load(&cfg)?;
        let stamps = stamps(&cfg);
        Ok(Arc::new(ReloadingTls {
            cfg,
            current: RwLock::new(current),
            stamps: RwLock::new(stamps),
        }))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Reloads if any file changed since the last load. Returns whether it reloaded; a
    /// failed load keeps the previous configuration (and is logged).
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.cfg);
        if *self.stamps.read().unwrap_or_else(|p| p.into_inner()) == now {
            return false;
        }
        *self.stamps.write().unwrap_or_else(|p| p.into_inner()) = now;
        match load(&self.cfg) {
            Ok(c) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
                counter!(m::TLS_RELOADS, "outcome" => "ok").increment(1);
                info!(cert = %self.cfg.cert_file.display(), "tls certificates reloaded; new connections use them");
                true
            }
            Err(e) => {
                counter!(m::TLS_RELOADS, "outcome" => "error").increment(1);
                warn!(error = %e, "tls files changed but do not load; keeping the previous certificates");
                false
            }
        }
    }

    /// Checks the files every `reload_interval` until cancelled.
    pub async fn run_reload_loop(self: Arc<Self>, cancel: CancellationToken) {
        let Some(every) = self.cfg.reload_interval else {
            return;
        };
        let mut ticker = Ticker::new(every, &cancel);
        while ticker.tick().await {
            let me = self.clone();
            // Reading files blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }
}

fn stamps(cfg: &ServerTlsConfig) -> Vec<Option<SystemTime>> {
    [
        Some(&cfg.cert_file),
        Some(&cfg.key_file),
        cfg.ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// What the authenticator learns about a connection.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// The client's verified certificate chain (end entity first), under TLS.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection, plaintext or TLS.
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream, PeerInfo),
    /// TLS, handshake complete.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener` (completing TLS handshakes concurrently, each with
/// a timeout) and sends them to the returned receiver until `cancel` fires.
pub fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    cancel: CancellationToken,
) -> (
    mpsc::Receiver<io::Result<Conn>>,
    tokio::task::JoinHandle<()>,
) {
    // Bounded: if tonic stops taking connections, accepting stops too.
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let mut pending = JoinSet::new();
        loop {
            while pending.try_join_next().is_some() {}
            let (stream, remote) = tokio::select! {
                () = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let peer = PeerInfo {
                remote: Some(remote),
                certs: None,
            };
            let Some(tls) = &tls else {
                if tx.send(Ok(Conn::Plain(stream, peer))).await.is_err() {
                    break;
                }
                continue;
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "too_many").increment(1);
                debug!(%remote, "too many tls handshakes in progress; connection closed");
                continue;
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            pending.spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let certs = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| Arc::new(c.to_vec()));
                        let peer = PeerInfo {
                            remote: Some(remote),
                            certs,
                        };
                        let _ = tx.send(Ok(Conn::Tls(Box::new(s), peer))).await;
                    }
                    Ok(Err(e)) => {
                        counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "handshake").increment(1);
                        debug!(%remote, error = %e, "tls handshake failed");
                    }
                    Err(_) => {
                        counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "timeout").increment(1);
                        debug!(%remote, "tls handshake timed out");
                    }
                }
            });
        }
        pending.shutdown().await;
    });
    (rx, task)
}

/// The names a client certificate answers to: subject common names, DNS and URI subject
/// alternative names. Empty if the certificate does not parse.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::URI(u) => names.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    names
}
