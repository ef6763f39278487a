//! `quiverctl`: operate a quiver node from the shell.

use anyhow::Context as _;
use clap::Parser;
mod cli;
mod export;
mod health;
mod output;
mod rows;
mod tokens;
mod versions;

use cli::{Cli, Command, DeleteCommand, NodeCommand, Output, ViewCommand};
use output::{freshness, print_cluster, print_rows};
use rows::parse_row;

use quiver_client::{Client, EntityKey, Lookup, NodeClient, Watermarks};
use quiver_proto::transport::Credentials;
use serde_json::{Value as Json, json};

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
            through_node,
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
            let via = if through_node {
                export::Via::Node(&credentials, &cli.addr)
            } else {
                export::Via::Smart(smart_client(&cli.addr, &credentials, &cli.connect_to).await?)
            };
            export::run(via, &labels, &out, &opts).await?;
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
