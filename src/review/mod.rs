//! Wire types: the review objects kube-apiserver POSTs, with the exact field names it uses.
//!
//! Strings borrow from the request body where they can (`Cow`), fields no decision reads are
//! kept as borrowed raw JSON, and the admitted object is decoded into a projection
//! ([`object::ObjectView`]) of the few fields policies read, in the same single pass.

pub mod admission;
pub mod image;
pub mod object;
pub mod token;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

/// A string map (labels, annotations) borrowing from the body.
pub type StrMap<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

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

/// Decodes a review from a body, naming `what` in errors.
pub fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|source| DecodeError::Json { what, source })
}
