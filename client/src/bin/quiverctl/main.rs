//! `quiverctl`: operate a quiver node from the shell.

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
mod tokens;

use quiver_client::cli::SecurityArgs;
use quiver_client::{
    Client, EntityKey, Lookup, LookupResult, NodeClient, PushRow, Value, Watermarks,
};
use quiver_proto::json_number;
use quiver_proto::transport::Credentials;
use quiver_proto::v1::FeatureStatus;
use quiver_proto::v1::value::Kind;
use serde_json::value::RawValue;
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

#[derive(Subcommand)]
enum Command {
    /// Feature-view registry.
    View {
        #[command(subcommand)]
        command: ViewCommand,
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
        #[arg(long, value_delimiter = ',', required = true)]
        keys: Vec<String>,
        /// The entity's keys are int64.
        #[arg(long)]
        int_keys: bool,
        /// Read at least this watermark token (from `push`).
        #[arg(long)]
        min_watermark: Option<String>,
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
}

/// A float as JSON: the shortest text that parses back to the same bits, or the string
/// `"NaN"`, `"Infinity"`, `"-Infinity"` (see `quiver_proto::json_number`).
fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || Json::String(json_number::f64_text(f).trim_matches('"').to_owned()),
        Json::Number,
    )
}

/// A float32 as JSON: the shortest decimal of the f32 (read it back as float32; as a
/// float64 it is the nearest double to that decimal, not the widened f32).
fn float32_json(f: f32) -> Json {
    match json_number::f32_text(f).parse::<f64>() {
        Ok(short) if f.is_finite() => float_json(short),
        _ => float_json(f64::from(f)),
    }
}

/// A value as `--output json` prints it; `quiverctl push --row` reads the same forms back
/// (bytes as base64, as in JSON source records).
fn kind_json(k: Option<&Kind>) -> Json {
    match k {
        None => Json::Null,
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::Int64Value(i)) => json!(i),
        Some(Kind::Float64Value(f)) => float_json(*f),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BytesValue(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(Kind::Float32Vector(v)) => {
            Json::Array(v.values.iter().map(|f| float32_json(*f)).collect())
        }
        Some(Kind::Int64List(v)) => json!(v.values),
        Some(Kind::Float64List(v)) => {
            Json::Array(v.values.iter().map(|f| float_json(*f)).collect())
        }
        Some(Kind::StringList(v)) => json!(v.values),
    }
}

/// Seconds since the newest applied event (the replica's freshness), if any was applied.
fn freshness(newest_event_time_micros: i64) -> Option<f64> {
    if newest_event_time_micros <= 0 {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros() as i64;
    Some((now - newest_event_time_micros) as f64 / 1e6)
}

fn replica_state_name(state: i32) -> &'static str {
    match quiver_proto::v1::ReplicaStateProto::try_from(state) {
        Ok(quiver_proto::v1::ReplicaStateProto::Bootstrapping) => "bootstrapping",
        Ok(quiver_proto::v1::ReplicaStateProto::Serving) => "serving",
        Ok(quiver_proto::v1::ReplicaStateProto::Draining) => "draining",
        _ => "unknown",
    }
}

fn print_cluster(map: &quiver_proto::v1::ClusterMap, output: Output) {
    if output == Output::Json {
        let members: Vec<Json> = map
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id, "addr": m.addr, "zone": m.zone, "status": m.status, "raft_role": m.raft_role, "leader": m.is_leader}))
            .collect();
        let shards: Vec<Json> = map
            .shards
            .iter()
            .map(|s| json!({"shard": s.shard, "replicas": s.replicas.iter().map(|r| json!({"node_id": r.node_id, "state": replica_state_name(r.state)})).collect::<Vec<_>>()}))
            .collect();
        println!(
            "{}",
            json!({"cluster": {"epoch": map.epoch, "shard_count": map.shard_count, "partitioner": map.partitioner, "replication_factor": map.replication_factor, "leader_id": map.leader_id, "members": members, "shards": shards}})
        );
        return;
    }
    println!(
        "cluster epoch {}  shards {}  R {}  partitioner {}  leader {}",
        map.epoch, map.shard_count, map.replication_factor, map.partitioner, map.leader_id
    );
    println!(
        "{:>6} {:<22} {:<8} {:<9} {:<8} leader",
        "node", "addr", "zone", "status", "raft"
    );
    for m in &map.members {
        println!(
            "{:>6} {:<22} {:<8} {:<9} {:<8} {}",
            m.node_id,
            m.addr,
            m.zone,
            m.status,
            m.raft_role,
            if m.is_leader { "*" } else { "" }
        );
    }
    for s in &map.shards {
        let reps: Vec<String> = s
            .replicas
            .iter()
            .map(|r| format!("{}:{}", r.node_id, replica_state_name(r.state)))
            .collect();
        println!("shard {:>4}: {}", s.shard, reps.join("  "));
    }
    println!();
}

fn status_name(s: FeatureStatus) -> &'static str {
    match s {
        FeatureStatus::Present => "PRESENT",
        FeatureStatus::NotFound => "NOT_FOUND",
        FeatureStatus::Expired => "EXPIRED",
        FeatureStatus::Unspecified => "UNSPECIFIED",
    }
}

fn print_rows(keys: &[String], r: &LookupResult, output: Output) -> anyhow::Result<()> {
    let names: Vec<&str> = r.feature_names().collect();
    if output == Output::Json {
        let rows: Vec<Json> = keys
            .iter()
            .enumerate()
            .map(|(row, key)| {
                let features: serde_json::Map<String, Json> = names
                    .iter()
                    .enumerate()
                    .map(|(col, n)| {
                        let v = json!({
                            "value": kind_json(r.kind(row, col).as_ref()),
                            "status": status_name(r.status(row, col)),
                            "event_time_micros": r.event_time_micros(row, col),
                        });
                        ((*n).to_owned(), v)
                    })
                    .collect();
                json!({ "key": key, "features": features })
            })
            .collect();
        let watermarks: Vec<Json> = r
            .watermarks()
            .iter()
            .map(|(shard, topic, next_offset)| json!({"shard": shard, "topic": topic, "next_offset": next_offset}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "rows": rows, "watermarks": watermarks }))?
        );
        return Ok(());
    }
    print!("{:<20}", "key");
    for n in &names {
        print!(" {n:>24}");
    }
    println!();
    for (row, key) in keys.iter().enumerate() {
        print!("{key:<20}");
        for col in 0..names.len() {
            let cell = match r.status(row, col) {
                FeatureStatus::Present => kind_json(r.kind(row, col).as_ref()).to_string(),
                other => status_name(other).to_owned(),
            };
            print!(" {cell:>24}");
        }
        println!();
    }
    Ok(())
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

/// Converts the JSON text of a value to a feature value of type `ty` (a definition-file
/// type name). Numbers are read from their own text by type, exactly.
fn json_to_value(feature: &str, ty: &str, v: &RawValue) -> anyhow::Result<Value> {
    let text = v.get().trim();
    let bad = || anyhow::anyhow!("feature {feature:?} is {ty}; {text} does not fit");
    let list = || serde_json::from_str::<Vec<Box<RawValue>>>(text).map_err(|_| bad());
    Ok(match ty {
        "bool" => serde_json::from_str::<bool>(text)
            .map_err(|_| bad())?
            .into(),
        "int64" => json_number::parse_i64(text).map_err(|_| bad())?.into(),
        "float64" => json_number::parse_f64(text).map_err(|_| bad())?.into(),
        "string" => serde_json::from_str::<String>(text)
            .map_err(|_| bad())?
            .into(),
        // Base64, as in JSON source records and in `--output json`.
        "bytes" => base64::engine::general_purpose::STANDARD
            .decode(serde_json::from_str::<String>(text).map_err(|_| bad())?)
            .map_err(|_| bad())?
            .into(),
        "float32_vector" => list()?
            .iter()
            .map(|x| json_number::parse_f32(x.get()))
            .collect::<Result<Vec<f32>, _>>()
            .map_err(|_| bad())?
            .into(),
        "int64_list" => list()?
            .iter()
            .map(|x| json_number::parse_i64(x.get()))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| bad())?
            .into(),
        "float64_list" => list()?
            .iter()
            .map(|x| json_number::parse_f64(x.get()))
            .collect::<Result<Vec<f64>, _>>()
            .map_err(|_| bad())?
            .into(),
        "string_list" => serde_json::from_str::<Vec<String>>(text)
            .map_err(|_| bad())?
            .into(),
        other => anyhow::bail!("feature {feature:?} has unknown type {other}"),
    })
}

/// Parses `--row` JSON into a push row, typing values by the view's definition.
fn parse_row(
    text: &str,
    types: &std::collections::HashMap<String, String>,
) -> anyhow::Result<PushRow> {
    let doc: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).with_context(|| format!("row {text} is not a JSON object"))?;
    let key = match doc.get("key").map(|k| k.get()) {
        Some(k) if k.starts_with('"') => EntityKey::from(serde_json::from_str::<String>(k)?),
        Some(k) => match json_number::parse_i64(k) {
            Ok(i) => EntityKey::from(i),
            Err(_) => anyhow::bail!("row {text} needs a \"key\" (string or integer)"),
        },
        None => anyhow::bail!("row {text} needs a \"key\" (string or integer)"),
    };
    if doc.get("delete").map(|d| d.get()) == Some("true") {
        return Ok(PushRow::delete(key));
    }
    let mut row = PushRow::new(key);
    if let Some(t) = doc.get("event_time_micros") {
        let t = json_number::parse_i64(t.get())
            .with_context(|| format!("event_time_micros {} is not an integer", t.get()))?;
        row = row.event_time_micros(t);
    }
    if let Some(features) = doc.get("features") {
        let features: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(features.get()).context("\"features\" must be an object")?;
        for (name, v) in &features {
            let ty = types
                .get(name)
                .with_context(|| format!("the view has no feature {name:?}"))?;
            row = row.set(name.clone(), json_to_value(name, ty, v)?);
        }
    }
    Ok(row)
}

async fn smart_client(addr: &str, credentials: &Credentials) -> anyhow::Result<Client> {
    Client::builder()
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
    let mut client = NodeClient::connect_with(cli.addr.clone(), &credentials).await?;
    match cli.command {
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
        Command::Get {
            features,
            service,
            keys,
            int_keys,
            min_watermark,
        } => {
            let lookup = match service {
                Some(s) => Lookup::feature_service(s),
                None => Lookup::features(features),
            };
            let entity_keys: Vec<EntityKey> = if int_keys {
                keys.iter()
                    .map(|k| {
                        k.parse::<i64>()
                            .map(EntityKey::from)
                            .with_context(|| format!("key {k:?} is not an int64"))
                    })
                    .collect::<anyhow::Result<_>>()?
            } else {
                keys.iter().map(|k| EntityKey::from(k.as_str())).collect()
            };
            // The JSON output shows each value's event time.
            let mut lookup = lookup
                .keys(entity_keys)
                .event_times(cli.output == Output::Json);
            if let Some(token) = min_watermark {
                let wm: Watermarks = token.parse()?;
                lookup = lookup.min_watermarks(&wm);
            }
            let smart = smart_client(&cli.addr, &credentials).await?;
            let result = smart.get_online_features(&lookup).await?;
            print_rows(&keys, &result, cli.output)?;
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
            let smart = smart_client(&cli.addr, &credentials).await?;
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
                    .map(|sh| json!({"shard": sh.shard, "rows_estimate": sh.row_count_estimate, "replica_state": sh.replica_state, "freshness_seconds": freshness(sh.newest_event_time_micros), "partitions": sh.partitions.iter().map(|p| json!({
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
                }
            }
        }
    }
    Ok(())
}
