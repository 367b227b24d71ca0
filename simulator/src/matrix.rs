//! The full connectivity matrix: for every ordered pair of pods, which
//! protocols and ports the datapath allows.
//!
//! Verdicts only change at port boundaries that appear in some map entry,
//! so each protocol's port space is cut into intervals at those boundaries
//! and judged once per interval. Pods that share an identity and a policy
//! map behave alike as sources and as destinations, so pairs are judged per
//! class and expanded at the end.

use crate::eval::{judge, Resolved, Side};
use crate::flow::Verdict;
use compiler::compile::Compiled;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Protocols judged port by port; every other protocol is judged once
/// (as ICMP echo) and reported as "other".
pub const PORT_PROTOCOLS: [(u8, &str); 3] = [(6, "TCP"), (17, "UDP"), (132, "SCTP")];

/// Allowed traffic from one pod to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// Per protocol name, inclusive port ranges.
    pub ports: BTreeMap<&'static str, Vec<(u16, u16)>>,
    /// Protocols without ports (ICMP and others).
    pub other: bool,
}

impl Allowed {
    pub fn is_none(&self) -> bool {
        self.ports.is_empty() && !self.other
    }

    pub fn is_all(&self) -> bool {
        self.other
            && PORT_PROTOCOLS
                .iter()
                .all(|(_, n)| self.ports.get(n).is_some_and(|r| r == &[(0, 65535)]))
    }

    /// `All connections`, or `TCP 80,8000-8100; UDP 53`.
    pub fn text(&self) -> String {
        if self.is_all() {
            return "All connections".into();
        }
        let mut parts: Vec<String> = self
            .ports
            .iter()
            .map(|(p, rs)| {
                let r: Vec<String> = rs
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                format!("{p} {}", r.join(","))
            })
            .collect();
        if self.other {
            parts.push("other protocols".into());
        }
        parts.join("; ")
    }
}

/// Port interval starts per protocol, from every entry of every map.
fn cuts(c: &Compiled) -> BTreeMap<u8, Vec<u16>> {
    let mut out: BTreeMap<u8, BTreeSet<u32>> = PORT_PROTOCOLS
        .iter()
        .map(|(p, _)| (*p, BTreeSet::from([0u32])))
        .collect();
    for m in &c.maps {
        for k in m.entries.keys() {
            if k.plen <= 8 {
                continue;
            }
            let size = 1u32 << (24 - u32::from(k.plen));
            if let Some(set) = out.get_mut(&k.proto) {
                set.insert(u32::from(k.dport));
                set.insert(u32::from(k.dport) + size);
            }
        }
    }
    out.into_iter()
        .map(|(p, s)| {
            (
                p,
                s.into_iter()
                    .filter(|&x| x <= 65535)
                    .map(|x| x as u16)
                    .collect(),
            )
        })
        .collect()
}

/// The matrix over every pair of distinct pods, in endpoint order.
pub fn matrix(c: &Compiled) -> Vec<(usize, usize, Allowed)> {
    let cuts = cuts(c);
    let pods: Vec<usize> = (0..c.endpoints.len())
        .filter(|&i| !c.endpoints[i].host)
        .collect();
    // Classes of interchangeable pods: same identity, same map, same node
    // (node matters for host-relative identities).
    let mut class_of = BTreeMap::new();
    let mut reps = Vec::new();
    let mut class = Vec::with_capacity(pods.len());
    for &i in &pods {
        let e = &c.endpoints[i];
        let key = (e.identity, e.map, e.node.clone());
        let id = *class_of.entry(key).or_insert_with(|| {
            reps.push(i);
            reps.len() - 1
        });
        class.push(id);
    }
    let side = |i: usize| {
        let e = &c.endpoints[i];
        Side {
            endpoint: Some(e),
            ip: e.ips.first().copied(),
            entity: None,
            node: e.node.as_deref(),
        }
    };
    let allowed = |a: usize, b: usize| -> Allowed {
        let mut out = Allowed::default();
        for (proto, name) in PORT_PROTOCOLS {
            let starts = &cuts[&proto];
            let mut ranges: Vec<(u16, u16)> = Vec::new();
            for (j, &lo) in starts.iter().enumerate() {
                let hi = starts.get(j + 1).map_or(65535, |&n| n - 1);
                let f = Resolved {
                    src: side(a),
                    dst: side(b),
                    protocol: proto,
                    port: lo,
                };
                if judge(c, &f).verdict == Verdict::Allowed {
                    match ranges.last_mut() {
                        Some(last) if u32::from(last.1) + 1 == u32::from(lo) => last.1 = hi,
                        _ => ranges.push((lo, hi)),
                    }
                }
            }
            if !ranges.is_empty() {
                out.ports.insert(name, ranges);
            }
        }
        let f = Resolved {
            src: side(a),
            dst: side(b),
            protocol: 1,
            port: 8,
        };
        out.other = judge(c, &f).verdict == Verdict::Allowed;
        out
    };
    let n = reps.len();
    let mut by_class = vec![None; n * n];
    let mut diag: Vec<Option<Allowed>> = vec![None; n];
    let mut out = Vec::new();
    for (ai, &a) in pods.iter().enumerate() {
        for (bi, &b) in pods.iter().enumerate() {
            if a == b {
                continue;
            }
            let slot = class[ai] * n + class[bi];
            // Two pods of one class are still distinct pods: judge them
            // with their own sides (the loopback shortcut must not apply).
            let v = if class[ai] == class[bi] {
                diag[class[ai]].get_or_insert_with(|| allowed(a, b)).clone()
            } else {
                by_class[slot]
                    .get_or_insert_with(|| allowed(reps[class[ai]], reps[class[bi]]))
                    .clone()
            };
            out.push((a, b, v));
        }
    }
    out
}
