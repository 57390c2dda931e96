//! RFC 6902 JSON Patch operations as `/mutate` answers them, with RFC 6901 pointers.
//!
//! Only `add` and `replace` exist here: mutations set values and never remove one. Every path
//! is built from what the projection saw, so each operation's parent exists in the object.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

/// The operation name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Creates a member, or replaces it if it exists.
    Add,
    /// Replaces a member that exists.
    Replace,
}

/// The value an operation writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PatchValue<'m> {
    /// A label or annotation value, an image, a pull policy.
    String(Cow<'m, str>),
    /// A whole `labels` or `annotations` map, for an object that had none.
    Map(BTreeMap<&'m str, &'m str>),
    /// A whole `metadata` object, for an object (or pod template) that had none.
    Metadata {
        /// `labels`, when the mutations add any.
        #[serde(skip_serializing_if = "Option::is_none")]
        labels: Option<BTreeMap<&'m str, &'m str>>,
        /// `annotations`, when the mutations add any.
        #[serde(skip_serializing_if = "Option::is_none")]
        annotations: Option<BTreeMap<&'m str, &'m str>>,
    },
}

/// One RFC 6902 operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PatchOp<'m> {
    /// `add` or `replace`.
    pub op: Op,
    /// An RFC 6901 JSON Pointer, tokens escaped.
    pub path: String,
    /// What is written there.
    pub value: PatchValue<'m>,
}

/// `base` followed by `/token`, the token escaped per RFC 6901 (`~` → `~0`, `/` → `~1`).
pub fn pointer(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + 1 + token.len() + 2);
    out.push_str(base);
    out.push('/');
    // One pass, each character mapped once: a key's `~1` becomes `~01`, which decodes back to
    // `~1`, never to `/`.
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// The `patch` field: base64 of the JSON array of operations.
pub fn encode(ops: &[PatchOp<'_>]) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(ops)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tilde_then_slash() {
        assert_eq!(
            pointer("/metadata/labels", "app.kubernetes.io/managed-by"),
            "/metadata/labels/app.kubernetes.io~1managed-by"
        );
        assert_eq!(pointer("/m", "a~b"), "/m/a~0b");
        assert_eq!(pointer("/m", "~1"), "/m/~01");
        assert_eq!(pointer("/m", "/~"), "/m/~1~0");
        assert_eq!(pointer("/m", ""), "/m/");
    }

    #[test]
    fn operations_serialise_as_rfc6902() {
        let ops = [
            PatchOp {
                op: Op::Add,
                path: "/metadata/labels".into(),
                value: PatchValue::Map(BTreeMap::from([("a", "1")])),
            },
            PatchOp {
                op: Op::Replace,
                path: "/spec/containers/0/image".into(),
                value: PatchValue::String("r.io/x:1".into()),
            },
            PatchOp {
                op: Op::Add,
                path: "/metadata".into(),
                value: PatchValue::Metadata {
                    labels: None,
                    annotations: Some(BTreeMap::from([("k", "v")])),
                },
            },
        ];
        let json = serde_json::to_string(&ops).unwrap();
        assert_eq!(
            json,
            r#"[{"op":"add","path":"/metadata/labels","value":{"a":"1"}},{"op":"replace","path":"/spec/containers/0/image","value":"r.io/x:1"},{"op":"add","path":"/metadata","value":{"annotations":{"k":"v"}}}]"#
        );
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encode(&ops).unwrap())
            .unwrap();
        assert_eq!(decoded, json.as_bytes());
    }
}
