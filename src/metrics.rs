//! Prometheus metrics, served as `GET /metrics` on the ops listener in the OpenMetrics text
//! format ([`CONTENT_TYPE`]).
//!
//! One [`Metrics`] per server, created in `server.rs` and handed to whoever counts: the access-log
//! layer (requests and latency), the listener and its registry (handshake failures,
//! connections), the decision and token caches, the GitHub client, the config reloader. It is not
//! a global: tests run many servers in one process and each must count its own. This module
//! imports nothing of gatehouse's request path; the others call into it.
//!
//! Recording never locks or allocates: every labelled family is an array of atomics indexed by
//! small enums, sized when the server starts, and the latency histogram is our own lock-free
//! one (prometheus-client's `Histogram` takes a mutex per observation and its `Family` a lock per
//! lookup). The registry and prometheus-client's encoder are used at scrape time only.
//!
//! Labels and their values, every one a fixed set (no token, user name, image, namespace or raw
//! path ever becomes a label):
//! - `route`: the [`Route`] names; every path gatehouse does not serve is `other`.
//! - `code`: the HTTP status for the statuses in [`CODES`], otherwise its class (`4xx`).
//! - `decision`: the [`Decision`] names.
//! - `cache`: `decision` or `token`; `result`: `hit` or `miss`.
//! - `endpoint`: the [`GithubEndpoint`] names (the API call, never an org or a login);
//!   `outcome`: the [`GithubOutcome`] names.
//! - `reason`: the [`HandshakeFailure`] names.
//! - `outcome` of a reload: `ok` or `error` ([`ReloadOutcome`]).
//! - `version`: this build's crate version.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of a scrape: the OpenMetrics text format, which Prometheus negotiates
/// first and which carries `# UNIT` and `# EOF`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Defines a label enum: its values, their label text, and their index in a counter array.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];
            const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

labels! {
    /// The `route` label: a route gatehouse serves, or `other` for any other path.
    Route {
        /// `/authenticate`.
        Authenticate => "authenticate",
        /// `/image_policy`.
        ImagePolicy => "image_policy",
        /// `/validate`.
        Validate => "validate",
        /// `/mutate`.
        Mutate => "mutate",
        /// `/healthz`.
        Healthz => "healthz",
        /// `/readyz`.
        Readyz => "readyz",
        /// Anything else (a 404).
        Other => "other",
    }
}

labels! {
    /// The `decision` label. A handler puts one in the response's extensions; a webhook answer
    /// without one (a 4xx or 5xx before a decision) counts as `error`, health and unknown paths
    /// as `none`.
    Decision {
        /// Admitted, no warning.
        Allowed => "allowed",
        /// Refused by a policy.
        Denied => "denied",
        /// Admitted with warnings.
        Warned => "warned",
        /// Admitted with a JSON patch (`/mutate`).
        Patched => "patched",
        /// A token was accepted (`/authenticate`).
        Authenticated => "authenticated",
        /// A token was refused (`/authenticate`).
        Unauthenticated => "unauthenticated",
        /// No decision: a bad request, a timeout, GitHub unavailable.
        Error => "error",
        /// Not a decision route.
        None => "none",
    }
}

labels! {
    /// The `cache` label.
    Cache {
        /// The policy decision cache (`/validate`, `/image_policy`).
        Decision => "decision",
        /// The token cache (`/authenticate`).
        Token => "token",
    }
}

labels! {
    /// The `endpoint` label: which GitHub API call, never its arguments.
    GithubEndpoint {
        /// `GET /user`.
        User => "user",
        /// `GET /user/memberships/orgs/{org}`.
        OrgMembership => "org_membership",
        /// `GET /user/teams`.
        Teams => "teams",
    }
}

labels! {
    /// The `outcome` label of a GitHub call.
    GithubOutcome {
        /// 2xx, decoded.
        Ok => "ok",
        /// 401.
        Unauthorized => "unauthorized",
        /// 403 without rate limiting.
        Forbidden => "forbidden",
        /// 404.
        NotFound => "not_found",
        /// 429, or 403 with the rate limit exhausted.
        RateLimited => "rate_limited",
        /// 5xx.
        ServerError => "server_error",
        /// No usable answer: connection failed, unexpected status, unreadable or malformed body.
        Error => "error",
        /// Still waiting when the review's `timeout` ran out (or the review was abandoned).
        Timeout => "timeout",
    }
}

labels! {
    /// The `reason` label of a failed TLS handshake.
    HandshakeFailure {
        /// `tls.client_ca` is set and the client presented no certificate.
        NoClientCert => "no_client_cert",
        /// The client certificate does not chain to `tls.client_ca` (or is expired, or unusable).
        BadClientCert => "bad_client_cert",
        /// The client certificate carries none of `tls.client_names`.
        ClientName => "client_name",
        /// The client ended the handshake with an alert: usually it does not trust our
        /// certificate (a wrong `caBundle`).
        ClientAlert => "client_alert",
        /// Not TLS, or TLS we do not speak (versions, ciphers, ALPN).
        Protocol => "protocol",
        /// Not finished within `limits.handshake_timeout`.
        Timeout => "timeout",
        /// The peer closed or reset the connection.
        Eof => "eof",
        /// Anything else.
        Other => "other",
    }
}

labels! {
    /// The `outcome` label of a config or certificate reload.
    ReloadOutcome {
        /// Taken into use.
        Ok => "ok",
        /// Refused; the previous one still serves.
        Error => "error",
    }
}

/// Statuses counted under their own `code`; any other counts under its class (`4xx`). These are
/// the ones gatehouse answers, and those a front proxy or a later layer may.
pub const CODES: [u16; 15] = [
    200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 502, 503, 504,
];
const CODE_TEXT: [&str; CODES.len()] = [
    "200", "400", "401", "403", "404", "405", "408", "413", "415", "422", "429", "500", "502",
    "503", "504",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const CODE_SLOTS: usize = CODES.len() + CLASSES.len();

/// The `code` slot of a status: its own for [`CODES`], its class otherwise.
fn code_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        401 => 2,
        403 => 3,
        404 => 4,
        405 => 5,
        408 => 6,
        413 => 7,
        415 => 8,
        422 => 9,
        429 => 10,
        500 => 11,
        502 => 12,
        503 => 13,
        504 => 14,
        // http::StatusCode is 100..=999; 6xx and up are counted with 5xx.
        other => CODES.len() + usize::from(other / 100).clamp(1, 5) - 1,
    }
}

fn code_text(slot: usize) -> &'static str {
    CODE_TEXT
        .get(slot)
        .or_else(|| CLASSES.get(slot - CODES.len()))
        .copied()
        .unwrap_or("other")
}

/// Upper bounds of the latency buckets, in nanoseconds: from 50 µs (a cached decision) to 10 s
/// (past the longest request timeout a webhook configuration allows, 30 s, only `+Inf`).
const BOUNDS_NANOS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A lock-free histogram: one atomic per bucket (the last is `+Inf`) and the sum in
/// nanoseconds. The count is the buckets' total, so `_count` always equals the `+Inf` bucket.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// An array of counters over a label enum (or a product of them), created whole at start.
#[derive(Debug)]
struct Counts(Box<[AtomicU64]>);

impl Counts {
    fn new(len: usize) -> Self {
        Self((0..len).map(|_| AtomicU64::new(0)).collect())
    }

    fn inc(&self, index: usize) {
        if let Some(c) = self.0.get(index) {
            c.fetch_add(1, Relaxed);
        }
    }

    fn get(&self, index: usize) -> u64 {
        self.0.get(index).map_or(0, |c| c.load(Relaxed))
    }
}

/// What is counted as it happens (the atomics recording touches).
#[derive(Debug)]
struct Live {
    /// By (route, code slot, decision).
    requests: Counts,
    /// By route.
    latency: [Histogram; Route::COUNT],
    /// By (cache, hit = 0 / miss = 1).
    cache: Counts,
    /// By (endpoint, outcome).
    github: Counts,
    github_refused: AtomicU64,
    /// By reason.
    handshakes: Counts,
    /// By outcome.
    config_reloads: Counts,
}

/// Values read from their owners at scrape time rather than counted twice: cache sizes, the
/// certificate reload counters and expiry kept by the TLS holder, dropped log lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Entries in the decision cache of the configuration serving now.
    pub decision_cache_entries: u64,
    /// Entries in the token cache, when `/authenticate` is on.
    pub token_cache_entries: Option<u64>,
    /// The serving certificate, when serving TLS.
    pub tls: Option<TlsSample>,
    /// Access-log lines dropped because the output stalled.
    pub dropped_log_lines: u64,
}

/// The TLS holder's counters and the serving certificate's expiry.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsSample {
    /// Changed certificate files taken into use.
    pub reloads: u64,
    /// Changed certificate files refused.
    pub failures: u64,
    /// The leaf certificate's notAfter, seconds since the epoch (`None` if it could not be read).
    pub not_after: Option<i64>,
}

/// The server's metrics: recorded by everyone, encoded by the ops listener.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    connections_open: Gauge,
    connections_evicted: Counter,
    connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, all at zero.
    pub fn new() -> Self {
        let live = Arc::new(Live {
            requests: Counts::new(Route::COUNT * CODE_SLOTS * Decision::COUNT),
            latency: Default::default(),
            cache: Counts::new(Cache::COUNT * 2),
            github: Counts::new(GithubEndpoint::COUNT * GithubOutcome::COUNT),
            github_refused: AtomicU64::new(0),
            handshakes: Counts::new(HandshakeFailure::COUNT),
            config_reloads: Counts::new(ReloadOutcome::COUNT),
        });
        let connections_open = Gauge::default();
        let connections_evicted = Counter::default();
        let connections_refused = Counter::default();
        let mut registry = Registry::default();
        registry.register(
            "gatehouse_build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "gatehouse_connections_open",
            "Webhook connections open now",
            connections_open.clone(),
        );
        registry.register(
            "gatehouse_connections_evicted",
            "Idle webhook connections closed to make room at limits.max_connections",
            connections_evicted.clone(),
        );
        registry.register(
            "gatehouse_connections_refused",
            "Webhook connections closed at once: limits.max_connections reached, none idle",
            connections_refused.clone(),
        );
        registry.register_collector(Box::new(LiveCollector(live.clone())));
        Self {
            registry,
            live,
            connections_open,
            connections_evicted,
            connections_refused,
        }
    }

    /// Records one answered request. No lock, no allocation: three relaxed atomic adds (the
    /// request, its latency bucket, the latency sum) and a search of 17 bucket bounds.
    pub fn record_request(&self, route: Route, status: u16, decision: Decision, elapsed: Duration) {
        let slot =
            (route.index() * CODE_SLOTS + code_index(status)) * Decision::COUNT + decision.index();
        self.live.requests.inc(slot);
        if let Some(h) = self.live.latency.get(route.index()) {
            h.observe(elapsed);
        }
    }

    /// Records a cache lookup answered from the cache (`hit`) or not.
    pub fn record_cache(&self, cache: Cache, hit: bool) {
        self.live.cache.inc(cache.index() * 2 + usize::from(!hit));
    }

    /// Records one GitHub API call.
    pub fn record_github(&self, endpoint: GithubEndpoint, outcome: GithubOutcome) {
        self.live
            .github
            .inc(endpoint.index() * GithubOutcome::COUNT + outcome.index());
    }

    /// Records a GitHub conversation not started: `max_concurrent_lookups` were in progress.
    pub fn record_lookup_refused(&self) {
        self.live.github_refused.fetch_add(1, Relaxed);
    }

    /// Records a failed TLS handshake.
    pub fn record_handshake_failure(&self, reason: HandshakeFailure) {
        self.live.handshakes.inc(reason.index());
    }

    /// Records a config reload that was applied or refused.
    pub fn record_config_reload(&self, outcome: ReloadOutcome) {
        self.live.config_reloads.inc(outcome.index());
    }

    /// A webhook connection was accepted and registered.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A registered webhook connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// An idle connection was asked to close to make room.
    pub fn connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// A new connection was closed at once: no room and none idle.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The whole exposition, with the values read at scrape time from `sample`.
    pub fn encode(&self, sample: &Sample) -> Result<String, fmt::Error> {
        use prometheus_client::encoding::text;
        let mut out = String::with_capacity(8 * 1024);
        text::encode_registry(&mut out, &self.registry)?;
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(SampleCollector(*sample)));
        text::encode_registry(&mut out, &scraped)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

impl HandshakeFailure {
    /// Classifies a failed handshake's error as tokio-rustls returns it: rustls' own error
    /// wrapped in an `io::Error`, or the socket's.
    pub fn classify(error: &io::Error) -> Self {
        use rustls::{CertificateError, Error as Tls};
        if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
            return match tls {
                Tls::NoCertificatesPresented => Self::NoClientCert,
                Tls::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                    Self::ClientName
                }
                Tls::InvalidCertificate(_) => Self::BadClientCert,
                Tls::AlertReceived(_) => Self::ClientAlert,
                Tls::InappropriateMessage { .. }
                | Tls::InappropriateHandshakeMessage { .. }
                | Tls::InvalidMessage(_)
                | Tls::PeerIncompatible(_)
                | Tls::PeerMisbehaved(_)
                | Tls::NoApplicationProtocol
                | Tls::PeerSentOversizedRecord
                | Tls::DecryptError => Self::Protocol,
                _ => Self::Other,
            };
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Eof,
            io::ErrorKind::InvalidData => Self::Protocol,
            io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Other,
        }
    }
}

/// Encodes one counter or gauge without labels.
fn scalar(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    value: i64,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    match kind {
        MetricType::Counter => {
            metric.encode_counter::<NoLabelSet, _, u64>(&u64::try_from(value).unwrap_or(0), None)
        }
        _ => metric.encode_gauge(&value),
    }
}

/// Encodes a counter family: `values` yields label sets and their counts. Small families show
/// every series from the start (`zeros`), so that `increase()` sees a first event; the requests
/// family (over a thousand combinations, most never seen) shows only those that happened.
fn counter_family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    zeros: bool,
    values: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        if zeros || value > 0 {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

/// Encodes the live counters.
#[derive(Debug)]
struct LiveCollector(Arc<Live>);

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let live = &self.0;
        let requests = Route::ALL.iter().flat_map(|&route| {
            (0..CODE_SLOTS).flat_map(move |code| {
                Decision::ALL.iter().map(move |&decision| {
                    let slot =
                        (route.index() * CODE_SLOTS + code) * Decision::COUNT + decision.index();
                    (
                        [
                            ("route", route.as_str()),
                            ("code", code_text(code)),
                            ("decision", decision.as_str()),
                        ],
                        live.requests.get(slot),
                    )
                })
            })
        });
        counter_family(
            &mut encoder,
            "gatehouse_requests",
            "Requests answered on the webhook listener, by route, HTTP status and decision.",
            false,
            requests,
        )?;

        let mut latency = encoder.encode_descriptor(
            "gatehouse_request_duration",
            "Time from a request's headers to its answer, by route.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (&route, histogram) in Route::ALL.iter().zip(&live.latency) {
            let counts: Vec<u64> = histogram.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = BOUNDS_NANOS
                .iter()
                .map(|&b| b as f64 / 1e9)
                .chain([f64::INFINITY])
                .zip(counts)
                .collect();
            let sum = histogram.sum_nanos.load(Relaxed) as f64 / 1e9;
            latency
                .encode_family(&[("route", route.as_str())])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let cache = Cache::ALL.iter().flat_map(|&cache| {
            [("hit", 0), ("miss", 1)].map(|(result, i)| {
                (
                    [("cache", cache.as_str()), ("result", result)],
                    live.cache.get(cache.index() * 2 + i),
                )
            })
        });
        counter_family(
            &mut encoder,
            "gatehouse_cache_lookups",
            "Decision and token cache lookups, answered from the cache (hit) or not (miss).",
            true,
            cache,
        )?;

        let github = GithubEndpoint::ALL.iter().flat_map(|&endpoint| {
            GithubOutcome::ALL.iter().map(move |&outcome| {
                (
                    [
                        ("endpoint", endpoint.as_str()),
                        ("outcome", outcome.as_str()),
                    ],
                    live.github
                        .get(endpoint.index() * GithubOutcome::COUNT + outcome.index()),
                )
            })
        });
        counter_family(
            &mut encoder,
            "gatehouse_github_requests",
            "GitHub API calls, by endpoint and outcome.",
            true,
            github,
        )?;
        scalar(
            &mut encoder,
            "gatehouse_github_lookups_refused",
            "Token lookups not started: authenticate.github.max_concurrent_lookups were in progress.",
            None,
            MetricType::Counter,
            i64::try_from(live.github_refused.load(Relaxed)).unwrap_or(i64::MAX),
        )?;

        let handshakes = HandshakeFailure::ALL
            .iter()
            .map(|&r| ([("reason", r.as_str())], live.handshakes.get(r.index())));
        counter_family(
            &mut encoder,
            "gatehouse_tls_handshake_failures",
            "TLS handshakes that failed, by reason.",
            true,
            handshakes,
        )?;

        let reloads = ReloadOutcome::ALL.iter().map(|&o| {
            (
                [("outcome", o.as_str())],
                live.config_reloads.get(o.index()),
            )
        });
        counter_family(
            &mut encoder,
            "gatehouse_config_reloads",
            "Config reloads (SIGHUP or a file change), applied (ok) or refused (error).",
            true,
            reloads,
        )
    }
}

/// Encodes the values read at scrape time.
#[derive(Debug)]
struct SampleCollector(Sample);

impl Collector for SampleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let sample = &self.0;
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        {
            // One descriptor, one or two series.
            let mut entries = encoder.encode_descriptor(
                "gatehouse_cache_entries",
                "Entries in the decision and token caches now.",
                None,
                MetricType::Gauge,
            )?;
            entries
                .encode_family(&[("cache", Cache::Decision.as_str())])?
                .encode_gauge(&to_i64(sample.decision_cache_entries))?;
            if let Some(tokens) = sample.token_cache_entries {
                entries
                    .encode_family(&[("cache", Cache::Token.as_str())])?
                    .encode_gauge(&to_i64(tokens))?;
            }
        }
        if let Some(tls) = &sample.tls {
            counter_family(
                &mut encoder,
                "gatehouse_tls_reloads",
                "Changed certificate files taken into use (ok) or refused (error).",
                true,
                [
                    ([("outcome", ReloadOutcome::Ok.as_str())], tls.reloads),
                    ([("outcome", ReloadOutcome::Error.as_str())], tls.failures),
                ],
            )?;
            if let Some(not_after) = tls.not_after {
                scalar(
                    &mut encoder,
                    "gatehouse_tls_cert_not_after",
                    "When the serving certificate expires, in seconds since the epoch.",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                    not_after,
                )?;
            }
        }
        scalar(
            &mut encoder,
            "gatehouse_log_lines_dropped",
            "Log lines dropped because the log output stalled.",
            None,
            MetricType::Counter,
            i64::try_from(sample.dropped_log_lines).unwrap_or(i64::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_bounded_code_label() {
        for status in 100..=999u16 {
            let text = code_text(code_index(status));
            if let Some(i) = CODES.iter().position(|&c| c == status) {
                assert_eq!(text, CODE_TEXT[i]);
            } else {
                assert!(CLASSES.contains(&text), "{status} -> {text}");
            }
        }
        assert_eq!(code_text(code_index(418)), "4xx");
        assert_eq!(code_text(code_index(200)), "200");
    }

    #[test]
    fn requests_and_latency_encode_by_label() {
        let metrics = Metrics::new();
        metrics.record_request(
            Route::Validate,
            200,
            Decision::Allowed,
            Duration::from_micros(40),
        );
        metrics.record_request(
            Route::Validate,
            200,
            Decision::Allowed,
            Duration::from_micros(120),
        );
        metrics.record_request(Route::Other, 404, Decision::None, Duration::from_secs(20));
        let text = metrics.encode(&Sample::default()).expect("encode");
        assert!(text.contains(
            "gatehouse_requests_total{route=\"validate\",code=\"200\",decision=\"allowed\"} 2\n"
        ));
        assert!(text.contains(
            "gatehouse_requests_total{route=\"other\",code=\"404\",decision=\"none\"} 1\n"
        ));
        // Cumulative buckets: 40 µs ≤ 50 µs, 120 µs ≤ 250 µs.
        assert!(
            text.contains(
                "gatehouse_request_duration_seconds_bucket{le=\"0.00005\",route=\"validate\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gatehouse_request_duration_seconds_bucket{le=\"0.00025\",route=\"validate\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gatehouse_request_duration_seconds_bucket{le=\"10.0\",route=\"other\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gatehouse_request_duration_seconds_bucket{le=\"+Inf\",route=\"other\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("gatehouse_request_duration_seconds_count{route=\"validate\"} 2\n"));
        assert!(text.contains("gatehouse_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
    }
}
