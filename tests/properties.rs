//! Property tests over the fuzz targets' entry points, on stable Rust and without cargo-fuzz:
//! the review decoders, the image reference and pattern parsers, the config loader and the
//! `/mutate` patch builder. Each property runs the very check its fuzz target runs
//! (`fuzz/src/checks.rs`): never a panic, and beside that the target's invariants (the two
//! admission decoders agree, an allowed review carried only good images, a token never shows,
//! a reference's canonical form parses to itself, a patch applies and settles).
//!
//! Inputs are arbitrary bytes and strings, and hostile shapes spliced into a real review: deep
//! nesting, huge numbers, invalid UTF-8, duplicate keys, escapes (lone surrogates included),
//! giant strings.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};

const POD_REVIEW: &str = include_str!("data/pod-admission-review.json");

/// Stands for the hostile JSON text spliced into a well-formed document.
const HOLE: &str = "\u{1}gatehouse-hole\u{1}";

/// Field names the decoders and the mutation engine read, so generated objects hit them.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "uid",
    "group",
    "operation",
    "object",
    "oldObject",
    "metadata",
    "labels",
    "annotations",
    "namespace",
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "image",
    "name",
    "imagePullPolicy",
    "token",
    "audiences",
    "status",
    "app.kubernetes.io/managed-by",
    "a~1b",
    "~",
    "",
];

/// A JSON scalar as text, valid or not: huge and odd numbers, escapes, giant strings.
fn hostile_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("-0".to_owned()),
        Just("1e999".to_owned()),
        Just("-1e-999".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("0.000000000000000000000000000000000000000001e-400".to_owned()),
        Just("123456789012345678901234567890123456789012345678901234567890".to_owned()),
        Just("01".to_owned()),
        Just("NaN".to_owned()),
        Just(r#""\u0000""#.to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""\udc00\ud800""#.to_owned()),
        Just(r#""\ud83d\ude00""#.to_owned()),
        Just(r#""\"\\\/\b\f\n\r\t""#.to_owned()),
        Just(r#""\u00""#.to_owned()),
        Just("\"unterminated".to_owned()),
        "[a-zA-Z0-9:/@._~-]{0,40}".prop_map(|s| json!(s).to_string()),
        any::<String>().prop_map(|s| json!(s).to_string()),
        (1usize..100_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        (1usize..20_000).prop_map(|n| format!("\"{}\"", "\\u00e9".repeat(n))),
    ]
}

/// A JSON value as text: scalars, arrays and objects (keys may repeat), a few levels deep.
fn hostile_json() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(|k| json!(k).to_string()),
        1 => any::<String>().prop_map(|k| json!(k).to_string()),
    ];
    hostile_scalar().prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// Nesting deeper than any parser's recursion limit, closed or not.
fn deep_nesting() -> impl Strategy<Value = String> {
    (1usize..5_000, any::<bool>(), any::<bool>()).prop_map(|(depth, objects, closed)| {
        let (open, close) = if objects {
            (r#"{"a":"#, "}")
        } else {
            ("[", "]")
        };
        let mut s = open.repeat(depth);
        s.push('1');
        if closed {
            s.push_str(&close.repeat(depth));
        }
        s
    })
}

/// Any of the hostile shapes, as JSON text.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![4 => hostile_json(), 1 => deep_nesting()]
}

/// Every JSON Pointer in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `document` with the value at one of its pointers (picked by `pick`) replaced by `text`.
fn splice(document: &Value, pick: prop::sample::Index, text: &str) -> Vec<u8> {
    let mut all = Vec::new();
    pointers(document, String::new(), &mut all);
    let at = &all[pick.index(all.len())];
    let mut doc = document.clone();
    if let Some(slot) = doc.pointer_mut(at) {
        *slot = Value::String(HOLE.to_owned());
    }
    doc.to_string()
        .replacen(&json!(HOLE).to_string(), text, 1)
        .into_bytes()
}

/// Arbitrary bytes, invalid UTF-8 included, with a bias towards JSON punctuation.
fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => proptest::sample::select(b"{}[]\":,\\ 0123456789eE.-+tfnu\xff\xc3".to_vec()),
    ];
    proptest::collection::vec(byte, 0..2_048)
}

fn pod_review() -> Value {
    serde_json::from_str(POD_REVIEW).expect("the fixture is JSON")
}

/// The fixture, as each kind with pods (and two without) sends it; the object is reshaped so
/// a workload's pod template holds the Pod's metadata and spec.
fn review_of_kind(pick: usize) -> Value {
    const KINDS: [(&str, &str); 6] = [
        ("", "Pod"),
        ("apps", "Deployment"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("", "ConfigMap"),
        ("example.com", "Widget"),
    ];
    let (group, kind) = KINDS[pick % KINDS.len()];
    let mut review = pod_review();
    let pod = review["request"]["object"].take();
    let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
    let object = match kind {
        "Pod" => pod,
        "Deployment" | "Job" => {
            json!({"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}})
        }
        "CronJob" => json!({"kind": kind, "metadata": {"name": "c"},
                            "spec": {"jobTemplate": {"spec": {"template": template}}}}),
        _ => {
            json!({"kind": kind, "metadata": pod["metadata"], "spec": {"containers": "not a list"}})
        }
    };
    review["request"]["object"] = object;
    review["request"]["kind"] = json!({"group": group, "version": "v1", "kind": kind});
    review
}

fn image_review() -> Value {
    json!({
        "apiVersion": "imagepolicy.k8s.io/v1alpha1",
        "kind": "ImageReview",
        "spec": {
            "containers": [{"image": "nginx:1.25"}, {"image": "registry.my.com/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}],
            "annotations": {"mycluster.image-policy.k8s.io/ticket-1234": "break-glass"},
            "namespace": "default"
        },
        "status": {"allowed": false}
    })
}

fn token_review() -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "audiences": ["https://kubernetes.default.svc"]}
    })
}

/// Text shaped like an image reference: registry spellings, path, tag and digest, each
/// sometimes malformed.
fn reference_like() -> impl Strategy<Value = String> {
    let domain = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_owned()),
        Just("index.docker.io/".to_owned()),
        Just("REGISTRY-1.DOCKER.IO:0443/".to_owned()),
        Just("localhost/".to_owned()),
        Just("LOCALHOST:5000/".to_owned()),
        Just("[::1]:5000/".to_owned()),
        Just("[::ffff:7f00:1]/".to_owned()),
        Just("[0:0:0:0:0:0:0:1]:0443/".to_owned()),
        Just("127.0.0.01/".to_owned()),
        Just("0x7f.1/".to_owned()),
        Just("FOO/".to_owned()),
        Just("kind-registry:443/".to_owned()),
        Just("registry.my.com:65536/".to_owned()),
        "[a-zA-Z0-9.-]{1,20}(:[0-9]{1,6})?/",
    ];
    let path = prop_oneof![
        "[a-z0-9]{1,10}(/[a-z0-9._-]{1,10}){0,3}".prop_map(Some),
        "[a-zA-Z0-9._/-]{0,60}".prop_map(Some),
        // None: a path that brings the name to within a few characters of the 255 limit.
        Just(None),
    ];
    let tag = prop_oneof![
        Just(String::new()),
        Just(":latest".to_owned()),
        "(:[a-zA-Z0-9_.-]{0,130})",
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "@sha256:[0-9a-f]{64}",
        "@sha256:[0-9a-fA-F]{60,66}",
        "@[a-z0-9+._-]{1,10}:[a-zA-Z0-9=_-]{0,40}",
    ];
    (domain, path, -6isize..6, tag, digest).prop_map(|(d, p, near, t, g)| {
        let p = p.unwrap_or_else(|| {
            "a".repeat(255usize.saturating_sub(d.len()).saturating_add_signed(near))
        });
        format!("{d}{p}{t}{g}")
    })
}

/// Text shaped like a pattern from config.
fn pattern_like() -> impl Strategy<Value = String> {
    prop_oneof![
        reference_like(),
        reference_like().prop_map(|r| format!("{r}/*")),
        "[a-z0-9.:\\[\\]/*-]{0,40}",
    ]
}

/// YAML-ish text: lines of config keys at various indents with hostile values, anchors and
/// aliases, tags, block scalars, flow collections.
fn yaml_like() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec![
        "listen",
        "tls",
        "cert",
        "key",
        "client_ca",
        "limits",
        "max_body",
        "request_timeout",
        "handshake_timeout",
        "idle_timeout",
        "max_connections",
        "log",
        "format",
        "routes",
        "authenticate",
        "image_policy",
        "validate",
        "mutate",
        "break_glass",
        "value",
        "policies",
        "- name",
        "name",
        "enforcement",
        "match",
        "namespaces",
        "exclude_namespaces",
        "kinds",
        "operations",
        "images",
        "deny_latest",
        "allowed_registries",
        "require_digest",
        "denied",
        "labels",
        "required",
        "cache",
        "allow_ttl",
        "deny_ttl",
        "max_entries",
        "mutations",
        "add_labels",
        "add_annotations",
        "overwrite",
        "rewrite_registries",
        "image_pull_policy",
        "github",
        "allowed_orgs",
        "api_url",
        "timeout",
        "docker.io",
        "<<",
        "? complex",
    ]);
    let value = prop_oneof![
        proptest::sample::select(vec![
            "",
            "~",
            "null",
            "[]",
            "{}",
            "true",
            "yes",
            "1e999",
            "-1",
            "0",
            "0x10",
            "0o7",
            "18446744073709551616",
            "-9223372036854775809",
            "4MiB",
            "0B",
            "99999999999EiB",
            "9s",
            "0s",
            "1h30m",
            "99999999999999999999h",
            "1.5s",
            "-5s",
            "&a [x, y]",
            "*a",
            "*undefined",
            "!!binary aGk=",
            "!!str 1",
            "!custom x",
            "'quoted ''x'''",
            "\"\\u0000\\ud800\"",
            "|",
            ">-",
            "- x",
            "[a, [b, [c]]]",
            "{a: 1, a: 2}",
            "registry.my.com",
            "docker.io/*",
            "REGISTRY:0/x",
            "127.0.0.1:8443",
            "[::1]:0",
            "Always",
            "deny",
            "warn",
            "\"*\"",
            "\t",
            "#",
            "%YAML 1.2",
            "---",
            "...",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        (1usize..200).prop_map(|n| "[".repeat(n)),
    ];
    let indent = proptest::sample::select(vec!["", "  ", "    ", "      ", "  - ", "- "]);
    proptest::collection::vec((indent, key, value), 0..24).prop_map(|lines| {
        lines
            .iter()
            .map(|(i, k, v)| format!("{i}{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn admission_decoder_takes_any_bytes(bytes in arbitrary_bytes()) {
        checks::admission_review(&bytes);
    }

    #[test]
    fn admission_decoder_takes_hostile_json(
        kind in any::<usize>(),
        at in any::<prop::sample::Index>(),
        text in hostile_value(),
    ) {
        checks::admission_review(&splice(&review_of_kind(kind), at, &text));
    }

    #[test]
    fn strict_reader_agrees_with_serde_json_on_any_bytes(bytes in arbitrary_bytes()) {
        checks::strict_reader(&bytes);
    }

    #[test]
    fn strict_reader_agrees_with_serde_json_on_hostile_json(
        kind in any::<usize>(),
        at in any::<prop::sample::Index>(),
        text in hostile_value(),
    ) {
        checks::strict_reader(&splice(&review_of_kind(kind), at, &text));
        checks::strict_reader(&splice(&image_review(), at, &text));
        checks::strict_reader(&splice(&token_review(), at, &text));
    }

    #[test]
    fn image_review_decoder_takes_any_bytes(bytes in arbitrary_bytes()) {
        checks::image_review(&bytes);
    }

    #[test]
    fn image_review_decoder_takes_hostile_json(
        at in any::<prop::sample::Index>(),
        text in hostile_value(),
    ) {
        checks::image_review(&splice(&image_review(), at, &text));
    }

    #[test]
    fn token_review_decoder_takes_any_bytes(bytes in arbitrary_bytes()) {
        checks::token_review(&bytes);
    }

    #[test]
    fn token_review_decoder_takes_hostile_json(
        at in any::<prop::sample::Index>(),
        text in hostile_value(),
    ) {
        checks::token_review(&splice(&token_review(), at, &text));
    }

    #[test]
    fn references_and_patterns_take_any_string(reference in any::<String>(), pattern in any::<String>()) {
        checks::image_reference(format!("{reference}\n{pattern}").as_bytes());
    }

    #[test]
    fn config_loader_takes_any_text(text in any::<String>()) {
        checks::config(text.as_bytes());
    }

    #[test]
    fn config_loader_takes_yaml_like_text(text in yaml_like()) {
        checks::config(text.as_bytes());
    }

    #[test]
    fn mutate_patches_apply_to_hostile_objects(
        selector in any::<u8>(),
        at in any::<prop::sample::Index>(),
        text in hostile_value(),
    ) {
        let object = review_of_kind(usize::from(selector))["request"]["object"].take();
        let mut body = vec![selector];
        body.extend(splice(&object, at, &text));
        checks::mutate(&body);
    }
}

proptest! {
    // More cases: the boundaries it looks for (a name at the length limit once canonical) are
    // a small part of its space.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn references_and_patterns_are_canonical(reference in reference_like(), pattern in pattern_like()) {
        checks::image_reference(format!("{reference}\n{pattern}").as_bytes());
    }
}
