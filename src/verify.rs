//! `gatehouse verify SUITE.yaml...`: runs Gatekeeper test suites (gator's `suite.yaml`) through
//! the same loader and evaluation as the server, so users keep their existing policy tests.
//!
//! Semantics follow `gator verify`: each test loads a template and a constraint (an `invalid`
//! test passes when the constraint is refused); each case reviews one object (an
//! `AdmissionReview` object is reviewed as its request) and checks every assertion: the number
//! of violations (`yes` = at least one, the default; `no` = none; or an exact count), counting
//! only those whose message matches `message` (a regular expression) when it is given.
//!
//! With `--rvm`, every case also runs on regorus's RVM where the template compiles to it, and a
//! case the two engines answer differently fails (README: why requests use the interpreter).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use crate::cli::VerifyArgs;
use crate::gatekeeper::{self, LoadError, RegoEngine, Review, Rvm, Violation};

/// Offline, a slow machine or a first evaluation (regular expressions compiled on first use)
/// must not fail a suite; the server's limit is `gatekeeper.eval_timeout`.
const VERIFY_EVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A suite file.
#[derive(Debug, Deserialize)]
struct Suite {
    #[serde(default)]
    tests: Vec<Test>,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
struct Test {
    #[serde(default)]
    name: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    constraint: String,
    #[serde(default)]
    expansion: String,
    #[serde(default)]
    cases: Vec<Case>,
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
struct Case {
    #[serde(default)]
    name: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    inventory: Vec<String>,
    #[serde(default)]
    assertions: Vec<Assertion>,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
struct Assertion {
    #[serde(default)]
    violations: Option<Count>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Count {
    Exactly(i64),
    /// `yes` and `no` read as YAML 1.1 booleans.
    Flag(bool),
    Word(String),
}

/// Totals over every suite run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tests whose template and constraint loaded (or, for `invalid`, were refused) and whose
    /// cases all passed.
    pub tests_passed: usize,
    /// Tests that failed (load error or a failed case).
    pub tests_failed: usize,
    /// Cases that passed.
    pub cases_passed: usize,
    /// Cases that failed, including those of a test that could not load.
    pub cases_failed: usize,
    /// Tests and cases skipped (`skip: true`, or an `expansion` gatehouse does not do).
    pub skipped: usize,
    /// Templates loaded that compiled to the RVM.
    pub rvm_templates: usize,
    /// Templates loaded that the RVM cannot run (its compiler refused them).
    pub rvm_refused: usize,
    /// Cases run on both engines.
    pub cases_both: usize,
    /// Cases the two engines answered differently (each also counted as failed).
    pub cases_differ: usize,
}

/// Runs the suites named on the command line; exits non-zero when any test or case fails.
pub fn main(args: &VerifyArgs) -> ExitCode {
    let mut totals = Totals::default();
    let mut report = String::new();
    for suite in &args.suites {
        run_suite(suite, args.rvm, args.verbose, &mut totals, &mut report);
    }
    print!("{report}");
    println!(
        "{} passed, {} failed (tests: {} passed, {} failed; {} skipped)",
        totals.cases_passed,
        totals.cases_failed,
        totals.tests_passed,
        totals.tests_failed,
        totals.skipped
    );
    if args.rvm {
        println!(
            "rvm: {} templates compiled, {} refused; {} cases run on both engines, {} answered differently",
            totals.rvm_templates, totals.rvm_refused, totals.cases_both, totals.cases_differ
        );
    }
    if totals.cases_failed == 0 && totals.tests_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one suite file, adding to `totals` and writing a line per test (and per case when
/// `verbose`, or when it failed) to `out`.
pub fn run_suite(path: &Path, rvm: bool, verbose: bool, totals: &mut Totals, out: &mut String) {
    let suite = match read_suite(path) {
        Ok(s) => s,
        Err(e) => {
            totals.tests_failed += 1;
            let _ = writeln!(out, "FAIL {}: {e}", path.display());
            return;
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if suite.skip {
        totals.skipped += 1;
        let _ = writeln!(out, "skip {}", path.display());
        return;
    }
    for test in &suite.tests {
        let label = format!("{} {}", path.display(), test.name);
        if test.skip || !test.expansion.is_empty() {
            totals.skipped += 1;
            let why = if test.skip {
                ""
            } else {
                " (expansion templates are not supported)"
            };
            let _ = writeln!(out, "skip {label}{why}");
            continue;
        }
        let loaded = load_test(dir, test, rvm);
        if test.invalid {
            match loaded {
                Err(LoadError::Constraint { .. }) => {
                    totals.tests_passed += 1;
                    let _ = writeln!(out, "ok   {label} (constraint refused, as expected)");
                }
                Err(e) => {
                    totals.tests_failed += 1;
                    let _ = writeln!(out, "FAIL {label}: want the constraint refused, got: {e}");
                }
                Ok(_) => {
                    totals.tests_failed += 1;
                    let _ = writeln!(out, "FAIL {label}: want the constraint refused, it loaded");
                }
            }
            continue;
        }
        let gatekeeper = match loaded {
            Ok(g) => g,
            Err(e) => {
                totals.tests_failed += 1;
                totals.cases_failed += test.cases.iter().filter(|c| !c.skip).count();
                let _ = writeln!(out, "FAIL {label}: {e}");
                continue;
            }
        };
        for template in gatekeeper.templates() {
            match &template.rvm {
                Rvm::Compiled(_) => totals.rvm_templates += 1,
                Rvm::Refused(why) => {
                    totals.rvm_refused += 1;
                    let _ = writeln!(
                        out,
                        "note {label}: the RVM cannot run template {}: {why}",
                        template.name
                    );
                }
                Rvm::NotCompiled => {}
            }
        }
        let mut failed = Vec::new();
        for case in &test.cases {
            if case.skip {
                totals.skipped += 1;
                continue;
            }
            match run_case(dir, &gatekeeper, case, totals) {
                Ok(()) => {
                    totals.cases_passed += 1;
                    if verbose {
                        failed.push(format!("  ok   {}", case.name));
                    }
                }
                Err(e) => {
                    totals.cases_failed += 1;
                    failed.push(format!("  FAIL {}: {e}", case.name));
                }
            }
        }
        let ok = !failed.iter().any(|l| l.starts_with("  FAIL"));
        if ok {
            totals.tests_passed += 1;
        } else {
            totals.tests_failed += 1;
        }
        let _ = writeln!(out, "{} {label}", if ok { "ok  " } else { "FAIL" });
        for line in failed {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn read_suite(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_saphyr::from_str(&text).map_err(|e| e.to_string())
}

fn load_test(dir: &Path, test: &Test, with_rvm: bool) -> Result<gatekeeper::Gatekeeper, LoadError> {
    let mut documents = Vec::new();
    // One file may hold a template and its constraints: take templates from `template` and
    // everything else from `constraint`.
    for (file, templates) in [(&test.template, true), (&test.constraint, false)] {
        if file.is_empty() {
            return Err(LoadError::Read {
                path: PathBuf::from(&test.name),
                message: "the test names no template or no constraint".to_owned(),
            });
        }
        documents.extend(
            gatekeeper::read_documents(&dir.join(file))?
                .into_iter()
                .filter(|(_, _, d)| (d["kind"] == "ConstraintTemplate") == templates),
        );
    }
    gatekeeper::load_documents(documents, VERIFY_EVAL_TIMEOUT, with_rvm)
}

fn run_case(
    dir: &Path,
    gatekeeper: &gatekeeper::Gatekeeper,
    case: &Case,
    totals: &mut Totals,
) -> Result<(), String> {
    if case.object.is_empty() {
        return Err("the case names no object".to_owned());
    }
    if case.assertions.is_empty() {
        return Err("the case has no assertions".to_owned());
    }
    if !case.inventory.is_empty() {
        return Err("inventory (cluster state) is not supported".to_owned());
    }
    let docs = gatekeeper::read_documents(&dir.join(&case.object)).map_err(|e| e.to_string())?;
    let [(_, _, object)] = docs.as_slice() else {
        return Err(format!(
            "{} defines {} objects, want 1",
            case.object,
            docs.len()
        ));
    };
    let value: regorus::Value =
        serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let review = if object["kind"] == "AdmissionReview"
        && object["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("admission.k8s.io/"))
    {
        Review::from_request(value["request"].clone()).map_err(|e| e.to_string())?
    } else {
        Review::from_object(value)
    };
    let violations = gatekeeper.evaluate(&review);
    // The interpreter is the reference; the RVM must agree with it wherever it runs.
    if gatekeeper
        .templates()
        .iter()
        .any(|t| matches!(t.rvm, Rvm::Compiled(_)))
    {
        if let Some(rvm) = gatekeeper.evaluate_on(&review, RegoEngine::Rvm) {
            totals.cases_both += 1;
            if let Some(diff) = differ(&violations, &rvm) {
                totals.cases_differ += 1;
                return Err(format!(
                    "the RVM answers differently from the interpreter: {diff}"
                ));
            }
        }
    }
    for assertion in &case.assertions {
        check(assertion, &violations)?;
    }
    Ok(())
}

/// How two engines' answers differ (count, messages or errors), if they do.
fn differ(interpreter: &[Violation], rvm: &[Violation]) -> Option<String> {
    let key = |vs: &[Violation]| {
        let mut all: Vec<(String, String, bool)> = vs
            .iter()
            // Both failing is the same verdict (denied); the engines word errors differently.
            .map(|v| {
                (
                    v.constraint.clone(),
                    if v.error {
                        String::new()
                    } else {
                        v.msg.clone()
                    },
                    v.error,
                )
            })
            .collect();
        all.sort();
        all
    };
    let (a, b) = (key(interpreter), key(rvm));
    (a != b).then(|| {
        let show = |all: &[(String, String, bool)]| -> Vec<String> {
            all.iter()
                .map(|(c, m, e)| format!("[{c}]{} {m}", if *e { " error:" } else { "" }))
                .collect()
        };
        format!("interpreter {:?}, rvm {:?}", show(&a), show(&b))
    })
}

fn check(assertion: &Assertion, violations: &[Violation]) -> Result<(), String> {
    let regex = match &assertion.message {
        Some(m) => Some(regex::Regex::new(m).map_err(|e| format!("message {m:?}: {e}"))?),
        None => None,
    };
    let matching = violations
        .iter()
        .filter(|v| regex.as_ref().is_none_or(|r| r.is_match(&v.msg)))
        .count();
    let messages: Vec<&str> = violations.iter().map(|v| v.msg.as_str()).collect();
    let containing = assertion
        .message
        .as_ref()
        .map(|m| format!(" containing {m:?}"))
        .unwrap_or_default();
    let ok = match &assertion.violations {
        None | Some(Count::Flag(true)) => matching > 0,
        Some(Count::Flag(false)) => matching == 0,
        Some(Count::Word(w)) if w == "yes" => matching > 0,
        Some(Count::Word(w)) if w == "no" => matching == 0,
        Some(Count::Exactly(n)) if *n >= 0 => usize::try_from(*n).is_ok_and(|n| n == matching),
        Some(other) => {
            return Err(format!(
                "assertion violations {other:?} must be a nonnegative integer, \"yes\" or \"no\""
            ))
        }
    };
    if ok {
        return Ok(());
    }
    let want = match &assertion.violations {
        None | Some(Count::Flag(true)) => "at least 1".to_owned(),
        Some(Count::Flag(false)) => "none".to_owned(),
        Some(Count::Word(w)) if w == "no" => "none".to_owned(),
        Some(Count::Word(_)) => "at least 1".to_owned(),
        Some(Count::Exactly(n)) => format!("exactly {n}"),
    };
    Err(format!(
        "got {matching} violations{containing} but want {want}: got messages {messages:?}"
    ))
}
