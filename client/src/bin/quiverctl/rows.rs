//! `quiverctl push --row JSON`: rows typed by the view's definition, numbers exactly.

use anyhow::Context as _;
use base64::Engine as _;
use quiver_client::{EntityKey, PushRow, Value};
use quiver_proto::json_number;
use serde_json::value::RawValue;

/// Converts the JSON text of a value to a feature value of type `ty` (a definition-file
/// type name). Numbers are read from their own text by type, exactly.
pub(crate) fn json_to_value(feature: &str, ty: &str, v: &RawValue) -> anyhow::Result<Value> {
    let text = v.get().trim();
    let bad = || anyhow::anyhow!("feature {feature:?} is {ty}; {text} does not fit");
    let list = || serde_json::from_str::<Vec<Box<RawValue>>>(text).map_err(|_| bad());
    Ok(match ty {
        "bool" => serde_json::from_str::<bool>(text)
            .map_err(|_| bad())?
            .into(),
        "int64" => json_number::parse_i64(text).map_err(|_| bad())?.into(),
        "float64" => json_number::parse_f64(text).map_err(|_| bad())?.into(),
        "string" => serde_json::from_str::<String>(text)
            .map_err(|_| bad())?
            .into(),
        // Base64, as in JSON source records and in `--output json`.
        "bytes" => base64::engine::general_purpose::STANDARD
            .decode(serde_json::from_str::<String>(text).map_err(|_| bad())?)
            .map_err(|_| bad())?
            .into(),
        "float32_vector" => list()?
            .iter()
            .map(|x| json_number::parse_f32(x.get()))
            .collect::<Result<Vec<f32>, _>>()
            .map_err(|_| bad())?
            .into(),
        "int64_list" => list()?
            .iter()
            .map(|x| json_number::parse_i64(x.get()))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| bad())?
            .into(),
        "float64_list" => list()?
            .iter()
            .map(|x| json_number::parse_f64(x.get()))
            .collect::<Result<Vec<f64>, _>>()
            .map_err(|_| bad())?
            .into(),
        "string_list" => serde_json::from_str::<Vec<String>>(text)
            .map_err(|_| bad())?
            .into(),
        other => anyhow::bail!("feature {feature:?} has unknown type {other}"),
    })
}

/// Parses `--row` JSON into a push row, typing values by the view's definition.
pub(crate) fn parse_row(
    text: &str,
    types: &std::collections::HashMap<String, String>,
) -> anyhow::Result<PushRow> {
    let doc: std::collections::BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).with_context(|| format!("row {text} is not a JSON object"))?;
    let key = match doc.get("key").map(|k| k.get()) {
        Some(k) if k.starts_with('"') => EntityKey::from(serde_json::from_str::<String>(k)?),
        Some(k) => match json_number::parse_i64(k) {
            Ok(i) => EntityKey::from(i),
            Err(_) => anyhow::bail!("row {text} needs a \"key\" (string or integer)"),
        },
        None => anyhow::bail!("row {text} needs a \"key\" (string or integer)"),
    };
    if doc.get("delete").map(|d| d.get()) == Some("true") {
        return Ok(PushRow::delete(key));
    }
    let mut row = PushRow::new(key);
    if let Some(t) = doc.get("event_time_micros") {
        let t = json_number::parse_i64(t.get())
            .with_context(|| format!("event_time_micros {} is not an integer", t.get()))?;
        row = row.event_time_micros(t);
    }
    if let Some(features) = doc.get("features") {
        let features: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(features.get()).context("\"features\" must be an object")?;
        for (name, v) in &features {
            let ty = types
                .get(name)
                .with_context(|| format!("the view has no feature {name:?}"))?;
            row = row.set(name.clone(), json_to_value(name, ty, v)?);
        }
    }
    Ok(row)
}
