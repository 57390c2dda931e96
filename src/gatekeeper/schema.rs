//! A template's `openAPIV3Schema`, checked against each constraint's `parameters` at load, as the
//! apiserver checks a constraint against its CRD (`kubectl apply`, strict field validation).
//!
//! The structural-schema subset templates use: `type`, `properties`, `additionalProperties`,
//! `items`, `required`, `enum`, `pattern`, bounds, `anyOf`/`oneOf`/`allOf`, `nullable`, `default`
//! (filled in, as the apiserver does) and the `x-kubernetes-*` extensions for unknown fields and
//! int-or-string. Other keywords (`description`, `format`, ...) do not constrain.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A compiled schema node.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    kind: Option<String>,
    properties: BTreeMap<String, Schema>,
    additional: Option<Additional>,
    items: Option<Box<Schema>>,
    required: Vec<String>,
    one_of_values: Option<Vec<Json>>,
    pattern: Option<regex::Regex>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    min_len: Option<u64>,
    max_len: Option<u64>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    all_of: Vec<Schema>,
    nullable: bool,
    preserve_unknown: bool,
    int_or_string: bool,
    default: Option<Json>,
}

#[derive(Clone, Debug)]
enum Additional {
    Allowed(bool),
    Schema(Box<Schema>),
}

impl Schema {
    /// Compiles a schema; `legacy` (Gatekeeper's `legacySchema`) keeps unknown fields everywhere.
    pub fn compile(json: &Json, legacy: bool) -> Result<Self, String> {
        compile(json, legacy, "openAPIV3Schema")
    }

    /// Checks (and defaults) a constraint's parameters; the error names the field.
    pub fn validate(&self, value: &mut Json) -> Result<(), String> {
        self.check(value, "parameters")
    }

    fn check(&self, value: &mut Json, at: &str) -> Result<(), String> {
        if value.is_null() {
            return if self.nullable || self.kind.is_none() {
                Ok(())
            } else {
                Err(format!("{at}: must not be null"))
            };
        }
        for sub in &self.all_of {
            sub.check(value, at)?;
        }
        if !self.any_of.is_empty()
            && !self
                .any_of
                .iter()
                .any(|s| s.check(&mut value.clone(), at).is_ok())
        {
            return Err(format!("{at}: matches none of anyOf"));
        }
        if !self.one_of.is_empty() {
            let n = self
                .one_of
                .iter()
                .filter(|s| s.check(&mut value.clone(), at).is_ok())
                .count();
            if n != 1 {
                return Err(format!(
                    "{at}: must match exactly one of oneOf, matches {n}"
                ));
            }
        }
        if let Some(values) = &self.one_of_values {
            if !values.contains(value) {
                let list: Vec<String> = values.iter().map(Json::to_string).collect();
                return Err(format!("{at}: {value} is not one of {}", list.join(", ")));
            }
        }
        if self.int_or_string {
            if value.is_i64() || value.is_u64() || value.is_string() {
                return Ok(());
            }
            return Err(format!("{at}: must be an integer or a string"));
        }
        let Some(kind) = self.kind.as_deref() else {
            return self.check_object_like(value, at);
        };
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "{at}: must be of type {kind}, got {}",
                type_name(value)
            ));
        }
        match value {
            Json::String(s) => {
                let len = s.chars().count() as u64;
                if self.min_len.is_some_and(|m| len < m) || self.max_len.is_some_and(|m| len > m) {
                    return Err(format!("{at}: length {len} is out of bounds"));
                }
                if let Some(p) = &self.pattern {
                    if !p.is_match(s) {
                        return Err(format!("{at}: {s:?} does not match pattern {}", p.as_str()));
                    }
                }
            }
            Json::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if self.minimum.is_some_and(|m| x < m) || self.maximum.is_some_and(|m| x > m) {
                    return Err(format!("{at}: {n} is out of bounds"));
                }
            }
            Json::Array(items) => {
                let len = items.len() as u64;
                if self.min_len.is_some_and(|m| len < m) || self.max_len.is_some_and(|m| len > m) {
                    return Err(format!("{at}: {len} items is out of bounds"));
                }
                if let Some(schema) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        schema.check(item, &format!("{at}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
        self.check_object_like(value, at)
    }

    fn check_object_like(&self, value: &mut Json, at: &str) -> Result<(), String> {
        let Json::Object(map) = value else {
            return Ok(());
        };
        for (key, schema) in &self.properties {
            if !map.contains_key(key) {
                if let Some(default) = &schema.default {
                    map.insert(key.clone(), default.clone());
                }
            }
        }
        for key in &self.required {
            if !map.contains_key(key) {
                return Err(format!("{at}.{key}: required"));
            }
        }
        for (key, field) in map.iter_mut() {
            let path = format!("{at}.{key}");
            match (self.properties.get(key), &self.additional) {
                (Some(schema), _) => schema.check(field, &path)?,
                (None, Some(Additional::Schema(schema))) => schema.check(field, &path)?,
                (None, Some(Additional::Allowed(true))) => {}
                (None, _) if self.preserve_unknown => {}
                // An object schema without properties is free-form.
                (None, None) if self.properties.is_empty() => {}
                (None, _) => {
                    let known: Vec<&str> = self.properties.keys().map(String::as_str).collect();
                    return Err(format!(
                        "{path}: unknown field (the schema has {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn compile(json: &Json, legacy: bool, at: &str) -> Result<Schema, String> {
    let Json::Object(map) = json else {
        return Err(format!("{at}: a schema must be an object"));
    };
    let sub = |key: &str, v: &Json| compile(v, legacy, &format!("{at}.{key}"));
    let list = |key: &str| -> Result<Vec<Schema>, String> {
        match map.get(key) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => items.iter().map(|v| sub(key, v)).collect(),
            Some(_) => Err(format!("{at}.{key}: must be a list")),
        }
    };
    let number = |key: &str| map.get(key).and_then(Json::as_f64);
    let count = |key: &str| map.get(key).and_then(Json::as_u64);
    let flag = |key: &str| map.get(key).and_then(Json::as_bool).unwrap_or(false);
    let mut schema = Schema {
        kind: map.get("type").and_then(Json::as_str).map(str::to_owned),
        required: match map.get("required") {
            None => Vec::new(),
            Some(Json::Array(keys)) => keys
                .iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or(format!("{at}.required: must be a list of strings"))?,
            Some(_) => return Err(format!("{at}.required: must be a list")),
        },
        one_of_values: match map.get("enum") {
            None => None,
            Some(Json::Array(values)) => Some(values.clone()),
            Some(_) => return Err(format!("{at}.enum: must be a list")),
        },
        pattern: match map.get("pattern").and_then(Json::as_str) {
            None => None,
            Some(p) => Some(regex::Regex::new(p).map_err(|e| format!("{at}.pattern: {e}"))?),
        },
        minimum: number("minimum"),
        maximum: number("maximum"),
        min_len: count("minLength").or(count("minItems")),
        max_len: count("maxLength").or(count("maxItems")),
        any_of: list("anyOf")?,
        one_of: list("oneOf")?,
        all_of: list("allOf")?,
        nullable: flag("nullable"),
        preserve_unknown: legacy || flag("x-kubernetes-preserve-unknown-fields"),
        int_or_string: flag("x-kubernetes-int-or-string"),
        default: map.get("default").cloned(),
        ..Schema::default()
    };
    if let Some(props) = map.get("properties") {
        let Json::Object(props) = props else {
            return Err(format!("{at}.properties: must be an object"));
        };
        for (key, v) in props {
            schema
                .properties
                .insert(key.clone(), sub(&format!("properties.{key}"), v)?);
        }
    }
    schema.additional = match map.get("additionalProperties") {
        None => None,
        Some(Json::Bool(b)) => Some(Additional::Allowed(*b)),
        Some(v) => Some(Additional::Schema(Box::new(sub(
            "additionalProperties",
            v,
        )?))),
    };
    if let Some(items) = map.get("items") {
        schema.items = Some(Box::new(sub("items", items)?));
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(
            &json!({
                "type": "object",
                "properties": {
                    "repos": {"type": "array", "items": {"type": "string"}},
                    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                    "cpu": {"x-kubernetes-int-or-string": true},
                    "labels": {"type": "array", "items": {"type": "object", "properties": {
                        "key": {"type": "string"}, "allowedRegex": {"type": "string"}},
                        "required": ["key"]}}
                }
            }),
            false,
        )
        .expect("schema")
    }

    #[test]
    fn parameters_are_checked_and_defaulted() {
        let s = schema();
        let mut ok = json!({"repos": ["a/"], "cpu": "200m", "labels": [{"key": "x"}]});
        s.validate(&mut ok).expect("valid");
        assert_eq!(ok["mode"], "a", "default filled in");
        for (bad, needle) in [
            (
                json!({"repos": "a/"}),
                "parameters.repos: must be of type array",
            ),
            (
                json!({"repos": [1]}),
                "parameters.repos[0]: must be of type string",
            ),
            (json!({"mode": "c"}), "parameters.mode: \"c\" is not one of"),
            (
                json!({"cpu": 1.5}),
                "parameters.cpu: must be an integer or a string",
            ),
            (
                json!({"labels": [{}]}),
                "parameters.labels[0].key: required",
            ),
            (json!({"repo": ["a/"]}), "parameters.repo: unknown field"),
        ] {
            let mut bad = bad;
            let err = s.validate(&mut bad).expect_err(needle);
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn legacy_schemas_keep_unknown_fields() {
        let s = Schema::compile(&json!({"properties": {"a": {"type": "string"}}}), true)
            .expect("schema");
        s.validate(&mut json!({"b": 1})).expect("unknown kept");
        assert!(s.validate(&mut json!({"a": 1})).is_err());
    }
}
