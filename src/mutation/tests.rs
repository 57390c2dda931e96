//! Unit tests of the mutation engine, and the property test: whatever the labels and the
//! mutations, the patch applies with a JSON Patch library, yields exactly the labels the
//! mutations describe, and a second run on the result yields no operation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::review::object::ObjectOnly;

fn mutation(name: &str, labels: &[(&str, &str)], overwrite: bool) -> Mutation {
    Mutation {
        name: name.to_owned(),
        scope: Match::default(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: Vec::new(),
        overwrite,
        rewrites: Vec::new(),
        pull_policy: None,
    }
}

/// Runs `mutations` on `object` (a `kind` in `group`) and returns the operations as JSON.
fn run(mutations: &Mutations, group: &str, kind: &str, object: &Value) -> Vec<Value> {
    let text = object.to_string();
    let view: ObjectOnly<ObjectView<'_>> = serde_json::from_str(&text).expect("projection");
    let outcome = mutations.mutate(&Target {
        operation: Operation::Create,
        group,
        kind,
        namespace: "default",
        sub_resource: None,
        object: Some(&view.0),
        old_object: None,
    });
    outcome
        .patch
        .iter()
        .map(|op| serde_json::to_value(op).expect("op"))
        .collect()
}

/// Applies JSON operations with the json-patch crate; panics (fails the test) if they do not.
fn apply(object: &Value, ops: &[Value]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.to_vec())).expect("a JSON Patch");
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap_or_else(|e| panic!("patch {ops:?} failed: {e}"));
    out
}

fn compile(yaml: &str) -> Mutations {
    let configs: Vec<MutationConfig> = serde_saphyr::from_str(yaml).expect("yaml");
    Mutations::compile(&configs).expect("compile")
}

fn pod(metadata: Value, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": containers}})
}

#[test]
fn rewrite_keeps_tag_and_digest_and_normalises() {
    let m = compile(
        "- name: mirror\n  rewrite_registries:\n    docker.io: registry.my.com/dockerhub\n    \
         quay.io/acme: mirror.my.com/acme\n    ghcr.io/org/app: mirror.my.com/app\n",
    );
    let rules = &m.list[0].rewrites;
    let rewrite = |image: &str| {
        let image = ImageRef::parse(image).expect("image");
        rules.iter().find_map(|r| r.apply(&image))
    };
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        rewrite("nginx:1.25").as_deref(),
        Some("registry.my.com/dockerhub/library/nginx:1.25")
    );
    assert_eq!(
        rewrite("docker.io/library/nginx:1.25").as_deref(),
        Some("registry.my.com/dockerhub/library/nginx:1.25")
    );
    assert_eq!(
        rewrite(&format!("acme/app:2@{digest}")),
        Some(format!("registry.my.com/dockerhub/acme/app:2@{digest}"))
    );
    assert_eq!(
        rewrite("quay.io/acme/team/x:1").as_deref(),
        Some("mirror.my.com/acme/team/x:1")
    );
    assert_eq!(
        rewrite("quay.io/acme").as_deref(),
        Some("mirror.my.com/acme")
    );
    assert_eq!(rewrite("quay.io/acme-evil/x:1"), None);
    assert_eq!(
        rewrite("ghcr.io/org/app:3").as_deref(),
        Some("mirror.my.com/app:3")
    );
    assert_eq!(rewrite("ghcr.io/org/application:3"), None);
    assert_eq!(
        rewrite("registry.my.com/dockerhub/library/nginx:1.25"),
        None
    );
}

#[test]
fn a_rewrite_that_would_be_invalid_is_skipped_with_a_warning() {
    // The target passes the config check, but a long repository path under it exceeds the
    // 255-character name limit once rewritten.
    let target = format!("r.io/{}", "m".repeat(240));
    let m = compile(&format!(
        "- name: long\n  rewrite_registries:\n    docker.io: {target}\n"
    ));
    let image = format!("acme/{}:1", "x".repeat(20));
    let object = pod(json!({"name": "p"}), json!([{"name": "a", "image": image}]));
    let text = object.to_string();
    let view: ObjectOnly<ObjectView<'_>> = serde_json::from_str(&text).expect("projection");
    let outcome = m.mutate(&Target {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        namespace: "default",
        sub_resource: None,
        object: Some(&view.0),
        old_object: None,
    });
    assert!(outcome.patch.is_empty());
    assert_eq!(outcome.warnings.len(), 1);
    assert!(
        outcome.warnings[0].contains("mutation \"long\": containers[0] \"a\""),
        "{:?}",
        outcome.warnings
    );
    assert!(
        outcome.warnings[0].contains("too long"),
        "{:?}",
        outcome.warnings
    );
}

#[test]
fn most_specific_rewrite_wins_whatever_the_order() {
    let m = compile(
        "- name: mirror\n  rewrite_registries:\n    docker.io: a.my.com/hub\n    \
         docker.io/library: b.my.com/official\n",
    );
    let object = pod(
        json!({"name": "p"}),
        json!([{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "acme/x:1"}]),
    );
    let patched = apply(&object, &run(&m, "", "Pod", &object));
    assert_eq!(
        patched["spec"]["containers"][0]["image"],
        "b.my.com/official/nginx:1"
    );
    assert_eq!(
        patched["spec"]["containers"][1]["image"],
        "a.my.com/hub/acme/x:1"
    );
}

#[test]
fn mutations_see_each_other_and_net_changes_only() {
    // a sets k=1, b overwrites to 2, c (no overwrite) keeps 2: the patch says k=2 once.
    let m = Mutations {
        list: vec![
            mutation("a", &[("k", "1")], false),
            mutation("b", &[("k", "2")], true),
            mutation("c", &[("k", "3")], false),
        ],
    };
    let object = pod(json!({"labels": {"other": "x"}}), json!([]));
    let ops = run(&m, "", "Pod", &object);
    assert_eq!(
        ops,
        vec![json!({"op": "add", "path": "/metadata/labels/k", "value": "2"})]
    );
    // Two overwrites in turn on a value that is already the last one: nothing to do.
    let object = pod(json!({"labels": {"k": "2"}}), json!([]));
    assert_eq!(run(&m, "", "Pod", &object), Vec::<Value>::new());
}

#[test]
fn pull_policy_set_where_none_or_on_overwrite() {
    let mut m = mutation("pp", &[], false);
    m.pull_policy = Some(PullPolicy::IfNotPresent);
    let mut mutations = Mutations { list: vec![m] };
    let object = pod(
        json!({"name": "p"}),
        json!([
            {"name": "a", "image": "x:1"},
            {"name": "b", "image": "x:1", "imagePullPolicy": null},
            {"name": "c", "image": "x:1", "imagePullPolicy": ""},
            {"name": "d", "image": "x:1", "imagePullPolicy": "Always"},
            {"name": "e", "image": "x:1", "imagePullPolicy": "IfNotPresent"}
        ]),
    );
    let patched = apply(&object, &run(&mutations, "", "Pod", &object));
    let policies: Vec<&Value> = (0..5)
        .map(|i| &patched["spec"]["containers"][i]["imagePullPolicy"])
        .collect();
    assert_eq!(
        policies,
        [
            "IfNotPresent",
            "IfNotPresent",
            "IfNotPresent",
            "Always",
            "IfNotPresent"
        ]
    );
    assert!(run(&mutations, "", "Pod", &patched).is_empty());
    mutations.list[0].overwrite = true;
    let patched = apply(&object, &run(&mutations, "", "Pod", &object));
    assert_eq!(
        patched["spec"]["containers"][3]["imagePullPolicy"],
        "IfNotPresent"
    );
}

#[test]
fn absent_metadata_is_created_whole() {
    let mut m = mutation("m", &[("a/b", "1")], false);
    m.annotations = vec![("note".into(), "x".into())];
    let mutations = Mutations { list: vec![m] };
    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
    let ops = run(&mutations, "", "ConfigMap", &object);
    assert_eq!(
        ops,
        vec![json!({"op": "add", "path": "/metadata",
                    "value": {"labels": {"a/b": "1"}, "annotations": {"note": "x"}}})]
    );
    // A Job's pod template without metadata, the common case before the apiserver fills it.
    let job = json!({"spec": {"template": {"spec": {"containers": []}}}});
    let patched = apply(&job, &run(&mutations, "batch", "Job", &job));
    assert_eq!(
        patched["spec"]["template"]["metadata"]["labels"]["a/b"],
        "1"
    );
    assert!(
        patched.get("metadata").is_none(),
        "the Job's own metadata is not touched"
    );
    // No template at all: no pod to mutate, so no patch.
    let bare = json!({"spec": {}});
    assert!(run(&mutations, "apps", "Deployment", &bare).is_empty());
}

#[test]
fn operations_other_than_create_and_update_are_not_mutated() {
    let mutations = Mutations {
        list: vec![mutation("m", &[("a", "1")], false)],
    };
    let object = pod(json!({}), json!([]));
    let text = object.to_string();
    let view: ObjectOnly<ObjectView<'_>> = serde_json::from_str(&text).expect("projection");
    for operation in [Operation::Delete, Operation::Connect, Operation::Other] {
        let outcome = mutations.mutate(&Target {
            operation,
            group: "",
            kind: "Pod",
            namespace: "default",
            sub_resource: None,
            object: Some(&view.0),
            old_object: None,
        });
        assert!(outcome.patch.is_empty(), "{operation:?}");
    }
}

#[test]
fn arrays_where_objects_belong_do_not_project() {
    for text in [
        r#"[]"#,
        r#"{"metadata": []}"#,
        r#"{"metadata": ["p", "default"]}"#,
        r#"{"metadata": "x"}"#,
        r#"{"metadata": {"labels": []}}"#,
        r#"{"metadata": {"labels": {"a": 1}}}"#,
        r#"{"spec": []}"#,
        r#"{"spec": {"containers": [["c", "nginx"]]}}"#,
        r#"{"spec": {"template": []}}"#,
        r#"{"spec": {"template": {"metadata": []}}}"#,
        r#"{"spec": {"jobTemplate": {"spec": []}}}"#,
    ] {
        let result = serde_json::from_str::<ObjectOnly<ObjectView<'_>>>(text);
        assert!(result.is_err(), "{text} projected");
    }
    let ok: ObjectOnly<ObjectView<'_>> =
        serde_json::from_str(r#"{"metadata": {"labels": null}, "spec": null}"#).expect("ok");
    assert!(ok.0.metadata.present && ok.0.metadata.labels.is_none() && ok.0.spec.is_none());
    let absent: ObjectOnly<ObjectView<'_>> = serde_json::from_str("{}").expect("ok");
    assert!(!absent.0.metadata.present);
}

// --- the property test -------------------------------------------------------------------

/// Keys chosen to collide with each other and to need escaping.
const KEYS: &[&str] = &[
    "a",
    "b",
    "app.kubernetes.io/managed-by",
    "x~y",
    "~",
    "/",
    "~1",
    "~0",
    "a/b/c",
    "~/~/",
    "",
];
const VALUES: &[&str] = &["", "1", "2", "true"];

/// Where the pod's metadata is, and how the labels/annotations are there.
#[derive(Clone, Debug)]
enum MapState {
    Absent,
    Null,
    Map(BTreeMap<String, String>),
}

fn map_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(str::to_owned),
        prop::sample::select(VALUES).prop_map(str::to_owned),
        0..5,
    )
}

fn state_strategy() -> impl Strategy<Value = MapState> {
    prop_oneof![
        Just(MapState::Absent),
        Just(MapState::Null),
        Just(MapState::Map(BTreeMap::new())),
        map_strategy().prop_map(MapState::Map),
    ]
}

#[derive(Clone, Debug)]
struct Spec {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    overwrite: bool,
    pull_policy: Option<PullPolicy>,
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        map_strategy(),
        map_strategy(),
        any::<bool>(),
        prop::option::of(prop::sample::select(
            &[
                PullPolicy::Always,
                PullPolicy::IfNotPresent,
                PullPolicy::Never,
            ][..],
        )),
    )
        .prop_map(|(labels, annotations, overwrite, pull_policy)| Spec {
            labels,
            annotations,
            overwrite,
            pull_policy,
        })
}

/// The model: set-if-absent, or set on overwrite; `None` when the object's map is untouched.
fn expected_map(
    original: &MapState,
    specs: &[Spec],
    pick: fn(&Spec) -> &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let initial = match original {
        MapState::Map(m) => m.clone(),
        _ => BTreeMap::new(),
    };
    let mut map = initial.clone();
    for spec in specs {
        for (k, v) in pick(spec) {
            if !map.contains_key(k) || spec.overwrite {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    (map != initial).then_some(map)
}

fn state_value(state: &MapState) -> Option<Value> {
    match state {
        MapState::Absent => None,
        MapState::Null => Some(Value::Null),
        MapState::Map(m) => Some(json!(m)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn patches_apply_and_settle(
        metadata_present in any::<bool>(),
        labels in state_strategy(),
        annotations in state_strategy(),
        policy in prop::sample::select(&[None, Some(""), Some("Always"), Some("Never")][..]),
        policy_null in any::<bool>(),
        kind in prop::sample::select(&[("", "Pod"), ("apps", "Deployment"), ("batch", "CronJob")][..]),
        specs in prop::collection::vec(spec_strategy(), 0..4),
    ) {
        // The pod template's (or Pod's) metadata and one container.
        let mut metadata = serde_json::Map::new();
        if let Some(v) = state_value(&labels) {
            metadata.insert("labels".into(), v);
        }
        if let Some(v) = state_value(&annotations) {
            metadata.insert("annotations".into(), v);
        }
        let mut container = json!({"name": "c", "image": "nginx:1.25"});
        match policy {
            Some(p) => { container["imagePullPolicy"] = json!(p); }
            None if policy_null => { container["imagePullPolicy"] = Value::Null; }
            None => {}
        }
        let mut pod = json!({"spec": {"containers": [container]}});
        if metadata_present {
            pod["metadata"] = Value::Object(metadata);
        }
        let (group, kind) = kind;
        let (object, prefix): (Value, &[&str]) = match kind {
            "Pod" => (pod.clone(), &[]),
            "Deployment" => (json!({"metadata": {"name": "d"}, "spec": {"template": pod.clone()}}),
                             &["spec", "template"]),
            _ => (json!({"metadata": {"name": "c"},
                         "spec": {"jobTemplate": {"spec": {"template": pod.clone()}}}}),
                  &["spec", "jobTemplate", "spec", "template"]),
        };

        let mutations = Mutations {
            list: specs.iter().enumerate().map(|(i, s)| Mutation {
                name: format!("m{i}"),
                scope: Match::default(),
                labels: s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                annotations: s.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                overwrite: s.overwrite,
                rewrites: Vec::new(),
                pull_policy: s.pull_policy,
            }).collect(),
        };
        let ops = run(&mutations, group, kind, &object);
        let patched = apply(&object, &ops);

        // The expected pod, built from the model.
        let mut expected_pod = pod;
        let new_labels = expected_map(if metadata_present { &labels } else { &MapState::Absent },
                                      &specs, |s| &s.labels);
        let new_annotations = expected_map(
            if metadata_present { &annotations } else { &MapState::Absent },
            &specs, |s| &s.annotations);
        if new_labels.is_some() || new_annotations.is_some() {
            let meta = expected_pod
                .as_object_mut()
                .expect("object")
                .entry("metadata")
                .or_insert_with(|| json!({}));
            if let Some(map) = new_labels { meta["labels"] = json!(map); }
            if let Some(map) = new_annotations { meta["annotations"] = json!(map); }
        }
        let mut current = policy.filter(|p| !p.is_empty()).map(str::to_owned);
        let mut set = false;
        for s in &specs {
            if let Some(p) = s.pull_policy {
                if current.is_none() || (s.overwrite && current.as_deref() != Some(p.as_str())) {
                    current = Some(p.as_str().to_owned());
                    set = true;
                }
            }
        }
        if set {
            expected_pod["spec"]["containers"][0]["imagePullPolicy"] = json!(current);
        }
        let mut actual_pod = &patched;
        for token in prefix {
            actual_pod = &actual_pod[*token];
        }
        prop_assert_eq!(actual_pod, &expected_pod, "ops: {:?}", ops);
        // Nothing outside the pod changed.
        let mut outside = patched.clone();
        let mut original_outside = object.clone();
        if let Some((last, parents)) = prefix.split_last() {
            let mut a = &mut outside;
            let mut b = &mut original_outside;
            for token in parents {
                a = &mut a[*token];
                b = &mut b[*token];
            }
            a[*last] = Value::Null;
            b[*last] = Value::Null;
            prop_assert_eq!(outside, original_outside);
        }

        // Reinvocation on the result: nothing more to do.
        let again = run(&mutations, group, kind, &patched);
        prop_assert!(again.is_empty(), "second run: {:?}", again);
    }
}

#[test]
fn decimals_are_written_as_format_writes_them() {
    for n in [0, 7, 9, 10, 99, 100, 12_345, usize::MAX] {
        let mut out = String::from("/x/");
        push_decimal(&mut out, n);
        assert_eq!(out, format!("/x/{n}"));
    }
}
