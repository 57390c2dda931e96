//! Loading: ConstraintTemplates and constraints from files and directories (multi-document
//! YAML), compiled and checked once. Whatever cannot be honoured is refused here, naming the file
//! and the template or constraint, never at request time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use super::constraint::Constraint;
use super::matcher::Match;
use super::schema::Schema;
use super::template::{RegoCode, Template, TARGET};
use super::{Action, Gatekeeper, GatekeeperConfig};

/// Largest policy file read; templates are kilobytes.
const MAX_FILE: u64 = 4 << 20;
/// Most files read from the configured directories.
const MAX_FILES: usize = 10_000;
/// Most policy bytes one reload poll reads to notice a change (template files are kilobytes);
/// files past it are compared by size and modification time only.
pub const MAX_POLL_BYTES: u64 = 16 << 20;

/// Why templates or constraints could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("gatekeeper: cannot read {path}: {message}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A file is not YAML.
    #[error("gatekeeper: {file}: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document is neither a ConstraintTemplate nor a constraint.
    #[error("gatekeeper: {file}: document {index}: {message}")]
    Document {
        /// The file.
        file: String,
        /// Its position in the file, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A template cannot be honoured.
    #[error("gatekeeper: {file}: template {template}: {message}")]
    Template {
        /// The file.
        file: String,
        /// The template's name.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A constraint cannot be honoured.
    #[error("gatekeeper: {file}: constraint {kind}/{constraint}: {message}")]
    Constraint {
        /// The file.
        file: String,
        /// Its kind.
        kind: String,
        /// Its name.
        constraint: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads every configured path.
pub fn load(config: &GatekeeperConfig) -> Result<Gatekeeper, LoadError> {
    let mut files = Vec::new();
    for path in &config.paths {
        collect(path, &mut files)?;
    }
    let mut documents = Vec::new();
    for file in files {
        documents.extend(read_documents(&file)?);
    }
    load_documents(documents, config.eval_timeout.0, false)
}

/// A digest of what [`load`] would read under `paths`: the files' names (so the directories'
/// listings) and contents, bounded by [`MAX_POLL_BYTES`] and the file count [`load`] allows.
/// The reload poll compares it with the last one to reload policies that changed on disk.
pub fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let mut hash = Sha256::new();
    let mut budget = MAX_POLL_BYTES;
    for path in paths {
        let mut files = Vec::new();
        if let Err(e) = collect(path, &mut files) {
            // An unreadable path is a state too: its change (fixed or broken) is a change.
            hash.update(e.to_string().as_bytes());
            continue;
        }
        for file in files {
            hash.update(file.as_os_str().as_encoded_bytes());
            hash.update([0]);
            let meta = match std::fs::metadata(&file) {
                Ok(m) => m,
                Err(e) => {
                    hash.update(e.to_string().as_bytes());
                    continue;
                }
            };
            hash.update(meta.len().to_le_bytes());
            let read = (meta.len() <= budget)
                .then(|| std::fs::File::open(&file).ok())
                .flatten()
                .and_then(|f| {
                    let mut bytes = Vec::new();
                    f.take(budget).read_to_end(&mut bytes).ok().map(|_| bytes)
                });
            match read {
                Some(bytes) => {
                    budget = budget.saturating_sub(bytes.len() as u64);
                    hash.update(&bytes);
                }
                None => {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .unwrap_or_default();
                    hash.update(modified.as_nanos().to_le_bytes());
                }
            }
        }
    }
    hash.finalize().into()
}

/// The YAML documents of one file, each with its file.
pub fn read_documents(file: &Path) -> Result<Vec<(PathBuf, usize, Json)>, LoadError> {
    let read_error = |message: String| LoadError::Read {
        path: file.to_owned(),
        message,
    };
    let size = std::fs::metadata(file)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if size > MAX_FILE {
        return Err(read_error(format!("larger than {MAX_FILE} bytes")));
    }
    let text = std::fs::read_to_string(file).map_err(|e| read_error(e.to_string()))?;
    let docs: Vec<Json> = serde_saphyr::from_multiple(&text).map_err(|e| LoadError::Yaml {
        file: file.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(docs
        .into_iter()
        .enumerate()
        .filter(|(_, d)| !d.is_null())
        .map(|(i, d)| (file.to_owned(), i + 1, d))
        .collect())
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if !meta.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| LoadError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            collect(&entry, out)?;
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(entry);
        }
        if out.len() > MAX_FILES {
            return Err(LoadError::Read {
                path: path.to_owned(),
                message: format!("more than {MAX_FILES} files"),
            });
        }
    }
    Ok(())
}

/// Compiles templates, then constraints (in any order across files); `with_rvm` also compiles
/// each template for the RVM, to compare (the server does not).
pub fn load_documents(
    documents: Vec<(PathBuf, usize, Json)>,
    eval_timeout: Duration,
    with_rvm: bool,
) -> Result<Gatekeeper, LoadError> {
    let mut gatekeeper = Gatekeeper::default();
    let mut constraints = Vec::new();
    for (file, index, doc) in documents {
        let doc_error = |message: String| LoadError::Document {
            file: file.display().to_string(),
            index,
            message,
        };
        let api_version = str_at(&doc, &["apiVersion"]);
        let kind = str_at(&doc, &["kind"]);
        if kind == "ConstraintTemplate" && api_version.starts_with("templates.gatekeeper.sh/") {
            let template = template(&file, &doc, eval_timeout, with_rvm)?;
            if let Some(other) = gatekeeper
                .templates
                .iter()
                .find(|t| t.kind == template.kind)
            {
                return Err(LoadError::Template {
                    file: file.display().to_string(),
                    template: template.name,
                    message: format!(
                        "kind {} is already defined by template {} in {}",
                        other.kind, other.name, other.file
                    ),
                });
            }
            gatekeeper.templates.push(template);
        } else if api_version.starts_with("constraints.gatekeeper.sh/") {
            constraints.push((file, doc));
        } else {
            return Err(doc_error(format!(
                "{kind:?} ({api_version:?}) is neither a ConstraintTemplate \
                 (templates.gatekeeper.sh) nor a constraint (constraints.gatekeeper.sh)"
            )));
        }
    }
    for (file, doc) in constraints {
        let constraint = constraint(&file, &doc, &gatekeeper.templates)?;
        let duplicate = gatekeeper
            .constraints
            .iter()
            .any(|c| c.kind == constraint.kind && c.name == constraint.name);
        if duplicate {
            return Err(LoadError::Constraint {
                file: file.display().to_string(),
                kind: constraint.kind,
                constraint: constraint.name,
                message: "defined twice".to_owned(),
            });
        }
        gatekeeper.constraints.push(constraint);
    }
    Ok(gatekeeper)
}

fn at<'a>(doc: &'a Json, path: &[&str]) -> &'a Json {
    path.iter()
        .fold(doc, |v, key| v.get(key).unwrap_or(&Json::Null))
}

fn str_at(doc: &Json, path: &[&str]) -> String {
    at(doc, path).as_str().unwrap_or_default().to_owned()
}

fn template(
    file: &Path,
    doc: &Json,
    eval_timeout: Duration,
    with_rvm: bool,
) -> Result<Template, LoadError> {
    let name = str_at(doc, &["metadata", "name"]);
    let error = |message: String| LoadError::Template {
        file: file.display().to_string(),
        template: if name.is_empty() {
            "<unnamed>".to_owned()
        } else {
            name.clone()
        },
        message,
    };
    if name.is_empty() {
        return Err(error("metadata.name is required".to_owned()));
    }
    let kind = str_at(doc, &["spec", "crd", "spec", "names", "kind"]);
    if kind.is_empty() {
        return Err(error("spec.crd.spec.names.kind is required".to_owned()));
    }
    let validation = at(doc, &["spec", "crd", "spec", "validation"]);
    // v1beta1 and v1alpha1 templates default to legacySchema (unknown parameters kept).
    let legacy = validation
        .get("legacySchema")
        .and_then(Json::as_bool)
        .unwrap_or(!str_at(doc, &["apiVersion"]).ends_with("/v1"));
    let schema = match validation.get("openAPIV3Schema") {
        None | Some(Json::Null) => None,
        Some(s) => Some(Schema::compile(s, legacy).map_err(&error)?),
    };
    let targets = at(doc, &["spec", "targets"])
        .as_array()
        .cloned()
        .unwrap_or_default();
    let [target] = targets.as_slice() else {
        return Err(error(format!(
            "spec.targets must have exactly one target ({TARGET}), has {}",
            targets.len()
        )));
    };
    if str_at(target, &["target"]) != TARGET {
        return Err(error(format!(
            "target {:?} is not {TARGET}",
            str_at(target, &["target"])
        )));
    }
    let code = rego_code(target).map_err(&error)?;
    Template::compile(
        name.clone(),
        kind,
        file,
        &code,
        schema,
        eval_timeout,
        with_rvm,
    )
    .map_err(error)
}

/// The Rego of a target: `code[engine: Rego]` if present, else `rego` and `libs`. CEL code
/// (`K8sNativeValidation`) is not run: gatehouse has no CEL engine.
fn rego_code(target: &Json) -> Result<RegoCode, String> {
    let strings = |v: &Json, what: &str| -> Result<Vec<String>, String> {
        match v {
            Json::Null => Ok(Vec::new()),
            Json::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or(format!("{what} must be a list of strings")),
            _ => Err(format!("{what} must be a list of strings")),
        }
    };
    let code = at(target, &["code"])
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(entry) = code.iter().find(|c| str_at(c, &["engine"]) == "Rego") {
        let source = at(entry, &["source"]);
        let version = str_at(source, &["version"]);
        if !matches!(version.as_str(), "" | "v0" | "v1") {
            return Err(format!(
                "code[Rego].source.version {version:?} is not v0 or v1"
            ));
        }
        return Ok(RegoCode {
            rego: str_at(source, &["rego"]),
            libs: strings(at(source, &["libs"]), "code[Rego].source.libs")?,
            v1: version == "v1",
        });
    }
    let rego = str_at(target, &["rego"]);
    if rego.is_empty() {
        let engines: Vec<String> = code.iter().map(|c| str_at(c, &["engine"])).collect();
        return Err(format!(
            "no Rego to run (engines: {}); gatehouse runs Rego only",
            if engines.is_empty() {
                "none".to_owned()
            } else {
                engines.join(", ")
            }
        ));
    }
    Ok(RegoCode {
        rego,
        libs: strings(at(target, &["libs"]), "libs")?,
        v1: false,
    })
}

fn constraint(file: &Path, doc: &Json, templates: &[Template]) -> Result<Constraint, LoadError> {
    let name = str_at(doc, &["metadata", "name"]);
    let kind = str_at(doc, &["kind"]);
    let error = |message: String| LoadError::Constraint {
        file: file.display().to_string(),
        kind: kind.clone(),
        constraint: if name.is_empty() {
            "<unnamed>".to_owned()
        } else {
            name.clone()
        },
        message,
    };
    if name.is_empty() {
        return Err(error("metadata.name is required".to_owned()));
    }
    let Some(index) = templates.iter().position(|t| t.kind == kind) else {
        return Err(error(format!(
            "no ConstraintTemplate defines kind {kind:?}"
        )));
    };
    let template = &templates[index];
    let spec = at(doc, &["spec"]);
    let action = match spec.get("enforcementAction").and_then(Json::as_str) {
        None | Some("" | "deny") => Action::Deny,
        Some("warn") => Action::Warn,
        Some("dryrun") => Action::Dryrun,
        Some(other) => {
            return Err(error(format!(
                "enforcementAction {other:?} is not deny, warn or dryrun{}",
                if other == "scoped" {
                    " (scoped actions are not supported)"
                } else {
                    ""
                }
            )))
        }
    };
    let match_: Match = match spec.get("match") {
        None | Some(Json::Null) => Match::default(),
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| error(format!("match: {e}")))?,
    };
    match_.validate().map_err(&error)?;
    let mut parameters = match spec.get("parameters") {
        None | Some(Json::Null) => Json::Object(serde_json::Map::new()),
        Some(p) => p.clone(),
    };
    if let Some(schema) = &template.schema {
        schema.validate(&mut parameters).map_err(|e| {
            error(format!(
                "{e} (template {}'s openAPIV3Schema)",
                template.name
            ))
        })?;
    }
    let parameters =
        serde_json::from_value(parameters).map_err(|e| error(format!("parameters: {e}")))?;
    Ok(Constraint {
        name,
        kind,
        file: file.display().to_string(),
        action,
        parameters,
        template: index,
        match_,
        reads_labels: template.reads_labels,
    })
}
