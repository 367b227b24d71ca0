//! One model for the three policy kinds.
//!
//! [`normalize`] turns the IR into [`NRule`]s: one per peer rule (an
//! element of `ingress`, `egressDeny`, a NetworkPolicy `from` list, ...),
//! with selectors scoped to their namespace, NetworkPolicy peers translated
//! as Cilium translates them (`pkg/k8s/network_policy.go`), and ports
//! resolved to protocol and range. Both the compiler and the reference
//! evaluator start from this model.

use crate::inventory::ServiceInfo;
use crate::labels::NAMESPACE_LABELS_PREFIX;
use crate::selector::{namespace_exists, namespace_is, scope_peer, Op, Req, Sel};
use policy_lang::ir::{self, Cidr, Direction, Entity, Policy, PolicyBody, Port, Protocol};
use policy_lang::source::{SourceMap, Span, Spanned};
use serde::Serialize;

/// Where a rule came from, for explanations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    /// `CiliumNetworkPolicy shop/backend`
    pub policy: String,
    /// `spec.ingress[0]`
    pub path: String,
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file.is_empty() {
            write!(f, "{} {}", self.policy, self.path)
        } else {
            write!(
                f,
                "{} {} ({}:{}:{})",
                self.policy, self.path, self.file, self.line, self.col
            )
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Pods (and other Cilium endpoints) matching the selector.
    Endpoints(Sel),
    /// Host endpoints of nodes whose labels match.
    Nodes(Sel),
}

/// The L3 part of a peer rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peers {
    /// Every identity: an L4-only rule, or a NetworkPolicy rule without `from`/`to`.
    All,
    /// A rule with no peers and no ports (`{}`): allows nothing, but its
    /// presence enforces the direction.
    Nothing,
    Any(Vec<PeerSel>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerSel {
    Endpoints(Sel),
    Nodes(Sel),
    Entity(Entity),
    Cidr {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
    /// `toFQDNs`: the addresses of DNS answers for matching names, when
    /// the subject's lookups are visible to the DNS proxy.
    Fqdn(Vec<FqdnSel>),
}

/// One `toFQDNs` selector: `matchName` or `matchPattern`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FqdnSel {
    pub name: Option<String>,
    pub pattern: Option<String>,
}

impl FqdnSel {
    /// Whether a queried name matches (case-insensitive, trailing dot
    /// implied; patterns as Cilium compiles them).
    pub fn matches(&self, query: &str) -> bool {
        let q = crate::l7::dns_name(query);
        self.name
            .as_ref()
            .is_some_and(|n| crate::l7::dns_name(n) == q)
            || self.pattern.as_ref().is_some_and(|p| {
                crate::l7::Matcher::build(1, &[vec![Some(crate::l7::dns_pattern(p))]], 1 << 20)
                    .is_ok_and(|m| m.is_match(&[q.as_bytes()]))
            })
    }
}

/// A port selector: protocol (`None` = TCP, UDP and SCTP when a port is
/// given, every protocol when not) and the ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NPort {
    pub proto: Option<u8>,
    pub ports: PortSel,
    /// The L7 rules of the port rule this port comes from (allow rules).
    pub l7: Option<L7Ref>,
}

/// A port rule's L7 rules, shared by its ports; compared by identity (the
/// same port rule), which is what caches keyed by ports need.
#[derive(Clone, Debug)]
pub struct L7Ref(pub std::sync::Arc<ir::L7Rules>);

impl PartialEq for L7Ref {
    fn eq(&self, other: &L7Ref) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for L7Ref {}

impl std::hash::Hash for L7Ref {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::ptr::hash(std::sync::Arc::as_ptr(&self.0), h)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortSel {
    /// Every port (of the protocol).
    All,
    Range(u16, u16),
    Named(String),
    /// Protocols without ports (VRRP, IGMP).
    Portless,
}

#[derive(Clone, Debug)]
pub struct NRule {
    pub origin: usize,
    pub dir: Direction,
    pub deny: bool,
    pub peers: Peers,
    /// `None`: every port and protocol.
    pub ports: Option<Vec<NPort>>,
    /// Allowed traffic is redirected to the L7 proxy.
    pub redirect: bool,
    pub auth: bool,
}

/// One rule of a policy (a Cilium `spec`/`specs` element or a whole KNP)
/// with its peer rules.
#[derive(Clone, Debug)]
pub struct NPolicyRule {
    pub origin: usize,
    /// Where the policy's name is written: what diagnostics about the whole
    /// policy point at.
    pub name_span: Span,
    pub subject: Subject,
    /// Whether selecting an endpoint puts it into default deny, per direction.
    pub default_deny: [bool; 2],
    /// `fromRequires` / `toRequires`, per direction.
    pub requires: [Vec<Sel>; 2],
    pub rules: Vec<NRule>,
    /// The policy is in audit mode.
    pub audit: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub origins: Vec<Origin>,
    pub rules: Vec<NPolicyRule>,
}

pub fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Model {
    fn origin(
        &mut self,
        p: &Policy,
        path: String,
        loc: policy_lang::source::Loc,
        sources: &SourceMap,
    ) -> usize {
        let span = loc.0;
        let file = if (span.file.0 as usize) < sources.len() {
            sources.name(span.file).to_owned()
        } else {
            String::new()
        };
        self.origins.push(Origin {
            policy: format!("{} {}", p.kind, p.qualified_name()),
            path,
            file,
            line: span.line,
            col: span.col,
        });
        self.origins.len() - 1
    }
}

/// Readings of the policies where Cilium's behaviour is a choice (or a bug
/// that some clusters have fixed): sluice follows Cilium by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// Read a NetworkPolicy's `policyTypes` as Kubernetes specifies: a
    /// section whose type is not listed is ignored. Cilium converts
    /// `ingress` and `egress` whatever `policyTypes` says
    /// (cilium/cilium#48703), and that is the default here.
    pub kubernetes_policy_types: bool,
    /// Every policy in audit mode (Cilium's `policy-audit-mode`), unless
    /// its annotation says `enforce`.
    pub audit_all: bool,
    /// Policies of these namespaces in audit mode, unless annotated
    /// `enforce`.
    pub audit_namespaces: Vec<String>,
}

/// The annotation that puts one policy in audit mode (`audit`) or keeps it
/// enforcing (`enforce`) whatever `--audit` / `--audit-namespace` say.
pub const MODE_ANNOTATION: &str = "policy.sluice.dev/mode";

/// Whether a policy is in audit mode: it reports what it would drop and
/// drops nothing.
pub fn is_audited(p: &Policy, opts: &ModelOptions) -> bool {
    match p.annotations.get(MODE_ANNOTATION).map(String::as_str) {
        Some("audit") => true,
        Some("enforce") => false,
        _ => {
            opts.audit_all
                || p.namespace()
                    .is_some_and(|ns| opts.audit_namespaces.iter().any(|a| a == ns))
        }
    }
}

/// Translates every policy of the set. `services` resolves `toServices`.
pub fn normalize(
    set: &ir::PolicySet,
    sources: &SourceMap,
    services: &[ServiceInfo],
    opts: &ModelOptions,
) -> Model {
    let mut m = Model::default();
    for p in &set.policies {
        match &p.body {
            PolicyBody::Cilium(c) => {
                let rules = c.spec.iter().map(|r| ("spec".to_owned(), r)).chain(
                    c.specs
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, r)| (format!("specs[{i}]"), r)),
                );
                for (path, r) in rules {
                    let mut nr = cilium_rule(&mut m, p, &path, r, sources, services);
                    nr.audit = is_audited(p, opts);
                    m.rules.push(nr);
                }
            }
            PolicyBody::Kubernetes(k) => {
                let mut nr = knp(&mut m, p, k, sources, opts);
                nr.audit = is_audited(p, opts);
                m.rules.push(nr);
            }
        }
    }
    m
}

fn cilium_rule(
    m: &mut Model,
    p: &Policy,
    path: &str,
    r: &ir::Rule,
    sources: &SourceMap,
    services: &[ServiceInfo],
) -> NPolicyRule {
    let ns = p.namespace();
    let origin = m.origin(p, path.to_owned(), r.loc, sources);
    let subject = match (&r.endpoint_selector, &r.node_selector) {
        (_, Some(n)) => Subject::Nodes(Sel::from_ir(n, None)),
        (Some(s), None) => Subject::Endpoints(match ns {
            // The subject can never leave the policy's namespace: Cilium
            // sets `k8s:io.kubernetes.pod.namespace` in matchLabels to the
            // policy's namespace, replacing any value written there
            // (`ParseToCiliumRule`; validation warns about it).
            Some(ns) => {
                let mut own = s.clone();
                own.match_labels
                    .retain(|(k, _)| !is_k8s_namespace_key(&k.value));
                Sel::from_ir(&own, None).with(namespace_is(ns))
            }
            None => Sel::from_ir(s, None),
        }),
        (None, None) => Subject::Endpoints(Sel {
            reqs: vec![Req {
                source: Some("reserved".into()),
                key: "none".into(),
                op: Op::Exists,
                values: vec![],
            }],
        }),
    };
    let subject_is_init = matches!(&subject, Subject::Endpoints(s)
        if s.reqs.iter().any(|q| q.source.as_deref() == Some("reserved") && q.key == "init"));
    let mut rules = Vec::new();
    let mut has = [false, false];
    let mut requires: [Vec<Sel>; 2] = [Vec::new(), Vec::new()];
    for (dir, action, list) in r.peer_lists() {
        let Some(list) = list else { continue };
        if !list.is_empty() {
            has[dir_index(dir)] = true;
        }
        for (i, pr) in list.iter().enumerate() {
            let rpath = format!("{path}.{}[{i}]", dir.list_name(action));
            let origin = m.origin(p, rpath, pr.loc, sources);
            for s in pr.requires.iter().flatten() {
                requires[dir_index(dir)].push(scope_peer(
                    Sel::from_ir(s, None),
                    ns,
                    subject_is_init,
                ));
            }
            rules.push(peer_rule(
                pr,
                dir,
                action == ir::Action::Deny,
                origin,
                ns,
                subject_is_init,
                services,
            ));
        }
    }
    let edd = r.enable_default_deny.as_ref();
    let default_deny = [
        has[0] && edd.and_then(|e| e.ingress).unwrap_or(true),
        has[1] && edd.and_then(|e| e.egress).unwrap_or(true),
    ];
    NPolicyRule {
        origin,
        name_span: p.name.span(),
        subject,
        default_deny,
        requires,
        rules,
        audit: false,
    }
}

/// `k8s:io.kubernetes.pod.namespace`, the key Cilium overwrites in a
/// namespaced policy's subject (a bare or `any:` key is another key).
pub fn is_k8s_namespace_key(k: &ir::LabelKey) -> bool {
    k.source.as_deref() == Some("k8s") && k.key == crate::labels::NAMESPACE_LABEL
}

fn cidr_peers(c: &ir::CidrRule) -> Option<PeerSel> {
    // cidrGroupRef / cidrGroupSelector need CiliumCIDRGroup objects, which
    // the inventory does not carry: they select nothing here.
    c.cidr.as_ref().map(|cidr| PeerSel::Cidr {
        cidr: cidr.value,
        except: c.except.iter().map(|e| e.value).collect(),
    })
}

fn peer_rule(
    pr: &ir::PeerRule,
    dir: Direction,
    deny: bool,
    origin: usize,
    ns: Option<&str>,
    subject_is_init: bool,
    services: &[ServiceInfo],
) -> NRule {
    let mut sels = Vec::new();
    let mut any_l3 = false;
    let scoped = |s: &ir::Selector| scope_peer(Sel::from_ir(s, None), ns, subject_is_init);
    if let Some(v) = pr.endpoints.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        sels.extend(v.iter().map(|s| PeerSel::Endpoints(scoped(s))));
    }
    if let Some(v) = pr.cidr.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        sels.extend(v.iter().map(|c| PeerSel::Cidr {
            cidr: c.value,
            except: vec![],
        }));
    }
    if let Some(v) = pr.cidr_set.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        sels.extend(v.iter().filter_map(cidr_peers));
    }
    if let Some(v) = pr.entities.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        sels.extend(v.iter().map(|e| PeerSel::Entity(e.value)));
    }
    if let Some(v) = pr.nodes.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        sels.extend(v.iter().map(|s| PeerSel::Nodes(Sel::from_ir(s, None))));
    }
    if let Some(v) = pr.services.as_ref().filter(|v| !v.is_empty()) {
        any_l3 = true;
        // A named service selects its backends: the pods its selector
        // matches in its namespace. Selector-less services (Endpoints
        // objects) and k8sServiceSelector are not modelled yet and select
        // nothing.
        for s in v {
            let Some(k) = &s.k8s_service else { continue };
            let (Some(name), svc_ns) = (
                &k.service_name,
                k.namespace
                    .as_ref()
                    .map(|n| n.value.as_str())
                    .or(ns)
                    .unwrap_or("default"),
            ) else {
                continue;
            };
            if let Some(svc) = services
                .iter()
                .find(|x| x.name == name.value && x.namespace == svc_ns)
            {
                if !svc.selector.is_empty() {
                    let mut sel = Sel::default();
                    for (k, v) in &svc.selector {
                        sel = sel.with(Req {
                            source: Some("k8s".into()),
                            key: k.clone(),
                            op: Op::In,
                            values: vec![v.clone()],
                        });
                    }
                    sels.push(PeerSel::Endpoints(sel.with(namespace_is(svc_ns))));
                }
            }
        }
    }
    if let Some(f) = pr.fqdns.as_ref().filter(|v| !v.is_empty()) {
        sels.push(PeerSel::Fqdn(
            f.iter()
                .map(|s| FqdnSel {
                    name: s.match_name.as_ref().map(|v| v.value.clone()),
                    pattern: s.match_pattern.as_ref().map(|v| v.value.clone()),
                })
                .collect(),
        ));
    }
    if pr.groups.as_ref().is_some_and(|v| !v.is_empty())
        || pr.fqdns.as_ref().is_some_and(|v| !v.is_empty())
    {
        // toGroups need the cloud provider; toFQDNs need DNS answers (L7 issue).
        any_l3 = true;
    }
    let port_rules = pr.to_ports.as_deref().unwrap_or(&[]);
    let icmps = pr.icmps.as_deref().unwrap_or(&[]);
    let mut ports: Vec<NPort> = Vec::new();
    let mut redirect = false;
    for r in port_rules {
        redirect |= r.rules.as_ref().is_some_and(|l| l.has_rules())
            || r.listener.is_some()
            || r.server_names.as_ref().is_some_and(|s| !s.is_empty());
        let l7 = r
            .rules
            .as_ref()
            .filter(|l| l.has_rules() && !deny)
            .map(|l| L7Ref(std::sync::Arc::new((**l).clone())));
        let list = r.ports.as_deref().unwrap_or(&[]);
        if list.is_empty() {
            ports.push(NPort {
                proto: None,
                ports: PortSel::All,
                l7: l7.clone(),
            });
        }
        for pp in list {
            let proto = pp
                .protocol
                .as_ref()
                .map(|p| p.value)
                .unwrap_or(Protocol::Any);
            let sel = if proto.is_portless() {
                PortSel::Portless
            } else {
                port_sel(pp.port.as_ref(), pp.end_port.as_ref())
            };
            ports.push(NPort {
                proto: proto.number(),
                ports: sel,
                l7: l7.clone(),
            });
        }
    }
    for ic in icmps {
        for f in &ic.fields {
            let family = f.family.as_ref().map_or(ir::IcmpFamily::V4, |f| f.value);
            if let Ok(t) = policy_lang::validate::icmp_type_number(&f.icmp_type.value, family) {
                ports.push(NPort {
                    proto: Some(if family == ir::IcmpFamily::V4 { 1 } else { 58 }),
                    ports: PortSel::Range(u16::from(t), u16::from(t)),
                    l7: None,
                });
            }
        }
    }
    let has_ports = !port_rules.is_empty() || !icmps.is_empty();
    let peers = if any_l3 {
        Peers::Any(sels)
    } else if has_ports {
        Peers::All
    } else {
        Peers::Nothing
    };
    NRule {
        origin,
        dir,
        deny,
        peers,
        ports: has_ports.then_some(ports),
        redirect: redirect && !deny,
        auth: !deny
            && pr
                .authentication
                .as_ref()
                .is_some_and(|a| a.value != ir::AuthMode::Disabled),
    }
}

fn knp(
    m: &mut Model,
    p: &Policy,
    k: &ir::KnpSpec,
    sources: &SourceMap,
    opts: &ModelOptions,
) -> NPolicyRule {
    let ns = p.namespace().unwrap_or("default");
    let origin = m.origin(p, "spec".into(), k.loc, sources);
    let subject =
        Subject::Endpoints(Sel::from_ir(&k.pod_selector, Some("k8s")).with(namespace_is(ns)));
    let types = k
        .policy_types
        .as_ref()
        .map(|t| t.iter().map(|t| t.value).collect::<Vec<_>>());
    let has_type = |t: ir::PolicyType| types.as_ref().is_some_and(|v| v.contains(&t));
    let has_ingress = k.ingress.as_ref().is_some_and(|e| !e.is_empty());
    let has_egress = k.egress.as_ref().is_some_and(|e| !e.is_empty());
    let (ingress_on, egress_on) = if opts.kubernetes_policy_types {
        // Kubernetes: Ingress is implied when policyTypes is absent; Egress
        // when absent and there are egress rules.
        (
            types.is_none() || has_type(ir::PolicyType::Ingress),
            if types.is_none() {
                has_egress
            } else {
                has_type(ir::PolicyType::Egress)
            },
        )
    } else {
        // Cilium (`ParseNetworkPolicy`): both sections are converted
        // whatever policyTypes says, and any rule enforces its direction;
        // with no ingress rules, ingress is isolated when policyTypes lists
        // Ingress or does not list Egress; with no egress rules, egress is
        // isolated when it lists Egress.
        (
            has_ingress || has_type(ir::PolicyType::Ingress) || !has_type(ir::PolicyType::Egress),
            has_egress || has_type(ir::PolicyType::Egress),
        )
    };
    let mut rules = Vec::new();
    for (dir, list, on) in [
        (Direction::Ingress, &k.ingress, ingress_on),
        (Direction::Egress, &k.egress, egress_on),
    ] {
        if !on {
            continue;
        }
        for (i, r) in list.iter().flatten().enumerate() {
            let field = if dir == Direction::Ingress {
                "ingress"
            } else {
                "egress"
            };
            let origin = m.origin(p, format!("spec.{field}[{i}]"), r.loc, sources);
            let peers = match r.peers.as_deref() {
                None | Some([]) => Peers::All,
                Some(list) => {
                    Peers::Any(list.iter().filter_map(|peer| knp_peer(peer, ns)).collect())
                }
            };
            let ports = r.ports.as_ref().filter(|v| !v.is_empty()).map(|v| {
                v.iter()
                    .map(|pp| {
                        let proto = pp.protocol.as_ref().map_or(Protocol::Tcp, |p| p.value);
                        let sel = port_sel(pp.port.as_ref(), pp.end_port.as_ref());
                        NPort {
                            proto: proto.number(),
                            ports: sel,
                            l7: None,
                        }
                    })
                    .collect()
            });
            rules.push(NRule {
                origin,
                dir,
                deny: false,
                peers,
                ports,
                redirect: false,
                auth: false,
            });
        }
    }
    NPolicyRule {
        origin,
        name_span: p.name.span(),
        subject,
        default_deny: [ingress_on, egress_on],
        requires: [Vec::new(), Vec::new()],
        rules,
        audit: false,
    }
}

/// A written port (and `endPort`) as a port selector: absent or 0 is every
/// port; an `endPort` above the port makes an inclusive range, anything else
/// is the single port.
fn port_sel(port: Option<&Spanned<Port>>, end: Option<&Spanned<i64>>) -> PortSel {
    match port.map(|p| &p.value) {
        None | Some(Port::Number(0)) => PortSel::All,
        Some(Port::Number(n)) => {
            let end = end.map_or(0, |e| e.value);
            let hi = if end > i64::from(*n) {
                end.min(65535) as u16
            } else {
                *n
            };
            PortSel::Range(*n, hi)
        }
        Some(Port::Named(s)) => PortSel::Named(s.clone()),
    }
}

fn knp_peer(peer: &ir::KnpPeer, ns: &str) -> Option<PeerSel> {
    if let Some(b) = &peer.ip_block {
        return Some(PeerSel::Cidr {
            cidr: b.cidr.value,
            except: b.except.iter().map(|e| e.value).collect(),
        });
    }
    let pod = peer
        .pod_selector
        .as_ref()
        .map(|s| Sel::from_ir(s, Some("k8s")));
    let ns_sel = peer.namespace_selector.as_ref().map(|s| {
        let mut sel = Sel::from_ir(s, Some("k8s"));
        if sel.reqs.is_empty() {
            return Sel {
                reqs: vec![namespace_exists()],
            };
        }
        for r in &mut sel.reqs {
            r.key = format!("{NAMESPACE_LABELS_PREFIX}{}", r.key);
        }
        sel
    });
    let sel = match (pod, ns_sel) {
        (Some(p), Some(n)) => p.and(&n),
        (Some(p), None) => p.with(namespace_is(ns)),
        (None, Some(n)) => n,
        (None, None) => return None,
    };
    Some(PeerSel::Endpoints(sel))
}
