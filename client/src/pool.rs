//! One lazily connected tonic channel per node, with its outstanding-request count (for
//! replica choice) and circuit breaker (to skip a node that keeps failing and probe it
//! back later).

use quiver_proto::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quiver_proto::lookup_response::LookupClient;
use quiver_proto::transport::{AuthChannel, Credentials};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::cluster_service_client::ClusterServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use tonic::codec::CompressionEncoding;

use crate::error::ClientError;

/// Responses can be large (500 keys × 250 features); requests are bounded by the node.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Normalises `host:port` to a URI (for comparing addresses; TLS picks the scheme when
/// connecting).
pub(crate) fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// `addr` without a leading `http://` or `https://`.
fn strip_scheme(addr: &str) -> &str {
    addr.split_once("://").map_or(addr, |(_, rest)| rest)
}

/// The host of `host:port` (or `[v6]:port`), for TLS verification.
fn advertised_host(addr: &str) -> &str {
    let hostport = strip_scheme(addr).trim_end_matches('/');
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Opens a lazily connecting channel to `addr`, presenting `credentials`.
pub(crate) fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
    credentials: &Credentials,
) -> Result<AuthChannel, ClientError> {
    credentials
        .lazy_channel(addr, connect_timeout)
        .map_err(|e| ClientError::Connect {
            endpoint: credentials.uri(addr),
            message: e.to_string(),
        })
}

/// Circuit-breaker state of one node.
#[derive(Debug)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probe_in_flight: bool,
    /// The node said it is draining for shutdown: prefer others until then.
    draining_until: Option<Instant>,
}

/// Whether a node may be sent a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Healthy.
    Allow,
    /// Healthy but draining for shutdown: used only when no healthy replica is left.
    Draining,
    /// Open breaker whose cool-down has passed: one request may probe it.
    Probe,
    /// Open breaker: skip the node.
    Deny,
}

/// A node the client talks to.
#[derive(Debug)]
pub(crate) struct NodeHandle {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    channel: AuthChannel,
    outstanding: AtomicUsize,
    breaker: Mutex<Breaker>,
}

/// Decrements a node's outstanding count when the request ends (or is dropped by a hedge).
pub(crate) struct InFlight(Arc<NodeHandle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeHandle {
    pub(crate) fn features(&self) -> FeatureServiceClient<AuthChannel> {
        FeatureServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .accept_compressed(CompressionEncoding::Zstd)
    }

    /// `GetOnlineFeatures` with the client's decoder (`quiver_proto::lookup_response`).
    pub(crate) fn lookups(&self) -> LookupClient<AuthChannel> {
        LookupClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .accept_compressed(CompressionEncoding::Zstd)
    }

    pub(crate) fn cluster(&self) -> ClusterServiceClient<AuthChannel> {
        ClusterServiceClient::new(self.channel.clone())
    }

    pub(crate) fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.channel.clone())
    }

    /// Requests in flight to this node from this client.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admission without side effects, for ranking candidates.
    pub(crate) fn admission(&self, now: Instant) -> Admission {
        let b = self.breaker();
        match b.open_until {
            None if b.draining_until.is_some_and(|t| now < t) => Admission::Draining,
            None => Admission::Allow,
            Some(t) if now >= t && !b.probe_in_flight => Admission::Probe,
            Some(_) => Admission::Deny,
        }
    }

    /// Claims the probe slot of an open breaker; false if another request took it.
    pub(crate) fn claim_probe(&self, now: Instant) -> bool {
        let mut b = self.breaker();
        match b.open_until {
            Some(t) if now >= t && !b.probe_in_flight => {
                b.probe_in_flight = true;
                true
            }
            None => true,
            Some(_) => false,
        }
    }

    /// A request to the node succeeded: close the breaker (and forget a drain: a node
    /// that still drains says so again in the same response).
    pub(crate) fn on_success(&self, base_cooldown: Duration) {
        let mut b = self.breaker();
        b.draining_until = None;
        b.consecutive_failures = 0;
        b.open_until = None;
        b.probe_in_flight = false;
        b.cooldown = base_cooldown;
    }

    /// The node answered that it is draining for shutdown: it still answers, but this
    /// client prefers the shards' other replicas for `for_`, by which time the node has
    /// stopped (its breaker covers the rest) or restarted.
    pub(crate) fn on_draining(&self, for_: Duration) {
        self.breaker().draining_until = Some(Instant::now() + for_);
    }

    /// A transport-level failure; returns true if this opened (or re-opened) the breaker.
    pub(crate) fn on_failure(&self, threshold: u32, base_cooldown: Duration) -> bool {
        let mut b = self.breaker();
        b.consecutive_failures += 1;
        let reopen = b.probe_in_flight || b.open_until.is_some();
        if reopen || b.consecutive_failures >= threshold {
            if reopen {
                b.cooldown = (b.cooldown * 2).min(base_cooldown * 8);
            }
            b.open_until = Some(Instant::now() + b.cooldown);
            b.probe_in_flight = false;
            return true;
        }
        false
    }
}

/// Every node the client has talked to, by node id.
#[derive(Debug)]
pub(crate) struct NodePool {
    nodes: RwLock<HashMap<NodeId, Arc<NodeHandle>>>,
    connect_timeout: Duration,
    base_cooldown: Duration,
    credentials: Credentials,
    /// Advertised address (without scheme) → the address to dial instead.
    connect_to: HashMap<String, String>,
}

impl NodePool {
    pub(crate) fn new(connect_timeout: Duration, base_cooldown: Duration) -> Self {
        NodePool {
            nodes: RwLock::new(HashMap::new()),
            connect_timeout,
            base_cooldown,
            credentials: Credentials::none(),
            connect_to: HashMap::new(),
        }
    }

    /// Connects presenting `credentials` (TLS, bearer token).
    pub(crate) fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Dials these addresses instead of the advertised ones (keys and values `host:port`).
    pub(crate) fn with_connect_to(mut self, connect_to: &HashMap<String, String>) -> Self {
        self.connect_to = connect_to
            .iter()
            .map(|(from, to)| (strip_scheme(from).to_owned(), to.clone()))
            .collect();
        self
    }

    /// A channel to the node advertised at `addr`: dialled at its translation if there is
    /// one, and then, under TLS, verified against the advertised host.
    fn channel(&self, addr: &str) -> Result<AuthChannel, ClientError> {
        let Some(target) = self.connect_to.get(strip_scheme(addr)) else {
            return lazy_channel(addr, self.connect_timeout, &self.credentials);
        };
        let mut credentials = self.credentials.clone();
        if let Some(tls) = credentials.tls.as_mut()
            && tls.server_name.is_none()
        {
            tls.server_name = Some(advertised_host(addr).to_owned());
        }
        lazy_channel(target, self.connect_timeout, &credentials)
    }

    /// The handle of node `id` at `addr`; a changed address replaces the channel.
    pub(crate) fn node(&self, id: NodeId, addr: &str) -> Result<Arc<NodeHandle>, ClientError> {
        if let Some(n) = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            && n.addr == addr
        {
            return Ok(n.clone());
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = nodes.get(&id)
            && n.addr == addr
        {
            return Ok(n.clone());
        }
        let handle = Arc::new(NodeHandle {
            id,
            addr: addr.to_owned(),
            channel: self.channel(addr)?,
            outstanding: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker {
                consecutive_failures: 0,
                open_until: None,
                cooldown: self.base_cooldown,
                probe_in_flight: false,
                draining_until: None,
            }),
        });
        nodes.insert(id, handle.clone());
        Ok(handle)
    }

    /// Drops nodes that are no longer in the map.
    pub(crate) fn retain(&self, keep: impl Fn(NodeId) -> bool) {
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| keep(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::NodeId;

    #[test]
    fn advertised_host_of_names_addresses_and_uris() {
        assert_eq!(advertised_host("quiver1:7070"), "quiver1");
        assert_eq!(
            advertised_host("https://quiver1.example:7070/"),
            "quiver1.example"
        );
        assert_eq!(advertised_host("[::1]:7070"), "::1");
        assert_eq!(strip_scheme("http://quiver1:7070"), "quiver1:7070");
    }

    #[tokio::test]
    async fn translated_node_keeps_its_advertised_address() {
        let to = HashMap::from([(
            "http://quiver1:7070".to_owned(),
            "127.0.0.1:7071".to_owned(),
        )]);
        let pool = NodePool::new(Duration::from_millis(50), Duration::from_millis(10))
            .with_connect_to(&to);
        assert_eq!(
            pool.connect_to.get("quiver1:7070").map(String::as_str),
            Some("127.0.0.1:7071")
        );
        // The map compares and reports advertised addresses; only the dial is translated.
        let n = pool.node(NodeId(1), "quiver1:7070").unwrap();
        assert_eq!(n.addr, "quiver1:7070");
        assert!(Arc::ptr_eq(
            &n,
            &pool.node(NodeId(1), "quiver1:7070").unwrap()
        ));
    }

    #[tokio::test]
    async fn breaker_opens_after_threshold_then_probes_and_closes() {
        let base = Duration::from_millis(20);
        let pool = NodePool::new(Duration::from_millis(50), base);
        let n = pool.node(NodeId(1), "127.0.0.1:1").unwrap();
        let now = Instant::now();
        assert_eq!(n.admission(now), Admission::Allow);
        assert!(!n.on_failure(3, base));
        assert!(!n.on_failure(3, base));
        assert!(n.on_failure(3, base));
        assert_eq!(n.admission(Instant::now()), Admission::Deny);
        let later = Instant::now() + base * 2;
        assert_eq!(n.admission(later), Admission::Probe);
        assert!(n.claim_probe(later));
        assert!(!n.claim_probe(later), "one probe at a time");
        assert_eq!(n.admission(later), Admission::Deny);
        // A failed probe re-opens with a doubled cool-down.
        assert!(n.on_failure(3, base));
        assert_eq!(
            n.admission(Instant::now() + base + base / 2),
            Admission::Deny
        );
        n.on_success(base);
        assert_eq!(n.admission(Instant::now()), Admission::Allow);
    }

    #[tokio::test]
    async fn outstanding_counts_follow_guards() {
        let pool = NodePool::new(Duration::from_millis(50), Duration::from_millis(20));
        let n = pool.node(NodeId(7), "127.0.0.1:1").unwrap();
        let a = n.begin();
        let b = n.begin();
        assert_eq!(n.outstanding(), 2);
        drop(a);
        drop(b);
        assert_eq!(n.outstanding(), 0);
        assert!(Arc::ptr_eq(
            &n,
            &pool.node(NodeId(7), "127.0.0.1:1").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &n,
            &pool.node(NodeId(7), "127.0.0.1:2").unwrap()
        ));
    }
}
