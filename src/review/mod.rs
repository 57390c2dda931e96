//! Wire types: the review objects kube-apiserver POSTs, with the exact field names it uses.
//!
//! Strings borrow from the request body where they can (`Cow`), fields no decision reads are
//! kept as borrowed raw JSON, and the admitted object is decoded into a projection
//! ([`object::ObjectView`]) of the few fields policies read, in the same single pass.

pub mod admission;
pub mod image;
pub mod messages;
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
    /// Not JSON, or JSON of the wrong shape, in a body that may carry a secret: serde's message
    /// can quote the offending value, so only its kind and position are kept.
    #[error("malformed {what}: {category} error at line {line} column {column}")]
    Redacted {
        /// The review kind expected.
        what: &'static str,
        /// `syntax`, `data` (wrong shape) or `eof`.
        category: &'static str,
        /// serde's line.
        line: usize,
        /// serde's column.
        column: usize,
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

/// Decodes a review whose body may carry a secret (a bearer token): errors keep no content.
pub fn decode_redacted<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::Redacted {
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
    serde_json::from_slice(body).map_err(|source| DecodeError::Json { what, source })
}
