//! The ops listener's service: `/healthz`, `/readyz` and `/metrics` only, over plain HTTP, for
//! kubelet probes and Prometheus, which present no client certificate. Webhooks are never served
//! here, and `/metrics` is served nowhere else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Method;
use http_body_util::Full;

use crate::app::App;
use crate::error::{Rejection, Response};
use crate::handlers::health;
use crate::metrics::{Sample, TlsSample, CONTENT_TYPE};
use crate::reload::CurrentApp;
use crate::tls::CurrentTls;

/// The ops routes' answer.
type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Answers the ops routes from the current App (readiness is one flag shared by every App a
/// reload builds) and `tls`'s counters; anything else is 404 (405 for a wrong method).
pub fn service<B>(
    current: Arc<CurrentApp>,
    tls: Option<Arc<CurrentTls>>,
) -> impl tower::Service<http::Request<B>, Response = Response, Error = Infallible, Future = Answer>
       + Clone
       + Send
       + 'static {
    tower::service_fn(move |request: http::Request<B>| {
        let app = current.load_full();
        let tls = tls.clone();
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        Box::pin(async move { Ok(answer(app, tls.as_deref(), &method, &path).await) }) as Answer
    })
}

async fn answer(app: Arc<App>, tls: Option<&CurrentTls>, method: &Method, path: &str) -> Response {
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Rejection::NotFound(path.to_owned()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return Rejection::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: "GET",
        }
        .into_response();
    }
    match path {
        "/healthz" => health::healthz(),
        "/readyz" => health::readyz(&app),
        _ => metrics(&app, tls).await,
    }
}

/// The exposition, with the values read now from their owners.
async fn metrics(app: &App, tls: Option<&CurrentTls>) -> Response {
    let token_cache_entries = match &app.authenticator {
        Some(authenticator) => Some(authenticator.cached_tokens().await),
        None => None,
    };
    let sample = Sample {
        decision_cache_entries: app.decision_cache.settled_len().await,
        token_cache_entries,
        tls: tls.map(|tls| TlsSample {
            reloads: tls.reloads(),
            failures: tls.failures(),
            not_after: tls.not_after(),
        }),
        dropped_log_lines: crate::logging::dropped_lines(),
    };
    match app.metrics.encode(&sample) {
        Ok(text) => {
            let mut response = http::Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        // Writing to a String cannot fail; an encoder bug is a 500, never a panic.
        Err(_) => Rejection::Panic.into_response(),
    }
}
