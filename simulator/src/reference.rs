//! The reference evaluator: a flow's verdict straight from the policies'
//! meaning, with no identities, no maps and no longest-prefix lookups.
//!
//! It shares only the normalized model (namespace scoping, NetworkPolicy
//! translation) and label derivation with the compiler. Everything the
//! datapath encoding adds — identity allocation, CIDR identities and the
//! ipcache, port ranges as prefixes, named-port resolution into numbers,
//! precedence between entries, the deny-preferred insert — is absent here,
//! so a property test comparing the two checks exactly that encoding.

use crate::flow::{Flow, PeerRef, Verdict};
use compiler::compile::Config;
use compiler::inventory::{ContainerPort, Inventory, NodeInfo, Pod};
use compiler::labels::{pod_labels, Label, LabelSet, CLUSTER_LABEL};
use compiler::model::{dir_index, Model, NPort, NRule, PeerSel, Peers, PortSel, Subject};
use compiler::selector::Sel;
use policy_lang::ir::{Cidr, Direction, Entity};
use std::net::IpAddr;

/// A flow's peer as the reference sees it.
#[derive(Clone, Debug)]
enum Who<'a> {
    Pod(&'a Pod, LabelSet),
    /// A node's address; whether it is `host` depends on the observer.
    Node(&'a NodeInfo),
    /// Outside the cluster; `None` when named only as `world` (or
    /// `world-ipv4`, the same in a dual-stack cluster).
    World(Option<IpAddr>),
    /// `world-ipv6` named as an entity.
    World6,
    /// `host` named as an entity: the observer's own node.
    LocalHost,
    /// A reserved identity named as an entity (health, init, ...).
    Reserved(&'static str),
}

pub struct Reference<'a> {
    pub model: &'a Model,
    pub inv: &'a Inventory,
    pub cfg: &'a Config,
}

impl<'a> Reference<'a> {
    fn labels_of(&self, p: &Pod) -> LabelSet {
        let ns = self.inv.namespace(&p.namespace);
        pod_labels(
            &p.labels,
            &p.namespace,
            &ns.labels,
            &p.service_account,
            &self.inv.cluster,
            &self.cfg.label_filter,
        )
    }

    fn who(&self, p: &PeerRef) -> Option<Who<'a>> {
        let inv = self.inv;
        Some(match p {
            PeerRef::Pod(name) => {
                let (ns, pod) = name.split_once('/')?;
                let pod = inv
                    .pods
                    .iter()
                    .find(|x| x.namespace == ns && x.name == pod && !x.host_network)?;
                Who::Pod(pod, self.labels_of(pod))
            }
            PeerRef::Ip(ip) => {
                if let Some(pod) = inv
                    .pods
                    .iter()
                    .find(|x| !x.host_network && x.ips.contains(ip))
                {
                    Who::Pod(pod, self.labels_of(pod))
                } else if let Some(n) = inv.nodes.iter().find(|n| n.ips.contains(ip)) {
                    Who::Node(n)
                } else {
                    Who::World(Some(*ip))
                }
            }
            PeerRef::Entity(e) => match e.as_str() {
                "world" | "world-ipv4" => Who::World(None),
                "world-ipv6" => Who::World6,
                "host" => Who::LocalHost,
                "remote-node" => Who::Reserved("remote-node"),
                "health" => Who::Reserved("health"),
                "init" => Who::Reserved("init"),
                "ingress" => Who::Reserved("ingress"),
                "unmanaged" => Who::Reserved("unmanaged"),
                "kube-apiserver" => Who::Reserved("kube-apiserver"),
                _ => return None,
            },
        })
    }

    /// The verdict for a flow; `None` when a side is unknown. Policies in
    /// audit mode do not take part: they drop nothing.
    pub fn verdict(&self, flow: &Flow) -> Option<Verdict> {
        self.decide(flow).map(|(v, _)| v)
    }

    /// Whether a policy in audit mode would drop the flow, which the
    /// enforced policies allow; `None` when a side is unknown.
    pub fn audited(&self, flow: &Flow) -> Option<bool> {
        self.decide(flow).map(|(_, a)| a)
    }

    /// The enforced verdict, and whether, in a direction that allowed it,
    /// the policies with those in audit mode enforced would have denied it.
    fn decide(&self, flow: &Flow) -> Option<(Verdict, bool)> {
        let src = self.who(&flow.from)?;
        let dst = self.who(&flow.to)?;
        if let (Who::Pod(a, _), Who::Pod(b, _)) = (&src, &dst) {
            if std::ptr::eq(*a, *b) {
                return Some((Verdict::Allowed, false));
            }
        }
        let mut audited = false;
        // One direction: denied by the enforced policies ends the flow;
        // allowed, the full set may still deny it (audit).
        let mut side = |subj: Subj, peer: &Who, dir: Direction| -> bool {
            if self.judge(&subj, peer, dir, flow, false) == Verdict::Denied {
                return false;
            }
            audited |= self.judge(&subj, peer, dir, flow, true) == Verdict::Denied;
            true
        };
        let egress_ok = match &src {
            Who::Pod(p, labels) => side(Subj::Pod(p, labels), &dst, Direction::Egress),
            Who::Node(n) => side(Subj::Host(n), &dst, Direction::Egress),
            _ => true,
        };
        if !egress_ok {
            return Some((Verdict::Denied, false));
        }
        let ingress_ok = match &dst {
            Who::Pod(p, labels) => side(Subj::Pod(p, labels), &src, Direction::Ingress),
            Who::Node(n) => side(Subj::Host(n), &src, Direction::Ingress),
            _ => true,
        };
        Some(if ingress_ok {
            (Verdict::Allowed, audited)
        } else {
            (Verdict::Denied, false)
        })
    }

    /// The rules whose subject selects `subj`; those of policies in audit
    /// mode only `with_audited`.
    fn selecting(&self, subj: &Subj, with_audited: bool) -> Vec<usize> {
        self.model
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| with_audited || !r.audit)
            .filter(|(_, r)| match (&r.subject, subj) {
                (Subject::Endpoints(s), Subj::Pod(_, labels)) => s.matches(labels),
                (Subject::Nodes(s), Subj::Host(n)) => s.matches(&node_labels(n)),
                _ => false,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Whether `subj`'s lookups of `name` reach the DNS proxy and are
    /// allowed: one of its egress allows has a DNS rule for the name.
    fn dns_visible(&self, subj: &Subj, name: &str, with_audited: bool) -> bool {
        let wanted = compiler::l7::dns_name(name);
        self.selecting(subj, with_audited).into_iter().any(|ri| {
            self.model.rules[ri]
                .rules
                .iter()
                .filter(|nr| nr.dir == Direction::Egress && !nr.deny)
                .flat_map(|nr| nr.ports.iter().flatten())
                .filter_map(|p| p.l7.as_ref())
                .flat_map(|l7| l7.0.dns.iter().flatten())
                .any(|d| {
                    d.match_name
                        .as_ref()
                        .is_some_and(|n| compiler::l7::dns_name(&n.value) == wanted)
                        || d.match_pattern.as_ref().is_some_and(|p| {
                            full_match(&compiler::l7::dns_pattern(&p.value), &wanted)
                        })
                })
        })
    }

    fn judge(
        &self,
        subj: &Subj,
        peer: &Who,
        dir: Direction,
        flow: &Flow,
        with_audited: bool,
    ) -> Verdict {
        let d = dir_index(dir);
        let rules = self.selecting(subj, with_audited);
        // A node's host endpoint exists (is enforced at all) only with host policies.
        if matches!(subj, Subj::Host(_)) && rules.is_empty() {
            return Verdict::Allowed;
        }
        let enforced = rules.iter().any(|&r| self.model.rules[r].default_deny[d]);
        let requires: Vec<&Sel> = rules
            .iter()
            .flat_map(|&r| self.model.rules[r].requires[d].iter())
            .collect();
        let matching = |deny: bool| {
            rules.iter().any(|&r| {
                self.model.rules[r]
                    .rules
                    .iter()
                    .filter(|nr| nr.dir == dir && nr.deny == deny)
                    .any(|nr| {
                        self.l3(nr, peer, subj, &requires, with_audited)
                            && if deny {
                                self.l4(nr, subj, flow, dir)
                            } else {
                                self.l4_l7(nr, subj, flow, dir)
                            }
                    })
            })
        };
        if matching(true) {
            return Verdict::Denied;
        }
        if matching(false) {
            return Verdict::Allowed;
        }
        let local_host = match (peer, &subj) {
            (Who::LocalHost, _) => true,
            (Who::Node(n), Subj::Pod(p, _)) => p.node.as_deref() == Some(n.name.as_str()),
            _ => false,
        };
        if dir == Direction::Ingress
            && self.cfg.allow_localhost
            && local_host
            && matches!(subj, Subj::Pod(..))
        {
            return Verdict::Allowed;
        }
        if enforced {
            Verdict::Denied
        } else {
            Verdict::Allowed
        }
    }

    fn l3(
        &self,
        nr: &NRule,
        peer: &Who,
        subj: &Subj,
        requires: &[&Sel],
        with_audited: bool,
    ) -> bool {
        match &nr.peers {
            Peers::Nothing => false,
            Peers::All => true,
            Peers::Any(sels) => sels
                .iter()
                .any(|s| self.peer_matches(s, peer, subj, requires, with_audited)),
        }
    }

    fn peer_matches(
        &self,
        s: &PeerSel,
        peer: &Who,
        subj: &Subj,
        requires: &[&Sel],
        with_audited: bool,
    ) -> bool {
        let observer_node = subj.node();
        // Is the peer the observer's own node?
        let is_local = |n: &NodeInfo| observer_node == Some(n.name.as_str());
        match s {
            PeerSel::Endpoints(sel) => {
                let labels = match peer {
                    Who::Pod(_, l) => l.clone(),
                    Who::LocalHost => reserved("host"),
                    Who::Node(n) if is_local(n) => reserved("host"),
                    // Remote nodes carry their labels only where Cilium
                    // gives them identities of their own.
                    Who::Node(n) if self.cfg.node_selector_labels => {
                        let mut l: Vec<Label> =
                            n.labels.iter().map(|(k, v)| Label::k8s(k, v)).collect();
                        l.push(Label::reserved("remote-node"));
                        LabelSet::from_labels(l)
                    }
                    Who::Node(_) => reserved("remote-node"),
                    // kube-apiserver is a remote node as well.
                    Who::Reserved("kube-apiserver") => LabelSet::from_labels(vec![
                        Label::reserved("kube-apiserver"),
                        Label::reserved("remote-node"),
                    ]),
                    Who::Reserved(n) => reserved(n),
                    Who::World(_) | Who::World6 => reserved("world"),
                };
                sel.matches(&labels) && requires.iter().all(|r| r.matches(&labels))
            }
            PeerSel::Nodes(sel) => match peer {
                Who::Node(n) if is_local(n) || self.cfg.node_selector_labels => {
                    sel.matches(&node_labels(n))
                }
                Who::LocalHost => subj
                    .node_info(self.inv)
                    .is_some_and(|n| sel.matches(&node_labels(n))),
                _ => false,
            },
            PeerSel::Entity(e) => match e {
                Entity::All => true,
                Entity::None => false,
                Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6 => match peer {
                    Who::World(None) => *e != Entity::WorldIpv6,
                    Who::World6 => *e != Entity::WorldIpv4,
                    Who::World(Some(ip)) => match e {
                        Entity::WorldIpv4 => ip.is_ipv4(),
                        Entity::WorldIpv6 => ip.is_ipv6(),
                        _ => true,
                    },
                    _ => false,
                },
                Entity::Host => match peer {
                    Who::LocalHost => true,
                    Who::Node(n) => is_local(n),
                    _ => false,
                },
                Entity::RemoteNode => match peer {
                    Who::Node(n) => !is_local(n),
                    Who::Reserved(r) => matches!(*r, "remote-node" | "kube-apiserver"),
                    _ => false,
                },
                Entity::Cluster => match peer {
                    Who::Pod(_, l) => {
                        l.get("k8s", CLUSTER_LABEL) == Some(self.inv.cluster.as_str())
                    }
                    Who::Node(_) | Who::LocalHost | Who::Reserved(_) => true,
                    Who::World(_) | Who::World6 => false,
                },
                other => matches!(peer, Who::Reserved(r) if *r == other.as_str()),
            },
            PeerSel::Cidr { cidr, except } => match peer {
                Who::World(Some(ip)) => {
                    let host = host_cidr(*ip);
                    cidr.contains(&host) && !except.iter().any(|e| e.contains(&host))
                }
                // The world identity itself: only a plain /0 of its family
                // (any family when one world identity serves both).
                Who::World(None) | Who::World6 => {
                    let v6 = matches!(peer, Who::World6);
                    cidr.prefix_len == 0
                        && except.is_empty()
                        && (!self.cfg.dual_stack || cidr.addr.is_ipv6() == v6)
                }
                _ => false,
            },
            // An outside address some DNS answer gave for a matching name,
            // looked up where the DNS proxy saw it.
            PeerSel::Fqdn(fs) => match peer {
                Who::World(Some(ip)) => self.cfg.dns.iter().any(|(name, ips)| {
                    ips.contains(ip)
                        && fs.iter().any(|f| f.matches(name))
                        && self.dns_visible(subj, name, with_audited)
                }),
                _ => false,
            },
        }
    }

    fn l4(&self, nr: &NRule, subj: &Subj, flow: &Flow, dir: Direction) -> bool {
        let Some(ports) = &nr.ports else { return true };
        ports.iter().any(|p| self.port_matches(p, subj, flow, dir))
    }

    /// An allow's ports, and when the flow carries a request and the
    /// matching port has L7 rules, those rules: each evaluated on its own
    /// with the `regex` crate, from the policy text.
    fn l4_l7(&self, nr: &NRule, subj: &Subj, flow: &Flow, dir: Direction) -> bool {
        let Some(ports) = &nr.ports else { return true };
        ports.iter().any(|p| {
            self.port_matches(p, subj, flow, dir)
                && match (&p.l7, &flow.l7) {
                    (Some(rules), Some(req)) => l7_allows(&rules.0, req),
                    _ => true,
                }
        })
    }

    fn port_matches(&self, p: &NPort, subj: &Subj, flow: &Flow, dir: Direction) -> bool {
        let (proto, port) = (flow.protocol, flow.port);
        let l4_proto = matches!(proto, 6 | 17 | 132);
        match &p.ports {
            PortSel::All => p.proto.is_none_or(|x| x == proto),
            PortSel::Portless => p.proto == Some(proto),
            PortSel::Range(lo, hi) => {
                let proto_ok = match p.proto {
                    Some(x) => x == proto,
                    None => l4_proto,
                };
                proto_ok && (*lo..=*hi).contains(&port)
            }
            PortSel::Named(name) => {
                let named: Vec<&ContainerPort> = match (dir, subj) {
                    (Direction::Ingress, Subj::Pod(pod, _)) => pod.ports.iter().collect(),
                    (Direction::Ingress, Subj::Host(_)) => Vec::new(),
                    (Direction::Egress, _) => {
                        // A name means one port cluster-wide: where the
                        // pods of the cluster give it different numbers
                        // for the flow's protocol, it means none.
                        let numbers: std::collections::BTreeSet<u16> = self
                            .inv
                            .pods
                            .iter()
                            .filter(|x| !x.host_network)
                            .flat_map(|x| x.ports.iter())
                            .filter(|c| {
                                c.name.as_deref() == Some(name.as_str()) && c.protocol == proto
                            })
                            .map(|c| c.port)
                            .collect();
                        return numbers.len() == 1
                            && numbers.contains(&port)
                            && p.proto.is_none_or(|x| x == proto);
                    }
                };
                named.iter().any(|c| {
                    c.name.as_deref() == Some(name.as_str())
                        && c.port == port
                        && p.proto.unwrap_or(c.protocol) == proto
                        && p.proto.is_none_or(|x| x == c.protocol)
                })
            }
        }
    }
}

enum Subj<'p> {
    Pod(&'p Pod, &'p LabelSet),
    Host(&'p NodeInfo),
}

impl Subj<'_> {
    fn node(&self) -> Option<&str> {
        match self {
            Subj::Pod(p, _) => p.node.as_deref(),
            Subj::Host(n) => Some(&n.name),
        }
    }

    fn node_info<'i>(&self, inv: &'i Inventory) -> Option<&'i NodeInfo> {
        let name = self.node()?;
        inv.nodes.iter().find(|n| n.name == name)
    }
}

fn reserved(name: &str) -> LabelSet {
    LabelSet::from_labels(vec![Label::reserved(name)])
}

fn node_labels(n: &NodeInfo) -> LabelSet {
    LabelSet::from_labels(n.labels.iter().map(|(k, v)| Label::k8s(k, v)).collect())
}

fn host_cidr(ip: IpAddr) -> Cidr {
    Cidr {
        addr: ip,
        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
        bare: true,
    }
}

fn full_match(re: &str, value: &str) -> bool {
    regex::bytes::RegexBuilder::new(&format!("^(?:{re})$"))
        .unicode(false)
        .build()
        .is_ok_and(|r| r.is_match(value.as_bytes()))
}

/// Whether any L7 rule of a port rule allows the request: a rule of the
/// request's protocol whose every present field matches.
fn l7_allows(rules: &policy_lang::ir::L7Rules, req: &compiler::l7::Request) -> bool {
    use compiler::l7::Request;
    fn set(s: &Option<policy_lang::source::Spanned<String>>) -> Option<&str> {
        s.as_ref()
            .map(|v| v.value.as_str())
            .filter(|v| !v.is_empty())
    }
    match req {
        Request::Http {
            method,
            path,
            host,
            headers,
        } => rules.http.iter().flatten().any(|h| {
            set(&h.method).is_none_or(|m| full_match(m, method))
                && set(&h.path).is_none_or(|p| full_match(p, path))
                && set(&h.host).is_none_or(|x| full_match(x, host))
                && h.headers.iter().all(|want| {
                    let (name, value) = match want.value.split_once(':') {
                        Some((n, v)) => (n.trim(), Some(v.trim())),
                        None => (want.value.trim(), None),
                    };
                    headers
                        .iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(name) && value.is_none_or(|w| w == v))
                })
                && h.header_matches
                    .iter()
                    .filter(|m| m.mismatch.is_none())
                    .all(|m| {
                        headers.iter().any(|(n, v)| {
                            n.eq_ignore_ascii_case(&m.name.value)
                                && m.value.as_ref().is_none_or(|w| &w.value == v)
                        })
                    })
        }),
        Request::Kafka {
            api_key,
            api_version,
            client_id,
            topic,
        } => rules.kafka.iter().flatten().any(|k| {
            let key_ok = match (&k.role, &k.api_key) {
                (Some(role), _) => {
                    compiler::l7::kafka_role_keys(role.value.as_str()).contains(api_key)
                }
                (None, Some(name)) => policy_lang::validate::KAFKA_API_KEYS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&name.value))
                    .is_some_and(|i| i == usize::from(*api_key)),
                (None, None) => true,
            };
            key_ok
                && set(&k.api_version).is_none_or(|v| v == api_version.to_string())
                && set(&k.client_id).is_none_or(|v| v == client_id)
                && set(&k.topic).is_none_or(|v| v == topic)
        }),
        Request::Dns { query } => {
            let name = compiler::l7::dns_name(query);
            rules.dns.iter().flatten().any(|d| {
                d.match_name
                    .as_ref()
                    .is_some_and(|n| compiler::l7::dns_name(&n.value) == name)
                    || d.match_pattern
                        .as_ref()
                        .is_some_and(|p| full_match(&compiler::l7::dns_pattern(&p.value), &name))
            })
        }
    }
}
