//! `authenticate:` in the configuration file: which GitHub to ask, who may log in, and which
//! Kubernetes names they get. Checked at load time, so a bad value stops gatehouse from starting.

use std::time::Duration;

use serde::Deserialize;

use crate::config_error::ConfigError;
use crate::units::HumanDuration;

/// Kubernetes reserves this prefix for its own users and groups (`system:masters` is cluster-admin).
pub const RESERVED_PREFIX: &str = "system:";

/// `authenticate:`: the `/authenticate` route (TokenReview).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticateConfig {
    /// GitHub as the identity provider.
    pub github: GithubConfig,
}

/// `authenticate.github:`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// REST API base URL: `https://api.github.com/`, or `https://HOST/api/v3/` for GitHub Enterprise.
    pub api_url: String,
    /// Orgs whose active members may log in; `[]` admits any GitHub user. Required when the
    /// route is on, so that "anyone on GitHub" is never the result of a forgotten key.
    pub allowed_orgs: Option<Vec<String>>,
    /// Prepended to the GitHub login to make the Kubernetes username.
    pub username_prefix: String,
    /// Which groups to emit.
    pub groups: GroupsMode,
    /// Prepended to every group: `<prefix><org>` and `<prefix><org>:<team-slug>`.
    pub group_prefix: String,
    /// Bearer tokens without one of these prefixes are refused without calling GitHub.
    pub token_prefixes: Vec<String>,
    /// Total time GitHub may take for one review, all calls included.
    pub timeout: HumanDuration,
    /// How long a successful authentication is reused.
    pub cache_ttl: HumanDuration,
    /// How long a refusal (bad token, not a member) is reused.
    pub negative_cache_ttl: HumanDuration,
    /// The audiences this authenticator answers for; `[]` leaves the check to the apiserver.
    pub audiences: Vec<String>,
    /// Most cached decisions kept; the least useful are evicted beyond it.
    pub cache_max_entries: u64,
    /// Most GitHub conversations (one per uncached token) in progress at once; past it a review
    /// is answered at once with `status.error`.
    pub max_concurrent_lookups: usize,
}

/// Upper bound of `max_concurrent_lookups`: far above any need, and well inside what a semaphore
/// can count.
pub const MAX_CONCURRENT_LOOKUPS: usize = 10_000;

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com/".to_owned(),
            allowed_orgs: None,
            username_prefix: String::new(),
            groups: GroupsMode::Both,
            group_prefix: "github:".to_owned(),
            // Classic PAT, fine-grained PAT, OAuth app token, GitHub App user-to-server token.
            token_prefixes: ["ghp_", "github_pat_", "gho_", "ghu_"]
                .map(str::to_owned)
                .to_vec(),
            // Well under the apiserver's 30s webhook timeout and gatehouse's own request deadline.
            timeout: HumanDuration(Duration::from_secs(5)),
            cache_ttl: HumanDuration(Duration::from_secs(300)),
            negative_cache_ttl: HumanDuration(Duration::from_secs(30)),
            audiences: Vec::new(),
            cache_max_entries: 10_000,
            // A conversation is about three GitHub calls of a few hundred ms, so 32 start some
            // 50 new tokens a second: far more than people log in (answers are cached 5m here
            // and 2m by the apiserver), while a flood of made-up tokens holds at most 32 × (1 +
            // allowed orgs) requests and sockets and sends GitHub's abuse detection at most that
            // many bad-credential calls at once.
            max_concurrent_lookups: 32,
        }
    }
}

/// `authenticate.github.groups`: which memberships become Kubernetes groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupsMode {
    /// `<prefix><org>:<team-slug>` only.
    Teams,
    /// `<prefix><org>` only.
    Orgs,
    /// Both.
    #[default]
    Both,
    /// No groups (RBAC binds users by name).
    None,
}

impl GroupsMode {
    /// True when org groups are emitted.
    pub fn orgs(self) -> bool {
        matches!(self, Self::Orgs | Self::Both)
    }

    /// True when team groups are emitted (and `/user/teams` is read).
    pub fn teams(self) -> bool {
        matches!(self, Self::Teams | Self::Both)
    }
}

const KEY: &str = "authenticate.github";

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("{KEY}.{field}"), message)
}

/// True for a string of visible ASCII (no whitespace, no control bytes): safe in a header.
pub fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// True when `name` starts with `system:`, in any case.
pub fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// A GitHub org login as it may appear in a URL path: letters, digits, `-` and `_`.
fn is_org_name(s: &str) -> bool {
    (1..=100).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AuthenticateConfig {
    /// Checks what the types alone cannot; `enabled` is `routes.authenticate`, `request_timeout`
    /// is `limits.request_timeout` (the GitHub budget must fit inside it).
    pub fn validate(&self, enabled: bool, request_timeout: Duration) -> Result<(), ConfigError> {
        let g = &self.github;
        let uri: http::Uri = g
            .api_url
            .parse()
            .map_err(|e| invalid("api_url", format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) {
            return Err(invalid(
                "api_url",
                "must start with https:// (or http:// for a local test server)",
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("api_url", "has no host"));
        }
        if uri.query().is_some() {
            return Err(invalid("api_url", "must not carry a query"));
        }
        match &g.allowed_orgs {
            None if enabled => return Err(invalid(
                "allowed_orgs",
                "must be set when routes.authenticate is true: list the orgs whose members may \
                     log in, or write [] to admit any GitHub user",
            )),
            None => {}
            Some(orgs) => {
                for (i, org) in orgs.iter().enumerate() {
                    if !is_org_name(org) {
                        return Err(invalid(
                            "allowed_orgs",
                            format!("{org:?} is not a GitHub org name (letters, digits, - and _)"),
                        ));
                    }
                    if orgs[..i].iter().any(|o| o.eq_ignore_ascii_case(org)) {
                        return Err(invalid("allowed_orgs", format!("{org:?} is listed twice")));
                    }
                }
            }
        }
        for (field, prefix) in [
            ("username_prefix", &g.username_prefix),
            ("group_prefix", &g.group_prefix),
        ] {
            if !is_visible_ascii(prefix) {
                return Err(invalid(field, "must be visible ASCII without spaces"));
            }
            if is_reserved(prefix) {
                return Err(invalid(
                    field,
                    "must not start with system:, which Kubernetes reserves for its own users and groups",
                ));
            }
        }
        // Every bearer token the apiserver cannot place reaches this webhook (service-account
        // and OIDC tokens included); without a prefix gate they would all be sent to GitHub.
        if g.token_prefixes.is_empty() {
            return Err(invalid(
                "token_prefixes",
                "must list at least one prefix (e.g. ghp_); other bearer tokens must not be sent to GitHub",
            ));
        }
        if let Some(bad) = g
            .token_prefixes
            .iter()
            .find(|p| p.is_empty() || !is_visible_ascii(p))
        {
            return Err(invalid(
                "token_prefixes",
                format!("{bad:?} is not a non-empty run of visible ASCII"),
            ));
        }
        if g.timeout.0.is_zero() {
            return Err(invalid("timeout", "must be greater than 0"));
        }
        // Only binding when the route is served: a short request_timeout is fine without it.
        if enabled && g.timeout.0 >= request_timeout {
            return Err(invalid(
                "timeout",
                format!(
                    "must be shorter than limits.request_timeout ({}), so that a slow GitHub is \
                     answered with status.error rather than a 504",
                    HumanDuration(request_timeout)
                ),
            ));
        }
        if g.audiences.iter().any(String::is_empty) {
            return Err(invalid("audiences", "must not contain an empty string"));
        }
        if g.cache_max_entries == 0 {
            return Err(invalid("cache_max_entries", "must be greater than 0"));
        }
        if !(1..=MAX_CONCURRENT_LOOKUPS).contains(&g.max_concurrent_lookups) {
            return Err(invalid(
                "max_concurrent_lookups",
                format!("must be between 1 and {MAX_CONCURRENT_LOOKUPS}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), String> {
        let config: AuthenticateConfig = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        config
            .validate(true, Duration::from_secs(9))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_need_allowed_orgs_when_enabled() {
        let err = check("github: {}").unwrap_err();
        assert!(err.contains("authenticate.github.allowed_orgs"), "{err}");
        assert!(check("github: {allowed_orgs: []}").is_ok());
        assert!(AuthenticateConfig::default()
            .validate(false, Duration::from_secs(9))
            .is_ok());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = check("github: {allowed_orgs: [a], alowed_orgs: [b]}").unwrap_err();
        assert!(err.contains("alowed_orgs"), "{err}");
        assert!(check("gitlab: {}").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, key) in [
            (
                "github: {allowed_orgs: [a], api_url: 'ftp://x/'}",
                "api_url",
            ),
            (
                "github: {allowed_orgs: [a], api_url: 'https:///'}",
                "api_url",
            ),
            ("github: {allowed_orgs: ['a/b']}", "allowed_orgs"),
            ("github: {allowed_orgs: [acme, ACME]}", "allowed_orgs"),
            (
                "github: {allowed_orgs: [a], group_prefix: 'system:'}",
                "group_prefix",
            ),
            (
                "github: {allowed_orgs: [a], group_prefix: 'SYSTEM:x'}",
                "group_prefix",
            ),
            (
                "github: {allowed_orgs: [a], username_prefix: 'system:'}",
                "username_prefix",
            ),
            (
                "github: {allowed_orgs: [a], username_prefix: 'a b'}",
                "username_prefix",
            ),
            (
                "github: {allowed_orgs: [a], token_prefixes: []}",
                "token_prefixes",
            ),
            (
                "github: {allowed_orgs: [a], token_prefixes: ['']}",
                "token_prefixes",
            ),
            ("github: {allowed_orgs: [a], timeout: 0s}", "timeout"),
            ("github: {allowed_orgs: [a], timeout: 9s}", "timeout"),
            ("github: {allowed_orgs: [a], audiences: ['']}", "audiences"),
            (
                "github: {allowed_orgs: [a], cache_max_entries: 0}",
                "cache_max_entries",
            ),
            (
                "github: {allowed_orgs: [a], max_concurrent_lookups: 0}",
                "max_concurrent_lookups",
            ),
            (
                "github: {allowed_orgs: [a], max_concurrent_lookups: 10001}",
                "max_concurrent_lookups",
            ),
        ] {
            let err = check(yaml).expect_err(yaml);
            assert!(
                err.contains(&format!("authenticate.github.{key}")),
                "{yaml}: {err}"
            );
        }
        let err = check("github: {allowed_orgs: [a], groups: all}").unwrap_err();
        assert!(err.contains("groups") || err.contains("all"), "{err}");
        let err = check("github: {allowed_orgs: [a], timeout: 5 parsecs}").unwrap_err();
        assert!(err.contains("duration"), "{err}");
    }

    #[test]
    fn reserved_prefix_is_case_insensitive() {
        assert!(is_reserved("system:masters"));
        assert!(is_reserved("System:Masters"));
        assert!(!is_reserved("github:system:masters"));
        assert!(!is_reserved("system"));
    }
}
