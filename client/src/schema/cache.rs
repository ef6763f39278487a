//! The cached schema: one read shared by concurrent callers, refreshed when a request
//! names something unknown or contradicts it, and when a node's answer shows a newer
//! registry revision than the cached one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use quiver_proto::v1::{GetSchemaRequest, Schema};

use super::{ClientSchema, Problem};
use crate::error::ClientError;
use crate::shard_map_cache::MapCache;

/// The cached schema with coalesced refresh.
pub(crate) struct SchemaCache {
    current: RwLock<Arc<ClientSchema>>,
    lock: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
    /// The highest registry revision a node's answer was planned on.
    seen_revision: AtomicU64,
    /// The seen revision the last catch-up refresh was made for (one refresh per
    /// revision, even if the node asked still has an older registry).
    caught_up_to: AtomicU64,
}

async fn fetch(map: &MapCache) -> Result<ClientSchema, ClientError> {
    Ok(ClientSchema::new(fetch_raw(map).await?))
}

async fn fetch_raw(map: &MapCache) -> Result<Schema, ClientError> {
    map.call_any(|node| async move {
        Ok(node
            .features()
            .get_schema(GetSchemaRequest {})
            .await?
            .into_inner())
    })
    .await
}

impl SchemaCache {
    pub(crate) async fn load(map: &MapCache) -> Result<Self, ClientError> {
        Ok(SchemaCache {
            current: RwLock::new(Arc::new(fetch(map).await?)),
            lock: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
            seen_revision: AtomicU64::new(0),
            caught_up_to: AtomicU64::new(0),
        })
    }

    /// Notes the registry revision an answer was planned on: a newer one than the cached
    /// schema's makes the next validation read the schema first, so a long-lived client
    /// follows the registry (a retyped feature, a new version) without a refused request.
    pub(crate) fn note_revision(&self, revision: u64) {
        self.seen_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// Reads the schema again if an answer showed a newer registry than `cached`'s (once
    /// per revision); returns the schema to check against.
    async fn catch_up(&self, map: &MapCache, cached: Arc<ClientSchema>) -> Arc<ClientSchema> {
        let seen = self.seen_revision.load(Ordering::Relaxed);
        if seen <= cached.registry_version
            || self.caught_up_to.fetch_max(seen, Ordering::AcqRel) >= seen
        {
            return cached;
        }
        // A failed read keeps the cached schema; validation refreshes on a mismatch.
        self.refresh_forward(map).await.unwrap_or(cached)
    }

    pub(crate) fn current(&self) -> Arc<ClientSchema> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the schema now, caches it and returns it as the cluster sent it.
    pub(crate) async fn refresh(&self, map: &MapCache) -> Result<Schema, ClientError> {
        let raw = fetch_raw(map).await?;
        let _g = self.lock.lock().await;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(ClientSchema::new(raw.clone()));
        self.refreshes.fetch_add(1, Ordering::Release);
        Ok(raw)
    }

    /// Reads the schema again and caches it unless it is older than the cached one (the
    /// node that answered has not applied the newest registry entries yet); returns what
    /// is cached then.
    pub(crate) async fn refresh_forward(
        &self,
        map: &MapCache,
    ) -> Result<Arc<ClientSchema>, ClientError> {
        let fresh = fetch(map).await?;
        let _g = self.lock.lock().await;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if fresh.registry_version >= current.registry_version {
            *current = Arc::new(fresh);
            self.refreshes.fetch_add(1, Ordering::Release);
        }
        Ok(current.clone())
    }

    /// Whether a node's NotFound for something `knows` finds in the cached schema is that
    /// node's registry being behind (a definition applied a moment ago reaches each node
    /// when it applies the raft entry), not the thing being gone: the schema is read
    /// again ([`SchemaCache::refresh_forward`]) and `knows` asked of it. When no node
    /// gives a schema, it cannot tell and says yes (the caller retries within its
    /// deadline).
    pub(crate) async fn node_behind(
        &self,
        map: &MapCache,
        knows: impl Fn(&ClientSchema) -> bool,
    ) -> bool {
        if !knows(&self.current()) {
            return false;
        }
        self.refresh_forward(map)
            .await
            .map_or(true, |schema| knows(&schema))
    }

    /// Runs `check` against the cached schema; on [`Problem::Unknown`] or
    /// [`Problem::Mismatch`], refreshes once (concurrent callers share the refresh) and
    /// checks again. A request the fresh schema still refuses costs one schema read
    /// instead of the round trip it would have cost unchecked; a schema changed a moment
    /// ago is never held against a request.
    pub(crate) async fn validate(
        &self,
        map: &MapCache,
        check: impl Fn(&ClientSchema) -> Result<(), Problem>,
    ) -> Result<(), ClientError> {
        let schema = self.catch_up(map, self.current()).await;
        let seen = self.refreshes.load(Ordering::Acquire);
        match check(&schema) {
            Ok(()) => return Ok(()),
            Err(Problem::Invalid(m)) => return Err(ClientError::InvalidRequest(m)),
            Err(Problem::Unknown(_) | Problem::Mismatch(_)) => {}
        }
        {
            let _g = self.lock.lock().await;
            if self.refreshes.load(Ordering::Acquire) == seen {
                let fresh = fetch(map).await?;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                self.refreshes.fetch_add(1, Ordering::Release);
            }
        }
        check(&self.current()).map_err(|p| match p {
            Problem::Unknown(m) => ClientError::NotFound(m),
            Problem::Mismatch(m) | Problem::Invalid(m) => ClientError::InvalidRequest(m),
        })
    }
}
