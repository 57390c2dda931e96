//! `/healthz` (alive) and `/readyz` (taking traffic; 503 while draining).

use bytes::Bytes;
use http::StatusCode;

use crate::app::App;
use crate::error::{json_response, Rejection, Response};

/// Always 200 while the process answers.
pub fn healthz() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
}

/// 200 while serving, 503 once draining.
pub fn readyz(app: &App) -> Response {
    if app.is_ready() {
        json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ready\"}"),
        )
    } else {
        Rejection::Unavailable.into_response()
    }
}
