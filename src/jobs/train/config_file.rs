//! The model configuration of `cartpulse train --config FILE` and
//! `cartpulse retrain --config FILE`: a JSON object whose fields are laid over
//! [`ModelConfig::recommended`], so a file names only what it changes.
//!
//! Unknown fields are refused by name (a misspelt `"distil"` would otherwise
//! train the recommended model while the user believes it trained theirs).

use crate::models::manifest::ModelConfig;
use serde_json::Value;
use std::path::Path;

/// The configuration to train with: the recommended one, with the fields of
/// `path` (if given) over it.
pub fn model_config(path: Option<&Path>) -> anyhow::Result<ModelConfig> {
    let Some(path) = path else { return Ok(ModelConfig::recommended()) };
    let named = |e: String| anyhow::anyhow!("--config {}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| named(e.to_string()))?;
    let given: Value = serde_json::from_slice(&bytes).map_err(|e| named(e.to_string()))?;
    over_recommended(given).map_err(named)
}

/// `given`'s fields over the recommended configuration.
fn over_recommended(given: Value) -> Result<ModelConfig, String> {
    let mut merged = serde_json::to_value(ModelConfig::recommended()).map_err(|e| e.to_string())?;
    lay_over(&mut merged, given, "")?;
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

/// Replaces `base`'s fields by `given`'s, recursing into objects (`net`,
/// `teacher`); a field `base` does not have is an error naming it.
fn lay_over(base: &mut Value, given: Value, at: &str) -> Result<(), String> {
    let Value::Object(given) = given else {
        return Err(format!(
            "{} must be a JSON object of ModelConfig fields",
            if at.is_empty() { "the file" } else { at }
        ));
    };
    let Value::Object(fields) = base else { return Err(format!("{at} is not an object")) };
    for (name, value) in given {
        let path = if at.is_empty() { name.clone() } else { format!("{at}.{name}") };
        match fields.get_mut(&name) {
            None => {
                let mut known: Vec<&str> = fields.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(format!("unknown field `{path}` (known here: {})", known.join(", ")));
            }
            Some(slot @ Value::Object(_)) if value.is_object() => lay_over(slot, value, &path)?,
            Some(slot) => *slot = value,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_object_is_the_recommended_configuration() {
        assert_eq!(over_recommended(json!({})).unwrap(), ModelConfig::recommended());
        assert_eq!(model_config(None).unwrap(), ModelConfig::recommended());
    }

    #[test]
    fn given_fields_replace_only_themselves_even_nested_ones() {
        let c = over_recommended(json!({"distill": 0.0, "net": {"dropout": 0.3}, "teacher": {"trees": 50}})).unwrap();
        let r = ModelConfig::recommended();
        assert_eq!(c.distill, 0.0);
        assert_eq!(c.net.dropout, 0.3);
        assert_eq!(c.net.hidden, r.net.hidden);
        assert_eq!(c.teacher.trees, 50);
        assert_eq!(c.teacher.depth, r.teacher.depth);
        assert_eq!(c.members, r.members);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_by_name() {
        let e = over_recommended(json!({"distil": 0.5})).unwrap_err();
        assert!(e.contains("unknown field `distil`") && e.contains("distill"), "{e}");
        let e = over_recommended(json!({"net": {"widths": [8]}})).unwrap_err();
        assert!(e.contains("unknown field `net.widths`") && e.contains("hidden"), "{e}");
        let e = over_recommended(json!([1, 2])).unwrap_err();
        assert!(e.contains("must be a JSON object"), "{e}");
        let e = over_recommended(json!({"members": "five"})).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_file_that_cannot_be_read_or_parsed_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = model_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"members\": ").unwrap();
        let e = model_config(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("EOF"), "{e}");
    }
}
