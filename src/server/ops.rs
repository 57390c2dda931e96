//! The ops listener's service: `/healthz` and `/readyz` only, over plain HTTP, for kubelet
//! probes and Prometheus, which present no client certificate. Webhooks are never served here.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;

use http::Method;

use crate::app::App;
use crate::error::{Rejection, Response};
use crate::handlers::health;

/// Answers the health routes from `app`'s state; anything else is 404 (405 for a wrong method).
pub fn service<B>(
    app: Arc<App>,
) -> impl tower::Service<
    http::Request<B>,
    Response = Response,
    Error = Infallible,
    Future = Ready<Result<Response, Infallible>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |request: http::Request<B>| ready(Ok(answer(&app, &request))))
}

fn answer<B>(app: &App, request: &http::Request<B>) -> Response {
    let path = request.uri().path();
    if path != "/healthz" && path != "/readyz" {
        return Rejection::NotFound(path.to_owned()).into_response();
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Rejection::MethodNotAllowed {
            method: request.method().clone(),
            path: path.to_owned(),
            allow: "GET",
        }
        .into_response();
    }
    if path == "/healthz" {
        health::healthz()
    } else {
        health::readyz(app)
    }
}
