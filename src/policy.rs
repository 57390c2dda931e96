//! Decisions about images and objects. The input is a [`Subject`]: what policies read, the same
//! for ImageReview and AdmissionReview, so both routes decide identically.

use crate::reference::ImageRef;
use crate::review::admission::Operation;
use crate::review::object::ContainerList;
use crate::review::StrMap;

/// The seed's (kube-image-bouncer's) message, kept verbatim: users search for it.
pub const LATEST_MESSAGE: &str = "Images using latest tag are not allowed";

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
    /// Labels of the object; `None` for an ImageReview, which carries none.
    pub labels: Option<&'a StrMap<'a>>,
}

/// The outcome of evaluating policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Why the request is refused; empty when allowed.
    pub denials: Vec<String>,
    /// Shown to the user, request allowed.
    pub warnings: Vec<String>,
    /// Recorded in the audit log.
    pub audit: Vec<(String, String)>,
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

/// The compiled policy set.
#[derive(Debug, Default)]
pub struct Policies {}

impl Policies {
    /// Decides a subject. DELETE, CONNECT and unknown operations are allowed without evaluation.
    pub fn decide(&self, subject: &Subject<'_>) -> Decision {
        let mut decision = Decision::default();
        if !matches!(subject.operation, Operation::Create | Operation::Update) {
            return decision;
        }
        for use_ in &subject.images {
            match ImageRef::parse(use_.image) {
                Ok(image) if image.is_latest() => decision.denials.push(format!(
                    "{LATEST_MESSAGE}: {} uses {:?}",
                    describe(use_),
                    use_.image
                )),
                Ok(_) => {}
                // Never allowed by a parse failure.
                Err(e) => decision.denials.push(format!("{}: {e}", describe(use_))),
            }
        }
        decision
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
