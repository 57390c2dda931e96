//! `gatehouse check`: what the configured policies and mutations do to manifests, offline.
//!
//! No second implementation: each object becomes the AdmissionReview the apiserver would send
//! (CREATE, admission.k8s.io/v1) and goes through the very tower stack `serve` runs, in process
//! and without a socket. As in the apiserver, `/mutate` runs first and `/validate` judges the
//! patched object.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::app::App;
use crate::cli::{CheckArgs, CheckOutput};
use crate::config::{Config, ConfigError};
use crate::error::Response;
use crate::files;
use crate::review::admission::AdmissionReview;

/// Why `gatehouse check` could not run at all (problems with one file or object are results).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The configuration cannot be loaded or served.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    /// The JSON report could not be encoded.
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Exit status when an object would be denied.
pub const EXIT_DENIED: u8 = 1;
/// Exit status when something could not be checked (configuration, file, object).
pub const EXIT_ERROR: u8 = 2;

/// Runs `gatehouse check`: the report on stdout, a fatal error on stderr.
pub async fn main(args: &CheckArgs) -> ExitCode {
    let mut stdout = std::io::stdout();
    match run(args, &mut stdout).await {
        Ok(summary) => ExitCode::from(summary.exit_code()),
        Err(e) => {
            eprintln!("gatehouse check: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A manifest file larger than this is refused (a whole cluster's `kubectl get -o yaml` fits).
pub const MAX_INPUT: u64 = 64 << 20;

/// Checks every object in `args.files` and writes the report.
pub async fn run(args: &CheckArgs, out: &mut dyn Write) -> Result<Summary, CheckError> {
    // Exhaustive: a new flag is a compile error here until it is wired.
    let CheckArgs {
        config,
        output,
        namespace,
        files,
    } = args;
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // The policies are what is checked, whichever routes this file switches on for serving;
    // /mutate runs when the server would mutate.
    config.routes.validate = true;
    config.routes.mutate |= !config.mutations.is_empty();
    let checker = Checker {
        mutate: config.routes.mutate,
        service: crate::server::service::<Full<Bytes>>(crate::reload::current(App::new(config)?)),
        namespace,
    };

    let mut results = Vec::new();
    for path in files {
        let source = if path.as_os_str() == "-" {
            "<stdin>".to_owned()
        } else {
            path.display().to_string()
        };
        match read_documents(path) {
            Ok(documents) => {
                for (index, document) in documents.into_iter().enumerate() {
                    for (item, object) in expand(document) {
                        let at = Locator {
                            source: source.clone(),
                            document: index + 1,
                            item,
                        };
                        results.push(checker.check(at, object, results.len()).await);
                    }
                }
            }
            Err(error) => results.push(ObjectResult::failed(
                Locator {
                    source,
                    document: 0,
                    item: None,
                },
                error,
            )),
        }
    }
    let summary = Summary::of(&results);
    match output {
        CheckOutput::Text => write_text(out, &results, &summary)?,
        CheckOutput::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &Report {
                    results: &results,
                    summary: &summary,
                },
            )?;
            writeln!(out)?;
        }
    }
    Ok(summary)
}

/// Reads a file (or stdin for `-`) as YAML documents; JSON is YAML too.
fn read_documents(path: &Path) -> Result<Vec<Value>, String> {
    let bytes = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        if bytes.len() as u64 > MAX_INPUT {
            return Err(format!("stdin is larger than {MAX_INPUT} bytes"));
        }
        bytes
    } else {
        files::read_limited(path, MAX_INPUT).map_err(|e| e.to_string())?
    };
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    // Empty documents (a trailing `---`, comments only) are skipped; serde-saphyr's default
    // budget bounds aliases and nesting, so a YAML bomb is an error, not an allocation.
    serde_saphyr::from_multiple::<Value>(&text).map_err(|e| format!("not YAML: {e}"))
}

/// The objects in a document: a `List` (or `PodList`, ...) gives its items.
fn expand(document: Value) -> Vec<(Option<usize>, Result<Value, String>)> {
    let is_list = document
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && document.get("items").is_some_and(Value::is_array);
    match document {
        Value::Object(mut map) if is_list => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (Some(i), Ok(item)))
                .collect(),
            _ => Vec::new(),
        },
        Value::Object(_) => vec![(None, Ok(document))],
        _ => vec![(
            None,
            Err("not an object (a mapping with apiVersion and kind)".to_owned()),
        )],
    }
}

/// Where an object came from.
#[derive(Clone, Debug, Serialize)]
pub struct Locator {
    /// The file, or `<stdin>`.
    pub source: String,
    /// 1-based among the file's non-empty documents; 0 when the file itself failed.
    pub document: usize,
    /// 0-based index in a List's `items`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl std::fmt::Display for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        if self.document > 0 {
            write!(f, "#{}", self.document)?;
        }
        if let Some(item) = self.item {
            write!(f, ".items[{item}]")?;
        }
        Ok(())
    }
}

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Admitted without comment.
    Allowed,
    /// Admitted with warnings.
    Warned,
    /// Refused.
    Denied,
    /// Could not be checked.
    Error,
}

/// One object's result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    /// Where it came from.
    #[serde(flatten)]
    pub at: Locator,
    /// `apiVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The namespace the review carried (none for cluster-scoped kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name` (or `generateName` followed by `*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The outcome.
    pub verdict: Verdict,
    /// Why it was denied, or why it could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Warnings from /mutate and /validate, in that order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The JSON Patch /mutate answered (decoded), when it changes the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// Audit annotations from /mutate and /validate.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl ObjectResult {
    fn failed(at: Locator, message: String) -> Self {
        Self {
            at,
            api_version: None,
            kind: None,
            namespace: None,
            name: None,
            verdict: Verdict::Error,
            message: Some(message),
            warnings: Vec::new(),
            patch: None,
            audit_annotations: BTreeMap::new(),
        }
    }
}

/// Totals over every result.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    /// Objects seen (and files that failed as a whole).
    pub objects: usize,
    /// Admitted without warnings.
    pub allowed: usize,
    /// Admitted with warnings.
    pub warned: usize,
    /// Refused.
    pub denied: usize,
    /// Changed by /mutate (whatever the verdict).
    pub patched: usize,
    /// Could not be checked.
    pub errors: usize,
}

impl Summary {
    fn of(results: &[ObjectResult]) -> Self {
        let mut s = Self {
            objects: results.len(),
            ..Self::default()
        };
        for r in results {
            match r.verdict {
                Verdict::Allowed => s.allowed += 1,
                Verdict::Warned => s.warned += 1,
                Verdict::Denied => s.denied += 1,
                Verdict::Error => s.errors += 1,
            }
            s.patched += usize::from(r.patch.is_some());
        }
        s
    }

    /// 0 when everything would be admitted, 1 when something would be denied, 2 when something
    /// could not be checked (an incomplete answer is not a pass).
    pub fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            EXIT_ERROR
        } else if self.denied > 0 {
            EXIT_DENIED
        } else {
            0
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    results: &'a [ObjectResult],
    summary: &'a Summary,
}

fn write_text(
    out: &mut dyn Write,
    results: &[ObjectResult],
    summary: &Summary,
) -> std::io::Result<()> {
    for r in results {
        let what = match (&r.kind, &r.name, &r.namespace) {
            (Some(kind), Some(name), Some(ns)) => format!(" {kind} {ns}/{name}"),
            (Some(kind), Some(name), None) => format!(" {kind} {name}"),
            (Some(kind), None, _) => format!(" {kind}"),
            _ => String::new(),
        };
        let verdict = match r.verdict {
            Verdict::Allowed => "allowed",
            Verdict::Warned => "warned",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        };
        let patched = if r.patch.is_some() { ", patched" } else { "" };
        writeln!(out, "{}{what}: {verdict}{patched}", r.at)?;
        if let Some(message) = &r.message {
            writeln!(out, "  {message}")?;
        }
        for warning in &r.warnings {
            writeln!(out, "  warning: {warning}")?;
        }
        if let Some(patch) = &r.patch {
            writeln!(out, "  patch: {patch}")?;
        }
    }
    writeln!(
        out,
        "{} objects: {} allowed, {} warned, {} denied, {} patched, {} errors",
        summary.objects,
        summary.allowed,
        summary.warned,
        summary.denied,
        summary.patched,
        summary.errors
    )
}

/// The server's stack and what a review needs besides the object.
struct Checker<'a, S> {
    service: S,
    mutate: bool,
    namespace: &'a str,
}

/// Kinds whose objects live in no namespace (the apiserver sends no namespace for them).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
];

/// The resource for a kind gatehouse reads; other kinds get the lower-case plural.
fn resource(group: &str, kind: &str) -> String {
    let known = match (group, kind) {
        ("", "Pod") => "pods",
        ("", "ReplicationController") => "replicationcontrollers",
        ("apps", "Deployment") => "deployments",
        ("apps", "StatefulSet") => "statefulsets",
        ("apps", "DaemonSet") => "daemonsets",
        ("apps", "ReplicaSet") => "replicasets",
        ("batch", "Job") => "jobs",
        ("batch", "CronJob") => "cronjobs",
        ("", "Endpoints") => "endpoints",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|s| !s.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// An answer from the stack, decoded with the server's own wire types.
struct Answer {
    allowed: bool,
    message: Option<String>,
    warnings: Vec<String>,
    patch: Option<Value>,
    audit: BTreeMap<String, String>,
}

impl<S> Checker<'_, S>
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response, Error = Infallible> + Clone,
{
    async fn check(&self, at: Locator, object: Result<Value, String>, n: usize) -> ObjectResult {
        let mut result = ObjectResult::failed(at, String::new());
        let mut object = match object {
            Ok(o) => o,
            Err(message) => {
                result.message = Some(message);
                return result;
            }
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
            result.message = Some("no apiVersion or kind: not a Kubernetes object".to_owned());
            return result;
        };
        let (group, version) = api_version
            .split_once('/')
            .unwrap_or(("", api_version.as_str()));
        let (group, version) = (group.to_owned(), version.to_owned());
        let metadata = object.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                metadata
                    .and_then(|m| m.get("generateName"))
                    .and_then(Value::as_str)
                    .map(|g| format!("{g}*"))
            });
        let namespace = (!CLUSTER_SCOPED.contains(&(group.as_str(), kind.as_str()))).then(|| {
            metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(self.namespace)
                .to_owned()
        });
        // The apiserver stores the request's namespace in the object before admission.
        if let (Some(ns), Some(Value::Object(meta))) = (&namespace, object.get_mut("metadata")) {
            meta.entry("namespace")
                .or_insert_with(|| ns.as_str().into());
        }
        result.api_version = Some(api_version.clone());
        result.kind = Some(kind.clone());
        result.namespace = namespace.clone();
        result.name = name.clone();

        let review = |object: &Value| {
            let gvk = json!({"group": group, "version": version, "kind": kind});
            let gvr =
                json!({"group": group, "version": version, "resource": resource(&group, &kind)});
            let mut request = json!({
                "uid": format!("gatehouse-check-{n}"),
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "name": name.as_deref().unwrap_or(""),
                "operation": "CREATE",
                "userInfo": {"username": "gatehouse-check"},
                "object": object,
                "dryRun": false,
            });
            if let (Some(ns), Value::Object(map)) = (&namespace, &mut request) {
                map.insert("namespace".to_owned(), ns.as_str().into());
            }
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
        };

        let mut warnings = Vec::new();
        let mut audit = BTreeMap::new();
        if self.mutate {
            match self.call("/mutate", &review(&object)).await {
                Ok(answer) => {
                    warnings.extend(answer.warnings);
                    audit.extend(answer.audit);
                    if let Some(patch) = answer.patch {
                        if let Err(message) = apply(&mut object, &patch) {
                            result.message = Some(message);
                            result.patch = Some(patch);
                            return result;
                        }
                        result.patch = Some(patch);
                    }
                }
                Err(message) => {
                    result.message = Some(format!("/mutate: {message}"));
                    return result;
                }
            }
        }
        match self.call("/validate", &review(&object)).await {
            Ok(answer) => {
                warnings.extend(answer.warnings);
                audit.extend(answer.audit);
                result.verdict = if !answer.allowed {
                    Verdict::Denied
                } else if warnings.is_empty() {
                    Verdict::Allowed
                } else {
                    Verdict::Warned
                };
                result.message = answer.message.filter(|_| !answer.allowed);
            }
            Err(message) => result.message = Some(format!("/validate: {message}")),
        }
        result.warnings = warnings;
        result.audit_annotations = audit;
        result
    }

    /// Sends one review through the server's stack and decodes the answer.
    async fn call(&self, path: &str, review: &Value) -> Result<Answer, String> {
        let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = match self.service.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        if status != StatusCode::OK {
            #[derive(serde::Deserialize)]
            struct StatusBody {
                message: String,
            }
            let message = serde_json::from_slice::<StatusBody>(&bytes)
                .map(|s| s.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(format!("HTTP {}: {message}", status.as_u16()));
        }
        let review: AdmissionReview<'_, serde::de::IgnoredAny> =
            serde_json::from_slice(&bytes).map_err(|e| format!("undecodable answer: {e}"))?;
        let response = review
            .response
            .ok_or_else(|| "answer without response".to_owned())?;
        let patch = match &response.patch {
            Some(b64) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("patch is not base64: {e}"))?;
                Some(
                    serde_json::from_slice::<Value>(&raw)
                        .map_err(|e| format!("patch is not JSON: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Answer {
            allowed: response.allowed,
            message: response
                .status
                .and_then(|s| s.message)
                .map(|m| m.into_owned()),
            warnings: response
                .warnings
                .unwrap_or_default()
                .into_iter()
                .map(|w| w.into_owned())
                .collect(),
            patch,
            audit: response
                .audit_annotations
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }
}

/// Applies a JSON Patch as the apiserver would; one that does not apply is what the apiserver
/// would answer with a 500, so it is reported.
fn apply(object: &mut Value, patch: &Value) -> Result<(), String> {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| format!("/mutate answered a patch that is not RFC 6902: {e}"))?;
    json_patch::patch(object, &patch)
        .map_err(|e| format!("/mutate answered a patch the apiserver could not apply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_for_kinds() {
        assert_eq!(resource("apps", "Deployment"), "deployments");
        assert_eq!(resource("batch", "CronJob"), "cronjobs");
        assert_eq!(resource("", "Pod"), "pods");
        assert_eq!(
            resource("networking.k8s.io", "NetworkPolicy"),
            "networkpolicies"
        );
        assert_eq!(resource("networking.k8s.io", "Ingress"), "ingresses");
        assert_eq!(resource("", "ConfigMap"), "configmaps");
        assert_eq!(resource("example.com", "Gateway"), "gateways");
    }

    #[test]
    fn lists_expand_to_their_items() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "Pod"}, {"kind": "Service"}]});
        let objects = expand(list);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1].0, Some(1));
        let pods = json!({"apiVersion": "v1", "kind": "PodList", "items": []});
        assert!(expand(pods).is_empty());
        // A kind ending in List without items is an object like any other.
        let odd = json!({"apiVersion": "example.com/v1", "kind": "AllowList", "spec": {}});
        assert_eq!(expand(odd).len(), 1);
        assert!(expand(json!("text"))
            .first()
            .is_some_and(|(_, o)| o.is_err()));
    }
}
