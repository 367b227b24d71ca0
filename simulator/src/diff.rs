//! What changes between two compiled states of one cluster: every
//! (source, destination, protocol, port range) whose end-to-end verdict,
//! or whose L7 policy, differs.
//!
//! Exact, not sampled, and only as much work as the change needs:
//! - a pod's behaviour is fixed by what it is (identity labels, node) and
//!   its policy map, written with identity *labels* rather than numbers
//!   (identity numbers may be allocated differently on the two sides);
//!   pods alike on both sides form one class, judged once;
//! - a pair can only change if one of its two ends changed, so only pairs
//!   with a changed end are judged;
//! - verdicts only change at port boundaries of the two maps involved, so
//!   each pair is judged once per interval between those boundaries, on
//!   both sides.
//!
//! Addresses outside the cluster are cut into ranges the datapath tells
//! apart (the prefixes of both ipcaches), one peer per range.

use crate::eval::{judge, Outcome, Resolved, Side};
use crate::flow::Verdict;
use compiler::compile::{Compiled, Endpoint};
use compiler::identity::reserved_name;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// Protocols compared port by port (ICMP by type).
pub(crate) const PROTOCOLS: [(u8, &str, u16); 4] = [
    (6, "TCP", 65535),
    (17, "UDP", 65535),
    (132, "SCTP", 65535),
    (1, "ICMP", 255),
];

/// One compiled side of the comparison.
#[derive(Clone, Copy)]
pub struct State<'a> {
    pub compiled: &'a Compiled,
}

/// What kind of change a range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Denied in the base, allowed in the head.
    Opened,
    /// Allowed in the base, denied in the head.
    Closed,
    /// Allowed on both sides, with other L7 rules.
    L7,
}

/// A set of peers that behave alike on both sides.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// How a person names it: a workload, a pod, an address range.
    pub name: String,
    /// The identity's labels (head side), for reading.
    pub identity: String,
    /// The pods, or the address range's first address.
    pub members: Vec<String>,
}

/// How each side decides a change, at its first port.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub verdict: Verdict,
    /// The deciding step, as `simulate` explains it.
    pub reason: String,
    /// The rules behind it (`policy path (file:line:col)`).
    pub rules: Vec<String>,
    /// The L7 rules that apply to this peer on the port, if it redirects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<Vec<String>>,
    /// Where the rules are written.
    pub sites: Vec<Site>,
}

/// A rule's place in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub policy: String,
    pub file: String,
    pub line: u32,
    #[serde(rename = "column")]
    pub col: u32,
}

/// A change between two groups on one protocol.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// Indexes into [`Diff::groups`].
    pub from: usize,
    pub to: usize,
    pub kind: Kind,
    /// Per protocol, in TCP, UDP, SCTP, ICMP order.
    pub ports: Vec<Ports>,
    pub base: Decision,
    pub head: Decision,
    /// For an L7 change: a request the head decides otherwise than the
    /// base (checked with both sides' proxies), as far as the automata
    /// tell within a bounded search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
}

/// A request whose L7 verdict the change flips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Witness {
    /// `HTTP POST /checkout`, `DNS a.example.com.`, ...
    pub request: String,
    /// What the head does with it (the base does the other).
    pub head: Verdict,
}

/// Inclusive port (or ICMP type) ranges of one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ports {
    pub protocol: &'static str,
    pub ranges: Vec<(u16, u16)>,
}

impl Ports {
    /// Whether the ranges are the protocol's whole space.
    pub fn is_all(&self) -> bool {
        let max = PROTOCOLS
            .iter()
            .find(|p| p.1 == self.protocol)
            .map_or(65535, |p| p.2);
        self.ranges == [(0, max)]
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return write!(f, "{} (all)", self.protocol);
        }
        let what = if self.protocol == "ICMP" {
            "ICMP type"
        } else {
            self.protocol
        };
        write!(f, "{what} ")?;
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            if a == b {
                write!(f, "{sep}{a}")?;
            } else {
                write!(f, "{sep}{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// The ports of a change, `TCP 80,443; UDP (all)`.
pub fn ports_text(ports: &[Ports]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The whole answer.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    pub groups: Vec<Group>,
    /// Opened first, then closed, then L7; by source, destination.
    pub deltas: Vec<Delta>,
    /// Pods that are endpoints on one side only: their connections are
    /// not compared.
    pub only_base: Vec<String>,
    pub only_head: Vec<String>,
    /// Classes of peers whose policy or identity changed.
    pub changed_classes: usize,
    /// Class pairs judged (each on both sides, per port interval).
    pub pairs_judged: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.deltas.iter().filter(|d| d.kind == kind).count()
    }
}

/// A peer of the comparison, named the same way on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Pod(String),
    Addr(IpAddr),
}

/// The text of an identity, independent of its number.
pub(crate) fn id_text(c: &Compiled, id: u32) -> String {
    if id == 0 {
        return "*".into();
    }
    if let Some(n) = reserved_name(id) {
        return format!("reserved:{n}");
    }
    match c.identity(id) {
        Some(i) => {
            let mut l: Vec<String> = i.labels.iter().map(|l| l.to_string()).collect();
            l.sort();
            l.join(",")
        }
        None => format!("#{id}"),
    }
}

/// A 128-bit digest of a value's hash: two seeds, so that a collision of
/// one 64-bit hash cannot hide a change.
fn digest(f: impl Fn(&mut std::collections::hash_map::DefaultHasher)) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    let mut b = std::collections::hash_map::DefaultHasher::new();
    0xa5u8.hash(&mut b);
    f(&mut a);
    f(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// A 64-bit finaliser (splitmix64's): every input bit reaches every
/// output bit.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One map entry's digest, from its identity's digest and its packed
/// fields: cheap enough for the million entries of a large cluster.
fn entry_digest(id: u128, w1: u64, w2: u64) -> u128 {
    let (lo, hi) = (id as u64, (id >> 64) as u64);
    let a = mix64(lo ^ mix64(w1 ^ mix64(w2)));
    let b = mix64(hi ^ mix64(w1.rotate_left(29) ^ mix64(w2 ^ 0x9e37_79b9_7f4a_7c15)));
    (u128::from(b) << 64) | u128::from(a)
}

/// A map's content with identities written as labels.
fn map_digest(c: &Compiled, m: usize, ids: &mut HashMap<u32, u128>) -> u128 {
    let map = &c.maps[m];
    // Each identity's labels stand as their digest: a million entries
    // are sorted as numbers, not strings.
    let mut text = |id: u32| {
        *ids.entry(id).or_insert_with(|| {
            let t = id_text(c, id);
            digest(|h| t.hash(h))
        })
    };
    // The entries as a multiset: the sum of their digests does not depend
    // on the order, so identity numbering changes nothing and nothing is
    // sorted.
    let entries = map.entries.iter().fold(0u128, |sum, (k, e)| {
        let id = text(k.identity);
        let w1 = (u64::from(k.proto) << 24)
            | (u64::from(k.dport) << 8)
            | (u64::from(k.plen) << 3)
            | (u64::from(k.egress) << 2)
            | (u64::from(e.deny) << 1)
            | u64::from(e.redirect);
        let w2 = (u64::from(e.precedence) << 1) | u64::from(e.auth);
        sum.wrapping_add(entry_digest(id, w1, w2))
    });
    let mut l7: Vec<_> = map
        .l7
        .iter()
        .map(|p| {
            let mut rules: Vec<_> = p
                .rules
                .iter()
                .map(|r| {
                    let mut who: Vec<u128> = r.identities.iter().map(|&i| text(i)).collect();
                    who.sort();
                    let headers: Vec<_> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect();
                    (who, r.text.clone(), headers)
                })
                .collect();
            rules.sort();
            let mut open: Vec<u128> = p.open.iter().map(|&i| text(i)).collect();
            open.sort();
            (
                p.egress,
                p.proto,
                p.dport,
                p.plen,
                format!("{:?}", p.kind),
                rules,
                open,
            )
        })
        .collect();
    l7.sort();
    digest(|h| {
        entries.hash(h);
        l7.hash(h);
    })
}

/// What a map says about each peer identity (by its labels; `*` for
/// entries of any identity) in one direction, entries and L7 rules.
fn by_identity(
    c: &Compiled,
    m: usize,
    egress: bool,
    ids: &mut HashMap<u32, String>,
) -> HashMap<String, u128> {
    let map = &c.maps[m];
    let mut text = |id: u32| ids.entry(id).or_insert_with(|| id_text(c, id)).clone();
    let mut parts: HashMap<String, Vec<String>> = HashMap::new();
    for (k, e) in map.entries.iter().filter(|(k, _)| k.egress == egress) {
        parts.entry(text(k.identity)).or_default().push(format!(
            "{} {} {} {} {} {} {}",
            k.proto, k.dport, k.plen, e.deny, e.redirect, e.auth, e.precedence
        ));
    }
    for p in map.l7.iter().filter(|p| p.egress == egress) {
        let at = format!("l7 {} {} {} {:?}", p.proto, p.dport, p.plen, p.kind);
        for r in &p.rules {
            for &i in &r.identities {
                parts
                    .entry(text(i))
                    .or_default()
                    .push(format!("{at} {} {:?}", r.text, r.headers));
            }
        }
        for &i in &p.open {
            parts.entry(text(i)).or_default().push(format!("{at} open"));
        }
    }
    parts
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, digest(|h| v.hash(h)))
        })
        .collect()
}

/// The peers whose verdicts in one direction a change of a map can have
/// changed: those of some identities, or every one.
#[derive(Default)]
struct Affected {
    all: bool,
    ids: std::collections::HashSet<String>,
}

impl Affected {
    fn of(base: &HashMap<String, u128>, head: &HashMap<String, u128>) -> Affected {
        let mut a = Affected::default();
        for (k, v) in base {
            if head.get(k) != Some(v) {
                a.ids.insert(k.clone());
            }
        }
        for k in head.keys() {
            if !base.contains_key(k) {
                a.ids.insert(k.clone());
            }
        }
        a.all = a.ids.contains("*");
        a
    }
}

/// What a pod is on one side, as far as any verdict can tell.
pub(crate) fn endpoint_digest(
    c: &Compiled,
    e: &Endpoint,
    maps: &mut HashMap<usize, u128>,
    ids: &mut HashMap<u32, u128>,
) -> u128 {
    let mut map_of = |m: usize| *maps.entry(m).or_insert_with(|| map_digest(c, m, ids));
    let map = map_of(e.map);
    let audit = e.audit_map.map(&mut map_of);
    let id = id_text(c, e.identity);
    // The node is left out: pods see each other by identity wherever they
    // run; only node addresses look different from each node, and pairs
    // with those are split by node (see `split_by_node`).
    digest(|h| {
        id.hash(h);
        e.enforced.hash(h);
        e.host.hash(h);
        map.hash(h);
        audit.hash(h);
    })
}

/// The first address of each range of the address space that some
/// ipcache prefix of either side starts or ends, except pods' own. Pods'
/// addresses cut nothing: the address after one belongs to the same
/// prefix as the one before it, already a range of its own.
pub(crate) fn address_cells(sides: [&Compiled; 2]) -> Vec<IpAddr> {
    let is_pod = |ip: IpAddr| {
        sides
            .iter()
            .any(|c| c.endpoint_by_ip(ip).is_some_and(|e| !e.host))
    };
    let mut out = Vec::new();
    for v4 in [true, false] {
        let width: u32 = if v4 { 32 } else { 128 };
        let top: u128 = if v4 { u128::from(u32::MAX) } else { u128::MAX };
        let addr = |n: u128| {
            if v4 {
                IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
            } else {
                IpAddr::V6(std::net::Ipv6Addr::from(n))
            }
        };
        let mut starts = BTreeSet::from([0u128]);
        let mut any = v4;
        for c in sides {
            for e in &c.ipcache {
                if e.cidr.addr.is_ipv4() != v4 {
                    continue;
                }
                any = true;
                let host = width - u32::from(e.cidr.prefix_len);
                if host == 0 && is_pod(e.cidr.addr) {
                    continue;
                }
                let lo = e.cidr.network_bits();
                let span = if host >= 128 {
                    u128::MAX
                } else {
                    (1u128 << host) - 1
                };
                starts.insert(lo);
                if lo | span < top {
                    starts.insert((lo | span) + 1);
                }
            }
        }
        if !any {
            continue;
        }
        for n in starts {
            // A range that starts at a pod's address is represented by
            // the first address after the pods there.
            let mut n = n;
            let mut steps = 0;
            while is_pod(addr(n)) && n < top && steps < 256 {
                n += 1;
                steps += 1;
            }
            if !is_pod(addr(n)) {
                out.push(addr(n));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A peer resolved on one side.
fn side_of<'a>(c: &'a Compiled, p: &Peer) -> Option<Side<'a>> {
    match p {
        Peer::Pod(n) => crate::eval::resolve(c, &crate::flow::PeerRef::Pod(n.clone())).ok(),
        Peer::Addr(ip) => crate::eval::resolve(c, &crate::flow::PeerRef::Ip(*ip)).ok(),
    }
}

/// Port boundaries per protocol (in [`PROTOCOLS`] order) of one map in
/// one direction, worked out once per map.
#[derive(Default)]
pub(crate) struct Cuts(HashMap<(usize, usize, bool), std::rc::Rc<PerProtocol>>);

/// Port boundaries of each protocol of [`PROTOCOLS`].
pub(crate) type PerProtocol = [Vec<u32>; 4];

impl Cuts {
    pub(crate) fn of(
        &mut self,
        side: usize,
        c: &Compiled,
        map: usize,
        egress: bool,
    ) -> std::rc::Rc<PerProtocol> {
        self.0
            .entry((side, map, egress))
            .or_insert_with(|| {
                let mut out: [Vec<u32>; 4] = Default::default();
                for k in c.maps[map].entries.keys().filter(|k| k.egress == egress) {
                    let (Some((start, end)), Some(i)) =
                        (k.port_span(), PROTOCOLS.iter().position(|p| p.0 == k.proto))
                    else {
                        continue;
                    };
                    out[i].push(start);
                    out[i].push(end);
                }
                for v in &mut out {
                    v.sort_unstable();
                    v.dedup();
                }
                std::rc::Rc::new(out)
            })
            .clone()
    }
}

/// The L7 rules an outcome's redirecting steps apply to their peer.
fn l7_rules(c: &Compiled, o: &Outcome) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut any = false;
    for s in &o.steps {
        let (Some(key), Some(entry)) = (s.key, s.entry) else {
            continue;
        };
        if !entry.redirect || s.verdict != Verdict::Allowed {
            continue;
        }
        let Some(ep) = c.endpoint(s.endpoint) else {
            continue;
        };
        any = true;
        let dir = if key.egress { "egress" } else { "ingress" };
        for p in c.maps[ep.map].l7_ports(key) {
            let kind = format!("{:?}", p.kind).to_lowercase();
            if p.open.iter().any(|&i| i == 0 || i == s.remote_identity) {
                out.push(format!("{dir} {kind}: every request"));
                continue;
            }
            for r in &p.rules {
                if r.identities
                    .iter()
                    .any(|&i| i == 0 || i == s.remote_identity)
                {
                    let mut t = format!("{dir} {kind}: {}", r.text);
                    for h in &r.headers {
                        match &h.value {
                            Some(v) => t.push_str(&format!(" [{}: {v}]", h.name)),
                            None => t.push_str(&format!(" [{}]", h.name)),
                        }
                    }
                    out.push(t);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    any.then_some(out)
}

fn decision(c: &Compiled, o: &Outcome) -> Decision {
    let st = o.steps.iter().find(|s| Some(s.direction) == o.decided_by);
    Decision {
        verdict: o.verdict,
        reason: st.map_or_else(
            || "a pod reaching itself: no policy applies".to_owned(),
            |s| crate::eval::explain_step(c, s),
        ),
        rules: st
            .and_then(|s| s.entry)
            .map(|e| {
                e.origins
                    .iter()
                    .map(|&x| crate::eval::origin_text(c, x))
                    .collect()
            })
            .unwrap_or_default(),
        l7: l7_rules(c, o),
        sites: st
            .and_then(|s| s.entry)
            .map(|e| {
                e.origins
                    .iter()
                    .filter_map(|&x| c.origins.get(x as usize))
                    .filter(|o| !o.file.is_empty())
                    .map(|o| Site {
                        policy: o.policy.clone(),
                        file: o.file.clone(),
                        line: o.line,
                        col: o.col,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// What makes two ports decided alike on one side: the verdict, the
/// deciding direction and rules, and the L7 rules.
type Key = (
    Verdict,
    Option<policy_lang::ir::Direction>,
    Vec<u32>,
    Option<Vec<String>>,
);

fn key_of(o: &Outcome, l7: &Option<Vec<String>>) -> Key {
    let st = o.steps.iter().find(|s| Some(s.direction) == o.decided_by);
    (
        o.verdict,
        o.decided_by,
        st.and_then(|s| s.entry)
            .map(|e| e.origins.to_vec())
            .unwrap_or_default(),
        l7.clone(),
    )
}

/// One judged interval: the verdict and the L7 rules on each side.
type Judged = (Verdict, Option<Vec<String>>);

fn kind_of(base: &Judged, head: &Judged) -> Option<Kind> {
    match (base.0, head.0) {
        (Verdict::Denied, Verdict::Allowed) => Some(Kind::Opened),
        (Verdict::Allowed, Verdict::Denied) => Some(Kind::Closed),
        (Verdict::Allowed, Verdict::Allowed) if base.1 != head.1 => Some(Kind::L7),
        _ => None,
    }
}

/// A class of peers alike on both sides.
struct Class {
    members: Vec<Peer>,
    /// Its identity's text on each side (for node addresses, also how
    /// nodes see them: `reserved:host`, `reserved:remote-node`).
    texts: Vec<String>,
    /// Its own identity differs between the sides: every pair with it
    /// may change.
    relabelled: bool,
    /// For pods whose policy changed: the peers each direction's change
    /// concerns ([ingress, egress]).
    affected: Option<[Affected; 2]>,
    /// For node addresses: the node.
    node: Option<String>,
}

/// Compares two compiled states. Pods are matched by name.
pub fn diff(base: State<'_>, head: State<'_>) -> Diff {
    let sides = [base.compiled, head.compiled];
    let mut digests: [HashMap<String, u128>; 2] = Default::default();
    let mut ids: [HashMap<u32, String>; 2] = Default::default();
    // One side on each core.
    let digest_side = |c: &Compiled| {
        let mut maps = HashMap::new();
        let mut hashes = HashMap::new();
        c.endpoints
            .iter()
            .filter(|e| !e.host)
            .map(|e| {
                (
                    e.name.clone(),
                    endpoint_digest(c, e, &mut maps, &mut hashes),
                )
            })
            .collect::<HashMap<_, _>>()
    };
    std::thread::scope(|s| {
        let b = s.spawn(|| digest_side(sides[0]));
        digests[1] = digest_side(sides[1]);
        digests[0] = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
    let mut out = Diff::default();
    // Classes of pods alike on both sides, in the head's endpoint order.
    let mut class_of: HashMap<(u128, u128), usize> = HashMap::new();
    let mut classes: Vec<Class> = Vec::new();
    for e in head.compiled.endpoints.iter().filter(|e| !e.host) {
        let Some(&b) = digests[0].get(&e.name) else {
            out.only_head.push(e.name.clone());
            continue;
        };
        let h = digests[1][&e.name];
        let i = *class_of.entry((b, h)).or_insert_with(|| {
            let be = base.compiled.endpoint(&e.name).expect("digested");
            let tb = id_text(base.compiled, be.identity);
            let th = id_text(head.compiled, e.identity);
            let relabelled = tb != th;
            let affected = (b != h && !relabelled).then(|| {
                [false, true].map(|egress| {
                    let mut a = Affected::of(
                        &by_identity(base.compiled, be.map, egress, &mut ids[0]),
                        &by_identity(head.compiled, e.map, egress, &mut ids[1]),
                    );
                    // Default deny switched on or off, or policies in
                    // audit mode changed: every peer of that direction.
                    let dir = usize::from(egress);
                    a.all |= be.enforced[dir] != e.enforced[dir]
                        || be.audit_map.is_some()
                        || e.audit_map.is_some();
                    a
                })
            });
            classes.push(Class {
                members: Vec::new(),
                texts: if relabelled { vec![tb, th] } else { vec![th] },
                relabelled,
                affected,
                node: None,
            });
            classes.len() - 1
        });
        classes[i].members.push(Peer::Pod(e.name.clone()));
    }
    for e in base.compiled.endpoints.iter().filter(|e| !e.host) {
        if !digests[1].contains_key(&e.name) {
            out.only_base.push(e.name.clone());
        }
    }
    let pod_classes = classes.len();
    // Address ranges, one class per identity text on both sides (and per
    // node, for node addresses).
    let mut cell_of: HashMap<(String, String, Option<String>), usize> = HashMap::new();
    for ip in address_cells(sides) {
        let text = |c: &Compiled| {
            let e = c.ipcache_lookup(ip);
            (
                id_text(c, c.identity_of_ip(ip, None)),
                e.and_then(|e| e.node.clone()),
            )
        };
        let (b, node) = text(base.compiled);
        let (h, node_h) = text(head.compiled);
        let node = node.or(node_h);
        let i = *cell_of
            .entry((b.clone(), h.clone(), node.clone()))
            .or_insert_with(|| {
                let mut texts = vec![b.clone()];
                if h != b {
                    texts.push(h.clone());
                }
                if node.is_some() {
                    texts.push("reserved:host".into());
                    texts.push("reserved:remote-node".into());
                }
                classes.push(Class {
                    members: Vec::new(),
                    texts,
                    relabelled: b != h,
                    affected: None,
                    node: node.clone(),
                });
                classes.len() - 1
            });
        classes[i].members.push(Peer::Addr(ip));
    }
    out.changed_classes = classes
        .iter()
        .filter(|c| c.relabelled || c.affected.is_some())
        .count();
    let is_pod = |i: usize| i < pod_classes;
    // The classes of each identity text, to find a change's peers.
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in classes.iter().enumerate() {
        for t in &c.texts {
            by_text.entry(t.as_str()).or_default().push(i);
        }
    }
    let peers_of = |a: &Affected| -> Vec<usize> {
        if a.all {
            return (0..classes.len()).collect();
        }
        let mut v: Vec<usize> = a
            .ids
            .iter()
            .flat_map(|t| by_text.get(t.as_str()).into_iter().flatten().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    // Every ordered pair of classes a change can reach (addresses only
    // meet pods): a relabelled class with everything; a changed map with
    // the peers its changed entries name, in their direction.
    let mut pairs = BTreeSet::new();
    for (x, c) in classes.iter().enumerate() {
        if c.relabelled {
            for y in 0..classes.len() {
                if is_pod(x) || is_pod(y) {
                    pairs.insert((x, y));
                    pairs.insert((y, x));
                }
            }
        }
        if let Some([ingress, egress]) = &c.affected {
            for y in peers_of(ingress) {
                pairs.insert((y, x));
            }
            for y in peers_of(egress) {
                pairs.insert((x, y));
            }
        }
    }
    let mut group_of: HashMap<(usize, String, usize), usize> = HashMap::new();
    // The pairs to judge, each with its representatives.
    let mut jobs = Vec::new();
    for (x, y) in pairs {
        for (sx, sy) in split_by_node(sides, &classes[x], &classes[y]) {
            if sx.is_empty() || sy.is_empty() || (x == y && sx.len() < 2) {
                continue;
            }
            jobs.push((x, y, sx, sy));
        }
    }
    out.pairs_judged = jobs.len();
    // Judged on up to four threads, in order: the answer does not depend
    // on how many.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = jobs.len().div_ceil(threads).max(1);
    let judge_part = |part: &[(usize, usize, Vec<Peer>, Vec<Peer>)]| {
        let mut cuts = Cuts::default();
        part.iter()
            .map(|(x, y, sx, sy)| {
                let b = if x == y { &sx[1] } else { &sy[0] };
                compare_pair(sides, &sx[0], b, &mut cuts)
            })
            .collect::<Vec<_>>()
    };
    let found: Vec<Vec<Delta>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| s.spawn(move || judge_part(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut deltas = Vec::new();
    for ((x, y, sx, sy), mut found) in jobs.iter().zip(found) {
        if found.is_empty() {
            continue;
        }
        let gx = group(&mut out.groups, &mut group_of, *x, sx, head.compiled);
        let gy = group(&mut out.groups, &mut group_of, *y, sy, head.compiled);
        for d in &mut found {
            d.from = gx;
            d.to = gy;
        }
        deltas.extend(found);
    }
    deltas.sort_by(|p, q| {
        (p.kind, &out.groups[p.from].name, &out.groups[p.to].name).cmp(&(
            q.kind,
            &out.groups[q.from].name,
            &out.groups[q.to].name,
        ))
    });
    out.deltas = deltas;
    out
}

/// The members of two classes to judge together: all of them, except
/// that pods meeting a node's address are split into those on that node
/// (which see it as `host`) and the others (`remote-node`), on each side.
fn split_by_node(sides: [&Compiled; 2], x: &Class, y: &Class) -> Vec<(Vec<Peer>, Vec<Peer>)> {
    let node = x.node.as_ref().or(y.node.as_ref());
    let Some(n) = node else {
        return vec![(x.members.clone(), y.members.clone())];
    };
    let on = |p: &Peer| match p {
        Peer::Pod(name) => sides.map(|c| {
            c.endpoint(name)
                .is_some_and(|e| e.node.as_deref() == Some(n.as_str()))
        }),
        Peer::Addr(_) => [false; 2],
    };
    let pods = if x.node.is_some() {
        &y.members
    } else {
        &x.members
    };
    let mut parts: BTreeMap<[bool; 2], Vec<Peer>> = BTreeMap::new();
    for p in pods {
        parts.entry(on(p)).or_default().push(p.clone());
    }
    parts
        .into_values()
        .map(|part| {
            if x.node.is_some() {
                (x.members.clone(), part)
            } else {
                (part, y.members.clone())
            }
        })
        .collect()
}

/// The group of a class, made when first needed.
fn group(
    groups: &mut Vec<Group>,
    group_of: &mut HashMap<(usize, String, usize), usize>,
    class: usize,
    members: &[Peer],
    head: &Compiled,
) -> usize {
    // A class split by node is one group per part, besides the whole:
    // parts share no member, and a part is smaller than the whole.
    let key = (
        class,
        members.first().map(peer_text).unwrap_or_default(),
        members.len(),
    );
    if let Some(&g) = group_of.get(&key) {
        return g;
    }
    let (name, identity) = match &members[0] {
        Peer::Pod(p) => {
            let id = head
                .endpoint(p)
                .map(|e| id_text(head, e.identity))
                .unwrap_or_default();
            let name = if members.len() == 1 {
                p.clone()
            } else {
                format!("{p} and {} more alike", members.len() - 1)
            };
            (name, id)
        }
        Peer::Addr(ip) => {
            let e = head.ipcache_lookup(*ip);
            let id = id_text(head, head.identity_of_ip(*ip, None));
            let world = id == "reserved:world";
            let name = match e {
                Some(e) if e.node.is_some() => {
                    format!("node {} ({})", e.node.as_deref().unwrap_or(""), e.prefix)
                }
                Some(e) if world && e.cidr.prefix_len == 0 => "world".to_owned(),
                Some(e) if world => format!("world ({})", e.prefix),
                Some(e) => e.prefix.clone(),
                None => "world".to_owned(),
            };
            (name, id)
        }
    };
    groups.push(Group {
        name,
        identity,
        members: members.iter().map(peer_text).collect(),
    });
    group_of.insert(key, groups.len() - 1);
    groups.len() - 1
}

fn peer_text(p: &Peer) -> String {
    match p {
        Peer::Pod(p) => p.clone(),
        Peer::Addr(ip) => ip.to_string(),
    }
}

/// How one side's proxy treats the requests of a peer on a port, for one
/// protocol.
enum View<'a> {
    All,
    Nothing,
    Rules(&'a compiler::l7::L7Port, u32),
}

fn view<'a>(
    c: &'a Compiled,
    o: &Outcome<'a>,
    dir: policy_lang::ir::Direction,
    kind: compiler::l7::L7Kind,
) -> View<'a> {
    let Some(s) = o.steps.iter().find(|s| s.direction == dir) else {
        return View::Nothing;
    };
    let (Some(key), Some(entry)) = (s.key, s.entry) else {
        return View::Nothing;
    };
    if s.verdict != Verdict::Allowed {
        return View::Nothing;
    }
    if !entry.redirect {
        return View::All;
    }
    let Some(ep) = c.endpoint(s.endpoint) else {
        return View::Nothing;
    };
    match c.maps[ep.map].l7_port(&key, kind) {
        Some(p) if p.open_to(s.remote_identity) => View::All,
        Some(p) => View::Rules(p, s.remote_identity),
        None => View::Nothing,
    }
}

/// The request a field list stands for, of a protocol.
fn request_of(kind: compiler::l7::L7Kind, f: &[Vec<u8>]) -> Option<compiler::l7::Request> {
    use compiler::l7::{L7Kind, Request};
    let text = |i: usize| f.get(i).map(|b| String::from_utf8_lossy(b).into_owned());
    Some(match kind {
        L7Kind::Http => Request::Http {
            method: text(0)?,
            path: text(1)?,
            host: text(2)?,
            headers: Vec::new(),
        },
        L7Kind::Kafka => Request::Kafka {
            api_key: text(0)?.parse().ok()?,
            api_version: text(1)?.parse().ok()?,
            client_id: text(2)?,
            topic: text(3)?,
        },
        L7Kind::Dns => Request::Dns { query: text(0)? },
    })
}

fn request_text(r: &compiler::l7::Request) -> String {
    use compiler::l7::Request;
    match r {
        Request::Http {
            method, path, host, ..
        } if host.is_empty() => format!("HTTP {method} {path}"),
        Request::Http {
            method, path, host, ..
        } => format!("HTTP {method} {path} (host {host})"),
        Request::Kafka {
            api_key,
            api_version,
            client_id,
            topic,
        } => {
            format!("Kafka api key {api_key} version {api_version}, client `{client_id}`, topic `{topic}`")
        }
        Request::Dns { query } => format!("DNS {query}"),
    }
}

/// A request one side's proxy admits and the other's refuses, confirmed
/// by judging it on both; the head's admissions first.
fn l7_witness(sides: [&Compiled; 2], ob: &Outcome, oh: &Outcome) -> Option<Witness> {
    use compiler::l7::L7Kind;
    use policy_lang::ir::Direction;
    for dir in [Direction::Egress, Direction::Ingress] {
        for kind in [L7Kind::Http, L7Kind::Kafka, L7Kind::Dns] {
            let (vb, vh) = (view(sides[0], ob, dir, kind), view(sides[1], oh, dir, kind));
            for (admits, refuses, head) in
                [(&vh, &vb, Verdict::Allowed), (&vb, &vh, Verdict::Denied)]
            {
                if let Some(w) = witness_of(admits, refuses, kind) {
                    return Some(Witness { request: w, head });
                }
            }
        }
    }
    None
}

fn witness_of(admits: &View, refuses: &View, kind: compiler::l7::L7Kind) -> Option<String> {
    use compiler::l7::{L7Verdict, Matcher};
    let (pa, pr);
    let this: Option<(&Matcher, &dyn Fn(usize) -> bool)> = match admits {
        View::Nothing => return None,
        View::All => None,
        View::Rules(p, id) => {
            let (p, id) = (*p, *id);
            pa = move |i: usize| p.rule_applies(i, id);
            Some((p.matcher(), &pa))
        }
    };
    let other: Option<(&Matcher, &dyn Fn(usize) -> bool)> = match refuses {
        View::All => return None,
        View::Nothing => None,
        View::Rules(p, id) => {
            let (p, id) = (*p, *id);
            pr = move |i: usize| p.rule_applies(i, id);
            Some((p.matcher(), &pr))
        }
    };
    let fields = Matcher::witness(this, other, kind.fields(), 100_000)?;
    let req = request_of(kind, &fields)?;
    // The proxies' own verdicts decide: a witness that header checks (or
    // anything else) would refuse is not given.
    let judged = |v: &View| match v {
        View::All => true,
        View::Nothing => false,
        View::Rules(p, id) => matches!(p.judge(*id, &req), L7Verdict::Allowed { .. }),
    };
    (judged(admits) && !judged(refuses)).then(|| request_text(&req))
}

/// The outcome of one port on one side, with the L7 rules that apply.
pub(crate) fn run<'a>(
    c: &'a Compiled,
    (src, dst): &(Side<'a>, Side<'a>),
    protocol: u8,
    port: u16,
) -> (Outcome<'a>, Option<Vec<String>>) {
    let o = judge(
        c,
        &Resolved {
            src: src.clone(),
            dst: dst.clone(),
            protocol,
            port,
        },
    );
    let l7 = if o.verdict == Verdict::Allowed {
        l7_rules(c, &o)
    } else {
        None
    };
    (o, l7)
}

/// Every change from `a` to `b`, per protocol, merged into ranges.
fn compare_pair(sides: [&Compiled; 2], a: &Peer, b: &Peer, cuts: &mut Cuts) -> Vec<Delta> {
    let resolved: Vec<Option<(Side, Side)>> = sides
        .iter()
        .map(|c| Some((side_of(c, a)?, side_of(c, b)?)))
        .collect();
    let (Some(rb), Some(rh)) = (&resolved[0], &resolved[1]) else {
        return Vec::new();
    };
    let mut bounds: [Vec<u32>; 4] = Default::default();
    for (i, (c, (src, dst))) in sides.iter().zip([rb, rh]).enumerate() {
        for (e, egress) in [(src.endpoint, true), (dst.endpoint, false)] {
            if let Some(e) = e {
                let m = cuts.of(i, c, e.map, egress);
                for (b, v) in bounds.iter_mut().zip(m.iter()) {
                    b.extend_from_slice(v);
                }
            }
        }
    }
    for b in &mut bounds {
        b.push(0);
        b.sort_unstable();
        b.dedup();
    }
    // Ports decided alike (same change, same rules on each side) are one
    // change, described at its first port: its decisions and, for an L7
    // change, a witness request.
    let mut found: Vec<(Delta, Key, Key)> = Vec::new();
    for (pi, (proto, name, max)) in PROTOCOLS.into_iter().enumerate() {
        let starts: Vec<u16> = bounds[pi]
            .iter()
            .filter(|&&x| x <= u32::from(max))
            .map(|&x| x as u16)
            .collect();
        for (j, &lo) in starts.iter().enumerate() {
            let hi = starts.get(j + 1).map_or(max, |&n| n - 1);
            let (ob, lb) = run(sides[0], rb, proto, lo);
            let (oh, lh) = run(sides[1], rh, proto, lo);
            let (kb, kh) = (key_of(&ob, &lb), key_of(&oh, &lh));
            let Some(kind) = kind_of(&(ob.verdict, lb), &(oh.verdict, lh)) else {
                continue;
            };
            // The sentences are made once per change, not per interval.
            let d = match found
                .iter()
                .position(|(d, b, h)| d.kind == kind && *b == kb && *h == kh)
            {
                Some(i) => &mut found[i].0,
                None => {
                    let delta = Delta {
                        from: 0,
                        to: 0,
                        kind,
                        ports: Vec::new(),
                        base: decision(sides[0], &ob),
                        head: decision(sides[1], &oh),
                        witness: if kind == Kind::L7 {
                            l7_witness(sides, &ob, &oh)
                        } else {
                            None
                        },
                    };
                    found.push((delta, kb, kh));
                    &mut found.last_mut().expect("just pushed").0
                }
            };
            match d.ports.last_mut() {
                Some(p) if p.protocol == name => match p.ranges.last_mut() {
                    Some(last) if u32::from(last.1) + 1 == u32::from(lo) => last.1 = hi,
                    _ => p.ranges.push((lo, hi)),
                },
                _ => d.ports.push(Ports {
                    protocol: name,
                    ranges: vec![(lo, hi)],
                }),
            }
        }
    }
    found.into_iter().map(|(d, _, _)| d).collect()
}
