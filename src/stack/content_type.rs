//! Webhook routes take `application/json` only (415 otherwise), as the apiserver sends. Checked
//! by the body layer (`body.rs`), which reads the rest of a refused body before answering.
//!
//! Hand-written: no tower-http layer checks `Content-Type` (`ValidateRequestHeader` checks
//! `Accept`), and a custom validator there answers before the body is read.

use http::{header, Request};

use crate::error::Rejection;
use crate::router::Route;

/// `Ok` unless `req` is for a webhook route and its body is not declared JSON.
pub(super) fn check<B>(req: &Request<B>) -> Result<(), Rejection> {
    let is_webhook = req
        .extensions()
        .get::<Route>()
        .is_some_and(|r| r.is_webhook());
    if !is_webhook {
        return Ok(());
    }
    let value = req.headers().get(header::CONTENT_TYPE);
    if value.is_some_and(|v| is_json(v.as_bytes())) {
        return Ok(());
    }
    let got = value.map_or_else(
        || "none".to_owned(),
        |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
    );
    Err(Rejection::UnsupportedMediaType(got))
}

/// True for `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"application/json; charset=utf-8"));
        assert!(is_json(b"Application/JSON"));
        assert!(!is_json(b"application/jsonx"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/x-www-form-urlencoded"));
        assert!(!is_json(b""));
    }
}
