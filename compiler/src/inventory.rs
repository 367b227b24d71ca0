//! The cluster as policies see it: namespaces, pods, nodes and services.
//!
//! Read from Kubernetes YAML exactly as `kubectl get
//! pods,namespaces,nodes,services -A -o yaml` prints it (a `List`, or
//! multi-document YAML). Only the fields that matter to policy are read;
//! everything else in those objects is ignored, and objects of other kinds
//! are skipped.

use policy_lang::diag::{Code, Diagnostic};
use policy_lang::source::{FileId, Loc, SourceMap, Span};
use policy_lang::yaml::{self, Node, NodeKind, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Inventory {
    /// The local cluster's name (`io.cilium.k8s.policy.cluster`).
    pub cluster: String,
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<NodeInfo>,
    pub services: Vec<ServiceInfo>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    pub ports: Vec<ContainerPort>,
    /// Where the pod's name is written.
    #[serde(skip)]
    pub loc: Loc,
    /// Where each of `ips` is written.
    #[serde(skip)]
    pub ip_locs: Vec<Loc>,
}

impl Pod {
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    /// IP protocol number (6, 17 or 132).
    pub protocol: u8,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
    #[serde(skip)]
    pub loc: Loc,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub cluster_ips: Vec<IpAddr>,
}

impl Inventory {
    /// An inventory's namespace, or an implied one for a namespace that only
    /// pods mention (Kubernetes labels every namespace with its name).
    pub fn namespace(&self, name: &str) -> Namespace {
        self.namespaces
            .get(name)
            .cloned()
            .unwrap_or_else(|| Namespace {
                name: name.to_owned(),
                labels: BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    name.to_owned(),
                )]),
            })
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

/// Reads inventory files into `sources`; problems go to `diags`.
pub fn load(paths: &[&Path], sources: &mut SourceMap, diags: &mut Vec<Diagnostic>) -> Inventory {
    load_limited(paths, policy_lang::DEFAULT_MAX_FILE_SIZE, sources, diags)
}

/// [`load`] with a size limit per file (`--max-file-size`); `-` is stdin.
pub fn load_limited(
    paths: &[&Path],
    limit: u64,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Inventory {
    let mut inv = Inventory {
        cluster: "default".to_owned(),
        ..Inventory::default()
    };
    for path in paths {
        match policy_lang::read_text(path, limit) {
            Ok(text) => {
                let id = sources.add(path.display().to_string(), text);
                let text = sources.get(id).text.clone();
                parse_into(&mut inv, &text, id, diags);
            }
            Err(d) => diags.push(*d),
        }
    }
    check(&inv, diags);
    inv
}

/// Parses one inventory text (for tests and stdin).
pub fn parse_str(
    name: &str,
    text: &str,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Inventory {
    let mut inv = Inventory {
        cluster: "default".to_owned(),
        ..Inventory::default()
    };
    let id = sources.add(name, text);
    parse_into(&mut inv, text, id, diags);
    check(&inv, diags);
    inv
}

fn parse_into(inv: &mut Inventory, text: &str, file: FileId, diags: &mut Vec<Diagnostic>) {
    let result = yaml::parse_stream(text, file, &yaml::Limits::default(), |e| match e {
        yaml::Emitted::ListItem(node) => object(inv, &node, diags),
        yaml::Emitted::Document { root, .. } => object(inv, &root, diags),
    });
    if let Err(e) = result {
        let mut d = policy_lang::yaml_error(e);
        d.message = format!("inventory: {}", d.message);
        diags.push(d);
    }
}

fn str_at<'a>(node: &'a Node, path: &[&str]) -> Option<&'a str> {
    let mut n = node;
    for p in path {
        n = n.get(p)?;
    }
    match n.as_scalar()?.resolve() {
        Value::Str(s) => Some(s),
        _ => Some(n.as_scalar()?.text.as_str()),
    }
}

/// The scalar at `path` as the Kubernetes decoder reads it (YAML 1.1:
/// `yes` is a boolean, `0x50` an integer).
fn value_at<'a>(node: &'a Node, path: &[&str]) -> Option<(Value<'a>, &'a Node)> {
    let mut n = node;
    for p in path {
        n = n.get(p)?;
    }
    Some((n.as_scalar()?.resolve(), n))
}

fn bool_at(node: &Node, path: &[&str]) -> Option<bool> {
    match value_at(node, path)? {
        (Value::Bool(b), _) => Some(b),
        _ => None,
    }
}

/// A string map (labels, selectors) as Kubernetes reads it: a value the
/// decoder reads as another type (`enabled: true`, `tier: 1`, `x: y`) is
/// an error there (a `map[string]string`), and here.
fn map_at(node: &Node, path: &[&str], diags: &mut Vec<Diagnostic>) -> BTreeMap<String, String> {
    let mut n = node;
    for p in path {
        match n.get(p) {
            Some(x) => n = x,
            None => return BTreeMap::new(),
        }
    }
    let mut out = BTreeMap::new();
    if let NodeKind::Map(entries) = &n.kind {
        for (k, v) in entries {
            let (Some(ks), Some(vs)) = (k.as_scalar(), v.as_scalar()) else {
                continue;
            };
            match vs.resolve() {
                Value::Str(text) => {
                    out.insert(ks.text.clone(), text.to_owned());
                }
                // A null decodes into an empty string.
                Value::Null => {
                    out.insert(ks.text.clone(), String::new());
                }
                other => bad(
                    diags,
                    v.span,
                    format!(
                        "`{}: {}` is {} to Kubernetes, which wants a string here: quote it",
                        ks.text,
                        vs.text,
                        match other {
                            Value::Int(_) => "an integer",
                            Value::Bool(_) => "a boolean",
                            _ => "a number",
                        }
                    ),
                ),
            }
        }
    }
    out
}

fn seq_at<'a>(node: &'a Node, path: &[&str]) -> &'a [Node] {
    let mut n = node;
    for p in path {
        match n.get(p) {
            Some(x) => n = x,
            None => return &[],
        }
    }
    match &n.kind {
        NodeKind::Seq(items) => items,
        _ => &[],
    }
}

fn bad(diags: &mut Vec<Diagnostic>, span: Span, msg: String) {
    diags.push(Diagnostic::error(Code::InventoryObject, span, msg));
}

fn object(inv: &mut Inventory, node: &Node, diags: &mut Vec<Diagnostic>) {
    if node.is_null() {
        return;
    }
    let kind = str_at(node, &["kind"]).unwrap_or("");
    let name = str_at(node, &["metadata", "name"]);
    let needs_name = matches!(kind, "Pod" | "Namespace" | "Node" | "Service");
    let Some(name) = name.map(str::to_owned) else {
        if needs_name {
            bad(diags, node.span, format!("{kind} has no `metadata.name`"));
        }
        return;
    };
    let namespace = str_at(node, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_owned();
    let labels = map_at(node, &["metadata", "labels"], diags);
    match kind {
        "Namespace" => {
            let mut labels = labels;
            labels
                .entry("kubernetes.io/metadata.name".to_owned())
                .or_insert_with(|| name.clone());
            inv.namespaces
                .insert(name.clone(), Namespace { name, labels });
        }
        "Pod" => {
            let mut ips = Vec::new();
            let mut ip_locs = Vec::new();
            let ip_nodes: Vec<&Node> = seq_at(node, &["status", "podIPs"])
                .iter()
                .filter_map(|n| n.get("ip"))
                .chain(node.get("status").and_then(|s| s.get("podIP")))
                .collect();
            for ip_scalar in ip_nodes {
                let text = ip_scalar.as_scalar().map_or("", |s| s.text.as_str());
                let before = ips.len();
                parse_ip(text, ip_scalar.span, &mut ips, diags);
                if ips.len() > before {
                    ip_locs.push(Loc(ip_scalar.span));
                }
            }
            let name_span = node
                .get("metadata")
                .and_then(|m| m.get("name"))
                .map_or(node.span, |n| n.span);
            let mut ports = Vec::new();
            for c in seq_at(node, &["spec", "containers"]) {
                for p in seq_at(c, &["ports"]) {
                    let port = match value_at(p, &["containerPort"]) {
                        Some((Value::Int(i), _)) => u16::try_from(i).ok().filter(|&x| x > 0),
                        _ => None,
                    };
                    let Some(port) = port else {
                        bad(
                            diags,
                            p.span,
                            "container port has no valid `containerPort`".into(),
                        );
                        continue;
                    };
                    let protocol = match str_at(p, &["protocol"]).unwrap_or("TCP") {
                        "UDP" => 17,
                        "SCTP" => 132,
                        _ => 6,
                    };
                    ports.push(ContainerPort {
                        name: str_at(p, &["name"]).map(str::to_ascii_lowercase),
                        port,
                        protocol,
                    });
                }
            }
            inv.pods.push(Pod {
                name,
                namespace,
                labels,
                service_account: str_at(node, &["spec", "serviceAccountName"])
                    .or_else(|| str_at(node, &["spec", "serviceAccount"]))
                    .unwrap_or("default")
                    .to_owned(),
                node: str_at(node, &["spec", "nodeName"]).map(str::to_owned),
                host_network: bool_at(node, &["spec", "hostNetwork"]).unwrap_or(false),
                ips,
                ports,
                loc: Loc(name_span),
                ip_locs,
            });
        }
        "Node" => {
            let mut ips = Vec::new();
            for a in seq_at(node, &["status", "addresses"]) {
                if matches!(str_at(a, &["type"]), Some("InternalIP" | "ExternalIP")) {
                    if let Some(ip) = str_at(a, &["address"]) {
                        parse_ip(ip, a.span, &mut ips, diags);
                    }
                }
            }
            inv.nodes.push(NodeInfo {
                name,
                labels,
                ips,
                loc: Loc(node.span),
            });
        }
        "Service" => {
            let mut cluster_ips = Vec::new();
            for ip in seq_at(node, &["spec", "clusterIPs"]) {
                if let Some(Ok(ip)) = ip.as_scalar().map(|s| s.text.parse()) {
                    cluster_ips.push(ip);
                }
            }
            inv.services.push(ServiceInfo {
                name,
                namespace,
                selector: map_at(node, &["spec", "selector"], diags),
                cluster_ips,
            });
        }
        _ => {}
    }
}

fn parse_ip(text: &str, span: Span, out: &mut Vec<IpAddr>, diags: &mut Vec<Diagnostic>) {
    match text.parse() {
        Ok(ip) => {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Err(_) => bad(diags, span, format!("`{text}` is not an IP address")),
    }
}

/// Pods without IPs (warning) and IPs claimed twice (error).
fn check(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<IpAddr, (String, Span)> = BTreeMap::new();
    let mut claim = |ip: IpAddr, who: String, span: Span, diags: &mut Vec<Diagnostic>| {
        if let Some((first, first_span)) = seen.get(&ip) {
            diags.push(
                Diagnostic::error(
                    Code::DuplicateIp,
                    span,
                    format!("{ip} belongs to both {first} and {who}"),
                )
                .with_related(*first_span, format!("{first} has it too"))
                .with_help("each IP must identify one endpoint; fix the inventory"),
            );
        } else {
            seen.insert(ip, (who, span));
        }
    };
    for n in &inv.nodes {
        for ip in &n.ips {
            claim(*ip, format!("node {}", n.name), n.loc.0, diags);
        }
    }
    for p in &inv.pods {
        if p.host_network {
            continue;
        }
        if p.ips.is_empty() {
            diags.push(
                Diagnostic::warning(
                    Code::PodWithoutIp,
                    p.loc.0,
                    format!("pod {} has no IP address", p.qualified_name()),
                )
                .with_help("flows can name it as namespace/pod, but no traffic can be matched to it by address"),
            );
        }
        for (i, ip) in p.ips.iter().enumerate() {
            let span = p.ip_locs.get(i).map_or(p.loc.0, |l| l.0);
            claim(*ip, format!("pod {}", p.qualified_name()), span, diags);
        }
    }
}

#[cfg(test)]
mod scalar_tests {
    use super::*;

    fn load(text: &str) -> (Inventory, Vec<Diagnostic>) {
        let mut sources = SourceMap::new();
        let mut diags = Vec::new();
        let inv = parse_str("inv.yaml", text, &mut sources, &mut diags);
        (inv, diags)
    }

    #[test]
    fn scalars_resolve_as_the_kubernetes_decoder_reads_them() {
        let (inv, diags) = load(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: \"y\", tier: web}}\nspec: {hostNetwork: yes, containers: [{name: c, ports: [{name: http, containerPort: 0x50}]}]}\nstatus: {podIP: 10.0.0.1}\n",
        );
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let p = &inv.pods[0];
        assert!(p.host_network, "`yes` is true in YAML 1.1");
        assert_eq!(p.ports[0].port, 80, "0x50 is 80");
        assert_eq!(p.labels["app"], "y");
        for bad_value in ["y", "true", "1", "1.5"] {
            let (_, diags) = load(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: a, labels: {{app: {bad_value}}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 10.0.0.1}}\n"
            ));
            assert!(
                diags
                    .iter()
                    .any(|d| d.is_error() && d.message.contains("quote it")),
                "{bad_value}: {diags:?}"
            );
        }
    }
}
