//! Decisions about images and objects, from policies written as configuration.
//!
//! The input is a [`Subject`]: what policies read, built the same way from an ImageReview and an
//! AdmissionReview, so both routes decide identically. The output is a [`Decision`]: denials,
//! warnings and audit annotations, which each route encodes in its own wire format.

pub mod config;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;

use crate::cache::{Cacheable, Expiring, KeyHasher};
use crate::matching::Match;
use crate::reference::{ImageRef, RefPattern, ReferenceError};
use crate::review::admission::Operation;
use crate::review::object::ContainerList;
use crate::review::StrMap;
use config::ValueGlob;

/// The seed's (kube-image-bouncer's) message, kept verbatim: users search for it.
pub const LATEST_MESSAGE: &str = "Images using latest tag are not allowed";

/// Annotations in this family are the ones kube-apiserver forwards to ImagePolicyWebhook.
pub const BREAK_GLASS_FAMILY: &str = ".image-policy.k8s.io/";

/// The apiserver cuts every warning to this many characters once they total over
/// [`WARNINGS_TOTAL`]; doing it here keeps what the user sees predictable.
const WARNING_MAX: usize = 256;
/// See [`WARNING_MAX`].
const WARNINGS_TOTAL: usize = 4096;

/// What a policy does with a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Refuse the request.
    #[default]
    Deny,
    /// Allow, and tell the user (`response.warnings`, printed by kubectl).
    Warn,
    /// Allow, and record it in audit annotations and the log only.
    Audit,
}

/// One container's image, as the subject of a decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageUse<'a> {
    /// Container name ("" in an ImageReview, which carries none).
    pub container: &'a str,
    /// Which list it is in.
    pub list: ContainerList,
    /// The image as written.
    pub image: &'a str,
}

/// What a decision reads.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    /// The operation (CREATE for an ImageReview).
    pub operation: Operation,
    /// The object's kind ("Pod" for an ImageReview).
    pub kind: &'a str,
    /// The namespace ("" for cluster-scoped objects).
    pub namespace: &'a str,
    /// Every container image of the pod(s) in the object.
    pub images: Vec<ImageUse<'a>>,
    /// The object's labels; `None` for an ImageReview, which carries none (label rules skip it).
    pub labels: Option<&'a StrMap<'a>>,
    /// Annotation maps that may carry a break-glass annotation (the object's, its pod template's,
    /// or an ImageReview's `spec.annotations`).
    pub annotations: Vec<&'a StrMap<'a>>,
}

/// The outcome of evaluating policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Why the request is refused; empty when allowed.
    pub denials: Vec<String>,
    /// Shown to the user, request allowed.
    pub warnings: Vec<String>,
    /// Recorded in the audit log: keys without a prefix or slash (the apiserver adds one).
    pub audit: Vec<(String, String)>,
    /// The break-glass annotation key that bypassed image policies, if any (logged per request).
    pub break_glass: Option<String>,
}

impl Decision {
    /// Allowed when nothing denied it.
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// The denial message: every reason, joined.
    pub fn message(&self) -> Option<String> {
        (!self.denials.is_empty()).then(|| self.denials.join("; "))
    }
}

impl Expiring for Arc<Decision> {
    fn is_allow(&self) -> bool {
        self.allowed()
    }
}

/// A required label: key and value glob.
#[derive(Clone, Debug)]
pub struct LabelRule {
    /// The label key.
    pub key: String,
    /// The value it must match.
    pub value: ValueGlob,
}

/// One compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Its name, in every message.
    pub name: String,
    /// What a violation does.
    pub enforcement: Enforcement,
    /// Which requests it applies to.
    pub match_: Match,
    /// Refuse `latest` (explicit or implicit, no digest).
    pub deny_latest: bool,
    /// Only these registries/repositories, when set.
    pub allowed_registries: Option<Vec<RefPattern>>,
    /// Require a digest.
    pub require_digest: bool,
    /// Never these registries/repositories.
    pub denied: Vec<RefPattern>,
    /// Required labels.
    pub labels: Vec<LabelRule>,
}

impl Policy {
    /// The rule in force when no policies are configured: kube-image-bouncer parity.
    pub fn builtin_no_latest() -> Self {
        Self {
            name: "no-latest-tag".to_owned(),
            enforcement: Enforcement::Deny,
            match_: Match::default(),
            deny_latest: true,
            allowed_registries: None,
            require_digest: false,
            denied: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn checks_images(&self) -> bool {
        self.deny_latest
            || self.allowed_registries.is_some()
            || self.require_digest
            || !self.denied.is_empty()
    }

    /// Appends this policy's image violations for one image.
    fn check_image(
        &self,
        use_: &ImageUse<'_>,
        parsed: &Result<ImageRef, ReferenceError>,
        out: &mut Vec<String>,
    ) {
        let who = describe(use_);
        let image = match parsed {
            Ok(image) => image,
            // Never allowed by a parse failure.
            Err(e) => {
                out.push(format!("{who}: {e}"));
                return;
            }
        };
        if self.deny_latest && image.is_latest() {
            out.push(format!("{LATEST_MESSAGE}: {who} uses {:?}", use_.image));
        }
        if let Some(allowed) = &self.allowed_registries {
            if !allowed.iter().any(|p| p.matches(image)) {
                let list: Vec<&str> = allowed.iter().map(RefPattern::as_str).collect();
                out.push(format!(
                    "{who} uses {:?} ({}), which is not from an allowed registry ({})",
                    use_.image,
                    image.name(),
                    list.join(", ")
                ));
            }
        }
        if self.require_digest && !image.has_digest() {
            out.push(format!(
                "{who} uses {:?} without a digest; pin it as name@sha256:<digest>",
                use_.image
            ));
        }
        if let Some(p) = self.denied.iter().find(|p| p.matches(image)) {
            out.push(format!(
                "{who} uses {:?}, which matches denied pattern {}",
                use_.image,
                p.as_str()
            ));
        }
    }

    /// Appends this policy's label violations.
    fn check_labels(&self, kind: &str, labels: Option<&StrMap<'_>>, out: &mut Vec<String>) {
        for rule in &self.labels {
            let value = labels.and_then(|l| l.get(rule.key.as_str()));
            if value.is_some_and(|v| rule.value.matches(v)) {
                continue;
            }
            let want = match rule.value.0.as_str() {
                "*" => String::new(),
                "?*" => " with a non-empty value".to_owned(),
                v if v.contains(['*', '?']) => format!(" with a value matching {v:?}"),
                v => format!("={v:?}"),
            };
            let got = match value {
                None => "it has none".to_owned(),
                Some(v) => format!("it has {v:?}"),
            };
            out.push(format!(
                "{kind} must have label {:?}{want}; {got}",
                rule.key
            ));
        }
    }
}

/// "container \"app\"" / "init container \"setup\"" / "image" for an ImageReview.
fn describe(use_: &ImageUse<'_>) -> String {
    let what = match use_.list {
        ContainerList::Containers => "container",
        ContainerList::InitContainers => "init container",
        ContainerList::EphemeralContainers => "ephemeral container",
    };
    if use_.container.is_empty() {
        "image".to_owned()
    } else {
        format!("{what} {:?}", use_.container)
    }
}

/// The compiled policy set.
#[derive(Debug)]
pub struct Policies {
    policies: Vec<Policy>,
    break_glass: Option<String>,
    /// Every label key some policy reads: the only labels that enter a cache key.
    label_keys: Vec<String>,
    /// How many times policies were evaluated (cache misses), for tests and metrics.
    evaluations: AtomicU64,
}

impl Default for Policies {
    fn default() -> Self {
        Self::new(vec![Policy::builtin_no_latest()], None)
    }
}

impl Policies {
    /// A policy set; `break_glass` is the annotation value that bypasses image policies.
    pub fn new(policies: Vec<Policy>, break_glass: Option<String>) -> Self {
        let mut label_keys: Vec<String> = policies
            .iter()
            .flat_map(|p| p.labels.iter().map(|r| r.key.clone()))
            .collect();
        label_keys.sort();
        label_keys.dedup();
        Self {
            policies,
            break_glass,
            label_keys,
            evaluations: AtomicU64::new(0),
        }
    }

    /// How many subjects were evaluated (not served from the cache).
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// The policies, in order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The key of a break-glass annotation on the subject, if break glass is configured.
    fn break_glass_key<'s>(&self, subject: &'s Subject<'_>) -> Option<&'s str> {
        let value = self.break_glass.as_deref()?;
        subject.annotations.iter().find_map(|map| {
            map.iter()
                .find(|(k, v)| k.contains(BREAK_GLASS_FAMILY) && v.as_ref() == value)
                .map(|(k, _)| k.as_ref())
        })
    }

    /// Decides a subject. DELETE, CONNECT and unknown operations are allowed without evaluation.
    pub fn decide(&self, subject: &Subject<'_>) -> Decision {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let mut decision = Decision::default();
        if !matches!(subject.operation, Operation::Create | Operation::Update) {
            return decision;
        }
        let break_glass = self.break_glass_key(subject);
        // Parsed once, on first need, for every policy that reads images.
        let mut parsed: Option<Vec<Result<ImageRef, ReferenceError>>> = None;
        let mut bypassed = Vec::new();
        for policy in &self.policies {
            if !policy
                .match_
                .matches(subject.operation, subject.kind, subject.namespace)
            {
                continue;
            }
            let mut image_violations = Vec::new();
            if policy.checks_images() {
                let parsed = parsed.get_or_insert_with(|| {
                    subject
                        .images
                        .iter()
                        .map(|u| ImageRef::parse(u.image))
                        .collect()
                });
                for (use_, p) in subject.images.iter().zip(parsed.iter()) {
                    policy.check_image(use_, p, &mut image_violations);
                }
            }
            let mut violations = Vec::new();
            if subject.labels.is_some() {
                policy.check_labels(subject.kind, subject.labels, &mut violations);
            }
            if break_glass.is_some() {
                // Break glass bypasses image policies, never label policies.
                bypassed.extend(image_violations.drain(..).map(|v| tag(&policy.name, &v)));
            }
            violations.append(&mut image_violations);
            if violations.is_empty() {
                continue;
            }
            match policy.enforcement {
                Enforcement::Deny => decision
                    .denials
                    .extend(violations.iter().map(|v| tag(&policy.name, v))),
                Enforcement::Warn => decision
                    .warnings
                    .extend(violations.iter().map(|v| tag(&policy.name, v))),
                Enforcement::Audit => decision
                    .audit
                    .push((format!("policy-{}", policy.name), violations.join("; "))),
            }
        }
        if let Some(key) = break_glass {
            let what = if bypassed.is_empty() {
                "no image policy was violated".to_owned()
            } else {
                bypassed.join("; ")
            };
            decision.warnings.push(format!(
                "break-glass annotation {key:?} bypassed image policies: {what}"
            ));
            decision
                .audit
                .push(("break-glass".to_owned(), format!("{key}: {what}")));
            decision.break_glass = Some(key.to_owned());
        }
        bound_warnings(&mut decision.warnings);
        decision
    }
}

/// "<message> (policy \"name\")".
fn tag(policy: &str, message: &str) -> String {
    format!("{message} (policy {policy:?})")
}

/// Mirrors what the apiserver does to warnings, so users see exactly what we send: control
/// characters would make it drop a warning; past 4096 characters in all, each is cut to 256.
fn bound_warnings(warnings: &mut [String]) {
    for w in warnings.iter_mut() {
        if w.chars().any(char::is_control) {
            *w = w
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
        }
    }
    let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
    if total > WARNINGS_TOTAL {
        for w in warnings.iter_mut() {
            if let Some((cut, _)) = w.char_indices().nth(WARNING_MAX) {
                w.truncate(cut);
            }
        }
    }
}

impl Cacheable for Subject<'_> {
    fn hash_input(&self, state: &mut KeyHasher) {
        state.write_str(self.operation.as_str());
        state.write_str(self.kind);
        state.write_str(self.namespace);
        state.write(&(self.images.len() as u64).to_le_bytes());
        for use_ in &self.images {
            state.write_str(use_.list.field());
            state.write_str(use_.container);
            state.write_str(use_.image);
        }
        // Which labels matter is the policy set's business; see `PolicyInput`.
        match self.labels {
            None => state.write(&[0]),
            Some(_) => state.write(&[1]),
        }
        for map in &self.annotations {
            for (k, v) in map.iter().filter(|(k, _)| k.contains(BREAK_GLASS_FAMILY)) {
                state.write_str(k);
                state.write_str(v);
            }
        }
    }
}

/// A subject together with the label keys the policy set reads: the cache key hashes those
/// labels only, so per-pod labels (a StatefulSet's pod name) do not defeat the cache.
#[derive(Debug)]
pub struct PolicyInput<'s, 'a> {
    /// The subject.
    pub subject: &'s Subject<'a>,
    /// The policy set that will decide it.
    pub policies: &'s Policies,
}

impl Cacheable for PolicyInput<'_, '_> {
    fn hash_input(&self, state: &mut KeyHasher) {
        self.subject.hash_input(state);
        if let Some(labels) = self.subject.labels {
            for key in &self.policies.label_keys {
                match labels.get(key.as_str()) {
                    Some(v) => {
                        state.write(&[1]);
                        state.write_str(v);
                    }
                    None => state.write(&[0]),
                }
            }
        }
    }
}

/// The policy set as a tower service, so the decision cache can sit in front of it as a layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyService;

impl<'r, 's, 'a> tower::Service<&'r PolicyInput<'s, 'a>> for PolicyService {
    type Response = Arc<Decision>;
    type Error = Infallible;
    type Future = Ready<Result<Arc<Decision>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, input: &'r PolicyInput<'s, 'a>) -> Self::Future {
        ready(Ok(Arc::new(input.policies.decide(input.subject))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_bounded_like_the_apiserver_does() {
        let mut few = vec!["a\u{7}b\nc".to_owned()];
        bound_warnings(&mut few);
        assert_eq!(few, ["a b c"]);
        let mut many = vec!["x".repeat(1000); 5];
        bound_warnings(&mut many);
        assert!(many.iter().all(|w| w.chars().count() == WARNING_MAX));
        let mut under = vec!["y".repeat(1000); 4];
        bound_warnings(&mut under);
        assert!(under.iter().all(|w| w.len() == 1000));
    }

    #[test]
    fn default_is_the_latest_tag_rule() {
        let policies = Policies::default();
        let subject = Subject {
            operation: Operation::Create,
            kind: "Pod",
            namespace: "default",
            images: vec![
                ImageUse {
                    container: "a",
                    list: ContainerList::Containers,
                    image: "nginx",
                },
                ImageUse {
                    container: "b",
                    list: ContainerList::InitContainers,
                    image: "nginx:1.25",
                },
            ],
            labels: None,
            annotations: Vec::new(),
        };
        let decision = policies.decide(&subject);
        assert_eq!(decision.denials.len(), 1);
        assert!(decision.denials[0].starts_with(LATEST_MESSAGE));
        assert!(decision.denials[0].contains("container \"a\""));
    }
}
