//! Docker's `filters` query parameter: a JSON object from filter name to values, either as
//! `{"name":{"value":true}}` (current) or `{"name":["value"]}` (legacy).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// Parsed filters: name → accepted values.
#[derive(Debug, Clone, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the `filters` query value; an empty string means no filters.
    pub fn parse(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Ok(Filters::default());
        }
        let bad = |why: String| Error::InvalidParameter(format!("invalid filter: {why}"));
        let value: Value = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(bad("filters must be a JSON object".into()));
        };
        let mut out = BTreeMap::new();
        for (name, values) in map {
            let list: Vec<String> = match values {
                Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k)
                    .collect(),
                Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        other => Err(bad(format!(
                            "value {other} of filter {name:?} is not a string"
                        ))),
                    })
                    .collect::<Result<_>>()?,
                other => {
                    return Err(bad(format!(
                        "values of filter {name:?} must be an object, not {other}"
                    )))
                }
            };
            out.insert(name, list);
        }
        Ok(Filters(out))
    }

    /// Rejects filter names outside `allowed`, as dockerd does (`invalid filter 'x'`).
    pub fn validate(&self, allowed: &[&str]) -> Result<()> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(Error::InvalidParameter(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// The values given for `name` (empty when the filter is absent).
    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// True when `name` is absent, or when any of its values satisfies `pred`.
    pub fn matches_any(&self, name: &str, pred: impl Fn(&str) -> bool) -> bool {
        let values = self.get(name);
        values.is_empty() || values.iter().any(|v| pred(v))
    }

    /// True when every value of `name` satisfies `pred` (labels must all match).
    pub fn matches_all(&self, name: &str, pred: impl Fn(&str) -> bool) -> bool {
        self.get(name).iter().all(|v| pred(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms() {
        let f = Filters::parse(r#"{"status":{"running":true,"exited":false},"label":["a=b"]}"#)
            .unwrap();
        assert_eq!(f.get("status"), ["running".to_string()]);
        assert_eq!(f.get("label"), ["a=b".to_string()]);
        assert!(f.matches_any("name", |_| false));
        assert!(f.validate(&["status", "label"]).is_ok());
        assert_eq!(
            f.validate(&["status"]).unwrap_err().to_string(),
            "invalid filter 'label'"
        );
        assert!(Filters::parse("[1]").is_err());
        assert!(Filters::parse("{").is_err());
    }
}
