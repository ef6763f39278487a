//! The systems a lookup load is offered to, behind one interface: quiver (through the
//! smart client), its peers — Redis with pipelined HMGET, Feast's feature server on a
//! Redis online store — and the floor: a gRPC echo of the same payload sizes and a raw
//! RocksDB multi-get of the same rows.

pub mod echo;
pub mod feast;
pub mod http;
pub mod quiver;
pub mod redis;
pub mod rocks;

use std::future::Future;
use std::pin::Pin;

use crate::env::Dataset;

/// One request's outcome (errors are counted, not fatal).
pub type LookupFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Values fetched for checking: `[key][feature]`, `None` when missing.
pub type Fetched = Vec<Vec<Option<f64>>>;

/// A system under load.
pub trait System: Send + Sync {
    /// Name in reports (`quiver`, `redis`, `feast`, `echo`, `rocksdb`).
    fn name(&self) -> &'static str;

    /// Processes whose CPU time is the system's cost (descendants included); empty when
    /// it runs inside the bench process.
    fn server_pids(&self) -> Vec<u32>;

    /// Looks up every feature of the `features`-feature view for `keys`; checks only the
    /// answer's shape (the load must not be limited by the client checking values).
    fn lookup(&self, features: u32, keys: &[u32]) -> LookupFuture;

    /// Fetches the values, for [`verify`].
    fn fetch(
        &self,
        features: u32,
        keys: &[u32],
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, String>> + Send>>;
}

/// Checks that `system` answers `keys` of the `features`-feature view with the dataset's
/// values (run before measuring, so a fast wrong answer cannot win).
///
/// # Errors
/// Names the first wrong or missing value.
pub async fn verify(
    system: &dyn System,
    ds: &Dataset,
    features: u32,
    keys: &[u32],
) -> anyhow::Result<()> {
    let got = system
        .fetch(features, keys)
        .await
        .map_err(|e| anyhow::anyhow!("{}: fetch for verification: {e}", system.name()))?;
    anyhow::ensure!(
        got.len() == keys.len(),
        "{}: {} rows for {} keys",
        system.name(),
        got.len(),
        keys.len()
    );
    for (row, k) in got.iter().zip(keys) {
        anyhow::ensure!(
            row.len() == features as usize,
            "{}: {} features for key {k}, expected {features}",
            system.name(),
            row.len()
        );
        for (i, v) in row.iter().enumerate() {
            let want = ds.value(*k, i as u32);
            anyhow::ensure!(
                *v == Some(want),
                "{}: key {k} feature f{i} of view bench_f{features}: got {v:?}, expected {want}",
                system.name()
            );
        }
    }
    Ok(())
}
