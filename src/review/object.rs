//! The projection of an admitted object: the few fields decisions read, decoded in the same pass
//! as the envelope, everything else skipped without allocating.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::StrMap;

/// What decisions read of any object: metadata, and pod specs where the kind has them.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct ObjectView<'a> {
    /// `metadata`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: MetaView<'a>,
    /// `spec`: a PodSpec for Pods, a workload spec with `template` otherwise.
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub spec: Option<SpecView<'a>>,
}

/// An object whose `spec` is not read (a kind without pods, or a spec of another shape).
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct MetaOnly<'a> {
    /// `metadata`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: MetaView<'a>,
}

/// `metadata`: what policies and mutations read.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct MetaView<'a> {
    /// False when the object has no `metadata` at all (a patch must then create it).
    #[serde(skip_deserializing, default = "yes")]
    pub present: bool,
    /// `metadata.name`.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub name: Option<Cow<'a, str>>,
    /// `metadata.namespace`.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub namespace: Option<Cow<'a, str>>,
    /// `metadata.labels`; `None` when absent or null (a patch must then create the map).
    #[serde(borrow, default, deserialize_with = "super::optional_str_map")]
    pub labels: Option<StrMap<'a>>,
    /// `metadata.annotations`; `None` when absent or null.
    #[serde(borrow, default, deserialize_with = "super::optional_str_map")]
    pub annotations: Option<StrMap<'a>>,
}

/// A PodSpec's image-bearing fields, or a workload spec's template(s).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    /// `containers`.
    #[serde(borrow, default, deserialize_with = "optional_objects")]
    pub containers: Option<Vec<ContainerView<'a>>>,
    /// `initContainers`.
    #[serde(borrow, default, deserialize_with = "optional_objects")]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// `ephemeralContainers`.
    #[serde(borrow, default, deserialize_with = "optional_objects")]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    /// `volumes`: only image volumes are read, every other source is skipped.
    #[serde(borrow, default, deserialize_with = "optional_objects")]
    pub volumes: Option<Vec<VolumeView<'a>>>,
    /// `template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, ReplicationController).
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub template: Option<Box<TemplateView<'a>>>,
    /// `jobTemplate` (CronJob).
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub job_template: Option<Box<JobTemplateView<'a>>>,
}

/// A pod template.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct TemplateView<'a> {
    /// The pods' metadata.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: MetaView<'a>,
    /// The PodSpec.
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub spec: Option<SpecView<'a>>,
}

/// A CronJob's job template.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct JobTemplateView<'a> {
    /// The JobSpec, whose `template` holds the pods.
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub spec: Option<SpecView<'a>>,
}

/// `T` read from a JSON object only.
///
/// serde's derive also reads a struct from an array (fields by position), so `"metadata": []`
/// would project as empty metadata and a mutation would answer with a patch the apiserver cannot
/// apply (a 500 for the user whatever the failurePolicy). Every projected struct goes through
/// this, so an array where an object belongs is a decode error instead.
#[derive(Debug, Default)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                // Streams the entries to T's own visitor: no buffering, borrowing preserved.
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData)).map(ObjectOnly)
    }
}

fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    ObjectOnly::deserialize(d).map(|o| o.0)
}

fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<ObjectOnly<T>>::deserialize(d)?.map(|o| o.0))
}

fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let list = Option::<Vec<ObjectOnly<T>>>::deserialize(d)?;
    // Same layout, so the collect reuses the allocation.
    Ok(list.map(|v| v.into_iter().map(|o| o.0).collect()))
}

fn yes() -> bool {
    true
}

/// A container: what image policies and mutations read.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `image`; may be absent in a template that a controller fills in.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub image: Option<Cow<'a, str>>,
    /// `imagePullPolicy`.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub image_pull_policy: Option<Cow<'a, str>>,
}

/// A volume: its name, and its image when it is an image volume.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct VolumeView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `image` (the ImageVolume feature): an image the kubelet pulls like a container's.
    #[serde(borrow, default, deserialize_with = "optional_object")]
    pub image: Option<ImageVolumeView<'a>>,
}

/// `volumes[].image`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolumeView<'a> {
    /// `reference`, written as a container's image; may be absent in a template.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub reference: Option<Cow<'a, str>>,
    /// `pullPolicy`.
    #[serde(borrow, default, deserialize_with = "super::optional_str")]
    pub pull_policy: Option<Cow<'a, str>>,
}

/// Where in a PodSpec an image is named: one of the container lists, or an image volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// `containers[].image`
    Containers,
    /// `initContainers[].image`
    InitContainers,
    /// `ephemeralContainers[].image`
    EphemeralContainers,
    /// `volumes[].image.reference`
    Volumes,
}

impl ImageSource {
    /// The PodSpec field holding the list.
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
            Self::EphemeralContainers => "ephemeralContainers",
            Self::Volumes => "volumes",
        }
    }

    /// The image inside a list item, as JSON Pointer tokens.
    pub fn image_member(self) -> &'static str {
        match self {
            Self::Volumes => "image/reference",
            _ => "image",
        }
    }

    /// The pull policy inside a list item, as JSON Pointer tokens.
    pub fn pull_policy_member(self) -> &'static str {
        match self {
            Self::Volumes => "image/pullPolicy",
            _ => "imagePullPolicy",
        }
    }

    /// What a user calls the item: "container", "image volume", ...
    pub fn noun(self) -> &'static str {
        match self {
            Self::Containers => "container",
            Self::InitContainers => "init container",
            Self::EphemeralContainers => "ephemeral container",
            Self::Volumes => "image volume",
        }
    }
}

/// One place in a PodSpec that names an image the node pulls: a container or an image volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSlot<'v> {
    /// Which list it is in.
    pub source: ImageSource,
    /// Its index in that list (every volume counts, image or not).
    pub index: usize,
    /// The container's or volume's name.
    pub name: &'v str,
    /// The image; `None` when absent (a template that a controller fills in).
    pub image: Option<&'v str>,
    /// The pull policy as written.
    pub pull_policy: Option<&'v str>,
}

/// Where a kind keeps its pods, as JSON Pointer prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodLocation {
    /// A Pod: `/metadata`, `/spec`.
    Pod,
    /// A workload with `spec.template`.
    Template,
    /// A CronJob: `spec.jobTemplate.spec.template`.
    JobTemplate,
}

impl PodLocation {
    /// The location for a core or workload kind; `None` for kinds without pods.
    pub fn for_kind(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("", "Pod") => Some(Self::Pod),
            ("", "ReplicationController")
            | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job") => Some(Self::Template),
            ("batch", "CronJob") => Some(Self::JobTemplate),
            _ => None,
        }
    }

    /// The JSON Pointer of the pods' metadata.
    pub fn metadata_pointer(self) -> &'static str {
        match self {
            Self::Pod => "/metadata",
            Self::Template => "/spec/template/metadata",
            Self::JobTemplate => "/spec/jobTemplate/spec/template/metadata",
        }
    }

    /// The JSON Pointer of the PodSpec.
    pub fn spec_pointer(self) -> &'static str {
        match self {
            Self::Pod => "/spec",
            Self::Template => "/spec/template/spec",
            Self::JobTemplate => "/spec/jobTemplate/spec/template/spec",
        }
    }
}

/// The pod inside an object: its metadata (a Pod's own, or the template's) and its PodSpec.
#[derive(Debug)]
pub struct PodView<'v, 'a> {
    /// Where it is.
    pub location: PodLocation,
    /// Pod metadata; `None` when a workload has no template (`present` is false when the
    /// template has no `metadata`).
    pub metadata: Option<&'v MetaView<'a>>,
    /// The PodSpec; `None` when absent.
    pub spec: Option<&'v SpecView<'a>>,
}

impl<'a> ObjectView<'a> {
    /// The pod this object describes, found at `location`.
    pub fn pod<'v>(&'v self, location: PodLocation) -> PodView<'v, 'a> {
        let template = |spec: Option<&'v SpecView<'a>>| spec.and_then(|s| s.template.as_deref());
        let (metadata, spec) = match location {
            PodLocation::Pod => (Some(&self.metadata), self.spec.as_ref()),
            PodLocation::Template => {
                let t = template(self.spec.as_ref());
                (t.map(|t| &t.metadata), t.and_then(|t| t.spec.as_ref()))
            }
            PodLocation::JobTemplate => {
                let job = self
                    .spec
                    .as_ref()
                    .and_then(|s| s.job_template.as_deref())
                    .and_then(|j| j.spec.as_ref());
                let t = template(job);
                (t.map(|t| &t.metadata), t.and_then(|t| t.spec.as_ref()))
            }
        };
        PodView {
            location,
            metadata,
            spec,
        }
    }
}

impl<'a> SpecView<'a> {
    /// Every image the pod makes the node pull, in the order the apiserver's image plugin lists
    /// containers (containers, init containers, ephemeral containers), then image volumes.
    pub fn images(&self) -> impl Iterator<Item = ImageSlot<'_>> {
        fn containers<'s>(
            source: ImageSource,
            list: &'s Option<Vec<ContainerView<'_>>>,
        ) -> impl Iterator<Item = ImageSlot<'s>> {
            list.iter()
                .flatten()
                .enumerate()
                .map(move |(index, c)| ImageSlot {
                    source,
                    index,
                    name: &c.name,
                    image: c.image.as_deref(),
                    pull_policy: c.image_pull_policy.as_deref(),
                })
        }
        let volumes = self
            .volumes
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(index, v)| {
                v.image.as_ref().map(|image| ImageSlot {
                    source: ImageSource::Volumes,
                    index,
                    name: &v.name,
                    image: image.reference.as_deref(),
                    pull_policy: image.pull_policy.as_deref(),
                })
            });
        containers(ImageSource::Containers, &self.containers)
            .chain(containers(
                ImageSource::InitContainers,
                &self.init_containers,
            ))
            .chain(containers(
                ImageSource::EphemeralContainers,
                &self.ephemeral_containers,
            ))
            .chain(volumes)
    }
}
