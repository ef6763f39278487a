//! Validating an aggregation view's definition: functions, windows and hops, filters,
//! lateness and leading edge. Every error names the feature and the problem.

use std::sync::Arc;
use std::time::Duration;

use super::super::definition::{AggregationDef, FeatureDef};
use super::super::model::{Feature, FeatureType, FeatureView};
use super::{
    AggFeature, Aggregation, CmpOp, Constant, DEFAULT_ALLOWED_LATENESS, DEFAULT_MAX_FUTURE, Filter,
    Function, LeadingEdge, MAX_LAST_N, MAX_TILES_PER_WINDOW, MAX_WINDOW, MIN_WINDOW, TileGroup,
};

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
pub(in crate::registry) fn from_defs(
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
