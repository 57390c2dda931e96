//! One constraint: a template's kind, parameters, match block and enforcement action.

use regorus::Value;

use super::matcher::Match;
use super::review::Review;
use super::{Action, Violation};

/// A loaded constraint.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// `metadata.name`: named in every message.
    pub name: String,
    /// Its kind, which names its template.
    pub kind: String,
    /// The file it came from.
    pub file: String,
    /// `spec.enforcementAction`.
    pub action: Action,
    /// `spec.parameters`, checked against the template's schema; `{}` when absent.
    pub parameters: Value,
    /// Index of its template.
    pub(super) template: usize,
    pub(super) match_: Match,
    /// The template reads labels, which an ImageReview does not carry.
    pub(super) reads_labels: bool,
}

impl Constraint {
    /// True when this constraint is evaluated for the review.
    ///
    /// An ImageReview carries no labels and no name: a constraint that selects by them, or whose
    /// template reads labels, is decided on `/validate` only (as native label rules are).
    pub fn applies_to(&self, review: &Review) -> bool {
        if review.from_image_review && (self.reads_labels || self.match_.needs_object_metadata()) {
            return false;
        }
        // No object at all (CONNECT): the request's own facts decide.
        let empty = super::review::ObjectFacts::default();
        let mut objects: Vec<_> = review.objects.iter().collect();
        if objects.is_empty() {
            objects.push(&empty);
        }
        self.match_
            .matches(&review.group, &review.kind, &review.namespace, &objects)
    }

    /// A violation of this constraint.
    pub fn violation(&self, msg: String, error: bool) -> Violation {
        Violation {
            constraint: self.name.clone(),
            kind: self.kind.clone(),
            action: self.action,
            msg,
            error,
        }
    }
}
