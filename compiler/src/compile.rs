//! Policies + inventory → identities, ipcache and per-endpoint policy maps.

use crate::identity::*;
use crate::inventory::{ContainerPort, Inventory, NodeInfo};
use crate::labels::{pod_labels, Label, LabelFilter, LabelSet, CLUSTER_LABEL};
use crate::mapstate::{Entry, Key, PolicyMap};
use crate::model::{
    dir_index, normalize, Model, ModelOptions, NPort, NRule, Origin, PeerSel, Peers, PortSel,
    Subject,
};
use crate::ports::range_to_prefixes;
use crate::selector::{LabelIndex, Sel};
use policy_lang::diag::{Code, Diagnostic};
use policy_lang::ir::{Cidr, Direction, Entity, PolicySet};
use policy_lang::source::SourceMap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

#[derive(Clone, Debug)]
pub struct Config {
    /// Entries one endpoint's policy map holds (`--bpf-policy-map-max`).
    pub map_capacity: usize,
    /// Traffic from the local host to its endpoints is allowed at ingress.
    pub allow_localhost: bool,
    /// World traffic has identities 9 and 10 instead of 2.
    pub dual_stack: bool,
    /// DNS answers (name, addresses) the cluster's proxies saw: what
    /// `toFQDNs` selectors resolve to.
    pub dns: Vec<(String, Vec<IpAddr>)>,
    /// Which pod labels become identity labels (Cilium's `--labels`).
    pub label_filter: LabelFilter,
    /// Cilium's `--enable-node-selector-labels`: remote nodes get
    /// identities of their own, with their labels, so that `fromNodes` /
    /// `toNodes` can select them. Off (Cilium's default), every remote
    /// node is the one `remote-node` identity.
    pub node_selector_labels: bool,
    /// Readings of the policies where users can choose Kubernetes' over
    /// Cilium's.
    pub model: ModelOptions,
    /// Bytes all L7 automata of the compile may take together
    /// (`--l7-budget`).
    pub l7_total_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            map_capacity: 16_384,
            allow_localhost: true,
            dual_stack: false,
            dns: Vec::new(),
            label_filter: LabelFilter::default(),
            node_selector_labels: false,
            model: ModelOptions::default(),
            l7_total_limit: crate::l7::DEFAULT_TOTAL_LIMIT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpcacheEntry {
    pub prefix: String,
    #[serde(skip)]
    pub cidr: Cidr,
    pub identity: u32,
    /// For node addresses: the node, which sees them as `host` itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// `namespace/pod`, or `node/<name>` for a host endpoint.
    pub name: String,
    pub identity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Index into [`Compiled::maps`].
    pub map: usize,
    /// Default deny at [ingress, egress].
    pub enforced: [bool; 2],
    pub host: bool,
    /// Origins of the rules (`spec`, `specs[i]`, a NetworkPolicy) that
    /// select this endpoint.
    pub selected_by: Vec<u32>,
    /// With policies in audit mode: the map the endpoint would have with
    /// them enforced (index into [`Compiled::maps`]). The datapath passes
    /// what `map` allows and this one denies, and reports it as AUDIT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_map: Option<usize>,
    /// Origins of the policies in audit mode that select this endpoint:
    /// what an AUDIT verdict by default deny names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_by: Vec<u32>,
}

/// The datapath state of a cluster.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Compiled {
    pub identities: Vec<IdentityInfo>,
    pub ipcache: Vec<IpcacheEntry>,
    pub endpoints: Vec<Endpoint>,
    pub maps: Vec<PolicyMap>,
    pub origins: Vec<Origin>,
    #[serde(skip)]
    pub(crate) exact: HashMap<IpAddr, usize>,
    #[serde(skip)]
    pub(crate) by_name: HashMap<String, usize, BuildFnv>,
    #[serde(skip)]
    pub(crate) by_ip: HashMap<IpAddr, usize>,
    /// The ipcache entries that are not host addresses, by (IPv4,
    /// length, network bits).
    #[serde(skip)]
    pub(crate) prefixes: HashMap<(bool, u8, u128), usize>,
    /// Their distinct (IPv4, length), longest first.
    #[serde(skip)]
    pub(crate) prefix_lens: Vec<(bool, u8)>,
}

impl Compiled {
    pub fn identity(&self, id: u32) -> Option<&IdentityInfo> {
        self.identities
            .binary_search_by_key(&id, |i| i.id)
            .ok()
            .map(|i| &self.identities[i])
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.by_name.get(name).map(|&i| &self.endpoints[i])
    }

    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.by_ip.get(&ip).map(|&i| &self.endpoints[i])
    }

    /// The ipcache entry for an address: exact host entries first, then the
    /// longest matching prefix.
    pub fn ipcache_lookup(&self, ip: IpAddr) -> Option<&IpcacheEntry> {
        if let Some(&i) = self.exact.get(&ip) {
            return Some(&self.ipcache[i]);
        }
        // Only the entries shorter than a host's can hold it, and they
        // come in few lengths: one hash probe per length, longest first.
        let v4 = ip.is_ipv4();
        self.prefix_lens
            .iter()
            .filter(|(family, _)| *family == v4)
            .find_map(|&(_, len)| {
                let net = Cidr {
                    addr: ip,
                    prefix_len: len,
                    bare: true,
                }
                .network_bits();
                self.prefixes.get(&(v4, len, net))
            })
            .map(|&i| &self.ipcache[i])
    }

    /// The identity the datapath of `observer_node` resolves `ip` to: the
    /// node's own addresses are `host` there.
    pub fn identity_of_ip(&self, ip: IpAddr, observer_node: Option<&str>) -> u32 {
        match self.ipcache_lookup(ip) {
            Some(e) if e.node.is_some() && e.node.as_deref() == observer_node => HOST,
            Some(e) => e.identity,
            None => WORLD,
        }
    }

    /// Builds the lookup indexes; called after compiling or decoding.
    pub(crate) fn index(&mut self) {
        self.by_name = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        self.by_ip = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.host)
            .flat_map(|(i, e)| e.ips.iter().map(move |ip| (*ip, i)))
            .collect();
        self.exact = self
            .ipcache
            .iter()
            .enumerate()
            .filter(|(_, e)| e.cidr.prefix_len == e.cidr.max_len())
            .map(|(i, e)| (e.cidr.addr, i))
            .collect();
        // Among equal prefixes the later entry wins, as a scan for the
        // longest (`max_by_key`) would have it.
        self.prefixes = self
            .ipcache
            .iter()
            .enumerate()
            .filter(|(_, e)| e.cidr.prefix_len < e.cidr.max_len())
            .map(|(i, e)| {
                (
                    (
                        e.cidr.addr.is_ipv4(),
                        e.cidr.prefix_len,
                        e.cidr.network_bits(),
                    ),
                    i,
                )
            })
            .collect();
        let lens: BTreeSet<(bool, u8)> = self.prefixes.keys().map(|&(f, l, _)| (f, l)).collect();
        self.prefix_lens = lens.into_iter().rev().collect();
    }

    /// `--stats`: totals and per-endpoint entry counts.
    pub fn stats(&self) -> Stats {
        Stats {
            identities: self.identities.len(),
            ipcache_entries: self.ipcache.len(),
            endpoints: self.endpoints.len(),
            distinct_maps: self.maps.len(),
            entries: self
                .endpoints
                .iter()
                .map(|e| (e.name.clone(), self.maps[e.map].len()))
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub identities: usize,
    pub ipcache_entries: usize,
    pub endpoints: usize,
    pub distinct_maps: usize,
    pub entries: Vec<(String, usize)>,
}

/// FNV-1a: endpoint names are short and not attacker-chosen at lookup
/// time, and SipHash's setup dominated name lookups when simulating.
#[derive(Clone, Copy, Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

pub type BuildFnv = std::hash::BuildHasherDefault<Fnv>;

fn host_prefix(ip: IpAddr) -> Cidr {
    Cidr {
        addr: ip,
        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
        bare: false,
    }
}

/// Compiles the policies for the inventory. Errors (map overflow) are
/// returned as diagnostics; the state is still returned for inspection but
/// must not be loaded when any diagnostic is an error.
pub fn compile(
    set: &PolicySet,
    sources: &SourceMap,
    inv: &Inventory,
    cfg: &Config,
) -> (Compiled, Vec<Diagnostic>) {
    let model = normalize(set, sources, &inv.services, &cfg.model);
    compile_model(&model, inv, cfg)
}

/// The identities a peer selector selects; `None` is the wildcard.
type Resolution = Rc<Option<Vec<u32>>>;

struct Ctx<'a> {
    inv: &'a Inventory,
    cfg: &'a Config,
    out: Compiled,
    /// Resolved selectors by (selector address, requires id, local node).
    cache: HashMap<(usize, usize, Option<String>), Resolution>,
    requires_ids: HashMap<Vec<Sel>, usize>,
    /// The same, by selector value: equal selectors in many policies.
    value_cache: HashMap<(PeerSel, usize, Option<String>), Resolution>,
    node_ids: Vec<(u32, usize)>,
    cidr_ids: Vec<(Cidr, u32)>,
    /// Port names → (port, protocol) over every pod, for egress.
    all_named: HashMap<String, BTreeSet<(u16, u8)>>,
    /// L7 rule sets that did not compile (too large an automaton).
    l7_errors: Vec<crate::l7::L7Error>,
    /// What the L7 automata of this compile may still take.
    l7_budget: crate::l7::L7Budget,
    /// For the endpoint whose map is being built: which DNS answers its
    /// lookups make visible (its egress DNS rules allow the name).
    dns_visible: Vec<bool>,
    /// Whether a name selector matches DNS answer `i`: patterns compile to
    /// an automaton, so each pair is decided once, not once per map.
    fqdn_memo: HashMap<(crate::model::FqdnSel, usize), bool>,
    /// `out.identities` by label, as peer selectors see them (the host
    /// as `reserved:host` only).
    peer_index: LabelIndex,
}

/// Compiles the model. With policies in audit mode, the enforced state
/// leaves them out, and each endpoint they change also gets the map it
/// would have with them enforced (`Endpoint::audit_map`); identities and
/// the ipcache come from all policies, so both maps speak of the same
/// identities.
pub fn compile_model(model: &Model, inv: &Inventory, cfg: &Config) -> (Compiled, Vec<Diagnostic>) {
    let (full, mut diags) = compile_one(model, inv, cfg, false);
    if !model.rules.iter().any(|r| r.audit) {
        return (full, diags);
    }
    let (mut out, enforced_diags) = compile_one(model, inv, cfg, true);
    // The full compile reports everything (selection included); the
    // enforced one adds only its own errors (a map it overflows).
    for d in enforced_diags.into_iter().filter(Diagnostic::is_error) {
        if !diags.iter().any(|x| x.message == d.message) {
            diags.push(d);
        }
    }
    let decides = |m: &PolicyMap| -> Vec<(Key, bool, bool, u32)> {
        m.entries
            .iter()
            .map(|(k, e)| (*k, e.deny, e.redirect, e.precedence))
            .collect()
    };
    let mut added: HashMap<usize, usize> = HashMap::new();
    for fe in &full.endpoints {
        let i = match out.endpoints.iter().position(|e| e.name == fe.name) {
            Some(i) => i,
            None => {
                // Only audited policies make it an endpoint (a host
                // policy): enforced, it is not judged at all.
                let mut open = PolicyMap::default();
                for egress in [false, true] {
                    open.insert(
                        Key::new(0, egress, 0, 0, 0),
                        Entry::allow(false, false, u32::MAX),
                    );
                }
                out.maps.push(open);
                out.endpoints.push(Endpoint {
                    map: out.maps.len() - 1,
                    enforced: [false, false],
                    audit_map: None,
                    selected_by: Vec::new(),
                    ..fe.clone()
                });
                out.endpoints.len() - 1
            }
        };
        let enforced_map = out.endpoints[i].map;
        if decides(&out.maps[enforced_map]) == decides(&full.maps[fe.map]) {
            continue;
        }
        let idx = *added.entry(fe.map).or_insert_with(|| {
            out.maps.push(full.maps[fe.map].clone());
            out.maps.len() - 1
        });
        out.endpoints[i].audit_map = Some(idx);
        out.endpoints[i].audit_by = fe
            .selected_by
            .iter()
            .copied()
            .filter(|o| model.rules.iter().any(|r| r.audit && r.origin as u32 == *o))
            .collect();
    }
    out.index();
    (out, diags)
}

fn compile_one(
    model: &Model,
    inv: &Inventory,
    cfg: &Config,
    skip_audited: bool,
) -> (Compiled, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut out = Compiled {
        origins: model.origins.clone(),
        ..Compiled::default()
    };
    // Reserved identities.
    for &(id, _) in RESERVED {
        if !cfg.dual_stack && matches!(id, WORLD_IPV4 | WORLD_IPV6) {
            continue;
        }
        out.identities.push(IdentityInfo {
            id,
            labels: reserved_labels(id),
            kind: IdKind::Reserved,
        });
    }
    // Endpoint identities: one per distinct label set, numbered in label
    // order so that the same inventory always gets the same numbers.
    let pods: Vec<_> = inv.pods.iter().filter(|p| !p.host_network).collect();
    let pod_sets: Vec<LabelSet> = pods
        .iter()
        .map(|p| {
            let ns = inv.namespace(&p.namespace);
            pod_labels(
                &p.labels,
                &p.namespace,
                &ns.labels,
                &p.service_account,
                &inv.cluster,
                &cfg.label_filter,
            )
        })
        .collect();
    let distinct: BTreeSet<&LabelSet> = pod_sets.iter().collect();
    let mut by_labels: HashMap<&LabelSet, u32> = HashMap::new();
    for (i, ls) in distinct.into_iter().enumerate() {
        let id = FIRST_ENDPOINT + i as u32;
        by_labels.insert(ls, id);
        out.identities.push(IdentityInfo {
            id,
            labels: ls.clone(),
            kind: IdKind::Endpoint,
        });
    }
    let mut node_ids = Vec::new();
    for (i, n) in inv
        .nodes
        .iter()
        .enumerate()
        .filter(|_| cfg.node_selector_labels)
    {
        let id = NODE_SCOPE | (i as u32 + 1);
        node_ids.push((id, i));
        let mut labels: Vec<Label> = n.labels.iter().map(|(k, v)| Label::k8s(k, v)).collect();
        labels.push(Label::reserved("remote-node"));
        out.identities.push(IdentityInfo {
            id,
            labels: LabelSet::from_labels(labels),
            kind: IdKind::Node {
                node: n.name.clone(),
            },
        });
    }
    let prefixes = cidr_prefixes(model, cfg);
    let mut cidr_ids = Vec::new();
    for (i, c) in prefixes.iter().enumerate() {
        let id = CIDR_SCOPE | (i as u32 + 1);
        cidr_ids.push((*c, id));
        // An answer address carries the names it answered, as Cilium's
        // FQDN identities do: what `trace` shows for it.
        let mut labels: Vec<Label> = cidr_labels(c).iter().cloned().collect();
        if c.prefix_len == c.max_len() {
            for (name, ips) in &cfg.dns {
                if ips.contains(&c.addr) {
                    labels.push(Label::new("fqdn", &crate::l7::dns_name(name), ""));
                }
            }
        }
        out.identities.push(IdentityInfo {
            id,
            labels: LabelSet::from_labels(labels),
            kind: IdKind::Cidr {
                prefix: c.to_string(),
            },
        });
    }
    out.identities.sort_by_key(|i| i.id);

    // ipcache: world, CIDR prefixes, nodes, pods.
    for (addr, id) in [
        ("0.0.0.0/0", if cfg.dual_stack { WORLD_IPV4 } else { WORLD }),
        ("::/0", if cfg.dual_stack { WORLD_IPV6 } else { WORLD }),
    ] {
        let cidr = Cidr::parse(addr).expect("constant prefix");
        out.ipcache.push(IpcacheEntry {
            prefix: addr.to_owned(),
            cidr,
            identity: id,
            node: None,
        });
    }
    for (c, id) in &cidr_ids {
        out.ipcache.push(IpcacheEntry {
            prefix: c.to_string(),
            cidr: *c,
            identity: *id,
            node: None,
        });
    }
    for (i, n) in inv.nodes.iter().enumerate() {
        let id = node_ids
            .iter()
            .find(|(_, ni)| *ni == i)
            .map_or(REMOTE_NODE, |(id, _)| *id);
        for ip in &n.ips {
            out.ipcache.push(IpcacheEntry {
                prefix: host_prefix(*ip).to_string(),
                cidr: host_prefix(*ip),
                identity: id,
                node: Some(n.name.clone()),
            });
        }
    }
    let mut endpoint_ids = Vec::new();
    for (p, ls) in pods.iter().zip(&pod_sets) {
        let id = by_labels[ls];
        endpoint_ids.push(id);
        for ip in &p.ips {
            out.ipcache.push(IpcacheEntry {
                prefix: host_prefix(*ip).to_string(),
                cidr: host_prefix(*ip),
                identity: id,
                node: None,
            });
        }
    }
    out.index();
    let all_named = named_ports(pods.iter().copied());
    let host_labels = reserved_labels(HOST);
    let peer_index = LabelIndex::new(out.identities.iter().map(|i| {
        if i.id == HOST {
            &host_labels
        } else {
            &i.labels
        }
    }));
    let mut cx = Ctx {
        peer_index,
        inv,
        cfg,
        out,
        cache: HashMap::new(),
        requires_ids: HashMap::new(),
        value_cache: HashMap::new(),
        node_ids,
        cidr_ids,
        all_named,
        l7_errors: Vec::new(),
        l7_budget: crate::l7::L7Budget::new(crate::l7::DEFAULT_SIZE_LIMIT, cfg.l7_total_limit),
        dns_visible: Vec::new(),
        fqdn_memo: HashMap::new(),
    };

    // Which rules select which identities (and nodes, for host policy).
    let unique_ids: BTreeSet<u32> = endpoint_ids.iter().copied().collect();
    let endpoint_sets: Vec<(u32, &LabelSet)> = cx
        .out
        .identities
        .iter()
        .filter(|i| unique_ids.contains(&i.id))
        .map(|i| (i.id, &i.labels))
        .collect();
    let index = LabelIndex::new(endpoint_sets.iter().map(|(_, l)| *l));
    let mut selected_by: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut host_rules: HashMap<usize, Vec<usize>> = HashMap::new();
    for (ri, r) in model.rules.iter().enumerate() {
        if skip_audited && r.audit {
            continue;
        }
        match &r.subject {
            Subject::Endpoints(sel) => {
                for i in index.candidates(sel) {
                    let (id, labels) = endpoint_sets[i as usize];
                    if sel.matches(labels) {
                        selected_by.entry(id).or_default().push(ri);
                    }
                }
            }
            Subject::Nodes(sel) => {
                for (ni, n) in inv.nodes.iter().enumerate() {
                    if sel.matches(&node_label_set(n)) {
                        host_rules.entry(ni).or_default().push(ri);
                    }
                }
            }
        }
    }
    let mut selects_any = vec![false; model.rules.len()];
    for &ri in selected_by.values().chain(host_rules.values()).flatten() {
        selects_any[ri] = true;
    }
    for (r, selects) in model.rules.iter().zip(selects_any) {
        if !selects && !inv.pods.is_empty() {
            diags.push(
                Diagnostic::warning(
                    Code::SelectsNothing,
                    r.name_span,
                    format!(
                        "{} selects no endpoint of the inventory",
                        model.origins[r.origin].policy
                    ),
                )
                .with_help("check the selector's labels and the namespace against the inventory"),
            );
        }
    }

    // One map per distinct (identity, own named ports, node class): pods
    // that share them share a map. A map depends on its node only where a
    // `fromNodes`/`toNodes` selector matches the local node (which it then
    // sees as `host`), so nodes are classed by which of those selectors
    // match them: thousands of nodes are a handful of classes.
    let node_sels: Vec<&Sel> = {
        let mut v: Vec<&Sel> = Vec::new();
        for r in &model.rules {
            for nr in &r.rules {
                if let Peers::Any(ps) = &nr.peers {
                    for p in ps {
                        if let PeerSel::Nodes(sel) = p {
                            if !v.contains(&sel) {
                                v.push(sel);
                            }
                        }
                    }
                }
            }
        }
        v
    };
    let node_class: HashMap<&str, Vec<bool>> = inv
        .nodes
        .iter()
        .map(|n| {
            let ls = node_label_set(n);
            (
                n.name.as_str(),
                node_sels.iter().map(|s| s.matches(&ls)).collect(),
            )
        })
        .collect();
    let class_of = |node: Option<&str>| -> Option<Vec<bool>> {
        if node_sels.is_empty() {
            return None;
        }
        // A node the inventory does not list matches no selector.
        node.map(|n| {
            node_class
                .get(n)
                .cloned()
                .unwrap_or_else(|| vec![false; node_sels.len()])
        })
    };
    // (identity, own named ports, node class) → map.
    type MapKey = (u32, Vec<ContainerPort>, Option<Vec<bool>>);
    let mut groups: HashMap<MapKey, usize> = HashMap::new();
    for (p, id) in pods.iter().zip(&endpoint_ids) {
        let key = (*id, p.ports.clone(), class_of(p.node.as_deref()));
        let map = match groups.get(&key) {
            Some(m) => *m,
            None => {
                let rules = selected_by.get(id).cloned().unwrap_or_default();
                let map = cx.endpoint_map(model, &rules, &p.ports, p.node.as_deref(), false);
                cx.out.maps.push(map);
                groups.insert(key, cx.out.maps.len() - 1);
                cx.out.maps.len() - 1
            }
        };
        let rules = selected_by.get(id).map_or(&[][..], |v| v.as_slice());
        let enforced = enforcement(model, rules);
        cx.out.endpoints.push(Endpoint {
            name: p.qualified_name(),
            identity: *id,
            node: p.node.clone(),
            ips: p.ips.clone(),
            map,
            enforced,
            host: false,
            selected_by: rules
                .iter()
                .map(|&r| model.rules[r].origin as u32)
                .collect(),
            audit_map: None,
            audit_by: Vec::new(),
        });
        let n = cx.out.maps[map].len();
        if n > cfg.map_capacity {
            diags.push(
                Diagnostic::error(
                    Code::MapOverflow,
                    p.loc.0,
                    format!(
                        "pod {} needs {n} policy-map entries, the map holds {}",
                        p.qualified_name(),
                        cfg.map_capacity
                    ),
                )
                .with_help("narrow its policies (fewer identities × ports × ranges) or raise --map-capacity; sluice never loads a truncated map"),
            );
        }
    }
    // Host endpoints, when host policies exist (host firewall): nodes
    // selected by the same rules, of one node class, share a map.
    let mut host_groups: HashMap<(&[usize], Option<Vec<bool>>), usize> = HashMap::new();
    for (ni, rules) in host_rules.iter().collect::<BTreeMap<_, _>>() {
        let node = &inv.nodes[*ni];
        let key = (rules.as_slice(), class_of(Some(&node.name)));
        let map = match host_groups.get(&key) {
            Some(&m) => m,
            None => {
                let map = cx.endpoint_map(model, rules, &[], Some(&node.name), true);
                cx.out.maps.push(map);
                host_groups.insert(key, cx.out.maps.len() - 1);
                cx.out.maps.len() - 1
            }
        };
        cx.out.endpoints.push(Endpoint {
            name: format!("node/{}", node.name),
            identity: HOST,
            node: Some(node.name.clone()),
            ips: node.ips.clone(),
            map,
            enforced: enforcement(model, rules),
            host: true,
            selected_by: rules
                .iter()
                .map(|&r| model.rules[r].origin as u32)
                .collect(),
            audit_map: None,
            audit_by: Vec::new(),
        });
    }
    // An L7 rule set that cannot be compiled fails the whole state: it is
    // never enforced as "allow", nor silently dropped.
    let mut seen = BTreeSet::new();
    for e in std::mem::take(&mut cx.l7_errors) {
        if !seen.insert((e.origin, e.message.clone())) {
            continue;
        }
        let span = model
            .rules
            .iter()
            .find(|r| {
                r.origin as u32 == e.origin || r.rules.iter().any(|n| n.origin as u32 == e.origin)
            })
            .map(|r| r.name_span);
        let origin = model.origins.get(e.origin as usize);
        if let Some(span) = span {
            diags.push(
                Diagnostic::error(
                    Code::L7Automaton,
                    span,
                    format!(
                        "{}: {}",
                        origin.map_or_else(String::new, |o| format!("{} {}", o.policy, o.path)),
                        e.message
                    ),
                )
                .with_help("simplify the regexes (bounded repetitions like {0,40} multiply states) or split the rules across ports"),
            );
        }
    }
    cx.out.index();
    (cx.out, diags)
}

/// Port names → (port, protocol) over the given pods: what egress rules
/// named ports resolve against (Cilium's named-port multimap).
pub fn named_ports<'a>(
    pods: impl Iterator<Item = &'a crate::inventory::Pod>,
) -> HashMap<String, BTreeSet<(u16, u8)>> {
    let mut all: HashMap<String, BTreeSet<(u16, u8)>> = HashMap::new();
    for p in pods {
        for cp in &p.ports {
            if let Some(n) = &cp.name {
                all.entry(n.clone())
                    .or_default()
                    .insert((cp.port, cp.protocol));
            }
        }
    }
    all
}

/// What one port name resolves to in egress rules, from the (port,
/// protocol) pairs the cluster's pods give it: per protocol, the one
/// number, or nothing when pods disagree.
pub fn egress_resolution(all: &BTreeSet<(u16, u8)>) -> BTreeSet<(u16, u8)> {
    let mut unique = BTreeSet::new();
    for pr in all.iter().map(|(_, pr)| *pr).collect::<BTreeSet<u8>>() {
        let ports: Vec<&(u16, u8)> = all.iter().filter(|(_, x)| *x == pr).collect();
        if let [one] = ports.as_slice() {
            unique.insert(**one);
        }
    }
    unique
}

pub fn node_label_set(n: &NodeInfo) -> LabelSet {
    LabelSet::from_labels(n.labels.iter().map(|(k, v)| Label::k8s(k, v)).collect())
}

/// Default deny per direction: some selecting rule asks for it.
pub fn enforcement(model: &Model, rules: &[usize]) -> [bool; 2] {
    let mut e = [false, false];
    for &ri in rules {
        for (on, dd) in e.iter_mut().zip(model.rules[ri].default_deny) {
            *on |= dd;
        }
    }
    e
}

impl Ctx<'_> {
    fn endpoint_map(
        &mut self,
        model: &Model,
        rules: &[usize],
        own_ports: &[ContainerPort],
        node: Option<&str>,
        host: bool,
    ) -> PolicyMap {
        let mut map = PolicyMap::default();
        let enforced = enforcement(model, rules);
        // toFQDNs learns addresses only from lookups the DNS proxy sees:
        // the endpoint's own egress DNS rules must allow the name.
        let dns_rules: Vec<crate::model::FqdnSel> = rules
            .iter()
            .flat_map(|&ri| model.rules[ri].rules.iter())
            .filter(|nr| nr.dir == Direction::Egress && !nr.deny)
            .flat_map(|nr| nr.ports.iter().flatten())
            .filter_map(|p| p.l7.as_ref())
            .flat_map(|l7| l7.0.dns.iter().flatten())
            .map(|d| crate::model::FqdnSel {
                name: d.match_name.as_ref().map(|v| v.value.clone()),
                pattern: d.match_pattern.as_ref().map(|v| v.value.clone()),
            })
            .collect();
        self.dns_visible = (0..self.cfg.dns.len())
            .map(|i| dns_rules.iter().any(|sel| self.fqdn_hit(sel, i)))
            .collect();
        for dir in [Direction::Ingress, Direction::Egress] {
            let d = dir_index(dir);
            let egress = dir == Direction::Egress;
            let requires: Vec<Sel> = rules
                .iter()
                .flat_map(|&ri| model.rules[ri].requires[d].iter().cloned())
                .collect();
            if !enforced[d] {
                map.insert(
                    Key::new(0, egress, 0, 0, 0),
                    Entry::allow(false, false, u32::MAX),
                );
            }
            if dir == Direction::Ingress && self.cfg.allow_localhost && !host {
                map.insert(
                    Key::new(HOST, false, 0, 0, 0),
                    Entry::allow(false, false, u32::MAX - 1),
                );
            }
            for &ri in rules {
                for nr in model.rules[ri].rules.iter().filter(|nr| nr.dir == dir) {
                    self.add_rule(&mut map, nr, &requires, own_ports, node, egress);
                }
            }
        }
        map.apply_deny_precedence();
        if !map.l7_grants.is_empty() {
            let (ports, errors) =
                crate::l7::build_ports(&map.l7_grants, &map.entries, &mut self.l7_budget);
            map.l7 = ports;
            self.l7_errors.extend(errors);
        }
        map
    }

    fn add_rule(
        &mut self,
        map: &mut PolicyMap,
        nr: &NRule,
        requires: &[Sel],
        own_ports: &[ContainerPort],
        node: Option<&str>,
        egress: bool,
    ) {
        let ids: Vec<u32> = match &nr.peers {
            Peers::Nothing => return,
            Peers::All => vec![WILDCARD],
            Peers::Any(sels) => {
                let mut all = BTreeSet::new();
                let mut wildcard = false;
                let rid = self.requires_id(requires);
                for s in sels {
                    if let PeerSel::Fqdn(fs) = s {
                        // Per endpoint (visibility), so not cached.
                        all.extend(self.fqdn_ids(fs));
                        continue;
                    }
                    match &*self.resolve(s, requires, rid, node) {
                        None => wildcard = true,
                        Some(ids) => all.extend(ids.iter().copied()),
                    }
                }
                if wildcard {
                    vec![WILDCARD]
                } else {
                    all.into_iter().collect()
                }
            }
        };
        let l4: Vec<(u8, u16, u8, Option<&crate::model::L7Ref>)> = match &nr.ports {
            None => vec![(0u8, 0u16, 0u8, None)],
            Some(ports) => ports
                .iter()
                .flat_map(|p| {
                    self.expand_port(p, own_ports, egress)
                        .into_iter()
                        .map(move |(a, b, c)| (a, b, c, p.l7.as_ref()))
                })
                .collect(),
        };
        let origin = nr.origin as u32;
        for id in ids {
            for &(proto, port, plen, l7) in &l4 {
                let key = Key::new(id, egress, proto, port, plen);
                let entry = if nr.deny {
                    Entry::deny(origin)
                } else {
                    Entry::allow(nr.redirect, nr.auth, origin)
                };
                if let (Some(rules), false) = (l7, nr.deny) {
                    map.l7_grants
                        .entry((egress, key.proto, key.dport, key.plen))
                        .or_default()
                        .push(crate::l7::L7Grant {
                            origin,
                            identity: id,
                            rules: rules.clone(),
                        });
                }
                map.insert(key, entry);
            }
        }
    }

    /// (proto, port, plen) triples for a port selector.
    fn expand_port(
        &self,
        p: &NPort,
        own_ports: &[ContainerPort],
        egress: bool,
    ) -> Vec<(u8, u16, u8)> {
        let protos: Vec<u8> = match p.proto {
            Some(x) => vec![x],
            None => vec![6, 17, 132],
        };
        match &p.ports {
            PortSel::All => match p.proto {
                None => vec![(0, 0, 0)],
                Some(x) => vec![(x, 0, 8)],
            },
            PortSel::Portless => p.proto.map(|x| vec![(x, 0, 8)]).unwrap_or_default(),
            PortSel::Range(lo, hi) => {
                let blocks = range_to_prefixes(*lo, *hi);
                protos
                    .iter()
                    .flat_map(|&pr| blocks.iter().map(move |&(b, bits)| (pr, b, 8 + bits)))
                    .collect()
            }
            PortSel::Named(name) => {
                let resolved: BTreeSet<(u16, u8)> = if egress {
                    // Egress names resolve over every endpoint's named
                    // ports (Cilium's named-port multimap): per protocol,
                    // a name with two different numbers resolves to
                    // nothing and the rule adds no entry.
                    self.all_named
                        .get(name)
                        .map(egress_resolution)
                        .unwrap_or_default()
                } else {
                    own_ports
                        .iter()
                        .filter(|c| c.name.as_deref() == Some(name.as_str()))
                        .map(|c| (c.port, c.protocol))
                        .collect()
                };
                resolved
                    .into_iter()
                    .filter(|(_, cproto)| p.proto.is_none_or(|x| x == *cproto))
                    .map(|(port, cproto)| (p.proto.unwrap_or(cproto), port, 24))
                    .collect()
            }
        }
    }

    /// The identities a peer selector selects; `None` means the wildcard.
    /// The identities a peer selector selects (`None`: the wildcard),
    /// cached per selector (by its place in the model), requirement set and,
    /// for node-relative selectors, the local node.
    fn resolve(
        &mut self,
        s: &PeerSel,
        requires: &[Sel],
        requires_id: usize,
        node: Option<&str>,
    ) -> Resolution {
        let node_key = match s {
            PeerSel::Nodes(_) => node.map(str::to_owned),
            _ => None,
        };
        // The model outlives the compile, so a selector's address names it;
        // equal selectors written in many policies share one resolution.
        let key = (s as *const PeerSel as usize, requires_id, node_key);
        if let Some(v) = self.cache.get(&key) {
            return Rc::clone(v);
        }
        let by_value = (s.clone(), requires_id, key.2.clone());
        let v = match self.value_cache.get(&by_value) {
            Some(v) => Rc::clone(v),
            None => {
                let v = Rc::new(
                    self.resolve_uncached(s, requires, node)
                        .map(|set| set.into_iter().collect()),
                );
                self.value_cache.insert(by_value, Rc::clone(&v));
                v
            }
        };
        self.cache.insert(key, Rc::clone(&v));
        v
    }

    /// The CIDR identities of the answers a toFQDNs selector matches and
    /// the current endpoint's lookups make visible.
    fn fqdn_ids(&mut self, fs: &[crate::model::FqdnSel]) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        let cfg = self.cfg;
        for (i, (_, ips)) in cfg.dns.iter().enumerate() {
            if !self.dns_visible[i] || !fs.iter().any(|f| self.fqdn_hit(f, i)) {
                continue;
            }
            for ip in ips {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                out.extend(
                    self.cidr_ids
                        .iter()
                        .filter(|(c, _)| c.addr == *ip && c.prefix_len == len)
                        .map(|(_, id)| *id),
                );
            }
        }
        out
    }

    /// Whether `sel` matches the name of DNS answer `answer` (memoized).
    fn fqdn_hit(&mut self, sel: &crate::model::FqdnSel, answer: usize) -> bool {
        let key = (sel.clone(), answer);
        if let Some(&hit) = self.fqdn_memo.get(&key) {
            return hit;
        }
        let hit = sel.matches(&self.cfg.dns[answer].0);
        self.fqdn_memo.insert(key, hit);
        hit
    }

    fn requires_id(&mut self, requires: &[Sel]) -> usize {
        let next = self.requires_ids.len();
        *self.requires_ids.entry(requires.to_vec()).or_insert(next)
    }

    /// The world identity of a family: one for both unless dual-stack.
    fn world_id(&self, v4: bool) -> u32 {
        match (self.cfg.dual_stack, v4) {
            (false, _) => WORLD,
            (true, true) => WORLD_IPV4,
            (true, false) => WORLD_IPV6,
        }
    }

    /// `world-ipv4` / `world-ipv6`: that family's world identity and its
    /// CIDR identities.
    fn world_of_family(&self, v4: bool) -> BTreeSet<u32> {
        std::iter::once(self.world_id(v4))
            .chain(
                self.cidr_ids
                    .iter()
                    .filter(|(c, _)| c.addr.is_ipv4() == v4)
                    .map(|(_, id)| *id),
            )
            .collect()
    }

    fn resolve_uncached(
        &self,
        s: &PeerSel,
        requires: &[Sel],
        node: Option<&str>,
    ) -> Option<BTreeSet<u32>> {
        let ids = &self.out.identities;
        let world: Vec<u32> = if self.cfg.dual_stack {
            vec![WORLD_IPV4, WORLD_IPV6]
        } else {
            vec![WORLD]
        };
        let host_labels = reserved_labels(HOST);
        let set: BTreeSet<u32> = match s {
            PeerSel::Endpoints(sel) => self
                .peer_index
                .candidates(sel)
                .into_iter()
                .map(|i| &ids[i as usize])
                .filter(|i| {
                    // The host endpoint selector sees only `reserved:host`;
                    // its node labels are for `fromNodes`.
                    let labels = if i.id == HOST {
                        &host_labels
                    } else {
                        &i.labels
                    };
                    sel.matches(labels) && requires.iter().all(|r| r.matches(labels))
                })
                .map(|i| i.id)
                .collect(),
            PeerSel::Nodes(sel) => {
                let mut out: BTreeSet<u32> = self
                    .node_ids
                    .iter()
                    .filter(|(_, ni)| sel.matches(&node_label_set(&self.inv.nodes[*ni])))
                    .map(|(id, _)| *id)
                    .collect();
                if let Some(local) = node.and_then(|n| self.inv.nodes.iter().find(|x| x.name == n))
                {
                    if sel.matches(&node_label_set(local)) {
                        out.insert(HOST);
                    }
                }
                out
            }
            PeerSel::Entity(e) => match e {
                Entity::All => return None,
                Entity::World => world
                    .iter()
                    .copied()
                    .chain(self.cidr_ids.iter().map(|(_, id)| *id))
                    .collect(),
                Entity::WorldIpv4 => self.world_of_family(true),
                Entity::WorldIpv6 => self.world_of_family(false),
                Entity::Host => [HOST].into(),
                // kube-apiserver (7) carries `reserved:remote-node` too.
                Entity::RemoteNode => [REMOTE_NODE, KUBE_APISERVER]
                    .into_iter()
                    .chain(self.node_ids.iter().map(|(id, _)| *id))
                    .collect(),
                Entity::KubeApiserver => [KUBE_APISERVER].into(),
                Entity::Init => [INIT].into(),
                Entity::Ingress => [INGRESS].into(),
                Entity::Health => [HEALTH].into(),
                Entity::Unmanaged => [UNMANAGED].into(),
                Entity::None => BTreeSet::new(),
                Entity::Cluster => {
                    let mut v: BTreeSet<u32> = [
                        HOST,
                        REMOTE_NODE,
                        INIT,
                        INGRESS,
                        HEALTH,
                        UNMANAGED,
                        KUBE_APISERVER,
                    ]
                    .into();
                    v.extend(self.node_ids.iter().map(|(id, _)| *id));
                    v.extend(
                        ids.iter()
                            .filter(|i| {
                                i.labels.get("k8s", CLUSTER_LABEL)
                                    == Some(self.inv.cluster.as_str())
                            })
                            .map(|i| i.id),
                    );
                    v
                }
            },
            // Resolved per endpoint by `fqdn_ids`, never through here.
            PeerSel::Fqdn(_) => BTreeSet::new(),
            PeerSel::Cidr { cidr, except } => {
                let parts = crate::cidr::remove(cidr, except);
                let mut v: BTreeSet<u32> = self
                    .cidr_ids
                    .iter()
                    .filter(|(c, _)| parts.iter().any(|p| p.contains(c)))
                    .map(|(_, id)| *id)
                    .collect();
                // Only a plain /0 selects the world identity of its family:
                // with exceptions it is the remaining prefixes, and the
                // world identity is what the excepted addresses get.
                if cidr.prefix_len == 0 && except.is_empty() {
                    v.insert(self.world_id(cidr.addr.is_ipv4()));
                }
                v
            }
        };
        Some(set)
    }
}

/// The prefixes that get CIDR identities: every prefix a policy names
/// (except /0, which is world), with a CIDR's exceptions removed, and the
/// addresses of DNS answers a `toFQDNs` selector matches. An address's
/// identity is that of the longest of these containing it, else world.
pub fn cidr_prefixes(model: &Model, cfg: &Config) -> BTreeSet<Cidr> {
    let mut prefixes: BTreeSet<Cidr> = BTreeSet::new();
    for r in &model.rules {
        for nr in &r.rules {
            if let Peers::Any(sels) = &nr.peers {
                for s in sels {
                    if let PeerSel::Fqdn(fs) = s {
                        for (name, ips) in &cfg.dns {
                            if fs.iter().any(|f| f.matches(name)) {
                                prefixes.extend(ips.iter().map(|ip| Cidr {
                                    addr: *ip,
                                    prefix_len: if ip.is_ipv4() { 32 } else { 128 },
                                    bare: false,
                                }));
                            }
                        }
                    }
                    if let PeerSel::Cidr { cidr, except } = s {
                        // A CIDR with exceptions is the prefixes left
                        // after removing them, each an identity of its
                        // own (a /0 among them is world).
                        prefixes.extend(
                            crate::cidr::remove(cidr, except)
                                .into_iter()
                                .filter(|c| c.prefix_len > 0),
                        );
                    }
                }
            }
        }
    }
    prefixes
}
