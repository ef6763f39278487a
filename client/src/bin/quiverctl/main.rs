//! `quiverctl`: operate a quiver node from the shell.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
mod export;
mod health;
mod output;
mod rows;
mod tokens;
mod versions;

use output::{freshness, print_cluster, print_rows};
use rows::parse_row;

use quiver_client::cli::SecurityArgs;
use quiver_client::{Client, EntityKey, Lookup, NodeClient, Watermarks};
use quiver_proto::transport::Credentials;
use serde_json::{Value as Json, json};

#[derive(Parser)]
#[command(
    name = "quiverctl",
    version,
    about = "Operate a quiver feature-store node"
)]
struct Cli {
    /// Node gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "QUIVER_ADDR",
        default_value = "http://127.0.0.1:7070"
    )]
    addr: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
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
    connect_to: Vec<(String, String)>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

/// `ENTITY=K1,K2,…` of `get --entity-keys`.
fn parse_entity_keys(s: &str) -> Result<(String, Vec<String>), String> {
    match s.split_once('=') {
        Some((entity, keys)) if !entity.trim().is_empty() && !keys.trim().is_empty() => Ok((
            entity.trim().to_owned(),
            keys.split(',').map(|k| k.trim().to_owned()).collect(),
        )),
        _ => Err(format!("{s:?} is not ENTITY=K1,K2,… (e.g. user=u1,u2)")),
    }
}

/// `ADVERTISED=ADDR` of `--connect-to`.
fn parse_connect_to(s: &str) -> Result<(String, String), String> {
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
enum Command {
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
        command: tokens::TokenCommand,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
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
enum ViewCommand {
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
enum DeleteCommand {
    /// Delete a registry object.
    Delete {
        /// Its name.
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn smart_client(
    addr: &str,
    credentials: &Credentials,
    connect_to: &[(String, String)],
) -> anyhow::Result<Client> {
    let mut builder = Client::builder();
    for (advertised, reachable) in connect_to {
        builder = builder.connect_to(advertised, reachable);
    }
    builder
        .seeds([addr])
        .credentials(credentials.clone())
        .deadline(std::time::Duration::from_secs(10))
        .attempt_timeout(std::time::Duration::from_secs(5))
        .build()
        .await
        .with_context(|| format!("connect to {addr}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let credentials = cli.security.credentials()?;
    if let Command::Health { service, timeout } = &cli.command {
        // Before connecting: a node that cannot be reached is simply not healthy.
        return match health::check(&cli.addr, &credentials, service, *timeout).await? {
            true => Ok(()),
            false => anyhow::bail!("{service:?} is not serving at {}", cli.addr),
        };
    }
    let mut client = NodeClient::connect_with(cli.addr.clone(), &credentials).await?;
    match cli.command {
        Command::Health { .. } => {} // answered above, without a connection first
        Command::View {
            command: ViewCommand::Rollback { name, to },
        } => versions::print_changes(&client.rollback_view(name, to).await?, cli.output)?,
        Command::View {
            command: ViewCommand::Delete { name },
        } => versions::print_changes(&client.delete("view", name).await?, cli.output)?,
        Command::Service {
            command: DeleteCommand::Delete { name },
        } => versions::print_changes(&client.delete("feature_service", name).await?, cli.output)?,
        Command::Entity {
            command: DeleteCommand::Delete { name },
        } => versions::print_changes(&client.delete("entity", name).await?, cli.output)?,
        Command::Token { command } => {
            tokens::run(&mut client, command, cli.output == Output::Json).await?;
        }
        Command::View {
            command: ViewCommand::Apply { file, dry_run },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let changes = client.apply_definitions(text, dry_run).await?;
            if changes.is_empty() {
                println!("no changes");
            }
            for c in changes {
                println!("{}{c}", if dry_run { "(dry run) " } else { "" });
            }
        }
        Command::View {
            command: ViewCommand::List,
        } => {
            let l = client.list_views().await?;
            if cli.output == Output::Json {
                let views: Vec<Json> = l
                    .views
                    .iter()
                    .map(|v| json!({"name": v.name, "version": v.version, "entity": v.entity, "topic": v.topic, "features": v.feature_count, "owner": v.owner}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"views": views, "entities": l.entities, "feature_services": l.feature_services})
                    )?
                );
            } else {
                println!(
                    "{:<28} {:>7} {:<16} {:<28} {:>8}  owner",
                    "view", "version", "entity", "topic", "features"
                );
                for v in &l.views {
                    println!(
                        "{:<28} {:>7} {:<16} {:<28} {:>8}  {}",
                        v.name, v.version, v.entity, v.topic, v.feature_count, v.owner
                    );
                }
                println!("entities: {}", l.entities.join(", "));
                println!("feature services: {}", l.feature_services.join(", "));
            }
        }
        Command::View {
            command: ViewCommand::Describe { name },
        } => println!("{}", client.describe_view(name).await?),
        Command::View {
            command: ViewCommand::Versions { name },
        } => {
            versions::run(
                &mut client,
                &credentials,
                &cli.connect_to,
                &name,
                cli.output,
            )
            .await?
        }
        Command::Get {
            features,
            service,
            keys,
            entity_keys: per_entity,
            int_keys,
            min_watermark,
            as_of,
            exclude_late_arrivals,
        } => {
            let lookup = match service {
                Some(s) => Lookup::feature_service(s),
                None => Lookup::features(features),
            };
            let typed = |keys: &[String]| -> anyhow::Result<Vec<EntityKey>> {
                if int_keys {
                    keys.iter()
                        .map(|k| {
                            k.parse::<i64>()
                                .map(EntityKey::from)
                                .with_context(|| format!("key {k:?} is not an int64"))
                        })
                        .collect()
                } else {
                    Ok(keys.iter().map(|k| EntityKey::from(k.as_str())).collect())
                }
            };
            // The JSON output shows each value's event time.
            let mut lookup = lookup.event_times(cli.output == Output::Json);
            if per_entity.is_empty() {
                lookup = lookup.keys(typed(&keys)?);
            }
            for (entity, keys) in &per_entity {
                lookup = lookup.entity_keys_of(entity, typed(keys)?);
            }
            // Rows are labelled by their keys (one entity's, or each entity's joined).
            let labels: Vec<String> = if per_entity.is_empty() {
                keys.clone()
            } else {
                (0..per_entity[0].1.len())
                    .map(|i| {
                        per_entity
                            .iter()
                            .map(|(e, k)| format!("{e}={}", k.get(i).map_or("", String::as_str)))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect()
            };
            if let Some(token) = min_watermark {
                let wm: Watermarks = token.parse()?;
                lookup = lookup.min_watermarks(&wm);
            }
            if let Some(t) = as_of {
                lookup = lookup
                    .as_of_micros(t)
                    .exclude_late_arrivals(exclude_late_arrivals);
            }
            let smart = smart_client(&cli.addr, &credentials, &cli.connect_to).await?;
            let result = smart.get_online_features(&lookup).await?;
            print_rows(&labels, &result, cli.output)?;
        }
        Command::Export {
            labels,
            features,
            service,
            out,
            key_column,
            time_column,
            time_unit,
            int_keys,
            include_late_arrivals,
            status_columns,
            chunk_rows,
            parallel,
        } => {
            let opts = quiver_client::export::ExportOptions {
                features,
                feature_service: service,
                key_column,
                time_column,
                time_unit,
                int_keys,
                exclude_late_arrivals: !include_late_arrivals,
                status_columns,
                chunk_rows,
                parallel,
            };
            let smart = smart_client(&cli.addr, &credentials, &cli.connect_to).await?;
            export::run(&smart, &labels, &out, &opts).await?;
        }
        Command::Backfill {
            view,
            from,
            key_column,
            time_column,
            time_unit,
            batch_rows,
            state,
        } => {
            let opts = quiver_client::export::backfill::BackfillOptions {
                key_column,
                time_column,
                time_unit,
                batch_rows,
                state,
            };
            let smart = smart_client(&cli.addr, &credentials, &cli.connect_to).await?;
            export::backfill(&smart, &view, &from, &opts).await?;
        }
        Command::Push { view, rows } => {
            let definition: Json =
                serde_json::from_str(&client.describe_view(view.clone()).await?)?;
            let types: std::collections::HashMap<String, String> = definition["features"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    Some((
                        f["name"].as_str()?.to_owned(),
                        f["value_type"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            let rows = rows
                .iter()
                .map(|r| parse_row(r, &types))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = rows.len();
            let smart = smart_client(&cli.addr, &credentials, &cli.connect_to).await?;
            let wm = smart.push(&view, rows).await?;
            if cli.output == Output::Json {
                println!("{}", json!({"rows": n, "watermark": wm.to_string()}));
            } else {
                println!("pushed {n} rows; read them with --min-watermark {wm}");
            }
        }
        Command::Node {
            command: NodeCommand::Drain { id, wait },
        } => {
            let epoch = client.drain_node(id).await?;
            println!("node {id} draining (epoch {epoch})");
            if let Some(wait) = wait {
                let deadline = std::time::Instant::now() + wait;
                loop {
                    let map = client.cluster_map().await?;
                    let held = map
                        .shards
                        .iter()
                        .filter(|s| s.replicas.iter().any(|r| r.node_id == id))
                        .count();
                    if held == 0 {
                        println!("node {id} holds no replicas");
                        break;
                    }
                    if std::time::Instant::now() >= deadline {
                        anyhow::bail!("node {id} still holds {held} replica(s) after {wait:?}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        Command::Status => {
            // Cluster mode adds members and the shard map; a static node has neither.
            let map = client.cluster_map().await.ok();
            if let Some(map) = &map {
                print_cluster(map, cli.output);
            }
            let s = client.status().await?;
            if cli.output == Output::Json {
                let shards: Vec<Json> = s
                    .shards
                    .iter()
                    .map(|sh| json!({"shard": sh.shard, "rows_estimate": sh.row_count_estimate, "replica_state": sh.replica_state, "blocked_streams": sh.blocked_streams, "checkpoint_copy": sh.checkpoint_copy, "freshness_seconds": freshness(sh.newest_event_time_micros), "partitions": sh.partitions.iter().map(|p| json!({
                        "topic": p.topic, "next_offset": p.next_offset, "high_watermark": p.high_watermark, "lag": p.lag,
                        "consumed": p.records_consumed, "applied": p.records_applied, "malformed": p.records_malformed, "reached_end": p.reached_end
                    })).collect::<Vec<_>>()}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"node_id": s.node_id, "shard_count": s.shard_count, "partitioner": s.partitioner, "shards": shards})
                    )?
                );
            } else {
                println!(
                    "node {}  shards {}  partitioner {}",
                    s.node_id, s.shard_count, s.partitioner
                );
                println!(
                    "{:>5} {:<13} {:>9} {:<24} {:>12} {:>12} {:>8} {:>12} {:>10}  caught-up",
                    "shard",
                    "replica",
                    "fresh_s",
                    "topic",
                    "next_offset",
                    "high_wm",
                    "lag",
                    "consumed",
                    "malformed"
                );
                for sh in &s.shards {
                    let fresh = freshness(sh.newest_event_time_micros)
                        .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
                    for p in &sh.partitions {
                        println!(
                            "{:>5} {:<13} {:>9} {:<24} {:>12} {:>12} {:>8} {:>12} {:>10}  {}",
                            sh.shard,
                            sh.replica_state,
                            fresh,
                            p.topic,
                            p.next_offset,
                            p.high_watermark,
                            p.lag,
                            p.records_consumed,
                            p.records_malformed,
                            p.reached_end
                        );
                    }
                    for why in &sh.blocked_streams {
                        println!("{:>5} BLOCKED {why}", sh.shard);
                    }
                    if !sh.checkpoint_copy.is_empty() {
                        println!("{:>5} COPYING checkpoint {}", sh.shard, sh.checkpoint_copy);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `--as-of`: RFC 3339, µs since the Unix epoch, or `<duration> ago`.
fn parse_as_of(s: &str) -> Result<i64, String> {
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
