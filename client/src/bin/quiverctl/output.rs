//! How quiverctl prints: lookup results, the cluster map, values as JSON.

use base64::Engine as _;
use quiver_client::LookupResult;
use quiver_proto::json_number;
use quiver_proto::v1::FeatureStatus;
use quiver_proto::v1::value::Kind;
use serde_json::{Value as Json, json};

use crate::cli::Output;

/// A float as JSON: the shortest text that parses back to the same bits, or the string
/// `"NaN"`, `"Infinity"`, `"-Infinity"` (see `quiver_proto::json_number`).
pub(crate) fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || Json::String(json_number::f64_text(f).trim_matches('"').to_owned()),
        Json::Number,
    )
}

/// A float32 as JSON: the shortest decimal of the f32 (read it back as float32; as a
/// float64 it is the nearest double to that decimal, not the widened f32).
pub(crate) fn float32_json(f: f32) -> Json {
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
pub(crate) fn freshness(newest_event_time_micros: i64) -> Option<f64> {
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

pub(crate) fn print_cluster(map: &quiver_proto::v1::ClusterMap, output: Output) {
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

pub(crate) fn status_name(s: FeatureStatus) -> &'static str {
    match s {
        FeatureStatus::Present => "PRESENT",
        FeatureStatus::NotFound => "NOT_FOUND",
        FeatureStatus::Expired => "EXPIRED",
        FeatureStatus::Unspecified => "UNSPECIFIED",
    }
}

pub(crate) fn print_rows(keys: &[String], r: &LookupResult, output: Output) -> anyhow::Result<()> {
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
