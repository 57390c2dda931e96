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

/// The JSON array of operations, as `serde_json` writes [`PatchOp`]s, written directly: one
/// buffer sized for it, no serializer state per member.
pub fn to_json(ops: &[PatchOp<'_>]) -> Result<Vec<u8>, serde_json::Error> {
    let strings: usize = ops.iter().map(PatchOp::text_len).sum();
    let mut out = Vec::with_capacity(2 + strings + 40 * ops.len());
    out.push(b'[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(match op.op {
            Op::Add => br#"{"op":"add","path":"#,
            Op::Replace => br#"{"op":"replace","path":"#,
        });
        string(&mut out, &op.path)?;
        out.extend_from_slice(br#","value":"#);
        match &op.value {
            PatchValue::String(value) => string(&mut out, value)?,
            PatchValue::Map(map) => write_map(&mut out, map)?,
            PatchValue::Metadata {
                labels,
                annotations,
            } => {
                out.push(b'{');
                if let Some(labels) = labels {
                    out.extend_from_slice(br#""labels":"#);
                    write_map(&mut out, labels)?;
                }
                if let Some(annotations) = annotations {
                    if labels.is_some() {
                        out.push(b',');
                    }
                    out.extend_from_slice(br#""annotations":"#);
                    write_map(&mut out, annotations)?;
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(out)
}

impl PatchOp<'_> {
    /// Bytes of the strings in the operation (before any escaping), for sizing buffers.
    fn text_len(&self) -> usize {
        let map = |m: &BTreeMap<&str, &str>| m.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        self.path.len()
            + match &self.value {
                PatchValue::String(value) => value.len(),
                PatchValue::Map(m) => map(m),
                PatchValue::Metadata {
                    labels,
                    annotations,
                } => 32 + labels.as_ref().map_or(0, map) + annotations.as_ref().map_or(0, map),
            }
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn string(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    serde_json::to_writer(out, s)
}

/// A string-to-string map in its (sorted) order.
fn write_map(out: &mut Vec<u8>, map: &BTreeMap<&str, &str>) -> Result<(), serde_json::Error> {
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, key)?;
        out.push(b':');
        string(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

/// Length of the base64 of `len` bytes, padded.
pub fn base64_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Appends the base64 of `json` (the `patch` field's value) to `out`. Its alphabet needs no
/// JSON escaping, so it goes into the answer as is, between quotes.
pub fn append_base64(json: &[u8], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.resize(start + base64_len(json.len()), 0);
    base64::engine::general_purpose::STANDARD
        .encode_slice(json, &mut out[start..])
        .map_err(|e| serde::ser::Error::custom(format!("patch: {e}")))?;
    Ok(())
}

/// The `patch` field: base64 of the JSON array of operations.
pub fn encode(ops: &[PatchOp<'_>]) -> Result<String, serde_json::Error> {
    let json = to_json(ops)?;
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

    /// The operations written by hand are the bytes serde writes for them, escapes included,
    /// and their base64 is what the base64 engine gives.
    #[test]
    fn written_operations_are_serdes_bytes() {
        let nasty = "q\"b\\s/~\u{1}\u{7f}é\t";
        let maps = [
            BTreeMap::new(),
            BTreeMap::from([("a", "1")]),
            BTreeMap::from([("z", nasty), (nasty, ""), ("app.kubernetes.io/name", "x")]),
        ];
        let mut ops = Vec::new();
        for op in [Op::Add, Op::Replace] {
            ops.push(PatchOp {
                op,
                path: pointer("/metadata/labels", nasty),
                value: PatchValue::String(nasty.into()),
            });
            for map in &maps {
                ops.push(PatchOp {
                    op,
                    path: "/metadata/annotations".into(),
                    value: PatchValue::Map(map.clone()),
                });
                for (labels, annotations) in [
                    (None, None),
                    (Some(map.clone()), None),
                    (None, Some(map.clone())),
                    (Some(map.clone()), Some(maps[1].clone())),
                ] {
                    ops.push(PatchOp {
                        op,
                        path: "/spec/template/metadata".into(),
                        value: PatchValue::Metadata {
                            labels,
                            annotations,
                        },
                    });
                }
            }
        }
        for n in [0, 1, 2, 3, ops.len()] {
            let ops = &ops[..n];
            let reference = serde_json::to_vec(ops).unwrap();
            assert_eq!(
                String::from_utf8(to_json(ops).unwrap()).unwrap(),
                String::from_utf8(reference.clone()).unwrap()
            );
            let mut out = b"x".to_vec();
            append_base64(&reference, &mut out).unwrap();
            assert_eq!(
                out[1..],
                *base64::engine::general_purpose::STANDARD
                    .encode(&reference)
                    .as_bytes()
            );
        }
    }
}
