//! What each fuzz target checks, one function per target. A panic here is a finding: a decoder
//! or parser that panics, or an invariant that does not hold. The targets in `fuzz_targets/`
//! only hand libFuzzer's bytes to these functions.
//!
//! Each function also says what must hold beyond "no panic", so the fuzzer searches for wrong
//! answers too: a review decoded one way and rejected another, a canonical form that does not
//! parse back to itself, a JSON Patch the apiserver could not apply.

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine;
use gatehouse::config::Config;
use gatehouse::handlers::mutate::answer;
use gatehouse::handlers::validate_subject;
use gatehouse::mutation::Mutations;
use gatehouse::policy::config::compile;
use gatehouse::policy::Policies;
use gatehouse::reference::{ImageRef, RefPattern};
use gatehouse::review::admission::AdmissionReview;
use gatehouse::review::admission::{
    decode_admission, decode_review, encode_response, AdmissionResponse, Decoded, Operation,
};
use gatehouse::review::image::ImageReview;
use gatehouse::review::json;
use gatehouse::review::object::{MetaOnly, ObjectOnly, ObjectView};
use gatehouse::review::token::TokenReview;
use gatehouse::review::{decode, decode_redacted, DecodeError};
use serde::de::IgnoredAny;
use serde_json::Value;

/// One strict policy: only `registry.my.com`, no moving tag, on CREATE and UPDATE of any kind.
/// An allowed review then proves that every image it carried parsed and was on that registry.
const POLICIES: &str = r#"
policies:
  - name: strict
    match:
      operations: [CREATE, UPDATE]
    images:
      deny_latest: true
      allowed_registries: [registry.my.com]
"#;

/// The bench's mutations plus one that overwrites, keys that need RFC 6901 escapes, and a
/// rewrite of a repository below a registry; every kind with pods is in scope.
const MUTATIONS: &str = r#"
mutations:
  - name: mark-mutated
    match:
      exclude_namespaces: [kube-system]
    add_labels:
      example-mutated: "true"
      app.kubernetes.io/managed-by: gatehouse
    add_annotations:
      gatehouse.dev/admitted: "true"
  - name: mirror-docker-hub
    match:
      kinds: [Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ReplicationController]
    rewrite_registries:
      docker.io: registry.my.com/dockerhub
      ghcr.io/acme: registry.my.com/acme
  - name: pull-policy
    match:
      kinds: [Pod, Deployment, Job, CronJob]
    image_pull_policy: IfNotPresent
  - name: team
    overwrite: true
    add_labels:
      team: platform
"#;

fn policies() -> &'static Policies {
    static POLICIES_ONCE: OnceLock<Policies> = OnceLock::new();
    POLICIES_ONCE.get_or_init(|| {
        let config = Config::from_yaml(POLICIES, "fuzz").expect("the fuzz policies load");
        compile(&config.policies, config.break_glass.as_ref()).expect("the fuzz policies compile")
    })
}

fn mutations() -> &'static Mutations {
    static MUTATIONS_ONCE: OnceLock<Mutations> = OnceLock::new();
    MUTATIONS_ONCE.get_or_init(|| {
        let config = Config::from_yaml(MUTATIONS, "fuzz").expect("the fuzz mutations load");
        Mutations::compile(&config.mutations).expect("the fuzz mutations compile")
    })
}

/// AdmissionReview: `decode_review` and `decode_admission` agree; a decoded review goes through
/// the whole `/validate` decision, and an allowed one carried only good images.
pub fn admission_review(data: &[u8]) {
    let reviewed = decode_review(data);
    match (&reviewed, decode_admission(data)) {
        (Ok(Decoded::Projected(a)), Ok(b)) => assert_eq!(a, &b, "the two decoders disagree"),
        (Ok(Decoded::Malformed { .. }), Err(_)) | (Err(_), Err(_)) => {}
        (r, a) => panic!("decode_review gave {r:?} but decode_admission {a:?}"),
    }
    let admission = match reviewed {
        Ok(Decoded::Projected(admission)) => admission,
        Ok(Decoded::Malformed { error, .. }) => {
            assert!(
                matches!(
                    error,
                    DecodeError::Object { .. } | DecodeError::Missing { .. }
                ),
                "a malformed object is reported as such, got {error:?}"
            );
            return;
        }
        Err(_) => return,
    };
    let request = &admission.request;
    // Reads the object's pod (or pod template) and every image in it, as /validate does.
    let subject = validate_subject(request);
    let decision = policies().decide(&subject);
    let judged = matches!(subject.operation, Operation::Create | Operation::Update);
    if judged && decision.allowed() {
        for used in &subject.images {
            let image = ImageRef::parse(used.image)
                .unwrap_or_else(|e| panic!("allowed an image that does not parse: {e}"));
            assert_eq!(image.domain(), "registry.my.com", "allowed {image}");
            assert!(!image.is_latest(), "allowed the moving tag {image}");
        }
    }
    let response = AdmissionResponse {
        uid: Cow::Borrowed(&request.uid),
        allowed: decision.allowed(),
        ..AdmissionResponse::default()
    };
    let body = encode_response(admission.api_version, response).expect("an answer encodes");
    let echoed: Value = serde_json::from_slice(&body).expect("the answer is JSON");
    assert_eq!(
        echoed["response"]["uid"].as_str(),
        Some(request.uid.as_ref()),
        "the answer echoes the uid"
    );
    assert_eq!(echoed["response"]["allowed"], decision.allowed());
}

/// ImageReview: decoding never panics, and a decoded review encodes and decodes again.
pub fn image_review(data: &[u8]) {
    let Ok(review) = decode::<ImageReview<'_>>("ImageReview", data) else {
        return;
    };
    let again = serde_json::to_vec(&review).expect("a decoded ImageReview encodes");
    let back: ImageReview<'_> =
        decode("ImageReview", &again).expect("an encoded ImageReview decodes");
    let images = |r: &ImageReview<'_>| -> Vec<String> {
        r.spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.image.to_string()))
            .collect()
    };
    assert_eq!(
        images(&review),
        images(&back),
        "images survive a round trip"
    );
}

/// TokenReview: decoding never panics, and an error never carries the body's text (it may hold
/// the token): only the redacted kind and position, or the missing part's name.
pub fn token_review(data: &[u8]) {
    match decode_redacted::<TokenReview<'_>>("TokenReview", data) {
        Ok(review) => {
            if let Some(spec) = &review.spec {
                assert_eq!(
                    format!("{:?}", spec.token),
                    "<redacted>",
                    "Debug shows the token"
                );
            }
        }
        Err(error) => assert!(
            matches!(error, DecodeError::Redacted { .. }),
            "a TokenReview error must be redacted, got {error:?}"
        ),
    }
}

/// Image references and patterns: no panic; a parsed reference or pattern is canonical (its
/// text parses to itself); matching never panics. The input is `reference\npattern`.
pub fn image_reference(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (reference, pattern) = text.split_once('\n').unwrap_or((&text, &text));
    let image = ImageRef::parse(reference).ok();
    if let Some(image) = &image {
        let shown = image.to_string();
        assert_eq!(
            ImageRef::parse(&shown).as_ref(),
            Ok(image),
            "{reference:?} → {shown:?} does not parse to itself"
        );
        assert_eq!(
            image.name(),
            format!("{}/{}", image.domain(), image.path()),
            "name is domain/path"
        );
        assert!(shown.starts_with(image.name()));
        assert_eq!(image.with_name(image.name()), shown);
    }
    for parse in [RefPattern::parse, RefPattern::parse_selector] {
        if let Ok(p) = parse(pattern) {
            assert_eq!(
                parse(p.as_str()).as_ref(),
                Ok(&p),
                "pattern {pattern:?} → {:?} does not parse to itself",
                p.as_str()
            );
            if let Some(image) = &image {
                std::hint::black_box(p.matches(image));
            }
        }
    }
}

/// The config loader: any text loads or is refused with an error; a loaded config's policies
/// and mutations compile or are refused, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_yaml(text, "fuzz") {
        let _ = compile(&config.policies, config.break_glass.as_ref());
        let _ = Mutations::compile(&config.mutations);
    }
}

/// Kinds the `/mutate` target wraps a fuzzed object in: (group, kind).
const KINDS: [(&str, &str); 6] = [
    ("", "Pod"),
    ("apps", "Deployment"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "ConfigMap"),
    ("example.com", "Widget"),
];

/// `/mutate`: the first byte picks a kind and operation, the rest is the object. The answer is
/// allowed and echoes the uid; its patch applies to the object as the apiserver would apply
/// it, and running the mutations again on the patched object yields no patch.
pub fn mutate(data: &[u8]) {
    let Some((&selector, object)) = data.split_first() else {
        return;
    };
    // Objects the apiserver sends are JSON it wrote itself; anything else is a 400 (the
    // decoders' targets cover that).
    let Ok(object) = serde_json::from_slice::<Value>(object) else {
        return;
    };
    let (group, kind) = KINDS[usize::from(selector) % KINDS.len()];
    let operation = if selector & 0x80 == 0 {
        "CREATE"
    } else {
        "UPDATE"
    };
    let Some(patched) = mutate_once(group, kind, operation, &object) else {
        return;
    };
    if let Some(patched) = patched {
        assert_eq!(
            mutate_once(group, kind, operation, &patched),
            Some(None),
            "mutations do not settle: a second run patches again"
        );
    }
}

/// One `/mutate` call for `object`: `None` when the review is refused (a 400), otherwise the
/// patched object when the answer carries a patch.
fn mutate_once(group: &str, kind: &str, operation: &str, object: &Value) -> Option<Option<Value>> {
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz-uid",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "things"},
            "namespace": "default",
            "operation": operation,
            "object": object,
        }
    });
    let body = serde_json::to_vec(&review).expect("a Value encodes");
    let out = answer(mutations(), &body).ok()?;
    let out: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    let response = &out["response"];
    assert_eq!(response["uid"], "fuzz-uid", "the answer echoes the uid");
    assert_eq!(response["allowed"], true, "/mutate never denies");
    let Some(patch) = response["patch"].as_str() else {
        assert!(response["patchType"].is_null(), "patchType without patch");
        return Some(None);
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&patch).expect("the patch is an RFC 6902 JSON Patch");
    assert!(!patch.0.is_empty(), "an empty patch is sent as none");
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch) {
        panic!(
            "the apiserver could not apply the patch (a 500 for every such pod): {e}\npatch: {}",
            serde_json::to_string(&patch).unwrap_or_default()
        );
    }
    Some(Some(patched))
}

/// The strict reader (`review::json`) against serde_json, as every review type the handlers
/// decode: whatever it accepts, serde_json accepts with the same value (it may refuse more:
/// serde_json then decides). UTF-8 only, as the handlers check the body first.
pub fn strict_reader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    fn same<'a, T: serde::Deserialize<'a> + std::fmt::Debug>(text: &'a str) -> Option<T> {
        let fast = json::from_str::<T>(text).ok()?;
        match serde_json::from_str::<T>(text) {
            Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "values differ"),
            Err(e) => panic!("the strict reader accepted what serde_json refuses: {e}"),
        }
        Some(fast)
    }
    same::<AdmissionReview<'_, ObjectOnly<ObjectView<'_>>>>(text);
    same::<AdmissionReview<'_, ObjectOnly<MetaOnly<'_>>>>(text);
    same::<AdmissionReview<'_, IgnoredAny>>(text);
    same::<ImageReview<'_>>(text);
    if let Some(fast) = same::<TokenReview<'_>>(text) {
        // Debug redacts the token: compare it on its own.
        let slow: TokenReview<'_> = serde_json::from_str(text).expect("compared above");
        let token = |r: &TokenReview<'_>| r.spec.as_ref().map(|s| s.token.0.to_string());
        assert_eq!(token(&fast), token(&slow), "tokens differ");
    }
}
