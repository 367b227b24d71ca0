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

/// The prefix of the labels Cilium owns: a pod's own labels with it are
/// removed before its identity is built, so a pod cannot claim another
/// namespace's labels or another service account.
pub const CILIUM_OWNED_PREFIX: &str = "io.cilium.k8s";

/// One pattern of Cilium's label filter (`--labels`, `pkg/labelsfilter`).
#[derive(Clone, Debug)]
struct LabelPrefix {
    /// A pattern that drops the labels it matches (written with `!`).
    ignore: bool,
    /// The label source the pattern applies to (`None`: every source).
    source: Option<String>,
    /// The written pattern, a regex matched from the start of the key.
    text: String,
    expr: regex::Regex,
}

impl LabelPrefix {
    /// Parses `[source:][!]regex`, splitting at the first `:` as Cilium
    /// does.
    fn parse(written: &str) -> Result<LabelPrefix, String> {
        let (source, mut prefix) = match written.split_once(':') {
            Some((s, p)) => (Some(s.to_owned()), p),
            None => (None, written),
        };
        if prefix.is_empty() {
            return Err(format!("label pattern `{written}` has an empty prefix"));
        }
        let ignore = prefix.starts_with('!');
        if ignore {
            prefix = &prefix[1..];
        }
        let expr = regex::Regex::new(&format!("^(?:{prefix})"))
            .map_err(|e| format!("label pattern `{written}` is not a valid regex: {e}"))?;
        Ok(LabelPrefix {
            ignore,
            source,
            text: prefix.to_owned(),
            expr,
        })
    }

    /// The length of the key's start that the pattern matches, if it does.
    /// A match must begin at the key's first character.
    fn matched_len(&self, source: &str, key: &str) -> Option<usize> {
        if self.source.as_deref().is_some_and(|s| s != source) {
            return None;
        }
        self.expr.find(key).map(|m| m.end())
    }
}

/// Which labels make up an identity: Cilium's label filter, by default its
/// built-in list, optionally extended as with the agent's `--labels`.
///
/// A label is kept when no pattern drops it, or when the longest including
/// pattern matches more of the key than the shortest dropping one; once
/// the user adds an including pattern, only included labels are kept.
#[derive(Clone, Debug)]
pub struct LabelFilter {
    prefixes: Vec<LabelPrefix>,
    /// An including pattern of the user's makes the filter an allow-list.
    allow_list: bool,
}

/// Cilium's built-in label patterns (`defaultLabelPrefixCfg`).
const DEFAULT_PATTERNS: &[&str] = &[
    "reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    r"!pod-template-generation",
    r"!pod-template-hash",
    r"!controller-revision-hash",
    r"!annotation.*",
    r"!etcd_node",
];

impl Default for LabelFilter {
    fn default() -> Self {
        LabelFilter {
            prefixes: DEFAULT_PATTERNS
                .iter()
                .map(|p| LabelPrefix::parse(p).expect("built-in label patterns compile"))
                .collect(),
            allow_list: false,
        }
    }
}

impl LabelFilter {
    /// The default filter extended with the patterns of Cilium's `--labels`
    /// option (space-separated, e.g. `k8s:app k8s:!team`).
    pub fn with_patterns(patterns: &str) -> Result<LabelFilter, String> {
        let mut f = LabelFilter::default();
        for p in patterns.split_whitespace() {
            let p = LabelPrefix::parse(p)?;
            f.allow_list |= !p.ignore;
            f.prefixes.push(p);
        }
        Ok(f)
    }

    /// Whether a label with this source and key is an identity label.
    pub fn keeps(&self, source: &str, key: &str) -> bool {
        let (mut included, mut ignored) = (0usize, 0usize);
        for p in &self.prefixes {
            let Some(len) = p.matched_len(source, key) else {
                continue;
            };
            if p.ignore {
                if ignored == 0 || len < ignored {
                    ignored = len;
                }
            } else if len > included {
                included = len;
            }
        }
        (!self.allow_list && ignored == 0) || included > ignored
    }

    /// The patterns, as written, for messages.
    pub fn describe(&self) -> Vec<String> {
        self.prefixes
            .iter()
            .map(|p| {
                let src = p
                    .source
                    .as_deref()
                    .map_or(String::new(), |s| format!("{s}:"));
                format!("{src}{}{}", if p.ignore { "!" } else { "" }, p.text)
            })
            .collect()
    }
}

/// The identity labels of a pod, as Cilium derives them
/// (`SanitizePodLabels`, then the label filter): the pod's labels without
/// those Cilium owns, the namespace's labels under
/// `io.cilium.k8s.namespace.labels.`, the namespace name (overriding any
/// label of that key), the service account (when set) and the cluster.
pub fn pod_labels(
    labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    service_account: &str,
    cluster: &str,
    filter: &LabelFilter,
) -> LabelSet {
    let mut all: BTreeMap<String, &str> = labels
        .iter()
        .filter(|(k, _)| !k.starts_with(CILIUM_OWNED_PREFIX))
        .map(|(k, v)| (k.clone(), v.as_str()))
        .collect();
    for (k, v) in namespace_labels {
        all.insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
    }
    all.insert(NAMESPACE_LABEL.to_owned(), namespace);
    if service_account.is_empty() {
        all.remove(SERVICE_ACCOUNT_LABEL);
    } else {
        all.insert(SERVICE_ACCOUNT_LABEL.to_owned(), service_account);
    }
    all.insert(CLUSTER_LABEL.to_owned(), cluster);
    LabelSet::from_labels(
        all.into_iter()
            .filter(|(k, _)| filter.keeps("k8s", k))
            .map(|(k, v)| Label::k8s(&k, v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_matches_ciliums_list() {
        let f = LabelFilter::default();
        for dropped in [
            "kubernetes.io/role",
            "k8s.io/team",
            "io.kubernetes.container.name",
            "beta.kubernetes.io/arch",
            "failure-domain.beta.kubernetes.io/zone",
            "etcd_node",
            "annotationfoo",
            "pod-template-hashx",
            "controller-revision-hash",
            "statefulset.kubernetes.io/pod-name",
            "apps.kubernetes.io/pod-index",
            "batch.kubernetes.io/job-completion-index",
        ] {
            assert!(!f.keeps("k8s", dropped), "{dropped} must be dropped");
        }
        for kept in [
            "app",
            "job-name",
            "batch.kubernetes.io/job-name",
            "batch.kubernetes.io/controller-uid",
            "controller-uid",
            "app.kubernetes.io/name",
            "io.kubernetes.pod.namespace",
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name",
            "io.cilium.k8s.policy.serviceaccount",
            "io.cilium.k8s.policy.cluster",
            "my.kubernetes.io/x",
        ] {
            assert!(f.keeps("k8s", kept), "{kept} must be kept");
        }
        // The ignore pattern reaches past the include for a namespace
        // label named like a beta label.
        assert!(!f.keeps(
            "k8s",
            "io.cilium.k8s.namespace.labels.beta.kubernetes.io/arch"
        ));
    }

    #[test]
    fn user_patterns_make_an_allow_list() {
        let f = LabelFilter::with_patterns("k8s:app k8s:!team").expect("parses");
        assert!(f.keeps("k8s", "app"));
        assert!(f.keeps("k8s", "application"), "a pattern is a prefix regex");
        assert!(!f.keeps("k8s", "tier"), "only included labels are kept");
        assert!(f.keeps("k8s", "io.kubernetes.pod.namespace"));
        assert!(!f.keeps("other", "app"), "the source must match");
        let g = LabelFilter::with_patterns("!tier").expect("parses");
        assert!(!g.keeps("k8s", "tier"));
        assert!(g.keeps("k8s", "app"), "ignore-only patterns keep the rest");
        assert!(LabelFilter::with_patterns("k8s:(").is_err());
        assert!(LabelFilter::with_patterns("k8s:").is_err());
    }

    #[test]
    fn pod_cannot_spoof_cilium_labels() {
        let mut own = BTreeMap::new();
        own.insert(
            "io.cilium.k8s.policy.serviceaccount".to_owned(),
            "admin".to_owned(),
        );
        own.insert(
            "io.cilium.k8s.namespace.labels.team".to_owned(),
            "x".to_owned(),
        );
        own.insert(
            "io.kubernetes.pod.namespace".to_owned(),
            "kube-system".to_owned(),
        );
        own.insert("app".to_owned(), "w".to_owned());
        let set = pod_labels(
            &own,
            "a",
            &BTreeMap::new(),
            "sa",
            "default",
            &LabelFilter::default(),
        );
        assert_eq!(set.get("k8s", SERVICE_ACCOUNT_LABEL), Some("sa"));
        assert_eq!(set.get("k8s", NAMESPACE_LABEL), Some("a"));
        assert_eq!(set.values(Some("k8s"), NAMESPACE_LABEL).count(), 1);
        assert_eq!(set.get("k8s", "io.cilium.k8s.namespace.labels.team"), None);
        let no_sa = pod_labels(
            &own,
            "a",
            &BTreeMap::new(),
            "",
            "default",
            &LabelFilter::default(),
        );
        assert_eq!(no_sa.get("k8s", SERVICE_ACCOUNT_LABEL), None);
    }
}
