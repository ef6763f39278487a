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

use super::definition::{AggregationDef, FeatureDef};
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

/// The default hop of a window: 1 minute below 1 hour, 5 minutes below 12 hours, 1 hour
/// below 12 days, 1 day beyond.
pub fn default_hop(window: Duration) -> Duration {
    let h = 3600;
    let secs = window.as_secs();
    Duration::from_secs(if secs < h {
        60
    } else if secs < 12 * h {
        300
    } else if secs < 12 * 24 * h {
        h
    } else {
        24 * h
    })
}

fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{what} {text:?} is not a duration like \"1h\" or \"7d\": {e}"))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Parses `input op constant` against the inputs.
fn parse_filter(text: &str, inputs: &[Feature]) -> Result<Filter, String> {
    let t = text.trim();
    let (pos, op_text, op) = CmpOp::ALL
        .iter()
        .filter_map(|(s, op)| t.find(s).map(|p| (p, *s, *op)))
        .min_by_key(|(p, s, _)| (*p, std::cmp::Reverse(s.len())))
        .ok_or_else(|| {
            format!("filter {text:?} must look like \"field op constant\" with op one of == != < <= > >=")
        })?;
    let field = t[..pos].trim();
    let constant = t[pos + op_text.len()..].trim();
    let input = inputs
        .iter()
        .position(|f| f.name == field)
        .ok_or_else(|| format!("filter {text:?}: {field:?} is not a declared [[view.input]]"))?;
    let ty = inputs[input].value_type;
    let bad = |what: &str| {
        format!(
            "filter {text:?}: {constant:?} is not {what} (input {field:?} is {})",
            ty.as_str()
        )
    };
    let constant = match ty {
        FeatureType::Bool => match constant {
            "true" => Constant::Bool(true),
            "false" => Constant::Bool(false),
            _ => return Err(bad("true or false")),
        },
        FeatureType::Int64 => Constant::Int(constant.parse().map_err(|_| bad("an integer"))?),
        FeatureType::Float64 => {
            let v: f64 = constant.parse().map_err(|_| bad("a number"))?;
            if !v.is_finite() {
                return Err(bad("a finite number"));
            }
            Constant::Float(v)
        }
        FeatureType::String => {
            let quoted = constant.len() >= 2
                && ((constant.starts_with('"') && constant.ends_with('"'))
                    || (constant.starts_with('\'') && constant.ends_with('\'')));
            if !quoted {
                return Err(bad("a quoted string"));
            }
            Constant::Str(constant[1..constant.len() - 1].to_owned())
        }
        other => {
            return Err(format!(
                "filter {text:?}: input {field:?} is {}; filters compare bool, int64, float64 or string inputs",
                other.as_str()
            ));
        }
    };
    if matches!(ty, FeatureType::Bool) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
        return Err(format!(
            "filter {text:?}: a bool input compares only with == or !="
        ));
    }
    Ok(Filter {
        input,
        op,
        constant,
        text: t.to_owned(),
    })
}

/// Validates one aggregation feature; returns it (without group and slot) and its type.
fn agg_feature(def: &FeatureDef, inputs: &[Feature]) -> Result<(AggFeature, FeatureType), String> {
    let fname = def.function.as_deref().ok_or(
        "has no function (aggregation views compute every feature: set function = \"count\", \"sum\", …)",
    )?;
    let function = Function::ALL
        .into_iter()
        .find(|f| f.as_str() == fname)
        .ok_or_else(|| {
            let known: Vec<_> = Function::ALL.iter().map(|f| f.as_str()).collect();
            format!(
                "function {fname:?} is unknown (expected one of {})",
                known.join(", ")
            )
        })?;
    let input = match def.input.as_deref() {
        None => None,
        Some(name) => Some(inputs.iter().position(|f| f.name == name).ok_or_else(|| {
            let declared: Vec<_> = inputs.iter().map(|f| f.name.as_str()).collect();
            format!(
                "input {name:?} is not a declared [[view.input]] (declared: {})",
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            )
        })?),
    };
    let out = function.output_type(input.map(|i| inputs[i].value_type))?;
    if let Some(t) = def.value_type.as_deref()
        && t != out.as_str()
    {
        return Err(format!(
            "type {t:?} does not match what {fname} returns here ({}); omit type or set it to {:?}",
            out.as_str(),
            out.as_str()
        ));
    }
    let window_text = def
        .window
        .as_deref()
        .ok_or("has no window (e.g. window = \"1h\", or \"lifetime\")")?;
    let (window_micros, hop_micros) = if window_text == "lifetime" {
        if def.hop.is_some() {
            return Err("a lifetime window has no hop".into());
        }
        (None, 0)
    } else {
        let window = parse_duration("window", window_text)?;
        if window < MIN_WINDOW || window > MAX_WINDOW {
            return Err(format!(
                "window {window_text:?} is outside 1m..=90d (or use \"lifetime\")"
            ));
        }
        let hop = match def.hop.as_deref() {
            Some(h) => parse_duration("hop", h)?,
            None => default_hop(window),
        };
        let hop_text = humantime::format_duration(hop).to_string();
        if hop < MIN_WINDOW || hop.subsec_nanos() != 0 || hop > window {
            return Err(format!(
                "hop {hop_text:?} must be whole seconds, at least 1m and at most the window"
            ));
        }
        let (w, h) = (micros(window), micros(hop));
        if w % h != 0 {
            return Err(format!(
                "window {window_text:?} is not a multiple of its hop {hop_text:?}{}",
                if def.hop.is_none() {
                    " (the default for this window; set hop)"
                } else {
                    ""
                }
            ));
        }
        if w / h > MAX_TILES_PER_WINDOW {
            return Err(format!(
                "window {window_text:?} over hop {hop_text:?} is {} tiles; at most {MAX_TILES_PER_WINDOW}",
                w / h
            ));
        }
        (Some(w), h)
    };
    let n = match (function, def.n) {
        (Function::LastN, Some(n)) if (1..=MAX_LAST_N as u64).contains(&n) => n as usize,
        (Function::LastN, Some(n)) => return Err(format!("n = {n} is outside 1..={MAX_LAST_N}")),
        (Function::LastN, None) => return Err(format!("last_n needs n (1..={MAX_LAST_N})")),
        (_, Some(_)) => return Err("n applies only to last_n".into()),
        (_, None) => 0,
    };
    let filter = def
        .filter
        .as_deref()
        .map(|f| parse_filter(f, inputs))
        .transpose()?;
    Ok((
        AggFeature {
            function,
            input,
            window_micros,
            hop_micros,
            filter,
            n,
            group: 0,
            slot: 0,
        },
        out,
    ))
}

/// Validates the aggregation part of view `view` (its `[view.aggregation]`, inputs and
/// features) and returns the output features and the aggregation. `input_view` is the
/// view with the inputs as its features (built by the caller, which owns the source).
pub(super) fn from_defs(
    view: &str,
    def: &AggregationDef,
    inputs: Vec<Feature>,
    features: &[FeatureDef],
    input_view: FeatureView,
) -> Result<(Vec<Feature>, Aggregation), String> {
    let err = |feature: &str, e: String| format!("view {view:?}, feature {feature:?}: {e}");
    for f in &inputs {
        if matches!(
            f.value_type,
            FeatureType::Float32Vector
                | FeatureType::Int64List
                | FeatureType::Float64List
                | FeatureType::StringList
        ) {
            return Err(format!(
                "view {view:?}, input {:?}: type {} cannot be aggregated (inputs are bool, int64, float64, string or bytes)",
                f.name,
                f.value_type.as_str()
            ));
        }
    }
    let mut out = Vec::with_capacity(features.len());
    let mut aggs = Vec::with_capacity(features.len());
    let mut groups: Vec<TileGroup> = Vec::new();
    for (i, fd) in features.iter().enumerate() {
        if fd.source_field.is_some() {
            return Err(err(
                &fd.name,
                "source_field does not apply to an aggregation feature (name an input)".into(),
            ));
        }
        let (mut agg, ty) = agg_feature(fd, &inputs).map_err(|e| err(&fd.name, e))?;
        let g = match groups.iter().position(|g| g.hop_micros == agg.hop_micros) {
            Some(g) => g,
            None => {
                groups.push(TileGroup {
                    hop_micros: agg.hop_micros,
                    window_micros: agg.window_micros,
                    features: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[g];
        group.window_micros = match (group.window_micros, agg.window_micros) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        agg.group = g;
        agg.slot = group.features.len();
        group.features.push(i);
        aggs.push(agg);
        out.push(Feature {
            name: fd.name.clone(),
            value_type: ty,
            source_field: String::new(),
            description: fd.description.clone(),
        });
    }
    let lateness = match def.allowed_lateness.as_deref() {
        Some(t) => {
            parse_duration("allowed_lateness", t).map_err(|e| format!("view {view:?}: {e}"))?
        }
        None => DEFAULT_ALLOWED_LATENESS,
    };
    let max_future = match def.max_future.as_deref() {
        Some(t) => parse_duration("max_future", t).map_err(|e| format!("view {view:?}: {e}"))?,
        None => DEFAULT_MAX_FUTURE,
    };
    let leading_edge = match def.leading_edge.as_deref().unwrap_or("clock") {
        "clock" => LeadingEdge::Clock,
        "event_time" => LeadingEdge::EventTime,
        other => {
            return Err(format!(
                "view {view:?}: leading_edge {other:?} is not supported (expected \"clock\" or \"event_time\")"
            ));
        }
    };
    Ok((
        out,
        Aggregation {
            inputs,
            features: aggs,
            groups,
            allowed_lateness_micros: micros(lateness),
            max_future_micros: micros(max_future),
            leading_edge,
            input_view: Arc::new(input_view),
        },
    ))
}

#[cfg(test)]
mod tests;
