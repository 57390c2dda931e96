//! Decisions about images and objects, from policies written as configuration.
//!
//! The input is a [`Subject`]: what policies read, built the same way from an ImageReview and an
//! AdmissionReview, so both routes decide identically. The output is a [`Decision`]: denials,
//! warnings and audit annotations, which each route encodes in its own wire format.

pub mod config;

use std::collections::HashMap;
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
use crate::review::messages::{self, counted, MessageList};
use crate::review::object::ImageSource;
use crate::review::StrMap;
use config::ValueMatch;

/// The seed's (kube-image-bouncer's) message, kept verbatim: users search for it.
pub const LATEST_MESSAGE: &str = "Images using latest tag are not allowed";

/// Annotations in this family are the ones kube-apiserver forwards to ImagePolicyWebhook.
pub const BREAK_GLASS_FAMILY: &str = ".image-policy.k8s.io/";

/// Longest break-glass annotation key quoted in answers and logs: a valid key is at most a
/// 253-character prefix, a slash and a 63-character name.
const ANNOTATION_KEY_MAX: usize = 317;

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

/// One image the pod pulls (a container's or an image volume's), as the subject of a decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageUse<'a> {
    /// The container's or volume's name ("" in an ImageReview, which carries none).
    pub name: &'a str,
    /// Where it is named.
    pub source: ImageSource,
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
    /// Every image of the pod(s) in the object: containers' and image volumes'.
    pub images: Vec<ImageUse<'a>>,
    /// The object's labels; `None` for an ImageReview, which carries none (label rules skip it),
    /// and on UPDATE when they did not change.
    pub labels: Option<&'a StrMap<'a>>,
    /// Whether the object is a workload with a pod template (Deployment, CronJob...), whose
    /// pods' labels are the template's rather than its own.
    pub has_template: bool,
    /// The pod template's labels (empty when absent); `None` when there is no template or, on
    /// UPDATE, when they did not change.
    pub template_labels: Option<&'a StrMap<'a>>,
    /// Annotation maps that may carry a break-glass annotation (the object's, its pod template's,
    /// or an ImageReview's `spec.annotations`).
    pub annotations: Vec<&'a StrMap<'a>>,
}

/// The outcome of evaluating policies, bounded when it is built: however many violations, the
/// message lists the first few and counts the rest, so a cached decision and every answer
/// encoded from it stay small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Why the request is refused: the first violations, then "and N more violations", at most
    /// [`messages::JOINED_MAX_BYTES`]; `None` when allowed.
    pub message: Option<String>,
    /// How many violations refuse the request, listed or not.
    pub denied: usize,
    /// Shown to the user, request allowed; bounded in count and size.
    pub warnings: Vec<String>,
    /// Recorded in the audit log.
    pub audit: Vec<AuditNote>,
    /// The break-glass annotation key that bypassed image policies, if any (logged per request).
    pub break_glass: Option<String>,
}

impl Decision {
    /// Allowed when nothing denied it.
    pub fn allowed(&self) -> bool {
        self.denied == 0
    }
}

/// One audit annotation: a key without prefix or slash (the apiserver adds one), a bounded
/// value that carries the count, and the count itself for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditNote {
    /// `policy-<name>` or `break-glass`.
    pub key: String,
    /// "N violations: first; second; ...; and M more violations".
    pub value: String,
    /// How many violations it records.
    pub count: usize,
}

impl AuditNote {
    /// The note of an audit policy's violations.
    fn violations(policy: &str, list: &MessageList) -> Self {
        Self {
            key: format!("policy-{policy}"),
            value: format!(
                "{}: {}",
                counted(list.total(), "violation"),
                list.join("violation")
            ),
            count: list.total(),
        }
    }
}

impl Expiring for Arc<Decision> {
    fn is_allow(&self) -> bool {
        self.allowed()
    }
}

/// Which labels a policy's label rules read (`labels.on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelsOn {
    /// The object's own `metadata.labels` (the default, so existing configs keep their meaning).
    #[default]
    Object,
    /// The labels of the pods it creates: a workload's pod template's; any other object's own.
    Template,
    /// Both, each judged on its own.
    Both,
}

/// A required label: key and value glob.
#[derive(Clone, Debug)]
pub struct LabelRule {
    /// The label key.
    pub key: String,
    /// The value it must match.
    pub value: ValueMatch,
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
    /// Which labels the label rules read.
    pub labels_on: LabelsOn,
    /// Images the image rules do not judge.
    pub exempt_images: Vec<RefPattern>,
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
            labels_on: LabelsOn::Object,
            exempt_images: Vec::new(),
        }
    }

    fn checks_images(&self) -> bool {
        self.deny_latest
            || self.allowed_registries.is_some()
            || self.require_digest
            || !self.denied.is_empty()
    }

    /// Adds this policy's violations for one image to `out`; messages are formatted only when
    /// they will be listed.
    fn check_image(
        &self,
        use_: &ImageUse<'_>,
        parsed: &Result<ImageRef, ReferenceError>,
        out: &mut MessageList,
    ) {
        let image = match parsed {
            Ok(image) => image,
            // Never allowed by a parse failure.
            Err(e) => {
                out.push_with(|| self.tag(format!("{}: {e}", describe(use_))));
                return;
            }
        };
        // Matched on the normalised name, so no other spelling of an exempt image is judged and
        // no spelling of another image is exempt.
        if self.exempt_images.iter().any(|p| p.matches(image)) {
            return;
        }
        if self.deny_latest && image.is_latest() {
            out.push_with(|| {
                self.tag(format!(
                    "{LATEST_MESSAGE}: {} uses {:?}",
                    describe(use_),
                    use_.image
                ))
            });
        }
        if let Some(allowed) = &self.allowed_registries {
            if !allowed.iter().any(|p| p.matches(image)) {
                out.push_with(|| {
                    let list: Vec<&str> = allowed.iter().map(RefPattern::as_str).collect();
                    self.tag(format!(
                        "{} uses {:?} ({}), which is not from an allowed registry ({})",
                        describe(use_),
                        use_.image,
                        image.name(),
                        list.join(", ")
                    ))
                });
            }
        }
        if self.require_digest && !image.has_digest() {
            out.push_with(|| {
                self.tag(format!(
                    "{} uses {:?} without a digest; pin it as name@sha256:<digest>",
                    describe(use_),
                    use_.image
                ))
            });
        }
        if let Some(p) = self.denied.iter().find(|p| p.matches(image)) {
            out.push_with(|| {
                self.tag(format!(
                    "{} uses {:?}, which matches denied pattern {}",
                    describe(use_),
                    use_.image,
                    p.as_str()
                ))
            });
        }
    }

    /// Adds this policy's label violations to `out`: on the object's labels, the pod
    /// template's, or both, as `labels.on` says; a location whose labels are `None` is skipped.
    fn check_labels(&self, subject: &Subject<'_>, out: &mut MessageList) {
        let (object, template) = match (self.labels_on, subject.has_template) {
            (LabelsOn::Object, _) => (true, false),
            // Without a template, the object's own labels are its pods'.
            (LabelsOn::Template | LabelsOn::Both, false) => (true, false),
            (LabelsOn::Template, true) => (false, true),
            (LabelsOn::Both, true) => (true, true),
        };
        if object {
            if let Some(labels) = subject.labels {
                self.check_label_map(subject.kind, "", labels, out);
            }
        }
        if template {
            if let Some(labels) = subject.template_labels {
                self.check_label_map(subject.kind, " pod template", labels, out);
            }
        }
    }

    /// Adds the violations of one label map (`whose` names its place in messages).
    fn check_label_map(&self, kind: &str, whose: &str, labels: &StrMap<'_>, out: &mut MessageList) {
        for rule in &self.labels {
            let value = labels.get(rule.key.as_str());
            if value.is_some_and(|v| rule.value.matches(v)) {
                continue;
            }
            out.push_with(|| {
                let want = match &rule.value {
                    ValueMatch::Regex(r) => {
                        format!(" with a value matching regex {:?}", r.as_str())
                    }
                    ValueMatch::Glob(g) => match g.0.as_str() {
                        "*" => String::new(),
                        "?*" => " with a non-empty value".to_owned(),
                        v if v.contains(['*', '?']) => format!(" with a value matching {v:?}"),
                        v => format!("={v:?}"),
                    },
                };
                let got = match value {
                    None => "it has none".to_owned(),
                    Some(v) => format!("it has {v:?}"),
                };
                self.tag(format!(
                    "{kind}{whose} must have label {:?}{want}; {got}",
                    rule.key
                ))
            });
        }
    }

    /// "<message> (policy \"name\")", the message cut first so the policy's name survives.
    fn tag(&self, mut message: String) -> String {
        let suffix = format!(" (policy {:?})", self.name);
        messages::cut(
            &mut message,
            messages::MESSAGE_MAX_BYTES.saturating_sub(suffix.len()),
        );
        message.push_str(&suffix);
        message
    }
}

/// "container \"app\"" / "image volume \"data\"" / "image" for an ImageReview.
fn describe(use_: &ImageUse<'_>) -> String {
    if use_.name.is_empty() {
        "image".to_owned()
    } else {
        format!("{} {:?}", use_.source.noun(), use_.name)
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
    ///
    /// Linear in the subject: each distinct image is parsed once, each image checked against
    /// every matching policy; only the violations an answer lists are formatted.
    pub fn decide(&self, subject: &Subject<'_>) -> Decision {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        if !matches!(subject.operation, Operation::Create | Operation::Update) {
            return Decision::default();
        }
        let break_glass = self.break_glass_key(subject);
        let matching: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| {
                p.match_
                    .matches(subject.operation, subject.kind, subject.namespace)
            })
            .collect();
        let mut found = Found {
            denials: MessageList::default(),
            warnings: MessageList::default(),
            audits: vec![MessageList::default(); matching.len()],
            bypassed: MessageList::default(),
        };
        if subject.labels.is_some() || subject.template_labels.is_some() {
            for (i, policy) in matching.iter().enumerate() {
                // Break glass bypasses image policies, never label policies.
                policy.check_labels(subject, found.list(policy, i, false));
            }
        }
        let image_policies: Vec<(usize, &Policy)> = matching
            .iter()
            .enumerate()
            .filter(|(_, p)| p.checks_images())
            .map(|(i, p)| (i, *p))
            .collect();
        if !image_policies.is_empty() {
            // Each distinct reference is parsed once: parsing dominates a decision, and a pod's
            // references repeat (sidecars, the same image in every container of a big review).
            let mut parsed: HashMap<&str, Result<ImageRef, ReferenceError>> = HashMap::new();
            for use_ in &subject.images {
                let parsed = parsed
                    .entry(use_.image)
                    .or_insert_with(|| ImageRef::parse(use_.image));
                for &(i, policy) in &image_policies {
                    let out = found.list(policy, i, break_glass.is_some());
                    policy.check_image(use_, parsed, out);
                }
            }
        }
        let mut audit: Vec<AuditNote> = matching
            .iter()
            .zip(&found.audits)
            .filter(|(_, list)| !list.is_empty())
            .map(|(policy, list)| AuditNote::violations(&policy.name, list))
            .collect();
        let mut extra_warning = None;
        let break_glass = break_glass.map(|key| {
            let mut key = key.to_owned();
            messages::cut(&mut key, ANNOTATION_KEY_MAX);
            let bypassed = &found.bypassed;
            let what = if bypassed.is_empty() {
                "no image policy was violated".to_owned()
            } else {
                format!(
                    "{}: {}",
                    counted(bypassed.total(), "violation"),
                    bypassed.join("violation")
                )
            };
            extra_warning = Some(format!(
                "break-glass annotation {key:?} bypassed image policies: {what}"
            ));
            audit.push(AuditNote {
                key: "break-glass".to_owned(),
                value: format!("{key}: {what}"),
                count: bypassed.total(),
            });
            key
        });
        let denied = found.denials.total();
        Decision {
            message: (denied > 0).then(|| found.denials.join("violation")),
            denied,
            warnings: messages::warnings(&found.warnings, extra_warning),
            audit,
            break_glass,
        }
    }
}

/// Where one decision's violations go, by the enforcement of the policy that found them.
struct Found {
    denials: MessageList,
    warnings: MessageList,
    /// One per matching policy (only audit policies' are used).
    audits: Vec<MessageList>,
    /// Image violations let through by break glass.
    bypassed: MessageList,
}

impl Found {
    /// The list for a violation of `policy`, the `index`th matching one.
    fn list(&mut self, policy: &Policy, index: usize, bypassed: bool) -> &mut MessageList {
        if bypassed {
            return &mut self.bypassed;
        }
        match policy.enforcement {
            Enforcement::Deny => &mut self.denials,
            Enforcement::Warn => &mut self.warnings,
            // One list per matching policy, so the index is in range; the fallback keeps this
            // total without a panic path.
            Enforcement::Audit => match self.audits.get_mut(index) {
                Some(list) => list,
                None => &mut self.bypassed,
            },
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
            state.write_str(use_.source.field());
            state.write_str(use_.name);
            state.write_str(use_.image);
        }
        // Which labels matter is the policy set's business; see `PolicyInput`.
        match self.labels {
            None => state.write(&[0]),
            Some(_) => state.write(&[1]),
        }
        state.write(&[u8::from(self.has_template)]);
        match self.template_labels {
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
        // Every location a rule may read: the object's labels and the pod template's.
        for labels in [self.subject.labels, self.subject.template_labels]
            .into_iter()
            .flatten()
        {
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
        ready(Ok(shared(input.policies.decide(input.subject))))
    }
}

/// The decision behind an `Arc`. An allow with nothing to say (no warning, no audit note, no
/// break-glass) is the commonest answer: all of them share one allocation, so a full decision
/// cache holds a key and a pointer for each (issue 11's memory target).
fn shared(decision: Decision) -> Arc<Decision> {
    static PLAIN_ALLOW: std::sync::LazyLock<Arc<Decision>> =
        std::sync::LazyLock::new(|| Arc::new(Decision::default()));
    if decision == Decision::default() {
        PLAIN_ALLOW.clone()
    } else {
        Arc::new(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_allows_share_one_allocation_and_others_keep_theirs() {
        let plain = shared(Decision::default());
        assert!(plain.allowed());
        assert!(Arc::ptr_eq(&plain, &shared(Decision::default())));
        let warned = Decision {
            warnings: vec!["w".to_owned()],
            ..Decision::default()
        };
        let kept = shared(warned.clone());
        assert_eq!(*kept, warned);
        assert!(!Arc::ptr_eq(&plain, &kept));
        let denied = Decision {
            denied: 1,
            message: Some("no".to_owned()),
            ..Decision::default()
        };
        assert_eq!(*shared(denied.clone()), denied);
    }

    fn use_<'a>(name: &'a str, source: ImageSource, image: &'a str) -> ImageUse<'a> {
        ImageUse {
            name,
            source,
            image,
        }
    }

    fn subject<'a>(images: Vec<ImageUse<'a>>) -> Subject<'a> {
        Subject {
            operation: Operation::Create,
            kind: "Pod",
            namespace: "default",
            images,
            labels: None,
            has_template: false,
            template_labels: None,
            annotations: Vec::new(),
        }
    }

    #[test]
    fn default_is_the_latest_tag_rule() {
        let policies = Policies::default();
        let decision = policies.decide(&subject(vec![
            use_("a", ImageSource::Containers, "nginx"),
            use_("b", ImageSource::InitContainers, "nginx:1.25"),
            use_("v", ImageSource::Volumes, "quay.io/evil/payload:latest"),
        ]));
        assert_eq!(decision.denied, 2);
        let message = decision.message.unwrap_or_default();
        assert_eq!(
            message,
            "Images using latest tag are not allowed: container \"a\" uses \"nginx\" (policy \
             \"no-latest-tag\"); Images using latest tag are not allowed: image volume \"v\" uses \
             \"quay.io/evil/payload:latest\" (policy \"no-latest-tag\")"
        );
    }

    #[test]
    fn a_decision_is_bounded_however_many_violations() {
        let policy = |name: &str, enforcement| Policy {
            name: name.to_owned(),
            enforcement,
            ..Policy::builtin_no_latest()
        };
        let policies = Policies::new(
            vec![
                policy("deny", Enforcement::Deny),
                policy("warn", Enforcement::Warn),
                policy("audit", Enforcement::Audit),
            ],
            None,
        );
        // A few long references first (each message is cut), then many short ones (counted).
        let long = format!("nginx{}", "x".repeat(5000));
        let names: Vec<String> = (0..50_000).map(|i| format!("c{i}")).collect();
        let images = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let image = if i < 2 { long.as_str() } else { "nginx" };
                use_(n, ImageSource::Containers, image)
            })
            .collect();
        let decision = policies.decide(&subject(images));
        assert_eq!(decision.denied, 50_000);
        let message = decision.message.unwrap_or_default();
        assert!(
            message.len() <= messages::JOINED_MAX_BYTES,
            "{}",
            message.len()
        );
        // Too long to be valid; the message quoting it is cut, the policy still named.
        assert!(
            message.starts_with("container \"c0\": invalid image reference"),
            "{message}"
        );
        assert!(message.contains("... (policy \"deny\"); "), "{message}");
        assert!(
            message.ends_with("; and 49990 more violations"),
            "{message}"
        );
        assert!(decision.warnings.len() <= messages::LISTED + 1);
        let shown = decision.warnings.len() - 1;
        assert_eq!(
            decision.warnings.last(),
            Some(&format!("and {} more warnings not shown", 50_000 - shown))
        );
        assert!(decision.warnings.iter().map(String::len).sum::<usize>() <= 4096);
        let [note] = decision.audit.as_slice() else {
            panic!("{:?}", decision.audit)
        };
        assert_eq!(note.key, "policy-audit");
        assert_eq!(note.count, 50_000);
        assert!(
            note.value.starts_with("50000 violations: "),
            "{}",
            note.value
        );
        assert!(note.value.len() <= messages::JOINED_MAX_BYTES + 32);
    }
}
