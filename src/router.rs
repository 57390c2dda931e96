//! Which route a request is for: 404 for unknown paths, 404 naming the `routes:` switch for a
//! webhook that is off, 405 with `Allow` for a wrong method. The route travels in request extensions to the layers below and the handlers.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Method, Request};

use crate::config::Routes;
use crate::error::{Rejection, Response};
use crate::stack::RejectOr;

/// A route gatehouse serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /authenticate`: TokenReview.
    Authenticate,
    /// `POST /image_policy`: ImageReview.
    ImagePolicy,
    /// `POST /validate`: validating AdmissionReview.
    Validate,
    /// `POST /mutate`: mutating AdmissionReview.
    Mutate,
    /// `GET /healthz`: the process is alive.
    Healthz,
    /// `GET /readyz`: the process takes traffic.
    Readyz,
}

impl Route {
    /// True for the routes that take a review body.
    pub fn is_webhook(self) -> bool {
        !matches!(self, Self::Healthz | Self::Readyz)
    }

    /// The path and the one method this route answers.
    fn method(self) -> (Method, &'static str) {
        if self.is_webhook() {
            (Method::POST, "POST")
        } else {
            (Method::GET, "GET")
        }
    }

    /// The route at `path`, switched on or not.
    pub fn at(path: &str) -> Option<Self> {
        Some(match path {
            "/authenticate" => Self::Authenticate,
            "/image_policy" => Self::ImagePolicy,
            "/validate" => Self::Validate,
            "/mutate" => Self::Mutate,
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            _ => return None,
        })
    }

    /// The `routes:` key that switches a webhook on, and whether `enabled` has it on; `None`
    /// for the health routes, which are always served.
    fn switch(self, enabled: &Routes) -> Option<(&'static str, bool)> {
        match self {
            Self::Authenticate => Some(("authenticate", enabled.authenticate)),
            Self::ImagePolicy => Some(("image_policy", enabled.image_policy)),
            Self::Validate => Some(("validate", enabled.validate)),
            Self::Mutate => Some(("mutate", enabled.mutate)),
            Self::Healthz | Self::Readyz => None,
        }
    }

    /// Finds the route for a path and method; the query (`?timeout=10s`) plays no part. A
    /// webhook that is switched off answers 404 naming its switch, before the method is looked
    /// at: turning it on is the first thing to fix.
    pub fn resolve(method: &Method, path: &str, enabled: &Routes) -> Result<Self, Rejection> {
        let Some(route) = Self::at(path) else {
            return Err(Rejection::NotFound(path.to_owned()));
        };
        if let Some((switch, false)) = route.switch(enabled) {
            return Err(Rejection::RouteDisabled {
                path: path.to_owned(),
                switch,
            });
        }
        let (allowed, allow) = route.method();
        if *method != allowed {
            return Err(Rejection::MethodNotAllowed {
                method: method.clone(),
                path: path.to_owned(),
                allow,
            });
        }
        Ok(route)
    }
}

/// Adds route resolution.
#[derive(Clone, Debug)]
pub struct RouteLayer {
    enabled: Routes,
}

impl RouteLayer {
    /// Routes switched on as in `enabled`.
    pub fn new(enabled: Routes) -> Self {
        Self { enabled }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            enabled: self.enabled.clone(),
        }
    }
}

/// Resolves the route and stores it in request extensions.
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
    enabled: Routes,
}

impl<S, B> tower::Service<Request<B>> for RouteService<S>
where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RejectOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match Route::resolve(req.method(), req.uri().path(), &self.enabled) {
            Ok(route) => {
                req.extensions_mut().insert(route);
                RejectOr::Inner {
                    future: self.inner.call(req),
                }
            }
            Err(rejection) => RejectOr::reject(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_routes() {
        let on = Routes::default();
        assert_eq!(
            Route::resolve(&Method::POST, "/validate", &on).ok(),
            Some(Route::Validate)
        );
        assert_eq!(
            Route::resolve(&Method::GET, "/healthz", &on).ok(),
            Some(Route::Healthz)
        );
        assert!(matches!(
            Route::resolve(&Method::GET, "/validate", &on),
            Err(Rejection::MethodNotAllowed { allow: "POST", .. })
        ));
        assert!(matches!(
            Route::resolve(&Method::POST, "/nope", &on),
            Err(Rejection::NotFound(_))
        ));
        // Disabled by default until configured: the answer names the switch, whatever the
        // method.
        for method in [Method::POST, Method::GET] {
            assert!(matches!(
                Route::resolve(&method, "/mutate", &on),
                Err(Rejection::RouteDisabled {
                    ref path,
                    switch: "mutate"
                }) if path == "/mutate"
            ));
        }
        let off = Routes {
            validate: false,
            ..Routes::default()
        };
        assert!(matches!(
            Route::resolve(&Method::POST, "/validate", &off),
            Err(Rejection::RouteDisabled {
                switch: "validate",
                ..
            })
        ));
    }
}
