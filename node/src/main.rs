//! `quiver-node`: runs a node, or (`quiver-node demo`) the embedded demo.
//!
//! Configuration layering: compiled defaults < `--config` TOML file < `QUIVER_*`
//! environment < flags. See `docs/CONFIG.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use quiver_node::config::NodeConfigFile;
use quiver_node::{Listeners, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

mod demo;

/// mimalloc instead of glibc's malloc: the lookup path allocates per column (response
/// arrays, names) and per request (tonic, h2); with glibc, malloc/free were ~12 % of a
/// 1 × 50 lookup's CPU, and mimalloc cut the node's CPU per such lookup by ~40 %
/// (jemalloc: about the same, at a much longer build). docs/PERFORMANCE.md has the runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "quiver-node", version, about = "quiver feature-serving node")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the embedded demo: an in-process mock Kafka cluster, nodes, sample data, lookups.
    Demo(demo::DemoArgs),
}

/// Overrides of config-file keys. Each flag also reads a `QUIVER_*` environment variable.
#[derive(Args)]
struct NodeArgs {
    /// TOML config file.
    #[arg(long, env = "QUIVER_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration (file, environment, flags, and the definition files it
    /// names), print a summary and exit: 0 if valid, non-zero with the error otherwise.
    #[arg(long)]
    check_config: bool,
    /// node_id
    #[arg(long, env = "QUIVER_NODE_ID")]
    node_id: Option<u64>,
    /// data_dir
    #[arg(long, env = "QUIVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// server.grpc_addr
    #[arg(long, env = "QUIVER_GRPC_ADDR")]
    grpc_addr: Option<String>,
    /// server.metrics_addr ("" disables)
    #[arg(long, env = "QUIVER_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// server.shutdown_grace, e.g. "10s"
    #[arg(long, env = "QUIVER_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    shutdown_grace: Option<Duration>,
    /// server.shutdown_delay, e.g. "5s"
    #[arg(long, env = "QUIVER_SHUTDOWN_DELAY", value_parser = humantime::parse_duration)]
    shutdown_delay: Option<Duration>,
    /// server.compress_responses (true | false)
    #[arg(long, env = "QUIVER_COMPRESS_RESPONSES")]
    compress_responses: Option<bool>,
    /// cluster.shard_count
    #[arg(long, env = "QUIVER_SHARD_COUNT")]
    shard_count: Option<u32>,
    /// cluster.partitioner: murmur2 | crc32
    #[arg(long, env = "QUIVER_PARTITIONER")]
    partitioner: Option<String>,
    /// cluster.shards, comma separated (empty: all)
    #[arg(long, env = "QUIVER_SHARDS", value_delimiter = ',')]
    shards: Option<Vec<u32>>,
    /// kafka.bootstrap_servers
    #[arg(long, env = "QUIVER_KAFKA_BOOTSTRAP_SERVERS")]
    kafka_bootstrap_servers: Option<String>,
    /// kafka.properties entry KEY=VALUE (repeatable)
    #[arg(
        long = "kafka-property",
        env = "QUIVER_KAFKA_PROPERTIES",
        value_delimiter = ';'
    )]
    kafka_properties: Vec<String>,
    /// kafka.dead_letter_topic ("" disables)
    #[arg(long, env = "QUIVER_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// ingest.max_batch_records
    #[arg(long, env = "QUIVER_INGEST_MAX_BATCH_RECORDS")]
    ingest_max_batch_records: Option<usize>,
    /// ingest.poll_timeout, e.g. "100ms"
    #[arg(long, env = "QUIVER_INGEST_POLL_TIMEOUT", value_parser = humantime::parse_duration)]
    ingest_poll_timeout: Option<Duration>,
    /// ingest.lag_refresh_interval
    #[arg(long, env = "QUIVER_INGEST_LAG_REFRESH_INTERVAL", value_parser = humantime::parse_duration)]
    ingest_lag_refresh_interval: Option<Duration>,
    /// ingest.gap_refetches (0: accept gaps in offsets at once)
    #[arg(long, env = "QUIVER_INGEST_GAP_REFETCHES")]
    ingest_gap_refetches: Option<u32>,
    /// storage.block_cache_mib
    #[arg(long, env = "QUIVER_BLOCK_CACHE_MIB")]
    block_cache_mib: Option<usize>,
    /// storage.row_cache_mib (0: no row cache)
    #[arg(long, env = "QUIVER_ROW_CACHE_MIB")]
    row_cache_mib: Option<usize>,
    /// storage.lookup_cache_mib (0: no lookup cache)
    #[arg(long, env = "QUIVER_LOOKUP_CACHE_MIB")]
    lookup_cache_mib: Option<usize>,
    /// storage.lookup_cache_fill_on_ingest (true | false)
    #[arg(long, env = "QUIVER_LOOKUP_CACHE_FILL_ON_INGEST")]
    lookup_cache_fill_on_ingest: Option<bool>,
    /// storage.write_buffer_mib
    #[arg(long, env = "QUIVER_WRITE_BUFFER_MIB")]
    write_buffer_mib: Option<usize>,
    /// storage.tombstone_retention
    #[arg(long, env = "QUIVER_TOMBSTONE_RETENTION", value_parser = humantime::parse_duration)]
    tombstone_retention: Option<Duration>,
    /// storage.ttl_sweep_interval ("0s" disables)
    #[arg(long, env = "QUIVER_TTL_SWEEP_INTERVAL", value_parser = humantime::parse_duration)]
    ttl_sweep_interval: Option<Duration>,
    /// limits.max_batch_keys
    #[arg(long, env = "QUIVER_MAX_BATCH_KEYS")]
    max_batch_keys: Option<usize>,
    /// limits.max_features_per_request
    #[arg(long, env = "QUIVER_MAX_FEATURES_PER_REQUEST")]
    max_features_per_request: Option<usize>,
    /// limits.max_request_bytes
    #[arg(long, env = "QUIVER_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// limits.max_concurrent_lookups
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_LOOKUPS")]
    max_concurrent_lookups: Option<usize>,
    /// limits.max_watermark_wait
    #[arg(long, env = "QUIVER_MAX_WATERMARK_WAIT", value_parser = humantime::parse_duration)]
    max_watermark_wait: Option<Duration>,
    /// limits.max_push_rows
    #[arg(long, env = "QUIVER_MAX_PUSH_ROWS")]
    max_push_rows: Option<usize>,
    /// registry.version_retention
    #[arg(long, env = "QUIVER_VERSION_RETENTION", value_parser = humantime::parse_duration)]
    version_retention: Option<Duration>,
    /// registry.definition_files (repeatable; replaces the file's list)
    #[arg(
        long = "definitions",
        env = "QUIVER_DEFINITIONS",
        value_delimiter = ','
    )]
    definitions: Vec<PathBuf>,
    /// control.enabled: run in cluster mode
    #[arg(long, env = "QUIVER_CONTROL_ENABLED")]
    control_enabled: Option<bool>,
    /// control.advertise_addr
    #[arg(long, env = "QUIVER_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// control.zone
    #[arg(long, env = "QUIVER_ZONE")]
    zone: Option<String>,
    /// control.initial_voters, comma separated "id@host:port"
    #[arg(long, env = "QUIVER_INITIAL_VOTERS", value_delimiter = ',')]
    initial_voters: Option<Vec<String>>,
    /// control.seeds, comma separated "host:port"
    #[arg(long, env = "QUIVER_SEEDS", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// control.replication_factor
    #[arg(long, env = "QUIVER_REPLICATION_FACTOR")]
    replication_factor: Option<u32>,
    /// control.voters (1, 3 or 5)
    #[arg(long, env = "QUIVER_VOTERS")]
    voters: Option<usize>,
    /// control.heartbeat_interval
    #[arg(long, env = "QUIVER_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// control.dead_after
    #[arg(long, env = "QUIVER_DEAD_AFTER", value_parser = humantime::parse_duration)]
    dead_after: Option<Duration>,
    /// control.snapshot_every
    #[arg(long, env = "QUIVER_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// limits.max_key_bytes
    #[arg(long, env = "QUIVER_MAX_KEY_BYTES")]
    max_key_bytes: Option<usize>,
    /// limits.max_string_bytes
    #[arg(long, env = "QUIVER_MAX_STRING_BYTES")]
    max_string_bytes: Option<usize>,
    /// limits.max_vector_len
    #[arg(long, env = "QUIVER_MAX_VECTOR_LEN")]
    max_vector_len: Option<usize>,
    /// limits.max_concurrent_requests_per_connection
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_REQUESTS_PER_CONNECTION")]
    max_concurrent_requests_per_connection: Option<usize>,
    /// limits.max_inflight_requests
    #[arg(long, env = "QUIVER_MAX_INFLIGHT_REQUESTS")]
    max_inflight_requests: Option<usize>,
    /// limits.max_queued_lookups
    #[arg(long, env = "QUIVER_MAX_QUEUED_LOOKUPS")]
    max_queued_lookups: Option<usize>,
    /// limits.max_push_rows_per_second (0: unlimited)
    #[arg(long, env = "QUIVER_MAX_PUSH_ROWS_PER_SECOND")]
    max_push_rows_per_second: Option<u32>,
    /// tls.cert_file
    #[arg(long, env = "QUIVER_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// tls.key_file
    #[arg(long, env = "QUIVER_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// tls.ca_file
    #[arg(long, env = "QUIVER_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// tls.client_auth: none | optional | required
    #[arg(long, env = "QUIVER_TLS_CLIENT_AUTH")]
    tls_client_auth: Option<String>,
    /// tls.server_name
    #[arg(long, env = "QUIVER_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// tls.reload_interval ("0s" disables)
    #[arg(long, env = "QUIVER_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    tls_reload_interval: Option<Duration>,
    /// auth.enabled (false only for demos and trusted test rigs)
    #[arg(long, env = "QUIVER_AUTH_ENABLED")]
    auth_enabled: Option<bool>,
    /// auth.bootstrap_token_file
    #[arg(long, env = "QUIVER_AUTH_BOOTSTRAP_TOKEN_FILE")]
    auth_bootstrap_token_file: Option<PathBuf>,
    /// auth.cluster_token_file
    #[arg(long, env = "QUIVER_AUTH_CLUSTER_TOKEN_FILE")]
    auth_cluster_token_file: Option<PathBuf>,
    /// auth.identities entry NAME=ROLE[:VIEW,VIEW...] (repeatable; replaces the file's list)
    #[arg(
        long = "auth-identity",
        env = "QUIVER_AUTH_IDENTITIES",
        value_delimiter = ';'
    )]
    auth_identities: Vec<String>,
    /// log.format: plain | json
    #[arg(long, env = "QUIVER_LOG_FORMAT")]
    log_format: Option<String>,
    /// log.level (RUST_LOG wins)
    #[arg(long, env = "QUIVER_LOG_LEVEL")]
    log_level: Option<String>,
}

/// Applies every given override to the file's values (the one place layering happens).
fn apply_overrides(f: &mut NodeConfigFile, a: NodeArgs) -> anyhow::Result<()> {
    fn set<T>(slot: &mut T, v: Option<T>) {
        if let Some(v) = v {
            *slot = v;
        }
    }
    set(&mut f.node_id, a.node_id);
    set(&mut f.data_dir, a.data_dir);
    set(&mut f.server.grpc_addr, a.grpc_addr);
    set(&mut f.server.metrics_addr, a.metrics_addr);
    set(&mut f.server.shutdown_grace, a.shutdown_grace);
    set(&mut f.server.shutdown_delay, a.shutdown_delay);
    set(&mut f.server.compress_responses, a.compress_responses);
    set(&mut f.cluster.shard_count, a.shard_count);
    set(&mut f.cluster.partitioner, a.partitioner);
    set(&mut f.cluster.shards, a.shards);
    set(&mut f.kafka.bootstrap_servers, a.kafka_bootstrap_servers);
    for kv in a.kafka_properties {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--kafka-property {kv:?} is not KEY=VALUE"))?;
        f.kafka
            .properties
            .insert(k.trim().to_owned(), v.trim().to_owned());
    }
    set(&mut f.kafka.dead_letter_topic, a.dead_letter_topic);
    set(&mut f.ingest.max_batch_records, a.ingest_max_batch_records);
    set(&mut f.ingest.poll_timeout, a.ingest_poll_timeout);
    set(
        &mut f.ingest.lag_refresh_interval,
        a.ingest_lag_refresh_interval,
    );
    set(&mut f.ingest.gap_refetches, a.ingest_gap_refetches);
    set(&mut f.storage.block_cache_mib, a.block_cache_mib);
    set(&mut f.storage.row_cache_mib, a.row_cache_mib);
    set(&mut f.storage.lookup_cache_mib, a.lookup_cache_mib);
    set(
        &mut f.storage.lookup_cache_fill_on_ingest,
        a.lookup_cache_fill_on_ingest,
    );
    set(&mut f.storage.write_buffer_mib, a.write_buffer_mib);
    set(&mut f.storage.tombstone_retention, a.tombstone_retention);
    set(&mut f.storage.ttl_sweep_interval, a.ttl_sweep_interval);
    set(&mut f.limits.max_batch_keys, a.max_batch_keys);
    set(
        &mut f.limits.max_features_per_request,
        a.max_features_per_request,
    );
    set(&mut f.limits.max_request_bytes, a.max_request_bytes);
    set(
        &mut f.limits.max_concurrent_lookups,
        a.max_concurrent_lookups,
    );
    set(&mut f.limits.max_watermark_wait, a.max_watermark_wait);
    set(&mut f.limits.max_push_rows, a.max_push_rows);
    set(&mut f.registry.version_retention, a.version_retention);
    if !a.definitions.is_empty() {
        f.registry.definition_files = a.definitions;
    }
    set(&mut f.control.enabled, a.control_enabled);
    set(&mut f.control.advertise_addr, a.advertise_addr);
    set(&mut f.control.zone, a.zone);
    set(&mut f.control.initial_voters, a.initial_voters);
    set(&mut f.control.seeds, a.seeds);
    set(&mut f.control.replication_factor, a.replication_factor);
    set(&mut f.control.voters, a.voters);
    set(&mut f.control.heartbeat_interval, a.heartbeat_interval);
    set(&mut f.control.dead_after, a.dead_after);
    set(&mut f.control.snapshot_every, a.snapshot_every);
    set(&mut f.limits.max_key_bytes, a.max_key_bytes);
    set(&mut f.limits.max_string_bytes, a.max_string_bytes);
    set(&mut f.limits.max_vector_len, a.max_vector_len);
    set(
        &mut f.limits.max_concurrent_requests_per_connection,
        a.max_concurrent_requests_per_connection,
    );
    set(&mut f.limits.max_inflight_requests, a.max_inflight_requests);
    set(&mut f.limits.max_queued_lookups, a.max_queued_lookups);
    set(
        &mut f.limits.max_push_rows_per_second,
        a.max_push_rows_per_second,
    );
    set(&mut f.tls.cert_file, a.tls_cert_file);
    set(&mut f.tls.key_file, a.tls_key_file);
    set(&mut f.tls.ca_file, a.tls_ca_file);
    set(&mut f.tls.client_auth, a.tls_client_auth);
    set(&mut f.tls.server_name, a.tls_server_name);
    set(&mut f.tls.reload_interval, a.tls_reload_interval);
    set(&mut f.auth.enabled, a.auth_enabled);
    set(
        &mut f.auth.bootstrap_token_file,
        a.auth_bootstrap_token_file,
    );
    set(&mut f.auth.cluster_token_file, a.auth_cluster_token_file);
    if !a.auth_identities.is_empty() {
        f.auth.identities = a
            .auth_identities
            .iter()
            .map(|e| parse_identity(e))
            .collect::<anyhow::Result<_>>()?;
    }
    set(&mut f.log.format, a.log_format);
    set(&mut f.log.level, a.log_level);
    Ok(())
}

/// `NAME=ROLE[:VIEW,VIEW...]` → an `[[auth.identities]]` entry.
fn parse_identity(e: &str) -> anyhow::Result<quiver_node::config::IdentitySection> {
    let (name, rest) = e
        .split_once('=')
        .with_context(|| format!("--auth-identity {e:?} is not NAME=ROLE[:VIEW,...]"))?;
    let (role, views) = rest.split_once(':').unwrap_or((rest, ""));
    Ok(quiver_node::config::IdentitySection {
        name: name.trim().to_owned(),
        role: role.trim().to_owned(),
        views: views
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (the node drains and stops in
/// order); a second one, or the drain overrunning `limit`, ends the process at once.
async fn handle_signals(shutdown: CancellationToken, limit: Duration) {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return;
        }
    };
    tokio::select! {
        name = signals.next() => info!("{name} received: draining, then stopping (send it again to stop at once)"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    tokio::select! {
        name = signals.next() => error!("{name} received again: exiting without finishing the drain"),
        () = tokio::time::sleep(limit) => error!(?limit, "shutdown did not finish in time: exiting"),
    }
    std::process::exit(1);
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Beyond the drain window and grace, how long stopping ingest, flushing the replicas
/// and stopping Raft may take before the process exits regardless.
const STOP_BUDGET: Duration = Duration::from_secs(20);

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let mut file = match &args.config {
        Some(path) => NodeConfigFile::load(path)?,
        None => NodeConfigFile::default(),
    };
    let check_only = args.check_config;
    apply_overrides(&mut file, args)?;
    let config = file.validate()?;
    if check_only {
        return check_config(&config);
    }
    telemetry::init_logging(&config.log.format, &config.log.level);
    if let Some(addr) = config.metrics_addr {
        telemetry::init_metrics(addr, config.node_id.0)
            .await
            .with_context(|| format!("start metrics exporter on {addr}"))?;
        info!(%addr, "prometheus metrics on /metrics");
    }
    let grpc = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("bind gRPC address {}", config.grpc_addr))?;
    let shutdown = CancellationToken::new();
    // The drain's own bounds, plus time to stop ingest, flush and stop Raft.
    let limit = config.shutdown_delay + config.shutdown_grace + STOP_BUDGET;
    tokio::spawn(handle_signals(shutdown.clone(), limit));
    quiver_node::run(config, Listeners { grpc }, shutdown)
        .await
        .context("node failed")?;
    Ok(())
}

/// `--check-config`: the configuration validated; the definition files it names must parse.
fn check_config(config: &quiver_node::config::NodeConfig) -> anyhow::Result<()> {
    for path in &config.definition_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read definition file {}", path.display()))?;
        // A dry run against an empty registry: parsed and every rule checked.
        quiver_node::registry::Registry::in_memory()
            .apply_toml(&text, true)
            .map_err(|e| anyhow::anyhow!("definition file {}: {e}", path.display()))?;
    }
    println!(
        "config OK: node {} ({} mode), grpc {} (tls {}, auth {}), metrics {}, {} shards, kafka {}, {} definition file(s)",
        config.node_id,
        if config.control.is_some() {
            "cluster"
        } else {
            "static"
        },
        config.grpc_addr,
        match &config.security.tls {
            None => "off",
            Some(t) if t.client_auth == quiver_node::security::ClientAuth::Required => "mutual",
            Some(_) => "on",
        },
        if config.security.auth.enabled {
            "on"
        } else {
            "OFF"
        },
        config
            .metrics_addr
            .map_or("off".to_string(), |a| a.to_string()),
        config.shard_count,
        config.ingest.bootstrap_servers,
        config.definition_files.len(),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    match cli.command {
        Some(Command::Demo(args)) => {
            // Malformed-record warnings are expected in the demo; it reports their count.
            telemetry::init_logging("plain", "error");
            runtime.block_on(demo::run_demo(args))
        }
        None => runtime.block_on(run_node(cli.node)),
    }
}
