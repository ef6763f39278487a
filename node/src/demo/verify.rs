//! What the demo expects each user's lookup to answer: the aggregation view's windows
//! computed straight from the produced transactions by the documented rule
//! (docs/AGGREGATIONS.md), and the latest profile row.

use std::collections::HashMap;

use quiver_proto::Partitioner;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{FeatureStatus, StringList};

use super::data::{Expected, Txn};

/// The user features the demo reads, in order: the aggregation view's, then the profile's.
pub const USER_FEATURES: [&str; 10] = [
    "user_txn_aggs:txn_count_1h",
    "user_txn_aggs:txn_count_24h",
    "user_txn_aggs:amount_sum_24h",
    "user_txn_aggs:amount_avg_7d",
    "user_txn_aggs:amount_max_7d",
    "user_txn_aggs:distinct_merchants_24h",
    "user_txn_aggs:merchant_categories_7d",
    "user_profile:last_country",
    "user_profile:is_new_device",
    "user_profile:spend_embedding",
];
/// Index of the first profile feature.
const PROFILE: usize = 7;
/// Index of the `count_distinct` feature (HyperLogLog: compared within ±1).
const DISTINCT: usize = 5;

/// One answered cell: status, value, event time.
pub type Cell = (i32, Option<Kind>, i64);

const MIN: i64 = 60_000_000;
const HOUR: i64 = 60 * MIN;

/// The event-time watermark of the aggregation view on each shard: the newest transaction
/// time produced to it (the view's lateness, 8 days, drops none of the demo's).
pub fn shard_watermarks(txns: &HashMap<String, Vec<Txn>>, shards: u32) -> HashMap<u32, i64> {
    let mut out: HashMap<u32, i64> = HashMap::new();
    for (user, txns) in txns {
        let shard = Partitioner::Murmur2
            .shard_for_key(user.as_bytes(), shards)
            .0;
        for t in txns {
            let w = out.entry(shard).or_insert(i64::MIN);
            *w = (*w).max(t.t_millis * 1000);
        }
    }
    out
}

fn floor(t: i64, hop: i64) -> i64 {
    t.div_euclid(hop) * hop
}

/// The aggregation view's seven answers at query time `q` (µs).
fn aggregates(txns: &[Txn], q: i64) -> Vec<Option<Kind>> {
    let within = |w: i64, h: i64| {
        let start = floor(q - w, h);
        txns.iter().filter(move |t| t.t_millis * 1000 >= start)
    };
    let count = |w: i64, h: i64| {
        let n = within(w, h).count() as i64;
        (n > 0).then_some(Kind::Int64Value(n))
    };
    let amounts_7d: Vec<f64> = within(7 * 24 * HOUR, HOUR).map(|t| t.amount).collect();
    let sum_24h: Vec<f64> = within(24 * HOUR, HOUR).map(|t| t.amount).collect();
    let mut merchants: Vec<&str> = within(24 * HOUR, HOUR)
        .map(|t| t.merchant.as_str())
        .collect();
    merchants.sort_unstable();
    merchants.dedup();
    // Newest three by event time; equal times keep production order.
    let mut recent: Vec<(i64, usize, &str)> = within(7 * 24 * HOUR, HOUR)
        .enumerate()
        .map(|(i, t)| (t.t_millis, i, t.category))
        .collect();
    recent.sort_unstable();
    let last3: Vec<String> = recent
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|x| x.2.to_owned())
        .collect();
    vec![
        count(HOUR, 5 * MIN),
        count(24 * HOUR, HOUR),
        (!sum_24h.is_empty()).then(|| Kind::Float64Value(sum_24h.iter().sum())),
        (!amounts_7d.is_empty())
            .then(|| Kind::Float64Value(amounts_7d.iter().sum::<f64>() / amounts_7d.len() as f64)),
        (!amounts_7d.is_empty())
            .then(|| Kind::Float64Value(amounts_7d.iter().copied().fold(f64::MIN, f64::max))),
        (!merchants.is_empty()).then_some(Kind::Int64Value(merchants.len() as i64)),
        (!last3.is_empty()).then_some(Kind::StringList(StringList { values: last3 })),
    ]
}

/// The expected row of `user` when its shard's watermark is `q` and the clock `now` (µs).
pub fn expected_row(
    txns: &HashMap<String, Vec<Txn>>,
    users: &HashMap<String, Expected>,
    user: &str,
    q: i64,
    now: i64,
) -> Vec<Cell> {
    let ttl = 2 * 24 * HOUR;
    let txns = &txns[user];
    let newest = txns.iter().map(|t| t.t_millis * 1000).max().unwrap_or(0);
    let mut row: Vec<Cell> = if now - newest > ttl {
        vec![(FeatureStatus::Expired as i32, None, newest); PROFILE]
    } else {
        aggregates(txns, q)
            .into_iter()
            .map(|v| match v {
                Some(v) => (FeatureStatus::Present as i32, Some(v), newest),
                None => (FeatureStatus::NotFound as i32, None, 0),
            })
            .collect()
    };
    let profile = &users[user];
    let expired = now - profile.event_time_micros > ttl;
    for v in &profile.values {
        row.push(if expired {
            (
                FeatureStatus::Expired as i32,
                None,
                profile.event_time_micros,
            )
        } else {
            (
                FeatureStatus::Present as i32,
                v.clone(),
                profile.event_time_micros,
            )
        });
    }
    row
}

/// Whether an answered row equals the expected one: exactly, except float sums and means
/// (their additions ran in another order: within 1e-9 relative) and the distinct count
/// (a HyperLogLog estimate: within ±1 at these sizes).
pub fn row_matches(got: &[Cell], want: &[Cell]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).enumerate().all(|(i, (g, w))| {
            g.0 == w.0
                && g.2 == w.2
                && match (&g.1, &w.1) {
                    (Some(Kind::Float64Value(a)), Some(Kind::Float64Value(b))) => {
                        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
                    }
                    (Some(Kind::Int64Value(a)), Some(Kind::Int64Value(b))) if i == DISTINCT => {
                        (a - b).abs() <= 1
                    }
                    (a, b) => a == b,
                }
        })
}
