//! Container image references and the registry/repository patterns policy is written in.
//!
//! Parsing follows `github.com/distribution/reference` (`ParseNormalizedNamed`), the code the
//! kubelet and containerd use, so that gatehouse judges the image the node will actually pull:
//! `nginx` is `docker.io/library/nginx`, `localhost:5000/x` is on `localhost:5000`, and
//! `test.com:5000` is `docker.io/library/test.com` tagged `5000`.
//!
//! The parser is hand-written (it runs for every container of every pod): one allocation for
//! the normalised reference, none for matching.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Docker Hub's canonical domain; familiar names ("nginx", "acme/app") live there.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's legacy domain, canonicalised to [`DEFAULT_DOMAIN`] like upstream does.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Docker Hub's registry host: the same content, so a deny list must see it as Docker Hub.
const HUB_REGISTRY_DOMAIN: &str = "registry-1.docker.io";
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

/// A parsed, normalised image reference.
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
    /// Parses and normalises `s` like `ParseNormalizedNamed` (`nginx` → `docker.io/library/nginx`).
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        const KIND: InputKind = InputKind::Reference;
        precheck(s, KIND)?;
        let (domain, remainder) = split_docker_domain(s);
        // The path cannot contain ':' or '@', and a tag cannot contain '@', so the first '@'
        // starts the digest and the first ':' before it starts the tag.
        let (name, digest) = split_opt(remainder, '@');
        let (path, tag) = split_opt(name, ':');
        check_name(s, KIND, domain, Some(path))?;
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
        let library = domain == DEFAULT_DOMAIN && !path.contains('/');
        let prefix = if library { OFFICIAL_REPO_PREFIX } else { "" };
        let name_len = domain.len() + 1 + prefix.len() + path.len();
        check_length(s, KIND, name_len)?;

        let tag_len = tag.map_or(0, |t| t.len() + 1);
        let digest_len = digest.map_or(0, |d| d.len() + 1);
        let mut full = String::with_capacity(name_len + tag_len + digest_len);
        full.push_str(domain);
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

    /// The registry, e.g. `docker.io`, `localhost:5000`, `[::1]:5000`, in the case written.
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
/// registry and the rest is kept as written (`docker.io/library` stays, `index.docker.io/x`
/// becomes `docker.io/x`, `docker.io/busybox` is the Hub namespace `busybox`, not the official
/// image). Otherwise the pattern is a Docker Hub name normalised like an image name: `busybox`
/// is `docker.io/library/busybox` and `acme/app` is `docker.io/acme/app`; with `/*` it is a
/// namespace, so `acme/*` is `docker.io/acme/*`. A single segment `name:port` is a registry only
/// if its host has a dot or is `localhost` (`busybox:1` is refused as a tag; write
/// `kind-registry:5000/*`). Registry hosts compare case-insensitively and ports numerically.
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
        let domain = if domain == LEGACY_DEFAULT_DOMAIN || domain == HUB_REGISTRY_DOMAIN {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        if path.is_some_and(|p| p.contains(':')) {
            return Err(ReferenceError::PatternHasTag { input: input() });
        }
        check_name(s, KIND, domain, path)?;
        let prefix = if library { OFFICIAL_REPO_PREFIX } else { "" };
        let prefix_len = path.map_or(domain.len(), |p| domain.len() + 1 + prefix.len() + p.len());
        check_length(s, KIND, prefix_len)?;

        let mut text = String::with_capacity(prefix_len + if subtree { 2 } else { 0 });
        text.push_str(domain);
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
        })
    }

    /// True when `image`'s name lies under this pattern, on whole segments; never allocates.
    pub fn matches(&self, image: &ImageRef) -> bool {
        if !same_domain(image.domain(), self.domain()) {
            return false;
        }
        let prefix = self.path();
        if prefix.is_empty() {
            // Registry-only pattern; an image always has a non-empty path, so it is below.
            return true;
        }
        match image.path().strip_prefix(prefix) {
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
    if let Some(ch) = s.chars().find(|c| !c.is_ascii_graphic()) {
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

/// Upstream's `splitDockerDomain`: the first segment is a registry if it contains `.` or `:`,
/// is `localhost`, or has uppercase letters (Hub namespaces cannot); otherwise Docker Hub.
fn split_docker_domain(s: &str) -> (&str, &str) {
    if let Some((first, rest)) = s.split_once('/') {
        // Case-insensitive, unlike upstream: "INDEX.DOCKER.IO/library/x" is Hub to DNS, and a
        // deny pattern for docker.io/library/x must see it as such.
        if first.eq_ignore_ascii_case(DEFAULT_DOMAIN)
            || first.eq_ignore_ascii_case(LEGACY_DEFAULT_DOMAIN)
            || first.eq_ignore_ascii_case(HUB_REGISTRY_DOMAIN)
        {
            return (DEFAULT_DOMAIN, rest);
        }
        if first == "localhost"
            || first.contains(['.', ':'])
            || first.bytes().any(|b| b.is_ascii_uppercase())
        {
            return (first, rest);
        }
    }
    (DEFAULT_DOMAIN, s)
}

/// Validates the registry and repository path; `path` is `None` for a registry-only pattern.
fn check_name(
    input: &str,
    kind: InputKind,
    domain: &str,
    path: Option<&str>,
) -> Result<(), ReferenceError> {
    if path.is_some_and(|p| p.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(ReferenceError::Uppercase {
            kind,
            input: input.to_owned(),
        });
    }
    if !is_valid_domain(domain) {
        return Err(ReferenceError::InvalidDomain {
            kind,
            input: input.to_owned(),
            domain: domain.to_owned(),
        });
    }
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
        _ => Ok(()),
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

/// Upstream's `domainAndPort`: host name components, IPv4, or `[hex and colons]`, then `:digits`.
fn is_valid_domain(domain: &str) -> bool {
    let Some((host, port)) = split_host_port(domain) else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => host.split('.').all(is_domain_component),
    };
    host_ok && port.is_none_or(is_port)
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    !c.is_empty()
        && !c.starts_with('-')
        && !c.ends_with('-')
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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

/// Registry equality as DNS and URL parsing see it: host case-insensitive, port numeric, and
/// no port the same as 443 (registries are HTTPS), so `quay.io:443/x` cannot slip past a deny
/// list entry for `quay.io`.
fn same_domain(a: &str, b: &str) -> bool {
    const HTTPS: &str = "443";
    match (split_host_port(a), split_host_port(b)) {
        (Some((host_a, port_a)), Some((host_b, port_b))) => {
            host_a.eq_ignore_ascii_case(host_b)
                && port_a.unwrap_or(HTTPS).trim_start_matches('0')
                    == port_b.unwrap_or(HTTPS).trim_start_matches('0')
        }
        _ => false,
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
        parts("Foo/bar", "Foo", "bar", None, None);
        parts("REGISTRY.MY.COM/app", "REGISTRY.MY.COM", "app", None, None);
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
            "[2001:db8::1]:443",
            "team/app",
            Some("v1"),
            None,
        );
        parts("[2001:DB8::1]/x", "[2001:DB8::1]", "x", None, None);
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
    fn same_domain_rules() {
        assert!(same_domain("a.io", "A.IO"));
        assert!(same_domain("a.io:0080", "a.io:80"));
        assert!(!same_domain("a.io:80", "a.io"));
        assert!(!same_domain("a.io:80", "a.io:800"));
        assert!(same_domain("[::1]:5000", "[::1]:5000"));
        assert!(!same_domain("[::1", "[::1"));
    }
}
