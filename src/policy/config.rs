//! `policies:` and `break_glass:` as written in config, and their compilation into [`Policies`].
//! Everything an operator can get wrong is refused here, naming the policy and the key.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer};

use super::{Enforcement, LabelRule, LabelsOn, Policies, Policy};
use crate::config_error::ConfigError;
use crate::matching::{glob_match, Match};
use crate::reference::RefPattern;

/// `break_glass:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// The value an annotation in the `*.image-policy.k8s.io/` family must have.
    pub value: String,
}

/// One entry of `policies:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, shown in every message; lowercase letters, digits, '-' and '.'.
    pub name: String,
    /// `deny` (default), `warn` or `audit`.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Which requests it applies to.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// Image rules.
    #[serde(default)]
    pub images: Option<ImageRulesConfig>,
    /// Label rules.
    #[serde(default)]
    pub labels: Option<LabelRulesConfig>,
    /// Images this policy's image rules do not judge (Gatekeeper's `exemptImages`).
    #[serde(default)]
    pub exempt_images: Vec<ExemptImage>,
}

/// One `exempt_images` entry: a selector, or one ending in `*` that completes the last segment
/// ([`RefPattern::parse_exemption`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExemptImage(pub RefPattern);

impl<'de> Deserialize<'de> for ExemptImage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RefPattern::parse_exemption(&s)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// `images:` of a policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageRulesConfig {
    /// Refuse images without a digest whose tag is `latest` or absent.
    pub deny_latest: bool,
    /// Only images under these registries/repositories (whole path segments; `/*` = below).
    pub allowed_registries: Option<Vec<RefPattern>>,
    /// Require an `@sha256:` digest.
    pub require_digest: bool,
    /// Refuse images under these registries/repositories.
    pub denied: Vec<RefPattern>,
}

/// `labels:` of a policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelRulesConfig {
    /// Label key → value glob (`*` any value, `?*` non-empty, or a literal/glob value) or
    /// `{regex: "..."}`.
    pub required: BTreeMap<String, ValueMatch>,
    /// Which labels: the object's (default), its pod template's, or both.
    pub on: LabelsOn,
}

/// What a required label's value must match: a glob, or `{regex: "..."}`.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    /// A glob, written as a plain string.
    Glob(ValueGlob),
    /// A regular expression, written as `{regex: "..."}`.
    Regex(ValueRegex),
}

impl ValueMatch {
    /// True when `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Glob(g) => g.matches(value),
            Self::Regex(r) => r.matches(value),
        }
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A plain scalar is a glob (unquoted numbers and booleans as before: `1`, `true`);
        /// a map is `{regex: "..."}`.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ValueMatch;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a label value glob (a string) or {regex: \"...\"}")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ValueMatch, E> {
                ValueGlob::parse(v.to_owned())
                    .map(ValueMatch::Glob)
                    .map_err(E::custom)
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ValueMatch, E> {
                self.visit_str(if v { "true" } else { "false" })
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ValueMatch, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ValueMatch, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ValueMatch, A::Error> {
                let mut regex = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "regex" || regex.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "unexpected key {key:?}: expected {{regex: \"...\"}}"
                        )));
                    }
                    regex = Some(map.next_value::<String>()?);
                }
                let regex = regex.ok_or_else(|| {
                    serde::de::Error::custom("expected {regex: \"...\"}, found an empty map")
                })?;
                ValueRegex::new(&regex)
                    .map(ValueMatch::Regex)
                    .map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A regular expression over a whole label value (anchored at both ends; the `regex` crate
/// matches in linear time, so no pattern can stall a request).
#[derive(Clone, Debug)]
pub struct ValueRegex {
    /// As written, for messages.
    source: String,
    /// Compiled as `^(?:source)$`.
    regex: regex::Regex,
}

/// Bounds a pattern's compiled size: label values are at most 63 characters, so a larger program
/// is a mistake, and an unbounded one costs memory at load.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl ValueRegex {
    /// Compiles `source`, anchored.
    pub fn new(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("regex must not be empty (use \"*\" for any value)".to_owned());
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                // The crate's syntax errors draw the anchored form over several lines; the last
                // line says what is wrong, which is enough next to the regex as written.
                let e = e.to_string();
                let why = e
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                format!("regex {source:?} does not compile: {why}")
            })?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the whole of `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// A glob over a label value: `*` any run, `?` one character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueGlob(pub String);

impl<'de> Deserialize<'de> for ValueGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl ValueGlob {
    /// Checks a glob as written.
    pub fn parse(s: String) -> Result<Self, String> {
        // Label values: up to 63 of [A-Za-z0-9._-], plus the glob characters.
        let ok = s.len() <= 63
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*' | b'?')
            });
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "{s:?} is not a label value or glob (up to 63 of A-Z a-z 0-9 . _ - plus * and ?)"
            ))
        }
    }
}

impl ValueGlob {
    /// True when `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        glob_match(self.0.as_bytes(), value.as_bytes())
    }
}

/// Policy names become audit-annotation keys (`policy-<name>`, at most 63 characters).
const MAX_NAME: usize = 56;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric)
}

/// Compiles configured policies; none configured means the built-in latest-tag rule.
pub fn compile(
    configs: &[PolicyConfig],
    break_glass: Option<&BreakGlassConfig>,
) -> Result<Policies, ConfigError> {
    let break_glass = match break_glass {
        Some(b) if b.value.trim().is_empty() => {
            return Err(ConfigError::invalid(
                "break_glass.value",
                "must not be empty",
            ))
        }
        Some(b) => Some(b.value.clone()),
        None => None,
    };
    if configs.is_empty() {
        return Ok(Policies::new(
            vec![Policy::builtin_no_latest()],
            break_glass,
        ));
    }
    let mut seen = HashSet::new();
    let mut policies = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let at = |key: &str| format!("policies[{i}] ({:?}).{key}", c.name);
        if !valid_name(&c.name) {
            return Err(ConfigError::invalid(
                at("name"),
                format!("must be 1 to {MAX_NAME} lowercase letters, digits, '-' or '.', starting and ending alphanumeric"),
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(ConfigError::invalid(
                at("name"),
                "another policy has this name",
            ));
        }
        let images = c.images.clone().unwrap_or_default();
        if images
            .allowed_registries
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return Err(ConfigError::invalid(
                at("images.allowed_registries"),
                "an empty list admits no image; list registries or remove the key",
            ));
        }
        let labels = c.labels.clone().unwrap_or_default();
        let mut label_rules = Vec::with_capacity(labels.required.len());
        for (key, value) in labels.required {
            if let Err(why) = crate::labels::check_qualified_name(&key) {
                return Err(ConfigError::invalid(
                    at(&format!("labels.required.{key}")),
                    format!("not a valid label key: {why}"),
                ));
            }
            label_rules.push(LabelRule { key, value });
        }
        let checks_images = images.deny_latest
            || images.allowed_registries.is_some()
            || images.require_digest
            || !images.denied.is_empty();
        if !checks_images && !c.exempt_images.is_empty() {
            return Err(ConfigError::invalid(
                at("exempt_images"),
                "exempts images from image rules, but the policy has none",
            ));
        }
        if !checks_images && label_rules.is_empty() {
            return Err(ConfigError::invalid(
                at("images"),
                "the policy checks nothing: set images (deny_latest, allowed_registries, require_digest, denied) or labels.required",
            ));
        }
        policies.push(Policy {
            name: c.name.clone(),
            enforcement: c.enforcement,
            match_: c.match_.clone(),
            deny_latest: images.deny_latest,
            allowed_registries: images.allowed_registries,
            require_digest: images.require_digest,
            denied: images.denied,
            labels: label_rules,
            labels_on: labels.on,
            exempt_images: c.exempt_images.iter().map(|e| e.0.clone()).collect(),
        });
    }
    Ok(Policies::new(policies, break_glass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("no-latest-tag"));
        assert!(valid_name("a.b"));
        assert!(!valid_name(""));
        assert!(!valid_name("Bad"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(&"a".repeat(57)));
    }

    fn load(yaml: &str) -> Result<Policies, String> {
        let config = crate::config::Config::from_yaml(yaml, "x.yaml").map_err(|e| e.to_string())?;
        compile(&config.policies, config.break_glass.as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn regex_values_are_anchored_and_linear() {
        let r = ValueRegex::new(r"[a-z]+\.agilebank\.demo").unwrap();
        assert!(r.matches("app.agilebank.demo"));
        // Anchored at both ends, even when the pattern is not.
        assert!(!r.matches("evil-app.agilebank.demo.x"));
        assert!(!r.matches("APP.agilebank.demo"));
        // An alternation stays inside the anchors.
        let r = ValueRegex::new("a|b").unwrap();
        assert!(r.matches("a") && r.matches("b") && !r.matches("ab") && !r.matches("xa"));
        // No backtracking: a pattern that stalls a backtracking engine answers at once.
        let r = ValueRegex::new("(a+)+b").unwrap();
        assert!(!r.matches(&"a".repeat(63)));
        // Look-around and back-references are not in the regex crate's language: refused.
        assert!(ValueRegex::new("(a)\\1").is_err());
        assert!(ValueRegex::new("").is_err());
    }

    /// Unquoted numbers and booleans were globs before `{regex}` existed, and still are.
    #[test]
    fn unquoted_scalar_values_are_still_globs() {
        let yaml =
            "policies:\n  - name: a\n    labels:\n      required:\n        v: 1\n        w: true\n";
        let policies = load(yaml).unwrap();
        let rules = &policies.policies()[0].labels;
        assert!(matches!(rules[0].value, ValueMatch::Glob(ref g) if g.0 == "1"));
        assert!(matches!(rules[1].value, ValueMatch::Glob(ref g) if g.0 == "true"));
        let yaml = "policies:\n  - name: a\n    labels:\n      required:\n        v: [x]\n";
        let message = load(yaml).unwrap_err();
        assert!(message.contains("labels.required.v"), "{message}");
    }

    #[test]
    fn bad_regexes_are_refused_at_load_naming_key_line_and_regex() {
        let yaml = "policies:\n  - name: a\n    labels:\n      required:\n        team: x\n        owner: {regex: \"[a-z\"}\n";
        let message = load(yaml).unwrap_err();
        assert!(message.contains("labels.required.owner"), "{message}");
        assert!(message.contains("line 6"), "{message}");
        assert!(
            message.contains("regex \"[a-z\" does not compile: unclosed character class"),
            "{message}"
        );
        let yaml = "policies:\n  - name: a\n    labels:\n      required:\n        owner: {regexp: \"x\"}\n";
        let message = load(yaml).unwrap_err();
        assert!(message.contains("labels.required.owner"), "{message}");
        assert!(message.contains("regexp"), "{message}");
        let ok = "policies:\n  - name: a\n    labels:\n      required:\n        owner: {regex: \"^[a-z]+\\\\.agilebank\\\\.demo$\"}\n        team: \"?*\"\n";
        let policies = load(ok).unwrap();
        let rules = &policies.policies()[0].labels;
        assert!(
            matches!(rules[0].value, ValueMatch::Regex(ref r) if r.matches("app.agilebank.demo"))
        );
        assert!(matches!(rules[1].value, ValueMatch::Glob(ref g) if g.0 == "?*"));
    }
}
