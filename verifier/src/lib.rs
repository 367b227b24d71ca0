//! A symbolic semantics of the compiled policy model, decided with z3.
//!
//! The compiler answers for the pods of an inventory. Here the pods are
//! variables: each label key that a selector mentions is absent, one of
//! the values some selector (or the inventory) names, or a value nobody
//! names; the namespace, its labels and the service account are labels
//! like the others, tied together as Kubernetes ties them (every pod of a
//! namespace sees the same namespace labels, an existing namespace keeps
//! the labels it has). Ports are 16-bit vectors, protocols numbers. The
//! L3/L4 verdict of a flow between two such pods is a formula: egress at
//! the source (default deny when a selecting rule asks for it, an allow
//! that matches, no deny that matches), then ingress at the destination.
//!
//! What the formula covers and what it leaves out is in docs/exposure.md:
//! pod-to-pod flows; L7 rules count as allowed at L4 (the proxy decides);
//! egress named ports resolve over the inventory's pods, as Cilium's
//! named-port map does, so a pod that does not exist yet adds no name.

use compiler::compile::Config;
use compiler::identity::{
    cidr_labels, reserved_labels, HEALTH, HOST, INGRESS, INIT, KUBE_APISERVER, REMOTE_NODE,
    UNMANAGED, WORLD, WORLD_IPV4, WORLD_IPV6,
};
use compiler::inventory::{Inventory, Pod};
use compiler::labels::{
    pod_labels, CILIUM_OWNED_PREFIX, CLUSTER_LABEL, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX,
    SERVICE_ACCOUNT_LABEL,
};
use compiler::model::{Model, NPolicyRule, NPort, NRule, PeerSel, Peers, PortSel, Subject};
use compiler::selector::{Op, Req, Sel};
use policy_lang::ir::{Cidr, Direction, Entity};
use std::collections::{BTreeMap, BTreeSet};
pub use z3::ast::{Ast, Bool};
use z3::ast::{Int, BV};
pub use z3::{SatResult, Solver};

mod edge;
pub use edge::{confirm_edge, EdgeAnswer, EdgeFlow, EdgeWitness, Other, SymAddr};

/// Values beyond the named ones a key may take: one per pod of a query,
/// so that two pods can be in two different new namespaces.
const OTHERS: i64 = 2;

/// The namespace-label key that Kubernetes sets to the namespace's name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The label keys (as identity labels, `k8s:` source) and values that
/// matter: every one a selector of the model mentions, and the inventory's
/// namespaces with their labels.
#[derive(Clone, Debug, Default)]
pub struct Vocabulary {
    keys: BTreeMap<String, Vec<String>>,
    port_names: BTreeSet<String>,
}

impl Vocabulary {
    pub fn new(model: &Model, inv: &Inventory) -> Vocabulary {
        let mut v = Vocabulary::default();
        let mut sels: Vec<&Sel> = Vec::new();
        for r in &model.rules {
            if let Subject::Endpoints(s) = &r.subject {
                sels.push(s);
            }
            sels.extend(r.requires.iter().flatten());
            for nr in &r.rules {
                if let Peers::Any(ps) = &nr.peers {
                    sels.extend(ps.iter().filter_map(|p| match p {
                        PeerSel::Endpoints(s) => Some(s),
                        _ => None,
                    }));
                }
                for p in nr.ports.iter().flatten() {
                    if let PortSel::Named(n) = &p.ports {
                        v.port_names.insert(n.clone());
                    }
                }
            }
        }
        for s in sels {
            for r in &s.reqs {
                if r.source.as_deref().is_none_or(|s| s == "k8s") {
                    v.add(&r.key, r.values.iter().map(String::as_str));
                }
            }
        }
        v.add(NAMESPACE_LABEL, inv.namespaces.keys().map(String::as_str));
        v.add(
            NAMESPACE_LABEL,
            inv.pods.iter().map(|p| p.namespace.as_str()),
        );
        v.add(CLUSTER_LABEL, [inv.cluster.as_str()]);
        // The values existing namespaces give the namespace-label keys.
        let ns_keys: Vec<String> = v
            .keys
            .keys()
            .filter(|k| k.starts_with(NAMESPACE_LABELS_PREFIX))
            .cloned()
            .collect();
        for k in ns_keys {
            let label = &k[NAMESPACE_LABELS_PREFIX.len()..];
            let values: Vec<String> = inv
                .namespaces
                .values()
                .filter_map(|n| n.labels.get(label).cloned())
                .collect();
            v.add(&k, values.iter().map(String::as_str));
        }
        v
    }

    /// The name label is the namespace's name: both keys share the
    /// namespace's list of values.
    fn canonical(key: &str) -> &str {
        match key.strip_prefix(NAMESPACE_LABELS_PREFIX) {
            Some(NAME_LABEL) => NAMESPACE_LABEL,
            _ => key,
        }
    }

    /// Both vocabularies' keys and values.
    pub fn merge(&mut self, other: &Vocabulary) {
        for (k, vs) in &other.keys {
            self.add(k, vs.iter().map(String::as_str));
        }
        self.port_names.extend(other.port_names.iter().cloned());
    }

    /// Adds values (and the key) that queries name, e.g. an assertion's.
    pub fn add<'a>(&mut self, key: &str, values: impl IntoIterator<Item = &'a str>) {
        self.keys.entry(key.to_owned()).or_default();
        let list = self
            .keys
            .entry(Self::canonical(key).to_owned())
            .or_default();
        for val in values {
            if let Err(i) = list.binary_search_by(|x| x.as_str().cmp(val)) {
                list.insert(i, val.to_owned());
            }
        }
    }

    fn values(&self, key: &str) -> &[String] {
        self.keys
            .get(Self::canonical(key))
            .map_or(&[], Vec::as_slice)
    }

    /// The code of a value of a key: 0 absent, 1.. the named values,
    /// beyond them the unnamed ones.
    fn code(&self, key: &str, value: Option<&str>) -> Option<i64> {
        match value {
            None => Some(0),
            Some(v) => self
                .values(key)
                .binary_search_by(|x| x.as_str().cmp(v))
                .ok()
                .map(|i| i as i64 + 1),
        }
    }

    fn others(&self, key: &str) -> std::ops::RangeInclusive<i64> {
        let n = self.values(key).len() as i64;
        n + 1..=n + OTHERS
    }
}

/// A pod whose labels and container ports are variables.
#[derive(Clone, Debug)]
pub struct SymPod {
    pub name: String,
    labels: BTreeMap<String, Int>,
    /// Per port name: whether the pod has it, its number and protocol.
    named: BTreeMap<String, (Bool, BV, Int)>,
    /// The index of the inventory node it runs on, -1 for none: it
    /// decides only whether a node's address is its own host.
    node: Int,
}

/// A peer of a direction: a pod, an address outside the cluster, or a
/// reserved identity (`host`, `remote-node`, ...).
#[derive(Clone, Copy)]
enum PeerT<'p> {
    Pod(&'p SymPod),
    Addr(&'p edge::SymAddr),
    Reserved(u32),
    /// A remote node's own identity (`--enable-node-selector-labels`).
    NodeId(usize),
}

impl PartialEq for PeerT<'_> {
    fn eq(&self, other: &Self) -> bool {
        matches!((self, other), (PeerT::Reserved(a), PeerT::Reserved(b)) if a == b)
    }
}

/// The variables and the formulas of one query: pods, a port, a protocol.
pub struct Encoder<'a> {
    model: &'a Model,
    inv: &'a Inventory,
    cfg: &'a Config,
    pub vocab: Vocabulary,
    /// Egress named ports as the inventory resolves them: (port, protocol).
    egress_named: BTreeMap<String, BTreeSet<(u16, u8)>>,
    /// The prefixes with CIDR identities, IPv4 then IPv6.
    prefixes: [Vec<Cidr>; 2],
}

/// A flow between two symbolic pods.
pub struct SymFlow {
    pub src: SymPod,
    pub dst: SymPod,
    pub port: BV,
    pub proto: Int,
}

fn int(v: i64) -> Int {
    Int::from_i64(v)
}

fn any(v: Vec<Bool>) -> Bool {
    match v.len() {
        0 => Bool::from_bool(false),
        1 => v
            .into_iter()
            .next()
            .unwrap_or_else(|| Bool::from_bool(false)),
        _ => Bool::or(&v),
    }
}

fn all(v: Vec<Bool>) -> Bool {
    match v.len() {
        0 => Bool::from_bool(true),
        1 => v
            .into_iter()
            .next()
            .unwrap_or_else(|| Bool::from_bool(true)),
        _ => Bool::and(&v),
    }
}

impl<'a> Encoder<'a> {
    pub fn new(model: &'a Model, inv: &'a Inventory, cfg: &'a Config) -> Encoder<'a> {
        Self::with_vocabulary(model, inv, cfg, Vocabulary::new(model, inv))
    }

    /// An encoder over a vocabulary shared with another model's, so that
    /// the pods of one query mean the same for both (`diff --exposure`).
    pub fn with_vocabulary(
        model: &'a Model,
        inv: &'a Inventory,
        cfg: &'a Config,
        vocab: Vocabulary,
    ) -> Encoder<'a> {
        // Egress names resolve over every pod's named ports, as the
        // compiler resolves them.
        let egress_named =
            compiler::compile::named_ports(inv.pods.iter().filter(|p| !p.host_network))
                .iter()
                .map(|(name, set)| (name.clone(), compiler::compile::egress_resolution(set)))
                .collect();
        let mut prefixes = [Vec::new(), Vec::new()];
        for c in compiler::compile::cidr_prefixes(model, cfg) {
            prefixes[usize::from(!c.addr.is_ipv4())].push(c);
        }
        Encoder {
            vocab,
            model,
            inv,
            cfg,
            egress_named,
            prefixes,
        }
    }

    /// A fresh pod, with the constraints every real pod meets.
    pub fn pod(&self, name: &str, solver: &z3::Solver) -> SymPod {
        let mut labels = BTreeMap::new();
        for key in self.vocab.keys.keys() {
            let v = Int::new_const(format!("{name}|{key}"));
            let max = self.vocab.values(key).len() as i64 + OTHERS;
            solver.assert(v.ge(int(0)));
            solver.assert(v.le(int(max)));
            let owned = key.starts_with(CILIUM_OWNED_PREFIX)
                && !key.starts_with(NAMESPACE_LABELS_PREFIX)
                && key != SERVICE_ACCOUNT_LABEL
                && key != CLUSTER_LABEL;
            if owned || !self.cfg.label_filter.keeps("k8s", key) {
                solver.assert(v.eq(int(0)));
            } else if key == NAMESPACE_LABEL {
                solver.assert(v.eq(int(0)).not());
            } else if key == CLUSTER_LABEL {
                let c = self.vocab.code(key, Some(&self.inv.cluster)).unwrap_or(0);
                solver.assert(v.eq(int(c)));
            }
            labels.insert(key.clone(), v);
        }
        let mut named = BTreeMap::new();
        for n in &self.vocab.port_names {
            let has = Bool::new_const(format!("{name}|port:{n}"));
            let num = BV::new_const(format!("{name}|port:{n}|number"), 16);
            let proto = Int::new_const(format!("{name}|port:{n}|protocol"));
            solver.assert(any(vec![
                proto.eq(int(6)),
                proto.eq(int(17)),
                proto.eq(int(132)),
            ]));
            solver.assert(num.eq(BV::from_u64(0, 16)).not());
            named.insert(n.clone(), (has, num, proto));
        }
        let node = Int::new_const(format!("{name}|node"));
        solver.assert(node.ge(int(-1)));
        solver.assert(node.lt(int(self.inv.nodes.len() as i64)));
        let pod = SymPod {
            name: name.to_owned(),
            labels,
            named,
            node,
        };
        solver.assert(self.namespace_labels(&pod));
        pod
    }

    /// An existing namespace has the labels the inventory gives it; the
    /// name label is the namespace's name.
    fn namespace_labels(&self, p: &SymPod) -> Bool {
        let mut out = Vec::new();
        let Some(ns) = p.labels.get(NAMESPACE_LABEL) else {
            return Bool::from_bool(true);
        };
        for (key, var) in &p.labels {
            let Some(label) = key.strip_prefix(NAMESPACE_LABELS_PREFIX) else {
                continue;
            };
            if !self.cfg.label_filter.keeps("k8s", key) {
                continue;
            }
            if label == NAME_LABEL {
                out.push(var.eq(ns));
                continue;
            }
            for (name, n) in &self.inv.namespaces {
                let Some(code) = self.vocab.code(NAMESPACE_LABEL, Some(name)) else {
                    continue;
                };
                let want = self
                    .vocab
                    .code(key, n.labels.get(label).map(String::as_str))
                    .unwrap_or(0);
                out.push(ns.eq(int(code)).implies(var.eq(int(want))));
            }
        }
        all(out)
    }

    /// Two pods in one namespace see the same namespace labels.
    pub fn same_namespace_same_labels(&self, a: &SymPod, b: &SymPod) -> Bool {
        let (Some(na), Some(nb)) = (a.labels.get(NAMESPACE_LABEL), b.labels.get(NAMESPACE_LABEL))
        else {
            return Bool::from_bool(true);
        };
        let eq: Vec<Bool> = a
            .labels
            .iter()
            .filter(|(k, _)| k.starts_with(NAMESPACE_LABELS_PREFIX))
            .filter_map(|(k, va)| b.labels.get(k).map(|vb| va.eq(vb)))
            .collect();
        na.eq(nb).implies(all(eq))
    }

    pub fn flow(&self, solver: &z3::Solver) -> SymFlow {
        let src = self.pod("src", solver);
        let dst = self.pod("dst", solver);
        solver.assert(self.same_namespace_same_labels(&src, &dst));
        SymFlow {
            src,
            dst,
            port: BV::new_const("port", 16),
            proto: Int::new_const("protocol"),
        }
    }

    pub fn req(&self, r: &Req, p: &SymPod) -> Bool {
        // Pods carry `k8s:` labels only.
        let foreign = r.source.as_deref().is_some_and(|s| s != "k8s");
        let var = p.labels.get(&r.key).filter(|_| !foreign);
        let Some(var) = var else {
            return Bool::from_bool(matches!(r.op, Op::NotIn | Op::DoesNotExist));
        };
        let is_one = || {
            any(r
                .values
                .iter()
                .filter_map(|v| self.vocab.code(&r.key, Some(v)))
                .map(|c| var.eq(int(c)))
                .collect())
        };
        match r.op {
            Op::In => is_one(),
            Op::NotIn => is_one().not(),
            Op::Exists => var.eq(int(0)).not(),
            Op::DoesNotExist => var.eq(int(0)),
        }
    }

    pub fn sel(&self, s: &Sel, p: &SymPod) -> Bool {
        all(s.reqs.iter().map(|r| self.req(r, p)).collect())
    }

    fn selects(&self, subject: &Subject, p: &SymPod) -> Bool {
        match subject {
            Subject::Endpoints(s) => self.sel(s, p),
            Subject::Nodes(_) => Bool::from_bool(false),
        }
    }

    /// What `fromRequires`/`toRequires` of every rule selecting `subject`
    /// ask of the peer in the direction: they restrict endpoint peers.
    fn requires(&self, d: usize, subject: &SymPod, peer: PeerT<'_>) -> Bool {
        self.requires_among(d, subject, peer, &|_| true)
    }

    fn requires_among(
        &self,
        d: usize,
        subject: &SymPod,
        peer: PeerT<'_>,
        keep: &dyn Fn(&NPolicyRule) -> bool,
    ) -> Bool {
        all(self
            .model
            .rules
            .iter()
            .filter(|r| !r.audit && !r.requires[d].is_empty() && keep(r))
            .map(|r| {
                let needs = all(r.requires[d]
                    .iter()
                    .map(|t| self.sel_peer(t, peer))
                    .collect());
                self.selects(&r.subject, subject).implies(needs)
            })
            .collect())
    }

    /// Whether an endpoint selector selects the peer: a pod by its labels,
    /// an address by the labels of its identity, a reserved identity by
    /// its `reserved:` label.
    fn sel_peer(&self, s: &Sel, peer: PeerT<'_>) -> Bool {
        match peer {
            PeerT::Pod(p) => self.sel(s, p),
            PeerT::Addr(a) => self.addr_identity(a, |labels| s.matches(labels)),
            PeerT::Reserved(id) => Bool::from_bool(s.matches(&reserved_labels(id))),
            PeerT::NodeId(i) => Bool::from_bool(s.matches(&self.node_identity_labels(i))),
        }
    }

    /// The labels of a remote node's identity: its labels and
    /// `reserved:remote-node`.
    fn node_identity_labels(&self, i: usize) -> compiler::labels::LabelSet {
        use compiler::labels::Label;
        let mut v: Vec<Label> = self.inv.nodes[i]
            .labels
            .iter()
            .map(|(k, val)| Label::k8s(k, val))
            .collect();
        v.push(Label::reserved("remote-node"));
        compiler::labels::LabelSet::from_labels(v)
    }

    /// How a pod sees node `i`'s address: `host` when it runs there, else
    /// the remote node identity.
    fn remote_of(&self, i: usize) -> PeerT<'static> {
        if self.cfg.node_selector_labels {
            PeerT::NodeId(i)
        } else {
            PeerT::Reserved(REMOTE_NODE)
        }
    }

    /// Whether the peer part of a rule matches the peer; `requires` is
    /// what the subject's rules require of endpoint peers.
    fn peer(&self, nr: &NRule, requires: &Bool, peer: PeerT<'_>, node: Option<&Int>) -> Bool {
        let sels = match &nr.peers {
            Peers::Nothing => return Bool::from_bool(false),
            Peers::All => return Bool::from_bool(true),
            Peers::Any(sels) => sels,
        };
        let mut alts = Vec::new();
        for s in sels {
            match s {
                PeerSel::Endpoints(sel) => {
                    alts.push(Bool::and(&[self.sel_peer(sel, peer), requires.clone()]));
                }
                PeerSel::Entity(Entity::All) => return Bool::from_bool(true),
                PeerSel::Entity(e) => alts.push(self.entity(*e, peer)),
                PeerSel::Cidr { cidr, except } => {
                    if let PeerT::Addr(a) = peer {
                        alts.push(self.cidr_rule(a, cidr, except));
                    }
                }
                // `fromNodes` selects remote nodes by their labels, and the
                // host when the subject's own node matches; pods and
                // addresses are never nodes.
                PeerSel::Nodes(sel) => match (peer, node) {
                    (PeerT::NodeId(i), _) => {
                        let n = &self.inv.nodes[i];
                        alts.push(Bool::from_bool(
                            sel.matches(&compiler::compile::node_label_set(n)),
                        ));
                    }
                    (PeerT::Reserved(HOST), Some(node)) => {
                        for (i, n) in self.inv.nodes.iter().enumerate() {
                            if sel.matches(&compiler::compile::node_label_set(n)) {
                                alts.push(node.eq(int(i as i64)));
                            }
                        }
                    }
                    _ => {}
                },
                // `toFQDNs` addresses are DNS answers, which the address
                // domain leaves out.
                PeerSel::Fqdn(_) => {}
            }
        }
        any(alts)
    }

    /// Whether an entity names the peer, as the compiler resolves entities.
    fn entity(&self, e: Entity, peer: PeerT<'_>) -> Bool {
        match peer {
            PeerT::Pod(p) => match e {
                Entity::All => Bool::from_bool(true),
                Entity::Cluster => {
                    let c = self.vocab.code(CLUSTER_LABEL, Some(&self.inv.cluster));
                    match (c, p.labels.get(CLUSTER_LABEL)) {
                        (Some(c), Some(v)) => v.eq(int(c)),
                        _ => Bool::from_bool(false),
                    }
                }
                _ => Bool::from_bool(false),
            },
            PeerT::Addr(a) => match e {
                Entity::All | Entity::World => Bool::from_bool(true),
                Entity::WorldIpv4 | Entity::WorldIpv6 => {
                    let v4 = e == Entity::WorldIpv4;
                    if a.v4 == v4 {
                        Bool::from_bool(true)
                    } else if self.world_id(v4) == self.world_id(a.v4) {
                        self.addr_is_world(a)
                    } else {
                        Bool::from_bool(false)
                    }
                }
                _ => Bool::from_bool(false),
            },
            PeerT::NodeId(_) => Bool::from_bool(matches!(
                e,
                Entity::All | Entity::RemoteNode | Entity::Cluster
            )),
            PeerT::Reserved(id) => Bool::from_bool(match e {
                Entity::All => true,
                Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6 => false,
                Entity::Host => id == HOST,
                Entity::RemoteNode => id == REMOTE_NODE || id == KUBE_APISERVER,
                Entity::KubeApiserver => id == KUBE_APISERVER,
                Entity::Init => id == INIT,
                Entity::Ingress => id == INGRESS,
                Entity::Health => id == HEALTH,
                Entity::Unmanaged => id == UNMANAGED,
                Entity::None => false,
                Entity::Cluster => [
                    HOST,
                    REMOTE_NODE,
                    INIT,
                    INGRESS,
                    HEALTH,
                    UNMANAGED,
                    KUBE_APISERVER,
                ]
                .contains(&id),
            }),
        }
    }

    fn port(&self, p: &NPort, egress: bool, own: Option<&SymPod>, port: &BV, proto: &Int) -> Bool {
        let bv = |v: u16| BV::from_u64(u64::from(v), 16);
        let proto_in = |ps: &[u8]| any(ps.iter().map(|x| proto.eq(int(i64::from(*x)))).collect());
        match &p.ports {
            PortSel::All => match p.proto {
                None => Bool::from_bool(true),
                Some(x) => proto.eq(int(i64::from(x))),
            },
            PortSel::Portless => match p.proto {
                Some(x) => proto.eq(int(i64::from(x))),
                None => Bool::from_bool(false),
            },
            PortSel::Range(lo, hi) => {
                let protos = match p.proto {
                    Some(x) => vec![x],
                    None => vec![6, 17, 132],
                };
                Bool::and(&[proto_in(&protos), port.bvuge(bv(*lo)), port.bvule(bv(*hi))])
            }
            PortSel::Named(name) if egress => any(self
                .egress_named
                .get(name)
                .into_iter()
                .flatten()
                .filter(|(_, cp)| p.proto.is_none_or(|x| x == *cp))
                .map(|(n, cp)| Bool::and(&[proto.eq(int(i64::from(*cp))), port.eq(bv(*n))]))
                .collect()),
            PortSel::Named(name) => match own.and_then(|o| o.named.get(name)) {
                Some((has, num, cproto)) => {
                    let mut v = vec![has.clone(), port.eq(num), proto.eq(cproto)];
                    if let Some(x) = p.proto {
                        v.push(cproto.eq(int(i64::from(x))));
                    }
                    Bool::and(&v)
                }
                None => Bool::from_bool(false),
            },
        }
    }

    fn ports(&self, nr: &NRule, own: Option<&SymPod>, port: &BV, proto: &Int) -> Bool {
        let egress = nr.dir == Direction::Egress;
        match &nr.ports {
            None => Bool::from_bool(true),
            Some(ps) => any(ps
                .iter()
                .map(|p| self.port(p, egress, own, port, proto))
                .collect()),
        }
    }

    /// Whether the direction lets the flow through at `subject` (the
    /// source for egress, the destination for ingress).
    pub fn direction(&self, dir: Direction, f: &SymFlow) -> Bool {
        let (subject, peer) = match dir {
            Direction::Egress => (&f.src, &f.dst),
            Direction::Ingress => (&f.dst, &f.src),
        };
        self.direction_at(dir, subject, PeerT::Pod(peer), &f.port, &f.proto, &|_| true)
    }

    /// `allowed`, reading only the rules `keep_src` passes for the
    /// source's egress and `keep_dst` for the destination's ingress: exact
    /// when the rules left out cannot select that pod under what the
    /// query asserts of it (their subjects cannot meet it).
    pub fn allowed_among(
        &self,
        f: &SymFlow,
        keep_src: &dyn Fn(&NPolicyRule) -> bool,
        keep_dst: &dyn Fn(&NPolicyRule) -> bool,
    ) -> Bool {
        Bool::and(&[
            self.direction_at(
                Direction::Egress,
                &f.src,
                PeerT::Pod(&f.dst),
                &f.port,
                &f.proto,
                keep_src,
            ),
            self.direction_at(
                Direction::Ingress,
                &f.dst,
                PeerT::Pod(&f.src),
                &f.port,
                &f.proto,
                keep_dst,
            ),
        ])
    }

    /// The verdict of the direction at pod `subject` for a flow with
    /// `peer`: default deny when a selecting rule asks for it, an allow
    /// that matches, no deny that matches.
    fn direction_at(
        &self,
        dir: Direction,
        subject: &SymPod,
        peer: PeerT<'_>,
        port: &BV,
        proto: &Int,
        keep: &dyn Fn(&NPolicyRule) -> bool,
    ) -> Bool {
        let d = compiler::model::dir_index(dir);
        let requires = self.requires_among(d, subject, peer, keep);
        let (mut enforced, mut allow, mut deny) = (Vec::new(), Vec::new(), Vec::new());
        // A node reaches its own pods whatever the allows say; a deny
        // still wins over it, as in the compiled map.
        if dir == Direction::Ingress && self.cfg.allow_localhost && peer == PeerT::Reserved(HOST) {
            allow.push(Bool::from_bool(true));
        }
        for r in self.model.rules.iter().filter(|r| !r.audit && keep(r)) {
            if matches!(r.subject, Subject::Nodes(_)) {
                continue;
            }
            let sel = self.selects(&r.subject, subject);
            if r.default_deny[d] {
                enforced.push(sel.clone());
            }
            for nr in r.rules.iter().filter(|nr| nr.dir == dir) {
                // Named ports at ingress are the subject's own.
                let m = Bool::and(&[
                    sel.clone(),
                    self.peer(nr, &requires, peer, Some(&subject.node)),
                    self.ports(nr, Some(subject), port, proto),
                ]);
                if nr.deny {
                    deny.push(m);
                } else {
                    allow.push(m);
                }
            }
        }
        Bool::and(&[
            Bool::or(&[any(enforced).not(), any(allow)]),
            any(deny).not(),
        ])
    }

    /// The verdict at node `i`'s host endpoint for a flow with pod `peer`
    /// (host policies: `nodeSelector` subjects); a node no host policy
    /// selects has no host endpoint, and lets everything through.
    pub(crate) fn host_direction(
        &self,
        dir: Direction,
        i: usize,
        peer: &SymPod,
        port: &BV,
        proto: &Int,
    ) -> Bool {
        let labels = compiler::compile::node_label_set(&self.inv.nodes[i]);
        let rules: Vec<&NPolicyRule> = self
            .model
            .rules
            .iter()
            .filter(|r| !r.audit && matches!(&r.subject, Subject::Nodes(s) if s.matches(&labels)))
            .collect();
        if rules.is_empty() {
            return Bool::from_bool(true);
        }
        let d = compiler::model::dir_index(dir);
        let requires = all(rules
            .iter()
            .flat_map(|r| r.requires[d].iter())
            .map(|t| self.sel(t, peer))
            .collect());
        let enforced = rules.iter().any(|r| r.default_deny[d]);
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for r in &rules {
            for nr in r.rules.iter().filter(|nr| nr.dir == dir) {
                // A host endpoint has no container ports to name.
                let m = Bool::and(&[
                    self.peer(nr, &requires, PeerT::Pod(peer), None),
                    self.ports(nr, None, port, proto),
                ]);
                if nr.deny {
                    deny.push(m);
                } else {
                    allow.push(m);
                }
            }
        }
        let allowed = if enforced {
            any(allow)
        } else {
            Bool::from_bool(true)
        };
        Bool::and(&[allowed, any(deny).not()])
    }

    /// The pod runs on node `i`.
    pub(crate) fn on_node(&self, p: &SymPod, i: usize) -> Bool {
        p.node.eq(int(i as i64))
    }

    /// Whether peer rule `nr` of `r` matches a flow at its subject: the
    /// subject selected, the peer matched (with the subject's requires),
    /// the port.
    fn rule_match_at(
        &self,
        r: &NPolicyRule,
        nr: &NRule,
        subject: &SymPod,
        peer: PeerT<'_>,
        port: &BV,
        proto: &Int,
    ) -> Bool {
        let d = compiler::model::dir_index(nr.dir);
        let requires = self.requires(d, subject, peer);
        Bool::and(&[
            self.selects(&r.subject, subject),
            self.peer(nr, &requires, peer, Some(&subject.node)),
            self.ports(nr, Some(subject), port, proto),
        ])
    }

    /// Whether `nr` matches the pod-to-pod flow (at the source for
    /// egress, at the destination for ingress).
    pub fn rule_matches(&self, r: &NPolicyRule, nr: &NRule, f: &SymFlow) -> Bool {
        let (subject, peer) = match nr.dir {
            Direction::Egress => (&f.src, &f.dst),
            Direction::Ingress => (&f.dst, &f.src),
        };
        self.rule_match_at(r, nr, subject, PeerT::Pod(peer), &f.port, &f.proto)
    }

    /// Whether `nr` matches the edge flow; a rule of the other direction
    /// than the pod's never does.
    pub fn rule_matches_edge(&self, r: &NPolicyRule, nr: &NRule, e: &EdgeFlow) -> Bool {
        if (nr.dir == Direction::Egress) != e.pod_is_src {
            return Bool::from_bool(false);
        }
        self.at_pod(e, &|peer| {
            self.rule_match_at(r, nr, &e.pod, peer, &e.port, &e.proto)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn denied_at(
        &self,
        dir: Direction,
        subject: &SymPod,
        peer: PeerT<'_>,
        port: &BV,
        proto: &Int,
        keep: &dyn Fn(&NPolicyRule) -> bool,
    ) -> Bool {
        any(self
            .model
            .rules
            .iter()
            .filter(|r| {
                !r.audit
                    && matches!(r.subject, Subject::Endpoints(_))
                    && r.rules.iter().any(|nr| nr.deny && nr.dir == dir)
                    && keep(r)
            })
            .flat_map(|r| {
                r.rules
                    .iter()
                    .filter(|nr| nr.deny && nr.dir == dir)
                    .map(move |nr| (r, nr))
            })
            .map(|(r, nr)| self.rule_match_at(r, nr, subject, peer, port, proto))
            .collect())
    }

    /// Whether a deny of the direction, of the rules `keep` passes,
    /// matches the pod-to-pod flow.
    pub fn denied(&self, dir: Direction, f: &SymFlow, keep: &dyn Fn(&NPolicyRule) -> bool) -> Bool {
        let (subject, peer) = match dir {
            Direction::Egress => (&f.src, &f.dst),
            Direction::Ingress => (&f.dst, &f.src),
        };
        self.denied_at(dir, subject, PeerT::Pod(peer), &f.port, &f.proto, keep)
    }

    /// Whether a deny of the pod's direction, of the rules `keep` passes,
    /// matches the edge flow.
    pub fn denied_edge(&self, e: &EdgeFlow, keep: &dyn Fn(&NPolicyRule) -> bool) -> Bool {
        let dir = if e.pod_is_src {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        self.at_pod(e, &|peer| {
            self.denied_at(dir, &e.pod, peer, &e.port, &e.proto, keep)
        })
    }

    /// The pod is in a namespace that does not exist yet and carries no
    /// labels but its name.
    pub fn new_unlabelled_namespace(&self, p: &SymPod) -> Bool {
        let mut v = Vec::new();
        for (key, var) in &p.labels {
            if key == NAMESPACE_LABEL {
                v.push(var.ge(int(*self.vocab.others(key).start())));
            } else if let Some(l) = key.strip_prefix(NAMESPACE_LABELS_PREFIX) {
                if l != NAME_LABEL {
                    v.push(var.eq(int(0)));
                }
            }
        }
        all(v)
    }

    /// The witness of a satisfiable check of the flow, made readable.
    pub fn witness(&self, solver: &z3::Solver, f: &SymFlow, allowed: bool) -> Answer {
        self.answer(solver, f, allowed, true)
    }

    /// Protocols a person can send (TCP, UDP, SCTP, ICMP, ICMPv6).
    pub fn sendable(&self, proto: &Int) -> Bool {
        self.protocol_known(proto)
    }

    /// The end-to-end L3/L4 verdict: egress at the source, then ingress at
    /// the destination.
    pub fn allowed(&self, f: &SymFlow) -> Bool {
        Bool::and(&[
            self.direction(Direction::Egress, f),
            self.direction(Direction::Ingress, f),
        ])
    }

    /// Equalities that fix a symbolic pod to a pod of the inventory.
    pub fn concrete(&self, sym: &SymPod, pod: &Pod) -> Bool {
        let ns = self.inv.namespace(&pod.namespace);
        let labels = pod_labels(
            &pod.labels,
            &pod.namespace,
            &ns.labels,
            &pod.service_account,
            &self.inv.cluster,
            &self.cfg.label_filter,
        );
        let mut eqs = Vec::new();
        for (key, var) in &sym.labels {
            let value = labels.get("k8s", key);
            let code = self
                .vocab
                .code(key, value)
                .unwrap_or(*self.vocab.others(key).start());
            eqs.push(var.eq(int(code)));
        }
        let node = pod
            .node
            .as_ref()
            .and_then(|n| self.inv.nodes.iter().position(|x| &x.name == n))
            .map_or(-1, |i| i as i64);
        eqs.push(sym.node.eq(int(node)));
        for (name, (has, num, proto)) in &sym.named {
            match pod
                .ports
                .iter()
                .find(|c| c.name.as_deref() == Some(name.as_str()))
            {
                Some(c) => {
                    eqs.push(has.clone());
                    eqs.push(num.eq(BV::from_u64(u64::from(c.port), 16)));
                    eqs.push(proto.eq(int(i64::from(c.protocol))));
                }
                None => eqs.push(has.not()),
            }
        }
        all(eqs)
    }
}

/// Pods as an assertion names them: a namespace, labels they have and
/// labels they do not have (absent or another value).
#[derive(Clone, Debug, Default)]
pub struct Pattern {
    pub namespace: Option<String>,
    pub labels: Vec<(String, String)>,
    pub not: Vec<(String, String)>,
}

/// Ports of a query: (protocol, lo, hi); none means every port of every
/// protocol.
pub type Ports = [(u8, u16, u16)];

/// What the solver says of a query.
#[derive(Clone, Debug)]
pub enum Answer {
    /// No possible pod breaks it.
    Holds,
    /// A pair of possible pods and a port that break it.
    Broken(Box<Witness>),
    /// The solver gave up (time limit, or it could not decide): never
    /// read as "holds".
    Unknown(String),
}

/// What the solver says of a question about one pod.
#[derive(Clone, Debug)]
pub enum PodAnswer {
    Holds,
    Pod(WitnessPod),
    Unknown(String),
}

/// A pod the solver made up, as a person would write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessPod {
    pub namespace: String,
    /// Labels of the namespace when it does not exist yet.
    pub new_namespace: Option<BTreeMap<String, String>>,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// (name, port, protocol)
    pub ports: Vec<(String, u16, u8)>,
    /// The node it runs on, when the solver chose one.
    pub node: Option<String>,
}

/// A condition on one label of a pod that decides a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// The label has this value.
    Is(String, String),
    /// The pod has no such label.
    Absent(String),
    /// The label has a value no policy names (for the namespace: a
    /// namespace that does not exist yet).
    Unnamed(String),
    /// The pod has the label, whatever its value (no policy names one).
    Has(String),
}

impl std::fmt::Display for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |k: &str| {
            if k == NAMESPACE_LABEL {
                "namespace".to_owned()
            } else if let Some(l) = k.strip_prefix(NAMESPACE_LABELS_PREFIX) {
                format!("namespace label {l}")
            } else if k == SERVICE_ACCOUNT_LABEL {
                "service account".to_owned()
            } else {
                k.to_owned()
            }
        };
        match self {
            Cond::Is(k, v) => write!(f, "{}={v}", name(k)),
            Cond::Absent(k) => write!(f, "no {}", name(k)),
            Cond::Unnamed(k) if k == NAMESPACE_LABEL => f.write_str("a new namespace"),
            Cond::Unnamed(k) => write!(f, "{}=(a value no policy names)", name(k)),
            Cond::Has(k) => write!(f, "{}=(any value)", name(k)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Witness {
    /// For `diff --exposure`: the labels of each pod that decide the
    /// change; every pair of pods meeting them changes the same way.
    pub matters: Option<[Vec<Cond>; 2]>,
    pub src: WitnessPod,
    pub dst: WitnessPod,
    pub port: u16,
    pub protocol: u8,
    /// The verdict the formula gives the flow.
    pub allowed: bool,
}

impl Encoder<'_> {
    /// Adds the values a pattern names to the vocabulary (before pods are
    /// made).
    pub fn learn(&mut self, p: &Pattern) {
        if let Some(ns) = &p.namespace {
            self.vocab.add(NAMESPACE_LABEL, [ns.as_str()]);
        }
        for (k, v) in p.labels.iter().chain(&p.not) {
            self.vocab.add(k, [v.as_str()]);
        }
    }

    pub fn pattern(&self, p: &Pattern, pod: &SymPod) -> Bool {
        let mut v = Vec::new();
        let is = |k: &str, val: &str| match (pod.labels.get(k), self.vocab.code(k, Some(val))) {
            (Some(var), Some(c)) => var.eq(int(c)),
            _ => Bool::from_bool(false),
        };
        if let Some(ns) = &p.namespace {
            v.push(is(NAMESPACE_LABEL, ns));
        }
        for (k, val) in &p.labels {
            v.push(is(k, val));
        }
        for (k, val) in &p.not {
            v.push(is(k, val).not());
        }
        all(v)
    }

    fn port_in(&self, port: &BV, proto: &Int, ports: &Ports) -> Bool {
        if ports.is_empty() {
            return Bool::from_bool(true);
        }
        let bv = |v: u16| BV::from_u64(u64::from(v), 16);
        any(ports
            .iter()
            .map(|&(p, lo, hi)| {
                Bool::and(&[
                    proto.eq(int(i64::from(p))),
                    port.bvuge(bv(lo)),
                    port.bvule(bv(hi)),
                ])
            })
            .collect())
    }

    /// Is there a flow from a pod of `from` to a pod of `to` on `ports`
    /// whose verdict is not `want_allowed`? The two pods are different
    /// pods (a pod reaching itself meets no policy).
    pub fn expect(
        &self,
        from: &Bool,
        to: &Bool,
        f: &SymFlow,
        ports: &Ports,
        want_allowed: bool,
        solver: &z3::Solver,
    ) -> Answer {
        let verdict = self.allowed(f);
        let broken = if want_allowed { verdict.not() } else { verdict };
        solver.push();
        solver.assert(from);
        solver.assert(to);
        solver.assert(self.port_in(&f.port, &f.proto, ports));
        solver.assert(self.protocol_known(&f.proto));
        solver.assert(&broken);
        let answer = self.answer(solver, f, !want_allowed, true);
        solver.pop(1);
        answer
    }

    /// Protocols the datapath tells apart (TCP, UDP, SCTP, ICMP): the
    /// witness is a flow a person can send.
    fn protocol_known(&self, proto: &Int) -> Bool {
        any([1, 6, 17, 58, 132]
            .into_iter()
            .map(|p| proto.eq(int(p)))
            .collect())
    }

    /// A pod of `of` that no rule of the direction selects with default
    /// deny: every flow of that direction is allowed by default.
    pub fn uncovered(
        &self,
        of: &Bool,
        pod: &SymPod,
        dir: Direction,
        solver: &z3::Solver,
    ) -> PodAnswer {
        let d = compiler::model::dir_index(dir);
        let enforced = any(self
            .model
            .rules
            .iter()
            .filter(|r| !r.audit && r.default_deny[d])
            .map(|r| self.selects(&r.subject, pod))
            .collect());
        solver.push();
        solver.assert(of);
        solver.assert(enforced.not());
        let out = match solver.check() {
            z3::SatResult::Unsat => PodAnswer::Holds,
            z3::SatResult::Unknown => PodAnswer::Unknown(unknown_reason(solver)),
            z3::SatResult::Sat => match solver.get_model() {
                Some(m) => PodAnswer::Pod(self.witness_pod(&m, pod)),
                None => PodAnswer::Unknown("the solver gave no model".into()),
            },
        };
        solver.pop(1);
        out
    }

    /// The answer of a check; with `readable`, the witness is refined
    /// (`refine`) before it is read.
    fn answer(&self, solver: &z3::Solver, f: &SymFlow, allowed: bool, readable: bool) -> Answer {
        match solver.check() {
            z3::SatResult::Unsat => Answer::Holds,
            z3::SatResult::Unknown => Answer::Unknown(unknown_reason(solver)),
            z3::SatResult::Sat => {
                let m = if readable {
                    self.refine(solver, &[&f.src, &f.dst], &f.port, &f.proto, Vec::new())
                } else {
                    solver.get_model()
                };
                match m {
                    None => Answer::Unknown("the solver gave no model".into()),
                    Some(m) => {
                        let num = |b: &BV| m.eval(b, true).and_then(|v| v.as_u64()).unwrap_or(0);
                        let n = |i: &Int| m.eval(i, true).and_then(|v| v.as_i64()).unwrap_or(0);
                        Answer::Broken(Box::new(Witness {
                            matters: None,
                            src: self.witness_pod(&m, &f.src),
                            dst: self.witness_pod(&m, &f.dst),
                            port: num(&f.port) as u16,
                            protocol: n(&f.proto) as u8,
                            allowed,
                        }))
                    }
                }
            }
        }
    }

    /// A model of a satisfiable check that a person can read: labels a
    /// witness need not have are left off, TCP on a port other than 0,
    /// then `extra`; each preference is kept only when the check stays
    /// satisfiable, so the witness still breaks the query.
    pub(crate) fn refine(
        &self,
        solver: &z3::Solver,
        pods: &[&SymPod],
        port: &BV,
        proto: &Int,
        extra: Vec<Bool>,
    ) -> Option<z3::Model> {
        let first = solver.get_model()?;
        let mut prefs = Vec::new();
        for pod in pods {
            for (key, var) in &pod.labels {
                let optional = key != NAMESPACE_LABEL
                    && key != CLUSTER_LABEL
                    && !key.starts_with(NAMESPACE_LABELS_PREFIX);
                let set = first
                    .eval(var, true)
                    .and_then(|v| v.as_i64())
                    .is_some_and(|c| c != 0);
                if optional && set {
                    prefs.push(var.eq(int(0)));
                }
            }
        }
        // A node only where it matters; a witness without named ports adds
        // no name to the egress resolution when it is compiled in.
        for pod in pods {
            prefs.push(pod.node.eq(int(-1)));
            for (has, _, _) in pod.named.values() {
                prefs.push(has.not());
            }
        }
        prefs.push(proto.eq(int(6)));
        prefs.push(port.eq(BV::from_u64(0, 16)).not());
        prefs.extend(extra);
        // All at once first: when they can all hold, one check instead of
        // one per preference.
        solver.push();
        solver.assert(all(prefs.clone()));
        if solver.check() == z3::SatResult::Sat {
            let m = solver.get_model();
            solver.pop(1);
            return m.or(Some(first));
        }
        solver.pop(1);
        let mut kept = 0;
        for p in prefs {
            solver.push();
            solver.assert(&p);
            if solver.check() == z3::SatResult::Sat {
                kept += 1;
            } else {
                solver.pop(1);
            }
        }
        let m = match kept {
            0 => None,
            _ if solver.check() == z3::SatResult::Sat => solver.get_model(),
            _ => None,
        };
        if kept > 0 {
            solver.pop(kept);
        }
        m.or(Some(first))
    }

    /// A value for an unnamed code: one nobody's selector names.
    fn invented(&self, key: &str, code: i64) -> String {
        let k = *self.vocab.others(key).start();
        let base = if Vocabulary::canonical(key) == NAMESPACE_LABEL {
            "sluice-new-namespace"
        } else {
            "sluice-other"
        };
        let mut s = format!("{base}-{}", code - k + 1);
        while self.vocab.values(key).contains(&s) {
            s.push('x');
        }
        s
    }

    fn value(&self, key: &str, code: i64) -> Option<String> {
        if code == 0 {
            return None;
        }
        match self.vocab.values(key).get(code as usize - 1) {
            Some(v) => Some(v.clone()),
            None => Some(self.invented(key, code)),
        }
    }

    pub fn witness_pod(&self, m: &z3::Model, pod: &SymPod) -> WitnessPod {
        let code = |k: &str| {
            pod.labels
                .get(k)
                .and_then(|v| m.eval(v, true))
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
        };
        let namespace = self
            .value(NAMESPACE_LABEL, code(NAMESPACE_LABEL))
            .unwrap_or_else(|| "default".into());
        let existing = self.inv.namespaces.contains_key(&namespace);
        let mut labels = BTreeMap::new();
        let mut ns_labels = BTreeMap::new();
        let mut service_account = None;
        for key in pod.labels.keys() {
            let Some(v) = self.value(key, code(key)) else {
                continue;
            };
            if let Some(l) = key.strip_prefix(NAMESPACE_LABELS_PREFIX) {
                if l != NAME_LABEL {
                    ns_labels.insert(l.to_owned(), v);
                }
            } else if key == SERVICE_ACCOUNT_LABEL {
                service_account = Some(v);
            } else if key != NAMESPACE_LABEL && key != CLUSTER_LABEL {
                labels.insert(key.clone(), v);
            }
        }
        let mut ports = Vec::new();
        for (name, (has, num, proto)) in &pod.named {
            if m.eval(has, true).and_then(|b| b.as_bool()) == Some(true) {
                let port = m.eval(num, true).and_then(|v| v.as_u64()).unwrap_or(0) as u16;
                let p = m.eval(proto, true).and_then(|v| v.as_i64()).unwrap_or(6) as u8;
                ports.push((name.clone(), port, p));
            }
        }
        let node = m
            .eval(&pod.node, true)
            .and_then(|v| v.as_i64())
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.inv.nodes.get(i))
            .map(|n| n.name.clone());
        WitnessPod {
            node,
            new_namespace: (!existing).then_some(ns_labels),
            namespace,
            labels,
            service_account,
            ports,
        }
    }
}

/// Why the solver gave up on its last check.
fn unknown_reason(solver: &z3::Solver) -> String {
    solver
        .get_reason_unknown()
        .unwrap_or_else(|| "unknown".into())
}

/// What one solver check may spend: wall-clock time, and z3's resource
/// count ("steps"), which unlike time is the same on every machine, so a
/// CI gate with a step budget decides the same way everywhere.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub timeout_ms: u32,
    /// 0: no step limit.
    pub steps: u32,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            timeout_ms: 10_000,
            steps: 0,
        }
    }
}

/// Solver whose every check keeps to the budget.
pub fn solver(b: Budget) -> z3::Solver {
    let s = z3::Solver::new();
    let mut p = z3::Params::new();
    p.set_u32("timeout", b.timeout_ms);
    if b.steps > 0 {
        p.set_u32("rlimit", b.steps);
    }
    s.set_params(&p);
    s
}

impl WitnessPod {
    /// The pod as a reader names it: `namespace {key=value,...}`.
    pub fn summary(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}{} {{{}}}",
            self.namespace,
            if self.new_namespace.is_some() {
                " (new namespace)"
            } else {
                ""
            },
            labels.join(",")
        )
    }

    /// The pod (and its namespace when it is new) as manifests.
    pub fn manifest(&self, name: &str) -> String {
        let mut s = String::new();
        if let Some(ns) = &self.new_namespace {
            s.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
                self.namespace
            ));
            if !ns.is_empty() {
                s.push_str("  labels:\n");
                for (k, v) in ns {
                    s.push_str(&format!("    {k}: {}\n", quote(v)));
                }
            }
            s.push_str("---\n");
        }
        s.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {}\n",
            self.namespace
        ));
        if !self.labels.is_empty() {
            s.push_str("  labels:\n");
            for (k, v) in &self.labels {
                s.push_str(&format!("    {k}: {}\n", quote(v)));
            }
        }
        s.push_str("spec:\n");
        if let Some(n) = &self.node {
            s.push_str(&format!("  nodeName: {n}\n"));
        }
        if let Some(sa) = &self.service_account {
            s.push_str(&format!("  serviceAccountName: {sa}\n"));
        }
        s.push_str("  containers:\n  - name: main\n");
        if !self.ports.is_empty() {
            s.push_str("    ports:\n");
            for (n, p, proto) in &self.ports {
                s.push_str(&format!(
                    "    - {{name: {n}, containerPort: {p}, protocol: {}}}\n",
                    match proto {
                        17 => "UDP",
                        132 => "SCTP",
                        _ => "TCP",
                    }
                ));
            }
        }
        s
    }
}

/// Label values that YAML would read as something else are quoted.
fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        && v.parse::<f64>().is_err()
        && !matches!(
            v,
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        );
    if plain {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// A copy of the inventory with the witness pods (and their new
/// namespaces) added; their names, `namespace/pod`.
fn with_pods(
    inv: &Inventory,
    pods: &[(&str, &WitnessPod)],
    avoid: &[std::net::IpAddr],
) -> Result<(Inventory, Vec<String>), String> {
    use compiler::inventory::{ContainerPort, Namespace};
    // The L3/L4 verdict of a flow between two pods depends on the
    // policies, the two pods, the namespaces, nodes and Services, and, of
    // the other pods, only on the named ports they bring to egress
    // resolution: one pod per (name, port, protocol) keeps that exact.
    // Compiling that instead of every pod keeps a witness's check cheap
    // at any cluster size.
    let mut kept: BTreeSet<(String, u16, u8)> = BTreeSet::new();
    let carriers: Vec<Pod> = inv
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .filter(|p| {
            let mut new = false;
            for c in &p.ports {
                if let Some(n) = &c.name {
                    new |= kept.insert((n.clone(), c.port, c.protocol));
                }
            }
            new
        })
        .cloned()
        .collect();
    let mut inv = Inventory {
        pods: carriers,
        cluster: inv.cluster.clone(),
        namespaces: inv.namespaces.clone(),
        nodes: inv.nodes.clone(),
        services: inv.services.clone(),
        left_out: Vec::new(),
        workloads: Vec::new(),
    };
    // Addresses no pod or node of the inventory has.
    let used: BTreeSet<std::net::IpAddr> = inv
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .chain(inv.nodes.iter().flat_map(|n| n.ips.iter().copied()))
        .chain(avoid.iter().copied())
        .collect();
    let mut free = (1u32..1 << 20)
        .map(|i| std::net::IpAddr::from(std::net::Ipv4Addr::from(0x6440_0000 + i)))
        .filter(|ip| !used.contains(ip));
    let mut names = Vec::new();
    for (role, p) in pods {
        if let Some(labels) = &p.new_namespace {
            let mut labels = labels.clone();
            labels.insert(NAME_LABEL.into(), p.namespace.clone());
            inv.namespaces
                .entry(p.namespace.clone())
                .or_insert(Namespace {
                    name: p.namespace.clone(),
                    labels,
                });
        }
        let ip = free.next().ok_or("no free address for a witness pod")?;
        let name = format!("sluice-witness-{role}");
        inv.pods.push(Pod {
            name: name.clone(),
            namespace: p.namespace.clone(),
            labels: p.labels.clone(),
            service_account: p.service_account.clone().unwrap_or_default(),
            node: p.node.clone(),
            ips: vec![ip],
            host_network: false,
            ports: p
                .ports
                .iter()
                .map(|(n, port, proto)| ContainerPort {
                    name: Some(n.clone()),
                    port: *port,
                    protocol: *proto,
                })
                .collect(),
            workload: None,
            loc: Default::default(),
            ip_locs: Vec::new(),
        });
        names.push(format!("{}/{name}", p.namespace));
    }
    Ok((inv, names))
}

/// Adds the witness's pods to a copy of the inventory, compiles the
/// policies and judges the flow with `simulate`: the concrete verdict
/// must be the formula's. `Err` is a bug of the symbolic semantics, to be
/// reported as such, never as a finding.
pub fn confirm(w: &Witness, model: &Model, inv: &Inventory, cfg: &Config) -> Result<(), String> {
    let (inv, names) = with_pods(inv, &[("src", &w.src), ("dst", &w.dst)], &[])?;
    let flow = simulator::flow::Flow::new(
        simulator::flow::PeerRef::Pod(names[0].clone()),
        simulator::flow::PeerRef::Pod(names[1].clone()),
        w.port,
        w.protocol,
    );
    judged_as(model, &inv, cfg, &flow, w.allowed, || {
        format!("{} → {} {}/{}", names[0], names[1], w.port, w.protocol)
    })
}

/// Compiles the inventory with the witness pods and judges `flow` with
/// `simulate`; `Err` names the witness when the verdict is not `allowed`.
pub(crate) fn judged_as(
    model: &Model,
    inv: &Inventory,
    cfg: &Config,
    flow: &simulator::flow::Flow,
    allowed: bool,
    witness: impl FnOnce() -> String,
) -> Result<(), String> {
    let (compiled, _) = compiler::compile::compile_model(model, inv, cfg);
    let o = simulator::eval::simulate(&compiled, flow)?;
    if (o.verdict == simulator::flow::Verdict::Allowed) == allowed {
        Ok(())
    } else {
        Err(format!(
            "the solver's witness {} is {} by the formula but {} by simulate",
            witness(),
            if allowed { "allowed" } else { "denied" },
            o.verdict
        ))
    }
}

/// The same for a pod no policy covers in a direction.
pub fn confirm_uncovered(
    pod: &WitnessPod,
    dir: Direction,
    model: &Model,
    inv: &Inventory,
    cfg: &Config,
) -> Result<(), String> {
    let (inv, names) = with_pods(inv, &[("pod", pod)], &[])?;
    let (compiled, _) = compiler::compile::compile_model(model, &inv, cfg);
    let e = compiled
        .endpoint(&names[0])
        .ok_or_else(|| format!("the witness {} is not an endpoint", names[0]))?;
    if e.enforced[compiler::model::dir_index(dir)] {
        Err(format!(
            "the solver's witness {} is uncovered by the formula but in default deny when compiled",
            names[0]
        ))
    } else {
        Ok(())
    }
}

/// What a change of the policies opens and closes for pods that could
/// exist: witnesses, each confirmed on both sides by compiling it in.
#[derive(Debug, Default)]
pub struct Exposure {
    pub opened: Vec<Witness>,
    pub closed: Vec<Witness>,
    /// Between a possible pod and an outside address or reserved identity.
    pub opened_edges: Vec<EdgeWitness>,
    pub closed_edges: Vec<EdgeWitness>,
    /// More witnesses exist than the limit lists.
    pub truncated: [bool; 2],
    /// A check the solver could not decide.
    pub unknown: Option<String>,
    /// Witnesses the ordinary compile did not confirm (bugs, not findings).
    pub internal: Vec<String>,
}

/// The inputs of one side of `exposure`.
pub struct Side<'a> {
    pub model: &'a Model,
}

/// Pairs of possible pods (and a port) whose verdict differs between the
/// base and the head policies, up to `limit` per direction; each pair of
/// label sets is listed once.
pub fn exposure(
    base: &Side<'_>,
    head: &Side<'_>,
    inv: &Inventory,
    cfg: &Config,
    limit: usize,
    budget: Budget,
) -> Exposure {
    let mut vocab = Vocabulary::new(base.model, inv);
    vocab.merge(&Vocabulary::new(head.model, inv));
    let eb = Encoder::with_vocabulary(base.model, inv, cfg, vocab.clone());
    let eh = Encoder::with_vocabulary(head.model, inv, cfg, vocab);
    let solver = solver(budget);
    let f = eh.flow(&solver);
    solver.assert(eh.protocol_known(&f.proto));
    // The same pods (same constants) without the change asserted: where a
    // witness is widened to the labels that decide it.
    let general = self::solver(budget);
    let _ = eh.flow(&general);
    let (ab, ah) = (eb.allowed(&f), eh.allowed(&f));
    let mut out = Exposure::default();
    for (i, opened) in [true, false].into_iter().enumerate() {
        solver.push();
        solver.assert(if opened {
            Bool::and(&[ah.clone(), ab.not()])
        } else {
            Bool::and(&[ab.clone(), ah.not()])
        });
        loop {
            let w = match eh.answer(&solver, &f, opened, false) {
                Answer::Holds => break,
                Answer::Unknown(why) => {
                    out.unknown = Some(why);
                    break;
                }
                Answer::Broken(w) => *w,
            };
            let list = if opened { &out.opened } else { &out.closed };
            if list.len() == limit {
                out.truncated[i] = true;
                break;
            }
            // The same pods are judged the other way on the other side.
            let before = Witness {
                allowed: !w.allowed,
                ..w.clone()
            };
            let checks = [
                confirm(&before, base.model, inv, cfg),
                confirm(&w, head.model, inv, cfg),
            ];
            if let Some(Err(e)) = checks.into_iter().find(Result::is_err) {
                out.internal.push(e);
                break;
            }
            // Next: pods labelled otherwise than what decided this one.
            let Some(m) = solver.get_model() else {
                break;
            };
            let change = if opened {
                Bool::and(&[ah.clone(), ab.not()])
            } else {
                Bool::and(&[ab.clone(), ah.not()])
            };
            let (class, matters) = eh.generalize(&m, &f, &w, &change, &general);
            solver.assert(class.not());
            let mut w = w;
            w.matters = Some(matters);
            if opened {
                out.opened.push(w);
            } else {
                out.closed.push(w);
            }
        }
        solver.pop(1);
    }
    let pod = eh.pod("pod", &solver);
    let _ = eh.pod("pod", &general);
    for other in eh.others() {
        for pod_is_src in [true, false] {
            let e = eh.edge(&pod, other.clone(), pod_is_src);
            let (ab, ah) = (eb.allowed_edge(&e), eh.allowed_edge(&e));
            for (i, opened) in [true, false].into_iter().enumerate() {
                let change = if opened {
                    Bool::and(&[ah.clone(), ab.not()])
                } else {
                    Bool::and(&[ab.clone(), ah.not()])
                };
                let stop = edge_changes(
                    &eh, &e, &change, opened, i, limit, base, head, inv, cfg, &solver, &general,
                    &mut out,
                );
                if stop {
                    return out;
                }
            }
        }
    }
    out
}

/// The edge changes of one kind, one per class of pods, into `out`;
/// whether to stop (a bug or an undecided check).
#[allow(clippy::too_many_arguments)]
fn edge_changes(
    eh: &Encoder<'_>,
    e: &EdgeFlow,
    change: &Bool,
    opened: bool,
    i: usize,
    limit: usize,
    base: &Side<'_>,
    head: &Side<'_>,
    inv: &Inventory,
    cfg: &Config,
    solver: &z3::Solver,
    general: &z3::Solver,
    out: &mut Exposure,
) -> bool {
    solver.push();
    solver.assert(change);
    solver.assert(eh.protocol_known(&e.proto));
    let mut stop = false;
    loop {
        let (answer, m) = eh.edge_model(solver, e, opened);
        let w = match answer {
            EdgeAnswer::Holds => break,
            EdgeAnswer::Unknown(why) => {
                out.unknown = Some(why);
                stop = true;
                break;
            }
            EdgeAnswer::Broken(w) => *w,
        };
        let list = if opened {
            &out.opened_edges
        } else {
            &out.closed_edges
        };
        if list.len() == limit {
            out.truncated[i] = true;
            break;
        }
        let before = EdgeWitness {
            allowed: !w.allowed,
            ..w.clone()
        };
        let checks = [
            confirm_edge(&before, base.model, inv, cfg),
            confirm_edge(&w, head.model, inv, cfg),
        ];
        if let Some(Err(err)) = checks.into_iter().find(Result::is_err) {
            out.internal.push(err);
            stop = true;
            break;
        }
        let Some(m) = m else {
            break;
        };
        let (class, matters) = eh.generalize_edge(&m, e, &w, change, general);
        // Every address and port of that class of pods is one entry.
        solver.assert(class.not());
        let mut w = w;
        w.matters = Some(matters);
        if opened {
            out.opened_edges.push(w);
        } else {
            out.closed_edges.push(w);
        }
    }
    solver.pop(1);
    stop
}

impl Encoder<'_> {
    /// Widens a witness to the label conditions that decide it.
    fn generalize(
        &self,
        m: &z3::Model,
        f: &SymFlow,
        w: &Witness,
        change: &Bool,
        general: &z3::Solver,
    ) -> (Bool, [Vec<Cond>; 2]) {
        let at_port = Bool::and(&[
            f.port.eq(BV::from_u64(u64::from(w.port), 16)),
            f.proto.eq(int(i64::from(w.protocol))),
        ]);
        let (class, mut matters) = self.widen(m, &[&f.src, &f.dst], &at_port, change, general);
        let dst = matters.pop().unwrap_or_default();
        let src = matters.pop().unwrap_or_default();
        (class, [src, dst])
    }

    /// Each label condition of the pods' model is dropped when the change
    /// still follows from the others (with `fixed`: the witness's port,
    /// and peer when it is not a pod). Unnamed values count as one, since
    /// no selector tells them apart. Returns the class (to block) and its
    /// conditions per pod.
    fn widen(
        &self,
        m: &z3::Model,
        pods: &[&SymPod],
        fixed: &Bool,
        change: &Bool,
        general: &z3::Solver,
    ) -> (Bool, Vec<Vec<Cond>>) {
        // (pod index, key, code, the constraint)
        let mut conds: Vec<(usize, &str, i64, Bool)> = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            for (key, var) in &p.labels {
                let code = m.eval(var, true).and_then(|v| v.as_i64()).unwrap_or(0);
                let c = if self.vocab.others(key).contains(&code) {
                    var.ge(int(*self.vocab.others(key).start()))
                } else {
                    var.eq(int(code))
                };
                conds.push((i, key.as_str(), code, c));
            }
        }
        let mut keep = vec![true; conds.len()];
        for i in 0..conds.len() {
            keep[i] = false;
            let rest: Vec<Bool> = conds
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.3.clone())
                .collect();
            general.push();
            general.assert(all(rest));
            general.assert(fixed);
            general.assert(change.not());
            // Only a proof that the rest suffice drops the condition.
            keep[i] = general.check() != z3::SatResult::Unsat;
            general.pop(1);
        }
        let mut matters: Vec<Vec<Cond>> = vec![Vec::new(); pods.len()];
        let mut class = Vec::new();
        for ((i, key, code, c), k) in conds.into_iter().zip(keep) {
            if !k {
                continue;
            }
            class.push(c);
            let key = key.to_owned();
            matters[i].push(if code == 0 {
                Cond::Absent(key)
            } else if self.vocab.values(&key).is_empty() && key != NAMESPACE_LABEL {
                Cond::Has(key)
            } else if self.vocab.others(&key).contains(&code) {
                Cond::Unnamed(key)
            } else {
                let v = self.vocab.values(&key)[code as usize - 1].clone();
                Cond::Is(key, v)
            });
        }
        (all(class), matters)
    }
}
