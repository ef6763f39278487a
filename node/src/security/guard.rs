//! The security guard: a tower layer in front of every gRPC service that counts the call
//! in flight (shedding beyond the node's limit), authenticates the caller, checks the
//! RPC's required role and hands the [`Principal`] to the handler (which checks view
//! grants). A refused call never reaches a handler, so it changes nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{counter, gauge};
use quiver_proto::ErrorCode;
use tower::{Layer, Service};
use tracing::debug;

use super::AuthConfig;
use super::audit;
use super::principal::{Credential, Need, Principal, Role};
use super::tls::{PeerInfo, certificate_names};
use super::tokens;
use crate::control::plane::ControlPlane;
use crate::metrics as m;

/// Resolves callers to principals.
pub struct Authenticator {
    cfg: AuthConfig,
    control: Option<Arc<ControlPlane>>,
}

impl Authenticator {
    /// An authenticator over the config and (cluster mode) the replicated token table.
    pub fn new(cfg: AuthConfig, control: Option<Arc<ControlPlane>>) -> Self {
        Authenticator { cfg, control }
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The caller behind `authorization` (if any) and the connection's certificate.
    ///
    /// # Errors
    /// [`AuthFailure::Unauthenticated`] naming what was missing or wrong;
    /// [`AuthFailure::StateNotCurrent`] for a token of the replicated token table while
    /// this node's copy of it is not known to be current; [`AuthFailure::UnknownToken`]
    /// for a token id this node's copy does not have (yet).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerInfo>,
    ) -> Result<Principal, AuthFailure> {
        if !self.cfg.enabled {
            return Ok(Principal::auth_disabled());
        }
        if let Some(h) = authorization {
            let h = std::str::from_utf8(h).map_err(|_| malformed())?;
            let (scheme, token) = h.trim().split_once(' ').ok_or_else(malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(malformed());
            }
            return self.token(token.trim());
        }
        let chain = peer.and_then(|p| p.certs.as_ref());
        if let Some(leaf) = chain.and_then(|c| c.first()) {
            let names = certificate_names(leaf.as_ref());
            for n in &names {
                if let Some(g) = self.cfg.identities.get(n) {
                    return Ok(Principal {
                        credential: Credential::Certificate(n.clone()),
                        name: n.clone(),
                        role: Some(g.role),
                        views: g.views.clone(),
                        quota: self.cfg.quotas.resolve(g.role, None, None),
                    });
                }
            }
            return Err(AuthFailure::Unauthenticated(format!(
                "the client certificate (names {names:?}) is not mapped to a role in auth.identities"
            )));
        }
        Err(AuthFailure::Unauthenticated(
            "missing credentials: send \"authorization: Bearer <token>\" or a client certificate"
                .into(),
        ))
    }

    fn token(&self, token: &str) -> Result<Principal, AuthFailure> {
        let denied = |m: String| Err(AuthFailure::Unauthenticated(m));
        let fixed = |credential, name: &str, role| Principal {
            credential,
            name: name.into(),
            role: Some(role),
            views: None,
            quota: self.cfg.quotas.resolve(role, None, None),
        };
        if self
            .cfg
            .bootstrap_sha256
            .as_deref()
            .is_some_and(|h| tokens::matches(token, h))
        {
            return Ok(fixed(Credential::BootstrapToken, "bootstrap", Role::Admin));
        }
        if self
            .cfg
            .cluster_sha256
            .as_deref()
            .is_some_and(|h| tokens::matches(token, h))
        {
            return Ok(fixed(Credential::ClusterToken, "cluster", Role::Node));
        }
        let Some(id) = tokens::token_id(token) else {
            return denied("invalid token: not a quiver token (expected qvr_<id>_<secret>)".into());
        };
        // A token is judged by the replicated token table, so only by a copy known to
        // be current: a node restarted after a revocation must not accept the token
        // before it has applied the revocation.
        if let Some(c) = &self.control
            && !c.is_fresh()
        {
            return Err(AuthFailure::StateNotCurrent);
        }
        let state = self.control.as_ref().map(|c| c.state());
        let Some(rec) = state.as_ref().and_then(|s| s.tokens.get(id)) else {
            return Err(AuthFailure::UnknownToken(format!(
                "invalid token: no token with id '{id}'"
            )));
        };
        if !tokens::matches(token, &rec.sha256) {
            return denied(format!("invalid token: wrong secret for token id '{id}'"));
        }
        if let Some(at) = rec.revoked_at_ms {
            return denied(format!(
                "token '{id}' ({}) was revoked at {at} ms by {}",
                rec.name, rec.revoked_by
            ));
        }
        Ok(Principal {
            credential: Credential::Token(id.to_owned()),
            name: rec.name.clone(),
            role: Some(rec.role),
            views: (!rec.views.is_empty()).then(|| rec.views.clone()),
            quota: self.cfg.quotas.resolve(
                rec.role,
                rec.lookup_keys_per_second,
                rec.lookups_per_second,
            ),
        })
    }

    /// Brings this node's copy of the token table up to what the leader had committed
    /// after `since` (see [`ControlPlane::catch_up_since`]). Whether it got there.
    async fn catch_up(&self, since: Instant) -> bool {
        let Some(control) = &self.control else {
            return true;
        };
        match control.catch_up_since(since).await {
            Ok(()) => true,
            Err(e) => {
                debug!(error = %e, "catching up to judge an unknown token id");
                false
            }
        }
    }
}

fn malformed() -> AuthFailure {
    AuthFailure::Unauthenticated(
        "malformed authorization header: expected \"Bearer <token>\"".into(),
    )
}

/// Why a caller was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Missing or wrong credentials (UNAUTHENTICATED), with what was wrong.
    Unauthenticated(String),
    /// The credential is judged by replicated state this node has not caught up with
    /// yet (UNAVAILABLE: another node, or this one a moment later, can answer).
    StateNotCurrent,
    /// A token id this node's copy of the token table does not have: a wrong token, or
    /// one created an instant ago through another member whose creation this node has
    /// not applied yet. The guard judges it again after catching up with the leader, so
    /// a token works everywhere as soon as its creation returned.
    UnknownToken(String),
}

/// Shared state of the guard.
pub struct Guard {
    auth: Authenticator,
    /// The principal of every call when auth is disabled, built once.
    disabled: Arc<Principal>,
    inflight: AtomicUsize,
    max_inflight: usize,
}

/// The tower layer (one per server).
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

impl GuardLayer {
    /// A guard with `auth` and at most `max_inflight` RPCs in flight.
    pub fn new(auth: Authenticator, max_inflight: usize) -> Self {
        GuardLayer {
            guard: Arc::new(Guard {
                auth,
                disabled: Arc::new(Principal::auth_disabled()),
                inflight: AtomicUsize::new(0),
                max_inflight,
            }),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The guard in front of one connection's services.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

/// Counts one RPC in flight until dropped.
struct InFlight(Arc<Guard>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        gauge!(m::INFLIGHT_REQUESTS).set(n.saturating_sub(1) as f64);
    }
}

/// What the guard decided before the handler runs.
enum Checked {
    /// Admitted (with the in-flight permit, none for public probes), principal attached.
    Pass(Option<InFlight>),
    /// Admitted, but the token's id is not in this node's token table: judge it again
    /// after catching up with the leader (to a state at least as new as when it was
    /// found unknown).
    CatchUpFirst(InFlight, Need, Instant),
}

/// Why [`Guard::principal`] did not produce a principal.
enum Refused {
    /// The answer to send.
    Status(tonic::Status),
    /// The token id is unknown here (see [`AuthFailure::UnknownToken`]), with the
    /// message for the caller should it still be unknown after catching up.
    UnknownToken(String),
}

impl Guard {
    /// Authenticates the caller of `req` and checks `need`; borrows the request (the
    /// path and header are read in place, copied only into refusal messages).
    fn principal<B>(&self, req: &http::Request<B>, need: Need) -> Result<Arc<Principal>, Refused> {
        if !self.auth.enabled() {
            return Ok(self.disabled.clone());
        }
        let path = req.uri().path();
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        let peer = req.extensions().get::<PeerInfo>();
        let principal = match self.auth.authenticate(auth, peer) {
            Ok(p) => p,
            Err(AuthFailure::StateNotCurrent) => {
                return Err(Refused::Status(state_not_current(path)));
            }
            Err(AuthFailure::UnknownToken(msg)) => return Err(Refused::UnknownToken(msg)),
            Err(AuthFailure::Unauthenticated(msg)) => {
                return Err(Refused::Status(unauthenticated(path, need, &msg)));
            }
        };
        if let Err(msg) = principal.authorize(path, need) {
            counter!(m::AUTH_DENIED, "reason" => "permission_denied").increment(1);
            if need == Need::Admin {
                audit::denied(path, &principal.to_string(), &msg);
            }
            return Err(Refused::Status(ErrorCode::PermissionDenied.to_status(msg)));
        }
        Ok(Arc::new(principal))
    }

    /// Admission, authentication and role check for one call.
    fn check<B>(self: &Arc<Self>, req: &mut http::Request<B>) -> Result<Checked, tonic::Status> {
        let need = Need::of_path(req.uri().path());
        if need == Need::Public {
            // Probes must answer even when the node is saturated.
            return Ok(Checked::Pass(None));
        }
        let n = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        let permit = InFlight(self.clone());
        gauge!(m::INFLIGHT_REQUESTS).set(n as f64);
        if n > self.max_inflight {
            counter!(m::ADMISSION_SHED, "reason" => "inflight").increment(1);
            return Err(ErrorCode::ResourceExhausted.to_status(format!(
                "node overloaded: more than {} requests in flight (limits.max_inflight_requests); retry with backoff",
                self.max_inflight
            )));
        }
        match self.principal(req, need) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                Ok(Checked::Pass(Some(permit)))
            }
            Err(Refused::Status(s)) => Err(s),
            Err(Refused::UnknownToken(_)) => {
                Ok(Checked::CatchUpFirst(permit, need, Instant::now()))
            }
        }
    }

    /// The second judgement of a token whose id was unknown when the call `arrived`:
    /// after this node has applied everything the leader had committed since, a token
    /// id still unknown does not exist (UNAUTHENTICATED); one that cannot be judged now
    /// (no leader) is UNAVAILABLE.
    async fn check_after_catch_up<B>(
        &self,
        req: &mut http::Request<B>,
        need: Need,
        arrived: Instant,
    ) -> Result<(), tonic::Status> {
        let path = req.uri().path();
        if !self.auth.catch_up(arrived).await {
            counter!(m::AUTH_TOKEN_CATCH_UPS, "outcome" => "failed").increment(1);
            return Err(state_not_current(path));
        }
        match self.principal(req, need) {
            Ok(principal) => {
                counter!(m::AUTH_TOKEN_CATCH_UPS, "outcome" => "known").increment(1);
                req.extensions_mut().insert(principal);
                Ok(())
            }
            Err(Refused::Status(s)) => {
                counter!(m::AUTH_TOKEN_CATCH_UPS, "outcome" => "known").increment(1);
                Err(s)
            }
            Err(Refused::UnknownToken(msg)) => {
                counter!(m::AUTH_TOKEN_CATCH_UPS, "outcome" => "unknown").increment(1);
                Err(unauthenticated(req.uri().path(), need, &msg))
            }
        }
    }
}

/// The refusal of a token judged by a token table this node has not caught up with.
fn state_not_current(path: &str) -> tonic::Status {
    counter!(m::AUTH_DENIED, "reason" => "state_not_current").increment(1);
    ErrorCode::Unavailable.to_status(format!(
        "{path}: this node has not caught up with the control-plane state that judges tokens yet; retry, or use another node"
    ))
}

/// The refusal of a caller without valid credentials (audited for admin calls).
fn unauthenticated(path: &str, need: Need, msg: &str) -> tonic::Status {
    counter!(m::AUTH_DENIED, "reason" => "unauthenticated").increment(1);
    if need == Need::Admin {
        audit::denied(path, "unauthenticated caller", msg);
    }
    ErrorCode::Unauthenticated.to_status(format!("{path}: {msg}"))
}

impl<S, B> Service<http::Request<B>> for GuardService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.guard.check(&mut req) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(checked) => {
                // The clone that was polled ready serves this call (tower's contract).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let guard = self.guard.clone();
                Box::pin(async move {
                    let permit = match checked {
                        Checked::Pass(permit) => permit,
                        Checked::CatchUpFirst(permit, need, arrived) => {
                            if let Err(status) =
                                guard.check_after_catch_up(&mut req, need, arrived).await
                            {
                                return Ok(status.into_http());
                            }
                            Some(permit)
                        }
                    };
                    let res = inner.call(req).await;
                    drop(permit);
                    res
                })
            }
        }
    }
}

/// The principal the guard attached to a request (auth disabled if none: only the
/// guard's public methods lack one, and those need none).
pub fn principal_of<T>(req: &tonic::Request<T>) -> Arc<Principal> {
    req.extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Principal::auth_disabled()))
}
