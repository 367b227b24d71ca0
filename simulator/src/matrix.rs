//! The full connectivity matrix: for every ordered pair of pods, which
//! protocols and ports the datapath allows.
//!
//! Between two pods the datapath does two lookups: egress in the source's
//! map for the destination's identity, then ingress in the destination's
//! map for the source's identity. Each lookup's answer over the whole
//! port space depends only on (map, direction, peer identity), and for a
//! peer identity the map never names, only on (map, direction): so the
//! allowed port set of each is computed once, from the entries of that
//! identity and of the wildcard identity alone (verdicts change only where
//! one of them starts or ends), and interned. A pair's answer is the
//! intersection of two interned sets, itself cached by the pair of
//! indices. Pods with the same identity and map are one class; pairs are
//! expanded to pods only when they are written, one at a time.

use crate::eval::{judge, Resolved, Side as Side_};
use crate::flow::Verdict;
use compiler::compile::{BuildFnv, Compiled};
use compiler::mapstate::{Key, PolicyMap};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Protocols judged port by port; every other protocol is judged once
/// (as ICMP echo) and reported as "other".
pub const PORT_PROTOCOLS: [(u8, &str); 3] = [(6, "TCP"), (17, "UDP"), (132, "SCTP")];

/// Allowed traffic from one pod to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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

/// Intersection of two sorted lists of disjoint inclusive ranges.
fn meet_ranges(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

impl Allowed {
    /// What both allow.
    pub fn meet(&self, other: &Allowed) -> Allowed {
        let mut out = Allowed {
            ports: BTreeMap::new(),
            other: self.other && other.other,
        };
        for (p, a) in &self.ports {
            if let Some(b) = other.ports.get(p) {
                let r = meet_ranges(a, b);
                if !r.is_empty() {
                    out.ports.insert(p, r);
                }
            }
        }
        out
    }

    /// Everything: every port of every protocol.
    pub fn all() -> Allowed {
        Allowed {
            ports: PORT_PROTOCOLS
                .iter()
                .map(|(_, n)| (*n, vec![(0, 65535)]))
                .collect(),
            other: true,
        }
    }
}

/// The span of keys of one (identity, direction) in a map's order.
fn range_of(identity: u32, egress: bool) -> std::ops::RangeInclusive<Key> {
    let lo = Key {
        identity,
        egress,
        proto: 0,
        dport: 0,
        plen: 0,
    };
    let hi = Key {
        proto: u8::MAX,
        dport: u16::MAX,
        plen: u8::MAX,
        ..lo
    };
    lo..=hi
}

/// The keys of one (identity, direction) of a map, in order.
fn keys_of(m: &PolicyMap, identity: u32, egress: bool) -> impl Iterator<Item = &Key> {
    m.entries.range(range_of(identity, egress)).map(|(k, _)| k)
}

/// What one lookup allows over the whole port space: `lookup(identity,
/// egress, ..)` judged once per interval between the boundaries of the
/// entries that can decide it (those of `identity` and of the wildcard).
/// Identity 0 stands for every identity the map does not name, as the
/// datapath's lookup falls back to the wildcard entries for those.
fn port_set(m: &PolicyMap, identity: u32, egress: bool) -> Allowed {
    let mut cuts: Vec<Vec<u32>> = vec![vec![0]; PORT_PROTOCOLS.len()];
    let named = (identity != 0).then(|| keys_of(m, identity, egress));
    for k in keys_of(m, 0, egress).chain(named.into_iter().flatten()) {
        // Keys of whole protocols (or everything) have no boundary inside one.
        let (Some((start, end)), Some(i)) = (
            k.port_span(),
            PORT_PROTOCOLS.iter().position(|(p, _)| *p == k.proto),
        ) else {
            continue;
        };
        cuts[i].push(start);
        cuts[i].push(end);
    }
    for starts in &mut cuts {
        starts.sort_unstable();
        starts.dedup();
        starts.retain(|&x| x <= 65535);
    }
    sweep(&cuts, |proto, port| {
        m.lookup(identity, egress, proto, port)
            .is_some_and(|h| !h.entry.deny)
    })
}

/// What `allows` allows, judged once per interval: `starts` holds, per
/// protocol of [`PORT_PROTOCOLS`], the sorted starts of the intervals over
/// which the verdict cannot change (the first is 0). Protocols without
/// ports are judged as ICMP echo, as a flow of them would be.
fn sweep(starts: &[Vec<u32>], allows: impl Fn(u8, u16) -> bool) -> Allowed {
    let mut out = Allowed::default();
    for (starts, (proto, name)) in starts.iter().zip(PORT_PROTOCOLS.iter()) {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for (j, &lo) in starts.iter().enumerate() {
            let hi = starts.get(j + 1).map_or(65535, |&n| n - 1) as u16;
            let lo = lo as u16;
            if allows(*proto, lo) {
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
    out.other = allows(1, 8);
    out
}

/// What of an entry decides a lookup: protocol, port, prefix length,
/// deny, precedence.
type EntryShape = (u8, u16, u8, bool, u32);

/// One direction of one map: the interned set for each identity it
/// names, and for every other identity.
#[derive(Default)]
struct Side {
    named: HashMap<u32, u32, BuildFnv>,
    other: u32,
}

impl Side {
    fn get(&self, identity: u32) -> u32 {
        self.named.get(&identity).copied().unwrap_or(self.other)
    }
}

/// The matrix of a compiled state, by classes of pods.
pub struct Matrix<'c> {
    c: &'c Compiled,
    /// Endpoint indices of the pods (host endpoints are not pods), in
    /// endpoint order.
    pods: Vec<usize>,
    /// The class of each of `pods`.
    class: Vec<u32>,
    /// Each class's (identity, map).
    classes: Vec<(u32, usize)>,
    /// Per map index: [ingress, egress], for the maps pods use.
    sides: Vec<Option<[Side; 2]>>,
    sets: Vec<Allowed>,
    interned: HashMap<Allowed, u32>,
    meets: HashMap<(u32, u32), u32, BuildFnv>,
}

impl<'c> Matrix<'c> {
    /// The matrix of every pair of pods.
    pub fn new(c: &'c Compiled) -> Self {
        Matrix::within(c, &Allowed::all())
    }

    /// The matrix restricted to what `only` allows (e.g. one port).
    pub fn within(c: &'c Compiled, only: &Allowed) -> Self {
        let pods: Vec<usize> = (0..c.endpoints.len())
            .filter(|&i| !c.endpoints[i].host)
            .collect();
        let mut m = Matrix {
            c,
            class: Vec::with_capacity(pods.len()),
            pods,
            classes: Vec::new(),
            sides: (0..c.maps.len()).map(|_| None).collect(),
            sets: Vec::new(),
            interned: HashMap::new(),
            meets: HashMap::default(),
        };
        let mut class_of: HashMap<(u32, usize), u32, BuildFnv> = HashMap::default();
        for &i in &m.pods {
            let e = &c.endpoints[i];
            let key = (e.identity, e.map);
            let next = m.classes.len() as u32;
            let id = *class_of.entry(key).or_insert_with(|| {
                m.classes.push(key);
                next
            });
            m.class.push(id);
        }
        let maps: Vec<usize> = {
            let mut v: Vec<usize> = m.classes.iter().map(|&(_, map)| map).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for map in maps {
            let pm = &c.maps[map];
            let mut both: [Side; 2] = Default::default();
            for (d, side) in both.iter_mut().enumerate() {
                let egress = d == 1;
                let s = port_set(pm, 0, egress).meet(only);
                side.other = m.intern(s);
                let mut named: Vec<u32> = pm
                    .entries
                    .keys()
                    .filter(|k| k.egress == egress && k.identity != 0)
                    .map(|k| k.identity)
                    .collect();
                named.dedup();
                // Identities whose entries are alike (same ports, verdicts
                // and precedence: a selector that names many) get one set;
                // the lookups are done once per kind of entry list.
                let mut by_entries: HashMap<Vec<EntryShape>, u32> = HashMap::new();
                let mut sig = Vec::new();
                for id in named {
                    sig.clear();
                    sig.extend(
                        pm.entries
                            .range(range_of(id, egress))
                            .map(|(k, e)| (k.proto, k.dport, k.plen, e.deny, e.precedence)),
                    );
                    let s = match by_entries.get(sig.as_slice()) {
                        Some(&s) => s,
                        None => {
                            let s = port_set(pm, id, egress).meet(only);
                            let s = m.intern(s);
                            by_entries.insert(sig.clone(), s);
                            s
                        }
                    };
                    side.named.insert(id, s);
                }
            }
            m.sides[map] = Some(both);
        }
        m
    }

    fn intern(&mut self, s: Allowed) -> u32 {
        if let Some(&i) = self.interned.get(&s) {
            return i;
        }
        let i = self.sets.len() as u32;
        self.sets.push(s.clone());
        self.interned.insert(s, i);
        i
    }

    fn side(&self, map: usize, egress: bool) -> &Side {
        // Every class's map has its sides (built in `within`).
        &self.sides[map].as_ref().expect("sides of a pod's map")[usize::from(egress)]
    }

    fn meet(&mut self, a: u32, b: u32) -> u32 {
        if a == b {
            return a;
        }
        if let Some(&r) = self.meets.get(&(a, b)) {
            return r;
        }
        let s = self.sets[a as usize].meet(&self.sets[b as usize]);
        let r = self.intern(s);
        self.meets.insert((a, b), r);
        r
    }

    /// Endpoint indices of the pods, in endpoint order.
    pub fn pods(&self) -> &[usize] {
        &self.pods
    }

    /// The class of the pod at `pos` in [`Matrix::pods`].
    pub fn class_of(&self, pos: usize) -> usize {
        self.class[pos] as usize
    }

    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// An interned set, by its index.
    pub fn set(&self, i: u32) -> &Allowed {
        &self.sets[i as usize]
    }

    /// What a pod of class `a` may send to a pod of each class (another
    /// pod: a pod reaching itself is not judged), as set indices.
    pub fn row(&mut self, a: usize, out: &mut Vec<u32>) {
        out.clear();
        let (id_a, map_a) = self.classes[a];
        for b in 0..self.classes.len() {
            let (id_b, map_b) = self.classes[b];
            let e = self.side(map_a, true).get(id_b);
            let i = self.side(map_b, false).get(id_a);
            let r = self.meet(e, i);
            out.push(r);
        }
    }

    /// Every ordered pair of distinct pods, as (source, destination)
    /// endpoint indices and what is allowed: for small states and tests;
    /// printing goes through [`Matrix::row`].
    pub fn pairs(&mut self) -> Vec<(usize, usize, Allowed)> {
        let mut out = Vec::new();
        let mut row = Vec::new();
        for ai in 0..self.pods.len() {
            self.row(self.class_of(ai), &mut row);
            for bi in 0..self.pods.len() {
                if ai != bi {
                    let s = row[self.class_of(bi)];
                    out.push((self.pods[ai], self.pods[bi], self.sets[s as usize].clone()));
                }
            }
        }
        out
    }

    pub fn compiled(&self) -> &'c Compiled {
        self.c
    }
}

/// The definition the classes must agree with: every pair judged by the
/// simulator's own [`judge`] at every port boundary of any map. Slow
/// (pairs × boundaries); for tests.
pub fn by_judging(c: &Compiled) -> Vec<(usize, usize, Allowed)> {
    let mut cuts: BTreeMap<u8, std::collections::BTreeSet<u32>> = PORT_PROTOCOLS
        .iter()
        .map(|(p, _)| (*p, std::collections::BTreeSet::from([0u32])))
        .collect();
    for m in &c.maps {
        for k in m.entries.keys() {
            if let (Some((start, end)), Some(set)) = (k.port_span(), cuts.get_mut(&k.proto)) {
                set.insert(start);
                set.insert(end);
            }
        }
    }
    let starts: Vec<Vec<u32>> = PORT_PROTOCOLS
        .iter()
        .map(|(p, _)| cuts[p].iter().copied().filter(|&s| s <= 65535).collect())
        .collect();
    let side = |i: usize| {
        let e = &c.endpoints[i];
        Side_ {
            endpoint: Some(e),
            ip: e.ips.first().copied(),
            entity: None,
            node: e.node.as_deref(),
        }
    };
    let pods: Vec<usize> = (0..c.endpoints.len())
        .filter(|&i| !c.endpoints[i].host)
        .collect();
    let mut out = Vec::new();
    for &a in &pods {
        for &b in &pods {
            if a == b {
                continue;
            }
            let verdict = |protocol: u8, port: u16| {
                let f = Resolved {
                    src: side(a),
                    dst: side(b),
                    protocol,
                    port,
                };
                judge(c, &f).verdict == Verdict::Allowed
            };
            let x = sweep(&starts, verdict);
            out.push((a, b, x));
        }
    }
    out
}
