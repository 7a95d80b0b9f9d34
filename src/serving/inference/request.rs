//! Parsing a feature vector given over HTTP (`POST /v1/predict`): the 17 UCI
//! features keyed by the file's column names, exactly as `GET /v1/sessions`
//! shows them, validated by the same code that reads the UCI file.

use actors::features::FeatureError;
use actors::features::ShoppersFeatures;
use serde_json::{Map, Value};

/// Why a feature object was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeatureInputError {
    #[error("missing feature {0:?}")]
    Missing(&'static str),
    #[error("unknown feature {0:?} (expected the 17 UCI column names)")]
    Unknown(String),
    #[error("feature {column:?}: expected a number, string or boolean, got {got}")]
    Type { column: &'static str, got: &'static str },
    #[error(transparent)]
    Invalid(#[from] FeatureError),
}

/// Parses the features a session row stores (`sessions.features`, the JSON
/// text of the object `GET /v1/sessions` shows); errors name the session.
pub fn features_from_stored(session_id: &str, json: &str) -> anyhow::Result<ShoppersFeatures> {
    use anyhow::Context;
    let map: Map<String, Value> =
        serde_json::from_str(json).with_context(|| format!("session {session_id}: features are not a JSON object"))?;
    features_from_json(&map).with_context(|| format!("session {session_id}: unreadable features"))
}

/// Parses one feature object.
pub fn features_from_json(map: &Map<String, Value>) -> Result<ShoppersFeatures, FeatureInputError> {
    if let Some(k) = map.keys().find(|k| !ShoppersFeatures::UCI_COLUMNS.contains(&k.as_str())) {
        return Err(FeatureInputError::Unknown(k.clone()));
    }
    let mut fields = Vec::with_capacity(ShoppersFeatures::UCI_COLUMNS.len() + 1);
    for column in ShoppersFeatures::UCI_COLUMNS {
        let v = map.get(column).ok_or(FeatureInputError::Missing(column))?;
        fields.push(match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
            Value::Null => return Err(FeatureInputError::Type { column, got: "null" }),
            Value::Array(_) => return Err(FeatureInputError::Type { column, got: "an array" }),
            Value::Object(_) => return Err(FeatureInputError::Type { column, got: "an object" }),
        });
    }
    fields.push("FALSE".into()); // Revenue: the label, unknown when predicting.
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    Ok(ShoppersFeatures::from_uci_record(&refs)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShoppersFeatures {
        let row = "2,64.5,0,0,12,627.5,0.01,0.02,3.5,0,Nov,2,2,1,2,Returning_Visitor,TRUE,FALSE";
        ShoppersFeatures::from_uci_record(&row.split(',').collect::<Vec<_>>()).unwrap().0
    }

    #[test]
    fn the_session_view_json_round_trips() {
        let f = sample();
        assert_eq!(features_from_json(&f.to_uci_json()).unwrap(), f);
    }

    #[test]
    fn bad_objects_name_the_problem() {
        let mut m = sample().to_uci_json();
        m.remove("Month");
        assert!(features_from_json(&m).unwrap_err().to_string().contains("Month"));
        let mut m = sample().to_uci_json();
        m.insert("Revenue".into(), Value::Bool(true));
        assert!(features_from_json(&m).unwrap_err().to_string().contains("Revenue"));
        let mut m = sample().to_uci_json();
        m.insert("BounceRates".into(), Value::from(3.0));
        assert!(features_from_json(&m).unwrap_err().to_string().contains("BounceRates"));
    }
}
