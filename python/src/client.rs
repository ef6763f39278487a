//! The `Client` class: one smart client (connections, cluster map, schema, session
//! watermarks) shared by every call, blocking or asyncio.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use quiver_client::export::{ExportOptions, TimeUnit};
use quiver_client::{Hedging, Lookup, LookupResult, Watermarks};
use quiver_proto::transport::{Credentials, TlsClientSettings, read_token_file};

use crate::errors::{client_error, export_error, invalid};
use crate::response::Response;
use crate::values;

/// The runtime every call runs on (the one asyncio awaitables are driven by too).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// The process that started the runtime.
static RUNTIME_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Refuses to run in a process forked after the runtime started: the fork has none of
/// its threads, so every call would wait for ever. Called before anything touches it.
fn same_process() -> PyResult<()> {
    let pid = std::process::id();
    let owner = *RUNTIME_PID.get_or_init(|| pid);
    if owner == pid {
        return Ok(());
    }
    Err(crate::errors::raise(
        "failed_precondition",
        format!(
            "quiver's client runtime was started in process {owner} and this is process \
             {pid}, forked from it: a fork has none of its threads. Create clients only \
             after forking (e.g. gunicorn without --preload, or in a post_fork hook)"
        ),
    ))
}

/// Runs `fut` to completion with the GIL released.
fn block<T: Send>(py: Python<'_>, fut: impl Future<Output = T> + Send) -> T {
    py.detach(|| runtime().block_on(fut))
}

/// Runs `fut` as a task of the runtime and waits for its result with the GIL released.
/// Lookups go this way: their wake-ups (the connection's tasks, the answer) then stay
/// between the runtime's own threads, and the calling thread is woken once, at the end —
/// `block_on` from a foreign thread pays a cross-thread wake-up at every step.
fn spawn_block<T: Send + 'static>(
    py: Python<'_>,
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    let task = runtime().spawn(fut);
    py.detach(|| {
        runtime()
            .block_on(task)
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    })
}

/// A connection to a quiver cluster (see `quiver.Client` for the documented API).
#[pyclass(module = "quiver._quiver", frozen)]
pub struct Client {
    inner: quiver_client::Client,
    /// What the client presents (token, TLS): also what an export through one node
    /// presents to that node.
    credentials: Credentials,
}

/// A lookup's arguments, as `quiver.Client` normalises them.
#[allow(clippy::too_many_arguments)]
fn lookup(
    features: Vec<String>,
    feature_service: Option<String>,
    keys: &Bound<'_, PyAny>,
    min_watermark: Option<&str>,
    as_of: Option<i64>,
    as_of_per_key: Option<Vec<i64>>,
    exclude_late_arrivals: bool,
    event_times: bool,
    deadline_secs: Option<f64>,
) -> PyResult<Lookup> {
    let mut l = match feature_service {
        Some(s) if !features.is_empty() => {
            return Err(invalid(format!(
                "give features or feature_service {s:?}, not both"
            )));
        }
        Some(s) => Lookup::feature_service(s),
        None => Lookup::features(features),
    };
    // A dict `{entity: [keys]}`: features spanning entities, one key per entity per row.
    match keys.cast::<PyDict>() {
        Ok(per_entity) => {
            for (entity, entity_keys) in per_entity.iter() {
                let entity: String = entity
                    .extract()
                    .map_err(|_| invalid("keys per entity: the dict's keys are entity names"))?;
                l = l.entity_keys_of(entity, values::keys(&entity_keys)?);
            }
        }
        Err(_) => l = l.keys(values::keys(keys)?),
    }
    l = l.event_times(event_times);
    if let Some(token) = min_watermark {
        let wm: Watermarks = token
            .parse()
            .map_err(|e| invalid(format!("min_watermarks: {e}")))?;
        l = l.min_watermarks(&wm);
    }
    match (as_of, as_of_per_key) {
        (Some(_), Some(_)) => return Err(invalid("give as_of for all keys or per key, not both")),
        (Some(t), None) => l = l.as_of_micros(t),
        (None, Some(ts)) => l = l.as_of_per_key(ts),
        (None, None) if exclude_late_arrivals => {
            return Err(invalid("exclude_late_arrivals needs as_of"));
        }
        (None, None) => {}
    }
    if exclude_late_arrivals {
        l = l.exclude_late_arrivals(true);
    }
    if let Some(d) = deadline_secs {
        l = l.deadline(duration("deadline", d)?);
    }
    Ok(l)
}

fn duration(what: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(format!(
                "{what} must be a positive number of seconds, not {secs}"
            ))
        })
}

/// Looks up `l`, split into lookups of at most the cluster's `max_batch_keys` keys (at
/// most 4 in flight) and joined back in key order when it is larger.
async fn lookup_all(
    client: quiver_client::Client,
    l: Lookup,
) -> Result<LookupResult, quiver_client::ClientError> {
    let mut parts = l.split(client.max_batch_keys());
    if parts.len() == 1 {
        let one = parts.pop().expect("one part");
        return client.get_online_features(&one).await;
    }
    let calls = parts.into_iter().map(|part| {
        let client = client.clone();
        async move { client.get_online_features(&part).await }
    });
    let answers: Vec<LookupResult> = futures::stream::iter(calls)
        .buffered(4)
        .try_collect()
        .await?;
    LookupResult::concat(answers)
}

impl Client {
    /// Reads and types `rows` against `view`'s push schema, then pushes them.
    async fn push_rows(
        client: quiver_client::Client,
        view: String,
        rows: Vec<values::RawRow>,
    ) -> PyResult<String> {
        if rows.is_empty() {
            return Err(invalid(format!("push to {view:?} has no rows")));
        }
        let schema = client.push_schema(&view).await.map_err(client_error)?;
        let mut rows = values::push_rows(&view, &schema, rows).map_err(invalid)?;
        // Batches above the cluster's limit go as several pushes, in order; the token
        // covers them all.
        let per_push = (schema.max_push_rows as usize).max(1);
        let mut wm = Watermarks::new();
        while !rows.is_empty() {
            let rest = rows.split_off(per_push.min(rows.len()));
            wm.merge(&client.push(&view, rows).await.map_err(client_error)?);
            rows = rest;
        }
        Ok(wm.to_string())
    }
}

#[pymethods]
impl Client {
    /// Connects through `seeds` (`host:port`; any node) and reads the cluster map and
    /// the registry.
    #[new]
    #[pyo3(signature = (seeds, *, token=None, token_file=None, tls=false, tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None, deadline_secs=None, hedge_after_secs=None, connect_to=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        seeds: Vec<String>,
        token: Option<String>,
        token_file: Option<PathBuf>,
        tls: bool,
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_server_name: Option<String>,
        deadline_secs: Option<f64>,
        hedge_after_secs: Option<f64>,
        connect_to: Option<Vec<(String, String)>>,
    ) -> PyResult<Self> {
        same_process()?;
        if seeds.is_empty() {
            return Err(invalid(
                "seeds is empty: give at least one node's host:port",
            ));
        }
        let mut b = quiver_client::Client::builder().seeds(seeds);
        let mut credentials = Credentials::none();
        match (token, token_file) {
            (Some(_), Some(_)) => return Err(invalid("give token or token_file, not both")),
            (Some(t), None) => credentials.token = Some(t),
            (None, Some(f)) => {
                credentials.token = Some(read_token_file(&f).map_err(|e| invalid(e.to_string()))?);
            }
            (None, None) => {}
        }
        if let Some(t) = &credentials.token {
            b = b.token(t.clone());
        }
        if tls || tls_ca.is_some() || tls_cert.is_some() || tls_key.is_some() {
            let settings = TlsClientSettings::from_files(
                tls_ca.as_deref(),
                tls_cert.as_deref(),
                tls_key.as_deref(),
                tls_server_name,
            )
            .map_err(|e| invalid(e.to_string()))?;
            credentials.tls = Some(settings.clone());
            b = b.tls(settings);
        }
        if let Some(d) = deadline_secs {
            b = b.deadline(duration("deadline", d)?);
        }
        if let Some(h) = hedge_after_secs {
            b = b.hedging(Hedging::Fixed(duration("hedge_after", h)?));
        }
        for (advertised, reachable) in connect_to.unwrap_or_default() {
            b = b.connect_to(advertised, reachable);
        }
        let inner = block(py, async move { b.build().await }).map_err(client_error)?;
        Ok(Client { inner, credentials })
    }

    /// Looks up features; blocks (without the GIL) until the answer or the deadline.
    #[pyo3(signature = (features, feature_service, keys, *, min_watermark=None, as_of=None, as_of_per_key=None, exclude_late_arrivals=false, event_times=false, deadline_secs=None))]
    #[allow(clippy::too_many_arguments)]
    fn get_online_features(
        &self,
        py: Python<'_>,
        features: Vec<String>,
        feature_service: Option<String>,
        keys: &Bound<'_, PyAny>,
        min_watermark: Option<&str>,
        as_of: Option<i64>,
        as_of_per_key: Option<Vec<i64>>,
        exclude_late_arrivals: bool,
        event_times: bool,
        deadline_secs: Option<f64>,
    ) -> PyResult<Response> {
        same_process()?;
        let l = lookup(
            features,
            feature_service,
            keys,
            min_watermark,
            as_of,
            as_of_per_key,
            exclude_late_arrivals,
            event_times,
            deadline_secs,
        )?;
        let result = spawn_block(py, lookup_all(self.inner.clone(), l)).map_err(client_error)?;
        Ok(Response { result })
    }

    /// As `get_online_features`, as an asyncio awaitable.
    #[pyo3(signature = (features, feature_service, keys, *, min_watermark=None, as_of=None, as_of_per_key=None, exclude_late_arrivals=false, event_times=false, deadline_secs=None))]
    #[allow(clippy::too_many_arguments)]
    fn get_online_features_async<'py>(
        &self,
        py: Python<'py>,
        features: Vec<String>,
        feature_service: Option<String>,
        keys: &Bound<'py, PyAny>,
        min_watermark: Option<&str>,
        as_of: Option<i64>,
        as_of_per_key: Option<Vec<i64>>,
        exclude_late_arrivals: bool,
        event_times: bool,
        deadline_secs: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        same_process()?;
        let l = lookup(
            features,
            feature_service,
            keys,
            min_watermark,
            as_of,
            as_of_per_key,
            exclude_late_arrivals,
            event_times,
            deadline_secs,
        )?;
        let client = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let result = lookup_all(client, l).await.map_err(client_error)?;
            Ok(Response { result })
        })
    }

    /// Pushes `(key, event_time_micros, {field: value}, delete)` rows into `view`;
    /// returns the watermark token that makes a later read see them.
    fn push(&self, py: Python<'_>, view: String, rows: &Bound<'_, PyAny>) -> PyResult<String> {
        same_process()?;
        let rows = values::raw_rows(rows)?;
        let client = self.inner.clone();
        block(py, Self::push_rows(client, view, rows))
    }

    /// As `push`, as an asyncio awaitable.
    fn push_async<'py>(
        &self,
        py: Python<'py>,
        view: String,
        rows: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        same_process()?;
        let rows = values::raw_rows(rows)?;
        let client = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, Self::push_rows(client, view, rows))
    }

    /// The registry now: entities, views (features and types), feature services, limits.
    fn registry<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        same_process()?;
        let s = block(py, self.inner.registry()).map_err(client_error)?;
        let d = PyDict::new(py);
        d.set_item("registry_version", s.registry_version)?;
        let entities = PyList::empty(py);
        for e in &s.entities {
            let x = PyDict::new(py);
            x.set_item("name", &e.name)?;
            x.set_item("key_type", &e.key_type)?;
            entities.append(x)?;
        }
        d.set_item("entities", entities)?;
        let views = PyList::empty(py);
        for v in &s.views {
            let x = PyDict::new(py);
            x.set_item("name", &v.name)?;
            x.set_item("version", v.version)?;
            x.set_item("entity", &v.entity)?;
            x.set_item("topic", &v.topic)?;
            x.set_item("ttl_micros", v.ttl_micros)?;
            let pairs = |fs: &[quiver_proto::v1::FeatureSchema]| -> Vec<(String, String)> {
                fs.iter()
                    .map(|f| (f.name.clone(), f.r#type.clone()))
                    .collect()
            };
            x.set_item("features", pairs(&v.features))?;
            x.set_item("push_fields", pairs(&v.push_fields))?;
            views.append(x)?;
        }
        d.set_item("views", views)?;
        let services = PyList::empty(py);
        for f in &s.feature_services {
            let x = PyDict::new(py);
            x.set_item("name", &f.name)?;
            x.set_item("features", f.features.clone())?;
            services.append(x)?;
        }
        d.set_item("feature_services", services)?;
        if let Some(l) = &s.limits {
            let x = PyDict::new(py);
            x.set_item("max_batch_keys", l.max_batch_keys)?;
            x.set_item("max_features_per_request", l.max_features_per_request)?;
            x.set_item("max_request_bytes", l.max_request_bytes)?;
            x.set_item("max_push_rows", l.max_push_rows)?;
            x.set_item("max_key_bytes", l.max_key_bytes)?;
            d.set_item("limits", x)?;
        }
        Ok(d)
    }

    /// A view's definition as JSON text.
    fn describe_view(&self, py: Python<'_>, name: String) -> PyResult<String> {
        same_process()?;
        block(py, self.inner.describe_view(&name)).map_err(client_error)
    }

    /// The cluster map: `{"epoch", "shards": [{"shard", "replicas": [(node, state)]}]}`.
    fn cluster_map<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        same_process()?;
        let map = block(py, self.inner.cluster_map()).map_err(client_error)?;
        let d = PyDict::new(py);
        d.set_item("epoch", map.epoch)?;
        let shards = PyList::empty(py);
        for s in &map.shards {
            let x = PyDict::new(py);
            x.set_item("shard", s.shard)?;
            let replicas: Vec<(u64, String)> = s
                .replicas
                .iter()
                .map(|r| {
                    let state = quiver_proto::v1::ReplicaStateProto::try_from(r.state)
                        .map_or("UNKNOWN", |st| st.as_str_name());
                    (r.node_id, state.to_owned())
                })
                .collect();
            x.set_item("replicas", replicas)?;
            shards.append(x)?;
        }
        d.set_item("shards", shards)?;
        Ok(d)
    }

    /// The session's watermark token (the highest state this client has read).
    fn session_watermark(&self) -> String {
        self.inner.session_watermarks().to_string()
    }

    /// Counters since the client was built.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("requests", s.requests)?;
        d.set_item("failed_requests", s.failed_requests)?;
        d.set_item("sub_requests", s.sub_requests)?;
        d.set_item("retries", s.retries)?;
        d.set_item("hedges", s.hedges)?;
        d.set_item("hedge_wins", s.hedge_wins)?;
        d.set_item("behind", s.behind)?;
        d.set_item("wrong_shard", s.wrong_shard)?;
        d.set_item("map_refreshes", s.map_refreshes)?;
        Ok(d)
    }

    /// Exports the point-in-time training set of the label file `labels` (Parquet or
    /// CSV) to the Parquet file `out`; `progress(rows)` is called after each chunk.
    /// Returns `(rows, features)`. With `through_node` (a node's `host:port`), the whole
    /// export streams through that node's `ExportFeatures` instead of the smart client.
    #[pyo3(signature = (labels, out, features, feature_service, *, key_column, time_column, time_unit="us", int_keys=false, exclude_late_arrivals=true, status_columns=false, chunk_rows=1000, parallel=4, progress=None, through_node=None))]
    #[allow(clippy::too_many_arguments)]
    fn export(
        &self,
        py: Python<'_>,
        labels: PathBuf,
        out: PathBuf,
        features: Vec<String>,
        feature_service: Option<String>,
        key_column: String,
        time_column: String,
        time_unit: &str,
        int_keys: bool,
        exclude_late_arrivals: bool,
        status_columns: bool,
        chunk_rows: usize,
        parallel: usize,
        progress: Option<Py<PyAny>>,
        through_node: Option<String>,
    ) -> PyResult<(u64, usize)> {
        same_process()?;
        let time_unit: TimeUnit = time_unit
            .parse()
            .map_err(|e: String| invalid(format!("time_unit: {e}")))?;
        let opts = ExportOptions {
            features,
            feature_service,
            key_column,
            time_column,
            time_unit,
            int_keys,
            exclude_late_arrivals,
            status_columns,
            chunk_rows,
            parallel,
        };
        let (client, credentials) = (&self.inner, &self.credentials);
        let report = move |rows| {
            if let Some(cb) = &progress {
                // A failing callback only loses progress reports, never the export.
                Python::attach(|py| {
                    let _ = cb.call1(py, (rows,));
                });
            }
        };
        let summary = block(py, async move {
            match &through_node {
                None => quiver_client::export::export(client, &labels, &out, &opts, report).await,
                Some(addr) => {
                    quiver_client::export::export_through_node(
                        credentials,
                        addr,
                        &labels,
                        &out,
                        &opts,
                        report,
                    )
                    .await
                }
            }
        })
        .map_err(export_error)?;
        Ok((summary.rows, summary.features))
    }
}
