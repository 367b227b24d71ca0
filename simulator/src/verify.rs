//! Exact checks of "from these peers to those, on these ports, traffic is
//! allowed (or denied)" over one compiled state, with a concrete
//! counterexample when it does not hold.
//!
//! Exact as `diff` is: peers alike (same identity, same map, and for pods
//! meeting node addresses the same node) are judged once, and each pair
//! once per interval of the ports asked that the two maps tell apart.

use crate::diff::{address_cells, endpoint_digest, run, Cuts, PROTOCOLS};
use crate::eval::Side;
use crate::flow::{PeerRef, Verdict};
use compiler::compile::Compiled;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Ports of one protocol, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub protocol: u8,
    pub lo: u16,
    pub hi: u16,
}

/// A flow that breaks an expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    pub from: PeerRef,
    pub to: PeerRef,
    pub protocol: u8,
    pub port: u16,
    pub verdict: Verdict,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The first violating flow, in the order the peers were given.
    pub counterexample: Option<Counterexample>,
    /// Pairs of peers (by class) judged, and how many broke the
    /// expectation.
    pub pairs: usize,
    pub violating_pairs: usize,
}

/// The compiled state with what checks share: pods' classes, the
/// address ranges outside the cluster, map port boundaries.
pub struct Checker<'c> {
    c: &'c Compiled,
    digest: HashMap<String, u128>,
    cuts: Cuts,
    outside: std::sync::OnceLock<Vec<(IpAddr, bool)>>,
}

impl<'c> Checker<'c> {
    pub fn new(c: &'c Compiled) -> Self {
        let mut maps = HashMap::new();
        let mut ids = HashMap::new();
        let digest = c
            .endpoints
            .iter()
            .filter(|e| !e.host)
            .map(|e| (e.name.clone(), endpoint_digest(c, e, &mut maps, &mut ids)))
            .collect();
        Checker {
            c,
            digest,
            cuts: Cuts::default(),
            outside: std::sync::OnceLock::new(),
        }
    }

    /// An address of each range outside the cluster the datapath tells
    /// apart, with whether it is a node's.
    pub fn outside(&self) -> &[(IpAddr, bool)] {
        self.outside.get_or_init(|| {
            address_cells([self.c, self.c])
                .into_iter()
                .map(|ip| {
                    let node = self.c.ipcache_lookup(ip).is_some_and(|e| e.node.is_some());
                    (ip, node)
                })
                .collect()
        })
    }

    /// The class of a peer: pods alike share one (split by node when the
    /// other side has node addresses); an address is its own.
    fn class(&self, p: &PeerRef, by_node: bool) -> (u128, Option<String>, Option<IpAddr>) {
        match p {
            PeerRef::Pod(name) => {
                let node = by_node
                    .then(|| self.c.endpoint(name).and_then(|e| e.node.clone()))
                    .flatten();
                (self.digest.get(name).copied().unwrap_or(0), node, None)
            }
            PeerRef::Ip(ip) => (0, None, Some(*ip)),
            PeerRef::Entity(e) => (1, Some(e.clone()), None),
        }
    }

    /// Peers by class, in the order the first member of each was given.
    fn classes<'p>(&self, peers: &'p [PeerRef], by_node: bool) -> Vec<Vec<&'p PeerRef>> {
        let mut order: Vec<Vec<&PeerRef>> = Vec::new();
        let mut index = HashMap::new();
        for p in peers {
            let i = *index.entry(self.class(p, by_node)).or_insert_with(|| {
                order.push(Vec::new());
                order.len() - 1
            });
            order[i].push(p);
        }
        order
    }

    fn has_node_address(&self, peers: &[PeerRef]) -> bool {
        peers.iter().any(|p| match p {
            PeerRef::Ip(ip) => self.c.ipcache_lookup(*ip).is_some_and(|e| e.node.is_some()),
            PeerRef::Entity(e) => e == "host" || e == "remote-node",
            PeerRef::Pod(_) => false,
        })
    }

    /// Whether every flow from `from` to `to` on `ports` (every port of
    /// every protocol when empty) gets `want`. A peer is never judged
    /// against itself.
    pub fn check(
        &mut self,
        from: &[PeerRef],
        to: &[PeerRef],
        ports: &[PortRange],
        want: Verdict,
    ) -> Outcome {
        let all: Vec<PortRange> = PROTOCOLS
            .iter()
            .map(|&(protocol, _, max)| PortRange {
                protocol,
                lo: 0,
                hi: max,
            })
            .collect();
        let ports = if ports.is_empty() { &all[..] } else { ports };
        let (split_from, split_to) = (self.has_node_address(to), self.has_node_address(from));
        let (froms, tos) = (self.classes(from, split_from), self.classes(to, split_to));
        let mut out = Outcome::default();
        for a in &froms {
            for b in &tos {
                // Two members of one class are still two peers.
                let pair = if a[0] == b[0] {
                    match (a.get(1), b.get(1)) {
                        (Some(x), _) => Some((*x, b[0])),
                        (None, Some(y)) => Some((a[0], *y)),
                        (None, None) => None,
                    }
                } else {
                    Some((a[0], b[0]))
                };
                let Some((x, y)) = pair else {
                    continue;
                };
                // Between two peers that are not endpoints (two outside
                // addresses) traffic never meets a policy of the cluster.
                if !self.meets_policy(x, y) {
                    continue;
                }
                out.pairs += 1;
                if let Some(cx) = self.first_violation(x, y, ports, want) {
                    out.violating_pairs += 1;
                    if out.counterexample.is_none() {
                        out.counterexample = Some(cx);
                    }
                }
            }
        }
        out
    }

    fn meets_policy(&self, a: &PeerRef, b: &PeerRef) -> bool {
        let endpoint = |p| crate::eval::resolve(self.c, p).is_ok_and(|s| s.endpoint.is_some());
        endpoint(a) || endpoint(b)
    }

    fn first_violation(
        &mut self,
        a: &PeerRef,
        b: &PeerRef,
        ports: &[PortRange],
        want: Verdict,
    ) -> Option<Counterexample> {
        let c = self.c;
        let (Ok(src), Ok(dst)) = (crate::eval::resolve(c, a), crate::eval::resolve(c, b)) else {
            return None;
        };
        let sides: (Side, Side) = (src, dst);
        // Boundaries of the two maps involved, per protocol.
        let mut bounds: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for (e, egress) in [(sides.0.endpoint, true), (sides.1.endpoint, false)] {
            if let Some(e) = e {
                let m = self.cuts.of(0, c, e.map, egress);
                for (i, &(p, _, _)) in PROTOCOLS.iter().enumerate() {
                    bounds.entry(p).or_default().extend_from_slice(&m[i]);
                }
            }
        }
        for r in ports {
            let mut starts: Vec<u32> = bounds.get(&r.protocol).cloned().unwrap_or_default();
            starts.retain(|&x| x > u32::from(r.lo) && x <= u32::from(r.hi));
            starts.push(u32::from(r.lo));
            starts.sort_unstable();
            starts.dedup();
            for s in starts {
                let port = s as u16;
                let (o, _) = run(c, &sides, r.protocol, port);
                if o.verdict != want {
                    return Some(Counterexample {
                        from: a.clone(),
                        to: b.clone(),
                        protocol: r.protocol,
                        port,
                        verdict: o.verdict,
                    });
                }
            }
        }
        None
    }
}
