//! Label selectors in Cilium's resolved form, and their scoping rules.
//!
//! IR selectors are written relative to where they appear: a CNP's
//! `fromEndpoints: [{}]` means "every endpoint in this namespace", a KNP's
//! `namespaceSelector` talks about namespace labels. [`Sel`] is the
//! resolved form: a conjunction of requirements over identity labels, with
//! the namespace (and, for KNP, the `k8s:` source) made explicit, as Cilium's
//! importer does (`pkg/k8s/apis/cilium.io/utils/utils.go`).

use crate::labels::{LabelSet, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use policy_lang::ir::{Operator, Selector};
use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Req {
    /// `None` matches a label from any source.
    pub source: Option<String>,
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Req {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let src = self.source.as_deref();
        let mut vals = labels.values(src, &self.key);
        match self.op {
            Op::In => vals.any(|v| self.values.iter().any(|w| w == v)),
            Op::NotIn => !vals.any(|v| self.values.iter().any(|w| w == v)),
            Op::Exists => vals.next().is_some(),
            Op::DoesNotExist => vals.next().is_none(),
        }
    }

    fn mentions(
        &self,
        source_ok: impl Fn(Option<&str>) -> bool,
        key: impl Fn(&str) -> bool,
    ) -> bool {
        source_ok(self.source.as_deref()) && key(&self.key)
    }
}

/// A conjunction of requirements; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Sel {
    pub reqs: Vec<Req>,
}

impl Sel {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Converts an IR selector. `default_source` is the source of keys
    /// written without one: `None` (any) in Cilium policies, `k8s` in
    /// Kubernetes NetworkPolicies. An explicit `any:` means any source.
    pub fn from_ir(s: &Selector, default_source: Option<&str>) -> Sel {
        let source = |src: &Option<String>| match src.as_deref() {
            Some("any") => None,
            Some(s) => Some(s.to_owned()),
            None => default_source.map(str::to_owned),
        };
        let mut reqs: Vec<Req> = s
            .match_labels
            .iter()
            .map(|(k, v)| Req {
                source: source(&k.value.source),
                key: k.value.key.clone(),
                op: Op::In,
                values: vec![v.value.clone()],
            })
            .collect();
        reqs.extend(s.match_expressions.iter().map(|r| Req {
            source: source(&r.key.value.source),
            key: r.key.value.key.clone(),
            op: match r.operator.value {
                Operator::In => Op::In,
                Operator::NotIn => Op::NotIn,
                Operator::Exists => Op::Exists,
                Operator::DoesNotExist => Op::DoesNotExist,
            },
            values: r.values.iter().map(|v| v.value.clone()).collect(),
        }));
        Sel { reqs }
    }

    pub fn and(mut self, other: &Sel) -> Sel {
        self.reqs.extend(other.reqs.iter().cloned());
        self
    }

    pub fn with(mut self, req: Req) -> Sel {
        self.reqs.push(req);
        self
    }

    fn any_req(
        &self,
        source_ok: impl Fn(Option<&str>) -> bool + Copy,
        key: impl Fn(&str) -> bool + Copy,
    ) -> bool {
        self.reqs.iter().any(|r| r.mentions(source_ok, key))
    }

    pub fn has_reserved(&self) -> bool {
        self.reqs
            .iter()
            .any(|r| r.source.as_deref() == Some("reserved"))
    }

    fn k8s_or_any(s: Option<&str>) -> bool {
        matches!(s, None | Some("k8s"))
    }

    /// Whether the selector already says which namespace(s) it means: by
    /// the namespace label or by namespace labels.
    pub fn constrains_namespace(&self) -> bool {
        self.any_req(Sel::k8s_or_any, |k| k == NAMESPACE_LABEL)
            || self.any_req(Sel::k8s_or_any, |k| k.starts_with(NAMESPACE_LABELS_PREFIX))
    }

    /// Whether the selector mentions `key` (from k8s or any source).
    pub fn mentions_key(&self, key: &str) -> bool {
        self.any_req(Sel::k8s_or_any, |k| k == key)
    }
}

pub fn namespace_is(ns: &str) -> Req {
    Req {
        source: Some("k8s".to_owned()),
        key: NAMESPACE_LABEL.to_owned(),
        op: Op::In,
        values: vec![ns.to_owned()],
    }
}

pub fn namespace_exists() -> Req {
    Req {
        source: Some("k8s".to_owned()),
        key: NAMESPACE_LABEL.to_owned(),
        op: Op::Exists,
        values: vec![],
    }
}

/// A peer selector (`fromEndpoints`, `toEndpoints`, requires) of a Cilium
/// rule, scoped as the importer scopes it: in a namespaced policy the
/// policy's namespace is added unless the selector names a namespace itself
/// or uses reserved labels; in a cluster-wide policy "any namespace" is
/// added instead (unless the subject is `reserved:init`).
pub fn scope_peer(sel: Sel, policy_ns: Option<&str>, subject_is_init: bool) -> Sel {
    if sel.has_reserved() || sel.constrains_namespace() {
        return sel;
    }
    match policy_ns {
        Some(ns) => sel.with(namespace_is(ns)),
        None if subject_is_init => sel,
        None => sel.with(namespace_exists()),
    }
}

impl fmt::Display for Sel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reqs.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let key = match &r.source {
                Some(s) => format!("{s}:{}", r.key),
                None => format!("any:{}", r.key),
            };
            match r.op {
                Op::In if r.values.len() == 1 => write!(f, "{key}={}", r.values[0])?,
                Op::In => write!(f, "{key} in ({})", r.values.join(","))?,
                Op::NotIn => write!(f, "{key} notin ({})", r.values.join(","))?,
                Op::Exists => write!(f, "{key}")?,
                Op::DoesNotExist => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

/// Which label sets of a list carry each (key, value), whatever the
/// source: a selector's `In` or `Exists` requirement then names the few
/// sets worth matching instead of all of them. Matching every rule against
/// every identity was the largest cost of compiling big clusters.
#[derive(Default)]
pub struct LabelIndex {
    by_key: std::collections::HashMap<String, std::collections::HashMap<String, Vec<u32>>>,
    len: usize,
}

impl LabelIndex {
    pub fn new<'a>(sets: impl IntoIterator<Item = &'a LabelSet>) -> LabelIndex {
        let mut ix = LabelIndex::default();
        for (i, set) in sets.into_iter().enumerate() {
            for l in set.iter() {
                let list = ix
                    .by_key
                    .entry(l.key.clone())
                    .or_default()
                    .entry(l.value.clone())
                    .or_default();
                // A set with one key from two sources lists once.
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
            ix.len = i + 1;
        }
        ix
    }

    /// Positions (ascending) of the sets that may match `sel`: a superset
    /// of those that do, so the caller still matches each.
    pub fn candidates(&self, sel: &Sel) -> Vec<u32> {
        let mut best: Option<Vec<u32>> = None;
        for r in &sel.reqs {
            let lists: Vec<&Vec<u32>> = match r.op {
                Op::In => match self.by_key.get(&r.key) {
                    Some(values) => r.values.iter().filter_map(|v| values.get(v)).collect(),
                    None => Vec::new(),
                },
                Op::Exists => match self.by_key.get(&r.key) {
                    Some(values) => values.values().collect(),
                    None => Vec::new(),
                },
                Op::NotIn | Op::DoesNotExist => continue,
            };
            let n: usize = lists.iter().map(|l| l.len()).sum();
            if best.as_ref().is_some_and(|b| b.len() <= n) {
                continue;
            }
            let mut v: Vec<u32> = lists.into_iter().flatten().copied().collect();
            if v.len() > 1 {
                v.sort_unstable();
                v.dedup();
            }
            best = Some(v);
            if best.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
        }
        best.unwrap_or_else(|| (0..self.len as u32).collect())
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::labels::Label;
    use proptest::prelude::*;

    fn label_set() -> impl Strategy<Value = LabelSet> {
        proptest::collection::vec((0..2usize, 0..3usize, 0..3usize), 0..4).prop_map(|ls| {
            LabelSet::from_labels(
                ls.into_iter()
                    .map(|(s, k, v)| {
                        Label::new(
                            ["k8s", "cni"][s],
                            ["app", "tier", "io.kubernetes.pod.namespace"][k],
                            ["a", "b", ""][v],
                        )
                    })
                    .collect(),
            )
        })
    }

    fn req() -> impl Strategy<Value = Req> {
        (
            0..3usize,
            0..3usize,
            0..4usize,
            proptest::collection::vec(0..3usize, 0..3),
        )
            .prop_map(|(s, k, op, vs)| Req {
                source: [None, Some("k8s".to_owned()), Some("cni".to_owned())][s].clone(),
                key: ["app", "tier", "io.kubernetes.pod.namespace"][k].to_owned(),
                op: [Op::In, Op::NotIn, Op::Exists, Op::DoesNotExist][op],
                values: vs
                    .into_iter()
                    .map(|v| ["a", "b", ""][v].to_owned())
                    .collect(),
            })
    }

    proptest! {
        // The index may only skip sets that do not match.
        #[test]
        fn candidates_hold_every_match(
            sets in proptest::collection::vec(label_set(), 0..12),
            reqs in proptest::collection::vec(req(), 0..3),
        ) {
            let sel = Sel { reqs };
            let ix = LabelIndex::new(&sets);
            let got = ix.candidates(&sel);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(&sorted, &got);
            for (i, s) in sets.iter().enumerate() {
                if sel.matches(s) {
                    prop_assert!(got.contains(&(i as u32)), "set {} matches but is not a candidate", i);
                }
            }
        }
    }
}
