//! `quiverctl view versions VIEW`: every version of a view — serving, pending (being
//! re-ingested beside it, with each replica's progress: its offsets against the serving
//! version's, per shard), retained (since when, and until when) and dropped — and what
//! each pending or retained one changes against the serving one.

use quiver_client::NodeClient;
use quiver_proto::transport::Credentials;
use quiver_proto::v1::GetStatusResponse;
use serde_json::{Value as Json, json};

use crate::cli::Output;

/// What changed from `old` to `new` (view definitions as `DescribeView` returns them).
pub(crate) fn diff(old: &Json, new: &Json) -> Vec<String> {
    let mut out = Vec::new();
    let features = |v: &Json| -> Vec<(String, String, String)> {
        v["features"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
                (s("name"), s("value_type"), s("source_field"))
            })
            .collect()
    };
    let (a, b) = (features(old), features(new));
    for (name, ty, field) in &b {
        match a.iter().find(|(n, _, _)| n == name) {
            None => out.push(format!("+ feature {name} ({ty})")),
            Some((_, old_ty, _)) if old_ty != ty => {
                out.push(format!("~ feature {name}: {old_ty} → {ty}"));
            }
            Some((_, _, old_field)) if old_field != field => {
                out.push(format!(
                    "~ feature {name}: source field {old_field} → {field}"
                ));
            }
            Some(_) => {}
        }
    }
    for (name, ty, _) in &a {
        if !b.iter().any(|(n, _, _)| n == name) {
            out.push(format!("- feature {name} ({ty})"));
        }
    }
    for key in ["ttl", "entity"] {
        if old[key] != new[key] {
            out.push(format!("~ {key}: {} → {}", old[key], new[key]));
        }
    }
    for key in ["topic", "format", "event_time_field", "event_time_unit"] {
        if old["source"][key] != new["source"][key] {
            out.push(format!(
                "~ source {key}: {} → {}",
                old["source"][key], new["source"][key]
            ));
        }
    }
    out
}

/// Per replica and shard, how far the pending version's re-ingest is: its next offset,
/// the serving version's, and the broker's end, from each node's status.
pub(crate) fn progress(
    topic: &str,
    view: &str,
    pending_version: u64,
    statuses: &[GetStatusResponse],
) -> Vec<Json> {
    let stream = format!("{topic}#{view}@{pending_version}");
    let mut rows = Vec::new();
    for st in statuses {
        for sh in &st.shards {
            let part = |t: &str| sh.partitions.iter().find(|p| p.topic == t);
            let Some(p) = part(&stream) else { continue };
            let serving_next = part(topic).map(|s| s.next_offset);
            rows.push(json!({
                "node_id": st.node_id,
                "shard": sh.shard,
                "next_offset": p.next_offset,
                "serving_next_offset": serving_next,
                "behind_serving": serving_next.map(|s| (s - p.next_offset).max(0)),
                "high_watermark": p.high_watermark,
                "lag": p.lag,
                "reached_end": p.reached_end,
            }));
        }
    }
    rows
}

/// Every node's status: the members of the cluster map in cluster mode (dialled through
/// `connect_to` where it translates their advertised address), else the node addressed
/// (a static node knows no others).
async fn statuses(
    client: &mut NodeClient,
    credentials: &Credentials,
    connect_to: &[(String, String)],
) -> anyhow::Result<Vec<GetStatusResponse>> {
    let Ok(map) = client.cluster_map().await else {
        return Ok(vec![client.status().await?]);
    };
    let mut out = Vec::new();
    for m in &map.members {
        let addr = connect_to
            .iter()
            .find(|(advertised, _)| *advertised == m.addr)
            .map_or(m.addr.as_str(), |(_, reachable)| reachable.as_str());
        let status = async {
            let mut c = NodeClient::connect_with(addr, credentials).await?;
            c.status().await
        }
        .await;
        match status {
            Ok(s) => out.push(s),
            Err(e) => eprintln!("node {} ({}): no status: {e}", m.node_id, m.addr),
        }
    }
    Ok(out)
}

/// RFC 3339 of a time in ms since the epoch (`-` for none).
fn time_text(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs()),
    )
    .to_string()
}

pub(crate) async fn run(
    client: &mut NodeClient,
    credentials: &Credentials,
    connect_to: &[(String, String)],
    name: &str,
    output: Output,
) -> anyhow::Result<()> {
    let listed = client.view_versions(name).await?;
    let definition = |v: &quiver_proto::v1::ViewVersionInfo| -> Json {
        serde_json::from_str(&v.definition_json).unwrap_or(Json::Null)
    };
    let serving = listed.iter().find(|v| v.state == "serving").map(definition);
    let mut statuses_read = None;
    let mut versions = Vec::new();
    for v in &listed {
        let def = definition(v);
        let mut s = json!({
            "version": v.version,
            "state": v.state,
            "features": def["features"].as_array().map_or(0, Vec::len),
            "ttl": def["ttl"],
            "topic": def["source"]["topic"],
        });
        if v.state == "retained" {
            s["retired_at"] = json!(time_text(v.retired_at_ms));
            s["dropped_after"] = json!(time_text(v.drop_after_ms));
        }
        if let (Some(cur), "pending" | "retained") = (&serving, v.state.as_str()) {
            s["changes"] = json!(diff(cur, &def));
        }
        if v.state == "pending" {
            if statuses_read.is_none() {
                statuses_read = Some(statuses(client, credentials, connect_to).await?);
            }
            let topic = def["source"]["topic"].as_str().unwrap_or_default();
            let all = statuses_read.as_deref().unwrap_or_default();
            s["replicas"] = json!(progress(topic, name, u64::from(v.version), all));
        }
        versions.push(s);
    }
    if output == Output::Json {
        println!("{}", json!({"view": name, "versions": versions}));
        return Ok(());
    }
    print_table(&versions);
    Ok(())
}

fn print_table(versions: &[Json]) {
    println!(
        "{:>8}  {:<9} {:>8}  {:<10} {:<24} {:<22} dropped after",
        "version", "state", "features", "ttl", "topic", "retired at"
    );
    let text = |v: &Json| v.as_str().unwrap_or("-").to_owned();
    for v in versions {
        println!(
            "{:>8}  {:<9} {:>8}  {:<10} {:<24} {:<22} {}",
            v["version"],
            text(&v["state"]),
            v["features"],
            v["ttl"].as_str().unwrap_or("none"),
            text(&v["topic"]),
            text(&v["retired_at"]),
            text(&v["dropped_after"])
        );
    }
    for v in versions {
        let Some(changes) = v["changes"].as_array() else {
            continue;
        };
        println!(
            "\nversion {} ({}) against the serving one:",
            v["version"],
            text(&v["state"])
        );
        if changes.is_empty() {
            println!("  (no change in features, TTL, entity or source)");
        }
        for c in changes {
            println!("  {}", c.as_str().unwrap_or_default());
        }
        let Some(replicas) = v["replicas"].as_array() else {
            continue;
        };
        println!(
            "re-ingest per replica:\n{:>6} {:>6} {:>12} {:>14} {:>10} {:>6}  caught-up",
            "node", "shard", "next offset", "serving next", "behind", "lag"
        );
        for r in replicas {
            println!(
                "{:>6} {:>6} {:>12} {:>14} {:>10} {:>6}  {}",
                r["node_id"],
                r["shard"],
                r["next_offset"],
                r["serving_next_offset"],
                r["behind_serving"],
                r["lag"],
                r["reached_end"]
            );
        }
    }
}

/// Prints what a registry change did, one line each (or a JSON object).
pub(crate) fn print_changes(changes: &[String], output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::json!({ "changes": changes }));
    } else {
        for c in changes {
            println!("{c}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::v1::{PartitionStatus, ShardStatus};

    fn view(version: u64, features: Json, ttl: Json) -> Json {
        json!({"name": "v", "version": version, "entity": "user", "features": features, "ttl": ttl,
               "source": {"topic": "t", "format": "json", "event_time_field": "ts", "event_time_unit": "millis"}})
    }

    #[test]
    fn the_diff_names_every_change() {
        let old = view(
            1,
            json!([{"name": "a", "value_type": "int64", "source_field": "a"},
                   {"name": "b", "value_type": "string", "source_field": "b"},
                   {"name": "c", "value_type": "bool", "source_field": "c"}]),
            json!("1h"),
        );
        let new = view(
            2,
            json!([{"name": "a", "value_type": "float64", "source_field": "a"},
                   {"name": "c", "value_type": "bool", "source_field": "cc"},
                   {"name": "d", "value_type": "bytes", "source_field": "d"}]),
            json!("2h"),
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                "~ feature a: int64 → float64",
                "~ feature c: source field c → cc",
                "+ feature d (bytes)",
                "- feature b (string)",
                "~ ttl: \"1h\" → \"2h\"",
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn progress_reads_the_pending_stream_against_the_serving_one() {
        let part = |topic: &str, next: i64, end: bool| PartitionStatus {
            topic: topic.into(),
            next_offset: next,
            high_watermark: 100,
            lag: 100 - next,
            reached_end: end,
            ..Default::default()
        };
        let status = GetStatusResponse {
            node_id: 3,
            shards: vec![
                ShardStatus {
                    shard: 0,
                    partitions: vec![part("t", 100, true), part("t#v@2", 40, false)],
                    ..Default::default()
                },
                // A shard of another view's pending version only: not listed.
                ShardStatus {
                    shard: 1,
                    partitions: vec![part("t", 90, true), part("t#w@2", 10, false)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let rows = progress("t", "v", 2, &[status]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["node_id"], 3);
        assert_eq!(rows[0]["behind_serving"], 60);
        assert_eq!(rows[0]["lag"], 60);
        assert_eq!(rows[0]["reached_end"], false);
    }
}
