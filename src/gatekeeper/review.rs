//! The Rego input: `input.review` is the AdmissionRequest, built once per request straight from
//! the body (the projection the native policies read drops fields templates may read), and
//! shared by every constraint: only `input.parameters` differs.

use std::collections::BTreeMap;

use regorus::Value;
use serde::Deserialize;

use crate::review::image::ImageReviewSpec;
use crate::review::DecodeError;

/// Why a review cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an AdmissionReview with a request object.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What a match block reads of an object (or old object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.generateName`.
    pub generate_name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.labels` (string values).
    pub labels: BTreeMap<String, String>,
}

/// One request as templates see it.
#[derive(Clone, Debug)]
pub struct Review {
    request: Value,
    /// The object's API group.
    pub group: String,
    /// The object's kind.
    pub kind: String,
    /// The request's namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// The object and the old object, where present.
    pub objects: Vec<ObjectFacts>,
    /// True for an ImageReview presented as a Pod (no labels, no name).
    pub from_image_review: bool,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    request: Option<Value>,
}

const WHAT: &str = "AdmissionReview";

impl Review {
    /// From an AdmissionReview body (already validated by the handler's own decode).
    pub fn from_admission(body: &[u8]) -> Result<Self, ReviewError> {
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|source| DecodeError::Json { what: WHAT, source })?;
        let request = envelope.request.ok_or(DecodeError::Missing {
            what: WHAT,
            field: "request",
        })?;
        Self::from_request(request)
    }

    /// From an AdmissionRequest as a Rego value, as Gatekeeper's target reads it.
    pub fn from_request(mut request: Value) -> Result<Self, ReviewError> {
        if !matches!(request, Value::Object(_)) {
            return Err(DecodeError::Missing {
                what: WHAT,
                field: "request",
            }
            .into());
        }
        // Gatekeeper re-encodes the request from Go structs: absent fields read as empty.
        for (field, empty) in [
            ("uid", Value::from("")),
            ("operation", Value::from("")),
            ("userInfo", Value::new_object()),
            ("object", Value::Null),
            ("oldObject", Value::Null),
            ("options", Value::Null),
        ] {
            if request[field] == Value::Undefined {
                set(&mut request, field, empty);
            }
        }
        // On DELETE the object under review is the one being deleted.
        if request["operation"] == Value::from("DELETE") {
            let old = request["oldObject"].clone();
            if old == Value::Null {
                return Err(DecodeError::Missing {
                    what: WHAT,
                    field: "request.oldObject (required on DELETE)",
                }
                .into());
            }
            set(&mut request, "object", old);
        }
        let objects = ["object", "oldObject"]
            .iter()
            .map(|f| &request[*f])
            .filter(|o| matches!(o, Value::Object(_)))
            .map(facts)
            .collect();
        Ok(Self {
            group: text(&request["kind"]["group"]),
            kind: text(&request["kind"]["kind"]),
            namespace: text(&request["namespace"]),
            objects,
            from_image_review: false,
            request,
        })
    }

    /// An object alone, as gator reviews it: no operation, no user, no uid.
    pub fn from_object(object: Value) -> Self {
        let api_version = text(&object["apiVersion"]);
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), api_version),
        };
        let meta = facts(&object);
        let mut request = obj([
            ("uid", Value::from("")),
            (
                "kind",
                obj([
                    ("group", Value::from(group.as_str())),
                    ("version", Value::from(version.as_str())),
                    ("kind", object["kind"].clone()),
                ]),
            ),
            (
                "resource",
                obj([
                    ("group", Value::from("")),
                    ("version", Value::from("")),
                    ("resource", Value::from("")),
                ]),
            ),
            ("operation", Value::from("")),
            ("userInfo", Value::new_object()),
            ("object", object.clone()),
            ("oldObject", Value::Null),
            ("options", Value::Null),
        ]);
        if !meta.name.is_empty() {
            set(&mut request, "name", Value::from(meta.name.as_str()));
        }
        if !meta.namespace.is_empty() {
            set(
                &mut request,
                "namespace",
                Value::from(meta.namespace.as_str()),
            );
        }
        Self {
            kind: text(&object["kind"]),
            group,
            namespace: meta.namespace.clone(),
            objects: vec![meta],
            from_image_review: false,
            request,
        }
    }

    /// An ImageReview as a Pod CREATE: its namespace, annotations and images. The review does
    /// not say which images are init containers, so all are `containers` (named `image-<n>`).
    pub fn from_image_review(spec: &ImageReviewSpec<'_>) -> Self {
        let namespace = spec.namespace.as_ref();
        let containers: Vec<Value> = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                obj([
                    ("name", Value::from(format!("image-{i}").as_str())),
                    ("image", Value::from(c.image.as_ref())),
                ])
            })
            .collect();
        let annotations: BTreeMap<Value, Value> = spec
            .annotations
            .iter()
            .map(|(k, v)| (Value::from(k.as_ref()), Value::from(v.as_ref())))
            .collect();
        let pod = obj([
            ("apiVersion", Value::from("v1")),
            ("kind", Value::from("Pod")),
            (
                "metadata",
                obj([
                    ("namespace", Value::from(namespace)),
                    ("annotations", Value::from(annotations)),
                ]),
            ),
            (
                "spec",
                obj([
                    ("containers", Value::from(containers)),
                    ("initContainers", Value::from(Vec::<Value>::new())),
                ]),
            ),
        ]);
        let gvk = |last: &str, value: &str| {
            obj([
                ("group", Value::from("")),
                ("version", Value::from("v1")),
                (last, Value::from(value)),
            ])
        };
        let request = obj([
            ("uid", Value::from("")),
            ("kind", gvk("kind", "Pod")),
            ("resource", gvk("resource", "pods")),
            ("namespace", Value::from(namespace)),
            ("operation", Value::from("CREATE")),
            ("userInfo", Value::new_object()),
            ("object", pod),
            ("oldObject", Value::Null),
            ("options", Value::Null),
        ]);
        Self {
            group: String::new(),
            kind: "Pod".to_owned(),
            namespace: namespace.to_owned(),
            objects: vec![ObjectFacts {
                namespace: namespace.to_owned(),
                ..ObjectFacts::default()
            }],
            from_image_review: true,
            request,
        }
    }

    /// `{"review": <request>, "parameters": <parameters>}`: cheap, the values are shared.
    pub fn input(&self, parameters: &Value) -> Value {
        obj([
            ("review", self.request.clone()),
            ("parameters", parameters.clone()),
        ])
    }
}

fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::from(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<Value, Value>>(),
    )
}

fn set(object: &mut Value, field: &str, value: Value) {
    if let Ok(map) = object.as_object_mut() {
        map.insert(Value::from(field), value);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        _ => String::new(),
    }
}

fn facts(object: &Value) -> ObjectFacts {
    let meta = &object["metadata"];
    let labels = match &meta["labels"] {
        Value::Object(map) => map
            .iter()
            .filter_map(|(k, v)| match (k, v) {
                (Value::String(k), Value::String(v)) => Some((k.to_string(), v.to_string())),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    ObjectFacts {
        name: text(&meta["name"]),
        generate_name: text(&meta["generateName"]),
        namespace: text(&meta["namespace"]),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_reviews_the_old_object() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"DELETE",
            "namespace":"a","oldObject":{"metadata":{"name":"p","labels":{"x":"y"}}}}}"#;
        let review = Review::from_admission(body).expect("review");
        let input = review.input(&Value::new_object());
        assert_eq!(
            input["review"]["object"]["metadata"]["name"],
            Value::from("p")
        );
        assert_eq!(input["review"]["userInfo"], Value::new_object());
        assert_eq!(review.objects.len(), 2);
        assert_eq!(review.objects[0].labels["x"], "y");
        let no_old = br#"{"request":{"uid":"u","kind":{"kind":"Pod"},"operation":"DELETE"}}"#;
        assert!(Review::from_admission(no_old).is_err());
    }

    #[test]
    fn an_object_alone_is_reviewed_as_gator_does() {
        let object = Value::from_json_str(
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"n"}}"#,
        )
        .expect("json");
        let review = Review::from_object(object);
        let input = review.input(&Value::new_object());
        assert_eq!(input["review"]["kind"]["group"], Value::from("apps"));
        assert_eq!(input["review"]["name"], Value::from("d"));
        assert_eq!(input["review"]["operation"], Value::from(""));
        assert_eq!(review.namespace, "n");
    }
}
