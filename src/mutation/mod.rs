//! `/mutate`'s decisions: which mutations apply to a request, and the RFC 6902 patch that
//! performs them, computed from the projection ([`ObjectView`]), never from a parsed copy of
//! the whole object.
//!
//! Mutations run in order on a working view (labels, annotations, the image and pull policy of
//! each container and image volume), each seeing the effect of those before it; the patch is the
//! difference between that view and the object as received. Mutations only ever set values, and
//! the view they produce is their own fixed point: a set-if-absent finds its value, an overwrite
//! writes the same value again, and no rewritten image lies under a rewrite key (the config
//! refuses such targets). So running them on their own output yields no patch, which the
//! apiserver relies on when it reinvokes the webhook (`reinvocationPolicy: IfNeeded`).

mod config;
pub mod patch;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

pub use config::MutationConfig;
use patch::{pointer, Op, PatchOp, PatchValue};

use crate::matching::Match;
use crate::reference::{ImageRef, RefPattern};
use crate::review::admission::Operation;
use crate::review::messages::{self, MessageList};
use crate::review::object::{ImageSlot, ImageSource, ObjectView, PodLocation};
use crate::review::StrMap;

/// The audit annotation listing the mutations that changed the object.
pub const AUDIT_MUTATIONS: &str = "mutations";
/// The audit annotation listing rewritten images, `old -> new`.
pub const AUDIT_IMAGE_REWRITES: &str = "image-rewrites";

/// The compiled `mutations:`, in file order.
#[derive(Debug, Default)]
pub struct Mutations {
    list: Vec<Mutation>,
}

/// One compiled mutation.
#[derive(Debug)]
struct Mutation {
    name: String,
    scope: Match,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    overwrite: bool,
    /// Most specific prefix first.
    rewrites: Vec<Rewrite>,
    pull_policy: Option<PullPolicy>,
}

/// A container's `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// `Always`
    Always,
    /// `IfNotPresent`
    IfNotPresent,
    /// `Never`
    Never,
}

impl PullPolicy {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// One `rewrite_registries` entry.
#[derive(Debug)]
struct Rewrite {
    /// The key, normalised.
    from: RefPattern,
    /// The key as written, for messages.
    from_text: String,
    /// The key's normalised `domain[/path]`, without any `/*`.
    prefix: String,
    /// Length of the key's repository path (0 for a registry).
    path_len: usize,
    /// The replacement for the prefix.
    to: String,
}

impl Rewrite {
    /// `image` with this rule's prefix replaced, keeping tag and digest; `None` when the image
    /// is not under the prefix.
    fn apply(&self, image: &ImageRef) -> Option<String> {
        if !self.from.matches(image) {
            return None;
        }
        // After a registry: the whole path. After a repository: "" or "/more/segments".
        let rest = image.path().get(self.path_len..)?;
        let mut name = String::with_capacity(self.to.len() + 1 + rest.len());
        name.push_str(&self.to);
        if self.path_len == 0 {
            name.push('/');
        }
        name.push_str(rest);
        Some(image.with_name(&name))
    }
}

/// What mutations read of a request.
#[derive(Clone, Copy, Debug)]
pub struct Target<'v, 'a> {
    /// The operation.
    pub operation: Operation,
    /// The object's API group ("" for core).
    pub group: &'v str,
    /// The object's kind.
    pub kind: &'v str,
    /// The namespace ("" for cluster-scoped objects).
    pub namespace: &'v str,
    /// The subresource (`ephemeralcontainers`), if any.
    pub sub_resource: Option<&'v str>,
    /// The projected object; `None` when the request carries none.
    pub object: Option<&'v ObjectView<'a>>,
    /// The projected object before an UPDATE.
    pub old_object: Option<&'v ObjectView<'a>>,
}

/// What the mutations did to one object.
#[derive(Debug, Default)]
pub struct Outcome<'m> {
    /// The operations, empty when nothing changes.
    pub patch: Vec<PatchOp<'m>>,
    /// Recorded in the audit log.
    pub audit: Vec<(&'static str, String)>,
    /// Shown to the client.
    pub warnings: Vec<String>,
}

impl Mutations {
    /// True when some mutation applies to a request with this operation, kind and namespace.
    pub fn in_scope(&self, operation: Operation, kind: &str, namespace: &str) -> bool {
        matches!(operation, Operation::Create | Operation::Update)
            && self
                .list
                .iter()
                .any(|m| m.scope.matches(operation, kind, namespace))
    }

    /// Runs the mutations that apply to `target`, in order, and returns the patch.
    ///
    /// They act on the pod the object describes (a Pod, or a workload's pod template), or on
    /// the object's own metadata for kinds without pods.
    pub fn mutate<'m>(&'m self, target: &Target<'_, '_>) -> Outcome<'m> {
        let mut outcome = Outcome::default();
        let Some(object) = target.object else {
            return outcome;
        };
        let (operation, kind, namespace) = (target.operation, target.kind, target.namespace);
        if !self.in_scope(operation, kind, namespace) {
            return outcome;
        }
        let location = PodLocation::for_kind(target.group, kind);
        // On UPDATE, a patch must not touch what the apiserver then refuses to change, or the
        // update fails (and a controller removing a finalizer leaves the pod stuck):
        // - a Job's pod template is immutable;
        // - a running Pod's pull policy is immutable and a changed image restarts the container.
        // - a running Pod's volumes are immutable;
        // - an existing ephemeral container may not change at all.
        // So image mutations act on Pod CREATE and on workload templates (whose change is the
        // user's rollout); on a Pod UPDATE only through `pods/ephemeralcontainers`, and only on
        // the ephemeral containers that oldObject does not have yet (by name, as the apiserver
        // compares them).
        let update = operation == Operation::Update;
        if update && (target.group, kind) == ("batch", "Job") {
            return outcome;
        }
        let running_pod = update && location == Some(PodLocation::Pod);
        let debugged = running_pod && target.sub_resource == Some("ephemeralcontainers");
        // Indexed once, so the check per container is a lookup. Without oldObject (the
        // apiserver always sends it on UPDATE) any of them may exist: none is in reach.
        let existing: Option<HashSet<&str>> = target.old_object.filter(|_| debugged).map(|old| {
            old.spec
                .iter()
                .flat_map(|spec| spec.images())
                .filter(|s| s.source == ImageSource::EphemeralContainers)
                .map(|s| s.name)
                .collect()
        });
        let in_reach = |slot: &ImageSlot<'_>| {
            if !running_pod {
                return true;
            }
            existing.as_ref().is_some_and(|existing| {
                slot.source == ImageSource::EphemeralContainers && !existing.contains(slot.name)
            })
        };
        let (meta, spec) = match location {
            Some(location) => {
                let pod = object.pod(location);
                (pod.metadata, pod.spec)
            }
            None => (Some(&object.metadata), None),
        };
        let meta_pointer = location.map_or("/metadata", PodLocation::metadata_pointer);
        let spec_pointer = location.map_or("", PodLocation::spec_pointer);
        let mut labels = MapEdit::new(meta.and_then(|m| m.labels.as_ref()));
        let mut annotations = MapEdit::new(meta.and_then(|m| m.annotations.as_ref()));
        let mut images: Vec<ImageEdit<'_>> = spec
            .map(|s| s.images().filter(in_reach).map(ImageEdit::new).collect())
            .unwrap_or_default();
        let mut warnings = MessageList::default();
        let mut acted = Vec::new();
        for m in &self.list {
            if !m.scope.matches(operation, kind, namespace) {
                continue;
            }
            let mut changed = false;
            // No metadata location means a workload without a pod template: nothing to label.
            if meta.is_some() {
                for (k, v) in &m.labels {
                    changed |= labels.set(k, v, m.overwrite);
                }
                for (k, v) in &m.annotations {
                    changed |= annotations.set(k, v, m.overwrite);
                }
            }
            for image in &mut images {
                changed |= image.mutate(m, &mut warnings);
            }
            if changed {
                acted.push(m.name.as_str());
            }
        }
        if let Some(meta) = meta {
            if meta.present {
                labels.ops(&pointer(meta_pointer, "labels"), &mut outcome.patch);
                annotations.ops(&pointer(meta_pointer, "annotations"), &mut outcome.patch);
            } else {
                // No metadata at all: adding `.../metadata/labels` would not apply; create it.
                let (labels, annotations) = (labels.new_map(), annotations.new_map());
                if labels.is_some() || annotations.is_some() {
                    outcome.patch.push(PatchOp {
                        op: Op::Add,
                        path: meta_pointer.to_owned(),
                        value: PatchValue::Metadata {
                            labels,
                            annotations,
                        },
                    });
                }
            }
        }
        // The patch itself names every change (it must); what is reported about it is bounded.
        let mut rewrites = MessageList::default();
        for image in images {
            image.ops(spec_pointer, &mut outcome.patch, &mut rewrites);
        }
        if !outcome.patch.is_empty() {
            outcome.audit.push((AUDIT_MUTATIONS, acted.join(", ")));
        }
        if !rewrites.is_empty() {
            outcome
                .audit
                .push((AUDIT_IMAGE_REWRITES, rewrites.join("rewrite")));
        }
        outcome.warnings = messages::warnings(&warnings, None);
        outcome
    }
}

/// A label or annotation map being edited: the object's map and what the mutations set.
struct MapEdit<'v, 'a, 'm> {
    /// `None` when absent or null: the patch must then add the whole map.
    original: Option<&'v StrMap<'a>>,
    set: BTreeMap<&'m str, &'m str>,
}

impl<'v, 'a, 'm> MapEdit<'v, 'a, 'm> {
    fn new(original: Option<&'v StrMap<'a>>) -> Self {
        Self {
            original,
            set: BTreeMap::new(),
        }
    }

    fn original(&self, key: &str) -> Option<&str> {
        self.original.and_then(|m| m.get(key)).map(|v| v.as_ref())
    }

    /// Sets `key` unless it has a value already and `overwrite` is false; true when it changed.
    fn set(&mut self, key: &'m str, value: &'m str, overwrite: bool) -> bool {
        let current = match self.set.get(key) {
            Some(v) => Some(*v),
            None => self.original(key),
        };
        let change = match current {
            Some(current) => current != value && overwrite,
            None => true,
        };
        if change {
            self.set.insert(key, value);
        }
        change
    }

    /// Keys whose value differs from the object's, with whether the object has the key.
    fn changes(&self) -> impl Iterator<Item = (&'m str, &'m str, bool)> + '_ {
        self.set
            .iter()
            .filter_map(|(&k, &v)| match self.original(k) {
                Some(original) if original == v => None,
                original => Some((k, v, original.is_some())),
            })
    }

    /// The changes as a new map, `None` when there are none.
    fn new_map(&self) -> Option<BTreeMap<&'m str, &'m str>> {
        let map: BTreeMap<_, _> = self.changes().map(|(k, v, _)| (k, v)).collect();
        (!map.is_empty()).then_some(map)
    }

    /// The operations for a map at `base` in an object whose metadata exists.
    fn ops(&self, base: &str, out: &mut Vec<PatchOp<'m>>) {
        if self.original.is_none() {
            if let Some(map) = self.new_map() {
                out.push(PatchOp {
                    op: Op::Add,
                    path: base.to_owned(),
                    value: PatchValue::Map(map),
                });
            }
            return;
        }
        for (key, value, exists) in self.changes() {
            out.push(PatchOp {
                op: if exists { Op::Replace } else { Op::Add },
                path: pointer(base, key),
                value: PatchValue::String(Cow::Borrowed(value)),
            });
        }
    }
}

/// A container's or image volume's image being edited.
struct ImageEdit<'v> {
    slot: ImageSlot<'v>,
    /// The image once rewritten.
    image: Option<String>,
    /// The pull policy once set.
    pull_policy: Option<PullPolicy>,
}

impl<'v> ImageEdit<'v> {
    fn new(slot: ImageSlot<'v>) -> Self {
        Self {
            slot,
            image: None,
            pull_policy: None,
        }
    }

    /// Applies one mutation's image rules; true when something changed.
    fn mutate(&mut self, m: &Mutation, warnings: &mut MessageList) -> bool {
        let mut changed = false;
        let current = self.image.as_deref().or(self.slot.image);
        // An image that does not parse is left as written: /validate refuses it.
        let parsed = match current {
            Some(current) if !m.rewrites.is_empty() => ImageRef::parse(current).ok(),
            _ => None,
        };
        if let (Some(current), Some(image)) = (current, parsed) {
            if let Some(rewritten) = m.rewrites.iter().find_map(|r| r.apply(&image)) {
                match ImageRef::parse(&rewritten) {
                    Ok(_) if rewritten == current => {}
                    Ok(_) => {
                        self.image = Some(rewritten);
                        changed = true;
                    }
                    Err(e) => warnings.push_with(|| {
                        format!(
                            "gatehouse mutation {:?}: {} image {current:?} left as is: the \
                             rewrite gives {e}",
                            m.name,
                            self.describe()
                        )
                    }),
                }
            }
        }
        if let Some(policy) = m.pull_policy {
            let current = match self.pull_policy {
                Some(p) => Some(p.as_str()),
                // "" is what an unset field looks like to the apiserver's defaulting too.
                None => self.slot.pull_policy.filter(|p| !p.is_empty()),
            };
            let change = match current {
                Some(current) => current != policy.as_str() && m.overwrite,
                None => true,
            };
            if change {
                self.pull_policy = Some(policy);
                changed = true;
            }
        }
        changed
    }

    /// `containers[0] "app"`, `volumes[2] "data"`.
    fn describe(&self) -> String {
        let mut out = String::with_capacity(self.slot.name.len() + 32);
        self.describe_into(&mut out);
        out
    }

    /// Appends [`Self::describe`]'s text to `out`.
    fn describe_into(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{}[{}] {:?}",
            self.slot.source.field(),
            self.slot.index,
            self.slot.name
        );
    }

    /// The pointer to `member` of this item under the PodSpec at `spec`, e.g.
    /// `/spec/containers/0/image`.
    fn pointer(&self, spec: &str, member: &str) -> String {
        let field = self.slot.source.field();
        let mut path = String::with_capacity(spec.len() + field.len() + member.len() + 24);
        path.push_str(spec);
        path.push('/');
        path.push_str(field);
        path.push('/');
        push_decimal(&mut path, self.slot.index);
        path.push('/');
        path.push_str(member);
        path
    }

    /// The operations, under the PodSpec at `spec`; rewrites are reported.
    fn ops<'m>(mut self, spec: &str, out: &mut Vec<PatchOp<'m>>, rewrites: &mut MessageList) {
        let source = self.slot.source;
        if let (Some(image), Some(original)) = (self.image.take(), self.slot.image) {
            if image != original {
                rewrites.push_with(|| {
                    let mut message = String::with_capacity(
                        48 + original.len() + image.len() + self.slot.name.len(),
                    );
                    self.describe_into(&mut message);
                    message.push_str(": ");
                    message.push_str(original);
                    message.push_str(" -> ");
                    message.push_str(&image);
                    message
                });
                out.push(PatchOp {
                    // The member exists: the projection read it.
                    op: Op::Replace,
                    path: self.pointer(spec, source.image_member()),
                    value: PatchValue::String(Cow::Owned(image)),
                });
            }
        }
        if let Some(policy) = self.pull_policy {
            if self.slot.pull_policy != Some(policy.as_str()) {
                out.push(PatchOp {
                    // Creates the member, or replaces an empty or null one (an image volume's
                    // `image` object exists: the projection read it).
                    op: Op::Add,
                    path: self.pointer(spec, source.pull_policy_member()),
                    value: PatchValue::String(Cow::Borrowed(policy.as_str())),
                });
            }
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: usize) {
    let mut buf = [0; 20];
    let digits = crate::decimal::digits(n as u64, &mut buf);
    out.extend(digits.iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests;
