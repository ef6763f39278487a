//! The data every system is loaded with and asked for: `entities` entities (`u0000042`),
//! and for each feature count F a view `bench_f{F}` of F float64 features `f0..f{F-1}`
//! whose values are a pure function of (seed, entity, feature), so any system's answer can
//! be checked. Keys are chosen uniformly or by a Zipf law, from a seeded generator.

use std::sync::Arc;

use serde::Serialize;

/// Entities and seed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Dataset {
    /// Distinct entities.
    pub entities: u32,
    /// Seed of values and key choices.
    pub seed: u64,
}

/// A 64-bit mix (splitmix64's finaliser): deterministic, well spread.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Entity key of entity `k`.
pub fn key(k: u32) -> String {
    format!("u{k:07}")
}

/// View (and topic) name of the F-feature view.
pub fn view(features: u32) -> String {
    format!("bench_f{features}")
}

/// Name of the aggregation view over the F-feature view's topic.
pub fn aggregation_view(features: u32) -> String {
    format!("bench_f{features}_aggs")
}

/// Name of the view with `history` over the F-feature view's topic (same features).
pub fn history_view(features: u32) -> String {
    format!("bench_f{features}_hist")
}

/// `hist_view:f0 … hist_view:f{F-1}`.
pub fn history_refs(features: u32) -> Vec<String> {
    let v = history_view(features);
    (0..features).map(|i| format!("{v}:f{i}")).collect()
}

/// `view:f0 … view:f{F-1}`.
pub fn feature_refs(features: u32) -> Vec<String> {
    let v = view(features);
    (0..features).map(|i| format!("{v}:f{i}")).collect()
}

impl Dataset {
    /// Value of feature `i` of entity `k`: a float64 in [0, 1024) with a random 53-bit
    /// significand, so its shortest decimal has 15-17 digits and any system that rounds
    /// on the way (a lossy JSON parser, a float32 or decimal detour) fails the answer
    /// check. `feast.py` computes the same bits with NumPy.
    pub fn value(&self, k: u32, i: u32) -> f64 {
        let h = mix(self.seed ^ (u64::from(k) << 20) ^ u64::from(i));
        (h >> 11) as f64 / (1u64 << 53) as f64 * 1024.0
    }

    /// The JSON record of entity `k` in the F-feature view, event time `ts_ms`.
    pub fn json_record(&self, k: u32, features: u32, ts_ms: i64) -> Vec<u8> {
        let mut s = String::with_capacity(16 + features as usize * 16);
        s.push_str(&format!("{{\"ts\":{ts_ms}"));
        for i in 0..features {
            s.push_str(&format!(",\"f{i}\":{}", self.value(k, i)));
        }
        s.push('}');
        s.into_bytes()
    }

    /// Registry definitions of the views for every count in `features`.
    pub fn definitions(features: &[u32]) -> String {
        let mut s = String::from("[[entity]]\nname = \"user\"\nkey_type = \"string\"\n");
        for f in features {
            plain_view(&mut s, &view(*f), *f, "");
        }
        s
    }

    /// The F-feature view alone at `version` (same features and topic): a new version
    /// the replicas build by replaying the topic.
    pub fn versioned_definitions(features: u32, version: u32) -> String {
        let mut s = String::from("[[entity]]\nname = \"user\"\nkey_type = \"string\"\n");
        plain_view(
            &mut s,
            &view(features),
            features,
            &format!("version = {version}\n"),
        );
        s
    }

    /// A view with `history = "7d"` per F-feature view, over the same topic and with the
    /// same features (`history_view`).
    pub fn history_definitions(features: &[u32]) -> String {
        let mut s = String::new();
        for f in features {
            plain_view(&mut s, &history_view(*f), *f, "history = \"7d\"\n");
        }
        s
    }
}

/// Appends view `name` of `f` float64 features over the F-feature view's topic, with
/// `extra` lines in its table.
fn plain_view(s: &mut String, name: &str, f: u32, extra: &str) {
    let topic = view(f);
    s.push_str(&format!(
        "\n[[view]]\nname = \"{name}\"\nentity = \"user\"\n{extra}[view.source]\ntopic = \"{topic}\"\nevent_time_field = \"ts\"\n"
    ));
    for i in 0..f {
        s.push_str(&format!(
            "[[view.feature]]\nname = \"f{i}\"\ntype = \"float64\"\n"
        ));
    }
}

impl Dataset {
    /// An aggregation view per F-feature view, over the same topic: six windowed features
    /// (count 1 h, sum 1 h, avg 24 h, max 24 h, sum 7 d, count 7 d) of its first inputs.
    pub fn aggregation_definitions(features: &[u32]) -> String {
        let mut s = String::new();
        for f in features {
            let (v, a) = (view(*f), aggregation_view(*f));
            s.push_str(&format!(
                "\n[[view]]\nname = \"{a}\"\nentity = \"user\"\n[view.source]\ntopic = \"{v}\"\nevent_time_field = \"ts\"\n[view.aggregation]\nallowed_lateness = \"1h\"\n"
            ));
            let inputs = (*f).min(3);
            for i in 0..inputs {
                s.push_str(&format!(
                    "[[view.input]]\nname = \"f{i}\"\ntype = \"float64\"\n"
                ));
            }
            for (name, function, input, window) in AGGREGATES {
                s.push_str(&format!(
                    "[[view.feature]]\nname = \"{name}\"\nfunction = \"{function}\"\nwindow = \"{window}\"\n"
                ));
                if let Some(i) = input {
                    s.push_str(&format!("input = \"f{}\"\n", i % inputs));
                }
            }
        }
        s
    }

    /// What the aggregation view of the F-feature view answers for entity `k`, in
    /// [`AGGREGATES`] order, when the entity has `events` records within the last six days
    /// of which exactly one within the last hour (every record of an entity carries the
    /// same values): counts exact, sums to within float rounding.
    pub fn aggregates(&self, k: u32, features: u32, events: u32) -> [f64; 6] {
        let inputs = features.min(3);
        let v = |i: u32| self.value(k, i % inputs);
        let n = f64::from(events);
        [1.0, v(0), v(1), v(2), n * v(0), n]
    }
}

/// The six windowed features of the bench's aggregation views: name, function, input
/// index (modulo the view's first three inputs), window.
pub const AGGREGATES: [(&str, &str, Option<u32>, &str); 6] = [
    ("n_1h", "count", None, "1h"),
    ("sum_1h", "sum", Some(0), "1h"),
    ("avg_24h", "avg", Some(1), "24h"),
    ("max_24h", "max", Some(2), "24h"),
    ("sum_7d", "sum", Some(0), "7d"),
    ("n_7d", "count", None, "7d"),
];

/// `agg_view:n_1h … agg_view:n_7d`: the six windowed features of the aggregation view
/// over the F-feature view's topic.
pub fn aggregate_refs(features: u32) -> Vec<String> {
    let a = aggregation_view(features);
    AGGREGATES
        .iter()
        .map(|(n, ..)| format!("{a}:{n}"))
        .collect()
}

/// How lookups choose keys.
#[derive(Debug, Clone)]
pub enum KeyChoice {
    /// Every entity equally likely.
    Uniform,
    /// Entity of rank r chosen with probability ∝ 1/r^s (cumulative table, binary search).
    Zipf {
        /// Exponent s.
        exponent: f64,
        /// Cumulative probabilities by rank.
        cdf: Arc<Vec<f64>>,
    },
}

impl KeyChoice {
    /// Parses `uniform` or `zipf:S` (e.g. `zipf:0.99`) over `entities` entities.
    ///
    /// # Errors
    /// Names the text that is neither.
    pub fn parse(s: &str, entities: u32) -> Result<KeyChoice, String> {
        if s == "uniform" {
            return Ok(KeyChoice::Uniform);
        }
        let exponent: f64 = s
            .strip_prefix("zipf:")
            .and_then(|e| e.parse().ok())
            .filter(|e: &f64| *e > 0.0 && e.is_finite())
            .ok_or_else(|| {
                format!("key choice {s:?}: expected `uniform` or `zipf:S` with S > 0")
            })?;
        let mut cdf = Vec::with_capacity(entities as usize);
        let mut total = 0.0;
        for r in 1..=entities {
            total += 1.0 / f64::from(r).powf(exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Ok(KeyChoice::Zipf {
            exponent,
            cdf: Arc::new(cdf),
        })
    }

    /// A label for reports.
    pub fn label(&self) -> String {
        match self {
            KeyChoice::Uniform => "uniform".into(),
            KeyChoice::Zipf { exponent, .. } => format!("zipf:{exponent}"),
        }
    }

    /// The `j`-th key of request `n` (stateless: any task can draw any request's keys).
    /// Zipf ranks are scattered over entity numbers so hot keys land on every shard.
    pub fn entity(&self, ds: &Dataset, n: u64, j: u64) -> u32 {
        let h = mix(ds.seed ^ mix(n.wrapping_mul(0x1000_0000_01B3) ^ j));
        match self {
            KeyChoice::Uniform => (h % u64::from(ds.entities)) as u32,
            KeyChoice::Zipf { cdf, .. } => {
                let u = (h >> 11) as f64 / (1u64 << 53) as f64;
                let rank = cdf.partition_point(|c| *c < u).min(cdf.len() - 1) as u64;
                (mix(rank ^ ds.seed) % u64::from(ds.entities)) as u32
            }
        }
    }

    /// The `batch` entities of request `n`.
    pub fn batch(&self, ds: &Dataset, n: u64, batch: u32) -> Vec<u32> {
        (0..u64::from(batch))
            .map(|j| self.entity(ds, n, j))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_exact_in_decimal() {
        let ds = Dataset {
            entities: 10,
            seed: 7,
        };
        assert_eq!(ds.value(3, 4), ds.value(3, 4));
        let v = ds.value(3, 4);
        assert_eq!(v.to_string().parse::<f64>().unwrap(), v);
        let rec: serde_json::Value = serde_json::from_slice(&ds.json_record(3, 5, 1000)).unwrap();
        assert_eq!(rec["f4"].as_f64(), Some(v));
        assert_eq!(rec["ts"].as_i64(), Some(1000));
    }

    #[test]
    fn zipf_prefers_hot_keys_and_uniform_spreads() {
        let ds = Dataset {
            entities: 1000,
            seed: 1,
        };
        let count = |kc: &KeyChoice| {
            let mut seen = std::collections::HashMap::<u32, u32>::new();
            for n in 0..2000 {
                for k in kc.batch(&ds, n, 10) {
                    assert!(k < 1000);
                    *seen.entry(k).or_default() += 1;
                }
            }
            *seen.values().max().unwrap()
        };
        let hottest_zipf = count(&KeyChoice::parse("zipf:1.1", 1000).unwrap());
        let hottest_uniform = count(&KeyChoice::parse("uniform", 1000).unwrap());
        // 20,000 draws: uniform puts ~20 on each key; Zipf(1.1) ~1/ζ ≈ 17 % on the hottest.
        assert!(hottest_uniform < 60, "uniform hottest {hottest_uniform}");
        assert!(hottest_zipf > 1000, "zipf hottest {hottest_zipf}");
        assert!(KeyChoice::parse("zipf:x", 10).is_err());
        assert!(KeyChoice::parse("pareto", 10).is_err());
    }

    #[test]
    fn history_definitions_are_valid_and_keep_history() {
        let r = quiver_node::registry::Registry::in_memory();
        let mut d = Dataset::definitions(&[3]);
        d.push_str(&Dataset::history_definitions(&[3]));
        r.apply_toml(&d, false).expect("valid");
        let snap = r.snapshot();
        assert_eq!(snap.views["bench_f3"].history, None);
        let h = &snap.views["bench_f3_hist"];
        assert_eq!(h.history, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(h.source.topic, "bench_f3");
        assert_eq!(
            history_refs(3),
            ["bench_f3_hist:f0", "bench_f3_hist:f1", "bench_f3_hist:f2"]
        );
    }

    #[test]
    fn aggregation_definitions_are_valid() {
        let r = quiver_node::registry::Registry::in_memory();
        let mut d = Dataset::definitions(&[10]);
        d.push_str(&Dataset::aggregation_definitions(&[10]));
        r.apply_toml(&d, false).expect("valid");
        let snap = r.snapshot();
        assert_eq!(snap.views["bench_f10_aggs"].features.len(), 6);
        assert!(snap.pending.is_empty(), "both views serve from the start");
    }

    #[test]
    fn definitions_name_every_feature() {
        let d = Dataset::definitions(&[2, 3]);
        assert!(d.contains("name = \"bench_f2\"") && d.contains("name = \"bench_f3\""));
        assert_eq!(d.matches("[[view.feature]]").count(), 5);
        assert_eq!(feature_refs(2), vec!["bench_f2:f0", "bench_f2:f1"]);
    }
}
