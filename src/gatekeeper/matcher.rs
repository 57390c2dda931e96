//! A constraint's `spec.match`, with Gatekeeper's semantics: every criterion must hold, for the
//! object or (on UPDATE and DELETE) the old object.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::review::ObjectFacts;

/// `spec.match`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// `[{apiGroups, kinds}]`; empty matches every kind.
    #[serde(default)]
    kinds: Vec<Kinds>,
    /// `Cluster`, `Namespaced` or `*`.
    #[serde(default)]
    scope: Option<String>,
    /// Namespace names, `prefix*`, `*suffix` or `*infix*`.
    #[serde(default)]
    namespaces: Vec<String>,
    /// Namespaces never matched.
    #[serde(default)]
    excluded_namespaces: Vec<String>,
    /// Over the object's labels.
    #[serde(default)]
    label_selector: Option<LabelSelector>,
    /// Refused at load: it needs the Namespace object, which gatehouse does not have.
    #[serde(default)]
    namespace_selector: Option<serde::de::IgnoredAny>,
    /// The object's name (wildcards as for namespaces; a `prefix*` also matches generateName).
    #[serde(default)]
    name: Option<String>,
    /// `All`, `Original` or `Generated` (expansion, which gatehouse does not do).
    #[serde(default)]
    source: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kinds {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

impl Match {
    /// Refuses what cannot be honoured or is malformed.
    pub fn validate(&self) -> Result<(), String> {
        if self.namespace_selector.is_some() {
            return Err(
                "match.namespaceSelector needs the Namespace objects of the cluster \
                        (Gatekeeper's cache); gatehouse has no cluster state: use \
                        namespaces/excludedNamespaces"
                    .to_owned(),
            );
        }
        match self.scope.as_deref() {
            None | Some("*" | "Cluster" | "Namespaced") => {}
            Some(other) => {
                return Err(format!(
                    "match.scope: {other:?} is not *, Cluster or Namespaced"
                ))
            }
        }
        match self.source.as_deref() {
            None | Some("All" | "Original" | "Generated") => {}
            Some(other) => {
                return Err(format!(
                    "match.source: {other:?} is not All, Original or Generated"
                ))
            }
        }
        if let Some(selector) = &self.label_selector {
            for r in &selector.match_expressions {
                let ok = match r.operator.as_str() {
                    "In" | "NotIn" => !r.values.is_empty(),
                    "Exists" | "DoesNotExist" => r.values.is_empty(),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "match.labelSelector: {} {} {:?} is not a valid requirement",
                        r.key, r.operator, r.values
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when the match block needs what an ImageReview does not carry (labels, a name).
    pub fn needs_object_metadata(&self) -> bool {
        self.label_selector.is_some() || self.name.is_some()
    }

    /// True when one of the objects satisfies every criterion.
    pub fn matches(
        &self,
        group: &str,
        kind: &str,
        request_namespace: &str,
        objects: &[&ObjectFacts],
    ) -> bool {
        // Admission requests are originals; Generated selects only expanded resources.
        if self.source.as_deref() == Some("Generated") {
            return false;
        }
        objects
            .iter()
            .any(|o| self.matches_one(group, kind, request_namespace, o))
    }

    fn matches_one(
        &self,
        group: &str,
        kind: &str,
        request_namespace: &str,
        o: &ObjectFacts,
    ) -> bool {
        let is_namespace = kind == "Namespace" && group.is_empty();
        let namespace = if is_namespace {
            o.name.as_str()
        } else if !o.namespace.is_empty() {
            o.namespace.as_str()
        } else {
            request_namespace
        };
        let kinds = self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                (k.kinds.is_empty() || k.kinds.iter().any(|x| x == "*" || x == kind))
                    && (k.api_groups.is_empty()
                        || k.api_groups.iter().any(|g| g == "*" || g == group))
            });
        let has_namespace = !namespace.is_empty() && !is_namespace;
        let scope = match self.scope.as_deref() {
            Some("Cluster") => is_namespace || !has_namespace,
            Some("Namespaced") => !is_namespace && has_namespace,
            _ => true,
        };
        // Cluster-scoped objects (other than Namespaces) are not filtered by namespace lists.
        let filtered = is_namespace || has_namespace;
        let namespaces = self.namespaces.is_empty()
            || !filtered
            || self.namespaces.iter().any(|w| wildcard(w, namespace));
        let excluded = filtered
            && self
                .excluded_namespaces
                .iter()
                .any(|w| wildcard(w, namespace));
        let labels = self
            .label_selector
            .as_ref()
            .is_none_or(|s| s.matches(&o.labels));
        let name = self
            .name
            .as_deref()
            .is_none_or(|w| wildcard(w, &o.name) || generate_name_matches(w, &o.generate_name));
        kinds && scope && namespaces && !excluded && labels && name
    }
}

impl LabelSelector {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// Gatekeeper's wildcard: exact, `prefix*`, `*suffix`, or `*infix*`.
fn wildcard(pattern: &str, candidate: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) if pattern.len() >= 2 => {
            candidate.contains(rest.strip_suffix('*').unwrap_or(rest))
        }
        (Some(suffix), _) => candidate.ends_with(suffix),
        (None, Some(prefix)) => candidate.starts_with(prefix),
        (None, None) => pattern == candidate,
    }
}

/// A name pattern also matches an object created with `generateName` (its name is not known
/// yet): `prefix*` when generateName starts with the prefix, `*infix*` when it contains it.
fn generate_name_matches(pattern: &str, generate_name: &str) -> bool {
    if generate_name.is_empty() {
        return false;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) if pattern.len() >= 2 => {
            generate_name.contains(rest.strip_suffix('*').unwrap_or(rest))
        }
        (None, Some(prefix)) => generate_name.starts_with(prefix),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, namespace: &str, labels: &[(&str, &str)]) -> ObjectFacts {
        ObjectFacts {
            name: name.into(),
            generate_name: String::new(),
            namespace: namespace.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn m(yaml: &str) -> Match {
        let m: Match = serde_saphyr::from_str(yaml).expect("match");
        m.validate().expect("valid");
        m
    }

    #[test]
    fn wildcards_are_gatekeepers() {
        assert!(wildcard("kube-*", "kube-system"));
        assert!(wildcard("*-system", "kube-system"));
        assert!(wildcard("*be-sy*", "kube-system"));
        assert!(wildcard("prod", "prod") && !wildcard("prod", "production"));
        assert!(!wildcard("kube-*", "kubesystem"));
        assert!(wildcard("*", "anything"));
    }

    #[test]
    fn every_criterion_must_hold_for_object_or_old_object() {
        let block = m("kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\nnamespaces: [\"team-*\"]\nexcludedNamespaces: [team-x]\nlabelSelector:\n  matchExpressions: [{key: tier, operator: In, values: [web]}]\n");
        let web = facts("p", "team-a", &[("tier", "web")]);
        let db = facts("p", "team-a", &[("tier", "db")]);
        assert!(block.matches("", "Pod", "team-a", &[&web]));
        assert!(!block.matches("apps", "Pod", "team-a", &[&web]));
        assert!(!block.matches("", "Deployment", "team-a", &[&web]));
        assert!(!block.matches("", "Pod", "team-a", &[&db]));
        assert!(
            block.matches("", "Pod", "team-a", &[&db, &web]),
            "old object matches"
        );
        let excluded = facts("p", "team-x", &[("tier", "web")]);
        assert!(!block.matches("", "Pod", "team-x", &[&excluded]));
        let other = facts("p", "prod", &[("tier", "web")]);
        assert!(!block.matches("", "Pod", "prod", &[&other]));
    }

    #[test]
    fn scope_names_and_namespaces_objects() {
        let cluster = m("scope: Cluster\n");
        assert!(cluster.matches("", "Namespace", "", &[&facts("team-a", "", &[])]));
        assert!(cluster.matches(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "",
            &[&facts("r", "", &[])]
        ));
        assert!(!cluster.matches("", "Pod", "a", &[&facts("p", "a", &[])]));
        // A Namespace is matched by namespaces against its own name.
        let ns = m("namespaces: [team-a]\n");
        assert!(ns.matches("", "Namespace", "", &[&facts("team-a", "", &[])]));
        assert!(!ns.matches("", "Namespace", "", &[&facts("team-b", "", &[])]));
        let named = m("name: \"web-*\"\n");
        let mut generated = facts("", "a", &[]);
        generated.generate_name = "web-".into();
        assert!(named.matches("", "Pod", "a", &[&generated]));
        assert!(!named.matches("", "Pod", "a", &[&facts("db-1", "a", &[])]));
        assert!(!m("source: Generated\n").matches("", "Pod", "a", &[&facts("p", "a", &[])]));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let selector: Match =
            serde_saphyr::from_str("namespaceSelector:\n  matchLabels: {a: b}\n").expect("parse");
        assert!(selector
            .validate()
            .expect_err("refused")
            .contains("namespaceSelector"));
        let bad: Match = serde_saphyr::from_str(
            "labelSelector:\n  matchExpressions: [{key: a, operator: In}]\n",
        )
        .expect("parse");
        assert!(bad.validate().is_err());
    }
}
