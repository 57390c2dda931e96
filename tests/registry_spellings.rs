//! Every spelling of a registry that the runtime pulls from the same place is judged as that
//! registry, over real TLS: deny lists, allow lists and digest rules on `/validate` and
//! `/image_policy`, and mirror rewrites on `/mutate` (issue 8, item 2). A property test sends
//! generated spellings (host case, Docker Hub aliases, ports 443 / 0443 / none / 5000, tag,
//! digest, both) through the running server.

mod common;

use std::cell::RefCell;

use base64::Engine;
use common::{admission_review, image_review, pod_review, Client, Proto, TestServer, BOTH};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::json;

const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The issue's spellings of `docker.io/library/busybox:1.36`.
const ISSUE_SPELLINGS: [&str; 4] = [
    "registry-1.docker.io:443/library/busybox:1.36",
    "registry-1.docker.io:0443/library/busybox:1.36",
    "REGISTRY-1.DOCKER.IO:443/library/busybox:1.36",
    "index.docker.io:443/library/busybox:1.36",
];

/// The issue's configuration: a deny list alone (no allow list to catch what it misses), and a
/// Docker Hub mirror.
const ISSUE_CONFIG: &str = r#"
routes:
  mutate: true
policies:
  - name: no-busybox
    images:
      denied: [docker.io/library/busybox]
mutations:
  - name: mirror-docker-hub
    rewrite_registries:
      docker.io: mirror.local/hub
"#;

/// The issue's deny list, an allow list, a digest rule that warns, and a Docker Hub mirror.
const CONFIG: &str = r#"
routes:
  mutate: true
policies:
  - name: no-busybox
    images:
      denied: [docker.io/library/busybox]
  - name: hub-and-mine
    images:
      allowed_registries: [docker.io/library, registry.my.com]
  - name: pinned
    enforcement: warn
    images:
      require_digest: true
mutations:
  - name: mirror-docker-hub
    rewrite_registries:
      docker.io: mirror.local/hub
"#;

/// What /validate answered.
struct Validated {
    allowed: bool,
    message: String,
    warnings: Vec<String>,
}

async fn validate(client: &mut Client, version: &str, image: &str) -> Validated {
    let answer = client
        .post_json(
            "/validate?timeout=10s",
            pod_review(version, "uid-1", "default", &[image]),
        )
        .await;
    let json = answer.ok_json();
    assert_eq!(json["apiVersion"], version);
    let response = &json["response"];
    assert_eq!(response["uid"], "uid-1");
    Validated {
        allowed: response["allowed"].as_bool().expect("allowed"),
        message: response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        warnings: response["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `(allowed, reason)` from /image_policy.
async fn image_policy(client: &mut Client, image: &str) -> (bool, String) {
    let answer = client
        .post_json("/image_policy", image_review("default", &[image]))
        .await;
    let json = answer.ok_json();
    assert_eq!(json["kind"], "ImageReview");
    let status = &json["status"];
    (
        status["allowed"].as_bool().expect("allowed"),
        status["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The image of the pod's only container after /mutate's patch (applied with json-patch), and
/// whether there was a patch at all.
async fn mutate(client: &mut Client, version: &str, image: &str) -> (String, bool) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c0", "image": image}]}
    });
    let body = admission_review(version, "uid-m", ("", "Pod"), "default", "CREATE", &pod);
    let answer = client.post_json("/mutate?timeout=10s", body).await;
    let json = answer.ok_json();
    let response = &json["response"];
    assert_eq!(response["uid"], "uid-m");
    assert_eq!(response["allowed"], true);
    let Some(patch) = response["patch"].as_str() else {
        assert!(response.get("patchType").is_none(), "{json}");
        return (image.to_owned(), false);
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("an RFC 6902 patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    let image = patched["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image")
        .to_owned();
    (image, true)
}

#[tokio::test]
async fn issue_spellings_are_denied_on_validate_and_image_policy() {
    let server = TestServer::start(ISSUE_CONFIG).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for image in ISSUE_SPELLINGS {
            for version in VERSIONS {
                let v = validate(&mut client, version, image).await;
                assert!(!v.allowed, "{proto:?} {version} {image:?} must be denied");
                assert!(
                    v.message.contains(&format!(
                        "uses {image:?}, which matches denied pattern docker.io/library/busybox \
                         (policy \"no-busybox\")"
                    )),
                    "{proto:?} {version}: {}",
                    v.message
                );
            }
            let (allowed, reason) = image_policy(&mut client, image).await;
            assert!(!allowed, "{proto:?} /image_policy {image:?} must be denied");
            assert!(
                reason.contains(&format!(
                    "image uses {image:?}, which matches denied pattern"
                )),
                "{reason}"
            );
        }
    }
}

#[tokio::test]
async fn mutate_rewrites_uppercase_hub_with_port_to_the_mirror() {
    let server = TestServer::start(ISSUE_CONFIG).await;
    for proto in BOTH {
        let mut client = server.client(proto).await;
        for version in VERSIONS {
            let (image, patched) = mutate(
                &mut client,
                version,
                "REGISTRY-1.DOCKER.IO:443/library/nginx:1.25",
            )
            .await;
            assert!(patched, "{proto:?} {version}: no patch");
            assert_eq!(
                image, "mirror.local/hub/library/nginx:1.25",
                "{proto:?} {version}"
            );
            // A registry on another port is not Docker Hub and stays as written.
            let other = "REGISTRY-1.DOCKER.IO:5000/library/nginx:1.25";
            assert_eq!(
                mutate(&mut client, version, other).await,
                (other.to_owned(), false)
            );
        }
    }
}

#[tokio::test]
async fn the_decision_cache_keeps_spellings_apart() {
    // The cache key hashes the image as written: each spelling is its own entry, so every
    // denial quotes the spelling that was sent, never one cached for another spelling.
    let server = TestServer::start(ISSUE_CONFIG).await;
    let mut client = server.client(Proto::Http2).await;
    let plain = "docker.io/library/busybox:1.36";
    let before = server.app.policies.evaluations();
    for image in std::iter::once(plain).chain(ISSUE_SPELLINGS) {
        for _ in 0..2 {
            let v = validate(&mut client, VERSIONS[0], image).await;
            assert!(!v.allowed, "{image:?}");
            assert!(
                v.message.contains(&format!("uses {image:?}")),
                "{}",
                v.message
            );
            for other in std::iter::once(plain).chain(ISSUE_SPELLINGS) {
                if other != image {
                    assert!(!v.message.contains(&format!("{other:?}")), "{}", v.message);
                }
            }
        }
    }
    // One evaluation per spelling; the second request of each was served from the cache.
    assert_eq!(server.app.policies.evaluations() - before, 5);
}

#[tokio::test]
async fn unpullable_spellings_are_denied_with_the_reason() {
    // With a deny list alone, only the parse failure can refuse these.
    let server = TestServer::start(ISSUE_CONFIG).await;
    let mut client = server.client(Proto::Http1).await;
    for (image, reason) in [
        ("docker.io./library/busybox:1.36", "is not a host name"),
        (
            "registry-1.docker.io:0/library/busybox:1.36",
            "port outside 1 to 65535",
        ),
        (
            "registry-1.docker.io:65536/library/busybox:1.36",
            "port outside 1 to 65535",
        ),
        ("docker.io/library/BusyBox:1.36", "must be lowercase"),
        ("127.0.0.01:5000/busybox:1.36", "ends in a number"),
        ("[::1:5000]:/busybox:1.36", "is not a host name"),
    ] {
        for version in VERSIONS {
            let v = validate(&mut client, version, image).await;
            assert!(!v.allowed, "{image:?} must be denied");
            assert!(
                v.message
                    .contains(&format!("invalid image reference {image:?}"))
                    && v.message.contains(reason),
                "{image:?}: {}",
                v.message
            );
        }
        let (allowed, message) = image_policy(&mut client, image).await;
        assert!(!allowed, "{image:?} must be denied on /image_policy");
        assert!(message.contains(reason), "{message}");
        // /mutate leaves what does not parse alone; /validate refuses it.
        assert_eq!(
            mutate(&mut client, VERSIONS[0], image).await,
            (image.to_owned(), false)
        );
    }
}

/// Which image a generated spelling names.
#[derive(Clone, Copy, Debug)]
enum Image {
    /// `docker.io/library/busybox`: denied.
    Busybox,
    /// `docker.io/library/nginx`: allowed, mirrored.
    Nginx,
    /// `registry.my.com/team/app`: allowed, not mirrored.
    Mine,
}

/// A registry port as written.
#[derive(Clone, Debug)]
enum Port {
    None,
    /// 443 with this many leading zeros.
    Https(usize),
    /// Another registry: 5000.
    Other,
}

/// One generated spelling.
#[derive(Clone, Debug)]
struct Spelling {
    image: Image,
    /// The Docker Hub host (ignored for `Mine`); `None` leaves the registry implicit when the
    /// port allows.
    hub_host: Option<&'static str>,
    /// Bits choosing the case of each letter of the host.
    case: u64,
    port: Port,
    /// Write `library/` explicitly (Docker Hub only).
    library: bool,
    tag: Option<String>,
    digest: Option<String>,
}

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

impl Spelling {
    /// Whether the runtime would pull it from the registry the policy names.
    fn on_the_named_registry(&self) -> bool {
        !matches!(self.port, Port::Other)
    }

    /// `[:tag][@digest]`.
    fn suffix(&self) -> String {
        let mut out = String::new();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push_str("@sha256:");
            out.push_str(digest);
        }
        out
    }

    /// The reference as a pod author would write it.
    fn written(&self) -> String {
        let (host, path) = match self.image {
            Image::Mine => (Some("registry.my.com"), "team/app"),
            Image::Busybox => (self.hub_host, "busybox"),
            Image::Nginx => (self.hub_host, "nginx"),
        };
        let path = if self.library && !matches!(self.image, Image::Mine) {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let port = match self.port {
            Port::None => String::new(),
            Port::Https(zeros) => format!(":{}443", "0".repeat(zeros)),
            Port::Other => ":5000".to_owned(),
        };
        let registry = match (host, port.is_empty()) {
            (Some(host), _) => format!("{}{port}/", recase(host, self.case)),
            // A port needs a host: Docker Hub's own name.
            (None, false) => format!("{}{port}/", recase("docker.io", self.case)),
            (None, true) => String::new(),
        };
        format!("{registry}{path}{}", self.suffix())
    }
}

fn spelling() -> impl Strategy<Value = Spelling> {
    let image = prop_oneof![Just(Image::Busybox), Just(Image::Nginx), Just(Image::Mine)];
    let hub_host = prop::option::of(prop::sample::select(vec![
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "registry.hub.docker.com",
    ]));
    let port = prop_oneof![
        Just(Port::None),
        (0usize..3).prop_map(Port::Https),
        Just(Port::Other),
    ];
    let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}");
    let digest = prop::option::of("[0-9a-f]{64}");
    (
        image,
        hub_host,
        any::<u64>(),
        port,
        any::<bool>(),
        tag,
        digest,
    )
        .prop_map(
            |(image, hub_host, case, port, library, tag, digest)| Spelling {
                image,
                hub_host,
                case,
                port,
                library,
                tag,
                digest,
            },
        )
}

/// Fails the property (instead of panicking) so proptest can shrink to a minimal spelling.
fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(what()))
    }
}

#[test]
fn every_spelling_is_judged_and_mirrored_as_its_registry() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server, h1, h2) = runtime.block_on(async {
        let server = TestServer::start(CONFIG).await;
        let h1 = server.client(Proto::Http1).await;
        let h2 = server.client(Proto::Http2).await;
        (server, h1, h2)
    });
    let clients = RefCell::new((h1, h2));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&spelling(), |s| {
        let written = s.written();
        let mut clients = clients.borrow_mut();
        let (h1, h2) = &mut *clients;
        let (v, (ip_allowed, ip_reason), (mutated, patched)) = runtime.block_on(async {
            (
                validate(h2, VERSIONS[0], &written).await,
                image_policy(h1, &written).await,
                mutate(h2, VERSIONS[1], &written).await,
            )
        });
        let named = s.on_the_named_registry();
        let hub = !matches!(s.image, Image::Mine);
        // Deny list: every spelling of busybox on Docker Hub, no spelling on another port.
        let denied_by_list = v.message.contains("(policy \"no-busybox\")");
        check(
            denied_by_list == (named && matches!(s.image, Image::Busybox)),
            || format!("{written:?}: deny list verdict wrong: {}", v.message),
        )?;
        // Allow list: every spelling of the allowed registries, none on another port.
        let refused_by_allow_list = v.message.contains("(policy \"hub-and-mine\")");
        check(refused_by_allow_list != named, || {
            format!("{written:?}: allow list verdict wrong: {}", v.message)
        })?;
        check(
            v.allowed == (named && !matches!(s.image, Image::Busybox)),
            || format!("{written:?}: allowed {} ({})", v.allowed, v.message),
        )?;
        if !v.allowed {
            check(v.message.contains(&format!("{written:?}")), || {
                format!("the denial quotes the image as written: {}", v.message)
            })?;
        }
        // Digest rule: a warning exactly when no digest pins the image.
        let digest_warning = v.warnings.iter().any(|w| w.contains("(policy \"pinned\")"));
        check(digest_warning == s.digest.is_none(), || {
            format!("{written:?}: digest rule: {:?}", v.warnings)
        })?;
        // Both routes decide alike.
        check(ip_allowed == v.allowed, || {
            format!("{written:?}: /image_policy says {ip_allowed}: {ip_reason}")
        })?;
        // Mirror: every spelling of Docker Hub is rewritten, tag and digest kept; nothing else.
        if hub && named {
            let name = match s.image {
                Image::Busybox => "busybox",
                _ => "nginx",
            };
            let expected = format!("mirror.local/hub/library/{name}{}", s.suffix());
            check(patched && mutated == expected, || {
                format!("{written:?} rewritten to {mutated:?}, expected {expected:?}")
            })?;
        } else {
            check(!patched && mutated == written, || {
                format!("{written:?} must not be rewritten, got {mutated:?}")
            })?;
        }
        Ok(())
    });
    drop(clients);
    drop(server);
    if let Err(e) = result {
        panic!("{e}");
    }
}
