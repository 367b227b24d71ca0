//! Flows to judge: the compact YAML form and Hubble's JSON.

use compiler::inventory::Inventory;
use policy_lang::diag::{Code, Diagnostic};
use policy_lang::ir::{Direction, Entity};
use policy_lang::source::{FileId, Loc, SourceMap, Span};
use policy_lang::yaml::{self, Node, NodeKind};
use serde::Serialize;
use std::net::IpAddr;

/// One side of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PeerRef {
    /// `namespace/pod`
    Pod(String),
    Ip(IpAddr),
    Entity(String),
}

/// How a label-selector peer is carried until it is expanded.
pub const SELECTOR_PREFIX: &str = "sel:";
/// How a CIDR peer is carried until it is expanded.
pub const CIDR_PREFIX: &str = "cidr:";

/// At most this many flows come of one flow whose peers name several pods.
const MAX_EXPANSION: usize = 10_000;

/// An address as the datapath sees it: an IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.11`) is the IPv4 endpoint.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PeerRef {
    pub fn parse(text: &str) -> Result<PeerRef, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(PeerRef::Ip(canonical_ip(ip)));
        }
        if text.contains('/') {
            if policy_lang::ir::Cidr::parse(text).is_ok() {
                return Ok(PeerRef::Pod(format!("{CIDR_PREFIX}{text}")));
            }
            // `service/NAME` and `svc/NAME`, as kubectl writes them, with
            // the namespace in front: `shop/service/web`.
            if let Some((ns, name)) = text
                .split_once("/service/")
                .or_else(|| text.split_once("/svc/"))
            {
                if !ns.contains('/') && !name.contains('/') {
                    return Ok(PeerRef::Pod(format!("svc:{ns}/{name}")));
                }
            }
            return Ok(PeerRef::Pod(text.to_owned()));
        }
        // `ns=shop,app=web`: the pods a label selector matches (expanded
        // when the flows are judged).
        if text.contains('=') {
            return Ok(PeerRef::Pod(format!("{SELECTOR_PREFIX}{text}")));
        }
        match Entity::parse(text) {
            Some(Entity::All | Entity::Cluster | Entity::None) | None => Err(format!(
                "`{text}` is not `namespace/pod`, an IP address, or an entity (world, host, remote-node, health, init, ingress, unmanaged, kube-apiserver)"
            )),
            Some(_) => Ok(PeerRef::Entity(text.to_owned())),
        }
    }
}

impl std::fmt::Display for PeerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The prefixes that carry selectors and CIDRs are not written.
            PeerRef::Pod(p) => f.write_str(
                p.strip_prefix(SELECTOR_PREFIX)
                    .or_else(|| p.strip_prefix(CIDR_PREFIX))
                    .unwrap_or(p),
            ),
            PeerRef::Ip(ip) => write!(f, "{ip}"),
            PeerRef::Entity(e) => f.write_str(e),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Flow {
    pub from: PeerRef,
    pub to: PeerRef,
    /// Destination port; the ICMP type for ICMP.
    pub port: u16,
    /// IP protocol number.
    pub protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Verdict>,
    /// Where the flow was written (or the Hubble line).
    #[serde(skip)]
    pub loc: Loc,
    /// For replayed Hubble flows: the verdict Hubble recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Verdict>,
    /// The request the flow carries (`http`, `kafka` or `dns`), judged by
    /// the L7 policy of a port that redirects to the proxy.
    #[serde(skip)]
    pub l7: Option<compiler::l7::Request>,
    /// For replayed Hubble flows: what the record says beyond the packet.
    #[serde(skip)]
    pub replay: Option<Box<Replay>>,
    /// The Service the flow was addressed to, when `to` is one of its
    /// backends (Cilium translates the address before policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<ServiceHop>>,
    /// The names of several peers this flow is one combination of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expanded: Option<Box<Expanded>>,
}

/// Which side of a flow was written as a name of several peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Expanded {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Group>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Group>,
}

/// A name of several peers, as written, and how many it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub count: usize,
}

impl std::fmt::Display for Expanded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        for (side, g) in [("from", &self.from), ("to", &self.to)] {
            if let Some(g) = g {
                match g.count {
                    1 => write!(f, "{sep}{side} `{}`, its one peer", g.name)?,
                    n => write!(f, "{sep}{side} `{}`, one of {n} peers", g.name)?,
                }
                sep = "; ";
            }
        }
        Ok(())
    }
}

impl Flow {
    /// A flow of `protocol` to `port`, with nothing recorded or expected.
    pub fn new(from: PeerRef, to: PeerRef, port: u16, protocol: u8) -> Flow {
        Flow {
            from,
            to,
            port,
            protocol,
            expect: None,
            loc: Loc::default(),
            recorded: None,
            l7: None,
            replay: None,
            service: None,
            expanded: None,
        }
    }
}

/// A Service address a flow was sent to, and the port it named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceHop {
    /// `namespace/name`.
    pub name: String,
    pub port: u16,
}

/// What a Hubble record says about a flow that decides how it is replayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The record is not a new connection's first packet, or was dropped
    /// for a reason other than policy: it is counted, not judged.
    pub not_judged: Option<NotJudged>,
    /// The identity labels Hubble recorded for the source and the
    /// destination, for pods that are gone from the inventory.
    pub labels: [Vec<String>; 2],
    /// The policies Hubble's policy correlation named (`ingress_allowed_by`
    /// and the like), each as `Kind namespace/name`: what decided the
    /// flow in the cluster, to set beside what decides it here.
    pub policies: Vec<RecordedPolicy>,
    /// Pods of the record that are gone, each with the endpoint of the
    /// same identity judged in its place.
    pub stood_in: Vec<(String, String)>,
}

/// One policy a Hubble record names as having allowed or denied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedPolicy {
    pub direction: Direction,
    /// From `*_allowed_by` (else `*_denied_by`).
    pub allowed: bool,
    /// The kind, when the record says it (`kind`, or the rule label
    /// `io.cilium.k8s.policy.derived-from`).
    pub kind: Option<String>,
    /// `namespace/name`, or `name` for a clusterwide policy.
    pub name: String,
}

impl RecordedPolicy {
    /// Whether this names the policy sluice writes as `Kind ns/name`.
    pub fn names(&self, policy: &str) -> bool {
        match policy.split_once(' ') {
            Some((kind, name)) => {
                name == self.name && self.kind.as_deref().is_none_or(|k| k == kind)
            }
            None => policy == self.name,
        }
    }
}

impl std::fmt::Display for RecordedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Some(k) => write!(f, "{k} {}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The policies of a Hubble record's correlation fields.
fn recorded_policies(f: &serde_json::Value) -> Vec<RecordedPolicy> {
    let mut out = Vec::new();
    for (key, direction, allowed) in [
        ("egress_allowed_by", Direction::Egress, true),
        ("ingress_allowed_by", Direction::Ingress, true),
        ("egress_denied_by", Direction::Egress, false),
        ("ingress_denied_by", Direction::Ingress, false),
    ] {
        let Some(list) = f.get(key).and_then(|l| l.as_array()) else {
            continue;
        };
        for p in list {
            // The rule labels say what the fields may leave out.
            let label = |k: &str| {
                p.get("labels")?.as_array()?.iter().find_map(|l| {
                    let l = l.as_str()?;
                    let l = l.split_once(':').map_or(l, |(_, rest)| rest);
                    l.strip_prefix(k)?.strip_prefix('=').map(str::to_owned)
                })
            };
            let field = |k: &str| {
                p.get(k)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let Some(name) = field("name").or_else(|| label("io.cilium.k8s.policy.name")) else {
                continue;
            };
            let ns = field("namespace").or_else(|| label("io.cilium.k8s.policy.namespace"));
            out.push(RecordedPolicy {
                direction,
                allowed,
                kind: field("kind").or_else(|| label("io.cilium.k8s.policy.derived-from")),
                name: match ns {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name,
                },
            });
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotJudged {
    /// `is_reply`: the answer of a connection judged when it opened.
    Reply,
    /// A TCP packet other than a connection's opening SYN.
    Established,
    /// Dropped for another reason than policy (`drop_reason_desc`).
    NonPolicyDrop(String),
}

/// How Hubble names the drops that policy makes.
const POLICY_DROPS: &[&str] = &["POLICY_DENIED", "POLICY_DENY", "AUTH_REQUIRED"];

/// Why a Hubble record is not judged as a new connection, if it is not.
fn not_judged(f: &serde_json::Value) -> Option<NotJudged> {
    if f.get("is_reply").and_then(|r| r.as_bool()) == Some(true) {
        return Some(NotJudged::Reply);
    }
    if f.get("verdict").and_then(|v| v.as_str()) == Some("DROPPED") {
        let desc = f.get("drop_reason_desc").and_then(|d| d.as_str());
        // Cilium's codes for POLICY_DENIED, POLICY_DENY and AUTH_REQUIRED.
        let code = f.get("drop_reason").and_then(|d| d.as_u64());
        let policy = match (desc, code) {
            (Some(d), _) => POLICY_DROPS.contains(&d),
            (None, Some(c)) => matches!(c, 133 | 181 | 189),
            (None, None) => true,
        };
        if !policy {
            let why = desc.map_or_else(
                || format!("drop reason {}", code.unwrap_or(0)),
                str::to_owned,
            );
            return Some(NotJudged::NonPolicyDrop(why));
        }
    }
    if let Some(flags) = f.pointer("/l4/TCP/flags").and_then(|x| x.as_object()) {
        let set = |k: &str| flags.get(k).and_then(|v| v.as_bool()) == Some(true);
        // Only a SYN without ACK opens a connection.
        let opens = set("SYN") && !set("ACK");
        if !opens {
            return Some(NotJudged::Established);
        }
    }
    None
}

fn labels_of(ep: Option<&serde_json::Value>) -> Vec<String> {
    let mut v: Vec<String> = ep
        .and_then(|e| e.get("labels"))
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

pub fn protocol_number(text: &str) -> Option<u8> {
    Some(match text.to_ascii_uppercase().as_str() {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        "ICMP" | "ICMPV4" => 1,
        "ICMPV6" => 58,
        "VRRP" => 112,
        "IGMP" => 2,
        _ => return text.parse().ok(),
    })
}

fn scalar(n: &Node) -> Option<&str> {
    n.as_scalar().map(|s| s.text.as_str())
}

fn err(diags: &mut Vec<Diagnostic>, span: Span, msg: impl Into<String>) {
    diags.push(Diagnostic::error(Code::FlowSyntax, span, msg));
}

/// DNS answers a flows file gives (`dns: {name: [addresses]}` beside
/// `flows:`), for toFQDNs: what the cluster's DNS proxies would have seen.
pub fn parse_dns(
    text: &str,
    file: FileId,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Vec<std::net::IpAddr>)> {
    match yaml_roots(text, file, yaml::Base::default()) {
        Ok(roots) => dns_of_roots(&roots, diags),
        Err(_) => Vec::new(), // parse_yaml reports it
    }
}

/// The `dns:` answers of parsed flows documents.
pub(crate) fn dns_of_roots(
    roots: &[Node],
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Vec<std::net::IpAddr>)> {
    let mut out = Vec::new();
    for root in roots {
        let Some(dns) = root.get("dns") else { continue };
        let NodeKind::Map(entries) = &dns.kind else {
            err(diags, dns.span, "`dns` maps names to lists of addresses");
            continue;
        };
        for (k, v) in entries {
            let name = scalar(k).unwrap_or("").to_owned();
            let items: Vec<&Node> = match &v.kind {
                NodeKind::Seq(items) => items.iter().collect(),
                _ => vec![v],
            };
            let mut ips = Vec::new();
            for item in items {
                match scalar(item).and_then(|s| s.parse().ok()) {
                    Some(ip) => ips.push(canonical_ip(ip)),
                    None => err(
                        diags,
                        item.span,
                        format!("`{}` is not an IP address", scalar(item).unwrap_or("")),
                    ),
                }
            }
            out.push((name, ips));
        }
    }
    out
}

/// Reads the compact YAML form: a list (or `flows:` list) of
/// `{from, to, port, protocol, expect}`. `port` may be `80/TCP`.
pub fn parse_yaml(text: &str, file: FileId, diags: &mut Vec<Diagnostic>) -> Vec<Flow> {
    match yaml_roots(text, file, yaml::Base::default()) {
        Ok(roots) => flows_of_roots(&roots, diags),
        Err(e) => {
            diags.push(yaml_diag(e));
            Vec::new()
        }
    }
}

/// The documents of a flows text (or of a piece of one starting at `base`).
pub(crate) fn yaml_roots(
    text: &str,
    file: FileId,
    base: yaml::Base,
) -> Result<Vec<Node>, yaml::YamlError> {
    let mut roots = Vec::new();
    yaml::parse_stream_at(text, file, base, &yaml::Limits::default(), |e| {
        if let yaml::Emitted::Document { root, .. } = e {
            roots.push(root);
        }
    })?;
    Ok(roots)
}

pub(crate) fn yaml_diag(e: yaml::YamlError) -> Diagnostic {
    let mut d = policy_lang::yaml_error(e);
    d.message = format!("flows: {}", d.message);
    d
}

/// The flows of parsed documents: each a list of flows, or a mapping with
/// a `flows:` list (and perhaps `dns:`, read by [`parse_dns`]).
pub(crate) fn flows_of_roots(roots: &[Node], diags: &mut Vec<Diagnostic>) -> Vec<Flow> {
    flows_of_roots_after(roots, &[], diags)
}

/// As [`flows_of_roots`], for a piece whose first document continues one
/// that already had the root keys `keys_before` (a streamed file cut before
/// a root key): a key given twice is an error wherever the cut fell.
pub(crate) fn flows_of_roots_after(
    roots: &[Node],
    keys_before: &[String],
    diags: &mut Vec<Diagnostic>,
) -> Vec<Flow> {
    let mut out = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let list = match &root.kind {
            NodeKind::Seq(items) => items.as_slice(),
            NodeKind::Map(entries) => {
                let before = if i == 0 { keys_before } else { &[] };
                root_map_flows(entries, before, diags)
            }
            // A piece that continues a document's root mapping holds its
            // next entries: nothing else can stand there in the document.
            _ if root.is_null() && (i > 0 || keys_before.is_empty()) => &[],
            _ => {
                err(
                    diags,
                    root.span,
                    "expected a list of flows (or `flows:` with a list)",
                );
                continue;
            }
        };
        for n in list {
            if let Some(f) = flow_node(n, diags) {
                out.push(f);
            }
        }
    }
    out
}

/// The `flows:` list of a root mapping. Its keys are only `flows` and
/// `dns`, each once: a misspelt or repeated key would otherwise make a
/// policy's tests vanish without a word.
fn root_map_flows<'n>(
    entries: &'n [(Node, Node)],
    keys_before: &[String],
    diags: &mut Vec<Diagnostic>,
) -> &'n [Node] {
    const KEYS: &[&str] = &["flows", "dns"];
    let mut seen: Vec<&str> = keys_before.iter().map(String::as_str).collect();
    let mut list: &[Node] = &[];
    for (k, v) in entries {
        let name = scalar(k).unwrap_or("");
        if !KEYS.contains(&name) {
            let d = unknown(
                k.span,
                format!("unknown key `{name}` in a flows file"),
                name,
                KEYS,
            )
            .with_label("only `flows` and `dns` are read here");
            diags.push(d);
            continue;
        }
        if seen.contains(&name) {
            err(
                diags,
                k.span,
                format!("`{name}` is given twice in this document"),
            );
            continue;
        }
        seen.push(name);
        if name == "flows" {
            match &v.kind {
                NodeKind::Seq(items) => list = items.as_slice(),
                _ if v.is_null() => {}
                _ => err(diags, v.span, "`flows` is a list of flows"),
            }
        }
    }
    list
}

/// A key that is not one of `known`, with the nearest as a suggestion.
fn unknown(span: Span, msg: String, name: &str, known: &[&str]) -> Diagnostic {
    let d = Diagnostic::error(Code::FlowSyntax, span, msg);
    match policy_lang::suggest::did_you_mean(name, known) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d,
    }
}

fn flow_node(n: &Node, diags: &mut Vec<Diagnostic>) -> Option<Flow> {
    let NodeKind::Map(entries) = &n.kind else {
        err(
            diags,
            n.span,
            "a flow is an object with `from`, `to`, `port` and `protocol`",
        );
        return None;
    };
    const FIELDS: &[&str] = &[
        "from", "to", "port", "protocol", "expect", "http", "kafka", "dns", "name",
    ];
    for (k, _) in entries {
        let name = scalar(k).unwrap_or("");
        if !FIELDS.contains(&name) {
            diags.push(unknown(
                k.span,
                format!("unknown flow field `{name}`"),
                name,
                FIELDS,
            ));
        }
    }
    let peer = |field: &str, diags: &mut Vec<Diagnostic>| -> Option<PeerRef> {
        let Some(v) = n.get(field) else {
            err(diags, n.span, format!("flow has no `{field}`"));
            return None;
        };
        let text = scalar(v).unwrap_or("");
        PeerRef::parse(text).map_err(|m| err(diags, v.span, m)).ok()
    };
    let from = peer("from", diags);
    let to = peer("to", diags);
    let mut protocol = match n.get("protocol") {
        Some(p) => match scalar(p).and_then(protocol_number) {
            Some(x) => Some(x),
            None => {
                err(
                    diags,
                    p.span,
                    "protocol must be TCP, UDP, SCTP, ICMP, ICMPv6 or a number",
                );
                None
            }
        },
        None => None,
    };
    let port = match n.get("port") {
        Some(p) => {
            let text = scalar(p).unwrap_or("");
            let (num, proto) = match text.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (text, None),
            };
            if let Some(pr) = proto {
                match protocol_number(pr) {
                    Some(x) => protocol = Some(x),
                    None => err(diags, p.span, format!("unknown protocol `{pr}`")),
                }
            }
            match num.parse::<u16>() {
                Ok(v) => Some(v),
                Err(_) => {
                    err(
                        diags,
                        p.span,
                        format!("port `{num}` is not a number in 0-65535"),
                    );
                    None
                }
            }
        }
        None => Some(0),
    };
    let expect = match n.get("expect") {
        None => None,
        Some(e) => match scalar(e) {
            Some("allowed" | "allow") => Some(Verdict::Allowed),
            Some("denied" | "deny" | "dropped") => Some(Verdict::Denied),
            _ => {
                err(diags, e.span, "expect must be `allowed` or `denied`");
                return None;
            }
        },
    };
    let l7 = l7_request(n, diags)?;
    Some(Flow {
        from: from?,
        to: to?,
        port: port?,
        protocol: protocol.unwrap_or(6),
        expect,
        loc: Loc(n.span),
        recorded: None,
        l7,
        replay: None,
        service: None,
        expanded: None,
    })
}

/// The `http`, `kafka` or `dns` section of a flow; `Some(None)` when there
/// is none, `None` when it is malformed (reported).
fn l7_request(n: &Node, diags: &mut Vec<Diagnostic>) -> Option<Option<compiler::l7::Request>> {
    use compiler::l7::Request;
    let sections: Vec<(&str, &Node)> = ["http", "kafka", "dns"]
        .iter()
        .filter_map(|k| n.get(k).map(|v| (*k, v)))
        .collect();
    let Some(&(kind, sec)) = sections.first() else {
        return Some(None);
    };
    if sections.len() > 1 {
        err(
            diags,
            sec.span,
            "a flow carries one request: `http`, `kafka` or `dns`",
        );
        return None;
    }
    let NodeKind::Map(entries) = &sec.kind else {
        err(diags, sec.span, format!("`{kind}` is an object"));
        return None;
    };
    let allowed: &[&str] = match kind {
        "http" => &["method", "path", "host", "headers"],
        "kafka" => &["api_key", "api_version", "client_id", "topic"],
        _ => &["query"],
    };
    let mut ok = true;
    for (k, _) in entries {
        let name = scalar(k).unwrap_or("");
        if !allowed.contains(&name) {
            let mut d = Diagnostic::error(
                Code::FlowSyntax,
                k.span,
                format!("unknown `{kind}` field `{name}`"),
            );
            d = d.with_help(format!("`{kind}` has {}", allowed.join(", ")));
            diags.push(d);
            ok = false;
        }
    }
    let text = |f: &str| sec.get(f).and_then(scalar).unwrap_or("").to_owned();
    let req = match kind {
        "http" => {
            let mut headers = Vec::new();
            if let Some(h) = sec.get("headers") {
                match &h.kind {
                    NodeKind::Map(hs) => {
                        for (k, v) in hs {
                            headers.push((
                                scalar(k).unwrap_or("").to_owned(),
                                scalar(v).unwrap_or("").to_owned(),
                            ));
                        }
                    }
                    _ => {
                        err(diags, h.span, "`headers` maps names to values");
                        ok = false;
                    }
                }
            }
            let method = if text("method").is_empty() {
                "GET".to_owned()
            } else {
                text("method")
            };
            // Judged as the proxy judges it: after path normalization.
            let path = if text("path").is_empty() {
                "/".to_owned()
            } else {
                compiler::l7::normalize_http_path(&text("path"))
            };
            Request::Http {
                method,
                path,
                host: text("host"),
                headers,
            }
        }
        "kafka" => {
            let key_text = text("api_key");
            let api_key = key_text.parse::<u16>().ok().or_else(|| {
                policy_lang::validate::KAFKA_API_KEYS
                    .iter()
                    .position(|k| k.eq_ignore_ascii_case(&key_text))
                    .map(|i| i as u16)
            });
            let Some(api_key) = api_key else {
                err(
                    diags,
                    sec.span,
                    format!(
                        "kafka `api_key` `{key_text}` is neither a number nor a known API key name"
                    ),
                );
                return None;
            };
            let api_version = if text("api_version").is_empty() {
                Some(0)
            } else {
                text("api_version").parse().ok()
            };
            let Some(api_version) = api_version else {
                err(diags, sec.span, "kafka `api_version` is a number");
                return None;
            };
            Request::Kafka {
                api_key,
                api_version,
                client_id: text("client_id"),
                topic: text("topic"),
            }
        }
        _ => {
            let query = text("query");
            if query.is_empty() {
                err(diags, sec.span, "`dns` needs a `query` name");
                return None;
            }
            Request::Dns { query }
        }
    };
    ok.then_some(Some(req))
}

/// The request of a Hubble L7 record (`l7.http`, `l7.kafka`, `l7.dns`).
/// A JSON number that must be a whole number in `0..=max`.
fn json_uint(v: &serde_json::Value, what: &str, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!("{what} {v} is not a whole number from 0 to {max}")),
    }
}

fn hubble_request(l7: &serde_json::Value) -> Result<Option<compiler::l7::Request>, String> {
    use compiler::l7::Request;
    let s =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    if let Some(h) = l7.get("http") {
        // Hubble records the URL: scheme://host/path?query.
        let url = s(h, "url");
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let headers = h
            .get("headers")
            .and_then(|x| x.as_array())
            .map(|a| a.iter().map(|kv| (s(kv, "key"), s(kv, "value"))).collect())
            .unwrap_or_default();
        return Ok(Some(Request::Http {
            method: s(h, "method"),
            path: compiler::l7::normalize_http_path(path),
            host: host.to_owned(),
            headers,
        }));
    }
    if let Some(d) = l7.get("dns") {
        return Ok(Some(Request::Dns {
            query: s(d, "query"),
        }));
    }
    if let Some(k) = l7.get("kafka") {
        let Some(key) = k.get("api_key") else {
            return Err("Hubble Kafka record without `api_key`".to_owned());
        };
        let api_key = match key.as_str() {
            Some(name) => policy_lang::validate::KAFKA_API_KEYS
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
                .map(|i| i as u16)
                .ok_or_else(|| format!("Kafka `api_key` `{name}` is not a known API key"))?,
            None => json_uint(key, "Kafka `api_key`", u64::from(u16::MAX))? as u16,
        };
        let api_version = match k.get("api_version") {
            None => 0,
            Some(v) => json_uint(v, "Kafka `api_version`", u64::from(u16::MAX))? as u16,
        };
        return Ok(Some(Request::Kafka {
            api_key,
            api_version,
            client_id: s(k, "client_id"),
            topic: s(k, "topic"),
        }));
    }
    Ok(None)
}

/// Reads `hubble observe -o json` output: one JSON object per line, each a
/// flow (or `{"flow": {...}}`). Lines that are not L3/L4 flows are skipped.
pub fn parse_hubble(
    text: &str,
    file: FileId,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Flow> {
    let _ = sources;
    parse_hubble_at(text, file, 1, diags)
}

/// [`parse_hubble`] for a piece of a file whose first line is `first_line`.
pub fn parse_hubble_at(
    text: &str,
    file: FileId,
    first_line: u32,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Flow> {
    let mut out = Vec::new();
    let mut offset = 0u32;
    for (i, raw) in text.split('\n').enumerate() {
        // CRLF input: the `\r` is not part of the line, but it is part of
        // the offsets of every line after it.
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let span = Span {
            file,
            start: offset,
            end: offset + line.len() as u32,
            line: first_line + i as u32,
            col: 1,
        };
        offset += raw.len() as u32 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                err(diags, span, format!("not a JSON object: {e}"));
                continue;
            }
        };
        let f = v.get("flow").unwrap_or(&v);
        // A side names its pod when Hubble knew it; otherwise (or when
        // the record has no endpoint object at all) its address.
        let peer = |side: &str, ipkey: &str| -> Option<PeerRef> {
            let ep = f.get(side);
            match (
                ep.and_then(|e| e.get("namespace")).and_then(|x| x.as_str()),
                ep.and_then(|e| e.get("pod_name")).and_then(|x| x.as_str()),
            ) {
                (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => {
                    Some(PeerRef::Pod(format!("{ns}/{pod}")))
                }
                _ => f
                    .get("IP")?
                    .get(ipkey)?
                    .as_str()?
                    .parse()
                    .ok()
                    .map(|ip| PeerRef::Ip(canonical_ip(ip))),
            }
        };
        let l4 = f.get("l4");
        let (protocol, port, field, max) = match l4 {
            Some(l4) if l4.get("TCP").is_some() => (
                6,
                l4["TCP"].get("destination_port"),
                "destination_port",
                65535,
            ),
            Some(l4) if l4.get("UDP").is_some() => (
                17,
                l4["UDP"].get("destination_port"),
                "destination_port",
                65535,
            ),
            Some(l4) if l4.get("SCTP").is_some() => (
                132,
                l4["SCTP"].get("destination_port"),
                "destination_port",
                65535,
            ),
            Some(l4) if l4.get("ICMPv4").is_some() => {
                (1, l4["ICMPv4"].get("type"), "ICMP type", 255)
            }
            Some(l4) if l4.get("ICMPv6").is_some() => {
                (58, l4["ICMPv6"].get("type"), "ICMP type", 255)
            }
            _ => continue,
        };
        // Out of range or not a whole number is an error, never a port
        // the flow did not have.
        let port = match port.map(|p| json_uint(p, field, max)) {
            None => 0,
            Some(Ok(n)) => n as u16,
            Some(Err(e)) => {
                err(diags, span, e);
                continue;
            }
        };
        let (Some(from), Some(to)) = (peer("source", "source"), peer("destination", "destination"))
        else {
            err(
                diags,
                span,
                "Hubble flow has no source or destination address",
            );
            continue;
        };
        let recorded = match f.get("verdict").and_then(|v| v.as_str()) {
            // AUDIT passed the packet: a policy in audit mode reported it.
            Some("FORWARDED") | Some("REDIRECTED") | Some("AUDIT") => Some(Verdict::Allowed),
            Some("DROPPED") => Some(Verdict::Denied),
            _ => None,
        };
        // L7 records: requests are judged by the port's L7 policy;
        // responses answer a request already replayed.
        let response = f
            .get("l7")
            .and_then(|l7| l7.get("type"))
            .and_then(|t| t.as_str())
            == Some("RESPONSE");
        let l7 = match f.get("l7") {
            Some(_) if response => None,
            Some(l7) => match hubble_request(l7) {
                Ok(Some(r)) => Some(r),
                Ok(None) => {
                    err(
                        diags,
                        span,
                        "Hubble L7 record with no http, kafka or dns request",
                    );
                    continue;
                }
                Err(e) => {
                    err(diags, span, e);
                    continue;
                }
            },
            None => None,
        };
        let replay = Replay {
            not_judged: if response {
                Some(NotJudged::Reply)
            } else {
                not_judged(f)
            },
            labels: [labels_of(f.get("source")), labels_of(f.get("destination"))],
            policies: recorded_policies(f),
            stood_in: Vec::new(),
        };
        out.push(Flow {
            l7,
            from,
            to,
            port,
            protocol,
            expect: None,
            loc: Loc(span),
            recorded,
            replay: Some(Box::new(replay)),
            service: None,
            expanded: None,
        });
    }
    out
}

/// DNS answers in recorded Hubble flows (`l7.type: RESPONSE` records with
/// a `dns` section and rcode 0): the names and addresses the DNS proxies
/// saw, for toFQDNs. Lines that are not such records are ignored here
/// (`parse_hubble` reports malformed ones). Answers hold for the whole
/// replay, as if every lookup came before the connections.
pub fn hubble_dns_answers(text: &str) -> Vec<(String, Vec<std::net::IpAddr>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(answer) = hubble_dns_answer(line) {
            merge_answer(&mut out, answer);
        }
    }
    out
}

/// The DNS answer one Hubble line records, if it is one.
pub fn hubble_dns_answer(line: &str) -> Option<(String, Vec<std::net::IpAddr>)> {
    // Most lines are not DNS responses: skip them before parsing JSON.
    if !line.contains("\"dns\"") {
        return None;
    }
    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
    let f = v.get("flow").unwrap_or(&v);
    let l7 = f.get("l7")?;
    if l7.get("type").and_then(|t| t.as_str()) != Some("RESPONSE") {
        return None;
    }
    let dns = l7.get("dns")?;
    if dns.get("rcode").and_then(|r| r.as_u64()).unwrap_or(0) != 0 {
        return None;
    }
    let name = dns.get("query").and_then(|q| q.as_str())?;
    let ips: Vec<std::net::IpAddr> = dns
        .get("ips")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_str()?.parse().ok().map(canonical_ip))
                .collect()
        })
        .unwrap_or_default();
    (!ips.is_empty()).then(|| (name.to_owned(), ips))
}

/// Adds one name's addresses to a list of answers, once each.
pub fn merge_answer(
    out: &mut Vec<(String, Vec<std::net::IpAddr>)>,
    (name, ips): (String, Vec<std::net::IpAddr>),
) {
    match out.iter_mut().find(|(n, _)| *n == name) {
        Some((_, known)) => {
            for ip in ips {
                if !known.contains(&ip) {
                    known.push(ip);
                }
            }
        }
        None => out.push((name, ips)),
    }
}

/// The names a flow may give a pod by: `namespace/pod`, or
/// `namespace/workload` for a workload with exactly one endpoint (the
/// endpoint its template made, or its one running pod); and the pods
/// that are not endpoints, to say why a flow cannot name them.
pub struct PodNames {
    pods: std::collections::HashSet<String>,
    /// Every endpoint pod: name, namespace, labels (for selectors).
    all: Vec<(String, String, std::collections::BTreeMap<String, String>)>,
    /// `namespace/workload` to its pods' names.
    workloads: std::collections::HashMap<String, Vec<String>>,
    left_out: std::collections::HashMap<String, String>,
}

impl PodNames {
    pub fn new(inv: &Inventory) -> Self {
        let mut workloads: std::collections::HashMap<String, Vec<String>> = Default::default();
        for p in &inv.pods {
            if let Some(w) = &p.workload {
                workloads
                    .entry(format!("{}/{}", p.namespace, w.name))
                    .or_default()
                    .push(p.qualified_name());
            }
        }
        PodNames {
            pods: inv.pods.iter().map(|p| p.qualified_name()).collect(),
            all: inv
                .pods
                .iter()
                .map(|p| (p.qualified_name(), p.namespace.clone(), p.labels.clone()))
                .collect(),
            workloads,
            left_out: inv
                .left_out
                .iter()
                .map(|l| (l.pod.clone(), l.reason.to_string()))
                .collect(),
        }
    }

    /// The pods a name stands for when it names several: a workload with
    /// more than one, or a label selector (`ns=shop,app=web`; `ns` is the
    /// namespace). `None` for a name of one pod (or of none).
    pub fn several(&self, name: &str) -> Option<Result<Vec<String>, String>> {
        if let Some(sel) = name.strip_prefix(SELECTOR_PREFIX) {
            let mut want = Vec::new();
            for pair in sel.split(',') {
                match pair.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => want.push((k.trim(), v.trim())),
                    _ => {
                        return Some(Err(format!(
                            "`{sel}`: a selector is `key=value` pairs separated by commas"
                        )))
                    }
                }
            }
            let pods: Vec<String> = self
                .all
                .iter()
                .filter(|(_, ns, labels)| {
                    want.iter().all(|&(k, v)| match k {
                        "ns" | "namespace" => ns == v,
                        _ => labels.get(k).map(String::as_str) == Some(v),
                    })
                })
                .map(|(n, _, _)| n.clone())
                .collect();
            return Some(if pods.is_empty() {
                Err(format!(
                    "the selector `{sel}` matches no pod of the inventory"
                ))
            } else {
                Ok(pods)
            });
        }
        if self.pods.contains(name) {
            return None;
        }
        match self.workloads.get(name) {
            Some(pods) if pods.len() > 1 => Some(Ok(pods.clone())),
            _ => None,
        }
    }

    /// Whether the name is a pod's (or a one-pod workload's).
    pub fn knows(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// The pod a name means, or why it means none (a message and a help).
    pub fn resolve(&self, name: &str) -> Result<String, (String, String)> {
        if self.pods.contains(name) {
            return Ok(name.to_owned());
        }
        if let Some(why) = self.left_out.get(name) {
            return Err((
                format!("pod `{name}` is not an endpoint: {why}"),
                "Cilium enforces nothing for it, so no flow of it can be judged".into(),
            ));
        }
        match self.workloads.get(name).map(Vec::as_slice) {
            Some([one]) => Ok(one.clone()),
            Some(many) => Err((
                format!("`{name}` is a workload with {} pods", many.len()),
                format!("name one of them, e.g. `{}`", many[0]),
            )),
            None => {
                let names: Vec<&str> = self
                    .all
                    .iter()
                    .map(|(n, _, _)| n.as_str())
                    .chain(self.workloads.keys().map(String::as_str))
                    .collect();
                let help = match policy_lang::suggest::did_you_mean(name, &names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name pods as namespace/pod, as `kubectl get pods -A` lists them, a workload as namespace/name, or pods by labels as ns=NS,key=value".into(),
                };
                Err((format!("no pod `{name}` in the inventory"), help))
            }
        }
    }
}

/// The flows `f` stands for when a peer names several (a workload with
/// several pods, a label selector, a CIDR): one per combination, each
/// with the same expectation and marked with the name it came from.
/// `None` when each side is one peer.
pub fn expand_peers(
    f: &Flow,
    pods: &PodNames,
    c: &compiler::compile::Compiled,
) -> Option<Result<Vec<Flow>, String>> {
    let side = |p: &PeerRef| match p {
        PeerRef::Pod(n) => match n.strip_prefix(CIDR_PREFIX) {
            Some(cidr) => Some(cidr_peers(cidr, c)),
            None => pods
                .several(n)
                .map(|r| r.map(|v| v.into_iter().map(PeerRef::Pod).collect())),
        },
        _ => None,
    };
    let (from, to) = (side(&f.from), side(&f.to));
    if from.is_none() && to.is_none() {
        return None;
    }
    let group = |r: &Option<Result<Vec<PeerRef>, String>>, p: &PeerRef| {
        r.as_ref().and_then(|r| r.as_ref().ok()).map(|v| Group {
            name: p.to_string(),
            count: v.len(),
        })
    };
    let expanded = Box::new(Expanded {
        from: group(&from, &f.from),
        to: group(&to, &f.to),
    });
    let pick = |r: Option<Result<Vec<PeerRef>, String>>, p: &PeerRef| match r {
        None => Ok(vec![p.clone()]),
        Some(r) => r,
    };
    let (froms, tos) = match (pick(from, &f.from), pick(to, &f.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
    };
    if froms.len().saturating_mul(tos.len()) > MAX_EXPANSION {
        return Some(Err(format!(
            "these peers name {} × {} peers, more than {MAX_EXPANSION} flows: narrow them",
            froms.len(),
            tos.len()
        )));
    }
    let mut out = Vec::with_capacity(froms.len() * tos.len());
    for a in &froms {
        for b in &tos {
            let mut g = f.clone();
            g.from = a.clone();
            g.to = b.clone();
            g.expanded = Some(expanded.clone());
            out.push(g);
        }
    }
    Some(Ok(out))
}

/// An address of each part of a CIDR that the datapath tells apart: the
/// prefixes of the ipcache (endpoints, nodes, policy CIDRs) cut it into
/// ranges of one identity each, and each endpoint is its own peer.
fn cidr_peers(text: &str, c: &compiler::compile::Compiled) -> Result<Vec<PeerRef>, String> {
    let cidr = policy_lang::ir::Cidr::parse(text)?;
    let v4 = cidr.addr.is_ipv4();
    let width = if v4 { 32 } else { 128 };
    let range = |x: &policy_lang::ir::Cidr| {
        let lo = x.network_bits();
        let host = width - u32::from(x.prefix_len);
        let span = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        (lo, lo | span)
    };
    let (lo, hi) = range(&cidr);
    let mut starts = vec![lo];
    for e in &c.ipcache {
        if e.cidr.addr.is_ipv4() != v4 {
            continue;
        }
        let (a, b) = range(&e.cidr);
        if b < lo || a > hi {
            continue;
        }
        starts.push(a.max(lo));
        if b < hi {
            starts.push(b + 1);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let addr = |n: u128| -> IpAddr {
        if v4 {
            IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(n))
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for n in starts {
        let ip = addr(n);
        let key = match c.endpoint_by_ip(ip) {
            Some(ep) => ep.name.clone(),
            None => format!("identity {}", c.identity_of_ip(ip, None)),
        };
        if seen.insert(key) {
            // A pod's address is written as the pod, as flows name it.
            out.push(match c.endpoint_by_ip(ip) {
                Some(ep) if !ep.host => PeerRef::Pod(ep.name.clone()),
                _ => PeerRef::Ip(ip),
            });
        }
    }
    Ok(out)
}

/// Checks that pods named by flows exist in the inventory, and rewrites a
/// workload's name to its pod's.
pub fn check_peers(flows: &mut [Flow], pods: &PodNames, diags: &mut Vec<Diagnostic>) {
    for f in flows {
        let loc = f.loc.0;
        for p in [&mut f.from, &mut f.to] {
            if let PeerRef::Pod(name) = p {
                match pods.resolve(name) {
                    Ok(pod) => *name = pod,
                    Err((msg, help)) => {
                        diags.push(Diagnostic::error(Code::UnknownPeer, loc, msg).with_help(help))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod hubble_tests {
    use super::*;

    fn line(l4: &str) -> String {
        format!(
            r#"{{"flow":{{"verdict":"FORWARDED","IP":{{"source":"10.0.0.1","destination":"10.0.0.2"}},"l4":{l4}}}}}"#
        )
    }

    fn parse(text: &str) -> (Vec<Flow>, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let f = parse_hubble(text, FileId(0), &SourceMap::new(), &mut d);
        (f, d)
    }

    #[test]
    fn out_of_range_numbers_are_errors_not_other_ports() {
        for bad in ["65616", "-1", "\"80\"", "80.5"] {
            let (f, d) = parse(&line(&format!(r#"{{"TCP":{{"destination_port":{bad}}}}}"#)));
            assert!(
                f.is_empty(),
                "{bad} judged as port {:?}",
                f.first().map(|x| x.port)
            );
            assert_eq!(d.len(), 1, "{bad}");
            assert!(
                d[0].message.contains("destination_port"),
                "{}",
                d[0].message
            );
        }
        let (f, d) = parse(&line(r#"{"TCP":{"destination_port":80}}"#));
        assert!(d.is_empty());
        assert_eq!(f[0].port, 80);
        let kafka = r#"{"flow":{"IP":{"source":"10.0.0.1","destination":"10.0.0.2"},"l4":{"TCP":{"destination_port":9092}},"l7":{"type":"REQUEST","kafka":{"api_key":65537}}}}"#;
        let (f, d) = parse(kafka);
        assert!(f.is_empty() && d.len() == 1, "{d:?}");
    }

    #[test]
    fn crlf_lines_keep_their_spans() {
        let a = line(r#"{"TCP":{"destination_port":80}}"#);
        let bad = line(r#"{"TCP":{"destination_port":-1}}"#);
        let text = format!("{a}\r\n{a}\r\n{bad}\r\n");
        let (_, d) = parse(&text);
        let span = d[0].span.expect("located");
        assert_eq!(span.line, 3);
        assert_eq!(&text[span.start as usize..span.end as usize], bad);
    }

    #[test]
    fn records_without_endpoint_objects_use_the_addresses() {
        let (f, d) = parse(&line(r#"{"UDP":{"destination_port":53}}"#));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(f[0].from, PeerRef::Ip("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        assert_eq!(
            PeerRef::parse("::ffff:10.0.0.11"),
            Ok(PeerRef::Ip("10.0.0.11".parse().expect("ip")))
        );
        let text =
            line(r#"{"TCP":{"destination_port":80}}"#).replace("10.0.0.2", "::ffff:10.0.0.2");
        let (f, _) = parse(&text);
        assert_eq!(f[0].to, PeerRef::Ip("10.0.0.2".parse().expect("ip")));
    }

    #[test]
    fn correlated_policies_are_read_from_fields_or_rule_labels() {
        let text = r#"{"flow":{"IP":{"source":"10.0.0.1","destination":"10.0.0.2"},"l4":{"TCP":{"destination_port":80,"flags":{"SYN":true}}},"verdict":"FORWARDED","egress_allowed_by":[{"name":"out","namespace":"a","kind":"CiliumNetworkPolicy"}],"ingress_allowed_by":[{"labels":["k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy","k8s:io.cilium.k8s.policy.name=base"]},{"kind":"NetworkPolicy"}]}}"#;
        let (f, d) = parse(text);
        assert!(d.is_empty(), "{d:?}");
        let r = f[0].replay.as_ref().expect("replay");
        // A policy without a name (here the second) cannot be compared.
        assert_eq!(r.policies.len(), 2, "{:?}", r.policies);
        assert_eq!(r.policies[0].to_string(), "CiliumNetworkPolicy a/out");
        assert_eq!(r.policies[0].direction, Direction::Egress);
        let base = &r.policies[1];
        assert_eq!(base.to_string(), "CiliumClusterwideNetworkPolicy base");
        assert!(base.names("CiliumClusterwideNetworkPolicy base"));
        assert!(!base.names("CiliumNetworkPolicy base"));
        // Without a kind, the name alone decides.
        let bare = RecordedPolicy {
            kind: None,
            ..r.policies[0].clone()
        };
        assert!(bare.names("NetworkPolicy a/out"));
        assert!(!bare.names("NetworkPolicy b/out"));
    }

    #[test]
    fn peers_are_named_as_kubectl_and_cidrs_write_them() {
        assert_eq!(
            PeerRef::parse("shop/service/web"),
            Ok(PeerRef::Pod("svc:shop/web".into()))
        );
        assert_eq!(
            PeerRef::parse("shop/svc/web"),
            Ok(PeerRef::Pod("svc:shop/web".into()))
        );
        assert_eq!(
            PeerRef::parse("10.0.0.0/8"),
            Ok(PeerRef::Pod("cidr:10.0.0.0/8".into()))
        );
        assert_eq!(
            PeerRef::parse("shop/web-0"),
            Ok(PeerRef::Pod("shop/web-0".into()))
        );
        // Written back as the user wrote them.
        assert_eq!(
            PeerRef::Pod("cidr:10.0.0.0/8".into()).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(PeerRef::Pod("sel:app=web".into()).to_string(), "app=web");
    }
}
