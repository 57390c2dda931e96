//! `mutations:` as written in the configuration file, and its compilation into [`Mutations`].
//!
//! Everything that could make a mutation produce an invalid object or a patch that does not
//! settle (a label the apiserver would refuse, a rewrite whose result is rewritten again) is
//! refused here, at startup, naming the mutation and the key.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::labels::{check_label_value, check_qualified_name};
use crate::matching::{Match, OperationName};
use crate::reference::{ImageRef, RefPattern};

use super::{Mutation, Mutations, PullPolicy, Rewrite};

/// One entry of `mutations:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutationConfig {
    /// Names the mutation in errors, warnings and audit annotations; unique.
    pub name: String,
    /// Which requests it applies to (default: CREATE and UPDATE of every kind everywhere).
    #[serde(default, rename = "match")]
    pub scope: Match,
    /// Labels to set on the pod (or on the object, for kinds without pods).
    #[serde(default)]
    pub add_labels: BTreeMap<String, String>,
    /// Annotations to set, like `add_labels`.
    #[serde(default)]
    pub add_annotations: BTreeMap<String, String>,
    /// Replace values the object already has (labels, annotations, pull policy); default false.
    #[serde(default)]
    pub overwrite: bool,
    /// Registry or repository prefix → replacement prefix, e.g. `docker.io: mirror.my.com/hub`.
    #[serde(default)]
    pub rewrite_registries: BTreeMap<String, String>,
    /// `Always`, `IfNotPresent` or `Never`, set on containers that have none.
    #[serde(default)]
    pub image_pull_policy: Option<String>,
}

impl Mutations {
    /// Checks and compiles `mutations:`; errors name the entry (`mutations[1]...`) and the key.
    pub fn compile(configs: &[MutationConfig]) -> Result<Self, ConfigError> {
        let mut list = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let at = Key::new(i, &config.name);
            if config.name.trim().is_empty() {
                return Err(at.error("name", "must not be empty"));
            }
            if let Some(j) = configs[..i].iter().position(|c| c.name == config.name) {
                return Err(at.error(
                    "name",
                    format!("the name is already used by mutations[{j}]"),
                ));
            }
            list.push(compile_one(&at, config)?);
        }
        check_rewrites_settle(configs, &list)?;
        Ok(Self { list })
    }
}

/// Where an error is: the entry's index and name.
struct Key<'c> {
    index: usize,
    name: &'c str,
}

impl<'c> Key<'c> {
    fn new(index: usize, name: &'c str) -> Self {
        Self { index, name }
    }

    /// An error at `mutations[i].<field>` (or the whole entry for ""), naming the mutation.
    fn error(&self, field: &str, message: impl std::fmt::Display) -> ConfigError {
        let key = if field.is_empty() {
            format!("mutations[{}]", self.index)
        } else {
            format!("mutations[{}].{field}", self.index)
        };
        ConfigError::invalid(key, format!("mutation {:?}: {message}", self.name))
    }
}

fn compile_one(at: &Key<'_>, config: &MutationConfig) -> Result<Mutation, ConfigError> {
    let MutationConfig {
        name,
        scope,
        add_labels,
        add_annotations,
        overwrite,
        rewrite_registries,
        image_pull_policy,
    } = config;
    check_operations(at, scope)?;
    for (key, value) in add_labels {
        let field = format!("add_labels[{key:?}]");
        if let Err(why) = check_qualified_name(key) {
            return Err(at.error(&field, format!("{key:?} is not a valid label key: {why}")));
        }
        if let Err(why) = check_label_value(value) {
            return Err(at.error(
                &field,
                format!("{value:?} is not a valid label value: {why}"),
            ));
        }
    }
    for key in add_annotations.keys() {
        if let Err(why) = check_qualified_name(key) {
            let field = format!("add_annotations[{key:?}]");
            return Err(at.error(
                &field,
                format!("{key:?} is not a valid annotation key: {why}"),
            ));
        }
    }
    let pull_policy = match image_pull_policy.as_deref() {
        None => None,
        Some("Always") => Some(PullPolicy::Always),
        Some("IfNotPresent") => Some(PullPolicy::IfNotPresent),
        Some("Never") => Some(PullPolicy::Never),
        Some(other) => {
            return Err(at.error(
                "image_pull_policy",
                format!("{other:?} is not a pull policy; use Always, IfNotPresent or Never"),
            ))
        }
    };
    let mut rewrites = Vec::with_capacity(rewrite_registries.len());
    for (from, to) in rewrite_registries {
        let rewrite = compile_rewrite(from, to)
            .map_err(|why| at.error(&format!("rewrite_registries[{from:?}]"), why))?;
        if let Some(other) = rewrites
            .iter()
            .find(|r: &&Rewrite| r.prefix == rewrite.prefix)
        {
            return Err(at.error(
                &format!("rewrite_registries[{from:?}]"),
                format!(
                    "names the same prefix ({}) as {:?}; keep one",
                    rewrite.prefix, other.from_text
                ),
            ));
        }
        rewrites.push(rewrite);
    }
    // The most specific prefix (the longest repository path; rules that match one image share
    // its registry) wins, whatever the order in the file.
    rewrites.sort_by_key(|r| std::cmp::Reverse(r.path_len));
    if add_labels.is_empty()
        && add_annotations.is_empty()
        && rewrites.is_empty()
        && pull_policy.is_none()
    {
        return Err(at.error(
            "",
            "does nothing; set add_labels, add_annotations, rewrite_registries or \
             image_pull_policy",
        ));
    }
    Ok(Mutation {
        name: name.clone(),
        scope: scope.clone(),
        labels: pairs(add_labels),
        annotations: pairs(add_annotations),
        overwrite: *overwrite,
        rewrites,
        pull_policy,
    })
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Mutations patch the object being written; DELETE and CONNECT carry none.
fn check_operations(at: &Key<'_>, scope: &Match) -> Result<(), ConfigError> {
    if scope.operations.is_empty() {
        return Err(at.error(
            "match.operations",
            "is empty, so the mutation never applies",
        ));
    }
    if scope
        .operations
        .iter()
        .any(|o| matches!(o, OperationName::Delete | OperationName::Connect))
    {
        return Err(at.error(
            "match.operations",
            "mutations apply to CREATE and UPDATE only (a DELETE or CONNECT has no object to \
             patch); list CREATE, UPDATE or \"*\"",
        ));
    }
    Ok(())
}

/// A rewrite rule from its key and target.
fn compile_rewrite(from: &str, to: &str) -> Result<Rewrite, String> {
    let pattern = RefPattern::parse_selector(from).map_err(|e| e.to_string())?;
    // The normalised pattern is `domain[/path][/*]`; the domain has no '/'.
    let prefix = pattern
        .as_str()
        .strip_suffix("/*")
        .unwrap_or(pattern.as_str())
        .to_owned();
    let path_len = prefix.split_once('/').map_or(0, |(_, path)| path.len());
    // The target is written out as is, so it must already be the normalised form: an explicit
    // registry, lowercase, no wildcard, no tag.
    let target = RefPattern::parse(to).map_err(|e| format!("target: {e}"))?;
    if target.as_str() != to {
        return Err(format!(
            "target {to:?} must be a registry or repository prefix written in full, starting \
             with the registry (here it reads as {:?})",
            target.as_str()
        ));
    }
    Ok(Rewrite {
        from: pattern,
        from_text: from.to_owned(),
        prefix,
        path_len,
        to: to.to_owned(),
    })
}

/// Refuses a target that lies inside any rule's key, or a key inside any target: a rewritten
/// image would then be rewritten again on the apiserver's reinvocation, and the patch would
/// never settle (and one mutation's output would silently feed the next).
fn check_rewrites_settle(configs: &[MutationConfig], list: &[Mutation]) -> Result<(), ConfigError> {
    struct Rule<'r> {
        at: Key<'r>,
        rule: &'r Rewrite,
        target: RefPattern,
        below_target: ImageRef,
        below_key: ImageRef,
    }
    let mut rules = Vec::new();
    for (i, mutation) in list.iter().enumerate() {
        for rule in &mutation.rewrites {
            let at = Key::new(i, &configs[i].name);
            let field = format!("rewrite_registries[{:?}]", rule.from_text);
            // Probes two segments below each prefix, so that no "library/" is inserted.
            let probe = |prefix: &str| {
                ImageRef::parse(&format!("{prefix}/x/y")).map_err(|e| at.error(&field, e))
            };
            let below_target = probe(&rule.to)?;
            let below_key = probe(&rule.prefix)?;
            let target = RefPattern::parse(&rule.to).map_err(|e| at.error(&field, e))?;
            rules.push(Rule {
                at,
                rule,
                target,
                below_target,
                below_key,
            });
        }
    }
    for a in &rules {
        for b in &rules {
            if b.rule.from.matches(&a.below_target) || a.target.matches(&b.below_key) {
                let whose = if std::ptr::eq(a.rule, b.rule) {
                    "its own key".to_owned()
                } else {
                    format!("the key {:?} of mutation {:?}", b.rule.from_text, b.at.name)
                };
                return Err(a.at.error(
                    &format!("rewrite_registries[{:?}]", a.rule.from_text),
                    format!(
                        "target {:?} overlaps {whose}: a rewritten image would be rewritten \
                         again when the apiserver reinvokes the webhook; pick a target outside \
                         every rewritten prefix",
                        a.rule.to
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keys_are_canonical_registries() {
        let rule = compile_rewrite("registry-1.docker.io:0443", "mirror.local/hub").expect("rule");
        assert_eq!(rule.prefix, "docker.io");
        for image in [
            "nginx:1.25",
            "index.docker.io:443/nginx:1.25",
            "Registry-1.Docker.IO:443/library/nginx:1.25",
        ] {
            let image = ImageRef::parse(image).expect("image");
            assert_eq!(
                rule.apply(&image).as_deref(),
                Some("mirror.local/hub/library/nginx:1.25")
            );
        }
        let elsewhere = ImageRef::parse("registry-1.docker.io:5000/nginx:1.25").expect("image");
        assert_eq!(rule.apply(&elsewhere), None);
    }

    #[test]
    fn two_spellings_of_one_key_are_one_key() {
        let yaml = "- name: m\n  rewrite_registries:\n    docker.io: a.io/hub\n    \
                    registry-1.docker.io:443: b.io/hub\n";
        let configs: Vec<MutationConfig> = serde_saphyr::from_str(yaml).expect("yaml");
        let message = Mutations::compile(&configs)
            .expect_err("duplicate key")
            .to_string();
        assert!(
            message.contains("names the same prefix (docker.io)"),
            "{message}"
        );
    }

    #[test]
    fn a_target_is_written_canonically() {
        for target in [
            "mirror.local:443/hub",
            "mirror.local:05000/hub",
            "registry-1.docker.io/mirror",
        ] {
            let message = compile_rewrite("quay.io", target).expect_err(target);
            assert!(message.contains("written in full"), "{target}: {message}");
        }
        assert!(compile_rewrite("quay.io", "mirror.local:5000/hub").is_ok());
    }
}
