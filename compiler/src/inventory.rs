//! The cluster as policies see it: namespaces, pods, nodes and services.
//!
//! Read from Kubernetes YAML exactly as `kubectl get
//! pods,namespaces,nodes,services -A -o yaml` prints it (a `List`, or
//! multi-document YAML), and from workload manifests (Deployments and the
//! other controllers, as a repository holds them before anything runs):
//! each workload's pod template becomes endpoints ([`crate::workload`]).
//! Only the fields that matter to policy are read; everything else in those
//! objects is ignored, and objects of other kinds are skipped. Pods that
//! finished, or have no address yet, are not endpoints, as in Cilium: they
//! are listed in [`Inventory::left_out`].

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
    /// Pods that were read but are not endpoints, with the reason.
    pub left_out: Vec<LeftOut>,
    /// Workloads read, whose templates become pods when no real pod of
    /// theirs is in the inventory (see [`crate::workload::expand`]).
    #[serde(skip)]
    pub workloads: Vec<crate::workload::Workload>,
}

/// A pod that is not an endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct LeftOut {
    /// `namespace/name`.
    pub pod: String,
    pub reason: LeftOutReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LeftOutReason {
    /// Phase Succeeded or Failed: its containers are gone, and so is its
    /// Cilium endpoint; its address may already be another pod's.
    Finished(String),
    /// No IP address yet (Pending, not scheduled): no Cilium endpoint.
    NoAddress,
}

impl std::fmt::Display for LeftOutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOutReason::Finished(phase) => write!(f, "it has finished (phase {phase})"),
            LeftOutReason::NoAddress => f.write_str("it has no IP address"),
        }
    }
}

/// The controller a pod belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `Job` or
    /// `CronJob`.
    pub kind: String,
    pub name: String,
    /// The pod was made from the workload's template, not read from a
    /// cluster.
    pub templated: bool,
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
    /// The workload it belongs to, from its owner references (or its
    /// template).
    pub workload: Option<WorkloadRef>,
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
    pub ports: Vec<ServicePort>,
}

/// One of a Service's ports, and where it leads on a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub port: u16,
    /// IP protocol number.
    pub protocol: u8,
    pub target: TargetPort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u16),
    /// A container port's name, looked up on each backend.
    Name(String),
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

    /// Endpoints made from workload templates.
    pub fn templated(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| p.workload.as_ref().is_some_and(|w| w.templated))
            .count()
    }

    /// One line saying what was not read as it stands: endpoints made from
    /// templates (and where their addresses come from), pods left out.
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        let t = self.templated();
        if t > 0 {
            parts.push(format!(
                "{t} {} from workload templates (addresses allocated in {}, in order of namespace and name)",
                if t == 1 { "endpoint" } else { "endpoints" },
                crate::workload::ADDRESS_RANGE
            ));
        }
        let finished = self
            .left_out
            .iter()
            .filter(|l| matches!(l.reason, LeftOutReason::Finished(_)))
            .count();
        if finished > 0 {
            parts.push(format!(
                "{finished} finished {} left out",
                if finished == 1 { "pod" } else { "pods" }
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How inventory files are found, and workloads become endpoints.
#[derive(Clone, Debug)]
pub struct Options {
    /// Endpoints per workload made from its template (`--replicas`).
    pub replicas: u32,
    /// Paths left out of directory walks (`--exclude`).
    pub exclude: policy_lang::scan::Exclude,
    /// How many pieces a large List is parsed in: `None` splits files of
    /// 1 MiB or more across the cores; `Some(n)` always tries `n` (tests
    /// use it to show results never depend on it).
    pub parse_pieces: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 1,
            exclude: Default::default(),
            parse_pieces: None,
        }
    }
}

/// Reads inventory files into `sources`; problems go to `diags`.
pub fn load(paths: &[&Path], sources: &mut SourceMap, diags: &mut Vec<Diagnostic>) -> Inventory {
    let limit = policy_lang::DEFAULT_MAX_FILE_SIZE;
    load_all(paths, Vec::new(), limit, Options::default(), sources, diags)
}

/// Inventory files and directories (their `.yaml`, `.yml` and `.json`
/// files) and texts read elsewhere (a live cluster's objects), as one
/// inventory: workloads are expanded and addresses checked over all of it.
pub fn load_all(
    paths: &[&Path],
    texts: Vec<(String, String)>,
    limit: u64,
    opts: Options,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Inventory {
    let mut inv = Inventory {
        cluster: "default".to_owned(),
        ..Inventory::default()
    };
    let owned: Vec<std::path::PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let found = policy_lang::scan::walk(&owned, &opts.exclude, diags);
    for (path, scanned) in found.files {
        match policy_lang::read_text(&path, limit) {
            Ok(text) if scanned && policy_lang::scan::skip_by_text(&text).is_some() => {}
            Ok(text) => {
                let id = sources.add(path.display().to_string(), text);
                let text = sources.get(id).text.clone();
                parse_into(&mut inv, &text, id, diags, opts.parse_pieces);
            }
            Err(d) => diags.push(*d),
        }
    }
    for (name, text) in texts {
        let id = sources.add(name, text);
        let text = sources.get(id).text.clone();
        parse_into(&mut inv, &text, id, diags, opts.parse_pieces);
    }
    finish(&mut inv, &opts, diags);
    inv
}

/// Workloads expanded, then addresses checked.
fn finish(inv: &mut Inventory, opts: &Options, diags: &mut Vec<Diagnostic>) {
    crate::workload::expand(inv, opts, diags);
    check(inv, diags);
}

/// Parses one inventory text (for tests and stdin).
pub fn parse_str(
    name: &str,
    text: &str,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Inventory {
    let texts = vec![(name.to_owned(), text.to_owned())];
    load_all(&[], texts, u64::MAX, Options::default(), sources, diags)
}

/// Below this size an inventory file is parsed on one thread.
const PARALLEL_THRESHOLD: usize = 1 << 20;
/// Pieces parsed at once per core: bounds the parsed trees held at a time.
const PIECE_BYTES: usize = 4 << 20;

fn parse_into(
    inv: &mut Inventory,
    text: &str,
    file: FileId,
    diags: &mut Vec<Diagnostic>,
    parse_pieces: Option<usize>,
) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let pieces = match parse_pieces {
        Some(n) => yaml::split_list_items(text, n),
        None if text.len() >= PARALLEL_THRESHOLD && threads > 1 => {
            yaml::split_list_items(text, (text.len() / PIECE_BYTES).max(threads))
        }
        None => None,
    };
    let Some(pieces) = pieces else {
        let result = yaml::parse_stream(text, file, &yaml::Limits::default(), |e| match e {
            yaml::Emitted::ListItem(node) => object(inv, &node, diags),
            yaml::Emitted::Document { root, .. } => object(inv, &root, diags),
        });
        if let Err(e) = result {
            inventory_yaml_error(e, diags);
        }
        return;
    };
    // A dump of a big cluster is one List: its items are parsed on all
    // cores, a few pieces at a time, and read in file order, so the result
    // (and the first YAML error, after which nothing more is read) is that
    // of one thread.
    for wave in pieces.chunks(threads) {
        let parsed: Vec<(Vec<Node>, Option<yaml::YamlError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&(base, piece)| {
                    scope.spawn(move || {
                        let limits = yaml::Limits::default();
                        let mut nodes = Vec::new();
                        let mut keep = |e| match e {
                            yaml::Emitted::ListItem(node) => nodes.push(node),
                            yaml::Emitted::Document { root } => nodes.push(root),
                        };
                        // A run of items is a sequence at the piece's root.
                        let r = if piece.starts_with('-') {
                            yaml::parse_items_at(piece, file, base, &limits, &mut keep)
                        } else {
                            yaml::parse_stream_at(piece, file, base, &limits, &mut keep)
                        };
                        (nodes, r.err())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (nodes, err) in parsed {
            for n in &nodes {
                object(inv, n, diags);
            }
            if let Some(e) = err {
                inventory_yaml_error(e, diags);
                return;
            }
        }
    }
}

fn inventory_yaml_error(e: yaml::YamlError, diags: &mut Vec<Diagnostic>) {
    let mut d = policy_lang::yaml_error(e);
    d.message = format!("inventory: {}", d.message);
    diags.push(d);
}

pub(crate) fn str_at<'a>(node: &'a Node, path: &[&str]) -> Option<&'a str> {
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
pub(crate) fn map_at(
    node: &Node,
    path: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, String> {
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

pub(crate) fn seq_at<'a>(node: &'a Node, path: &[&str]) -> &'a [Node] {
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

pub(crate) fn bad(diags: &mut Vec<Diagnostic>, span: Span, msg: String) {
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
            if let Some(phase @ ("Succeeded" | "Failed")) = str_at(node, &["status", "phase"]) {
                inv.left_out.push(LeftOut {
                    pod: format!("{namespace}/{name}"),
                    reason: LeftOutReason::Finished(phase.to_owned()),
                });
                return;
            }
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
            let spec = node.get("spec");
            let mut pod = pod_of_template(name, namespace, labels, spec, name_loc(node), diags);
            pod.node = spec
                .and_then(|s| str_at(s, &["nodeName"]))
                .map(str::to_owned);
            pod.ips = ips;
            pod.ip_locs = ip_locs;
            pod.workload = crate::workload::owner_of(node);
            inv.pods.push(pod);
        }
        kind if crate::workload::KINDS.contains(&kind) => {
            if let Some(w) = crate::workload::read(kind, name, namespace, node, diags) {
                inv.workloads.push(w);
            }
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
            let mut ports = Vec::new();
            for p in seq_at(node, &["spec", "ports"]) {
                let port = port_at(p, "port");
                let Some(port) = port else {
                    bad(diags, p.span, "service port has no valid `port`".into());
                    continue;
                };
                let protocol = protocol_at(p);
                let target = match value_at(p, &["targetPort"]) {
                    Some((Value::Int(i), _)) => match u16::try_from(i) {
                        Ok(n) if n > 0 => TargetPort::Number(n),
                        _ => {
                            bad(diags, p.span, format!("targetPort {i} is out of range"));
                            continue;
                        }
                    },
                    Some((Value::Str(name), _)) => match name.parse::<u16>() {
                        Ok(n) => TargetPort::Number(n),
                        Err(_) => TargetPort::Name(name.to_ascii_lowercase()),
                    },
                    _ => TargetPort::Number(port),
                };
                ports.push(ServicePort {
                    port,
                    protocol,
                    target,
                });
            }
            // A single-stack Service lists its address in `clusterIP` only.
            if cluster_ips.is_empty() {
                if let Some(Ok(ip)) = str_at(node, &["spec", "clusterIP"]).map(str::parse) {
                    cluster_ips.push(ip);
                }
            }
            inv.services.push(ServiceInfo {
                name,
                namespace,
                selector: map_at(node, &["spec", "selector"], diags),
                cluster_ips,
                ports,
            });
        }
        _ => {}
    }
}

/// A pod from its spec (a Pod's own, or a workload's template): labels,
/// service account, host networking and named container ports. Addresses,
/// node and owner are the caller's to fill in.
pub(crate) fn pod_of_template(
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    spec: Option<&Node>,
    loc: Loc,
    diags: &mut Vec<Diagnostic>,
) -> Pod {
    let mut ports = Vec::new();
    let containers = spec.map_or(&[][..], |s| seq_at(s, &["containers"]));
    for c in containers {
        for p in seq_at(c, &["ports"]) {
            let port = port_at(p, "containerPort");
            let Some(port) = port else {
                bad(
                    diags,
                    p.span,
                    "container port has no valid `containerPort`".into(),
                );
                continue;
            };
            let protocol = protocol_at(p);
            ports.push(ContainerPort {
                name: str_at(p, &["name"]).map(str::to_ascii_lowercase),
                port,
                protocol,
            });
        }
    }
    let field = |k: &str| spec.and_then(|s| str_at(s, &[k]));
    Pod {
        name,
        namespace,
        labels,
        service_account: field("serviceAccountName")
            .or_else(|| field("serviceAccount"))
            .unwrap_or("default")
            .to_owned(),
        node: None,
        host_network: spec
            .and_then(|s| bool_at(s, &["hostNetwork"]))
            .unwrap_or(false),
        ips: Vec::new(),
        ports,
        workload: None,
        loc,
        ip_locs: Vec::new(),
    }
}

/// Where an object's `metadata.name` is written (or the object).
pub(crate) fn name_loc(node: &Node) -> Loc {
    Loc(node
        .get("metadata")
        .and_then(|m| m.get("name"))
        .map_or(node.span, |n| n.span))
}

/// A port number 1-65535 at `key` of a port entry (container or Service).
fn port_at(p: &Node, key: &str) -> Option<u16> {
    match value_at(p, &[key]) {
        Some((Value::Int(i), _)) => u16::try_from(i).ok().filter(|&x| x > 0),
        _ => None,
    }
}

/// A port entry's `protocol` as an IP protocol number (TCP by default).
fn protocol_at(p: &Node) -> u8 {
    match str_at(p, &["protocol"]).unwrap_or("TCP") {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
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

/// Pods without IPs are left out (warning); IPs claimed twice are errors.
fn check(inv: &mut Inventory, diags: &mut Vec<Diagnostic>) {
    let (pods, unaddressed): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut inv.pods)
        .into_iter()
        .partition(|p| p.host_network || !p.ips.is_empty());
    inv.pods = pods;
    for p in unaddressed {
        diags.push(
            Diagnostic::warning(
                Code::PodWithoutIp,
                p.loc.0,
                format!("pod {} has no IP address: it is not an endpoint", p.qualified_name()),
            )
            .with_help("Cilium makes an endpoint when the pod gets its address (it is Pending, or not scheduled); policies do not apply to it yet"),
        );
        inv.left_out.push(LeftOut {
            pod: p.qualified_name(),
            reason: LeftOutReason::NoAddress,
        });
    }
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
    for p in inv.pods.iter().filter(|p| !p.host_network) {
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
