//! OPA Gatekeeper ConstraintTemplates and their Constraints, run as Gatekeeper runs them, with
//! the Rego evaluated by regorus.
//!
//! The shape follows Gatekeeper's constraint framework: templates and constraints are loaded and
//! compiled once ([`load`]), everything that cannot be honoured is refused there, naming file and
//! template; a request is turned once into a [`Review`] (the Rego input, shared by every
//! template), each constraint whose `match` selects it is evaluated, and the result is a list of
//! [`Violation`]s that the handler merges with the native policies' decision.
//!
//! Gatekeeper decisions do not go through the decision cache: a template may read any field of
//! the object (and `userInfo`, `operation`, `oldObject`), so the only sound cache key would be the
//! whole review, which no two requests share.

mod constraint;
mod load;
mod matcher;
mod review;
mod schema;
mod source;
mod template;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::{AuditNote, Decision};
use crate::review::messages::{self, MessageList};
use crate::units::HumanDuration;

pub use constraint::Constraint;
pub use load::{fingerprint, load, load_documents, read_documents, LoadError, MAX_POLL_BYTES};
pub use review::{Review, ReviewError};
pub use template::{Rvm, Template};

/// Most violations one constraint reports; the rest are counted. Bounds the answer.
const MAX_VIOLATIONS: usize = 50;
/// Longest message kept from a template (characters); longer ones are cut.
const MAX_MESSAGE: usize = 1024;

/// `gatekeeper:` in config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatekeeperConfig {
    /// Files and directories of ConstraintTemplates and constraints (multi-document YAML).
    pub paths: Vec<PathBuf>,
    /// Most time one constraint's evaluation may take; past it the request is denied.
    pub eval_timeout: HumanDuration,
}

/// One of regorus's two Rego engines. Requests use the interpreter; the RVM (the policy
/// compiled to bytecode) is compared with it by `gatehouse verify --rvm`, tests and benches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegoEngine {
    /// The tree-walking interpreter.
    Interpreter,
    /// The RVM.
    Rvm,
}

impl Default for GatekeeperConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            // Library templates take tens of microseconds; 20ms is far above any honest
            // template and keeps a runaway one well inside the apiserver's 10s webhook timeout.
            eval_timeout: HumanDuration(Duration::from_millis(20)),
        }
    }
}

impl GatekeeperConfig {
    /// A time limit must exist and leave the request time to answer.
    pub fn validate(
        &self,
        request_timeout: Duration,
    ) -> Result<(), crate::config_error::ConfigError> {
        let t = self.eval_timeout.0;
        if t.is_zero() || t >= request_timeout {
            return Err(crate::config_error::ConfigError::invalid(
                "gatekeeper.eval_timeout",
                format!("must be greater than 0 and less than limits.request_timeout ({request_timeout:?})"),
            ));
        }
        Ok(())
    }
}

/// A constraint's `spec.enforcementAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Refuse the request.
    Deny,
    /// Allow, with a warning.
    Warn,
    /// Allow; record in audit annotations and the log.
    Dryrun,
}

impl Action {
    /// The spelling in a constraint.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Warn => "warn",
            Self::Dryrun => "dryrun",
        }
    }
}

/// One violation of one constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The constraint's `metadata.name`.
    pub constraint: String,
    /// The constraint's kind (its template's kind).
    pub kind: String,
    /// What it does.
    pub action: Action,
    /// The template's `msg`, or why evaluation failed.
    pub msg: String,
    /// True when evaluation failed or timed out (always denies).
    pub error: bool,
}

/// The loaded templates and constraints.
#[derive(Debug, Default)]
pub struct Gatekeeper {
    templates: Vec<Template>,
    constraints: Vec<Constraint>,
}

impl Gatekeeper {
    /// True when no constraint is loaded (nothing to evaluate).
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    /// The templates, in load order.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// The constraints, in load order.
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// Evaluates every constraint whose `match` selects the review.
    pub fn evaluate(&self, review: &Review) -> Vec<Violation> {
        self.evaluate_with(review, |t, input| Some(t.violations(input)))
    }

    /// Evaluates on one engine, for comparison; `None` when `engine` is the RVM and a selected
    /// template has no RVM program.
    pub fn evaluate_on(&self, review: &Review, engine: RegoEngine) -> Option<Vec<Violation>> {
        let mut missing = false;
        let out = self.evaluate_with(review, |t, input| {
            let answer = t.violations_on(engine, input);
            missing |= answer.is_none();
            answer
        });
        (!missing).then_some(out)
    }

    fn evaluate_with(
        &self,
        review: &Review,
        mut run: impl FnMut(&Template, regorus::Value) -> Option<Result<Vec<String>, String>>,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for constraint in &self.constraints {
            if !constraint.applies_to(review) {
                continue;
            }
            let Some(template) = self.templates.get(constraint.template) else {
                continue;
            };
            match run(template, review.input(&constraint.parameters)) {
                None => {}
                Some(Ok(messages)) => {
                    let total = messages.len();
                    for msg in messages.into_iter().take(MAX_VIOLATIONS) {
                        out.push(constraint.violation(msg, false));
                    }
                    if total > MAX_VIOLATIONS {
                        let more = format!("and {} more violations", total - MAX_VIOLATIONS);
                        out.push(constraint.violation(more, false));
                    }
                }
                // Fail closed: a template that cannot answer refuses, whatever its action.
                Some(Err(e)) => out.push(
                    constraint.violation(format!("evaluation failed, request denied: {e}"), true),
                ),
            }
        }
        out
    }
}

/// Merges violations into a native decision: denials as Gatekeeper's `[name] msg` lines (one
/// denial, one line each), warnings as `[name] msg`, dry runs as audit annotations.
pub fn merge(violations: &[Violation], decision: &mut Decision) {
    // Bounded like the native lists: the first few in full, the rest counted.
    let mut denials = MessageList::default();
    let mut warnings = MessageList::default();
    for v in violations {
        let line = || format!("[{}] {}", v.constraint, clean(&v.msg));
        match (v.error, v.action) {
            (true, _) | (false, Action::Deny) => denials.push_with(line),
            (false, Action::Warn) => warnings.push_with(line),
            (false, Action::Dryrun) => {
                let key = audit_key(&v.constraint);
                match decision.audit.iter_mut().find(|n| n.key == key) {
                    Some(note) => {
                        note.count += 1;
                        if note.value.len() < messages::JOINED_MAX_BYTES {
                            note.value.push_str("; ");
                            note.value.push_str(&clean(&v.msg));
                            messages::cut(&mut note.value, messages::JOINED_MAX_BYTES);
                        }
                    }
                    None => decision.audit.push(AuditNote {
                        key,
                        value: clean(&v.msg),
                        count: 1,
                    }),
                }
            }
        }
    }
    if !denials.is_empty() {
        decision.denied += denials.total();
        // Gatekeeper's own shape: one `[name] msg` line per violation.
        let lines = denials.listed().join("\n");
        let mut message = match decision.message.take() {
            Some(native) => format!("{native}\n{lines}"),
            None => lines,
        };
        if denials.unlisted() > 0 {
            message.push_str(&format!(
                "\nand {}",
                messages::counted(denials.unlisted(), "more violation")
            ));
        }
        messages::cut(&mut message, messages::JOINED_MAX_BYTES);
        decision.message = Some(message);
    }
    if !warnings.is_empty() {
        let mut all = std::mem::take(&mut decision.warnings);
        all.extend(messages::warnings(&warnings, None));
        all.truncate(2 * (messages::LISTED + 1));
        messages::bound_warnings(&mut all);
        decision.warnings = all;
    }
}

/// Logs dry-run violations (every request: they are never cached).
pub fn log_dryrun(violations: &[Violation], route: &'static str, namespace: &str) {
    for v in violations
        .iter()
        .filter(|v| !v.error && v.action == Action::Dryrun)
    {
        tracing::info!(route, namespace, constraint = %v.constraint, kind = %v.kind, msg = %clean(&v.msg), "gatekeeper dryrun constraint violated");
    }
    for v in violations.iter().filter(|v| v.error) {
        tracing::warn!(route, namespace, constraint = %v.constraint, kind = %v.kind, error = %v.msg, "gatekeeper constraint could not be evaluated; denied");
    }
}

/// An audit annotation key: `gatekeeper-<constraint>`, within the 63 characters a key may have.
fn audit_key(constraint: &str) -> String {
    let mut key = format!("gatekeeper-{constraint}");
    if let Some((cut, _)) = key.char_indices().nth(63) {
        key.truncate(cut);
    }
    key
}

/// Control characters would make the apiserver drop a warning; long messages are cut.
fn clean(msg: &str) -> String {
    msg.chars()
        .take(MAX_MESSAGE)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The per-evaluation time limit regorus enforces.
fn timer(limit: Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit,
        // A clock read every 32 work units: cheap, and precise far below a millisecond.
        check_interval: NonZeroU32::MIN.saturating_add(31),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, action: Action, error: bool) -> Violation {
        Violation {
            constraint: name.into(),
            kind: "K".into(),
            action,
            msg: format!("msg of {name}\n"),
            error,
        }
    }

    #[test]
    fn violations_merge_as_gatekeeper_answers() {
        let mut decision = Decision {
            message: Some("native".into()),
            denied: 1,
            ..Decision::default()
        };
        merge(
            &[
                v("a", Action::Deny, false),
                v("b", Action::Warn, false),
                v("c", Action::Dryrun, false),
                v("d", Action::Dryrun, true),
                v("c", Action::Dryrun, false),
            ],
            &mut decision,
        );
        assert_eq!(decision.denied, 3);
        assert_eq!(
            decision.message.as_deref(),
            Some("native\n[a] msg of a \n[d] msg of d ")
        );
        assert_eq!(decision.warnings, ["[b] msg of b "]);
        assert_eq!(
            decision.audit,
            [AuditNote {
                key: "gatekeeper-c".to_owned(),
                value: "msg of c ; msg of c ".to_owned(),
                count: 2,
            }]
        );
        assert_eq!(audit_key(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn merged_violations_stay_bounded() {
        let many: Vec<Violation> = (0..5000)
            .flat_map(|i| {
                [
                    v(&format!("d{i}"), Action::Deny, false),
                    v(&format!("w{i}"), Action::Warn, false),
                    v("c", Action::Dryrun, false),
                ]
            })
            .collect();
        let mut decision = Decision::default();
        merge(&many, &mut decision);
        assert_eq!(decision.denied, 5000);
        let message = decision.message.unwrap_or_default();
        assert!(
            message.len() <= messages::JOINED_MAX_BYTES,
            "{}",
            message.len()
        );
        assert!(message.ends_with("and 4990 more violations"), "{message}");
        assert!(decision.warnings.len() <= messages::LISTED + 1);
        assert_eq!(decision.audit[0].count, 5000);
        assert!(decision.audit[0].value.len() <= messages::JOINED_MAX_BYTES);
    }
}
