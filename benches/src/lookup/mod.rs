//! `quiver-bench lookup`: the same lookup workload offered to quiver, its peers and the
//! floor, case by case (batch size × features per entity): for each system the highest
//! rate at which p99 stays within the SLO, latency at half that rate, p99 at quiver's
//! half-rate load (equal offered load), and server CPU so results read per core.

pub mod search;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use serde::Serialize;

use crate::env::dataset::view;
use crate::env::machine::rss_bytes;
use crate::env::{BenchCluster, ClusterSpec, Dataset, KeyChoice};
use crate::systems::{self, System};
pub use search::{Criteria, SearchResult, SearchSpec, Step, Workload};

/// One case: keys per request × features per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Case {
    /// Keys per request.
    pub batch: u32,
    /// Features per key.
    pub features: u32,
}

impl std::str::FromStr for Case {
    type Err = String;

    /// `BxF`, e.g. `100x50`.
    fn from_str(s: &str) -> Result<Case, String> {
        let (b, f) = s
            .split_once('x')
            .ok_or_else(|| format!("case {s:?}: expected BATCHxFEATURES, e.g. 100x50"))?;
        let parse = |v: &str, what: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("case {s:?}: {what} {v:?} is not a positive integer"))
        };
        Ok(Case {
            batch: parse(b, "batch")?,
            features: parse(f, "features")?,
        })
    }
}

/// Parameters of a lookup run (recorded in the report).
#[derive(Debug, Clone, Serialize)]
pub struct LookupParams {
    /// The quiver cluster.
    pub cluster: ClusterSpec,
    /// The data.
    pub dataset: Dataset,
    /// `uniform` or `zipf:S`.
    pub key_choice: String,
    /// The cases, in order.
    pub cases: Vec<Case>,
    /// Systems measured, quiver first.
    pub systems: Vec<String>,
    /// Pass criteria.
    pub criteria: Criteria,
    /// Search shape.
    pub search: SearchSpec,
    /// Redis client connections.
    pub redis_connections: usize,
    /// Feast server worker processes.
    pub feast_workers: usize,
    /// Also measure quiver through a client with its row cache (`quiver-cached`).
    pub client_cache: Option<ClientCacheSpec>,
    /// Also measure the six windowed features of an aggregation view over each case's
    /// topic (`quiver-aggs`; needs `cluster.aggregations`).
    pub aggregates: bool,
    /// Older records per entity loaded before the newest one (event times spread over six
    /// days): windows and histories hold more than one record.
    pub history_events: u32,
    /// Restart every node after the load, before measuring.
    pub restart_after_load: bool,
    /// Each step writes its requests' latencies to a CSV file here (when in the step the
    /// slow ones were); `None`: none are kept.
    pub latency_log: Option<PathBuf>,
}

/// The row cache of the `quiver-cached` system.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClientCacheSpec {
    /// Rows kept at most.
    pub rows: usize,
    /// Cache TTL, ms.
    pub ttl_ms: u64,
}

/// Storage facts measured after loading.
#[derive(Debug, Clone, Serialize)]
pub struct StorageFacts {
    /// Features stored per replica (entities × features of every view).
    pub features_per_replica: u64,
    /// Bytes in RocksDB on all nodes (SST + memtables), every replica.
    pub node_bytes: f64,
    /// `node_bytes / (R × features_per_replica)`.
    pub bytes_per_feature: f64,
    /// Resident memory of each node after loading, bytes.
    pub node_rss_bytes: Vec<u64>,
}

/// One system in one case.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// System name.
    pub system: String,
    /// Cores its server processes used with no load (subtracted from every step's).
    pub idle_cores: Option<f64>,
    /// The search.
    pub search: SearchResult,
    /// A run at quiver's reference load: half quiver's max rate at the SLO or, when quiver
    /// never met the SLO, the lowest rate it was offered. For quiver itself: `None`, or
    /// that lowest-rate step when it never met the SLO.
    pub at_quiver_load: Option<Step>,
    /// For `quiver-cached`: the share of keys served from the client's cache during this
    /// case's runs.
    pub cache_hit_rate: Option<f64>,
}

/// One case's results.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// quiver's request and response sizes, bytes (the echo floor's payloads).
    pub request_bytes: usize,
    /// Response bytes summed over the nodes answering.
    pub response_bytes: usize,
    /// Per system, in the order measured.
    pub systems: Vec<SystemResult>,
}

impl CaseResult {
    /// The result of `system`, if measured.
    pub fn get(&self, system: &str) -> Option<&SystemResult> {
        self.systems.iter().find(|s| s.system == system)
    }
}

/// The lookup report (`lookup.json`, schema `quiver-bench.lookup.v1`).
#[derive(Debug, Clone, Serialize)]
pub struct LookupReport {
    /// Schema id.
    pub schema: &'static str,
    /// Run facts.
    pub run: crate::report::RunInfo,
    /// Parameters.
    pub params: LookupParams,
    /// Storage facts.
    pub storage: StorageFacts,
    /// Results per case.
    pub cases: Vec<CaseResult>,
}

/// The systems of a run, kept alive (their processes) for its length.
struct Systems {
    list: Vec<Arc<dyn System>>,
    quiver: Arc<systems::quiver::Quiver>,
    cached: Option<Arc<systems::quiver::Quiver>>,
    aggs: Option<Arc<systems::quiver::Quiver>>,
    echo: Option<Arc<systems::echo::Echo>>,
    _redis: Option<systems::redis::RedisServer>,
}

async fn start_systems(
    p: &LookupParams,
    cluster: &BenchCluster,
    work: &Path,
    features: &[u32],
) -> anyhow::Result<Systems> {
    let quiver = Arc::new(
        systems::quiver::Quiver::connect(cluster.endpoints(), features, cluster.node_pids())
            .await?,
    );
    let mut list: Vec<Arc<dyn System>> = vec![quiver.clone()];
    let mut cached = None;
    if let Some(c) = p.client_cache {
        let config = quiver_client::CacheConfig {
            max_entries: c.rows,
            ttl: std::time::Duration::from_millis(c.ttl_ms),
            ..Default::default()
        };
        let q = Arc::new(
            systems::quiver::Quiver::connect_with(
                cluster.endpoints(),
                features,
                cluster.node_pids(),
                Some(config),
            )
            .await?,
        );
        list.push(q.clone());
        cached = Some(q);
    }
    let mut aggs = None;
    if p.aggregates {
        let q = Arc::new(
            systems::quiver::Quiver::connect_aggregates(
                cluster.endpoints(),
                features,
                cluster.node_pids(),
            )
            .await?,
        );
        list.push(q.clone());
        aggs = Some(q);
    }
    if p.cluster.history {
        list.push(Arc::new(
            systems::quiver::Quiver::connect_history(
                cluster.endpoints(),
                features,
                cluster.node_pids(),
            )
            .await?,
        ));
    }
    let mut echo = None;
    let mut redis_server = None;
    let wants = |s: &str| p.systems.iter().any(|x| x == s);
    if wants("echo") {
        let e = Arc::new(systems::echo::Echo::start(&std::env::current_exe()?).await?);
        echo = Some(e.clone());
        list.push(e);
    }
    if wants("rocksdb") {
        let (dir, ds, f) = (work.join("rocksdb-floor"), p.dataset, features.to_vec());
        let cache = p.cluster.block_cache_mib as usize;
        let r =
            tokio::task::spawn_blocking(move || systems::rocks::Rocks::load(&dir, cache, &ds, &f))
                .await??;
        list.push(Arc::new(r));
    }
    if wants("redis") || wants("feast") {
        let server = systems::redis::RedisServer::start()?;
        if wants("redis") {
            let r = systems::redis::Redis::load(&server, p.redis_connections, &p.dataset, features)
                .await?;
            list.push(Arc::new(r));
        }
        if wants("feast") {
            let (dir, port, ds, f, workers) = (
                work.to_path_buf(),
                server.port,
                p.dataset,
                features.to_vec(),
                p.feast_workers,
            );
            let feast = tokio::task::spawn_blocking(move || {
                systems::feast::Feast::start(&dir, port, &ds, &f, workers)
            })
            .await??;
            list.push(Arc::new(feast));
        }
        redis_server = Some(server);
    }
    Ok(Systems {
        list,
        quiver,
        cached,
        aggs,
        echo,
        _redis: redis_server,
    })
}

async fn storage_facts(cluster: &BenchCluster, p: &LookupParams, features: &[u32]) -> StorageFacts {
    let nodes = cluster.node_pids();
    let mut bytes = 0.0;
    for i in 0..nodes.len() {
        // A node refreshes its storage gauges in a periodic pass (every 5 s) and counts
        // the passes: once the count moves, the gauges are from after the load.
        let passes = |c: &BenchCluster| c.metric_sum(i, "quiver_storage_samples_total").ok();
        let before = passes(cluster);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while passes(cluster) == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        for m in ["quiver_storage_sst_bytes", "quiver_storage_memtable_bytes"] {
            bytes += cluster.metric_sum(i, m).unwrap_or(0.0);
        }
    }
    let per_replica =
        u64::from(p.dataset.entities) * features.iter().map(|f| u64::from(*f)).sum::<u64>();
    let r = f64::from(p.cluster.replication.min(p.cluster.nodes));
    StorageFacts {
        features_per_replica: per_replica,
        node_bytes: bytes,
        bytes_per_feature: bytes / (r * per_replica.max(1) as f64),
        node_rss_bytes: nodes.iter().map(|pid| rss_bytes(*pid)).collect(),
    }
}

/// Runs the lookup benchmark; working files (node data, Feast's repository) under `work`.
///
/// # Errors
/// When a system cannot be started, loaded or verified.
pub async fn run(p: LookupParams, work: &Path) -> anyhow::Result<LookupReport> {
    let started = crate::report::RunInfo::start();
    let mut features: Vec<u32> = p.cases.iter().map(|c| c.features).collect();
    features.sort_unstable();
    features.dedup();
    let keys = KeyChoice::parse(&p.key_choice, p.dataset.entities).map_err(anyhow::Error::msg)?;
    eprintln!(
        "starting a {}-node cluster (P = {}, R = {})",
        p.cluster.nodes, p.cluster.shards, p.cluster.replication
    );
    let mut cluster = BenchCluster::start(&p.cluster, &work.join("cluster"), &features).await?;
    let history = p.history_events;
    if history > 0 {
        cluster
            .load_history(&p.dataset, &features, history)
            .await
            .context("load the history the aggregation views count")?;
    }
    cluster
        .load(&p.dataset, &features)
        .await
        .context("load the cluster")?;
    if p.restart_after_load {
        eprintln!("restarting every node on its data");
        cluster.restart_all().await.context("restart the cluster")?;
    }
    let storage = storage_facts(&cluster, &p, &features).await;
    let sys = start_systems(&p, &cluster, work, &features).await?;
    let sample: Vec<u32> = (0..20)
        .map(|j| keys.entity(&p.dataset, u64::MAX - 1, j))
        .collect();
    for s in &sys.list {
        if s.name() == "echo" || s.name() == "quiver-aggs" {
            continue;
        }
        for f in &features {
            systems::verify(s.as_ref(), &p.dataset, *f, &sample).await?;
        }
    }
    if let Some(a) = &sys.aggs {
        for f in &features {
            a.verify_aggregates(&p.dataset, *f, &sample, history + 1)
                .await?;
        }
    }
    eprintln!("every system answers the dataset's values; measuring idle CPU, then load");
    let mut idle = Vec::new();
    for s in &sys.list {
        idle.push(search::idle_cores(s, 3.0).await);
    }
    let mut cases = Vec::new();
    for (ci, case) in p.cases.iter().enumerate() {
        let probe = keys.batch(&p.dataset, u64::MAX - 2, case.batch);
        let (request_bytes, response_bytes) = sys.quiver.wire_sizes(case.features, &probe).await?;
        if let Some(e) = &sys.echo {
            e.set_sizes(
                case.features,
                case.batch as usize,
                request_bytes,
                response_bytes,
            );
        }
        let w = Workload {
            ds: p.dataset,
            keys: keys.clone(),
            batch: case.batch,
            features: case.features,
            next_request: Arc::new(AtomicU64::new(0)),
            latency_log: p.latency_log.clone(),
        };
        let mut results = Vec::new();
        let mut quiver_half = None;
        for (s, idle) in sys.list.iter().zip(&idle) {
            let idle_cores = idle.unwrap_or(0.0);
            let label = format!(
                "[{}/{}] {}x{} {}",
                ci + 1,
                p.cases.len(),
                case.batch,
                case.features,
                s.name()
            );
            let on_step = |st: &Step| {
                eprintln!(
                    "{label:<28} {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {}{}",
                    st.offered_rate,
                    st.p50_ms,
                    st.p99_ms,
                    if st.passed { "pass" } else { "FAIL" },
                    if st.overloaded { " (overloaded)" } else { "" }
                );
            };
            let cache_before = sys
                .cached
                .as_ref()
                .filter(|_| s.name() == "quiver-cached")
                .map(|c| c.client().stats());
            let found = search::search(s, &w, &p.search, p.criteria, &on_step, idle_cores).await;
            let at_quiver_load = match quiver_half {
                Some(rate) if s.name() != "quiver" => {
                    let st = search::measure(
                        s,
                        &w,
                        rate,
                        p.search.measure_secs,
                        p.search.max_in_flight,
                        p.criteria,
                        idle_cores,
                    )
                    .await;
                    on_step(&st);
                    Some(st)
                }
                _ => None,
            };
            let mut at_quiver_load = at_quiver_load;
            if s.name() == "quiver" {
                // The load peers are compared at: half quiver's max rate at the SLO or,
                // when it never met the SLO, the lowest rate it was offered (that step is
                // quiver's own reference).
                if found.max_rate > 0.0 {
                    quiver_half = Some(found.max_rate / 2.0);
                } else {
                    at_quiver_load = found
                        .steps
                        .iter()
                        .min_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate))
                        .cloned();
                    quiver_half = at_quiver_load.as_ref().map(|st| st.offered_rate);
                }
            }
            let cache_hit_rate = cache_before.zip(sys.cached.as_ref()).map(|(b, c)| {
                let a = c.client().stats();
                let (hits, misses) = (a.cache_hits - b.cache_hits, a.cache_misses - b.cache_misses);
                hits as f64 / (hits + misses).max(1) as f64
            });
            results.push(SystemResult {
                system: s.name().to_string(),
                idle_cores: *idle,
                search: found,
                at_quiver_load,
                cache_hit_rate,
            });
        }
        cases.push(CaseResult {
            case: *case,
            request_bytes,
            response_bytes,
            systems: results,
        });
    }
    eprintln!(
        "quiver client: {:?}; broker {} and views {:?}",
        sys.quiver.client().stats(),
        cluster.bootstrap(),
        features.iter().map(|f| view(*f)).collect::<Vec<_>>()
    );
    drop(sys);
    drop(cluster);
    Ok(LookupReport {
        schema: "quiver-bench.lookup.v1",
        run: started.finish(),
        params: p,
        storage,
        cases,
    })
}

/// `work` unless given: a fresh directory under the system's temporary directory.
pub fn work_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("quiver-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
