//! Client settings and the builder.

use std::collections::HashMap;
use std::time::Duration;

use quiver_proto::transport::{Credentials, TlsClientSettings};

use crate::Client;
use crate::error::ClientError;

/// When to send a second copy of a slow sub-request to another replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Hedging {
    /// Never hedge.
    Off,
    /// Hedge sub-requests slower than this.
    Fixed(Duration),
    /// Hedge sub-requests slower than this percentile of recent sub-requests of the same
    /// batch-size class, but never sooner than `min_delay`. Until a class has enough
    /// samples, `min_delay` is used.
    Percentile {
        /// E.g. 95.0.
        percentile: f64,
        /// Lower bound on the hedge delay.
        min_delay: Duration,
    },
}

impl Default for Hedging {
    fn default() -> Self {
        Hedging::Percentile {
            percentile: 95.0,
            min_delay: Duration::from_millis(2),
        }
    }
}

/// Caps the extra load that hedges and retries add.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    /// Extra requests allowed per request, e.g. 0.1 = 10 %.
    pub ratio: f64,
    /// Extra requests always allowed per second, so a quiet client can still fail over.
    pub min_per_second: f64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.1,
            min_per_second: 10.0,
        }
    }
}

/// The client-side row cache (off by default): rows of hot keys served from the client's
/// memory, without a sub-request, as long as they are provably as fresh as a replica's
/// answer would have to be. See [`crate::cache`] for the exact rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Rows kept at most (one row = one entity key's answer to one feature list).
    pub max_entries: usize,
    /// Bytes kept at most (row bytes plus a fixed overhead per row).
    pub max_bytes: usize,
    /// How long a row is served from the cache after it was read (default 1 s): the bound
    /// on how late a registry change (a feature service redefined) reaches cached rows.
    pub ttl: std::time::Duration,
    /// Views whose rows are cached, with an optional TTL of their own; empty: every view.
    /// A lookup is cached only if every view it reads is; its TTL is the smallest of its
    /// views'.
    pub views: HashMap<String, Option<std::time::Duration>>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 100_000,
            max_bytes: 64 << 20,
            ttl: std::time::Duration::from_secs(1),
            views: HashMap::new(),
        }
    }
}

impl CacheConfig {
    /// Caches only `view` (and views added the same way), with its own TTL if given.
    pub fn view(mut self, view: impl Into<String>, ttl: Option<std::time::Duration>) -> Self {
        self.views.insert(view.into(), ttl);
        self
    }
}

/// Everything a [`Client`] is configured with; build it with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node addresses to bootstrap from (`host:port` or `http://host:port`).
    pub seeds: Vec<String>,
    /// Overall deadline of one call, across retries; sent to nodes as the gRPC timeout.
    pub deadline: Duration,
    /// Longest wait for one sub-request before trying another replica.
    pub attempt_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Hedging policy.
    pub hedging: Hedging,
    /// Retry and hedge budget.
    pub retry_budget: RetryBudget,
    /// Safety-net period for re-reading the cluster map (it is also pushed by nodes).
    pub refresh_interval: Duration,
    /// Consecutive transport failures that open a node's circuit breaker.
    pub breaker_failures: u32,
    /// First cool-down of an open breaker; doubles per failed probe, up to 8×.
    pub breaker_cooldown: Duration,
    /// Seed of the replica-choice RNG (deterministic tests); `None` seeds from the clock.
    pub rng_seed: Option<u64>,
    /// TLS settings and bearer token presented to every node.
    pub credentials: Credentials,
    /// Where to connect instead of a node's advertised address (`quiver1:7070` →
    /// `127.0.0.1:7071`): for a client outside the network the nodes advertise on, such
    /// as the host of a compose cluster or a client behind NAT. Under TLS the node's
    /// certificate is still verified against the advertised host (unless a server name
    /// is set).
    pub connect_to: HashMap<String, String>,
    /// The client-side row cache; `None` (the default): no cache.
    pub cache: Option<CacheConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            seeds: Vec::new(),
            deadline: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(500),
            hedging: Hedging::default(),
            retry_budget: RetryBudget::default(),
            refresh_interval: Duration::from_secs(30),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(250),
            rng_seed: None,
            credentials: Credentials::none(),
            connect_to: HashMap::new(),
            cache: None,
        }
    }
}

/// Builds a [`Client`]: `Client::builder().seeds([..]).deadline(..).build().await?`.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// Starts from [`ClientConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a full config.
    pub fn from_config(config: ClientConfig) -> Self {
        ClientBuilder { config }
    }

    /// Nodes to bootstrap from; any one reachable node is enough.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.config.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Overall deadline per call (default 1 s).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.config.deadline = d;
        self
    }

    /// Per-attempt timeout before failing over (default 300 ms).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.config.attempt_timeout = d;
        self
    }

    /// Hedging policy (default: p95 per batch-size class, at least 2 ms).
    pub fn hedging(mut self, h: Hedging) -> Self {
        self.config.hedging = h;
        self
    }

    /// Retry/hedge budget (default 10 % plus 10 per second).
    pub fn retry_budget(mut self, b: RetryBudget) -> Self {
        self.config.retry_budget = b;
        self
    }

    /// Period of the safety-net cluster-map refresh (default 30 s).
    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.config.refresh_interval = d;
        self
    }

    /// Seeds replica choice, for reproducible tests.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.rng_seed = Some(seed);
        self
    }

    /// TLS settings and bearer token presented to every node.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.config.credentials = credentials;
        self
    }

    /// Connects to `reachable` whenever the cluster map advertises a node at
    /// `advertised` (both `host:port`); see [`ClientConfig::connect_to`].
    pub fn connect_to(
        mut self,
        advertised: impl Into<String>,
        reachable: impl Into<String>,
    ) -> Self {
        self.config
            .connect_to
            .insert(advertised.into(), reachable.into());
        self
    }

    /// Enables the client-side row cache (see [`CacheConfig`]).
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.config.cache = Some(cache);
        self
    }

    /// The bearer token (`quiverctl token create`) sent with every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.credentials.token = Some(token.into());
        self
    }

    /// Connects over TLS with these settings.
    pub fn tls(mut self, tls: TlsClientSettings) -> Self {
        self.config.credentials.tls = Some(tls);
        self
    }

    /// The config as built so far.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Validates the settings, reads the cluster map and schema from a seed and starts the
    /// background map watcher.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] for bad settings; [`ClientError::Connect`] /
    /// [`ClientError::Rpc`] if no seed answers.
    pub async fn build(self) -> Result<Client, ClientError> {
        let c = &self.config;
        let bad = |m: &str| Err(ClientError::InvalidRequest(m.to_owned()));
        if c.seeds.is_empty() {
            return bad("no seeds: give at least one node address");
        }
        if c.deadline.is_zero() || c.attempt_timeout.is_zero() {
            return bad("deadline and attempt_timeout must be positive");
        }
        if !(0.0..=1.0).contains(&c.retry_budget.ratio) || c.retry_budget.min_per_second < 0.0 {
            return bad("retry_budget.ratio must be within 0..=1 and min_per_second >= 0");
        }
        if let Hedging::Percentile { percentile, .. } = c.hedging
            && !(1.0..100.0).contains(&percentile)
        {
            return bad("hedging percentile must be within 1..100");
        }
        if let Some(cache) = &c.cache
            && (cache.max_entries == 0 || cache.max_bytes == 0 || cache.ttl.is_zero())
        {
            return bad("cache max_entries, max_bytes and ttl must be positive");
        }
        Client::start(self.config).await
    }
}
