//! Wire types: the review objects kube-apiserver POSTs, with the exact field names it uses.
//!
//! Strings borrow from the request body where they can (`Cow`), fields no decision reads are
//! kept as borrowed raw JSON, and the admitted object is decoded into a projection
//! ([`object::ObjectView`]) of the few fields policies read, in the same single pass.

pub mod admission;
pub mod image;
pub mod json;
pub mod messages;
pub mod object;
pub mod token;

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A string map (labels, annotations) borrowing from the body.
pub type StrMap<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// A string borrowed from the body unless it has escapes. serde's own `Cow` impl always copies,
/// and its `#[serde(borrow)]` borrows a bare `Cow<str>` field only, not one inside an `Option`
/// or a map: labels, annotations, names and images were each a new `String`.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}

/// A [`StrMap`] whose entries borrow where they can, inserted as they are read (the last of
/// duplicate keys wins, as with serde's own map impl).
struct BorrowedMap<'a>(StrMap<'a>);

impl<'de> Deserialize<'de> for BorrowedMap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = BorrowedMap<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = StrMap::new();
                while let Some((k, v)) = map.next_entry::<BorrowedStr<'de>, BorrowedStr<'de>>()? {
                    out.insert(k.0, v.0);
                }
                Ok(BorrowedMap(out))
            }
        }
        d.deserialize_map(MapVisitor)
    }
}

/// `deserialize_with` for an `Option<Cow<str>>` that borrows from the body.
pub(crate) fn optional_str<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'de>>::deserialize(d)?.map(|s| s.0))
}

/// `deserialize_with` for an `Option<StrMap>` that borrows from the body.
pub(crate) fn optional_str_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<StrMap<'de>>, D::Error> {
    Ok(Option::<BorrowedMap<'de>>::deserialize(d)?.map(|m| m.0))
}

/// `deserialize_with` for a [`StrMap`] that borrows from the body.
pub(crate) fn str_map<'de, D: Deserializer<'de>>(d: D) -> Result<StrMap<'de>, D::Error> {
    Ok(BorrowedMap::deserialize(d)?.0)
}

/// A review body that cannot be decided.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of the wrong shape; serde's message carries line and column.
    #[error("malformed {what}: {source}")]
    Json {
        /// The review kind expected.
        what: &'static str,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Not JSON, or JSON of the wrong shape, in a body that may carry a secret: serde's message
    /// can quote the offending value, so only its kind and position are kept.
    #[error("malformed {what}: {category} error at line {line} column {column}")]
    Redacted {
        /// The review kind expected.
        what: &'static str,
        /// `syntax`, `data` (wrong shape), `eof` or `encoding` (not UTF-8).
        category: &'static str,
        /// serde's line.
        line: usize,
        /// serde's column.
        column: usize,
    },
    /// The body is not UTF-8, which JSON must be (RFC 8259 §8.1).
    #[error("malformed {what}: not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The review kind expected.
        what: &'static str,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// A part the apiserver always sends is missing.
    #[error("{what} has no {field}")]
    Missing {
        /// The review kind.
        what: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The object is not shaped as its kind requires.
    #[error("{what}: {kind} object is malformed: {source}")]
    Object {
        /// The review kind.
        what: &'static str,
        /// The object's kind.
        kind: String,
        /// The parser's error.
        source: serde_json::Error,
    },
}

/// The body as text, checked once whole: the parser then borrows strings from it without
/// checking each one again (`from_str`; `from_slice` checks every string it reads, object keys
/// included, which was a sixth of decoding a Pod review). Invalid UTF-8 anywhere, even in a
/// field no decision reads, is refused.
fn text(body: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(body)
}

/// Encodes an answer into one buffer allocated with room for `capacity` bytes (it grows if that
/// was short), handed to the response as is: no growing from empty, no copy afterwards.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Bytes, serde_json::Error> {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, value)?;
    // At its exact length `Bytes` adopts the allocation; with spare room it would allocate a
    // shared header beside it. Shrinking in place is the cheaper of the two.
    Ok(Bytes::from(buf.into_boxed_slice()))
}

/// Decodes a review whose body may carry a secret (a bearer token): errors keep no content.
pub fn decode_redacted<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    let body = text(body).map_err(|e| {
        // Line and column as serde_json counts them, so both errors read alike.
        let before = &body[..e.valid_up_to()];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        DecodeError::Redacted {
            what,
            category: "encoding",
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: 1 + before.len() - line_start,
        }
    })?;
    if let Ok(review) = json::from_str(body) {
        return Ok(review);
    }
    serde_json::from_str(body).map_err(|e| DecodeError::Redacted {
        what,
        category: match e.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        },
        line: e.line(),
        column: e.column(),
    })
}

/// Decodes a review from a body, naming `what` in errors.
pub fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    let body = text(body).map_err(|e| DecodeError::NotUtf8 {
        what,
        offset: e.valid_up_to(),
    })?;
    // The strict reader answers as serde_json would, or not at all; then serde_json decides,
    // and its error (with line and column) is the one reported.
    if let Ok(review) = json::from_str(body) {
        return Ok(review);
    }
    serde_json::from_str(body).map_err(|source| DecodeError::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::admission::{decode_admission, decode_review};
    use super::token::TokenReview;
    use super::*;

    /// A Pod review with `filler` as a user's name, a field no decision reads.
    fn review_with_username(filler: &[u8]) -> Vec<u8> {
        let mut body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{"username":""#.to_vec();
        body.extend_from_slice(filler);
        body.extend_from_slice(br#""},"object":{"metadata":{"name":"p","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"registry.my.com/app:1"}]}}}}"#);
        body
    }

    /// `body` with label `app` written with an escape.
    fn with_escaped_label(body: Vec<u8>) -> Vec<u8> {
        String::from_utf8(body)
            .expect("utf-8")
            .replace(r#""app":"web""#, r#""app":"w\u0022b""#)
            .into_bytes()
    }

    #[test]
    fn strings_borrow_from_a_utf8_body_and_invalid_utf8_anywhere_is_refused() {
        let good = review_with_username("zoë".as_bytes());
        let admission = decode_admission(&good).expect("a valid review");
        let object = admission.request.object.as_ref().expect("object");
        let labels = object.metadata.labels.as_ref().expect("labels");
        assert!(matches!(labels.get("app"), Some(Cow::Borrowed("web"))));
        assert!(matches!(admission.request.uid, Cow::Borrowed("u1")));
        assert!(matches!(object.metadata.name, Some(Cow::Borrowed("p"))));
        let spec = object.spec.as_ref().expect("spec");
        let container = &spec.containers.as_ref().expect("containers")[0];
        assert!(matches!(
            container.image,
            Some(Cow::Borrowed("registry.my.com/app:1"))
        ));
        // An escaped string cannot borrow: it is unescaped into its own copy.
        let escaped = with_escaped_label(review_with_username(b"x"));
        let admission = decode_admission(&escaped).expect("a valid review");
        let object = admission.request.object.as_ref().expect("object");
        let labels = object.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("app").map(|v| v.as_ref()), Some("w\"b"));

        // Latin-1 'ë' in a field nothing reads: serde_json alone skips it unchecked.
        let bad = review_with_username(b"zo\xeb");
        let offset = bad.iter().position(|&b| b == 0xeb).expect("the bad byte");
        match decode_admission(&bad) {
            Err(DecodeError::NotUtf8 { offset: at, .. }) => assert_eq!(at, offset),
            other => panic!("expected a UTF-8 error, got {other:?}"),
        }
        assert!(matches!(
            decode_review(&bad),
            Err(DecodeError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn answers_encode_as_serde_json_writes_them_whatever_the_size_estimate() {
        use super::admission::{
            encode_response, AdmissionApiVersion, AdmissionKind, AdmissionResponse,
            AdmissionReview, Status,
        };
        let long = "denied \"quoted\"\n".repeat(200);
        let response = || AdmissionResponse {
            uid: Cow::Borrowed("u1"),
            allowed: false,
            status: Some(Status {
                message: Some(Cow::Borrowed(&long)),
                code: Some(403),
                ..Status::default()
            }),
            warnings: Some(vec![Cow::Borrowed("w\u{1}"); 30]),
            audit_annotations: Some(BTreeMap::from([(Cow::Borrowed("k"), Cow::Borrowed("v"))])),
            patch: Some(Cow::Borrowed("W10=")),
            patch_type: Some(Cow::Borrowed("JSONPatch")),
        };
        let expected = serde_json::to_vec(&AdmissionReview::<'_, &serde_json::value::RawValue> {
            api_version: AdmissionApiVersion::V1beta1,
            kind: AdmissionKind::AdmissionReview,
            request: None,
            response: Some(response()),
        })
        .expect("encodes");
        let encoded = encode_response(AdmissionApiVersion::V1beta1, response()).expect("encodes");
        assert_eq!(&encoded[..], &expected[..]);
        assert_eq!(&encode(&"x", 0).expect("encodes")[..], b"\"x\"");
    }

    #[test]
    fn a_token_review_that_is_not_utf8_is_refused_without_its_content() {
        let body = b"{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\n\"spec\":{\"token\":\"S3CRET\xff\"}}";
        let error = decode_redacted::<TokenReview<'_>>("TokenReview", body).expect_err("refused");
        assert!(matches!(
            error,
            DecodeError::Redacted {
                category: "encoding",
                line: 2,
                column: 24,
                ..
            }
        ));
        assert!(!error.to_string().contains("S3CRET"), "{error}");
    }
}
