//! The smart client: a cheap-to-clone handle over shared routing state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::{counter, histogram};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::batch::Call;
use crate::cache::RowCache;
use crate::config::{ClientBuilder, ClientConfig};
use crate::error::ClientError;
use crate::hedge::HedgePolicy;
use crate::lagging::LaggingReplicas;
use crate::lookup::{Lookup, LookupResult};
use crate::metrics as m;
use crate::pool::NodePool;
use crate::push::PushRow;
use crate::retry::Budget;
use crate::router::Rng;
use crate::schema::SchemaCache;
use crate::shard_map_cache::MapCache;
use crate::stats::{ClientStats, Stats};
use crate::watermark::{SessionWatermarks, Watermarks};

/// State shared by every clone of a [`Client`].
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) pool: Arc<NodePool>,
    pub(crate) map: Arc<MapCache>,
    pub(crate) schema: SchemaCache,
    pub(crate) session: SessionWatermarks,
    pub(crate) hedge: HedgePolicy,
    pub(crate) budget: Budget,
    /// Replicas that recently answered BEHIND to this session.
    pub(crate) lagging: LaggingReplicas,
    pub(crate) stats: Arc<Stats>,
    pub(crate) rng: Rng,
    /// The row cache, if configured.
    pub(crate) cache: Option<RowCache>,
    /// Stops the cluster-map watcher when the last clone is dropped.
    _watcher: DropGuard,
}

impl Inner {
    /// Takes a retry/hedge token; counts the refusal if the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let granted = self.budget.try_withdraw();
        if !granted {
            self.stats.budget_denied.fetch_add(1, Ordering::Relaxed);
            counter!(m::BUDGET_DENIED).increment(1);
        }
        granted
    }
}

/// The quiver client: routes each key to a replica of its shard, fans out, fails over,
/// hedges, and keeps reads monotonic. Cheap to clone; clones share connections, the
/// cluster map and the session's watermarks.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("seeds", &self.inner.config.seeds)
            .field("epoch", &self.inner.map.current().epoch)
            .finish()
    }
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) async fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let stats = Arc::new(Stats::default());
        let pool = Arc::new(
            NodePool::new(config.connect_timeout, config.breaker_cooldown)
                .with_credentials(config.credentials.clone())
                .with_connect_to(&config.connect_to),
        );
        let map = Arc::new(
            MapCache::bootstrap(
                config.seeds.clone(),
                pool.clone(),
                config.deadline.max(config.connect_timeout * 2),
                stats.clone(),
            )
            .await?,
        );
        let schema = SchemaCache::load(&map).await?;
        let cancel = CancellationToken::new();
        tokio::spawn(
            map.clone()
                .watch(config.refresh_interval, cancel.child_token()),
        );
        let seed = config.rng_seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Client {
            inner: Arc::new(Inner {
                hedge: HedgePolicy::new(config.hedging.clone()),
                budget: Budget::new(config.retry_budget.clone()),
                rng: Rng::new(seed),
                cache: config.cache.clone().map(RowCache::new),
                config,
                pool,
                map,
                schema,
                session: SessionWatermarks::default(),
                lagging: LaggingReplicas::default(),
                stats,
                _watcher: cancel.drop_guard(),
            }),
        })
    }

    fn finish<T>(
        &self,
        op: &'static str,
        started: Instant,
        r: Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let result = match &r {
            Ok(_) => "ok",
            Err(e) => e.code().map_or("error", |c| c.as_str()),
        };
        if r.is_err() {
            self.inner
                .stats
                .failed_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        counter!(m::REQUESTS, "op" => op, "result" => result).increment(1);
        histogram!(m::REQUEST_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
        r
    }

    fn begin(&self) -> Instant {
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.budget.deposit();
        Instant::now()
    }

    /// Looks up features for a batch of entity keys.
    ///
    /// The request is validated against the cached registry first (unknown names, key
    /// types, limits); then keys are split by shard, sent to one replica per shard in
    /// parallel, failed over and hedged as needed, and reassembled in request order.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] / [`ClientError::NotFound`] before anything is sent;
    /// [`ClientError::DeadlineExceeded`] when no replica answered in time (never a stale
    /// answer); [`ClientError::Rpc`] for other node errors.
    pub async fn get_online_features(&self, lookup: &Lookup) -> Result<LookupResult, ClientError> {
        if lookup.keys_by_entity.is_empty() {
            self.get_one_entity(lookup).await
        } else {
            self.get_across_entities(lookup).await
        }
    }

    /// A lookup of one entity's keys.
    async fn get_one_entity(&self, lookup: &Lookup) -> Result<LookupResult, ClientError> {
        let started = self.begin();
        let r = async {
            self.inner
                .schema
                .validate(&self.inner.map, |s| {
                    s.check_lookup(&lookup.features, &lookup.feature_service, &lookup.keys)
                })
                .await?;
            lookup.check_as_of()?;
            let inner = &*self.inner;
            if let Some(cache) = &inner.cache
                && let Some(shape) = cache.shape(&inner.schema.current(), lookup)
            {
                return crate::cache::lookup(inner, cache, lookup, shape).await;
            }
            Call::new(inner, lookup).run().await
        }
        .await;
        self.finish("lookup", started, r)
    }

    /// A lookup with keys per entity ([`Lookup::entity_keys_of`]): one lookup per entity,
    /// run concurrently, joined in the requested column order.
    async fn get_across_entities(&self, lookup: &Lookup) -> Result<LookupResult, ClientError> {
        let schema = &self.inner.schema;
        schema
            .validate(&self.inner.map, |s| {
                s.entity_refs(&lookup.features, &lookup.feature_service)
                    .map(|_| ())
            })
            .await?;
        let refs = schema
            .current()
            .entity_refs(&lookup.features, &lookup.feature_service)
            .map_err(|p| match p {
                crate::schema::Problem::Unknown(m) => ClientError::NotFound(m),
                crate::schema::Problem::Mismatch(m) | crate::schema::Problem::Invalid(m) => {
                    ClientError::InvalidRequest(m)
                }
            })?;
        let parts = crate::lookup::entities::split_by_entity(lookup, &refs)?;
        // Every part checked before any is sent: a bad key of one entity sends nothing.
        for p in &parts {
            schema
                .validate(&self.inner.map, |s| {
                    s.check_lookup(&p.lookup.features, "", &p.lookup.keys)
                })
                .await?;
        }
        lookup.check_as_of()?;
        let answers = futures::future::try_join_all(parts.into_iter().map(|p| async move {
            let answer = self.get_one_entity(&p.lookup).await?;
            Ok::<_, ClientError>((answer, p.positions))
        }))
        .await?;
        crate::lookup::entities::join(answers, lookup.rows())
    }

    /// What a push to `view` carries (from the cluster's schema, refreshed once if the
    /// view is not known yet).
    ///
    /// # Errors
    /// [`ClientError::NotFound`] for a view that is not registered.
    pub async fn push_schema(&self, view: &str) -> Result<crate::push::PushSchema, ClientError> {
        self.inner
            .schema
            .validate(&self.inner.map, |s| s.push_schema(view).map(|_| ()))
            .await?;
        self.inner
            .schema
            .current()
            .push_schema(view)
            .map_err(|_| ClientError::NotFound(format!("view {view:?} is not registered")))
    }

    /// Pushes rows into `view`: validated here, produced by a node into the partitions of
    /// the keys' shards. Returns the produced offsets: pass them to
    /// [`Lookup::min_watermarks`] and the next read sees the write.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] / [`ClientError::NotFound`] before anything is sent;
    /// node errors otherwise. A failed push may have written some rows; retrying is safe
    /// (rows are last-write-wins by event time).
    pub async fn push(
        &self,
        view: &str,
        rows: impl IntoIterator<Item = PushRow>,
    ) -> Result<Watermarks, ClientError> {
        let started = self.begin();
        let rows: Vec<_> = rows.into_iter().map(PushRow::into_proto).collect();
        let r = async {
            self.inner
                .schema
                .validate(&self.inner.map, |s| s.check_push(view, &rows))
                .await?;
            let keys: Vec<_> = match &self.inner.cache {
                Some(_) => rows.iter().filter_map(|r| r.entity_key.clone()).collect(),
                None => Vec::new(),
            };
            let r = crate::push::push(&self.inner, view, rows).await;
            if let Some(cache) = &self.inner.cache {
                // Also after a failed push: some rows may have been written.
                let offsets = r.as_ref().cloned().unwrap_or_default();
                cache.pushed(view, keys.iter(), &offsets);
            }
            r
        }
        .await;
        self.finish("push", started, r)
    }

    /// The most keys one lookup may carry: the cluster's `max_batch_keys`, as last read
    /// with the schema. Larger batches can be split with [`Lookup::split`] and joined
    /// with [`LookupResult::concat`].
    pub fn max_batch_keys(&self) -> usize {
        self.inner.schema.current().max_batch_keys()
    }

    /// The highest watermark this client has seen per shard (its monotonic-read floor).
    pub fn session_watermarks(&self) -> Watermarks {
        self.inner.session.snapshot()
    }

    /// Counters since the client was built.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    /// Rows and bytes in the client-side cache and its bounds (`None` without a cache).
    pub fn cache_usage(&self) -> Option<(crate::cache::Usage, crate::cache::Usage)> {
        let c = self.inner.cache.as_ref()?;
        Some((c.usage(), c.capacity()))
    }

    /// Epoch of the cached cluster map (0 for static-mode nodes).
    pub fn cluster_epoch(&self) -> u64 {
        self.inner.map.current().epoch
    }

    /// The registry as the cluster serves it now (entities, views with their feature
    /// types, feature services, request limits), read from any node; the client's cached
    /// schema is replaced with it.
    ///
    /// # Errors
    /// If no node answers.
    pub async fn registry(&self) -> Result<quiver_proto::v1::Schema, ClientError> {
        self.inner.schema.refresh(&self.inner.map).await
    }

    /// A view's full definition as JSON (source, features, TTL, history, the feature
    /// services using it, a version being re-ingested beside it), read from any node.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`NOT_FOUND` naming an unknown view).
    pub async fn describe_view(&self, name: &str) -> Result<String, ClientError> {
        let name = name.to_owned();
        self.inner
            .map
            .call_any(|node| {
                let name = name.clone();
                async move {
                    Ok(node
                        .admin()
                        .describe_view(quiver_proto::v1::DescribeViewRequest { name })
                        .await?
                        .into_inner()
                        .definition_json)
                }
            })
            .await
    }

    /// The cluster map as a node serves it now: members, and each shard's replicas and
    /// their states.
    ///
    /// # Errors
    /// [`ClientError::Rpc`] (`UNIMPLEMENTED` from static-mode nodes), or if no node
    /// answers.
    pub async fn cluster_map(&self) -> Result<quiver_proto::v1::ClusterMap, ClientError> {
        self.inner
            .map
            .call_any(|node| async move {
                Ok(node
                    .cluster()
                    .get_cluster_map(quiver_proto::v1::GetClusterMapRequest {})
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Re-reads the cluster map now; returns its epoch.
    ///
    /// # Errors
    /// If no node answers.
    pub async fn refresh_cluster_map(&self) -> Result<u64, ClientError> {
        Ok(self.inner.map.refresh(None, "explicit").await?.epoch)
    }
}
