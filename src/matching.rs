//! `match:`: which requests a policy or a mutation applies to. Shared by both, so an operator
//! reads one vocabulary across the file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::review::admission::Operation;

/// A namespace name or a glob over one (`*` any run of characters, `?` one character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

/// A glob that cannot match a namespace name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a namespace name or glob (lowercase letters, digits, '-', '*' and '?')")]
pub struct GlobError(String);

impl FromStr for Glob {
    type Err = GlobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'*' | b'?')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(GlobError(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Glob {
    /// True when `text` matches the whole glob.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// An operation name in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum OperationName {
    /// CREATE
    #[serde(rename = "CREATE")]
    Create,
    /// UPDATE
    #[serde(rename = "UPDATE")]
    Update,
    /// DELETE
    #[serde(rename = "DELETE")]
    Delete,
    /// CONNECT
    #[serde(rename = "CONNECT")]
    Connect,
    /// Any operation.
    #[serde(rename = "*")]
    Any,
}

impl OperationName {
    fn covers(self, op: Operation) -> bool {
        match self {
            Self::Any => true,
            Self::Create => op == Operation::Create,
            Self::Update => op == Operation::Update,
            Self::Delete => op == Operation::Delete,
            Self::Connect => op == Operation::Connect,
        }
    }
}

/// `match:` as written in config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Match {
    /// Namespaces (globs) it applies to; empty means all.
    pub namespaces: Vec<Glob>,
    /// Namespaces (globs) it never applies to; wins over `namespaces`.
    pub exclude_namespaces: Vec<Glob>,
    /// Object kinds (`Pod`, `Deployment`, ...); empty means all.
    pub kinds: Vec<String>,
    /// Operations; default CREATE and UPDATE.
    pub operations: Vec<OperationName>,
}

impl Default for Match {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            kinds: Vec::new(),
            operations: vec![OperationName::Create, OperationName::Update],
        }
    }
}

impl Match {
    /// True when a request with this operation, kind and namespace is in scope.
    ///
    /// Cluster-scoped objects have namespace "": only a `namespaces` glob that matches the
    /// empty string (`*`) selects them, and no exclusion does.
    pub fn matches(&self, operation: Operation, kind: &str, namespace: &str) -> bool {
        self.operations.iter().any(|o| o.covers(operation))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|g| g.matches(namespace)))
            && !self.exclude_namespaces.iter().any(|g| g.matches(namespace))
    }

    /// True when this block can select kind `kind` at all (used to skip work early).
    pub fn selects_kind(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        s.parse().expect("glob")
    }

    #[test]
    fn globs() {
        assert!(g("*").matches("anything"));
        assert!(g("*").matches(""));
        assert!(g("kube-*").matches("kube-system"));
        assert!(!g("kube-*").matches("kubesystem"));
        assert!(g("team-?").matches("team-a"));
        assert!(!g("team-?").matches("team-ab"));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
        assert!(g("prod").matches("prod"));
        assert!(!g("prod").matches("production"));
        assert!("Prod".parse::<Glob>().is_err());
        assert!("".parse::<Glob>().is_err());
        assert!("[a-z]".parse::<Glob>().is_err());
    }

    #[test]
    fn match_blocks() {
        let m = Match {
            namespaces: vec![g("*")],
            exclude_namespaces: vec![g("kube-system")],
            kinds: vec!["Pod".into()],
            ..Match::default()
        };
        assert!(m.matches(Operation::Create, "Pod", "default"));
        assert!(!m.matches(Operation::Create, "Pod", "kube-system"));
        assert!(!m.matches(Operation::Create, "Deployment", "default"));
        assert!(!m.matches(Operation::Delete, "Pod", "default"));
        let all = Match {
            operations: vec![OperationName::Any],
            ..Match::default()
        };
        assert!(all.matches(Operation::Connect, "Anything", ""));
    }
}
