//! quiver through its smart client (routing, fan-out, hedging: what an application uses).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use quiver_client::{CacheConfig, Client, Lookup};

use super::{Fetched, LookupFuture, System};
use crate::env::Dataset;
use crate::env::dataset::{aggregate_refs, feature_refs, history_refs, key};

/// quiver as a [`System`].
pub struct Quiver {
    name: &'static str,
    client: Client,
    refs: HashMap<u32, Arc<Vec<String>>>,
    pids: Vec<u32>,
}

impl Quiver {
    /// A client of the cluster at `seeds` for the views of `features`; `pids` are the
    /// node processes.
    ///
    /// # Errors
    /// When the client cannot start.
    pub async fn connect(
        seeds: Vec<String>,
        features: &[u32],
        pids: Vec<u32>,
    ) -> anyhow::Result<Quiver> {
        Self::connect_with(seeds, features, pids, None).await
    }

    /// As [`Quiver::connect`], with the client-side row cache `cache` (the system is then
    /// named `quiver-cached`).
    ///
    /// # Errors
    /// When the client cannot start.
    pub async fn connect_with(
        seeds: Vec<String>,
        features: &[u32],
        pids: Vec<u32>,
        cache: Option<CacheConfig>,
    ) -> anyhow::Result<Quiver> {
        let name = if cache.is_some() {
            "quiver-cached"
        } else {
            "quiver"
        };
        let mut b = Client::builder()
            .seeds(seeds)
            .credentials(quiver_testkit::security::credentials());
        if let Some(c) = cache {
            b = b.cache(c);
        }
        let client = b.build().await?;
        let refs = features
            .iter()
            .map(|f| (*f, Arc::new(feature_refs(*f))))
            .collect();
        Ok(Quiver {
            name,
            client,
            refs,
            pids,
        })
    }

    /// A client that looks up, for case F, the six windowed features of the aggregation
    /// view over the F-feature view's topic instead of its plain features (the system is
    /// named `quiver-aggs`).
    ///
    /// # Errors
    /// When the client cannot start.
    pub async fn connect_aggregates(
        seeds: Vec<String>,
        features: &[u32],
        pids: Vec<u32>,
    ) -> anyhow::Result<Quiver> {
        Self::connect_refs("quiver-aggs", seeds, features, pids, aggregate_refs).await
    }

    /// A client that looks up, for case F, the F features of the view with `history` over
    /// the F-feature view's topic (the system is named `quiver-history`).
    ///
    /// # Errors
    /// When the client cannot start.
    pub async fn connect_history(
        seeds: Vec<String>,
        features: &[u32],
        pids: Vec<u32>,
    ) -> anyhow::Result<Quiver> {
        Self::connect_refs("quiver-history", seeds, features, pids, history_refs).await
    }

    async fn connect_refs(
        name: &'static str,
        seeds: Vec<String>,
        features: &[u32],
        pids: Vec<u32>,
        refs: fn(u32) -> Vec<String>,
    ) -> anyhow::Result<Quiver> {
        let client = Client::builder()
            .seeds(seeds)
            .credentials(quiver_testkit::security::credentials())
            .build()
            .await?;
        let refs = features.iter().map(|f| (*f, Arc::new(refs(*f)))).collect();
        Ok(Quiver {
            name,
            client,
            refs,
            pids,
        })
    }

    /// Checks the windowed answers of a `quiver-aggs` system for `keys` against
    /// [`Dataset::aggregates`], each entity having `events` records in its windows.
    ///
    /// # Errors
    /// The first answer that differs.
    pub async fn verify_aggregates(
        &self,
        ds: &Dataset,
        features: u32,
        keys: &[u32],
        events: u32,
    ) -> anyhow::Result<()> {
        let r = self
            .client
            .get_online_features(&self.request(features, keys))
            .await?;
        for (row, k) in keys.iter().enumerate() {
            let want = ds.aggregates(*k, features, events);
            for (c, (w, (name, ..))) in want.iter().zip(crate::env::dataset::AGGREGATES).enumerate()
            {
                let got = r.f64(row, c).or(r.i64(row, c).map(|v| v as f64));
                let close = got.is_some_and(|g| (g - w).abs() <= 1e-9 * w.abs().max(1.0));
                anyhow::ensure!(
                    close,
                    "quiver-aggs: key {k} feature {name} of the aggregation view over \
                     bench_f{features}: got {got:?}, expected {w} ({events} events)"
                );
            }
        }
        Ok(())
    }

    fn request(&self, features: u32, keys: &[u32]) -> Lookup {
        let refs = self
            .refs
            .get(&features)
            .map(|r| r.as_slice())
            .unwrap_or_default();
        Lookup::features(refs.iter().cloned()).keys(keys.iter().map(|k| key(*k)))
    }

    /// Wire sizes (request, response) of a lookup of `keys`: what the echo floor sends and
    /// answers. The response is the sum over the nodes the client fanned out to.
    ///
    /// # Errors
    /// When the lookup fails.
    pub async fn wire_sizes(&self, features: u32, keys: &[u32]) -> anyhow::Result<(usize, usize)> {
        let l = self.request(features, keys);
        let res = self.client.get_online_features(&l).await?;
        let resp = res.encoded_len();
        Ok((l.into_request().encoded_len(), resp))
    }

    /// The client (for its routing statistics).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl System for Quiver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn server_pids(&self) -> Vec<u32> {
        self.pids.clone()
    }

    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture {
        let (client, l, n) = (
            self.client.clone(),
            self.request(features, keys),
            keys.len(),
        );
        Box::pin(async move {
            let r = client
                .get_online_features(&l)
                .await
                .map_err(|e| e.to_string())?;
            if r.row_count() != n {
                return Err(format!("{} rows for {n} keys", r.row_count()));
            }
            Ok(())
        })
    }

    fn fetch(
        &self,
        features: u32,
        keys: &[u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Fetched, String>> + Send>> {
        let (client, l) = (self.client.clone(), self.request(features, keys));
        Box::pin(async move {
            let r = client
                .get_online_features(&l)
                .await
                .map_err(|e| e.to_string())?;
            Ok((0..r.row_count())
                .map(|row| (0..r.column_count()).map(|c| r.f64(row, c)).collect())
                .collect())
        })
    }
}
