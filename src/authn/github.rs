//! The GitHub conversation for one token: who owns it (`/user`), is that user an active member of
//! an allowed org (`/user/memberships/orgs/{org}`), and which teams are theirs (`/user/teams`).
//!
//! One octocrab client, built without credentials and shared by every review: the token travels
//! as a per-request `Authorization` header marked sensitive. So no client is built per token, and
//! octocrab's `personal_token()` (which panics in `build()` on a newline) is never used. Answers
//! are read with octocrab's raw `_get_with_headers` and decoded into the few fields used, so that
//! GitHub Enterprise's partial objects decode and each status can be classified here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use octocrab::Octocrab;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::task::JoinSet;

use super::config::GithubConfig;
use super::Refusal;
use crate::config_error::ConfigError;
use crate::metrics::{GithubEndpoint, GithubOutcome, Metrics};

/// GitHub's longest login; Enterprise Managed Users' `_shortcode` suffix counts towards it.
pub const MAX_LOGIN_LEN: usize = 39;

/// Longest team slug accepted. GitHub derives slugs from team names; this only bounds a group name.
pub const MAX_SLUG_LEN: usize = 255;

/// Teams are read 100 at a time, at most this many pages (1,000 teams); beyond it the extra
/// teams are left out, which can only withhold permissions, never grant them.
pub const MAX_TEAM_PAGES: u32 = 10;

/// How much later than the review's budget octocrab's own socket timeouts fire.
const BACKSTOP: Duration = Duration::from_secs(1);

/// Largest GitHub answer read; a page of 100 teams is well under 1 MiB.
const MAX_BODY: usize = 4 << 20;

const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// Why GitHub could not answer. Never carries the token; `Display` is what `status.error` says.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// The whole conversation took longer than `timeout`.
    #[error("GitHub could not be reached: no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (DNS, TCP, TLS, reset).
    #[error("GitHub could not be reached: connection failed")]
    Transport(#[source] octocrab::Error),
    /// GitHub's rate limit (primary or secondary) is exhausted.
    #[error("GitHub could not be reached: rate limited (HTTP {0})")]
    RateLimited(u16),
    /// A 5xx.
    #[error("GitHub could not be reached: HTTP {0}")]
    Server(u16),
    /// A status GitHub does not document for this call.
    #[error("GitHub could not be reached: unexpected HTTP {0}")]
    Unexpected(u16),
    /// A success whose body is not what GitHub documents.
    #[error("GitHub could not be reached: malformed answer from {path}")]
    Malformed {
        /// The API path (no token, no query).
        path: &'static str,
        /// What was wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The body could not be read, or was larger than 4 MiB.
    #[error("GitHub could not be reached: cannot read the answer from {0}")]
    Body(&'static str),
    /// A well-formed answer with a value GitHub never issues (an empty login, a newline in it, id
    /// 0, a slug with a `:`): not a basis for a Kubernetes identity. The value is not quoted.
    #[error("GitHub gave an unusable answer: {what} (from {path})")]
    Unusable {
        /// The API path (no token, no query).
        path: &'static str,
        /// What was wrong, without the value.
        what: &'static str,
    },
    /// `max_concurrent_lookups` conversations were already in progress: not asked at all.
    #[error(
        "GitHub not asked: {0} lookups already in progress \
         (authenticate.github.max_concurrent_lookups); try again"
    )]
    Busy(usize),
    /// A membership task stopped (a bug, or shutdown).
    #[error("GitHub could not be reached: internal error")]
    Task,
}

/// A validated bearer token as the `Authorization` header value. Its `Debug` is redacted, and the
/// header is marked sensitive so HTTP libraries do not print or index it.
#[derive(Clone)]
pub struct Credential(HeaderValue);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// The header for `token`, which the caller has checked is visible ASCII; `None` otherwise.
    pub fn new(token: &str) -> Option<Self> {
        let mut value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }
}

/// `GET /user`: the fields used.
#[derive(Debug, Deserialize)]
struct User {
    login: String,
    id: u64,
}

/// `GET /user/memberships/orgs/{org}`: the fields used.
#[derive(Debug, Deserialize)]
struct Membership {
    state: String,
    /// `admin`, `member` or `billing_manager`; absent in old GHE versions is not membership.
    #[serde(default)]
    role: String,
}

impl Membership {
    /// An active admin or member. A billing manager has an "active" membership too, but GitHub
    /// treats them as outside the org (no access to its repositories): never a member here.
    fn is_active_member(&self) -> bool {
        self.state == "active" && matches!(self.role.as_str(), "admin" | "member")
    }
}

/// `GET /user/teams`: the fields used.
#[derive(Debug, Deserialize)]
struct Team {
    slug: String,
    organization: TeamOrg,
}

#[derive(Debug, Deserialize)]
struct TeamOrg {
    login: String,
}

/// Who GitHub says owns a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubUser {
    /// The login (can be renamed, so never the uid).
    pub login: String,
    /// The numeric id (stable).
    pub id: u64,
    /// Allowed orgs (as configured) in which the user is an active member.
    pub orgs: Vec<String>,
    /// `(org as configured, team slug)` for teams in those orgs.
    pub teams: Vec<(String, String)>,
}

/// What one GET came back with, once classified.
enum Got<T> {
    /// 2xx, decoded.
    Ok(T),
    /// A refusal-worthy 4xx (401, 403 without rate limiting, 404).
    Denied(StatusCode),
}

/// The shared client and what it needs to know about orgs and teams.
#[derive(Debug)]
pub struct Github {
    client: Octocrab,
    allowed_orgs: Vec<String>,
    read_teams: bool,
    metrics: Arc<Metrics>,
}

impl Github {
    /// Builds the client from the configuration, counting calls into `metrics`. No request is
    /// made.
    pub fn new(config: &GithubConfig, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let bad_url = |e: octocrab::Error| {
            ConfigError::invalid("authenticate.github.api_url", format!("unusable: {e}"))
        };
        // The review as a whole is bounded by `timeout` in the caller; octocrab has no timeout
        // of its own by default, so these are a backstop set a little later, so that the
        // budget's own "no answer within" is what a slow GitHub produces. The `retry` feature
        // is off: no hidden re-sends.
        // octocrab's client spawns its buffer worker on the current runtime and panics without
        // one; refuse instead.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "routes.authenticate",
                "the GitHub client must be built inside the tokio runtime (a bug in the caller)",
            ));
        }
        let backstop = Some(config.timeout.0 + BACKSTOP);
        let client = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(bad_url)?
            .set_connect_timeout(backstop)
            .set_read_timeout(backstop)
            .set_write_timeout(backstop)
            .build()
            .map_err(bad_url)?;
        Ok(Self {
            client,
            allowed_orgs: config.allowed_orgs.clone().unwrap_or_default(),
            read_teams: config.groups.teams(),
            metrics,
        })
    }

    /// Asks GitHub who owns `credential` and whether they may log in.
    pub async fn identify(
        self: &Arc<Self>,
        credential: &Credential,
    ) -> Result<Result<GithubUser, Refusal>, GithubError> {
        let user: User = match self
            .get("/user", GithubEndpoint::User, "/user", credential)
            .await?
        {
            Got::Ok(user) => user,
            Got::Denied(StatusCode::UNAUTHORIZED) => return Ok(Err(Refusal::BadCredentials)),
            Got::Denied(_) => return Ok(Err(Refusal::Forbidden)),
        };
        // The login becomes the Kubernetes username and the id its uid: an answer GitHub would
        // never give is an error (asked again next time), never a user.
        if !is_login(&user.login) {
            return Err(GithubError::Unusable {
                path: "/user",
                what: "the login is not a GitHub login",
            });
        }
        if user.id == 0 {
            return Err(GithubError::Unusable {
                path: "/user",
                what: "the id is not a positive number",
            });
        }
        let mut found = GithubUser {
            login: user.login,
            id: user.id,
            orgs: Vec::new(),
            teams: Vec::new(),
        };
        if self.allowed_orgs.is_empty() {
            // Any GitHub user; groups come only from allowed orgs, so there are none.
            return Ok(Ok(found));
        }
        match self.active_orgs(credential).await? {
            Ok(orgs) if orgs.is_empty() => return Ok(Err(Refusal::NotAMember)),
            Ok(orgs) => found.orgs = orgs,
            Err(refusal) => return Ok(Err(refusal)),
        }
        if self.read_teams {
            found.teams = self.teams(credential, &found.orgs).await?;
        }
        Ok(Ok(found))
    }

    /// The allowed orgs in which the user's membership is `active`, asked concurrently.
    /// Not `/user/orgs`: fine-grained tokens see an empty list there, and it hides `pending`.
    async fn active_orgs(
        self: &Arc<Self>,
        credential: &Credential,
    ) -> Result<Result<Vec<String>, Refusal>, GithubError> {
        let mut tasks = JoinSet::new();
        for (index, org) in self.allowed_orgs.iter().enumerate() {
            let github = Arc::clone(self);
            let credential = credential.clone();
            let route = format!("/user/memberships/orgs/{org}");
            tasks.spawn(async move {
                let got = github
                    .get::<Membership>(
                        &route,
                        GithubEndpoint::OrgMembership,
                        "/user/memberships/orgs/{org}",
                        &credential,
                    )
                    .await;
                (index, got)
            });
        }
        let mut active = vec![false; self.allowed_orgs.len()];
        while let Some(joined) = tasks.join_next().await {
            let (index, got) = joined.map_err(|_| GithubError::Task)?;
            match got? {
                Got::Ok(m) => active[index] = m.is_active_member(),
                // The token stopped working between calls.
                Got::Denied(StatusCode::UNAUTHORIZED) => return Ok(Err(Refusal::BadCredentials)),
                // 404: not a member (or the token may not see the org); 403: the org restricts
                // this token (SAML SSO not authorized, OAuth app policy). Neither is membership.
                Got::Denied(_) => {}
            }
        }
        Ok(Ok(self
            .allowed_orgs
            .iter()
            .zip(active)
            .filter(|(_, on)| *on)
            .map(|(org, _)| org.clone())
            .collect()))
    }

    /// The user's teams in `orgs` (matched case-insensitively), as `(org as configured, slug)`.
    async fn teams(
        &self,
        credential: &Credential,
        orgs: &[String],
    ) -> Result<Vec<(String, String)>, GithubError> {
        let mut teams = Vec::new();
        let mut seen = HashSet::new();
        for page in 1..=MAX_TEAM_PAGES {
            let route = format!("/user/teams?per_page=100&page={page}");
            let batch: Vec<Team> = match self
                .get(&route, GithubEndpoint::Teams, "/user/teams", credential)
                .await?
            {
                Got::Ok(batch) => batch,
                // A token that may not list teams still authenticates, with org groups only.
                Got::Denied(status) => {
                    tracing::debug!(
                        status = status.as_u16(),
                        "GitHub refused /user/teams; no team groups"
                    );
                    break;
                }
            };
            let full = batch.len() >= 100;
            for team in batch {
                let Some(org) = orgs
                    .iter()
                    .find(|o| o.eq_ignore_ascii_case(&team.organization.login))
                else {
                    continue;
                };
                // A slug becomes part of a group name: a `:` could forge another org's group or
                // a reserved one. GitHub never sends such a slug, so the whole answer is refused
                // rather than cleaned up or silently shortened.
                if !is_team_slug(&team.slug) {
                    return Err(GithubError::Unusable {
                        path: "/user/teams",
                        what: "a team slug is not a GitHub slug",
                    });
                }
                if seen.insert((org.clone(), team.slug.clone())) {
                    teams.push((org.clone(), team.slug));
                }
            }
            if !full {
                return Ok(teams);
            }
        }
        tracing::warn!(
            max_pages = MAX_TEAM_PAGES,
            "user is in more teams than gatehouse reads; the rest are not groups"
        );
        Ok(teams)
    }

    /// One GET, classified, and counted in the metrics as `endpoint`. A call dropped before it
    /// ends (the review's `timeout` fired) counts as a timeout.
    async fn get<T: DeserializeOwned>(
        &self,
        route: &str,
        endpoint: GithubEndpoint,
        path: &'static str,
        credential: &Credential,
    ) -> Result<Got<T>, GithubError> {
        let mut call = Call {
            metrics: &self.metrics,
            endpoint,
            outcome: GithubOutcome::Timeout,
        };
        let got = self.get_uncounted(route, path, credential).await;
        call.outcome = match &got {
            Ok(Got::Ok(_)) => GithubOutcome::Ok,
            Ok(Got::Denied(StatusCode::UNAUTHORIZED)) => GithubOutcome::Unauthorized,
            Ok(Got::Denied(StatusCode::NOT_FOUND)) => GithubOutcome::NotFound,
            Ok(Got::Denied(_)) => GithubOutcome::Forbidden,
            Err(GithubError::RateLimited(_)) => GithubOutcome::RateLimited,
            Err(GithubError::Server(_)) => GithubOutcome::ServerError,
            Err(_) => GithubOutcome::Error,
        };
        got
    }

    /// One GET, classified: success decoded, refusals named, everything else an error.
    /// `path` names the call in errors and logs without ids or queries.
    async fn get_uncounted<T: DeserializeOwned>(
        &self,
        route: &str,
        path: &'static str,
        credential: &Credential,
    ) -> Result<Got<T>, GithubError> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, credential.0.clone());
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        let response = self
            .client
            ._get_with_headers(route, Some(headers))
            .await
            .map_err(GithubError::Transport)?;
        let (parts, body) = response.into_parts();
        let status = parts.status;
        tracing::debug!(path, status = status.as_u16(), "GitHub answered");
        if is_rate_limited(status, &parts.headers) {
            return Err(GithubError::RateLimited(status.as_u16()));
        }
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                return Ok(Got::Denied(status))
            }
            s if s.is_server_error() => return Err(GithubError::Server(s.as_u16())),
            s => return Err(GithubError::Unexpected(s.as_u16())),
        }
        let bytes: Bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| GithubError::Body(path))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .map_err(|source| GithubError::Malformed { path, source })?;
        Ok(Got::Ok(value))
    }
}

/// One GitHub call being made: counted with its outcome when dropped, which is also when a
/// timed-out call is abandoned.
struct Call<'a> {
    metrics: &'a Metrics,
    endpoint: GithubEndpoint,
    outcome: GithubOutcome,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.metrics.record_github(self.endpoint, self.outcome);
    }
}

/// A login GitHub can issue: 1 to 39 ASCII letters, digits and hyphens, with at least one letter or
/// digit. Today's sign-up form also forbids leading, trailing and doubled hyphens, but accounts
/// from before those rules keep such logins (`foo-`, `gil--`), and their owners must not be locked
/// out. An Enterprise Managed User's login is `<handle>_<shortcode>` (`mona_acme`, `acme_admin`):
/// one `_` between two such parts. Nothing else (no `:`, space, control byte or non-ASCII letter).
pub fn is_login(login: &str) -> bool {
    let part = |p: &str| {
        p.bytes().any(|b| b.is_ascii_alphanumeric())
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    login.len() <= MAX_LOGIN_LEN
        && match login.split_once('_') {
            Some((handle, shortcode)) => part(handle) && part(shortcode),
            None => part(login),
        }
}

/// A team slug as GitHub makes them from team names (lower case letters, digits, `-`, `_`; `.` and
/// upper case are tolerated): never empty, never a `:`, space, control byte or non-ASCII.
pub fn is_team_slug(slug: &str) -> bool {
    (1..=MAX_SLUG_LEN).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// 429, or 403 with the primary limit spent (`x-ratelimit-remaining: 0`) or a secondary limit
/// (`retry-after`): GitHub is saying "later", not "no".
fn is_rate_limited(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (headers
                .get(RATE_REMAINING)
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
                || headers.contains_key(RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits() {
        let mut h = HeaderMap::new();
        assert!(is_rate_limited(StatusCode::TOO_MANY_REQUESTS, &h));
        assert!(!is_rate_limited(StatusCode::FORBIDDEN, &h));
        h.insert(RATE_REMAINING, HeaderValue::from_static("12"));
        assert!(!is_rate_limited(StatusCode::FORBIDDEN, &h));
        h.insert(RATE_REMAINING, HeaderValue::from_static("0"));
        assert!(is_rate_limited(StatusCode::FORBIDDEN, &h));
        assert!(!is_rate_limited(StatusCode::OK, &h));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("60"));
        assert!(is_rate_limited(StatusCode::FORBIDDEN, &h));
    }

    #[test]
    fn logins_in_githubs_syntax_only() {
        let longest = "a".repeat(MAX_LOGIN_LEN);
        for ok in [
            "a",
            "octocat",
            "Octo-Cat-42",
            longest.as_str(),
            // Accounts from before today's rules.
            "foo-",
            "gil--",
            "-Jerry-",
            // Enterprise Managed Users.
            "mona-lisa_acme",
            "acme_admin",
            "2abvd19d_admin",
        ] {
            assert!(is_login(ok), "{ok:?}");
        }
        let too_long = "a".repeat(MAX_LOGIN_LEN + 1);
        for bad in [
            "",
            "-",
            "---",
            "octo\ncat",
            "octocat\n",
            "octo cat",
            "octo\tcat",
            "system:admin",
            "octo.cat",
            "octo/cat",
            "octocät",
            "_acme",
            "mona_",
            "a_b_c",
            too_long.as_str(),
        ] {
            assert!(!is_login(bad), "{bad:?}");
        }
    }

    #[test]
    fn team_slugs() {
        for ok in ["sre", "ml-platform", "my_team", "team.v2", "SRE"] {
            assert!(is_team_slug(ok), "{ok:?}");
        }
        let long = "a".repeat(MAX_SLUG_LEN + 1);
        for bad in [
            "",
            "system:masters",
            "sre\nops",
            "sre ops",
            "sré",
            long.as_str(),
        ] {
            assert!(!is_team_slug(bad), "{bad:?}");
        }
    }

    #[test]
    fn credential_refuses_header_breakers_and_hides_itself() {
        assert!(Credential::new("ghp_a\nb").is_none());
        assert!(Credential::new("ghp_a\rb").is_none());
        let c = Credential::new("ghp_secret").expect("valid");
        assert!(!format!("{c:?}").contains("secret"));
        assert!(c.0.is_sensitive());
    }
}
