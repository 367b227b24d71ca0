//! Labels as Cilium sees them: `source:key=value`.
//!
//! An identity is a set of labels. Pods get `k8s:` labels from their own
//! labels (filtered as Cilium's default label filter does) plus the labels
//! Cilium derives: namespace, namespace labels, service account and cluster.
//! Reserved identities carry one `reserved:` label each.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Label {
        Label {
            source: source.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn k8s(key: &str, value: &str) -> Label {
        Label::new("k8s", key, value)
    }

    pub fn reserved(name: &str) -> Label {
        Label::new("reserved", name, "")
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

impl Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A sorted, duplicate-free set of labels: the key of an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LabelSet(Vec<Label>);

impl LabelSet {
    pub fn from_labels(mut labels: Vec<Label>) -> LabelSet {
        labels.sort();
        labels.dedup();
        LabelSet(labels)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// Values of `key` from `source` (`None` = any source).
    pub fn values<'a>(
        &'a self,
        source: Option<&'a str>,
        key: &'a str,
    ) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |l| l.key == key && source.is_none_or(|s| s == l.source))
            .map(|l| l.value.as_str())
    }

    pub fn has_reserved(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|l| l.source == "reserved" && l.key == name)
    }

    pub fn get(&self, source: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.key == key && l.source == source)
            .map(|l| l.value.as_str())
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";

/// Whether Cilium's default label filter keeps a pod label in the identity.
///
/// The default filter drops labels that Kubernetes controllers generate and
/// change often (they would make every rollout a new identity). Selectors on
/// dropped labels match nothing, exactly as in a cluster.
pub fn is_identity_label(key: &str) -> bool {
    const DROPPED: &[&str] = &[
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "controller-uid",
        "job-name",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
    ];
    !DROPPED.contains(&key) && !key.starts_with("annotation.")
}

/// The identity labels of a pod.
pub fn pod_labels(
    labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    service_account: &str,
    cluster: &str,
) -> LabelSet {
    let mut out: Vec<Label> = labels
        .iter()
        .filter(|(k, _)| is_identity_label(k))
        .map(|(k, v)| Label::k8s(k, v))
        .collect();
    out.push(Label::k8s(NAMESPACE_LABEL, namespace));
    for (k, v) in namespace_labels {
        out.push(Label::k8s(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    }
    out.push(Label::k8s(SERVICE_ACCOUNT_LABEL, service_account));
    out.push(Label::k8s(CLUSTER_LABEL, cluster));
    LabelSet::from_labels(out)
}
