//! Container image references and the registry/repository patterns policy is written in.
//!
//! Parsing follows `github.com/distribution/reference` (`ParseNormalizedNamed`), the code the
//! kubelet and containerd use, so that gatehouse judges the image the node will actually pull:
//! `nginx` is `docker.io/library/nginx`, `localhost:5000/x` is on `localhost:5000`, and
//! `test.com:5000` is `docker.io/library/test.com` tagged `5000`.
//!
//! Beyond upstream, the registry of references and patterns alike is canonicalised in one
//! place, [`canonical_domain`], so that every spelling the runtime pulls from the same place
//! is one string: `REGISTRY-1.DOCKER.IO:0443/busybox` is `docker.io/library/busybox`. Matching
//! then compares strings, and no consumer (allow and deny lists, rewrites) can forget a rule.
//!
//! The parser is hand-written (it runs for every container of every pod): one allocation for
//! the normalised reference (two for a registry spelled unusually), none for matching.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Docker Hub's canonical domain; familiar names ("nginx", "acme/app") live there.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, which upstream itself rewrites to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Every host that serves Docker Hub's registry (on 443): each is [`DEFAULT_DOMAIN`] here, so a
/// deny list or a mirror sees all of them. `index.docker.io` is distribution's legacy domain,
/// `registry-1.docker.io` is where containerd and Docker send `docker.io` pulls, and
/// `registry.hub.docker.com` is the v1-era name Docker Hub still answers on (CI tools use it).
const HUB_HOSTS: [&str; 4] = [
    DEFAULT_DOMAIN,
    LEGACY_DEFAULT_DOMAIN,
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
/// Registries speak HTTPS, so no port is this port.
const HTTPS_PORT: u16 = 443;
/// Namespace of Docker Hub's official images: "nginx" is "docker.io/library/nginx".
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Upstream's `RepositoryNameTotalLengthMax`.
const NAME_MAX: usize = 255;
/// Upstream's tag grammar allows `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;

/// What was being parsed, so an error message points at a pod field or at the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// An image reference from a pod spec or an ImageReview.
    Reference,
    /// A registry/repository pattern from the configuration.
    Pattern,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputKind::Reference => "image reference",
            InputKind::Pattern => "image pattern",
        })
    }
}

/// Why an image reference or pattern was rejected; every message names the offending input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// The input was the empty string.
    #[error("invalid {kind} \"\": must not be empty")]
    Empty {
        /// Reference or pattern.
        kind: InputKind,
    },
    /// Whitespace, a control character or non-ASCII text (often a copy-paste accident).
    #[error(
        "invalid {kind} {input:?}: contains {ch:?}; only printable ASCII without spaces is allowed"
    )]
    InvalidCharacter {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// The first offending character.
        ch: char,
    },
    /// A bare 64-hex-digit string: an image ID, which upstream refuses as a repository name.
    #[error(
        "invalid {kind} {input:?}: a 64-character hexadecimal string is an image ID, not a \
         repository name"
    )]
    HexIdentifier {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
    },
    /// Uppercase letters in the repository path (or anywhere in a pattern).
    #[error("invalid {kind} {input:?}: repository name must be lowercase")]
    Uppercase {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
    },
    /// The normalised `domain/path` is longer than 255 characters.
    #[error(
        "invalid {kind} {input:?}: name too long ({len} characters once normalised, the maximum \
         is 255)"
    )]
    NameTooLong {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// Length of the normalised name.
        len: usize,
    },
    /// The registry part is not `host[:port]` (host name, IPv4, or `[IPv6]`).
    #[error(
        "invalid {kind} {input:?}: registry {domain:?} is not a host name, IPv4 address or \
         [IPv6] address with an optional numeric port"
    )]
    InvalidDomain {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// The registry part as written.
        domain: String,
    },
    /// The registry's port is 0 or above 65535: no runtime can pull from it.
    #[error("invalid {kind} {input:?}: registry {domain:?} has a port outside 1 to 65535")]
    InvalidPort {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// The registry part as written.
        domain: String,
    },
    /// The registry host ends in a number but is not a plain dotted-quad IPv4 address.
    #[error(
        "invalid {kind} {input:?}: registry {domain:?} ends in a number, so it must be an IPv4 \
         address written as four decimal numbers from 0 to 255 without leading zeros (resolvers \
         read other spellings, such as 010.0.0.1 or 0x7f.1, as addresses in octal or hex)"
    )]
    AmbiguousAddress {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// The registry part as written.
        domain: String,
    },
    /// Nothing names a repository (`:tag`, `@sha256:…`, `localhost/`).
    #[error("invalid {kind} {input:?}: no repository name")]
    MissingName {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
    },
    /// The repository path breaks the grammar (bad separator, `//`, leading or trailing `/`).
    #[error(
        "invalid {kind} {input:?}: repository path {path:?} must be components of lowercase \
         letters and digits joined by '.', '_', '__' or '-', separated by single '/'"
    )]
    InvalidPath {
        /// Reference or pattern.
        kind: InputKind,
        /// The whole input.
        input: String,
        /// The repository path as written.
        path: String,
    },
    /// The tag is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    #[error(
        "invalid image reference {input:?}: tag {tag:?} must be 1 to 128 letters, digits, '_', \
         '.' or '-', not starting with '.' or '-'"
    )]
    InvalidTag {
        /// The whole input.
        input: String,
        /// The tag as written.
        tag: String,
    },
    /// The digest is not `algorithm:encoded` with a well-formed algorithm.
    #[error(
        "invalid image reference {input:?}: digest {digest:?} must be <algorithm>:<encoded>, \
         the algorithm being lowercase letters and digits joined by '+', '.', '_' or '-'"
    )]
    InvalidDigest {
        /// The whole input.
        input: String,
        /// The digest as written.
        digest: String,
    },
    /// The encoded part of the digest has the wrong length or alphabet for its algorithm.
    #[error(
        "invalid image reference {input:?}: {algorithm} digest {digest:?} must have {expected}"
    )]
    InvalidDigestEncoding {
        /// The whole input.
        input: String,
        /// The digest as written.
        digest: String,
        /// The digest algorithm (`sha256`, …).
        algorithm: String,
        /// What the encoded part must look like.
        expected: &'static str,
    },
    /// A pattern carried a tag (or `name:digits`, which reads as a tag as much as a port).
    #[error(
        "invalid image pattern {input:?}: a pattern names a registry or repository prefix and \
         must not carry a tag (for a registry on a port without a dot in its name, write \
         \"host:port/*\")"
    )]
    PatternHasTag {
        /// The whole pattern.
        input: String,
    },
    /// A pattern carried a digest.
    #[error(
        "invalid image pattern {input:?}: a pattern names a registry or repository prefix and \
         must not carry a digest"
    )]
    PatternHasDigest {
        /// The whole pattern.
        input: String,
    },
    /// A `*` somewhere other than a trailing `/*`.
    #[error(
        "invalid image pattern {input:?}: '*' is only allowed as a trailing \"/*\" after a \
         registry or repository"
    )]
    PatternWildcard {
        /// The whole pattern.
        input: String,
    },
    /// An exemption's trailing `*` that does not complete a repository name segment.
    #[error(
        "invalid image pattern {input:?}: a trailing '*' completes the last segment of a \
         repository name (as in \"registry.k8s.io/pause*\"), not a registry"
    )]
    PartialGlobOnRegistry {
        /// The whole pattern.
        input: String,
    },
    /// `docker.io/<name>`: an account to Docker Hub, but images normalise `docker.io/<name>` to
    /// the official `docker.io/library/<name>`, so the pattern would match no image.
    #[error(
        "ambiguous image pattern {input:?}: write \"docker.io/library/{name}\" for the official \
         image or \"docker.io/{name}/*\" for everything under the {name} account"
    )]
    AmbiguousHubPattern {
        /// The whole pattern.
        input: String,
        /// The single path segment.
        name: String,
    },
}

/// A parsed, normalised image reference; its registry is canonical ([`canonical_domain`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `domain/path[:tag][@digest]`, normalised; every accessor borrows from it.
    full: String,
    /// End of the domain (index of the `/` before the path).
    domain_end: usize,
    /// End of `domain/path`.
    name_end: usize,
    /// End of `:tag`; equals `name_end` without a tag.
    tag_end: usize,
}

impl ImageRef {
    /// Parses and normalises `s` like `ParseNormalizedNamed` (`nginx` → `docker.io/library/nginx`),
    /// with the registry canonicalised (`REGISTRY-1.DOCKER.IO:443/busybox` → the same).
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        const KIND: InputKind = InputKind::Reference;
        precheck(s, KIND)?;
        let (written_domain, remainder) = split_docker_domain(s);
        // The path cannot contain ':' or '@', and a tag cannot contain '@', so the first '@'
        // starts the digest and the first ':' before it starts the tag.
        let (name, digest) = split_opt(remainder, '@');
        let (path, tag) = split_opt(name, ':');
        let domain = check_name(
            s,
            KIND,
            written_domain.unwrap_or(DEFAULT_DOMAIN),
            Some(path),
        )?;
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    input: s.to_owned(),
                    tag: tag.to_owned(),
                });
            }
        }
        if let Some(digest) = digest {
            check_digest(s, digest)?;
        }
        // The limit applies to the name as upstream normalises it (it rewrites only
        // index.docker.io): that decides whether the runtime accepts the reference at all.
        let upstream_domain = match written_domain {
            None | Some(LEGACY_DEFAULT_DOMAIN) => DEFAULT_DOMAIN,
            Some(d) => d,
        };
        let upstream_library = upstream_domain == DEFAULT_DOMAIN && !path.contains('/');
        let upstream_prefix = if upstream_library {
            OFFICIAL_REPO_PREFIX
        } else {
            ""
        };
        check_length(
            s,
            KIND,
            upstream_domain.len() + 1 + upstream_prefix.len() + path.len(),
        )?;
        // Every Docker Hub spelling is "docker.io" by now, so each gets "library/" alike.
        let library = domain == DEFAULT_DOMAIN && !path.contains('/');
        let prefix = if library { OFFICIAL_REPO_PREFIX } else { "" };
        let name_len = domain.len() + 1 + prefix.len() + path.len();
        // The canonical name must be within the limit too, or it would not parse back to
        // itself: a single-label host gains ":443" ("FOO/<250 chars>" is "foo:443/<250 chars>").
        check_length(s, KIND, name_len)?;

        let tag_len = tag.map_or(0, |t| t.len() + 1);
        let digest_len = digest.map_or(0, |d| d.len() + 1);
        let mut full = String::with_capacity(name_len + tag_len + digest_len);
        full.push_str(&domain);
        let domain_end = full.len();
        full.push('/');
        full.push_str(prefix);
        full.push_str(path);
        let name_end = full.len();
        if let Some(tag) = tag {
            full.push(':');
            full.push_str(tag);
        }
        let tag_end = full.len();
        if let Some(digest) = digest {
            full.push('@');
            full.push_str(digest);
        }
        Ok(ImageRef {
            full,
            domain_end,
            name_end,
            tag_end,
        })
    }

    /// The canonical registry, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        self.part(0, self.domain_end)
    }

    /// The repository path within the registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        self.part(self.domain_end + 1, self.name_end)
    }

    /// The normalised repository name, `domain/path`, e.g. `docker.io/library/nginx`.
    pub fn name(&self) -> &str {
        self.part(0, self.name_end)
    }

    /// The tag as written (case-sensitive), `None` when absent; no `latest` is implied.
    pub fn tag(&self) -> Option<&str> {
        (self.tag_end > self.name_end).then(|| self.part(self.name_end + 1, self.tag_end))
    }

    /// The digest, e.g. `sha256:…`, when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.has_digest()
            .then(|| self.part(self.tag_end + 1, self.full.len()))
    }

    /// True when the node resolves the moving `latest` tag: no digest, no tag or exactly `latest`.
    pub fn is_latest(&self) -> bool {
        !self.has_digest() && self.tag().is_none_or(|t| t == "latest")
    }

    /// True when the reference pins content by digest (the runtime then ignores any tag).
    pub fn has_digest(&self) -> bool {
        self.full.len() > self.tag_end
    }

    /// `new_name` with this reference's `:tag` and `@digest` appended, for rewriting the registry.
    pub fn with_name(&self, new_name: &str) -> String {
        let suffix = self.part(self.name_end, self.full.len());
        let mut out = String::with_capacity(new_name.len() + suffix.len());
        out.push_str(new_name);
        out.push_str(suffix);
        out
    }

    /// A slice of the normalised reference.
    fn part(&self, start: usize, end: usize) -> &str {
        slice(&self.full, start, end)
    }
}

impl fmt::Display for ImageRef {
    /// The full normalised form, `name[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// A registry/repository pattern from config: "registry.my.com", "ghcr.io/acme", "quay.io/evil/*".
///
/// A pattern is a normalised name prefix matched on whole `/`-separated segments, the registry
/// (`host[:port]`) being the first segment: `registry.my.com` admits `registry.my.com/team/app`
/// but neither `registry.my.com.evil.io/app` nor `registry.my.com:5000/app`, and `ghcr.io/acme`
/// admits `ghcr.io/acme` and `ghcr.io/acme/team/app` but not `ghcr.io/acme-evil/app`. A full
/// repository name therefore also admits repositories below it: `docker.io/library/busybox`
/// admits `busybox`, `busybox:1.36` and `docker.io/library/busybox/extra`, not `busybox2`.
/// A trailing `/*` admits only what is strictly below: `quay.io/evil/*` admits `quay.io/evil/x`
/// and `quay.io/evil/a/b`, not `quay.io/evil` itself.
///
/// Normalisation: a first segment containing `.` or `:` (IPv6 included), or `localhost`, is a
/// registry, canonicalised like an image's ([`canonical_domain`]: `quay.io:0443` is `quay.io`,
/// `registry-1.docker.io` is `docker.io`), and the rest is kept as written (`docker.io/library`
/// stays, `index.docker.io/x` becomes `docker.io/x`, `docker.io/busybox` is the Hub namespace
/// `busybox`, not the official image). Otherwise the pattern is a Docker Hub name normalised
/// like an image name: `busybox` is `docker.io/library/busybox` and `acme/app` is
/// `docker.io/acme/app`; with `/*` it is a namespace, so `acme/*` is `docker.io/acme/*`. A
/// single segment `name:port` is a registry only if its host has a dot or is `localhost`
/// (`busybox:1` is refused as a tag; write `kind-registry:5000/*`). A pattern is written in
/// lower case, registry included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefPattern {
    /// Normalised pattern, `domain[/path][/*]`.
    text: String,
    /// End of the domain.
    domain_end: usize,
    /// End of `domain[/path]`, before any `/*`.
    prefix_end: usize,
    /// Trailing `/*`: match strictly below the prefix, not the prefix itself.
    subtree: bool,
    /// Trailing `*` after a partial segment ([`RefPattern::parse_exemption`] only): the name
    /// continues the last segment and ends there.
    partial: bool,
}

impl RefPattern {
    /// Parses a pattern that selects images (allow and deny lists, rewrite keys): like
    /// [`RefPattern::parse`], but refuses `docker.io/<name>`, which operators read as the
    /// official image and the grammar as an account. `docker.io/library` is clear and allowed.
    pub fn parse_selector(s: &str) -> Result<RefPattern, ReferenceError> {
        let pattern = Self::parse(s)?;
        let below_hub = pattern
            .text
            .strip_prefix("docker.io/")
            .filter(|_| !pattern.subtree);
        match below_hub {
            Some(name) if !name.contains('/') && name != "library" => {
                Err(ReferenceError::AmbiguousHubPattern {
                    input: s.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Ok(pattern),
        }
    }

    /// Parses an exemption (`exempt_images`, Gatekeeper's `exemptImages`): a selector, or one
    /// whose last segment ends in `*`, which completes that segment only:
    /// `registry.k8s.io/pause*` matches `registry.k8s.io/pause` and `registry.k8s.io/pause-amd64`
    /// (any tag or digest), never `registry.k8s.io/pause/x` nor another registry. The registry is
    /// canonicalised as in every pattern, so no other spelling of it escapes or widens the match.
    pub fn parse_exemption(s: &str) -> Result<RefPattern, ReferenceError> {
        let Some(body) = s.strip_suffix('*').filter(|_| !s.ends_with("/*")) else {
            return Self::parse_selector(s);
        };
        // A placeholder letter completes the segment, so the part before the '*' is checked by
        // the same grammar ("pause-" alone is not a valid component, "pause-a" is).
        let mut pattern = Self::parse_selector(&format!("{body}a")).map_err(|e| match e {
            ReferenceError::PatternWildcard { .. } => ReferenceError::PatternWildcard {
                input: s.to_owned(),
            },
            other => other,
        })?;
        if pattern.subtree || pattern.path().is_empty() || !pattern.text.ends_with('a') {
            return Err(ReferenceError::PartialGlobOnRegistry {
                input: s.to_owned(),
            });
        }
        pattern.text.pop();
        pattern.prefix_end -= 1;
        pattern.text.push('*');
        pattern.partial = true;
        Ok(pattern)
    }

    /// Parses and normalises a pattern (see the type's documentation for the rules).
    pub fn parse(s: &str) -> Result<RefPattern, ReferenceError> {
        const KIND: InputKind = InputKind::Pattern;
        precheck(s, KIND)?;
        let input = || s.to_owned();
        if s.contains('@') {
            return Err(ReferenceError::PatternHasDigest { input: input() });
        }
        let (body, subtree) = match s.strip_suffix("/*") {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(ReferenceError::PatternWildcard { input: input() });
        }
        // Configuration is written once, so it is held to the canonical case rather than
        // lowercased: "Docker.io" is most likely a typo of something.
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                kind: KIND,
                input: input(),
            });
        }
        if body.is_empty() {
            return Err(ReferenceError::MissingName {
                kind: KIND,
                input: input(),
            });
        }

        // (domain, path or None for a registry-only pattern, prefix the path with "library/")
        let (domain, path, library) = match body.split_once('/') {
            Some((first, rest)) if first == "localhost" || first.contains(['.', ':']) => {
                (first, Some(rest), false)
            }
            Some(_) => (DEFAULT_DOMAIN, Some(body), false),
            None if body.starts_with('[') => (body, None, false),
            None => {
                // "busybox:1" reads as a tag, "registry.my.com:5000" as a registry; only a dot,
                // localhost, or a trailing "/*" (as in "kind-registry:5000/*") settles it.
                let (host, port) = split_opt(body, ':');
                let hostlike = host == "localhost" || host.contains('.');
                match port {
                    Some(port) if !is_port(port) || !(hostlike || subtree) => {
                        return Err(ReferenceError::PatternHasTag { input: input() });
                    }
                    Some(_) => (body, None, false),
                    None if hostlike => (body, None, false),
                    // One Hub segment names an official image; with "/*" it names a namespace.
                    None => (DEFAULT_DOMAIN, Some(body), !subtree),
                }
            }
        };
        if path.is_some_and(|p| p.contains(':')) {
            return Err(ReferenceError::PatternHasTag { input: input() });
        }
        let domain = check_name(s, KIND, domain, path)?;
        let prefix = if library { OFFICIAL_REPO_PREFIX } else { "" };
        let prefix_len = path.map_or(domain.len(), |p| domain.len() + 1 + prefix.len() + p.len());
        check_length(s, KIND, prefix_len)?;

        let mut text = String::with_capacity(prefix_len + if subtree { 2 } else { 0 });
        text.push_str(&domain);
        let domain_end = text.len();
        if let Some(path) = path {
            text.push('/');
            text.push_str(prefix);
            text.push_str(path);
        }
        let prefix_end = text.len();
        if subtree {
            text.push_str("/*");
        }
        Ok(RefPattern {
            text,
            domain_end,
            prefix_end,
            subtree,
            partial: false,
        })
    }

    /// True when `image`'s name lies under this pattern, on whole segments; never allocates.
    pub fn matches(&self, image: &ImageRef) -> bool {
        // Both registries are canonical: one spelling per place, so equal strings.
        if image.domain() != self.domain() {
            return false;
        }
        let prefix = self.path();
        if prefix.is_empty() {
            // Registry-only pattern; an image always has a non-empty path, so it is below.
            return true;
        }
        match image.path().strip_prefix(prefix) {
            // The '*' completes the last segment: nothing deeper.
            Some(rest) if self.partial => !rest.contains('/'),
            Some("") => !self.subtree,
            Some(rest) => rest.starts_with('/'),
            None => false,
        }
    }

    /// The normalised pattern, e.g. `docker.io/library/busybox` or `quay.io/evil/*`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The registry segment of the pattern.
    fn domain(&self) -> &str {
        slice(&self.text, 0, self.domain_end)
    }

    /// The repository prefix after the registry; empty for a registry-only pattern.
    fn path(&self) -> &str {
        if self.prefix_end > self.domain_end {
            slice(&self.text, self.domain_end + 1, self.prefix_end)
        } else {
            ""
        }
    }
}

impl fmt::Display for RefPattern {
    /// The normalised pattern, as [`RefPattern::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a selector ([`RefPattern::parse_selector`]): the form config lists are written in.
impl FromStr for RefPattern {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RefPattern::parse_selector(s)
    }
}

impl<'de> Deserialize<'de> for RefPattern {
    /// Deserialises from a string via [`FromStr`], so a bad pattern fails config loading by name.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Borrows the string where the format allows, so loading does not copy each pattern twice.
        struct PatternVisitor;

        impl serde::de::Visitor<'_> for PatternVisitor {
            type Value = RefPattern;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image pattern such as \"registry.my.com\" or \"quay.io/evil/*\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RefPattern, E> {
                RefPattern::parse_selector(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(PatternVisitor)
    }
}

/// Checks shared by references and patterns: not empty, printable ASCII, not a bare image ID.
fn precheck(s: &str, kind: InputKind) -> Result<(), ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty { kind });
    }
    // After this every byte is ASCII, so every byte index below is a char boundary.
    if let Some(at) = s.bytes().position(|b| !b.is_ascii_graphic()) {
        // Every byte before `at` is ASCII, so `at` starts a character.
        let ch = s
            .get(at..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or('\0');
        return Err(ReferenceError::InvalidCharacter {
            kind,
            input: s.to_owned(),
            ch,
        });
    }
    if s.len() == 64 && s.bytes().all(is_lower_hex) {
        return Err(ReferenceError::HexIdentifier {
            kind,
            input: s.to_owned(),
        });
    }
    Ok(())
}

/// Upstream's `splitDockerDomain`: the first segment is a registry, returned as written, if it
/// contains `.` or `:`, is `localhost`, or has uppercase letters (Hub namespaces cannot);
/// otherwise there is none (Docker Hub) and the whole input is the remainder.
fn split_docker_domain(s: &str) -> (Option<&str>, &str) {
    match s.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, s),
    }
}

/// `localhost` in any case: DNS names are case-insensitive.
fn is_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
}

/// Validates the registry and repository path and returns the canonical registry; `path` is
/// `None` for a registry-only pattern.
fn check_name<'d>(
    input: &str,
    kind: InputKind,
    domain: &'d str,
    path: Option<&str>,
) -> Result<Cow<'d, str>, ReferenceError> {
    if path.is_some_and(|p| p.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(ReferenceError::Uppercase {
            kind,
            input: input.to_owned(),
        });
    }
    let canonical = canonical_domain(domain).map_err(|fault| fault.error(kind, input, domain))?;
    match path {
        Some("") => Err(ReferenceError::MissingName {
            kind,
            input: input.to_owned(),
        }),
        Some(p) if !p.split('/').all(is_path_component) => Err(ReferenceError::InvalidPath {
            kind,
            input: input.to_owned(),
            path: p.to_owned(),
        }),
        _ => Ok(canonical),
    }
}

/// Enforces the 255-character limit on the normalised `domain/path`.
fn check_length(input: &str, kind: InputKind, len: usize) -> Result<(), ReferenceError> {
    if len > NAME_MAX {
        return Err(ReferenceError::NameTooLong {
            kind,
            input: input.to_owned(),
            len,
        });
    }
    Ok(())
}

/// `s[start..end]`, or "" out of bounds; the bounds come from `parse`, on ASCII boundaries,
/// so the fallback never happens, but a getter must not be able to panic on the hot path.
fn slice(s: &str, start: usize, end: usize) -> &str {
    s.get(start..end).unwrap_or_default()
}

/// Splits at the first `sep`; the part after it is `None` when `sep` is absent.
fn split_opt(s: &str, sep: char) -> (&str, Option<&str>) {
    match s.split_once(sep) {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

/// Splits `host[:port]`, minding the colons inside `[IPv6]`; `None` for a malformed bracket.
fn split_host_port(domain: &str) -> Option<(&str, Option<&str>)> {
    if domain.starts_with('[') {
        let end = domain.find(']')? + 1;
        let (host, rest) = domain.split_at_checked(end)?;
        if rest.is_empty() {
            Some((host, None))
        } else {
            Some((host, Some(rest.strip_prefix(':')?)))
        }
    } else {
        Some(split_opt(domain, ':'))
    }
}

/// Why a registry was refused; the caller names the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainFault {
    /// Not upstream's `host[:port]`, or a bracketed IPv6 literal that is no address.
    Grammar,
    /// Port 0 or above 65535.
    Port,
    /// Ends in a number without being a dotted-quad IPv4 address.
    Address,
}

impl DomainFault {
    /// The error for `domain`, written in `input`.
    fn error(self, kind: InputKind, input: &str, domain: &str) -> ReferenceError {
        let (input, domain) = (input.to_owned(), domain.to_owned());
        match self {
            DomainFault::Grammar => ReferenceError::InvalidDomain {
                kind,
                input,
                domain,
            },
            DomainFault::Port => ReferenceError::InvalidPort {
                kind,
                input,
                domain,
            },
            DomainFault::Address => ReferenceError::AmbiguousAddress {
                kind,
                input,
                domain,
            },
        }
    }
}

/// The one spelling of a registry `host[:port]`, so that registries the runtime reaches at the
/// same place compare equal as strings (upstream's grammar, `domainAndPort`, is checked too):
/// - the host in lower case (DNS is case-insensitive); IPv6 in RFC 5952 form, and an
///   IPv4-mapped IPv6 address as the IPv4 address it reaches (Go dials it as one);
/// - the port as a number (`0443` is 443; 0 and above 65535 are refused), and 443 dropped
///   (registries speak HTTPS), except after a single-label host other than `localhost`: there
///   `foo/x` would read back as a Docker Hub namespace, so `foo` keeps `:443` and the canonical
///   text parses to itself;
/// - every Docker Hub host ([`HUB_HOSTS`]) without another port is `docker.io`;
/// - a host ending in a number must be a plain dotted quad: resolvers read `010.0.0.1` or
///   `0x7f.1` as IPv4 in octal or hex, a spelling a deny list would not recognise.
///
/// Borrows when `domain` is already canonical, the common case.
fn canonical_domain(domain: &str) -> Result<Cow<'_, str>, DomainFault> {
    let (host, written_port) = split_host_port(domain).ok_or(DomainFault::Grammar)?;
    let port = written_port
        .map(parse_port)
        .transpose()?
        .filter(|&p| p != HTTPS_PORT);
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let grammar =
            !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let ip: Ipv6Addr = match inner.parse() {
            Ok(ip) if grammar => ip,
            _ => return Err(DomainFault::Grammar),
        };
        let mut out = match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{ip}]"),
        };
        push_port(&mut out, port);
        return Ok(Cow::Owned(out));
    }
    if !is_domain_name(host) {
        return Err(DomainFault::Grammar);
    }
    if ends_in_number(host) && !is_dotted_quad(host) {
        return Err(DomainFault::Address);
    }
    if port.is_none() && HUB_HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h)) {
        return Ok(Cow::Borrowed(DEFAULT_DOMAIN));
    }
    let single_label = !host.contains('.') && !is_localhost(host);
    let port = if single_label {
        port.or(Some(HTTPS_PORT))
    } else {
        port
    };
    let port_as_written = match (written_port, port) {
        (None, None) => true,
        // The written digits are this port's; without leading zeros they are its spelling.
        (Some(written), Some(_)) => !written.starts_with('0'),
        _ => false,
    };
    if port_as_written && !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(Cow::Borrowed(domain));
    }
    let mut out = host.to_ascii_lowercase();
    push_port(&mut out, port);
    Ok(Cow::Owned(out))
}

/// A port as the runtime reads it: decimal, leading zeros allowed, 1 to 65535.
fn parse_port(p: &str) -> Result<u16, DomainFault> {
    if !is_port(p) {
        return Err(DomainFault::Grammar);
    }
    match p.trim_start_matches('0').parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        // "0", "00", or too many digits for a port.
        _ => Err(DomainFault::Port),
    }
}

/// Appends `:port` when there is one.
fn push_port(out: &mut String, port: Option<u16>) {
    if let Some(port) = port {
        // Writing to a String cannot fail.
        let _ = write!(out, ":{port}");
    }
}

/// The URL Standard's "ends in a number": the last label is decimal digits, or `0x` and hex
/// digits. Resolvers (`inet_aton`) read such a host as an IPv4 address in some notation.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Four decimal numbers from 0 to 255 without leading zeros, joined by dots.
fn is_dotted_quad(host: &str) -> bool {
    let mut parts = 0;
    let decimal = host.split('.').all(|part| {
        parts += 1;
        part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'))
            && part.parse::<u8>().is_ok()
    });
    decimal && parts == 4
}

/// Dot-separated components, each `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`: one
/// pass over the bytes (it runs for every image of every review).
fn is_domain_name(host: &str) -> bool {
    // The byte before the current one; a component starts after a dot.
    let mut previous = b'.';
    for b in host.bytes() {
        let ok = match b {
            // A component is not empty and does not end in '-'.
            b'.' => previous != b'.' && previous != b'-',
            // A component does not start with '-'.
            b'-' => previous != b'.',
            b => b.is_ascii_alphanumeric(),
        };
        if !ok {
            return false;
        }
        previous = b;
    }
    previous != b'.' && previous != b'-'
}

/// One or more ASCII digits.
fn is_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let mut bytes = c.bytes().peekable();
    loop {
        let mut run = 0;
        while bytes.next_if(|&b| is_lower_alnum(b)).is_some() {
            run += 1;
        }
        if run == 0 {
            // Empty component, or a separator at the start, the end, or doubled badly.
            return false;
        }
        match bytes.next() {
            None => return true,
            Some(b'.') => {}
            Some(b'_') => {
                bytes.next_if_eq(&b'_');
            }
            Some(b'-') => while bytes.next_if_eq(&b'-').is_some() {},
            Some(_) => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= TAG_MAX
        && bytes.next().is_some_and(is_word)
        && bytes.all(|b| is_word(b) || b == b'.' || b == b'-')
}

/// `algorithm:encoded`; sha256/384/512 need exact lowercase hex, others 32+ of `[A-Za-z0-9=_-]`.
fn check_digest(input: &str, digest: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidDigest {
        input: input.to_owned(),
        digest: digest.to_owned(),
    };
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
    // [a-z0-9]+([+._-][a-z0-9]+)*: splitting on the separators leaves no empty piece.
    if !algorithm
        .split(['+', '.', '_', '-'])
        .all(|c| !c.is_empty() && c.bytes().all(is_lower_alnum))
    {
        return Err(invalid());
    }
    let hex = |len: usize| encoded.len() == len && encoded.bytes().all(is_lower_hex);
    let (ok, expected) = match algorithm {
        "sha256" => (hex(64), "exactly 64 lowercase hexadecimal characters"),
        "sha384" => (hex(96), "exactly 96 lowercase hexadecimal characters"),
        "sha512" => (hex(128), "exactly 128 lowercase hexadecimal characters"),
        _ => (
            encoded.len() >= 32
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-')),
            "at least 32 letters, digits, '=', '_' or '-'",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidDigestEncoding {
            input: input.to_owned(),
            digest: digest.to_owned(),
            algorithm: algorithm.to_owned(),
            expected,
        })
    }
}

/// `[a-z0-9]`.
fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-f0-9]`.
fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `\w` in Go's RE2: `[0-9A-Za-z_]`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as DeError, SeqDeserializer, StrDeserializer};
    use serde::de::IntoDeserializer;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn img(s: &str) -> ImageRef {
        match ImageRef::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> ReferenceError {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s:?} should not parse, got {r}"),
            Err(e) => e,
        }
    }

    fn pat(s: &str) -> RefPattern {
        match RefPattern::parse(s) {
            Ok(p) => p,
            Err(e) => panic!("pattern {s:?} should parse: {e}"),
        }
    }

    fn pat_err(s: &str) -> ReferenceError {
        match RefPattern::parse(s) {
            Ok(p) => panic!("pattern {s:?} should not parse, got {p}"),
            Err(e) => e,
        }
    }

    fn digest256() -> String {
        format!("sha256:{HEX64}")
    }

    /// Asserts domain, path, tag and digest of a parsed reference.
    fn parts(s: &str, domain: &str, path: &str, tag: Option<&str>, digest: Option<&str>) {
        let r = img(s);
        assert_eq!(r.domain(), domain, "domain of {s:?}");
        assert_eq!(r.path(), path, "path of {s:?}");
        assert_eq!(r.name(), format!("{domain}/{path}"), "name of {s:?}");
        assert_eq!(r.tag(), tag, "tag of {s:?}");
        assert_eq!(r.digest(), digest, "digest of {s:?}");
        assert_eq!(r.has_digest(), digest.is_some(), "has_digest of {s:?}");
    }

    fn matches(pattern: &str, image: &str) -> bool {
        pat(pattern).matches(&img(image))
    }

    // --- normalisation -------------------------------------------------------------------

    #[test]
    fn familiar_name_goes_to_docker_hub_library() {
        parts("nginx", "docker.io", "library/nginx", None, None);
        assert_eq!(img("nginx").to_string(), "docker.io/library/nginx");
    }

    #[test]
    fn familiar_name_with_tag() {
        parts(
            "prometheus:2.6.1",
            "docker.io",
            "library/prometheus",
            Some("2.6.1"),
            None,
        );
        assert_eq!(
            img("prometheus:2.6.1").to_string(),
            "docker.io/library/prometheus:2.6.1"
        );
    }

    #[test]
    fn hub_namespace_is_not_prefixed() {
        parts("acme/app:1.0", "docker.io", "acme/app", Some("1.0"), None);
        parts("a/b/c/d:tag", "docker.io", "a/b/c/d", Some("tag"), None);
    }

    #[test]
    fn explicit_docker_io_gets_library_for_single_component() {
        parts("docker.io/nginx", "docker.io", "library/nginx", None, None);
        parts(
            "docker.io/library/nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
        );
        parts("docker.io/acme/app", "docker.io", "acme/app", None, None);
    }

    #[test]
    fn legacy_index_domain_is_docker_io() {
        parts(
            "index.docker.io/nginx",
            "docker.io",
            "library/nginx",
            None,
            None,
        );
        parts(
            "index.docker.io/acme/app:v1",
            "docker.io",
            "acme/app",
            Some("v1"),
            None,
        );
    }

    #[test]
    fn hub_domains_are_recognised_in_any_case() {
        parts(
            "INDEX.DOCKER.IO/library/evil",
            "docker.io",
            "library/evil",
            None,
            None,
        );
        parts("Docker.io/nginx", "docker.io", "library/nginx", None, None);
    }

    #[test]
    fn hub_spellings_with_a_port_are_docker_io() {
        // The spellings: each is the official busybox, tag kept.
        for s in [
            "registry-1.docker.io:443/library/busybox:1.36",
            "registry-1.docker.io:0443/library/busybox:1.36",
            "REGISTRY-1.DOCKER.IO:443/library/busybox:1.36",
            "index.docker.io:443/library/busybox:1.36",
            "docker.io:443/busybox:1.36",
            "Registry.Hub.Docker.Com:00443/busybox:1.36",
            "busybox:1.36",
        ] {
            parts(s, "docker.io", "library/busybox", Some("1.36"), None);
            assert_eq!(
                img(s).to_string(),
                "docker.io/library/busybox:1.36",
                "{s:?}"
            );
        }
        // Another port is another registry, and gets no "library/".
        parts(
            "registry-1.docker.io:5000/busybox",
            "registry-1.docker.io:5000",
            "busybox",
            None,
            None,
        );
        parts(
            "DOCKER.IO:80/busybox",
            "docker.io:80",
            "busybox",
            None,
            None,
        );
    }

    #[test]
    fn registry_spellings_canonicalise() {
        parts(
            "Quay.IO:0443/evil/x:1",
            "quay.io",
            "evil/x",
            Some("1"),
            None,
        );
        parts("localhost:443/x", "localhost", "x", None, None);
        parts("LOCALHOST:5000/x", "localhost:5000", "x", None, None);
        parts("10.0.0.1:443/x", "10.0.0.1", "x", None, None);
        parts(
            "registry.my.com:05000/x",
            "registry.my.com:5000",
            "x",
            None,
            None,
        );
    }

    #[test]
    fn unpullable_registry_spellings_are_refused() {
        for (s, check) in [
            ("docker.io./library/busybox", "InvalidDomain"),
            ("registry-1.docker.io.:443/library/busybox", "InvalidDomain"),
            ("registry-1.docker.io:0/library/busybox", "InvalidPort"),
            ("docker.io:65536/library/busybox", "InvalidPort"),
            ("localhost:0/x", "InvalidPort"),
            ("127.0.0.01:5000/x", "AmbiguousAddress"),
            ("0x7f.0.0.1/x", "AmbiguousAddress"),
            ("[::1:5000]:/x", "InvalidDomain"),
            ("docker.io/library/BusyBox", "Uppercase"),
            ("REGISTRY-1.DOCKER.IO:443/Library/busybox", "Uppercase"),
        ] {
            let e = err(s);
            assert!(format!("{e:?}").starts_with(check), "{s:?}: {e:?}");
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid image reference {s:?}: ")),
                "{e}"
            );
        }
        assert_eq!(
            err("docker.io:0/x").to_string(),
            "invalid image reference \"docker.io:0/x\": registry \"docker.io:0\" has a port \
             outside 1 to 65535"
        );
    }

    #[test]
    fn the_length_limit_is_upstreams_on_the_name_as_written() {
        // Upstream measures "registry-1.docker.io:443/<path>" (no "library/" there): over 255
        // it refuses the reference, however short the canonical "docker.io/library/<path>".
        let host = "registry-1.docker.io:443/";
        let over = format!("{host}{}", "a".repeat(256 - host.len()));
        assert!(matches!(
            err(&over),
            ReferenceError::NameTooLong { len: 256, .. }
        ));
        let at = format!("{host}{}", "a".repeat(255 - host.len()));
        assert_eq!(
            img(&at).name().len(),
            "docker.io/library/".len() + 255 - host.len()
        );
        // "Foo/<path>" at 255 is refused: its canonical "foo:443/<path>" is longer, and the
        // canonical form must parse back to itself.
        let foo = format!("Foo/{}", "a".repeat(251));
        assert!(matches!(
            err(&foo),
            ReferenceError::NameTooLong { len: 259, .. }
        ));
    }

    #[test]
    fn localhost_is_a_domain() {
        parts("localhost/x", "localhost", "x", None, None);
        parts("localhost:5000/x", "localhost:5000", "x", None, None);
        parts(
            "localhost:5000/x:tag",
            "localhost:5000",
            "x",
            Some("tag"),
            None,
        );
    }

    #[test]
    fn bare_localhost_is_a_hub_image_like_upstream() {
        parts("localhost", "docker.io", "library/localhost", None, None);
        parts(
            "localhost:5000",
            "docker.io",
            "library/localhost",
            Some("5000"),
            None,
        );
    }

    #[test]
    fn dotted_domain_with_port() {
        parts(
            "registry.my.com:5000/app:1.0",
            "registry.my.com:5000",
            "app",
            Some("1.0"),
            None,
        );
        parts(
            "registry.my.com/team/app",
            "registry.my.com",
            "team/app",
            None,
            None,
        );
    }

    #[test]
    fn host_port_without_slash_is_name_and_tag() {
        parts(
            "test.com:5000",
            "docker.io",
            "library/test.com",
            Some("5000"),
            None,
        );
        parts("test.com", "docker.io", "library/test.com", None, None);
    }

    #[test]
    fn colon_in_first_segment_makes_a_domain() {
        parts("myregistry:5000/app", "myregistry:5000", "app", None, None);
    }

    #[test]
    fn uppercase_first_segment_is_a_domain_like_upstream() {
        // The host "foo", not the Hub namespace "foo": canonically "foo:443", which reads back
        // as a registry (see canonical_domain).
        parts("Foo/bar", "foo:443", "bar", None, None);
        parts("FOO:443/bar", "foo:443", "bar", None, None);
        assert_ne!(img("Foo/bar"), img("foo/bar"));
        parts("REGISTRY.MY.COM/app", "registry.my.com", "app", None, None);
    }

    #[test]
    fn ipv4_domain() {
        parts("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", Some("1"), None);
        parts("10.0.0.1/team/app", "10.0.0.1", "team/app", None, None);
    }

    #[test]
    fn ipv6_domain() {
        parts("[::1]:5000/x", "[::1]:5000", "x", None, None);
        parts("[::1]/x", "[::1]", "x", None, None);
        parts(
            "[2001:db8::1]:443/team/app:v1",
            "[2001:db8::1]",
            "team/app",
            Some("v1"),
            None,
        );
        parts("[2001:DB8::1]/x", "[2001:db8::1]", "x", None, None);
        parts(
            "[2001:db8:0:0::1]:05000/x",
            "[2001:db8::1]:5000",
            "x",
            None,
            None,
        );
        // Go dials an IPv4-mapped address as the IPv4 address.
        parts("[::ffff:a00:5]/x", "10.0.0.5", "x", None, None);
    }

    #[test]
    fn empty_brackets_are_not_a_domain() {
        // No '.' or ':' in "[]", so upstream does not take it as a domain; then it is a bad path.
        assert!(matches!(err("[]/x"), ReferenceError::InvalidPath { .. }));
    }

    #[test]
    fn invalid_ipv6_domains() {
        for s in [
            "[::1/x",
            "[]:5000/x",
            "[::g]/x",
            "[::1]x/y",
            "[::1]:/x",
            "[::1]:50a/x",
            "[fe80::1%eth0]/x",
        ] {
            assert!(
                matches!(err(s), ReferenceError::InvalidDomain { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
    }

    #[test]
    fn tag_and_digest_together() {
        let d = digest256();
        parts(
            &format!("nginx:latest@{d}"),
            "docker.io",
            "library/nginx",
            Some("latest"),
            Some(&d),
        );
        assert_eq!(
            img(&format!("nginx:latest@{d}")).to_string(),
            format!("docker.io/library/nginx:latest@{d}")
        );
    }

    #[test]
    fn digest_only() {
        let d = digest256();
        parts(
            &format!("nginx@{d}"),
            "docker.io",
            "library/nginx",
            None,
            Some(&d),
        );
        parts(
            &format!("localhost:5000/x@{d}"),
            "localhost:5000",
            "x",
            None,
            Some(&d),
        );
    }

    #[test]
    fn tag_is_case_sensitive_and_kept_as_written() {
        parts(
            "nginx:LATEST",
            "docker.io",
            "library/nginx",
            Some("LATEST"),
            None,
        );
        parts("nginx:_x", "docker.io", "library/nginx", Some("_x"), None);
    }

    #[test]
    fn path_separators() {
        for s in [
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a-b_c.d__e",
            "0",
            "a/b.c/d-e",
            "foo-bar-1.2",
        ] {
            assert_eq!(img(s).path().trim_start_matches("library/"), s, "{s:?}");
        }
    }

    #[test]
    fn invalid_path_separators() {
        for s in [
            "a___b", "a..b", "a._b", "a-_b", "a_-b", "-a", "a-", ".a", "a.", "_a", "a_", "a!b",
            "a/-b", "a/b_",
        ] {
            assert!(
                matches!(err(s), ReferenceError::InvalidPath { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "nginx",
            "nginx:1.13.8",
            "localhost:5000/x:tag",
            "[::1]:5000/a/b:c",
            "Foo/bar",
            "registry.my.com/a/b/c",
        ] {
            let r = img(s);
            assert_eq!(img(&r.to_string()), r, "{s:?}");
        }
        let with_digest = img(&format!("quay.io/a/b:v@{}", digest256()));
        assert_eq!(img(&with_digest.to_string()), with_digest);
    }

    #[test]
    fn from_str_is_parse() {
        let r: ImageRef = "nginx:1".parse().unwrap();
        assert_eq!(r, img("nginx:1"));
        assert!("Nginx".parse::<ImageRef>().is_err());
    }

    // --- is_latest / has_digest / with_name ------------------------------------------------

    #[test]
    fn is_latest_rules() {
        let d = digest256();
        for s in [
            "nginx",
            "nginx:latest",
            "docker.io/library/nginx",
            "localhost:5000/x",
        ] {
            assert!(img(s).is_latest(), "{s:?}");
        }
        for s in [
            format!("nginx@{d}"),
            format!("nginx:latest@{d}"),
            "nginx:LATEST".to_owned(),
            "nginx:1.13.8".to_owned(),
            "nginx:latest1".to_owned(),
        ] {
            assert!(!img(&s).is_latest(), "{s:?}");
        }
    }

    #[test]
    fn has_digest() {
        assert!(img(&format!("nginx@{}", digest256())).has_digest());
        assert!(!img("nginx:1").has_digest());
    }

    #[test]
    fn with_name_keeps_tag_and_digest() {
        let d = digest256();
        let r = img(&format!("nginx:1.0@{d}"));
        assert_eq!(
            r.with_name("mirror.local/library/nginx"),
            format!("mirror.local/library/nginx:1.0@{d}")
        );
        assert_eq!(
            img("nginx").with_name("mirror.local/nginx"),
            "mirror.local/nginx"
        );
        assert_eq!(img("nginx:1").with_name("m.io/n"), "m.io/n:1");
        assert_eq!(
            img(&format!("nginx@{d}")).with_name("m.io/n"),
            format!("m.io/n@{d}")
        );
    }

    // --- errors -----------------------------------------------------------------------------

    #[test]
    fn uppercase_path_is_rejected_with_upstream_message() {
        let e = err("Nginx");
        assert_eq!(
            e,
            ReferenceError::Uppercase {
                kind: InputKind::Reference,
                input: "Nginx".to_owned()
            }
        );
        assert_eq!(
            e.to_string(),
            "invalid image reference \"Nginx\": repository name must be lowercase"
        );
        for s in [
            "docker.io/Library/nginx",
            "localhost:5000/Foo",
            "foo/Bar",
            "NGINX:latest",
            "registry.my.com/App",
        ] {
            assert!(
                matches!(err(s), ReferenceError::Uppercase { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
    }

    #[test]
    fn empty_is_rejected() {
        let e = err("");
        assert_eq!(
            e,
            ReferenceError::Empty {
                kind: InputKind::Reference
            }
        );
        assert_eq!(
            e.to_string(),
            "invalid image reference \"\": must not be empty"
        );
    }

    #[test]
    fn whitespace_and_non_ascii_are_rejected() {
        for (s, ch) in [
            (" nginx", ' '),
            ("nginx ", ' '),
            ("ngi nx", ' '),
            ("nginx\n", '\n'),
            ("nginx\t:1", '\t'),
            ("nginx:é", 'é'),
            ("nginx\0", '\0'),
        ] {
            assert_eq!(
                err(s),
                ReferenceError::InvalidCharacter {
                    kind: InputKind::Reference,
                    input: s.to_owned(),
                    ch
                },
                "{s:?}"
            );
        }
        assert!(err("nginx ").to_string().contains("\"nginx \""));
    }

    #[test]
    fn separators_at_the_edges_are_rejected() {
        for s in [
            "/nginx",
            "nginx/",
            "a//b",
            "registry.my.com//a",
            "registry.my.com/a/",
        ] {
            assert!(
                matches!(err(s), ReferenceError::InvalidPath { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
    }

    #[test]
    fn missing_name_is_rejected() {
        for s in [
            ":tag",
            "@sha256:abc",
            "localhost/",
            "registry.my.com/",
            "docker.io/",
            ":",
            "@",
        ] {
            assert!(
                matches!(err(s), ReferenceError::MissingName { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
        let d = digest256();
        assert!(matches!(
            err(&format!("@{d}")),
            ReferenceError::MissingName { .. }
        ));
    }

    #[test]
    fn trailing_colon_or_at_is_rejected() {
        assert!(matches!(err("nginx:"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(
            err("localhost:5000/x:"),
            ReferenceError::InvalidTag { .. }
        ));
        assert!(matches!(
            err("nginx@"),
            ReferenceError::InvalidDigest { .. }
        ));
        assert!(matches!(
            err("nginx:1@"),
            ReferenceError::InvalidDigest { .. }
        ));
    }

    #[test]
    fn tag_length_boundary() {
        let ok = format!("nginx:{}", "a".repeat(128));
        assert_eq!(img(&ok).tag().map(str::len), Some(128));
        let long = format!("nginx:{}", "a".repeat(129));
        assert!(matches!(err(&long), ReferenceError::InvalidTag { .. }));
    }

    #[test]
    fn invalid_tags() {
        for s in [
            "nginx:.x",
            "nginx:-x",
            "nginx:a+b",
            "nginx:1:2",
            "localhost:5000/x:y:z",
            "a.io/x:a/b",
        ] {
            assert!(
                matches!(err(s), ReferenceError::InvalidTag { .. }),
                "{s:?}: {}",
                err(s)
            );
        }
    }

    #[test]
    fn tag_containing_a_slash_makes_a_bad_domain() {
        // Upstream splits the domain at the first '/', so "nginx:1.0" is taken as host:port.
        assert!(matches!(
            err("nginx:1.0/x"),
            ReferenceError::InvalidDomain { .. }
        ));
        assert!(matches!(
            err("nginx:a/b"),
            ReferenceError::InvalidDomain { .. }
        ));
    }

    #[test]
    fn sha256_digest_must_be_64_lowercase_hex() {
        let short = format!("nginx@sha256:{}", &HEX64[..63]);
        let e = err(&short);
        assert!(
            matches!(e, ReferenceError::InvalidDigestEncoding { expected, .. } if expected.contains("64"))
        );
        let long = format!("nginx@sha256:{HEX64}0");
        assert!(matches!(
            err(&long),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        let upper = format!("nginx@sha256:{}", HEX64.to_uppercase());
        assert!(matches!(
            err(&upper),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        let not_hex = format!("nginx@sha256:{}g", &HEX64[..63]);
        assert!(matches!(
            err(&not_hex),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        assert!(matches!(
            err("nginx@sha256:abc"),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        assert!(matches!(
            err("nginx@sha256:"),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
    }

    #[test]
    fn sha384_and_sha512_lengths() {
        let h96 = "a".repeat(96);
        let h128 = "b".repeat(128);
        parts(
            &format!("x@sha384:{h96}"),
            "docker.io",
            "library/x",
            None,
            Some(&format!("sha384:{h96}")),
        );
        parts(
            &format!("x@sha512:{h128}"),
            "docker.io",
            "library/x",
            None,
            Some(&format!("sha512:{h128}")),
        );
        assert!(matches!(
            err(&format!("x@sha384:{HEX64}")),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        assert!(matches!(
            err(&format!("x@sha512:{h96}")),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
    }

    #[test]
    fn other_digest_algorithms() {
        let enc = "A".repeat(16) + "b=_-" + &"9".repeat(12);
        assert_eq!(enc.len(), 32);
        parts(
            &format!("x@blake3:{enc}"),
            "docker.io",
            "library/x",
            None,
            Some(&format!("blake3:{enc}")),
        );
        parts(
            &format!("x@sha256+b64u:{enc}"),
            "docker.io",
            "library/x",
            None,
            Some(&format!("sha256+b64u:{enc}")),
        );
        assert!(matches!(
            err(&format!("x@blake3:{}", &enc[..31])),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
        assert!(matches!(
            err(&format!("x@blake3:{enc}.")),
            ReferenceError::InvalidDigestEncoding { .. }
        ));
    }

    #[test]
    fn malformed_digests() {
        for s in [
            format!("x@SHA256:{HEX64}"),
            format!("x@sha256-:{HEX64}"),
            format!("x@-sha256:{HEX64}"),
            format!("x@sha__256:{HEX64}"),
            format!("x@:{HEX64}"),
            format!("x@{HEX64}"),
            format!("x@sha256:{HEX64}@sha256:{HEX64}"),
        ] {
            let e = err(&s);
            assert!(
                matches!(
                    e,
                    ReferenceError::InvalidDigest { .. }
                        | ReferenceError::InvalidDigestEncoding { .. }
                ),
                "{s:?}: {e}"
            );
        }
    }

    #[test]
    fn bare_image_id_is_rejected() {
        assert!(matches!(err(HEX64), ReferenceError::HexIdentifier { .. }));
        // Not exactly an ID: a name like any other.
        parts(
            &format!("{HEX64}:1"),
            "docker.io",
            &format!("library/{HEX64}"),
            Some("1"),
            None,
        );
        parts(
            &HEX64[..63],
            "docker.io",
            &format!("library/{}", &HEX64[..63]),
            None,
            None,
        );
    }

    #[test]
    fn invalid_domains() {
        for s in [
            "-bad.com/x",
            "bad-.com/x",
            "a..b/x",
            "a_b.com/x",
            "host:port/x",
            "host:/x",
            ".com/x",
            "a.b./x",
        ] {
            let e = err(s);
            assert!(
                matches!(e, ReferenceError::InvalidDomain { .. }),
                "{s:?}: {e}"
            );
        }
        assert_eq!(
            err("a_b.com/x").to_string(),
            "invalid image reference \"a_b.com/x\": registry \"a_b.com\" is not a host name, IPv4 address or \
             [IPv6] address with an optional numeric port"
        );
    }

    #[test]
    fn name_length_boundary() {
        // "registry.my.com/" is 16 characters; the normalised name may be 255.
        let ok = format!("registry.my.com/{}", "a".repeat(255 - 16));
        assert_eq!(img(&ok).name().len(), 255);
        let long = format!("registry.my.com/{}", "a".repeat(256 - 16));
        assert_eq!(
            err(&long),
            ReferenceError::NameTooLong {
                kind: InputKind::Reference,
                input: long.clone(),
                len: 256
            }
        );
        assert!(err(&long).to_string().contains("name too long"));
        // The length counts the normalised name, "docker.io/library/" included.
        let familiar_ok = "a".repeat(255 - "docker.io/library/".len());
        assert_eq!(img(&familiar_ok).name().len(), 255);
        let familiar_long = "a".repeat(256 - "docker.io/library/".len());
        assert!(matches!(
            err(&familiar_long),
            ReferenceError::NameTooLong { len: 256, .. }
        ));
        // Tags and digests do not count.
        let tagged = format!("{ok}:{}@{}", "t".repeat(128), digest256());
        assert_eq!(img(&tagged).name().len(), 255);
    }

    #[test]
    fn error_messages_name_the_input() {
        for s in [
            "Nginx",
            "nginx:",
            "nginx@sha256:abc",
            "a//b",
            "-x.io/a",
            ":tag",
            HEX64,
        ] {
            let message = err(s).to_string();
            assert!(
                message.starts_with(&format!("invalid image reference {s:?}: ")),
                "{message}"
            );
        }
    }

    // --- patterns: parsing ------------------------------------------------------------------

    #[test]
    fn pattern_normalisation() {
        for (input, normalised) in [
            ("registry.my.com", "registry.my.com"),
            ("registry.my.com:5000", "registry.my.com:5000"),
            ("registry.my.com/*", "registry.my.com/*"),
            ("docker.io", "docker.io"),
            ("docker.io/library", "docker.io/library"),
            ("docker.io/library/busybox", "docker.io/library/busybox"),
            ("docker.io/busybox/*", "docker.io/busybox/*"),
            ("index.docker.io", "docker.io"),
            ("index.docker.io/x/y", "docker.io/x/y"),
            ("registry-1.docker.io/x/y", "docker.io/x/y"),
            ("ghcr.io/acme", "ghcr.io/acme"),
            ("quay.io/evil/*", "quay.io/evil/*"),
            ("busybox", "docker.io/library/busybox"),
            ("library/busybox", "docker.io/library/busybox"),
            ("acme/app", "docker.io/acme/app"),
            ("acme/*", "docker.io/acme/*"),
            ("busybox/*", "docker.io/busybox/*"),
            ("localhost", "localhost"),
            ("localhost:5000", "localhost:5000"),
            ("localhost/x", "localhost/x"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("[::1]:5000", "[::1]:5000"),
            ("[::1]:5000/team/*", "[::1]:5000/team/*"),
            ("kind-registry:5000/*", "kind-registry:5000/*"),
            // Registries are canonical, like an image's.
            ("registry.my.com:443", "registry.my.com"),
            ("registry.my.com:05000/team", "registry.my.com:5000/team"),
            ("quay.io:0443/evil/*", "quay.io/evil/*"),
            (
                "registry-1.docker.io:0443/library/busybox",
                "docker.io/library/busybox",
            ),
            ("index.docker.io:443", "docker.io"),
            ("registry.hub.docker.com/library/*", "docker.io/library/*"),
            ("localhost:443", "localhost"),
            ("[2001:db8:0::1]:443/x", "[2001:db8::1]/x"),
            ("[::ffff:a00:5]:5000", "10.0.0.5:5000"),
            ("kind-registry:443/*", "kind-registry:443/*"),
            ("docker.io/*", "docker.io/*"),
        ] {
            let p = pat(input);
            assert_eq!(p.as_str(), normalised, "{input:?}");
            assert_eq!(p.to_string(), normalised, "{input:?}");
            // Normalisation is idempotent except for the Hub shorthands.
            assert_eq!(pat(p.as_str()).as_str(), normalised, "{input:?} twice");
        }
    }

    #[test]
    fn pattern_errors() {
        let d = digest256();
        type Check = fn(&ReferenceError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (String::new(), |e| {
                matches!(
                    e,
                    ReferenceError::Empty {
                        kind: InputKind::Pattern
                    }
                )
            }),
            ("busybox:1.36".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("busybox:1".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("kind-registry:5000".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("registry.my.com:latest".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("busybox:latest/*".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("[]".into(), |e| {
                matches!(e, ReferenceError::InvalidDomain { .. })
            }),
            ("docker.io/library/busybox:1.36".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("acme/app:1".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            ("quay.io/evil:1/*".into(), |e| {
                matches!(e, ReferenceError::PatternHasTag { .. })
            }),
            (format!("busybox@{d}"), |e| {
                matches!(e, ReferenceError::PatternHasDigest { .. })
            }),
            ("Registry.my.com".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("REGISTRY-1.DOCKER.IO:443/library/busybox".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("registry.my.com/App".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("Acme/*".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("registry.my.com:0".into(), |e| {
                matches!(e, ReferenceError::InvalidPort { .. })
            }),
            ("registry.my.com:65536/*".into(), |e| {
                matches!(e, ReferenceError::InvalidPort { .. })
            }),
            ("010.0.0.1:5000".into(), |e| {
                matches!(e, ReferenceError::AmbiguousAddress { .. })
            }),
            ("docker.io./library".into(), |e| {
                matches!(e, ReferenceError::InvalidDomain { .. })
            }),
            ("ghcr.io/Acme".into(), |e| {
                matches!(e, ReferenceError::Uppercase { .. })
            }),
            ("*".into(), |e| {
                matches!(e, ReferenceError::PatternWildcard { .. })
            }),
            ("quay.io/*/x".into(), |e| {
                matches!(e, ReferenceError::PatternWildcard { .. })
            }),
            ("quay.io/evil*".into(), |e| {
                matches!(e, ReferenceError::PatternWildcard { .. })
            }),
            ("quay.io/evil/**".into(), |e| {
                matches!(e, ReferenceError::PatternWildcard { .. })
            }),
            ("*.quay.io".into(), |e| {
                matches!(e, ReferenceError::PatternWildcard { .. })
            }),
            ("/*".into(), |e| {
                matches!(e, ReferenceError::MissingName { .. })
            }),
            ("quay.io/".into(), |e| {
                matches!(e, ReferenceError::MissingName { .. })
            }),
            ("quay.io//x".into(), |e| {
                matches!(e, ReferenceError::InvalidPath { .. })
            }),
            ("/quay.io".into(), |e| {
                matches!(e, ReferenceError::InvalidPath { .. })
            }),
            ("quay.io/evil/".into(), |e| {
                matches!(e, ReferenceError::InvalidPath { .. })
            }),
            ("-quay.io".into(), |e| {
                matches!(e, ReferenceError::InvalidDomain { .. })
            }),
            ("[::1".into(), |e| {
                matches!(e, ReferenceError::InvalidDomain { .. })
            }),
            (" quay.io".into(), |e| {
                matches!(e, ReferenceError::InvalidCharacter { .. })
            }),
            (HEX64.into(), |e| {
                matches!(e, ReferenceError::HexIdentifier { .. })
            }),
            (format!("r.io/{}", "a".repeat(251)), |e| {
                matches!(e, ReferenceError::NameTooLong { len: 256, .. })
            }),
        ];
        for (input, check) in cases {
            let e = pat_err(&input);
            assert!(check(&e), "{input:?}: {e:?}");
            if !input.is_empty() {
                assert!(
                    e.to_string()
                        .starts_with(&format!("invalid image pattern {input:?}: ")),
                    "{e}"
                );
            }
        }
        assert_eq!(format!("r.io/{}", "a".repeat(250)).len(), 255);
        assert_eq!(
            pat(&format!("r.io/{}", "a".repeat(250))).as_str().len(),
            255
        );
    }

    #[test]
    fn pattern_from_str_and_deserialize() {
        let p: RefPattern = "quay.io/evil/*".parse().unwrap();
        assert_eq!(p, pat("quay.io/evil/*"));

        let de: StrDeserializer<'_, DeError> = "ghcr.io/acme".into_deserializer();
        assert_eq!(
            RefPattern::deserialize(de).unwrap().as_str(),
            "ghcr.io/acme"
        );

        let de: StrDeserializer<'_, DeError> = "busybox:1.36".into_deserializer();
        let message = RefPattern::deserialize(de).unwrap_err().to_string();
        assert!(message.contains("\"busybox:1.36\""), "{message}");

        let list = vec!["registry.my.com", "quay.io/evil/*", "busybox"];
        let de: SeqDeserializer<_, DeError> = SeqDeserializer::new(list.into_iter());
        let patterns = Vec::<RefPattern>::deserialize(de).unwrap();
        let strs: Vec<&str> = patterns.iter().map(RefPattern::as_str).collect();
        assert_eq!(
            strs,
            [
                "registry.my.com",
                "quay.io/evil/*",
                "docker.io/library/busybox"
            ]
        );

        let bad = vec!["registry.my.com", "Quay.io"];
        let de: SeqDeserializer<_, DeError> = SeqDeserializer::new(bad.into_iter());
        let message = Vec::<RefPattern>::deserialize(de).unwrap_err().to_string();
        assert!(message.contains("\"Quay.io\""), "{message}");
    }

    #[test]
    fn pattern_deserialize_rejects_non_strings() {
        let de: serde::de::value::U32Deserializer<DeError> = 5u32.into_deserializer();
        let message = RefPattern::deserialize(de).unwrap_err().to_string();
        assert!(message.contains("image pattern"), "{message}");
    }

    // --- patterns: matching -----------------------------------------------------------------

    #[test]
    fn registry_pattern_matches_whole_host_segment() {
        assert!(matches("registry.my.com", "registry.my.com/team/app:1.0"));
        assert!(matches(
            "registry.my.com",
            "registry.my.com/prometheus:2.6.1"
        ));
        assert!(matches(
            "registry.my.com",
            &format!("registry.my.com/a@{}", digest256())
        ));
        assert!(!matches(
            "registry.my.com",
            "registry.my.com.evil.io/app:1.0"
        ));
        assert!(!matches("registry.my.com", "registry.my.com:5000/app:1.0"));
        assert!(!matches("registry.my.com", "evil.io/registry.my.com/app"));
        assert!(!matches("registry.my.com", "my.com/app"));
        assert!(!matches("registry.my.com", "evilregistry.my.com/app"));
        assert!(!matches("registry.my.com", "registry.my.co/app"));
        // "registry.my.com" without a slash is a Hub image, not that registry.
        assert!(!matches("registry.my.com", "registry.my.com"));
        assert!(!matches("registry.my.com", "registry.my.com:5000"));
    }

    #[test]
    fn registry_pattern_with_port() {
        assert!(matches(
            "registry.my.com:5000",
            "registry.my.com:5000/app:1.0"
        ));
        assert!(!matches("registry.my.com:5000", "registry.my.com/app:1.0"));
        assert!(!matches(
            "registry.my.com:5000",
            "registry.my.com:50000/app"
        ));
        assert!(!matches("registry.my.com:5000", "registry.my.com:500/app"));
        // Ports compare as numbers: "05000" is the port 5000 to the runtime.
        assert!(matches("registry.my.com:5000", "registry.my.com:05000/app"));
    }

    #[test]
    fn registry_host_compares_case_insensitively() {
        assert!(matches("registry.my.com", "REGISTRY.MY.COM/app"));
        assert!(matches("quay.io/evil/*", "Quay.IO/evil/x"));
        assert!(matches(
            "docker.io/library/evil",
            "INDEX.DOCKER.IO/library/evil"
        ));
        // The path stays case-sensitive, but uppercase paths never parse anyway.
        assert!(ImageRef::parse("quay.io/Evil/x").is_err());
    }

    #[test]
    fn org_pattern_matches_whole_segments() {
        assert!(matches("ghcr.io/acme", "ghcr.io/acme/app"));
        assert!(matches("ghcr.io/acme", "ghcr.io/acme/team/app:1"));
        assert!(matches("ghcr.io/acme", "ghcr.io/acme"));
        assert!(!matches("ghcr.io/acme", "ghcr.io/acme-evil/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io/acmeevil/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io/acm/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io/evil/acme/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io.evil/acme/app"));
        assert!(!matches("ghcr.io/acme", "acme/app"));
    }

    #[test]
    fn shorter_image_name_does_not_match_longer_pattern() {
        assert!(!matches("ghcr.io/acme/app", "ghcr.io/acme"));
        assert!(!matches("ghcr.io/acme/app", "ghcr.io/acme/ap"));
        assert!(!matches(
            "docker.io/library/busybox",
            "docker.io/library/busy"
        ));
    }

    #[test]
    fn repository_pattern_matches_itself_and_below() {
        let d = digest256();
        for image in [
            "busybox".to_owned(),
            "busybox:1.36".to_owned(),
            format!("docker.io/library/busybox@{d}"),
            "index.docker.io/library/busybox:latest".to_owned(),
            "docker.io/busybox".to_owned(),
            "docker.io/library/busybox/extra".to_owned(),
        ] {
            assert!(matches("docker.io/library/busybox", &image), "{image:?}");
            assert!(matches("busybox", &image), "{image:?}");
            assert!(matches("library/busybox", &image), "{image:?}");
        }
        for image in [
            "busybox2",
            "docker.io/library/busybox2",
            "busybox-evil",
            "acme/busybox",
            "ghcr.io/library/busybox",
        ] {
            assert!(!matches("docker.io/library/busybox", image), "{image:?}");
        }
    }

    #[test]
    fn library_pattern_is_kept() {
        assert!(matches("docker.io/library", "nginx"));
        assert!(matches("docker.io/library", "docker.io/library/nginx:1"));
        assert!(!matches("docker.io/library", "acme/app"));
        assert!(!matches("docker.io/library", "docker.io/libraryx/app"));
    }

    #[test]
    fn explicit_hub_domain_single_segment_patterns_must_say_what_they_mean() {
        // "docker.io/busybox" could mean the official image or the busybox account: refused,
        // with both spellings suggested.
        let err = RefPattern::parse_selector("docker.io/busybox").expect_err("ambiguous");
        assert!(matches!(err, ReferenceError::AmbiguousHubPattern { .. }));
        assert!(err.to_string().contains("docker.io/library/busybox"));
        assert!(err.to_string().contains("docker.io/busybox/*"));
        assert!(RefPattern::parse_selector("index.docker.io/busybox").is_err());
        assert!(RefPattern::parse_selector("registry-1.docker.io:443/busybox").is_err());
        assert!(RefPattern::parse_selector("docker.io/library").is_ok());
        assert!(RefPattern::parse_selector("docker.io/busybox/*").is_ok());
        // As a plain prefix (a rewrite target) it is an account, and fine.
        assert!(RefPattern::parse("docker.io/mirror").is_ok());
        assert!(matches("docker.io/busybox/*", "busybox/tool"));
        assert!(matches("docker.io/library/busybox", "busybox"));
        assert!(matches("docker.io/library", "busybox"));
    }

    #[test]
    fn subtree_pattern_matches_strictly_below() {
        assert!(matches("quay.io/evil/*", "quay.io/evil/x"));
        assert!(matches("quay.io/evil/*", "quay.io/evil/a/b:1"));
        assert!(!matches("quay.io/evil/*", "quay.io/evil"));
        assert!(!matches("quay.io/evil/*", "quay.io/evilcorp/x"));
        assert!(!matches("quay.io/evil/*", "quay.io/evil-x/y"));
        assert!(!matches("quay.io/evil/*", "quay.io/x/evil/y"));
        // No port is 443: the same registry, so a deny entry catches the explicit port.
        assert!(matches("quay.io/evil/*", "quay.io:443/evil/x"));
        assert!(matches("registry.my.com:443", "registry.my.com/app:1"));
        assert!(!matches("registry.my.com", "registry.my.com:5000/app:1"));
        // Docker Hub's registry host is Docker Hub.
        assert!(matches(
            "docker.io/library/busybox",
            "registry-1.docker.io/library/busybox:1"
        ));
        assert!(matches(
            "docker.io/library/busybox",
            "registry-1.docker.io/busybox:1"
        ));
    }

    #[test]
    fn registry_subtree_pattern() {
        assert!(matches("registry.my.com/*", "registry.my.com/app"));
        assert!(matches("registry.my.com/*", "registry.my.com/a/b"));
        assert!(!matches("registry.my.com/*", "registry.my.com:5000/app"));
        assert!(!matches("registry.my.com/*", "registry.my.com.evil.io/app"));
        assert!(matches("docker.io/*", "nginx"));
        assert!(matches("docker.io/*", "acme/app"));
        assert!(!matches("docker.io/*", "quay.io/acme/app"));
    }

    #[test]
    fn hub_shorthand_patterns() {
        assert!(matches("acme/*", "acme/app"));
        assert!(matches("acme/*", "docker.io/acme/team/app"));
        assert!(!matches("acme/*", "acme"));
        assert!(!matches("acme/*", "acmex/app"));
        assert!(!matches("acme/*", "ghcr.io/acme/app"));
        assert!(matches("acme/app", "acme/app:1"));
        assert!(!matches("acme/app", "acme/application"));
    }

    #[test]
    fn localhost_patterns() {
        assert!(matches("localhost", "localhost/x"));
        assert!(!matches("localhost", "localhost:5000/x"));
        assert!(matches("localhost:5000", "localhost:5000/x:tag"));
        assert!(!matches("localhost:5000", "localhost/x"));
        assert!(!matches("localhost", "localhost.evil.io/x"));
        // A bare "localhost" image is the Hub's library/localhost.
        assert!(!matches("localhost", "localhost"));
    }

    #[test]
    fn ipv6_patterns() {
        assert!(matches("[::1]:5000", "[::1]:5000/x"));
        assert!(!matches("[::1]:5000", "[::1]/x"));
        assert!(!matches("[::1]:5000", "[::1]:5001/x"));
        assert!(matches("[2001:db8::1]", "[2001:DB8::1]/x"));
        assert!(matches("[::1]:5000/team/*", "[::1]:5000/team/app"));
        assert!(!matches("[::1]:5000/team/*", "[::1]:5000/teamx/app"));
    }

    #[test]
    fn uppercase_single_label_domain_matches_its_lowercase_pattern() {
        assert!(matches("foo:5000/*", "FOO:5000/x"));
        assert!(!matches("foo:5000/*", "foo/x"));
    }

    #[test]
    fn canonical_domain_rules() {
        let canon = |d: &str| canonical_domain(d).map(Cow::into_owned);
        for (written, canonical) in [
            ("quay.io", "quay.io"),
            ("Quay.IO", "quay.io"),
            ("quay.io:443", "quay.io"),
            ("quay.io:0443", "quay.io"),
            ("quay.io:000443", "quay.io"),
            ("a.io:0080", "a.io:80"),
            ("a.io:80", "a.io:80"),
            ("a.io:65535", "a.io:65535"),
            ("a.io:1", "a.io:1"),
            ("docker.io", "docker.io"),
            ("DOCKER.IO:443", "docker.io"),
            ("index.docker.io:0443", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("Registry-1.Docker.IO:443", "docker.io"),
            ("registry.hub.docker.com", "docker.io"),
            ("localhost", "localhost"),
            ("LOCALHOST:443", "localhost"),
            ("localhost:5000", "localhost:5000"),
            ("10.0.0.1:443", "10.0.0.1"),
            ("10.0.0.1:5000", "10.0.0.1:5000"),
            ("0.0.0.0", "0.0.0.0"),
            ("[::1]", "[::1]"),
            ("[::1]:443", "[::1]"),
            ("[0:0:0:0:0:0:0:1]:0443", "[::1]"),
            ("[2001:DB8::1]:5000", "[2001:db8::1]:5000"),
            ("[::ffff:a00:5]:5000", "10.0.0.5:5000"),
            // A single label without a port would read as a Hub namespace: it keeps ":443".
            ("foo:443", "foo:443"),
            ("Foo", "foo:443"),
            ("FOO:0443", "foo:443"),
            ("kind-registry:5000", "kind-registry:5000"),
        ] {
            assert_eq!(canon(written).as_deref(), Ok(canonical), "{written:?}");
            assert_eq!(
                canon(canonical).as_deref(),
                Ok(canonical),
                "{canonical:?} is a fixpoint"
            );
        }
        // Other ports are other registries.
        assert_ne!(canon("docker.io:5000"), canon("docker.io"));
        assert_eq!(
            canon("registry-1.docker.io:5000").as_deref(),
            Ok("registry-1.docker.io:5000")
        );
        assert_eq!(canon("docker.io:80").as_deref(), Ok("docker.io:80"));
        // Already canonical: no allocation.
        assert!(matches!(
            canonical_domain("quay.io:5000"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            canonical_domain("registry-1.docker.io"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn canonical_domain_refusals() {
        for (domain, fault) in [
            ("a.io:0", DomainFault::Port),
            ("a.io:00000", DomainFault::Port),
            ("a.io:65536", DomainFault::Port),
            ("a.io:99999999999999999999", DomainFault::Port),
            ("a.io:", DomainFault::Grammar),
            ("a.io:+443", DomainFault::Grammar),
            ("docker.io.", DomainFault::Grammar),
            ("docker.io.:443", DomainFault::Grammar),
            ("[::1", DomainFault::Grammar),
            ("[]", DomainFault::Grammar),
            ("[:::]", DomainFault::Grammar),
            ("[1:2:3:4:5:6:7:8:9]", DomainFault::Grammar),
            ("[::ffff:1.2.3.4]", DomainFault::Grammar),
            ("127.0.0.01", DomainFault::Address),
            ("010.0.0.1:5000", DomainFault::Address),
            ("10.0.1", DomainFault::Address),
            ("10.0.0.256", DomainFault::Address),
            ("1.2.3.4.5", DomainFault::Address),
            ("0x7f.0.0.1", DomainFault::Address),
            ("127.0.0.0x1", DomainFault::Address),
            ("2130706433:5000", DomainFault::Address),
            ("registry.0x", DomainFault::Address),
        ] {
            assert_eq!(canonical_domain(domain), Err(fault), "{domain:?}");
        }
        // Numbers inside a name are fine; only the last label decides.
        assert!(canonical_domain("10.0.0.1.nip.io").is_ok());
        assert!(canonical_domain("0x7f.example.com").is_ok());
        assert!(canonical_domain("registry.0xz").is_ok());
    }

    #[test]
    fn deny_patterns_see_every_spelling_of_their_registry() {
        for image in [
            "registry-1.docker.io:443/library/busybox:1.36",
            "registry-1.docker.io:0443/library/busybox:1.36",
            "REGISTRY-1.DOCKER.IO:443/library/busybox:1.36",
            "index.docker.io:443/library/busybox:1.36",
            "registry.hub.docker.com/busybox",
        ] {
            assert!(matches("docker.io/library/busybox", image), "{image:?}");
            assert!(matches("busybox", image), "{image:?}");
            assert!(matches("docker.io/*", image), "{image:?}");
        }
        assert!(!matches(
            "docker.io/library/busybox",
            "registry-1.docker.io:5000/library/busybox"
        ));
        assert!(matches("[2001:db8::1]/x/*", "[2001:DB8:0::1]:443/x/y"));
        assert!(matches("localhost", "LOCALHOST:443/x"));
        assert!(matches("10.0.0.5:5000", "[::ffff:a00:5]:5000/x"));
        assert!(!matches("10.0.0.5:5000", "[::ffff:a00:5]/x"));
    }

    /// The property the policies rely on: every spelling of one image is one canonical
    /// reference, matched by a pattern however the pattern spells the registry; the same
    /// spelling on another port is another registry.
    /// Exemptions: a trailing `*` completes the last segment and nothing deeper; the registry
    /// is canonical, so other spellings of it are the same place and siblings stay distinct.
    #[test]
    fn exemptions() {
        let ex = |s: &str| match RefPattern::parse_exemption(s) {
            Ok(p) => p,
            Err(e) => panic!("exemption {s:?} should parse: {e}"),
        };
        let p = ex("registry.k8s.io/pause*");
        assert_eq!(p.as_str(), "registry.k8s.io/pause*");
        for yes in [
            "registry.k8s.io/pause",
            "registry.k8s.io/pause:3.9",
            "registry.k8s.io/pause-amd64:3.9",
            "REGISTRY.K8S.IO:443/pause:3.9",
        ] {
            assert!(p.matches(&img(yes)), "{yes}");
        }
        for no in [
            "registry.k8s.io/pause/evil",
            "registry.k8s.io/paus",
            "registry.k8s.io/other/pause",
            "registry.k8s.io:5000/pause",
            "registry.k8s.io.evil.io/pause",
            "evil.io/registry.k8s.io/pause",
        ] {
            assert!(!p.matches(&img(no)), "{no}");
        }
        // Without '*', the selector grammar: whole segments, no sibling.
        let p = ex("ghcr.io/acme");
        assert!(p.matches(&img("ghcr.io/acme/app:1")));
        assert!(!p.matches(&img("ghcr.io/acme-evil/app:1")));
        assert!(!p.matches(&img("ghcr.io/acmeevil:1")));
        let p = ex("ghcr.io/acme-*");
        assert!(p.matches(&img("ghcr.io/acme-tools:1")));
        assert!(!p.matches(&img("ghcr.io/acme:1")));
        assert!(!p.matches(&img("ghcr.io/acme-tools/x:1")));
        // Docker Hub names normalise as images do.
        let p = ex("pause*");
        assert_eq!(p.as_str(), "docker.io/library/pause*");
        assert!(p.matches(&img("index.docker.io/library/pause-x:1")));
        assert!(!p.matches(&img("docker.io/pausers/x:1")));
        for bad in [
            "registry.k8s.io*",
            "ghcr.io/*x*",
            "ghcr.io/a**",
            "Ghcr.io/a*",
            "x@sha256:1*",
        ] {
            assert!(RefPattern::parse_exemption(bad).is_err(), "{bad}");
        }
        let message = RefPattern::parse_exemption("registry.k8s.io*")
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"registry.k8s.io*\""), "{message}");
        // The other lists keep refusing a partial glob.
        assert!(RefPattern::parse_selector("registry.k8s.io/pause*").is_err());
    }

    mod spellings {
        use super::*;
        use proptest::prelude::*;

        /// `s` with the case of each letter taken from the bits of `mask`.
        fn recase(s: &str, mask: u64) -> String {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }

        /// None (implicit Docker Hub), or a Hub host in any case, with no port or 443 with
        /// leading zeros.
        fn hub_domain() -> impl Strategy<Value = Option<String>> {
            let host = (prop::sample::select(HUB_HOSTS.to_vec()), any::<u64>())
                .prop_map(|(host, mask)| recase(host, mask));
            let port = prop::option::of((0usize..4).prop_map(|zeros| "0".repeat(zeros) + "443"));
            prop::option::of((host, port).prop_map(|(host, port)| match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }))
        }

        /// Nothing, a tag, a digest, or both.
        fn suffix() -> impl Strategy<Value = String> {
            let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}");
            let digest = prop::option::of("[0-9a-f]{64}");
            (tag, digest).prop_map(|(tag, digest)| {
                let mut out = String::new();
                if let Some(tag) = tag {
                    out.push(':');
                    out.push_str(&tag);
                }
                if let Some(digest) = digest {
                    out.push_str("@sha256:");
                    out.push_str(&digest);
                }
                out
            })
        }

        proptest! {
            #[test]
            fn every_hub_spelling_is_one_image(
                domain in hub_domain(),
                library in any::<bool>(),
                suffix in suffix(),
                pattern_host in prop::sample::select(HUB_HOSTS.to_vec()),
                pattern_port in prop::sample::select(vec!["", ":443", ":0443"]),
            ) {
                let path = if library { "library/busybox" } else { "busybox" };
                let written = match &domain {
                    Some(domain) => format!("{domain}/{path}{suffix}"),
                    None => format!("{path}{suffix}"),
                };
                let image = ImageRef::parse(&written)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(image.name(), "docker.io/library/busybox");
                prop_assert_eq!(image.to_string(), format!("docker.io/library/busybox{suffix}"));
                prop_assert_eq!(image.has_digest(), suffix.contains('@'));
                prop_assert!(pat("docker.io/library/busybox").matches(&image));
                let spelled = format!("{pattern_host}{pattern_port}/library/busybox");
                prop_assert!(pat(&spelled).matches(&image), "{} vs {}", spelled, written);
                if let Some(domain) = domain {
                    let host = domain.split(':').next().unwrap_or_default();
                    let other = ImageRef::parse(&format!("{host}:5000/{path}{suffix}"))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(!pat("docker.io/library/busybox").matches(&other));
                    prop_assert!(!pat("docker.io/*").matches(&other));
                }
            }

            #[test]
            fn every_spelling_of_a_registry_is_one_image(
                mask in any::<u64>(),
                zeros in prop::option::of(0usize..4),
                suffix in suffix(),
            ) {
                let host = recase("registry.my.com", mask);
                let domain = match zeros {
                    Some(zeros) => format!("{host}:{}443", "0".repeat(zeros)),
                    None => host.clone(),
                };
                let image = ImageRef::parse(&format!("{domain}/team/app{suffix}"))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(image.name(), "registry.my.com/team/app");
                prop_assert!(pat("registry.my.com").matches(&image));
                prop_assert!(pat("registry.my.com/team/*").matches(&image));
                let other = ImageRef::parse(&format!("{host}:5000/team/app{suffix}"))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(other.domain(), "registry.my.com:5000");
                prop_assert!(!pat("registry.my.com").matches(&other));
            }
        }
    }

    /// The one-pass domain check agrees with the component-wise grammar on every short string
    /// over the characters that matter.
    #[test]
    fn domain_names_match_the_component_grammar() {
        fn component(c: &str) -> bool {
            !c.is_empty()
                && !c.starts_with('-')
                && !c.ends_with('-')
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }
        let alphabet = ['a', 'Z', '0', '-', '.', '_'];
        let mut strings = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = strings
                .iter()
                .filter(|s| s.len() == strings.last().map_or(0, String::len))
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(longer);
        }
        for host in &strings {
            assert_eq!(
                is_domain_name(host),
                host.split('.').all(component),
                "{host:?}"
            );
        }
    }

    #[test]
    fn the_first_invalid_character_is_named() {
        for (input, ch) in [
            ("a b", ' '),
            ("nginx\u{e9}", '\u{e9}'),
            ("x\u{7f}y\n", '\u{7f}'),
        ] {
            match precheck(input, InputKind::Reference) {
                Err(ReferenceError::InvalidCharacter { ch: found, .. }) => {
                    assert_eq!(found, ch, "{input:?}")
                }
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }
}
