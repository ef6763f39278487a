//! Aggregation views: features computed by the replicas from raw events (count, sum, avg,
//! min, max, stddev, variance, last, last_n, count_distinct over sliding windows).
//!
//! This module is the validated model and its checks; the computation (tiles, windows,
//! sketches) is [`crate::aggregate`]. The window rule, documented in `docs/AGGREGATIONS.md`:
//! at query time `q`, a feature with window `W` and hop `h` aggregates the entity's counted
//! events with event time `t ≥ floor(q − W, h)` (a *sawtooth* window: its length moves
//! between `W` and `W + h`); `lifetime` aggregates every counted event.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::model::{Feature, FeatureType, FeatureView};

/// Shortest window and hop.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
/// Longest finite window.
pub const MAX_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most tiles one feature's window may span (`window / hop`).
pub const MAX_TILES_PER_WINDOW: i64 = 1000;
/// Largest `n` of `last_n`.
pub const MAX_LAST_N: usize = 100;
/// Default `allowed_lateness`.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(5 * 60);
/// Default `max_future`.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(24 * 3600);

/// An aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Events (or non-null inputs) counted; int64.
    Count,
    /// Sum of the input; int64 (wrapping) or float64 like the input.
    Sum,
    /// Mean of the input; float64.
    Avg,
    /// Smallest input; the input's type.
    Min,
    /// Largest input; the input's type.
    Max,
    /// Population standard deviation; float64.
    Stddev,
    /// Population variance; float64.
    Variance,
    /// The input of the newest event (ties: the later record); the input's type.
    Last,
    /// The inputs of the newest `n` events, oldest first; a list.
    LastN,
    /// Distinct inputs, estimated by HyperLogLog; int64.
    CountDistinct,
}

impl Function {
    /// Every function.
    pub const ALL: [Function; 10] = [
        Function::Count,
        Function::Sum,
        Function::Avg,
        Function::Min,
        Function::Max,
        Function::Stddev,
        Function::Variance,
        Function::Last,
        Function::LastN,
        Function::CountDistinct,
    ];

    /// Name used in definition files.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::Sum => "sum",
            Function::Avg => "avg",
            Function::Min => "min",
            Function::Max => "max",
            Function::Stddev => "stddev",
            Function::Variance => "variance",
            Function::Last => "last",
            Function::LastN => "last_n",
            Function::CountDistinct => "count_distinct",
        }
    }

    /// The output type for an input of type `input` (`None`: no input), or why the pair
    /// is not allowed.
    pub fn output_type(self, input: Option<FeatureType>) -> Result<FeatureType, String> {
        use FeatureType as T;
        let Some(input) = input else {
            return match self {
                Function::Count => Ok(T::Int64),
                f => Err(format!("function {} needs an input", f.as_str())),
            };
        };
        let numeric = matches!(input, T::Int64 | T::Float64);
        let bad = || {
            Err(format!(
                "function {} cannot take a {} input",
                self.as_str(),
                input.as_str()
            ))
        };
        match self {
            Function::Count | Function::CountDistinct => Ok(T::Int64),
            Function::Sum | Function::Min | Function::Max if numeric => Ok(input),
            Function::Avg | Function::Stddev | Function::Variance if numeric => Ok(T::Float64),
            Function::Last => Ok(input),
            Function::LastN => match input {
                T::Int64 => Ok(T::Int64List),
                T::Float64 => Ok(T::Float64List),
                T::String => Ok(T::StringList),
                _ => bad(),
            },
            _ => bad(),
        }
    }
}

/// A comparison of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    const ALL: [(&'static str, CmpOp); 6] = [
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ];

    /// Whether `ord` (value compared with the constant) satisfies the operator.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// The constant of a filter, typed like its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    /// bool input.
    Bool(bool),
    /// int64 input.
    Int(i64),
    /// float64 input.
    Float(f64),
    /// string input.
    Str(String),
}

/// `input op constant`: only events whose input satisfies it are counted by the feature.
/// A null input never satisfies a filter; a NaN input satisfies only `!=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Index of the filtered input.
    pub input: usize,
    /// The comparison.
    pub op: CmpOp,
    /// The constant.
    pub constant: Constant,
    /// The filter as written (for describe).
    pub text: String,
}

/// How one aggregation feature is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct AggFeature {
    /// The function.
    pub function: Function,
    /// Index of its input among [`Aggregation::inputs`] (`None`: `count` of events).
    pub input: Option<usize>,
    /// Window in µs; `None` is `lifetime`.
    pub window_micros: Option<i64>,
    /// Hop = tile resolution in µs; 0 for `lifetime`.
    pub hop_micros: i64,
    /// Optional filter.
    pub filter: Option<Filter>,
    /// `n` of `last_n` (0 otherwise).
    pub n: usize,
    /// Index of its tile group in [`Aggregation::groups`].
    pub group: usize,
    /// Position of its partial state within a tile of its group.
    pub slot: usize,
}

/// The features sharing one tile resolution, stored together in each tile.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGroup {
    /// Resolution (hop) in µs; 0: the single `lifetime` tile.
    pub hop_micros: i64,
    /// The longest window of its features in µs (tiles older are dropped); `None` for
    /// `lifetime`.
    pub window_micros: Option<i64>,
    /// Features (indexes into the view's features) in slot order.
    pub features: Vec<usize>,
}

/// Where "now" is when an aggregation view answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadingEdge {
    /// The later of the node's clock and the newest event time the shard has ingested.
    Clock,
    /// The newest event time the shard has ingested for the view.
    EventTime,
}

/// The aggregation part of an aggregation view.
#[derive(Debug, Clone)]
pub struct Aggregation {
    /// Raw event fields the features read (the source record's schema).
    pub inputs: Vec<Feature>,
    /// Per view feature (same order as `FeatureView::features`).
    pub features: Vec<AggFeature>,
    /// Tile groups by resolution.
    pub groups: Vec<TileGroup>,
    /// Events more than this behind the shard's event-time watermark are dropped, µs.
    pub allowed_lateness_micros: i64,
    /// Events stamped more than this after their Kafka timestamp are dropped, µs.
    pub max_future_micros: i64,
    /// Where "now" is.
    pub leading_edge: LeadingEdge,
    /// A plain view over the inputs, used to decode raw events and to validate pushes.
    pub input_view: Arc<FeatureView>,
}

impl PartialEq for Aggregation {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
            && self.features == other.features
            && self.allowed_lateness_micros == other.allowed_lateness_micros
            && self.max_future_micros == other.max_future_micros
            && self.leading_edge == other.leading_edge
    }
}

impl Aggregation {
    /// How long a stored entity stays useful after its newest event, µs: the longest
    /// window plus its hop; `None` with a `lifetime` feature.
    pub fn retention_micros(&self) -> Option<i64> {
        let mut longest = 0i64;
        for g in &self.groups {
            longest = longest.max(g.window_micros? + g.hop_micros);
        }
        Some(longest)
    }

    /// The most tiles an entity can hold (the documented storage bound): per resolution,
    /// its longest window over its hop plus one, and — for windows of 2 hours or more —
    /// up to a day and two hours of older tiles not yet trimmed from the body
    /// (`crate::aggregate::split`): `min(window, 26 h) / hop + 1` more.
    pub fn max_tiles_per_entity(&self) -> i64 {
        const HOUR: i64 = 3_600_000_000;
        self.groups
            .iter()
            .map(|g| match g.window_micros {
                Some(w) if w >= 2 * HOUR => {
                    w / g.hop_micros + 1 + w.min(26 * HOUR) / g.hop_micros + 1
                }
                Some(w) => w / g.hop_micros + 1,
                None => 1,
            })
            .sum()
    }
}

fn human(micros: i64) -> String {
    humantime::format_duration(Duration::from_micros(micros.max(0) as u64)).to_string()
}

impl Serialize for Aggregation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde_json::json;
        let inputs: Vec<_> = self
            .inputs
            .iter()
            .map(|f| json!({"name": f.name, "type": f.value_type.as_str(), "source_field": f.source_field}))
            .collect();
        let features: Vec<_> = self
            .features
            .iter()
            .map(|f| {
                let window = f.window_micros.map_or("lifetime".to_owned(), human);
                let hop = if f.hop_micros == 0 {
                    "none".to_owned()
                } else {
                    human(f.hop_micros)
                };
                json!({
                    "function": f.function.as_str(),
                    "input": f.input.map(|i| self.inputs[i].name.clone()),
                    "window": window,
                    "hop": hop,
                    "tile_resolution": hop,
                    "filter": f.filter.as_ref().map(|x| x.text.clone()),
                    "n": (f.function == Function::LastN).then_some(f.n),
                })
            })
            .collect();
        json!({
            "inputs": inputs,
            "features": features,
            "allowed_lateness": human(self.allowed_lateness_micros),
            "max_future": human(self.max_future_micros),
            "leading_edge": self.leading_edge,
            "max_tiles_per_entity": self.max_tiles_per_entity(),
        })
        .serialize(s)
    }
}

mod parse;

pub use parse::default_hop;
pub(in crate::registry) use parse::from_defs;

#[cfg(test)]
mod tests;
