//! The typed, spanned IR of a set of policies.
//!
//! The IR mirrors the three resources faithfully (`CiliumNetworkPolicy`,
//! `CiliumClusterwideNetworkPolicy`, `NetworkPolicy`): every field Cilium and
//! Kubernetes define has a place, `Option` keeps "absent" apart from "empty"
//! (the difference matters: `ingress: []` does not enforce anything, while
//! `ingress: [{}]` does), and every node has a [`Loc`]. Values are already
//! parsed (ports are numbers or names, CIDRs are prefixes, entities are an
//! enum), so later stages never re-parse text.
//!
//! Translating these resources into one model of selectors and map entries
//! (namespace injection, Kubernetes peers, default deny) is the compiler's
//! job; the IR stays close to what the user wrote so that diagnostics and
//! lints can point at it.
//!
//! **Invariant:** equality ignores locations ([`Loc`] is always equal), so
//! `parse(render(ir)) == ir` checks meaning, not layout.

use crate::source::{FileId, Loc, Spanned};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// Whether any rule allows by DNS name (`toFQDNs`): only then do the
    /// DNS answers a flows file records change what is compiled.
    pub fn uses_fqdns(&self) -> bool {
        self.policies.iter().any(|p| match &p.body {
            PolicyBody::Cilium(c) => c
                .spec
                .iter()
                .chain(c.specs.iter().flatten())
                .flat_map(|r| r.egress.iter().flatten())
                .any(|pr| pr.fqdns.is_some()),
            PolicyBody::Kubernetes(_) => false,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    NetworkPolicy,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
            PolicyKind::NetworkPolicy => "NetworkPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "networking.k8s.io/v1",
            _ => "cilium.io/v2",
        }
    }

    pub fn is_namespaced(self) -> bool {
        self != PolicyKind::CiliumClusterwideNetworkPolicy
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub name: Spanned<String>,
    /// As written; namespaced kinds default to `default` (see
    /// [`Policy::namespace`]). Always `None` for cluster-scoped kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip)]
    pub file: FileId,
    pub loc: Loc,
    pub body: PolicyBody,
}

impl Policy {
    /// The namespace the policy lives in: as written, else `default`, and
    /// `None` for cluster-scoped policies.
    pub fn namespace(&self) -> Option<&str> {
        if !self.kind.is_namespaced() {
            return None;
        }
        Some(
            self.namespace
                .as_ref()
                .map_or("default", |n| n.value.as_str()),
        )
    }

    /// `namespace/name`, or just `name` for cluster-scoped policies.
    pub fn qualified_name(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{ns}/{}", self.name.value),
            None => self.name.value.clone(),
        }
    }

    /// Every Cilium rule of the policy, from `spec` then `specs`.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        let (spec, specs) = match &self.body {
            PolicyBody::Cilium(c) => (c.spec.as_ref(), c.specs.as_deref().unwrap_or(&[])),
            PolicyBody::Kubernetes(_) => (None, &[][..]),
        };
        spec.into_iter().chain(specs.iter())
    }
}

// One per policy, so the size difference between the variants costs little;
// boxing would add an allocation to every policy instead.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyBody {
    Cilium(CiliumSpec),
    Kubernetes(KnpSpec),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CiliumSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specs: Option<Vec<Rule>>,
}

/// One `api.Rule`: a subject and its four lists of peer rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<PeerRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_deny: Option<Vec<PeerRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<PeerRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<PeerRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<RuleLabel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Spanned<String>>,
}

impl Rule {
    /// The rule's four lists with their direction and action.
    pub fn peer_lists(&self) -> [(Direction, Action, Option<&Vec<PeerRule>>); 4] {
        [
            (Direction::Ingress, Action::Allow, self.ingress.as_ref()),
            (Direction::Ingress, Action::Deny, self.ingress_deny.as_ref()),
            (Direction::Egress, Action::Allow, self.egress.as_ref()),
            (Direction::Egress, Action::Deny, self.egress_deny.as_ref()),
        ]
    }

    pub fn is_host_policy(&self) -> bool {
        self.node_selector.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Direction {
    /// The field name of the list, e.g. `ingressDeny`.
    pub fn list_name(self, action: Action) -> &'static str {
        match (self, action) {
            (Direction::Ingress, Action::Allow) => "ingress",
            (Direction::Ingress, Action::Deny) => "ingressDeny",
            (Direction::Egress, Action::Allow) => "egress",
            (Direction::Egress, Action::Deny) => "egressDeny",
        }
    }

    /// `from` or `to`, the prefix of peer fields in this direction.
    pub fn peer_prefix(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleLabel {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DefaultDeny {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// An element of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
///
/// The same type serves all four lists; the decoder only admits the fields
/// the list's schema has (no `toFQDNs` in deny rules, no `from*` at egress).
/// Field names drop the `from`/`to` prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<Selector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<Vec<Selector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Vec<Spanned<Cidr>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_set: Option<Vec<CidrRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<Spanned<Entity>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Selector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Group>>,
    /// Egress only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<Service>>,
    /// Egress allow only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fqdns: Option<Vec<FqdnSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
    /// Allow rules only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Spanned<AuthMode>>,
}

/// The L3 peer kinds of which one rule may use at most one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3Kind {
    Endpoints,
    Cidr,
    CidrSet,
    Entities,
    Nodes,
    Groups,
    Services,
    Fqdns,
}

impl L3Kind {
    /// The YAML field name in the given direction, e.g. `fromCIDRSet`.
    pub fn field(self, dir: Direction) -> &'static str {
        use Direction::*;
        use L3Kind::*;
        match (self, dir) {
            (Endpoints, Ingress) => "fromEndpoints",
            (Endpoints, Egress) => "toEndpoints",
            (Cidr, Ingress) => "fromCIDR",
            (Cidr, Egress) => "toCIDR",
            (CidrSet, Ingress) => "fromCIDRSet",
            (CidrSet, Egress) => "toCIDRSet",
            (Entities, Ingress) => "fromEntities",
            (Entities, Egress) => "toEntities",
            (Nodes, Ingress) => "fromNodes",
            (Nodes, Egress) => "toNodes",
            (Groups, Ingress) => "fromGroups",
            (Groups, Egress) => "toGroups",
            (Services, _) => "toServices",
            (Fqdns, _) => "toFQDNs",
        }
    }
}

impl PeerRule {
    /// The L3 kinds whose lists are present and non-empty, in schema order.
    pub fn l3_kinds(&self) -> Vec<(L3Kind, Loc)> {
        fn first<T>(v: &Option<Vec<T>>, loc: impl Fn(&T) -> Loc) -> Option<Loc> {
            v.as_ref().and_then(|v| v.first()).map(loc)
        }
        let mut out = Vec::new();
        let mut push = |k, l: Option<Loc>| {
            if let Some(l) = l {
                out.push((k, l));
            }
        };
        push(L3Kind::Endpoints, first(&self.endpoints, |s| s.loc));
        push(L3Kind::Cidr, first(&self.cidr, |c| c.loc));
        push(L3Kind::CidrSet, first(&self.cidr_set, |c| c.loc));
        push(L3Kind::Entities, first(&self.entities, |e| e.loc));
        push(L3Kind::Nodes, first(&self.nodes, |s| s.loc));
        push(L3Kind::Groups, first(&self.groups, |g| g.loc));
        push(L3Kind::Services, first(&self.services, |s| s.loc));
        push(L3Kind::Fqdns, first(&self.fqdns, |f| f.loc));
        out
    }
}

/// A Kubernetes label selector, with Cilium's `source:` key prefixes kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "pairs_as_map")]
    pub match_labels: Vec<(Spanned<LabelKey>, Spanned<String>)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// `{}`: selects everything in its position's scope.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Every key the selector constrains.
    pub fn keys(&self) -> impl Iterator<Item = &Spanned<LabelKey>> {
        self.match_labels
            .iter()
            .map(|(k, _)| k)
            .chain(self.match_expressions.iter().map(|r| &r.key))
    }
}

/// Label pairs in written order, serialized as a mapping.
fn pairs_as_map<S: serde::Serializer>(
    pairs: &[(Spanned<LabelKey>, Spanned<String>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        m.serialize_entry(&k.value, &v.value)?;
    }
    m.end()
}

/// A label key as written in a selector: `k8s:app` has source `k8s`; a key
/// without a source (`app`) matches any source in Cilium policies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelKey {
    pub source: Option<String>,
    pub key: String,
}

impl LabelKey {
    /// Splits `source:key` at the first colon, as Cilium does.
    pub fn parse(text: &str) -> LabelKey {
        match text.split_once(':') {
            Some((src, key)) => LabelKey {
                source: Some(src.to_owned()),
                key: key.to_owned(),
            },
            None => LabelKey {
                source: None,
                key: text.to_owned(),
            },
        }
    }
}

impl fmt::Display for LabelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{s}:{}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl Serialize for LabelKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Requirement {
    pub loc: Loc,
    pub key: Spanned<LabelKey>,
    pub operator: Spanned<Operator>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub const NAMES: &'static [&'static str] = &["In", "NotIn", "Exists", "DoesNotExist"];

    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// An IP prefix. A bare address (`192.0.2.1`) is a full-length prefix;
/// `bare` remembers the spelling so rendering gives back what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub bare: bool,
}

impl Cidr {
    pub fn max_len(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// Parses `a.b.c.d/n`, an IPv6 prefix, or a bare address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("`{addr_text}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_text {
            None => max,
            Some(l) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(format!("prefix length `{l}` is not a number"));
                }
                let n: u8 = l
                    .parse()
                    .map_err(|_| format!("prefix length `{l}` is too large"))?;
                if n > max {
                    return Err(format!("prefix length {n} is larger than {max}"));
                }
                n
            }
        };
        Ok(Cidr {
            addr,
            prefix_len,
            bare: len_text.is_none(),
        })
    }

    /// The network address (host bits cleared) as a u128 in the family's width.
    pub fn network_bits(&self) -> u128 {
        let (v, width) = match self.addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host = width - self.prefix_len as u32;
        if host >= 128 {
            0
        } else {
            (v >> host) << host
        }
    }

    /// Whether `other` lies inside this prefix (same family, at least as long).
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() || other.prefix_len < self.prefix_len {
            return false;
        }
        let narrowed = Cidr {
            prefix_len: self.prefix_len,
            ..*other
        };
        narrowed.network_bits() == self.network_bits()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bare {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix_len)
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CidrRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Spanned<Cidr>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Spanned<Cidr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_selector: Option<Selector>,
}

macro_rules! name_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),*];

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

name_enum! {
    /// Names accepted by `fromEntities` / `toEntities`.
    Entity {
        All => "all",
        World => "world",
        WorldIpv4 => "world-ipv4",
        WorldIpv6 => "world-ipv6",
        Cluster => "cluster",
        Host => "host",
        RemoteNode => "remote-node",
        KubeApiserver => "kube-apiserver",
        Init => "init",
        Ingress => "ingress",
        Health => "health",
        Unmanaged => "unmanaged",
        None => "none",
    }
}

impl Entity {
    /// Whether the CRD schema's enum lists this entity: `world-ipv4` and
    /// `world-ipv6` are known to the agent (`cilium policy import` takes
    /// them) but the API server refuses them in a CNP or CCNP.
    pub fn in_crd(self) -> bool {
        !matches!(self, Entity::WorldIpv4 | Entity::WorldIpv6)
    }
}

name_enum! {
    /// `toPorts[].ports[].protocol`.
    Protocol {
        Tcp => "TCP",
        Udp => "UDP",
        Sctp => "SCTP",
        Any => "ANY",
        Vrrp => "VRRP",
        Igmp => "IGMP",
    }
}

impl Protocol {
    /// Protocols without ports: their port must be empty or 0.
    pub fn is_portless(self) -> bool {
        matches!(self, Protocol::Vrrp | Protocol::Igmp)
    }

    /// The IP protocol number; `None` for ANY.
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Sctp => Some(132),
            Protocol::Vrrp => Some(112),
            Protocol::Igmp => Some(2),
            Protocol::Any => None,
        }
    }
}

name_enum! {
    /// `authentication.mode`.
    AuthMode {
        Disabled => "disabled",
        Required => "required",
        TestAlwaysFail => "test-always-fail",
    }
}

name_enum! {
    /// `headerMatches[].mismatch`.
    MismatchAction {
        Log => "LOG",
        Add => "ADD",
        Delete => "DELETE",
        Replace => "REPLACE",
    }
}

name_enum! {
    IcmpFamily {
        V4 => "IPv4",
        V6 => "IPv6",
    }
}

name_enum! {
    /// `spec.policyTypes` of a NetworkPolicy.
    PolicyType {
        Ingress => "Ingress",
        Egress => "Egress",
    }
}

name_enum! {
    /// Kafka `role`.
    KafkaRole {
        Produce => "produce",
        Consume => "consume",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub loc: Loc,
    pub aws: AwsGroup,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsGroup {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// An element of `toServices`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_service: Option<ServiceName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s_service_selector: Option<ServiceSelector>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Spanned<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSelector {
    pub selector: Selector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Spanned<String>>,
}

/// An element of `toFQDNs` (exactly one field set, checked by validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnSelector {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_name: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<Spanned<String>>,
}

/// An element of `toPorts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Box<L7Rules>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminating_tls: Option<Box<TlsContext>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub originating_tls: Option<Box<TlsContext>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_names: Option<Vec<Spanned<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Box<Listener>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortProtocol {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<Port>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Spanned<Protocol>>,
}

/// A port: a number, or an IANA service name resolved per endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Number(u16),
    Named(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Named(s) => f.write_str(s),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Number(n) => s.serialize_u16(*n),
            Port::Named(n) => s.serialize_str(n),
        }
    }
}

/// `toPorts[].rules`: at most one family may be set (checked by validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L7Rules {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Vec<KafkaRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<DnsRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<Vec<BTreeMap<String, String>>>,
}

impl L7Rules {
    /// The families present (including empty lists), by field name.
    pub fn families(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.http.is_some() {
            out.push("http");
        }
        if self.kafka.is_some() {
            out.push("kafka");
        }
        if self.dns.is_some() {
            out.push("dns");
        }
        if self.l7proto.is_some() || self.l7.is_some() {
            out.push("l7proto");
        }
        out
    }

    /// Whether any L7 rule is present at all.
    pub fn has_rules(&self) -> bool {
        !self.families().is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_matches: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatch {
    pub loc: Loc,
    pub name: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<Spanned<MismatchAction>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecretRef {
    pub loc: Loc,
    pub name: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Spanned<KafkaRole>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<Spanned<String>>,
    #[serde(rename = "clientID", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Spanned<String>>,
}

/// An element of `rules.dns`: Cilium uses the toFQDNs selector type, but
/// allows both fields at once.
pub type DnsRule = FqdnSelector;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsContext {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub loc: Loc,
    pub envoy_config: EnvoyConfigRef,
    pub name: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnvoyConfigRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<String>>,
    pub name: Spanned<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IcmpRule {
    pub loc: Loc,
    pub fields: Vec<IcmpField>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IcmpField {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<Spanned<IcmpFamily>>,
    #[serde(rename = "type")]
    pub icmp_type: Spanned<IcmpType>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IcmpType {
    Number(i64),
    Name(String),
}

impl Serialize for IcmpType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IcmpType::Number(n) => s.serialize_i64(*n),
            IcmpType::Name(n) => s.serialize_str(n),
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes NetworkPolicy

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KnpSpec {
    pub loc: Loc,
    pub pod_selector: Selector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<KnpRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<KnpRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<Spanned<PolicyType>>>,
}

/// One `ingress[i]` (peers under `from`) or `egress[i]` (peers under `to`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KnpRule {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<KnpPeer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<KnpPort>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KnpPeer {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IpBlock {
    pub loc: Loc,
    pub cidr: Spanned<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Spanned<Cidr>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KnpPort {
    pub loc: Loc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Spanned<Protocol>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<Port>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<Spanned<i64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_containment() {
        let p = |s| Cidr::parse(s).expect("valid");
        assert!(p("10.0.0.0/8").contains(&p("10.1.0.0/16")));
        assert!(!p("10.0.0.0/8").contains(&p("11.0.0.0/16")));
        assert!(!p("10.0.0.0/16").contains(&p("10.0.0.0/8")));
        assert!(!p("10.0.0.0/8").contains(&p("::/64")));
        assert!(p("0.0.0.0/0").contains(&p("1.2.3.4")));
        assert!(p("2001:db8::/32").contains(&p("2001:db8:1::/48")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert!(Cidr::parse("10.0.0.0/-1").is_err());
    }
}
