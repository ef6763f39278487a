//! The command line: commands, their arguments and the parsers of argument values.

use clap::{Parser, Subcommand, ValueEnum};
use quiver_client::cli::SecurityArgs;

#[derive(Parser)]
#[command(
    name = "quiverctl",
    version,
    about = "Operate a quiver feature-store node"
)]
pub(crate) struct Cli {
    /// Node gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "QUIVER_ADDR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub(crate) addr: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
    /// Dial ADDR whenever the cluster map advertises a node at ADVERTISED
    /// (`ADVERTISED=ADDR`, e.g. `quiver1:7070=127.0.0.1:7071`; repeatable, or comma
    /// separated in the environment): for lookups from outside the nodes' network, such
    /// as the host of the compose cluster.
    #[arg(
        long,
        global = true,
        env = "QUIVER_CONNECT_TO",
        value_delimiter = ',',
        value_name = "ADVERTISED=ADDR",
        value_parser = parse_connect_to
    )]
    pub(crate) connect_to: Vec<(String, String)>,
    #[command(flatten)]
    pub(crate) security: SecurityArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum Output {
    Table,
    Json,
}

/// `ENTITY=K1,K2,…` of `get --entity-keys`.
pub(crate) fn parse_entity_keys(s: &str) -> Result<(String, Vec<String>), String> {
    match s.split_once('=') {
        Some((entity, keys)) if !entity.trim().is_empty() && !keys.trim().is_empty() => Ok((
            entity.trim().to_owned(),
            keys.split(',').map(|k| k.trim().to_owned()).collect(),
        )),
        _ => Err(format!("{s:?} is not ENTITY=K1,K2,… (e.g. user=u1,u2)")),
    }
}

/// `ADVERTISED=ADDR` of `--connect-to`.
pub(crate) fn parse_connect_to(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim().to_owned(), to.trim().to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not ADVERTISED=ADDR (e.g. quiver1:7070=127.0.0.1:7071)"
        )),
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// gRPC health check of the node (grpc.health.v1): exit status 0 when the service
    /// is SERVING, 1 otherwise. For container health checks and readiness probes.
    Health {
        /// Service to ask about: `quiver.v1.FeatureService` (the serving stack is up),
        /// `quiver.v1.Readiness` (this node's replicas are caught up and it takes
        /// lookups) or "" (the whole server).
        #[arg(long, default_value = "quiver.v1.FeatureService")]
        service: String,
        /// Give up after this long (e.g. "3s").
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Feature-view registry.
    View {
        #[command(subcommand)]
        command: ViewCommand,
    },
    /// Feature services: `service delete NAME`.
    Service {
        #[command(subcommand)]
        command: DeleteCommand,
    },
    /// Entities: `entity delete NAME` (refused while a view version is keyed by it).
    Entity {
        #[command(subcommand)]
        command: DeleteCommand,
    },
    /// Look up features for entity keys.
    Get {
        /// Feature references `view:feature` or `view:*`, comma separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "service")]
        features: Vec<String>,
        /// A feature service name instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// Entity keys, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "entity_keys",
            conflicts_with = "entity_keys"
        )]
        keys: Vec<String>,
        /// Keys per entity, for features spanning entities (a feature service over user
        /// and merchant views): `ENTITY=K1,K2,…`, repeated per entity; row i takes the
        /// i-th key of each. With --int-keys every entity's keys are int64.
        #[arg(long = "entity-keys", value_parser = parse_entity_keys)]
        entity_keys: Vec<(String, Vec<String>)>,
        /// The entity's keys are int64.
        #[arg(long)]
        int_keys: bool,
        /// Read at least this watermark token (from `push`).
        #[arg(long)]
        min_watermark: Option<String>,
        /// Read the values as of a past time (views with `history`): RFC 3339
        /// (`2026-11-30T12:00:00Z`), µs since the Unix epoch, or a duration ago (`2h ago`).
        #[arg(long, value_parser = parse_as_of)]
        as_of: Option<i64>,
        /// With --as-of: only versions that had arrived by then (what a lookup then
        /// returned).
        #[arg(long, requires = "as_of")]
        exclude_late_arrivals: bool,
    },
    /// Export a point-in-time training set: each label row joined with the features as of
    /// its timestamp (docs/POINT_IN_TIME.md), written as Parquet.
    Export {
        /// The label set: Parquet, or CSV with a header (entity key, timestamp, any label
        /// columns, kept as they are).
        #[arg(long)]
        labels: std::path::PathBuf,
        /// Feature references `view:feature` or `view:*`, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "service",
            required_unless_present = "service"
        )]
        features: Vec<String>,
        /// A feature service name instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// The output Parquet file.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The label column holding entity keys.
        #[arg(long, default_value = "key")]
        key_column: String,
        /// The label column holding each row's time (a timestamp, RFC 3339 text in UTC, or
        /// an integer in --time-unit).
        #[arg(long, default_value = "timestamp")]
        time_column: String,
        /// Unit of an integer time column: s, ms, us, ns.
        #[arg(long, default_value = "us")]
        time_unit: quiver_client::export::TimeUnit,
        /// The entity's keys are int64.
        #[arg(long)]
        int_keys: bool,
        /// Count versions by event time only, including those that arrived after the
        /// row's time (default: only what had arrived — what a lookup then returned).
        #[arg(long)]
        include_late_arrivals: bool,
        /// Also write `<feature>__status` columns (PRESENT, NOT_FOUND, EXPIRED).
        #[arg(long)]
        status_columns: bool,
        /// Label rows per lookup.
        #[arg(long, default_value_t = 1000)]
        chunk_rows: usize,
        /// Lookups in flight.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Stream the whole export through the node at --addr (its ExportFeatures RPC,
        /// which reads the shards it lacks from their replicas) instead of sending each
        /// shard's keys to its replicas: for a machine that reaches one node or a load
        /// balancer, not every node.
        #[arg(long)]
        through_node: bool,
    },
    /// Backfill a view from a file of historical rows (entity key, event time, features):
    /// every row checked against the view first (nothing is produced if one is wrong),
    /// then pushed — produced into the view's topic — resuming after an interruption.
    Backfill {
        /// View name.
        view: String,
        /// The rows: Parquet, or CSV with a header; columns besides the key and the time
        /// are features of the view (by name).
        #[arg(long = "from")]
        from: std::path::PathBuf,
        /// The column of entity keys.
        #[arg(long, default_value = "key")]
        key_column: String,
        /// The column of event times (a timestamp, RFC 3339 text in UTC, or an integer in
        /// --time-unit).
        #[arg(long, default_value = "event_time")]
        time_column: String,
        /// Unit of an integer time column: s, ms, us, ns.
        #[arg(long, default_value = "us")]
        time_unit: quiver_client::export::TimeUnit,
        /// Rows per push.
        #[arg(long, default_value_t = 500)]
        batch_rows: usize,
        /// Progress file (default: the data file's name + `.backfill`).
        #[arg(long)]
        state: Option<std::path::PathBuf>,
    },
    /// Push rows into a view (produced to its topic; prints a read-your-writes token).
    Push {
        /// View name.
        view: String,
        /// A row as JSON: {"key": "u1", "features": {"score": 0.5}, "event_time_micros": 0};
        /// `"delete": true` deletes the key; bytes features are base64. Repeatable.
        #[arg(long = "row", required = true)]
        rows: Vec<String>,
    },
    /// Cluster members and shard map (cluster mode), and this node's shards, offsets, lag.
    Status,
    /// Cluster membership.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Access tokens (admin).
    Token {
        #[command(subcommand)]
        command: crate::tokens::TokenCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Move a node's replicas to other nodes (they serve before the old ones are dropped).
    Drain {
        /// Node id.
        id: u64,
        /// Wait (up to this long, e.g. "120s") until the node holds no replica: its
        /// successors serve. For a Kubernetes preStop hook or a rolling upgrade script.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ViewCommand {
    /// Apply a definition file (TOML).
    Apply {
        /// File to apply.
        file: std::path::PathBuf,
        /// Validate only.
        #[arg(long)]
        dry_run: bool,
    },
    /// List views, entities and feature services.
    List,
    /// Show one view's definition.
    Describe {
        /// View name.
        name: String,
    },
    /// Every version: serving, pending (what changed, each replica's progress), retained
    /// (until when), dropped.
    Versions {
        /// View name.
        name: String,
    },
    /// Serve a retained version again (rows intact and current); the serving one is
    /// retained. Restores a deleted view.
    Rollback {
        /// View name.
        name: String,
        /// The version to serve (default: the one that retired last).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Delete a view: it stops serving now; its rows are kept for the cluster's
    /// `registry.version_retention` (`view rollback` restores it meanwhile), then deleted.
    /// Refused while a feature service uses it.
    Delete {
        /// View name.
        name: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeleteCommand {
    /// Delete a registry object.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `--as-of`: RFC 3339, µs since the Unix epoch, or `<duration> ago`.
pub(crate) fn parse_as_of(s: &str) -> Result<i64, String> {
    let now = std::time::SystemTime::now();
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .map_err(|_| format!("{s:?} is before 1970"))
    };
    if let Ok(us) = s.parse::<i64>() {
        return Ok(us);
    }
    if let Some(ago) = s.trim().strip_suffix("ago") {
        let d = humantime::parse_duration(ago.trim())
            .map_err(|e| format!("{s:?}: {e} (expected e.g. \"2h ago\")"))?;
        return since_epoch(now - d);
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| {
            format!(
                "{s:?} is not a time: {e} (expected RFC 3339, µs since the epoch, or \"2h ago\")"
            )
        })
        .and_then(since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_takes_advertised_equals_reachable() {
        assert_eq!(
            parse_connect_to(" quiver1:7070 = 127.0.0.1:7071 "),
            Ok(("quiver1:7070".to_owned(), "127.0.0.1:7071".to_owned()))
        );
        for bad in ["quiver1:7070", "=127.0.0.1:7071", "quiver1:7070=", ""] {
            let err = parse_connect_to(bad).unwrap_err();
            assert!(err.contains("ADVERTISED=ADDR"), "{bad}: {err}");
        }
        let cli = Cli::try_parse_from([
            "quiverctl",
            "--connect-to",
            "a:1=127.0.0.1:2,b:1=127.0.0.1:3",
            "health",
        ])
        .unwrap();
        assert_eq!(cli.connect_to.len(), 2);
        assert_eq!(
            cli.connect_to[1],
            ("b:1".to_owned(), "127.0.0.1:3".to_owned())
        );
    }

    #[test]
    fn as_of_takes_rfc3339_micros_or_a_duration_ago() {
        assert_eq!(
            parse_as_of("2026-11-30T12:00:00Z"),
            Ok(1_796_040_000_000_000)
        );
        assert_eq!(parse_as_of("1700000000000000"), Ok(1_700_000_000_000_000));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let ago = parse_as_of("2h ago").unwrap();
        assert!((now - 2 * 3_600_000_000 - ago).abs() < 60_000_000, "{ago}");
        let err = parse_as_of("yesterday").unwrap_err();
        assert!(err.contains("is not a time"), "{err}");
    }
}
