//! `quiver-node demo`: the embedded demo, the README's first command.
//!
//! One process runs librdkafka's in-process mock Kafka cluster, produces a realistic data
//! set into it with a real librdkafka producer (Java-compatible partitioner), starts a
//! small cluster of nodes that split the shards, waits until they have ingested every
//! record, then runs batched lookups against them over gRPC, verifies every answer against
//! what was produced, and prints a table and the measured latencies.

mod data;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use quiver_node::config::NodeConfigFile;
use quiver_node::{Listeners, Node};
use quiver_proto::v1::admin_service_client::AdminServiceClient;
use quiver_proto::v1::feature_service_client::FeatureServiceClient;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{
    EntityKey, FeatureStatus, GetOnlineFeaturesRequest, GetStatusRequest, entity_key,
};
use quiver_proto::{Partitioner, ShardId};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The demo's source topics: raw transactions (aggregated by the replicas), user profile
/// rows, card risk rows.
const TOPICS: [&str; 3] = ["transactions", "user_profile", "card_risk"];

/// Demo options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Users (entities of the JSON view).
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Profile events per user (out of order for some users); each user also has 2–7
    /// raw transactions.
    #[arg(long, default_value_t = 3)]
    events_per_user: usize,
    /// Cards (entities of the protobuf view).
    #[arg(long, default_value_t = 5_000)]
    cards: usize,
    /// Malformed records mixed in.
    #[arg(long, default_value_t = 40)]
    malformed: usize,
    /// Shards (= partitions of every topic).
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Nodes in the process; shards are split between them.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// Lookup batches to run.
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Keys per lookup batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Data-set seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

struct DemoNode {
    shards: Vec<u32>,
    features: FeatureServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn produce(bootstrap: &str, records: &[data::Record]) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", Partitioner::Murmur2.librdkafka_name())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("create producer")?;
    for r in records {
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(r.topic).key(&r.key[..]);
            if let Some(p) = &r.payload {
                rec = rec.payload(&p[..]);
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flush producer")?;
    Ok(())
}

async fn start_nodes(
    args: &DemoArgs,
    dir: &std::path::Path,
    bootstrap: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<(Vec<Node>, Vec<DemoNode>)> {
    let defs = dir.join("definitions.toml");
    std::fs::write(&defs, data::DEFINITIONS)?;
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    for n in 0..args.nodes {
        let shards: Vec<u32> = (0..args.shards).filter(|s| s % args.nodes == n).collect();
        let mut file = NodeConfigFile {
            node_id: u64::from(n) + 1,
            data_dir: dir.join(format!("node-{}", n + 1)),
            ..Default::default()
        };
        file.cluster.shard_count = args.shards;
        file.cluster.shards = shards.clone();
        file.kafka.bootstrap_servers = bootstrap.to_owned();
        file.server.metrics_addr = String::new();
        file.storage.block_cache_mib = 64;
        file.storage.write_buffer_mib = 64;
        file.ingest.poll_timeout = Duration::from_millis(20);
        file.registry.definition_files = vec![defs.clone()];
        // The embedded demo runs on loopback with sample data; the node warns loudly.
        file.auth.enabled = false;
        let config = file.validate()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        nodes.push(
            Node::start(config, Listeners { grpc: listener }, cancel.clone())
                .await
                .context("start node")?,
        );
        let channel = quiver_proto::transport::Credentials::none()
            .endpoint(&addr.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(DemoNode {
            shards,
            features: FeatureServiceClient::new(channel.clone()),
            admin: AdminServiceClient::new(channel),
        });
    }
    Ok((nodes, clients))
}

/// Records per topic across all partitions, from the broker.
///
/// Fails if the broker already dropped records: librdkafka's mock cluster keeps at most
/// 5 MiB per partition, and the demo must verify every record it produced.
fn produced_totals(
    bootstrap: &str,
    topics: &[&str],
    shards: u32,
) -> anyhow::Result<BTreeMap<String, i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut out = BTreeMap::new();
    for t in topics {
        let mut total = 0;
        for p in 0..shards {
            let (low, high) = c.fetch_watermarks(t, p as i32, Duration::from_secs(5))?;
            ensure!(
                low == 0,
                "the mock broker's retention (5 MiB per partition) dropped the first {low} records of {t}/{p}; \
                 use fewer --users/--events-per-user or more --shards"
            );
            total += high;
        }
        out.insert((*t).to_owned(), total);
    }
    Ok(out)
}

async fn wait_caught_up(
    clients: &mut [DemoNode],
    want: &BTreeMap<String, i64>,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut have: BTreeMap<String, i64> = BTreeMap::new();
        let mut malformed = 0;
        for c in clients.iter_mut() {
            let s = c.admin.get_status(GetStatusRequest {}).await?.into_inner();
            for sh in s.shards {
                for p in sh.partitions {
                    *have.entry(p.topic).or_default() += p.next_offset;
                    malformed += p.records_malformed;
                }
            }
        }
        if want
            .iter()
            .all(|(t, n)| have.get(t).copied().unwrap_or(0) >= *n)
        {
            return Ok(malformed);
        }
        ensure!(
            Instant::now() < deadline,
            "ingest did not catch up within 300 s: have {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Looks up `keys` (with `features`) across the nodes, each key on the node owning its
/// shard, and returns per key and feature `(status, value, event time)`.
async fn lookup(
    clients: &[DemoNode],
    owner: &HashMap<u32, usize>,
    shards: u32,
    features: &[String],
    keys: &[EntityKey],
    key_bytes: &[Vec<u8>],
) -> anyhow::Result<Vec<Vec<(i32, Option<Kind>, i64)>>> {
    let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); clients.len()];
    for (i, k) in key_bytes.iter().enumerate() {
        let ShardId(s) = Partitioner::Murmur2.shard_for_key(k, shards);
        per_node[owner[&s]].push(i);
    }
    let calls = per_node
        .iter()
        .enumerate()
        .filter(|(_, idx)| !idx.is_empty())
        .map(|(n, idx)| {
            let mut client = clients[n].features.clone();
            let req = GetOnlineFeaturesRequest {
                features: features.to_vec(),
                entity_keys: idx.iter().map(|&i| keys[i].clone()).collect(),
                include_event_times: true,
                ..Default::default()
            };
            async move {
                client
                    .get_online_features(req)
                    .await
                    .map(|r| (idx, r.into_inner()))
            }
        });
    let mut out = vec![Vec::new(); keys.len()];
    for res in futures::future::join_all(calls).await {
        let (idx, resp) = res.context("lookup rpc")?;
        for c in &resp.packed_columns {
            c.validate(idx.len())
                .map_err(|e| anyhow::anyhow!("malformed response: {e}"))?;
        }
        for (pos, &row) in idx.iter().enumerate() {
            out[row] = resp
                .packed_columns
                .iter()
                .map(|c| {
                    (
                        c.statuses[pos],
                        c.value(pos).map(|v| v.to_kind()),
                        c.event_time_at(pos),
                    )
                })
                .collect();
        }
    }
    Ok(out)
}

fn fmt_kind(k: &Option<Kind>) -> String {
    match k {
        None => "null".into(),
        Some(Kind::Int64Value(v)) => v.to_string(),
        Some(Kind::Float64Value(v)) => format!("{v:.2}"),
        Some(Kind::StringValue(v)) => v.clone(),
        Some(Kind::BoolValue(v)) => v.to_string(),
        Some(Kind::StringList(v)) => v.values.join("|"),
        Some(other) => format!("{other:?}"),
    }
}

/// Runs the demo; fails if any served value differs from what was produced.
pub async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    ensure!(
        args.nodes >= 1 && args.shards >= args.nodes,
        "need 1 <= nodes <= shards"
    );
    println!(
        "quiver embedded demo: mock Kafka + {} node(s), {} shards, seed {}",
        args.nodes, args.shards, args.seed
    );
    let mock = MockCluster::new(1).context("start librdkafka mock cluster")?;
    let bootstrap = mock.bootstrap_servers();
    for t in TOPICS {
        mock.create_topic(t, args.shards as i32, 1)
            .with_context(|| format!("create topic {t}"))?;
    }
    let ds = data::generate(
        args.seed,
        args.users,
        args.events_per_user.max(1),
        args.cards,
        args.malformed,
        now_millis(),
    );
    let n_records = ds.records.len();
    let t = Instant::now();
    let records = ds.records;
    let bs = bootstrap.clone();
    let records =
        tokio::task::spawn_blocking(move || produce(&bs, &records).map(|()| records)).await??;
    println!(
        "produced {n_records} records ({} users × {} profile events + {} transactions, {} cards × 2, {} malformed) in {:.2?}",
        args.users,
        args.events_per_user,
        ds.txns.values().map(Vec::len).sum::<usize>(),
        args.cards,
        ds.malformed,
        t.elapsed()
    );
    drop(records);
    let want = {
        let bs = bootstrap.clone();
        let shards = args.shards;
        tokio::task::spawn_blocking(move || produced_totals(&bs, &TOPICS, shards)).await??
    };

    let dir = tempfile::tempdir()?;
    let cancel = CancellationToken::new();
    let t = Instant::now();
    let (nodes, mut clients) = start_nodes(&args, dir.path(), &bootstrap, &cancel).await?;
    let malformed_seen = wait_caught_up(&mut clients, &want).await?;
    let ingest_secs = t.elapsed().as_secs_f64();
    let total: i64 = want.values().sum();
    println!(
        "ingested {total} records into {} node(s) in {ingest_secs:.2} s: {:.0} records/s ({malformed_seen} malformed skipped)",
        args.nodes,
        total as f64 / ingest_secs
    );

    let owner: HashMap<u32, usize> = clients
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.shards.iter().map(move |&s| (s, i)))
        .collect();
    let user_features: Vec<String> = verify::USER_FEATURES
        .iter()
        .map(|f| (*f).to_owned())
        .collect();
    let watermarks = verify::shard_watermarks(&ds.txns, args.shards);
    let expected = |user: &str| {
        let shard = Partitioner::Murmur2
            .shard_for_key(user.as_bytes(), args.shards)
            .0;
        let q = watermarks.get(&shard).copied().unwrap_or(0);
        verify::expected_row(&ds.txns, &ds.users, user, q, now_millis() * 1000)
    };

    // Sample table: three active users, a dormant one (past TTL) and an unknown one.
    let mut sample: Vec<String> = (0..3)
        .map(|i| format!("user-{:06}", i * 7 % args.users.max(1)))
        .collect();
    if let Some(d) = ds.dormant_users.first() {
        sample.push(d.clone());
    }
    sample.push("user-unknown".into());
    let keys: Vec<EntityKey> = sample
        .iter()
        .map(|k| EntityKey {
            kind: Some(entity_key::Kind::StringValue(k.clone())),
        })
        .collect();
    let kb: Vec<Vec<u8>> = sample.iter().map(|k| k.clone().into_bytes()).collect();
    let rows = lookup(&clients, &owner, args.shards, &user_features, &keys, &kb).await?;
    println!();
    println!(
        "{:<14} {:>10} {:>8} {:>14} {:>8} {:>8}  categories_7d (last 3)",
        "user", "status", "cnt_1h", "sum_24h", "country", "new_dev"
    );
    for (key, row) in sample.iter().zip(&rows) {
        let status = FeatureStatus::try_from(row[0].0)
            .map(|s| s.as_str_name())
            .unwrap_or("?");
        println!(
            "{key:<14} {status:>10} {:>8} {:>14} {:>8} {:>8}  {}",
            fmt_kind(&row[0].1),
            fmt_kind(&row[2].1),
            fmt_kind(&row[7].1),
            fmt_kind(&row[8].1),
            fmt_kind(&row[6].1)
        );
    }
    println!();

    // Timed, verified batches over all users.
    let user_keys: Vec<&String> = ds.users.keys().collect();
    let mut rng = data::Rng::new(args.seed ^ 0x5eed);
    let mut latencies = Vec::with_capacity(args.lookups);
    let (mut checked, mut mismatches) = (0usize, 0usize);
    for _ in 0..args.lookups {
        let batch: Vec<&String> = (0..args.batch)
            .map(|_| user_keys[rng.below(user_keys.len() as u64) as usize])
            .collect();
        let keys: Vec<EntityKey> = batch
            .iter()
            .map(|k| EntityKey {
                kind: Some(entity_key::Kind::StringValue((*k).clone())),
            })
            .collect();
        let kb: Vec<Vec<u8>> = batch.iter().map(|k| k.as_bytes().to_vec()).collect();
        let started = Instant::now();
        let rows = lookup(&clients, &owner, args.shards, &user_features, &keys, &kb).await?;
        latencies.push(started.elapsed());
        for (key, row) in batch.iter().zip(&rows) {
            let want = expected(key);
            checked += 1;
            if !verify::row_matches(row, &want) {
                mismatches += 1;
                if mismatches <= 3 {
                    eprintln!("mismatch for {key}: got {row:?}, expected {want:?}");
                }
            }
        }
    }
    // Every card through the protobuf view.
    let card_features: Vec<String> = [
        "chargebacks_90d",
        "risk_score",
        "issuer_country",
        "recent_amounts",
    ]
    .iter()
    .map(|f| format!("card_risk:{f}"))
    .collect();
    let cards: Vec<(&i64, &data::Expected)> = ds.cards.iter().collect();
    for chunk in cards.chunks(500) {
        let keys: Vec<EntityKey> = chunk
            .iter()
            .map(|(id, _)| EntityKey {
                kind: Some(entity_key::Kind::Int64Value(**id)),
            })
            .collect();
        let kb: Vec<Vec<u8>> = chunk
            .iter()
            .map(|(id, _)| id.to_string().into_bytes())
            .collect();
        let rows = lookup(&clients, &owner, args.shards, &card_features, &keys, &kb).await?;
        for ((_, exp), row) in chunk.iter().zip(&rows) {
            checked += 1;
            let ok = row.iter().enumerate().all(|(i, (s, v, et))| {
                *s == FeatureStatus::Present as i32
                    && *v == exp.values[i]
                    && *et == exp.event_time_micros
            });
            if !ok {
                mismatches += 1;
            }
        }
    }
    latencies.sort();
    println!(
        "{} lookups of {} keys × {} features over gRPC (client-measured, {} node(s)): p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        latencies.len(),
        args.batch,
        user_features.len(),
        args.nodes,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!("verified {checked} rows against the produced data: {mismatches} mismatches");

    cancel.cancel();
    for n in nodes {
        n.wait().await?;
    }
    drop(mock);
    ensure!(
        malformed_seen as usize == ds.malformed,
        "expected {} malformed records to be skipped, saw {malformed_seen}",
        ds.malformed
    );
    ensure!(
        mismatches == 0,
        "{mismatches} served rows differ from the produced data"
    );
    println!("demo OK");
    Ok(())
}
