//! The demo's sample data set: raw card transactions per user (JSON) that an aggregation
//! view turns into windowed fraud features, per-user profile features (JSON) and per-card
//! risk features (protobuf), with out-of-order events, dormant users whose rows are past
//! their TTL, and a few malformed records. The generator keeps every transaction and the
//! expected latest-by-event-time row of every key so the demo can verify what it serves.

use std::collections::HashMap;

use prost::Message as _;
use quiver_proto::v1::value::Kind;
use quiver_proto::v1::{DoubleList, FeatureRow, FloatVector, Value};
use serde_json::json;

/// Registry definitions of the demo.
pub const DEFINITIONS: &str = r#"
[[entity]]
name = "user"
key_type = "string"
description = "a customer of the card issuer"

[[entity]]
name = "card"
key_type = "int64"
description = "a payment card"

[[view]]
name = "user_txn_aggs"
entity = "user"
ttl = "2d"
owner = "fraud-ml@example.com"
description = "windowed transaction aggregates per user, computed by the replicas from raw transactions"
tags = { team = "fraud", tier = "1" }
[view.source]
topic = "transactions"
format = "json"
event_time_field = "ts"
event_time_unit = "millis"
[view.aggregation]
allowed_lateness = "8d"
leading_edge = "event_time"
[[view.input]]
name = "amount"
type = "float64"
[[view.input]]
name = "merchant"
type = "string"
[[view.input]]
name = "category"
type = "string"
[[view.feature]]
name = "txn_count_1h"
function = "count"
window = "1h"
[[view.feature]]
name = "txn_count_24h"
function = "count"
window = "24h"
[[view.feature]]
name = "amount_sum_24h"
function = "sum"
input = "amount"
window = "24h"
[[view.feature]]
name = "amount_avg_7d"
function = "avg"
input = "amount"
window = "7d"
[[view.feature]]
name = "amount_max_7d"
function = "max"
input = "amount"
window = "7d"
[[view.feature]]
name = "distinct_merchants_24h"
function = "count_distinct"
input = "merchant"
window = "24h"
[[view.feature]]
name = "merchant_categories_7d"
function = "last_n"
input = "category"
window = "7d"
n = 3

[[view]]
name = "user_profile"
entity = "user"
ttl = "2d"
owner = "fraud-ml@example.com"
description = "device and location signals per user, computed upstream"
[view.source]
topic = "user_profile"
format = "json"
event_time_field = "event_time"
event_time_unit = "millis"
[[view.feature]]
name = "last_country"
type = "string"
[[view.feature]]
name = "is_new_device"
type = "bool"
[[view.feature]]
name = "spend_embedding"
type = "float32_vector"

[[view]]
name = "card_risk"
entity = "card"
ttl = "30d"
owner = "risk@example.com"
description = "card-level risk signals from the issuer"
[view.source]
topic = "card_risk"
format = "protobuf"
[[view.feature]]
name = "chargebacks_90d"
type = "int64"
[[view.feature]]
name = "risk_score"
type = "float64"
[[view.feature]]
name = "issuer_country"
type = "string"
[[view.feature]]
name = "recent_amounts"
type = "float64_list"

[[feature_service]]
name = "fraud_scoring_v1"
features = ["user_txn_aggs:*", "user_profile:*"]
description = "features of the transaction fraud model v1"
"#;

/// Deterministic PRNG (splitmix64): reproducible data for a seed, no dependency.
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// One record to produce.
pub struct Record {
    /// Topic.
    pub topic: &'static str,
    /// Kafka key.
    pub key: Vec<u8>,
    /// Payload; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
}

/// The expected latest row of a key.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Event time (µs).
    pub event_time_micros: i64,
    /// Values in view order.
    pub values: Vec<Option<Kind>>,
}

/// The generated data set.
pub struct Dataset {
    /// Records in production order.
    pub records: Vec<Record>,
    /// Latest user profile rows by key.
    pub users: HashMap<String, Expected>,
    /// Every transaction per user, in production order.
    pub txns: HashMap<String, Vec<Txn>>,
    /// Latest card rows by key.
    pub cards: HashMap<i64, Expected>,
    /// User keys whose events are older than the view's TTL.
    pub dormant_users: Vec<String>,
    /// Malformed records included.
    pub malformed: usize,
}

const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "US", "BR", "IN", "NG", "JP"];
const CATEGORIES: [&str; 8] = [
    "grocery",
    "fuel",
    "travel",
    "electronics",
    "gaming",
    "pharmacy",
    "dining",
    "crypto",
];

fn money(rng: &mut Rng, max_cents: u64) -> f64 {
    // Two decimals, so JSON round trips are exact.
    rng.below(max_cents) as f64 / 100.0
}

fn profile_values(rng: &mut Rng) -> Vec<Option<Kind>> {
    let emb: Vec<f32> = (0..8)
        .map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0)
        .collect();
    vec![
        Some(Kind::StringValue(
            COUNTRIES[rng.below(8) as usize].to_owned(),
        )),
        Some(Kind::BoolValue(rng.chance(0.05))),
        Some(Kind::Float32Vector(FloatVector { values: emb })),
    ]
}

fn profile_json(event_time_millis: i64, v: &[Option<Kind>]) -> Vec<u8> {
    let get = |i: usize| -> serde_json::Value {
        match &v[i] {
            Some(Kind::StringValue(x)) => json!(x),
            Some(Kind::BoolValue(x)) => json!(x),
            Some(Kind::Float32Vector(x)) => json!(x.values),
            _ => serde_json::Value::Null,
        }
    };
    let doc = json!({
        "event_time": event_time_millis,
        "last_country": get(0), "is_new_device": get(1), "spend_embedding": get(2),
    });
    serde_json::to_vec(&doc).expect("json serialises")
}

/// One raw card transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Event time, ms.
    pub t_millis: i64,
    /// Amount, two decimals.
    pub amount: f64,
    /// Merchant id.
    pub merchant: String,
    /// Merchant category.
    pub category: &'static str,
}

fn txn_json(t: &Txn) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ts": t.t_millis, "amount": t.amount, "merchant": t.merchant, "category": t.category,
    }))
    .expect("json serialises")
}

/// Transactions of one user: at least one in the last hour, the rest over 7 days (a
/// dormant user's all 3 to 7 days old), in a shuffled delivery order.
fn user_txns(rng: &mut Rng, now_millis: i64, dormant: bool) -> Vec<Txn> {
    const MIN: i64 = 60_000;
    let n = 2 + rng.below(6) as usize;
    let mut out: Vec<Txn> = (0..n)
        .map(|i| {
            let age = if dormant {
                3 * 1440 * MIN + rng.below((4 * 1440 * MIN - MIN) as u64) as i64
            } else if i == 0 || rng.chance(0.3) {
                MIN + rng.below((50 * MIN) as u64) as i64
            } else if rng.chance(0.5) {
                rng.below((24 * 60 * MIN) as u64) as i64 + MIN
            } else {
                rng.below((7 * 1440 * MIN - 60 * MIN) as u64) as i64 + MIN
            };
            Txn {
                t_millis: now_millis - age,
                amount: money(rng, 200_000),
                merchant: format!("m{}", rng.below(500)),
                category: CATEGORIES[rng.below(8) as usize],
            }
        })
        .collect();
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

fn card_values(rng: &mut Rng) -> Vec<Option<Kind>> {
    let n = rng.below(5) as usize;
    vec![
        Some(Kind::Int64Value(rng.below(4) as i64)),
        Some(Kind::Float64Value(rng.below(1000) as f64 / 1000.0)),
        Some(Kind::StringValue(
            COUNTRIES[rng.below(8) as usize].to_owned(),
        )),
        Some(Kind::Float64List(DoubleList {
            values: (0..n).map(|_| money(rng, 100_000)).collect(),
        })),
    ]
}

fn card_proto(event_time_micros: i64, v: &[Option<Kind>]) -> Vec<u8> {
    let names = [
        "chargebacks_90d",
        "risk_score",
        "issuer_country",
        "recent_amounts",
    ];
    let features = names
        .iter()
        .zip(v)
        .map(|(n, k)| ((*n).to_owned(), Value { kind: k.clone() }))
        .collect();
    FeatureRow {
        event_time_micros,
        features,
    }
    .encode_to_vec()
}

/// Generates `users` users with `events_per_user` events each, `cards` cards with two
/// events each, and `malformed` broken records, relative to `now_millis`.
pub fn generate(
    seed: u64,
    users: usize,
    events_per_user: usize,
    cards: usize,
    malformed: usize,
    now_millis: i64,
) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut records = Vec::with_capacity(users * events_per_user + cards * 2 + malformed);
    let mut expected_users = HashMap::with_capacity(users);
    let mut txns = HashMap::with_capacity(users);
    let mut dormant_users = Vec::new();
    for u in 0..users {
        let key = format!("user-{u:06}");
        // 2% of users went quiet three days ago: their rows are past the 2-day TTL.
        let dormant = rng.chance(0.02);
        let base = if dormant {
            now_millis - 3 * 86_400_000
        } else {
            now_millis - 3_600_000
        };
        let mut events: Vec<(i64, Vec<Option<Kind>>)> = (0..events_per_user)
            .map(|i| {
                (
                    base + (i as i64) * 60_000 + rng.below(59_000) as i64,
                    profile_values(&mut rng),
                )
            })
            .collect();
        // Out-of-order delivery: swap neighbours for 20% of users.
        if events.len() > 1 && rng.chance(0.2) {
            let i = rng.below(events.len() as u64 - 1) as usize;
            events.swap(i, i + 1);
        }
        let latest = events
            .iter()
            .max_by_key(|(t, _)| *t)
            .expect("events_per_user > 0");
        expected_users.insert(
            key.clone(),
            Expected {
                event_time_micros: latest.0 * 1000,
                values: latest.1.clone(),
            },
        );
        if dormant {
            dormant_users.push(key.clone());
        }
        for (t, v) in &events {
            records.push(Record {
                topic: "user_profile",
                key: key.clone().into_bytes(),
                payload: Some(profile_json(*t, v)),
            });
        }
        let user_txns = user_txns(&mut rng, now_millis, dormant);
        for t in &user_txns {
            records.push(Record {
                topic: "transactions",
                key: key.clone().into_bytes(),
                payload: Some(txn_json(t)),
            });
        }
        txns.insert(key, user_txns);
    }
    let mut expected_cards = HashMap::with_capacity(cards);
    for c in 0..cards {
        let id = 4_000_000_000_000_000i64 + c as i64 * 7919;
        let t1 = (now_millis - 7_200_000) * 1000 + rng.below(1_000_000) as i64;
        let t2 = t1 + 1_000_000 + rng.below(1_000_000) as i64;
        let (v1, v2) = (card_values(&mut rng), card_values(&mut rng));
        // The newer event is produced first for every card: LWW must keep it.
        records.push(Record {
            topic: "card_risk",
            key: id.to_string().into_bytes(),
            payload: Some(card_proto(t2, &v2)),
        });
        records.push(Record {
            topic: "card_risk",
            key: id.to_string().into_bytes(),
            payload: Some(card_proto(t1, &v1)),
        });
        expected_cards.insert(
            id,
            Expected {
                event_time_micros: t2,
                values: v2,
            },
        );
    }
    // Malformed records: a type error, truncated JSON, a missing key, a garbage protobuf.
    for i in 0..malformed {
        let r = match i % 4 {
            0 => Record {
                topic: "transactions",
                key: b"user-bad".to_vec(),
                payload: Some(br#"{"ts": 1, "amount": "many"}"#.to_vec()),
            },
            1 => Record {
                topic: "user_profile",
                key: b"user-bad".to_vec(),
                payload: Some(br#"{"event_time": 1, "#.to_vec()),
            },
            2 => Record {
                topic: "transactions",
                key: Vec::new(),
                payload: Some(br#"{"event_time": 1}"#.to_vec()),
            },
            _ => Record {
                topic: "card_risk",
                key: b"17".to_vec(),
                payload: Some(vec![0xff; 7]),
            },
        };
        let at = rng.below(records.len() as u64 + 1) as usize;
        records.insert(at, r);
    }
    Dataset {
        records,
        users: expected_users,
        txns,
        cards: expected_cards,
        dormant_users,
        malformed,
    }
}
