//! A GitHub REST API stand-in on 127.0.0.1 (plain HTTP/1.1, nothing leaves the machine): users
//! keyed by token, the three calls gatehouse makes, a counter per path, and a gate that holds
//! every answer until released (to count the conversations open at once).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the mock answers every call made with a user's token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// As GitHub does.
    #[default]
    Normal,
    /// 500 Internal Server Error.
    ServerError,
    /// 403 with `x-ratelimit-remaining: 0` (primary rate limit).
    RateLimited403,
    /// 429 Too Many Requests.
    RateLimited429,
    /// 403 without rate-limit headers (e.g. a token GitHub blocks).
    Forbidden,
}

/// A GitHub user as the mock knows them.
#[derive(Clone, Debug, Default)]
pub struct MockUser {
    /// `login`.
    pub login: String,
    /// `id`.
    pub id: u64,
    /// `(org login, state, role)`: state `active` or `pending`, role `admin`, `member` or
    /// `billing_manager`; absent orgs answer 404.
    pub memberships: Vec<(String, String, String)>,
    /// `(org login, slug, display name)`.
    pub teams: Vec<(String, String, String)>,
    /// How calls with this token are answered.
    pub behaviour: Behaviour,
    /// Waited before every answer.
    pub delay: Option<Duration>,
    /// Sent as the body of `/user` instead of `{"login": login, "id": id, ...}`: odd answers.
    pub user_body: Option<serde_json::Value>,
}

impl MockUser {
    /// A user with an id and login, no orgs, no teams.
    pub fn new(login: &str, id: u64) -> Self {
        Self {
            login: login.to_owned(),
            id,
            ..Self::default()
        }
    }

    /// Adds a membership with role `member`.
    pub fn member(self, org: &str, state: &str) -> Self {
        self.member_as(org, state, "member")
    }

    /// Adds a membership with a given role.
    pub fn member_as(mut self, org: &str, state: &str, role: &str) -> Self {
        self.memberships
            .push((org.to_owned(), state.to_owned(), role.to_owned()));
        self
    }

    /// Adds a team (`name` is the display name, deliberately different from the slug).
    pub fn team(mut self, org: &str, slug: &str, name: &str) -> Self {
        self.teams
            .push((org.to_owned(), slug.to_owned(), name.to_owned()));
        self
    }

    /// Sets the behaviour.
    pub fn behaving(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// Sets a delay before every answer.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Answers `/user` with `body` (status 200) instead of the user's login and id.
    pub fn user_answer(mut self, body: serde_json::Value) -> Self {
        self.user_body = Some(body);
        self
    }
}

#[derive(Default)]
struct State {
    users: Mutex<HashMap<String, MockUser>>,
    /// Path (API prefix and query removed) → calls.
    calls: Mutex<HashMap<String, usize>>,
    /// Requests without a usable `Authorization` header or off the API prefix.
    anomalies: Mutex<Vec<String>>,
    prefix: String,
    /// Open requests per token, and the most distinct tokens ever open at once.
    open: Mutex<Conversations>,
    /// True while answers are held ([`MockGithub::hold`]).
    held: watch::Sender<bool>,
}

/// The conversations (tokens with a request in progress) open now and at most.
#[derive(Default)]
struct Conversations {
    requests: HashMap<String, usize>,
    peak: usize,
}

/// Counts one open request for a token for as long as it lives.
struct Open<'a> {
    state: &'a State,
    token: String,
}

impl<'a> Open<'a> {
    fn new(state: &'a State, token: &str) -> Self {
        let mut open = state.open.lock().expect("open");
        *open.requests.entry(token.to_owned()).or_default() += 1;
        open.peak = open.peak.max(open.requests.len());
        Self {
            state,
            token: token.to_owned(),
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut open = self.state.open.lock().expect("open");
        if let Some(n) = open.requests.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.requests.remove(&self.token);
            }
        }
    }
}

/// A running mock.
pub struct MockGithub {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    handle: JoinHandle<()>,
}

impl Drop for MockGithub {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl MockGithub {
    /// A mock serving the API at `/`, like api.github.com.
    pub async fn start() -> Self {
        Self::start_at("").await
    }

    /// A mock serving the API under `prefix` (e.g. `/api/v3`, like GitHub Enterprise).
    pub async fn start_at(prefix: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(State {
            prefix: prefix.to_owned(),
            held: watch::Sender::new(false),
            ..State::default()
        });
        let served = state.clone();
        let handle = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            handle,
        }
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}{}/", self.addr, self.state.prefix)
    }

    /// Registers `token` as `user`'s.
    pub fn add(&self, token: &str, user: MockUser) {
        self.state
            .users
            .lock()
            .expect("users")
            .insert(token.to_owned(), user);
    }

    /// Calls made to `path` (e.g. `/user`, `/user/teams`, `/user/memberships/orgs/acme`).
    pub fn calls(&self, path: &str) -> usize {
        self.state
            .calls
            .lock()
            .expect("calls")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every call, all paths.
    pub fn total(&self) -> usize {
        self.state.calls.lock().expect("calls").values().sum()
    }

    /// From now on every answer waits until [`MockGithub::release`] (a GitHub that is slow for as
    /// long as a test needs, without a timing guess).
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Lets every held answer go, and those that come later.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// The tokens with a request in progress now (each an open GitHub conversation).
    pub fn open_tokens(&self) -> HashSet<String> {
        let open = self.state.open.lock().expect("open");
        open.requests.keys().cloned().collect()
    }

    /// The most conversations (distinct tokens with a request in progress) ever open at once.
    pub fn peak_conversations(&self) -> usize {
        self.state.open.lock().expect("open").peak
    }

    /// Requests that GitHub would not have accepted as gatehouse sent them (empty when all is well).
    pub fn anomalies(&self) -> Vec<String> {
        self.state.anomalies.lock().expect("anomalies").clone()
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn not_found() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn query_param(query: &str, name: &str) -> Option<usize> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let full_path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let Some(path) = full_path.strip_prefix(state.prefix.as_str()) else {
        state
            .anomalies
            .lock()
            .expect("anomalies")
            .push(format!("off prefix: {full_path}"));
        return not_found();
    };
    let path = path.to_owned();
    *state
        .calls
        .lock()
        .expect("calls")
        .entry(path.clone())
        .or_default() += 1;
    if req.method() != http::Method::GET {
        state
            .anomalies
            .lock()
            .expect("anomalies")
            .push(format!("method {}", req.method()));
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::to_owned);
    let Some(token) = token else {
        state
            .anomalies
            .lock()
            .expect("anomalies")
            .push(format!("no bearer token on {path}"));
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Requires authentication"}),
        );
    };
    let _open = Open::new(state, &token);
    let mut held = state.held.subscribe();
    // Fails only when the mock is gone, and then nothing waits for this answer.
    let _ = held.wait_for(|held| !*held).await;
    let user = state.users.lock().expect("users").get(&token).cloned();
    let Some(user) = user else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    };
    if let Some(delay) = user.delay {
        tokio::time::sleep(delay).await;
    }
    match user.behaviour {
        Behaviour::Normal => {}
        Behaviour::ServerError => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": "Server Error"}),
            )
        }
        Behaviour::RateLimited403 => {
            let mut r = json_response(
                StatusCode::FORBIDDEN,
                json!({"message": "API rate limit exceeded for user ID 1."}),
            );
            let h = r.headers_mut();
            h.insert("x-ratelimit-limit", http::HeaderValue::from_static("5000"));
            h.insert("x-ratelimit-remaining", http::HeaderValue::from_static("0"));
            h.insert(
                "x-ratelimit-reset",
                http::HeaderValue::from_static("1900000000"),
            );
            return r;
        }
        Behaviour::RateLimited429 => {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "Too Many Requests"}),
            )
        }
        Behaviour::Forbidden => {
            return json_response(StatusCode::FORBIDDEN, json!({"message": "Forbidden"}))
        }
    }
    if path == "/user" {
        if let Some(body) = user.user_body {
            return json_response(StatusCode::OK, body);
        }
        // Extra and null fields, as GitHub sends; gatehouse must read only what it needs.
        return json_response(
            StatusCode::OK,
            json!({
                "login": user.login, "id": user.id, "node_id": "MDQ6VXNlcjE=",
                "type": "User", "site_admin": false, "name": null, "email": null,
            }),
        );
    }
    if let Some(org) = path.strip_prefix("/user/memberships/orgs/") {
        let found = user
            .memberships
            .iter()
            .find(|(o, _, _)| o.eq_ignore_ascii_case(org));
        return match found {
            Some((o, state, role)) => json_response(
                StatusCode::OK,
                json!({
                    "url": format!("https://api.github.com/orgs/{o}/memberships/{}", user.login),
                    "state": state, "role": role,
                    "organization": {"login": o, "id": 7},
                    "user": {"login": user.login, "id": user.id},
                }),
            ),
            None => not_found(),
        };
    }
    if path == "/user/teams" {
        let per_page = query_param(&query, "per_page").unwrap_or(30).min(100);
        let page = query_param(&query, "page").unwrap_or(1).max(1);
        let teams: Vec<serde_json::Value> = user
            .teams
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(org, slug, name)| {
                json!({
                    "id": 1, "slug": slug, "name": name, "privacy": "closed",
                    "organization": {"login": org, "id": 7},
                })
            })
            .collect();
        return json_response(StatusCode::OK, serde_json::Value::Array(teams));
    }
    not_found()
}
