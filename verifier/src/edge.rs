//! Flows between a possible pod and a peer that is not a pod: an address
//! outside the cluster, or a reserved identity such as `host`.
//!
//! An address is a 32- or 128-bit vector. Its identity is the one the
//! ipcache's longest-prefix match gives: the longest prefix with a CIDR
//! identity that contains it, else world. Pods', nodes' and DNS answers'
//! addresses are not outside addresses (they have identities of their
//! own); a witness that lands on one is ruled out and the solver asked
//! again. Only the pod's side of such a flow has a policy: egress when the
//! pod sends, ingress when it receives.

use super::*;
use compiler::labels::LabelSet;
use simulator::flow::PeerRef;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address outside the cluster.
#[derive(Clone, Debug)]
pub struct SymAddr {
    pub bv: BV,
    pub v4: bool,
}

impl Encoder<'_> {
    /// A formula of the pod's direction for the edge's peer, `f` given how
    /// the pod sees it: a node's address is the host when the pod runs
    /// there, the remote node otherwise.
    pub(crate) fn at_pod(&self, e: &EdgeFlow, f: &dyn Fn(PeerT<'_>) -> Bool) -> Bool {
        match &e.other {
            Other::Addr(a) => f(PeerT::Addr(a)),
            Other::Reserved(id) => f(PeerT::Reserved(*id)),
            Other::Node(i) => self
                .on_node(&e.pod, *i)
                .ite(&f(PeerT::Reserved(HOST)), &f(self.remote_of(*i))),
        }
    }
}

impl SymAddr {
    fn width(&self) -> u32 {
        if self.v4 {
            32
        } else {
            128
        }
    }
}

/// The side of an edge flow that is not a pod.
#[derive(Clone, Debug)]
pub enum Other {
    Addr(SymAddr),
    /// A reserved identity (`host`, `remote-node`, `kube-apiserver`, ...).
    Reserved(u32),
    /// The address of the inventory's node with this index: the host to
    /// its own pods, a remote node to the others, and a host endpoint
    /// that host policies (`nodeSelector`) may guard.
    Node(usize),
}

/// A flow between a symbolic pod and a peer that is not a pod.
pub struct EdgeFlow {
    pub pod: SymPod,
    pub other: Other,
    /// The pod sends (egress at the pod); else it receives (ingress).
    pub pod_is_src: bool,
    pub port: BV,
    pub proto: Int,
}

/// What the solver says of an edge query.
#[derive(Clone, Debug)]
pub enum EdgeAnswer {
    Holds,
    Broken(Box<EdgeWitness>),
    Unknown(String),
}

/// A possible pod and a non-pod peer whose flow breaks a query.
#[derive(Clone, Debug)]
pub struct EdgeWitness {
    /// For `diff --exposure`: the pod's labels that decide the change.
    pub matters: Option<Vec<Cond>>,
    /// The node whose address `other` is, when it is a node's.
    pub node: Option<String>,
    pub pod: WitnessPod,
    /// An address, or an entity by name.
    pub other: PeerRef,
    pub pod_is_src: bool,
    pub port: u16,
    pub protocol: u8,
    /// The verdict the formula gives the flow.
    pub allowed: bool,
}

/// Witnesses on taken addresses are ruled out one by one; past this many
/// the query is undecided rather than slow.
const MAX_TAKEN_RETRIES: usize = 256;

fn bv_const(v: u128, width: u32) -> BV {
    if width <= 64 {
        BV::from_u64(v as u64, width)
    } else {
        BV::from_u64((v >> 64) as u64, width - 64).concat(BV::from_u64(v as u64, 64))
    }
}

impl Encoder<'_> {
    /// The world identity of a family: one for both unless dual-stack.
    pub(crate) fn world_id(&self, v4: bool) -> u32 {
        match (self.cfg.dual_stack, v4) {
            (false, _) => WORLD,
            (true, true) => WORLD_IPV4,
            (true, false) => WORLD_IPV6,
        }
    }

    /// A fresh outside address of a family.
    pub fn addr(&self, v4: bool) -> SymAddr {
        let width = if v4 { 32 } else { 128 };
        SymAddr {
            bv: BV::new_const(if v4 { "addr4" } else { "addr6" }, width),
            v4,
        }
    }

    /// The address is this one.
    pub fn addr_eq(&self, a: &SymAddr, ip: IpAddr) -> Bool {
        match ip.is_ipv4() == a.v4 {
            true => a.bv.eq(addr_bv(ip)),
            false => Bool::from_bool(false),
        }
    }

    /// Whether the address is within the prefix.
    pub fn addr_in(&self, a: &SymAddr, c: &Cidr) -> Bool {
        if c.addr.is_ipv4() != a.v4 {
            return Bool::from_bool(false);
        }
        let len = u32::from(c.prefix_len);
        if len == 0 {
            return Bool::from_bool(true);
        }
        let w = a.width();
        let net = c.network_bits() >> (w - len);
        a.bv.extract(w - 1, w - len).eq(bv_const(net, len))
    }

    fn family(&self, a: &SymAddr) -> &[Cidr] {
        &self.prefixes[usize::from(!a.v4)]
    }

    /// The address is in no prefix with an identity: its identity is world.
    pub(crate) fn addr_is_world(&self, a: &SymAddr) -> Bool {
        any(self.family(a).iter().map(|c| self.addr_in(a, c)).collect()).not()
    }

    /// The address's identity is the prefix's: the longest one holding it.
    fn addr_is_prefix(&self, a: &SymAddr, c: &Cidr) -> Bool {
        let longer: Vec<Bool> = self
            .family(a)
            .iter()
            .filter(|q| q.prefix_len > c.prefix_len && c.contains(q))
            .map(|q| self.addr_in(a, q))
            .collect();
        Bool::and(&[self.addr_in(a, c), any(longer).not()])
    }

    /// Whether the labels of the address's identity pass `pred`.
    pub(crate) fn addr_identity(&self, a: &SymAddr, pred: impl Fn(&LabelSet) -> bool) -> Bool {
        let mut alts: Vec<Bool> = self
            .family(a)
            .iter()
            .filter(|c| pred(&cidr_labels(c)))
            .map(|c| self.addr_is_prefix(a, c))
            .collect();
        if pred(&reserved_labels(self.world_id(a.v4))) {
            alts.push(self.addr_is_world(a));
        }
        any(alts)
    }

    /// Whether a `toCIDR`/`toCIDRSet` (with exceptions) selects the
    /// address's identity. The prefixes it selects hold every longer
    /// prefix within them, so this is membership in what is left after
    /// the exceptions; only a plain /0 also selects world, which in a
    /// single-stack cluster is the other family's world too.
    pub(crate) fn cidr_rule(&self, a: &SymAddr, cidr: &Cidr, except: &[Cidr]) -> Bool {
        let plain_all = cidr.prefix_len == 0 && except.is_empty();
        let v4 = cidr.addr.is_ipv4();
        if v4 != a.v4 {
            return if plain_all && self.world_id(v4) == self.world_id(a.v4) {
                self.addr_is_world(a)
            } else {
                Bool::from_bool(false)
            };
        }
        if plain_all {
            return Bool::from_bool(true);
        }
        any(compiler::cidr::remove(cidr, except)
            .iter()
            .filter(|p| p.prefix_len > 0)
            .map(|p| self.addr_in(a, p))
            .collect())
    }

    /// Preferences for a witness address: a public-looking one, outside
    /// "this network" (0.0.0.0/8) and the IPv4-mapped range.
    fn plain_address(&self, o: &Other) -> Vec<Bool> {
        let Other::Addr(a) = o else {
            return Vec::new();
        };
        let avoid = if a.v4 { "0.0.0.0/8" } else { "::/8" };
        match Cidr::parse(avoid) {
            Ok(c) => vec![self.addr_in(a, &c).not()],
            Err(_) => Vec::new(),
        }
    }

    /// Addresses that belong to the cluster or to DNS answers.
    fn taken(&self) -> BTreeSet<IpAddr> {
        self.inv
            .pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .chain(self.inv.nodes.iter().flat_map(|n| n.ips.iter().copied()))
            .chain(self.cfg.dns.iter().flat_map(|(_, ips)| ips.iter().copied()))
            .map(simulator::flow::canonical_ip)
            .collect()
    }

    /// A flow between `pod` and a non-pod peer.
    pub fn edge(&self, pod: &SymPod, other: Other, pod_is_src: bool) -> EdgeFlow {
        EdgeFlow {
            pod: pod.clone(),
            other,
            pod_is_src,
            port: BV::new_const("port", 16),
            proto: Int::new_const("protocol"),
        }
    }

    /// The L3/L4 verdict of an edge flow: the pod's direction decides.
    pub fn allowed_edge(&self, e: &EdgeFlow) -> Bool {
        let dir = if e.pod_is_src {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let at_pod = self.at_pod(e, &|peer| {
            self.direction_at(dir, &e.pod, peer, &e.port, &e.proto, &|_| true)
        });
        match &e.other {
            // The node's host endpoint has its say too: ingress when the
            // pod sends, egress when it receives.
            Other::Node(i) => {
                let other_dir = if e.pod_is_src {
                    Direction::Ingress
                } else {
                    Direction::Egress
                };
                let host = self.host_direction(other_dir, *i, &e.pod, &e.port, &e.proto);
                Bool::and(&[at_pod, host])
            }
            _ => at_pod,
        }
    }

    /// Is there an edge flow between a pod meeting `pod` and a peer
    /// meeting `other` on `ports` whose verdict is not `want_allowed`?
    #[allow(clippy::too_many_arguments)]
    pub fn expect_edge(
        &self,
        pod: &Bool,
        other: &Bool,
        e: &EdgeFlow,
        ports: &Ports,
        want_allowed: bool,
        solver: &z3::Solver,
    ) -> EdgeAnswer {
        let verdict = self.allowed_edge(e);
        solver.push();
        solver.assert(pod);
        solver.assert(other);
        solver.assert(self.port_in(&e.port, &e.proto, ports));
        solver.assert(self.protocol_known(&e.proto));
        solver.assert(if want_allowed { verdict.not() } else { verdict });
        let answer = self.edge_answer(solver, e, !want_allowed);
        solver.pop(1);
        answer
    }

    /// The witness of what is asserted on the solver about `e`, whose
    /// verdict is `allowed`. Witnesses on taken addresses are ruled out
    /// (inside the caller's scope) and the solver asked again.
    pub(crate) fn edge_answer(
        &self,
        solver: &z3::Solver,
        e: &EdgeFlow,
        allowed: bool,
    ) -> EdgeAnswer {
        self.edge_model(solver, e, allowed).0
    }

    /// The answer, and the model its witness was read from.
    pub(crate) fn edge_model(
        &self,
        solver: &z3::Solver,
        e: &EdgeFlow,
        allowed: bool,
    ) -> (EdgeAnswer, Option<z3::Model>) {
        let taken = match &e.other {
            Other::Addr(_) => self.taken(),
            Other::Reserved(_) | Other::Node(_) => BTreeSet::new(),
        };
        for _ in 0..MAX_TAKEN_RETRIES {
            let m = match solver.check() {
                z3::SatResult::Unsat => return (EdgeAnswer::Holds, None),
                z3::SatResult::Unknown => {
                    return (EdgeAnswer::Unknown(unknown_reason(solver)), None)
                }
                z3::SatResult::Sat => match self.refine(
                    solver,
                    &[&e.pod],
                    &e.port,
                    &e.proto,
                    self.plain_address(&e.other),
                ) {
                    Some(m) => m,
                    None => return (EdgeAnswer::Unknown("the solver gave no model".into()), None),
                },
            };
            let other = match &e.other {
                Other::Addr(a) => {
                    let ip = read_addr(&m, a);
                    if taken.contains(&ip) {
                        solver.assert(a.bv.eq(addr_bv(ip)).not());
                        continue;
                    }
                    PeerRef::Ip(ip)
                }
                Other::Reserved(id) => PeerRef::Entity(
                    compiler::identity::reserved_name(*id)
                        .unwrap_or("unknown")
                        .to_owned(),
                ),
                Other::Node(i) => match self.inv.nodes[*i].ips.first() {
                    Some(ip) => PeerRef::Ip(*ip),
                    None => return (EdgeAnswer::Unknown("the node has no address".into()), None),
                },
            };
            let node = match &e.other {
                Other::Node(i) => Some(self.inv.nodes[*i].name.clone()),
                _ => None,
            };
            let num = m.eval(&e.port, true).and_then(|v| v.as_u64()).unwrap_or(0);
            let proto = m.eval(&e.proto, true).and_then(|v| v.as_i64()).unwrap_or(0);
            let w = EdgeWitness {
                node,
                matters: None,
                pod: self.witness_pod(&m, &e.pod),
                other,
                pod_is_src: e.pod_is_src,
                port: num as u16,
                protocol: proto as u8,
                allowed,
            };
            return (EdgeAnswer::Broken(Box::new(w)), Some(m));
        }
        (
            EdgeAnswer::Unknown(format!(
                "more than {MAX_TAKEN_RETRIES} addresses of pods and nodes stood in the way"
            )),
            None,
        )
    }

    /// The non-pod peers a possible pod can meet: outside addresses of
    /// both families, the reserved identities, and the inventory's nodes'
    /// addresses.
    pub fn others(&self) -> Vec<Other> {
        let mut v = vec![Other::Addr(self.addr(true)), Other::Addr(self.addr(false))];
        for &(id, _) in compiler::identity::RESERVED {
            if !matches!(id, WORLD | WORLD_IPV4 | WORLD_IPV6) {
                v.push(Other::Reserved(id));
            }
        }
        for (i, n) in self.inv.nodes.iter().enumerate() {
            if !n.ips.is_empty() {
                v.push(Other::Node(i));
            }
        }
        v
    }

    /// Widens an edge witness to the pod's label conditions that decide
    /// it (the peer and port held fixed); returns the class and them.
    pub(crate) fn generalize_edge(
        &self,
        m: &z3::Model,
        e: &EdgeFlow,
        w: &EdgeWitness,
        change: &Bool,
        general: &z3::Solver,
    ) -> (Bool, Vec<Cond>) {
        let mut fixed = vec![
            e.port.eq(BV::from_u64(u64::from(w.port), 16)),
            e.proto.eq(int(i64::from(w.protocol))),
        ];
        if let (Other::Addr(a), PeerRef::Ip(ip)) = (&e.other, &w.other) {
            fixed.push(self.addr_eq(a, *ip));
        }
        let (class, matters) = self.widen(m, &[&e.pod], &Bool::and(&fixed), change, general);
        (class, matters.into_iter().next().unwrap_or_default())
    }
}

fn addr_bv(ip: IpAddr) -> BV {
    match ip {
        IpAddr::V4(v4) => bv_const(u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => bv_const(u128::from(v6), 128),
    }
}

fn read_addr(m: &z3::Model, a: &SymAddr) -> IpAddr {
    let part = |hi: u32, lo: u32| {
        m.eval(&a.bv.extract(hi, lo), true)
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    if a.v4 {
        IpAddr::V4(Ipv4Addr::from(part(31, 0) as u32))
    } else {
        let v = (u128::from(part(127, 64)) << 64) | u128::from(part(63, 0));
        // An IPv4-mapped address is the IPv4 endpoint to the datapath: it
        // is read as such.
        simulator::flow::canonical_ip(IpAddr::V6(Ipv6Addr::from(v)))
    }
}

impl EdgeWitness {
    /// The flow as a reader names it.
    pub fn flow_text(&self) -> String {
        let other = match (&self.other, &self.node) {
            (PeerRef::Ip(ip), Some(n)) => format!("node {n} ({ip})"),
            (PeerRef::Ip(ip), None) => ip.to_string(),
            (PeerRef::Entity(e) | PeerRef::Pod(e), _) => e.clone(),
        };
        let pod = self.pod.summary();
        let (a, b) = if self.pod_is_src {
            (pod, other)
        } else {
            (other, pod)
        };
        format!(
            "{a} → {b} {}/{}",
            self.port,
            compiler::mapstate::proto_name(self.protocol)
        )
    }
}

/// Compiles the witness's pod in and judges its flow with `simulate`: the
/// concrete verdict must be the formula's (`Err` is a bug, never a
/// finding).
pub fn confirm_edge(
    w: &EdgeWitness,
    model: &Model,
    inv: &Inventory,
    cfg: &Config,
) -> Result<(), String> {
    let avoid: Vec<IpAddr> = match &w.other {
        PeerRef::Ip(ip) => vec![*ip],
        _ => Vec::new(),
    };
    let (inv, names) = with_pods(inv, &[("pod", &w.pod)], &avoid)?;
    let pod = PeerRef::Pod(names[0].clone());
    let (from, to) = if w.pod_is_src {
        (pod, w.other.clone())
    } else {
        (w.other.clone(), pod)
    };
    let flow = simulator::flow::Flow::new(from, to, w.port, w.protocol);
    judged_as(model, &inv, cfg, &flow, w.allowed, || w.flow_text())
}
