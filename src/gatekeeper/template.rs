//! One ConstraintTemplate: its Rego compiled by regorus as Gatekeeper compiles it.

use std::path::Path;
use std::time::Duration;

use regorus::{Engine, Value};

use super::schema::Schema;
use super::source::{scan, Scan};

/// Gatekeeper's only validating target.
pub const TARGET: &str = "admission.k8s.gatekeeper.sh";
/// The rule every template defines, in the package Gatekeeper renames it to.
const ENTRYPOINT: &str = "data.template.violation";

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    /// `metadata.name`.
    pub name: String,
    /// The constraint kind it defines (`spec.crd.spec.names.kind`).
    pub kind: String,
    /// The file it came from.
    pub file: String,
    /// The parameters' schema (`openAPIV3Schema`); `None` accepts any parameters.
    pub schema: Option<Schema>,
    /// True when the Rego mentions `labels`: such templates are not run on ImageReviews,
    /// which carry none.
    pub reads_labels: bool,
    engine: Engine,
}

/// The Rego part of a template's target.
#[derive(Debug, Default)]
pub struct RegoCode {
    /// The template module.
    pub rego: String,
    /// Library modules (`package lib.*`).
    pub libs: Vec<String>,
    /// `v1` for Rego v1 syntax; v0 otherwise.
    pub v1: bool,
}

impl Template {
    /// Compiles `code`; the error says what is wrong, for the loader to name file and template.
    pub fn compile(
        name: String,
        kind: String,
        file: &Path,
        code: &RegoCode,
        schema: Option<Schema>,
        eval_timeout: Duration,
    ) -> Result<Self, String> {
        let v0 = !code.v1;
        let main = scan(&code.rego, Some("template"), v0).map_err(|e| format!("rego: {e}"))?;
        if !main.defines.contains("violation") {
            return Err("rego: the template defines no `violation` rule".to_owned());
        }
        let mut modules = vec![("template.rego".to_owned(), main)];
        for (i, lib) in code.libs.iter().enumerate() {
            let scanned = scan(lib, None, v0).map_err(|e| format!("libs[{i}]: {e}"))?;
            if !(scanned.package == "lib" || scanned.package.starts_with("lib.")) {
                return Err(format!(
                    "libs[{i}]: package {} is not under `lib` (Gatekeeper requires lib.*)",
                    scanned.package
                ));
            }
            modules.push((format!("lib_{i}.rego"), scanned));
        }
        check(&modules)?;

        let mut engine = Engine::new();
        engine.set_rego_v0(v0);
        // OPA semantics: a builtin given the wrong types is undefined, not an error.
        engine.set_strict_builtin_errors(false);
        engine.set_execution_timer_config(super::timer(eval_timeout));
        let mut reads_labels = false;
        for (path, module) in modules {
            reads_labels |= module.rewritten.contains("labels");
            engine
                .add_policy(path.clone(), module.rewritten)
                .map_err(|e| format!("{path}: {}", last_line(&e.to_string())))?;
        }
        // Prepares the engine (rule index, scheduling, safety) once, so clones start warm and
        // static mistakes are refused here rather than at the first request.
        engine
            .compile_with_entrypoint(&ENTRYPOINT.into())
            .map_err(|e| format!("compile: {}", last_line(&e.to_string())))?;
        Ok(Self {
            name,
            kind,
            file: file.display().to_string(),
            schema,
            reads_labels,
            engine,
        })
    }

    /// Evaluates `violation` for one input; the messages of the violations found.
    pub fn violations(&self, input: Value) -> Result<Vec<String>, String> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        let result = engine
            .eval_rule(ENTRYPOINT.to_owned())
            .map_err(|e| last_line(&e.to_string()))?;
        let items: Vec<&Value> = match &result {
            Value::Undefined | Value::Null => Vec::new(),
            Value::Set(set) => set.iter().collect(),
            Value::Array(array) => array.iter().collect(),
            other => return Err(format!("violation is not a set: {other}")),
        };
        // Gatekeeper's hook reads `r.msg`: a violation without one is not reported.
        Ok(items
            .into_iter()
            .filter_map(|r| match &r["msg"] {
                Value::String(s) => Some(s.to_string()),
                Value::Undefined => None,
                other => Some(other.to_string()),
            })
            .collect())
    }
}

/// What gatehouse cannot honour, refused before regorus sees the code.
fn check(modules: &[(String, Scan)]) -> Result<(), String> {
    let defined: Vec<&String> = modules.iter().flat_map(|(_, m)| &m.defines).collect();
    for (path, module) in modules {
        if let Some((segment, line)) = module.data_refs.first() {
            return Err(match segment.as_str() {
                "inventory" => format!(
                    "{path} line {line}: reads data.inventory (Gatekeeper's cache of cluster \
                     objects); gatehouse has no cluster state, so referential templates cannot \
                     be honoured"
                ),
                "" => format!("{path} line {line}: reads all of `data`; only data.lib.* exists"),
                other => format!(
                    "{path} line {line}: reads data.{other}; templates may read only data.lib.*"
                ),
            });
        }
        if let Some(line) = module.namespace_object {
            return Err(format!(
                "{path} line {line}: reads input.review.namespaceObject (the Namespace from \
                 Gatekeeper's cluster cache); gatehouse has no cluster state"
            ));
        }
        for (call, line) in &module.calls {
            if call == "external_data" {
                return Err(format!(
                    "{path} line {line}: calls external_data; external data providers are not \
                     supported"
                ));
            }
            let last = call.rsplit('.').next().unwrap_or(call);
            let known = regorus::unstable::BUILTINS.contains_key(call.as_str())
                || matches!(call.as_str(), "print" | "trace")
                || defined.iter().any(|d| d.as_str() == last);
            if !known {
                return Err(format!(
                    "{path} line {line}: calls {call}, which gatehouse's Rego engine does not \
                     provide"
                ));
            }
        }
    }
    Ok(())
}

/// regorus errors carry a source snippet: keep the location and the last line (what is wrong).
fn last_line(e: &str) -> String {
    let what = e
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(e)
        .trim();
    match e.lines().find_map(|l| l.trim().strip_prefix("--> ")) {
        Some(at) => format!("{at}: {what}"),
        None => what.to_owned(),
    }
}
