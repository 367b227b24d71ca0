//! `sluice verify`: invariants a team writes down (docs/assertions.md),
//! checked exactly over the compiled state. Each assertion that does not
//! hold is a finding at the assertion's own line, with a concrete flow
//! that breaks it.

use crate::{Finding, Rule, Severity};
use compiler::compile::Compiled;
use compiler::inventory::Inventory;
use policy_lang::diag::{Code, Diagnostic};
use policy_lang::source::{FileId, Span};
use policy_lang::yaml::{self, Node, NodeKind};
use simulator::flow::{PeerRef, Verdict};
use simulator::verify::{Checker, Counterexample, PortRange};
use std::collections::BTreeMap;

#[cfg(feature = "exposure")]
mod anypod;

pub static VIOLATED: Rule = Rule {
    code: "SL200",
    name: "assertion-violated",
    severity: Severity::Error,
    needs_inventory: true,
    solver: false,
    summary: "an assertion of the assertions file does not hold: a flow it rules out is possible, or one it requires is not",
    why: "Assertions are the invariants a team relies on (\"only the web tier reaches the database\"); the finding names a concrete flow that breaks one and why the policies decide it so.",
};

pub static NAMES_NOTHING: Rule = Rule {
    code: "SL201",
    name: "assertion-names-nothing",
    severity: Severity::Warning,
    needs_inventory: true,
    solver: false,
    summary: "an assertion's `from` or `to` matches no pod or address of the inventory, so it holds without checking anything",
    why: "An assertion over nothing always holds: a misspelt namespace or label would silently turn an invariant into a no-op.",
};

/// The rules of `verify`, beside the lint registry.
pub static VERIFY_RULES: &[&Rule] = &[&VIOLATED, &NAMES_NOTHING, &UNDECIDED];

/// A peer as an assertion writes it.
#[derive(Clone, Debug)]
pub struct PeerExpr {
    pub span: Span,
    pub form: PeerForm,
}

#[derive(Clone, Debug)]
pub enum PeerForm {
    /// `world`, `host`, `remote-node`, ... (and `all` for every pod).
    Entity(String),
    /// `namespace/pod` or `namespace/workload`.
    Name(String),
    /// A CIDR: the addresses of it the datapath tells apart.
    Cidr(String),
    /// Pods by namespace and labels; `not` labels must be absent or other.
    Pods {
        namespace: Option<String>,
        labels: BTreeMap<String, String>,
        /// (key, value) pairs; a key may repeat (`app!=a,app!=b`).
        not: Vec<(String, String)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Allowed,
    Denied,
    /// Denied both ways, on every port.
    Isolated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    Ingress,
    Egress,
    Both,
}

#[derive(Clone, Debug)]
pub enum Check {
    Expect {
        from: PeerExpr,
        to: PeerExpr,
        ports: Vec<PortRange>,
        expect: Expect,
    },
    /// No peer outside `from` reaches `to` on the ports.
    Only {
        from: PeerExpr,
        to: PeerExpr,
        ports: Vec<PortRange>,
    },
    /// Nothing from `from` (by default: outside the namespace) reaches the
    /// namespace's pods.
    NamespaceIsolated {
        namespace: String,
        span: Span,
        from: Option<PeerExpr>,
    },
    /// Every pod (of `of`) is selected by a policy in the direction(s).
    Covered {
        direction: Coverage,
        of: Option<PeerExpr>,
    },
}

#[derive(Clone, Debug)]
pub struct Assertion {
    pub name: String,
    /// Where the assertion is written (its `name`, else the item).
    pub span: Span,
    pub check: Check,
}

fn scalar(n: &Node) -> Option<&str> {
    n.as_scalar().map(|s| s.text.as_str())
}

fn syntax(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(Code::AssertionSyntax, span, msg)
}

fn never(span: Span, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(Code::AssertionNeverHolds, span, msg)
}

/// A peer that requires a label its own `!=` (or `notLabels`) rules out
/// matches no pod of any cluster.
fn contradiction(
    span: Span,
    labels: &BTreeMap<String, String>,
    not: &[(String, String)],
) -> Option<Diagnostic> {
    let (k, v) = not.iter().find(|(k, v)| labels.get(k) == Some(v))?;
    Some(never(
        span,
        format!("no pod can be labelled `{k}={v}` and not labelled it: this peer can never match"),
    ))
}

fn entity(p: &PeerExpr) -> Option<&str> {
    match &p.form {
        PeerForm::Entity(e) => Some(e.as_str()),
        _ => None,
    }
}

fn outside(p: &PeerExpr) -> bool {
    matches!(entity(p), Some("world" | "world-ipv4" | "world-ipv6"))
}

/// Assertions that no policy can make hold, whatever the cluster: they
/// are mistakes in the assertion, so they are errors of the file rather
/// than findings that send a reviewer to the policies.
fn never_holds(check: &Check, span: Span) -> Option<Diagnostic> {
    // Cilium lets a node reach its own pods whatever the policies say
    // (allow-localhost), and every pod runs on a node.
    const LOCALHOST: &str = "a node always reaches the pods it runs (Cilium's allow-localhost), so no policy can deny `host` to a pod";
    match check {
        Check::Expect { from, to, .. } if outside(from) && outside(to) => Some(never(
            span,
            "traffic between two addresses outside the cluster never passes through it: no policy decides it",
        )),
        Check::Expect {
            from,
            expect: Expect::Denied | Expect::Isolated,
            ..
        } if entity(from) == Some("host") => Some(never(from.span, LOCALHOST)),
        Check::Expect {
            to,
            expect: Expect::Isolated,
            ..
        } if entity(to) == Some("host") => Some(never(
            to.span,
            format!("`isolated` means both ways, and {LOCALHOST}"),
        )),
        Check::NamespaceIsolated { from: Some(f), .. } if entity(f) == Some("host") => {
            Some(never(f.span, LOCALHOST))
        }
        Check::Covered { of: Some(of), .. } => match entity(of) {
            Some(e) if e != "all" => Some(never(
                of.span,
                format!("`covered` is about pods, which policies select; `{e}` is not a pod"),
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Reads an assertions file. Problems are located diagnostics; an
/// assertion with one is left out.
pub fn parse(text: &str, file: FileId, diags: &mut Vec<Diagnostic>) -> Vec<Assertion> {
    let mut roots = Vec::new();
    if let Err(e) = yaml::parse_stream(text, file, &yaml::Limits::default(), |e| {
        if let yaml::Emitted::Document { root } = e {
            roots.push(root);
        }
    }) {
        let mut d = policy_lang::yaml_error(e);
        d.code = Code::AssertionSyntax;
        diags.push(d);
        return Vec::new();
    }
    let mut out = Vec::new();
    for root in &roots {
        let items = match (&root.kind, root.get("assertions")) {
            (NodeKind::Seq(items), _) => items,
            (
                _,
                Some(Node {
                    kind: NodeKind::Seq(items),
                    ..
                }),
            ) => items,
            _ => {
                diags.push(syntax(
                    root.span,
                    "an assertions file is a list of assertions, or a map with `assertions:`",
                ));
                continue;
            }
        };
        if let NodeKind::Map(entries) = &root.kind {
            for (k, _) in entries {
                if scalar(k) != Some("assertions") {
                    diags.push(syntax(
                        k.span,
                        format!("unknown field `{}`", scalar(k).unwrap_or("")),
                    ));
                }
            }
        }
        for item in items {
            if let Some(a) = assertion(item, diags) {
                out.push(a);
            }
        }
    }
    out
}

const FIELDS: &[&str] = &[
    "name", "from", "to", "ports", "expect", "only", "isolated", "covered",
];

fn assertion(n: &Node, diags: &mut Vec<Diagnostic>) -> Option<Assertion> {
    let NodeKind::Map(entries) = &n.kind else {
        diags.push(syntax(
            n.span,
            "an assertion is a map with `name` and what it expects",
        ));
        return None;
    };
    let before = diags.len();
    for (k, _) in entries {
        let key = scalar(k).unwrap_or("");
        if !FIELDS.contains(&key) {
            let mut d = syntax(k.span, format!("unknown assertion field `{key}`"));
            if let Some(s) = policy_lang::suggest::did_you_mean(key, FIELDS) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            diags.push(d);
        }
    }
    let (name, span) = match n.get("name") {
        Some(v) => match scalar(v) {
            Some(s) if !s.trim().is_empty() => (s.to_owned(), v.span),
            _ => {
                diags.push(syntax(v.span, "`name` is a non-empty string"));
                return None;
            }
        },
        None => {
            diags.push(syntax(
                n.span,
                "an assertion needs a `name`, to say which one fails",
            ));
            return None;
        }
    };
    let shorthands: Vec<&str> = ["only", "isolated", "covered"]
        .into_iter()
        .filter(|k| n.get(k).is_some())
        .collect();
    let check = match shorthands.as_slice() {
        [] => {
            let from = peer_field(n, "from", diags);
            let to = peer_field(n, "to", diags);
            let ports = ports(n.get("ports"), diags);
            let expect = match n.get("expect") {
                Some(v) => match scalar(v) {
                    Some("allowed") => Some(Expect::Allowed),
                    Some("denied") => Some(Expect::Denied),
                    Some("isolated") => Some(Expect::Isolated),
                    _ => {
                        diags.push(syntax(
                            v.span,
                            "`expect` is `allowed`, `denied` or `isolated`",
                        ));
                        None
                    }
                },
                None => {
                    diags.push(syntax(
                        n.span,
                        "an assertion with `from` and `to` needs `expect`",
                    ));
                    None
                }
            };
            match (from, to, expect) {
                (Some(from), Some(to), Some(expect)) => {
                    if expect == Expect::Isolated && !ports.is_empty() {
                        diags.push(syntax(
                            span,
                            "`isolated` means every port: leave `ports` out",
                        ));
                    }
                    Check::Expect {
                        from,
                        to,
                        ports,
                        expect,
                    }
                }
                _ => return None,
            }
        }
        ["only"] => {
            let o = n.get("only")?;
            let (from, to) = (peer_field(o, "from", diags), peer_field(o, "to", diags));
            let ports = ports(o.get("ports"), diags);
            Check::Only {
                from: from?,
                to: to?,
                ports,
            }
        }
        ["isolated"] => {
            let o = n.get("isolated")?;
            let Some((namespace, ns_span)) = o
                .get("namespace")
                .and_then(|v| scalar(v).map(|s| (s.to_owned(), v.span)))
            else {
                diags.push(syntax(
                    o.span,
                    "`isolated` names a `namespace` (and optionally `from`)",
                ));
                return None;
            };
            let from = match o.get("from") {
                Some(_) => Some(peer_field(o, "from", diags)?),
                None => None,
            };
            Check::NamespaceIsolated {
                namespace,
                span: ns_span,
                from,
            }
        }
        ["covered"] => {
            let o = n.get("covered")?;
            let (dir_node, of) = match &o.kind {
                NodeKind::Map(_) => (
                    o.get("direction"),
                    match o.get("of") {
                        Some(_) => Some(peer_field(o, "of", diags)?),
                        None => None,
                    },
                ),
                _ => (Some(o), None),
            };
            let direction = match dir_node.and_then(scalar) {
                Some("ingress") => Coverage::Ingress,
                Some("egress") => Coverage::Egress,
                Some("both") | None => Coverage::Both,
                Some(_) => {
                    diags.push(syntax(
                        dir_node.map_or(o.span, |d| d.span),
                        "`covered` is `ingress`, `egress` or `both`",
                    ));
                    return None;
                }
            };
            Check::Covered { direction, of }
        }
        _ => {
            diags.push(syntax(
                span,
                "an assertion is one of: from/to/expect, `only`, `isolated`, `covered`",
            ));
            return None;
        }
    };
    if diags.len() > before {
        return None;
    }
    if let Some(d) = never_holds(&check, span) {
        diags.push(d);
        return None;
    }
    Some(Assertion { name, span, check })
}

fn peer_field(n: &Node, key: &str, diags: &mut Vec<Diagnostic>) -> Option<PeerExpr> {
    let Some(v) = n.get(key) else {
        diags.push(syntax(n.span, format!("`{key}` is missing")));
        return None;
    };
    peer(v, diags)
}

fn label_map(n: &Node, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match &n.kind {
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                match (scalar(k), scalar(v)) {
                    (Some(k), Some(v)) => {
                        out.insert(k.to_owned(), v.to_owned());
                    }
                    _ => diags.push(syntax(k.span, "labels are `key: value` strings")),
                }
            }
        }
        _ => diags.push(syntax(n.span, "labels are a map of `key: value`")),
    }
    out
}

/// A peer: a string (`world`, `shop/web`, `ns=shop,app=web`, `app!=api`,
/// `10.0.0.0/8`, `all`) or a map (`namespace`, `labels`, `notLabels`).
fn peer(v: &Node, diags: &mut Vec<Diagnostic>) -> Option<PeerExpr> {
    let span = v.span;
    if let NodeKind::Map(entries) = &v.kind {
        let (mut namespace, mut labels, mut not) = (None, BTreeMap::new(), Vec::new());
        for (k, val) in entries {
            match scalar(k) {
                Some("namespace") => namespace = scalar(val).map(str::to_owned),
                Some("labels") => labels = label_map(val, diags),
                Some("notLabels") => not = label_map(val, diags).into_iter().collect(),
                other => diags.push(syntax(
                    k.span,
                    format!(
                        "unknown peer field `{}`: a peer map has `namespace`, `labels` and `notLabels`",
                        other.unwrap_or("")
                    ),
                )),
            }
        }
        if let Some(d) = contradiction(span, &labels, &not) {
            diags.push(d);
            return None;
        }
        return Some(PeerExpr {
            span,
            form: PeerForm::Pods {
                namespace,
                labels,
                not,
            },
        });
    }
    let Some(text) = scalar(v).map(str::trim) else {
        diags.push(syntax(span, "a peer is a string or a map"));
        return None;
    };
    let form = if text.contains('=') {
        let (mut namespace, mut labels, mut not) = (None, BTreeMap::new(), Vec::new());
        for pair in text.split(',') {
            let (k, val, negated) = match pair.split_once("!=") {
                Some((k, val)) => (k.trim(), val.trim(), true),
                None => match pair.split_once('=') {
                    Some((k, val)) => (k.trim(), val.trim(), false),
                    None => {
                        diags.push(syntax(
                            span,
                            format!("`{pair}` is not `key=value` or `key!=value`"),
                        ));
                        return None;
                    }
                },
            };
            if k.is_empty() {
                diags.push(syntax(span, format!("`{pair}` has no key")));
                return None;
            }
            let earlier = match (k, negated) {
                ("ns" | "namespace", false) => namespace.replace(val.to_owned()),
                (_, false) => labels.insert(k.to_owned(), val.to_owned()),
                // `app!=a,app!=b` is a fine "neither".
                (_, true) => {
                    not.push((k.to_owned(), val.to_owned()));
                    None
                }
            };
            if let Some(before) = earlier.filter(|b| b != val) {
                diags.push(never(
                    span,
                    format!("no pod can have `{k}` both `{before}` and `{val}`: this peer can never match"),
                ));
                return None;
            }
        }
        if let Some(d) = contradiction(span, &labels, &not) {
            diags.push(d);
            return None;
        }
        PeerForm::Pods {
            namespace,
            labels,
            not,
        }
    } else if policy_lang::ir::Cidr::parse(text).is_ok() && text.contains('/') {
        PeerForm::Cidr(text.to_owned())
    } else if text.contains('/') {
        PeerForm::Name(text.to_owned())
    } else if matches!(text, "all" | "*" | "cluster") {
        PeerForm::Entity("all".into())
    } else {
        match policy_lang::ir::Entity::parse(text) {
            Some(_) => PeerForm::Entity(text.to_owned()),
            None => {
                diags.push(
                    syntax(span, format!("`{text}` is not a peer"))
                        .with_help("a peer is `namespace/pod`, `namespace/workload`, labels as `ns=shop,app=web` (`app!=api` for not), a CIDR, `all`, or an entity such as `world`"),
                );
                return None;
            }
        }
    };
    Some(PeerExpr { span, form })
}

/// `ports: [5432/TCP, 8000-8010/TCP, 53/UDP, 80]` (TCP when no protocol);
/// none means every port of every protocol.
fn ports(n: Option<&Node>, diags: &mut Vec<Diagnostic>) -> Vec<PortRange> {
    let Some(n) = n else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &n.kind {
        NodeKind::Seq(v) => v.iter().collect(),
        _ => vec![n],
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = scalar(item) else {
            diags.push(syntax(item.span, "a port is `N`, `N/PROTO` or `N-M/PROTO`"));
            continue;
        };
        let (range, proto) = match text.split_once('/') {
            Some((r, p)) => (r, simulator::flow::protocol_number(p)),
            None => (text, Some(6)),
        };
        let bounds = match range.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => range.trim().parse::<u16>().ok().map(|a| (a, a)),
        };
        match (bounds, proto) {
            (Some((lo, hi)), Some(protocol)) if lo <= hi => out.push(PortRange { protocol, lo, hi }),
            _ => diags.push(syntax(
                item.span,
                format!("`{text}` is not a port: `N`, `N/PROTO` or `N-M/PROTO` (TCP, UDP, SCTP, ICMP), N ≤ M ≤ 65535"),
            )),
        }
    }
    out
}

/// What the checks need from the compiled cluster.
pub struct World<'a> {
    pub compiled: &'a Compiled,
    pub inventory: &'a Inventory,
}

/// The inventory's pods that are endpoints, with their names, worked out
/// once for all assertions.
struct Pods<'a>(Vec<(String, &'a compiler::inventory::Pod)>);

impl<'a> Pods<'a> {
    fn new(w: &World<'a>) -> Self {
        Pods(
            w.inventory
                .pods
                .iter()
                .map(|p| (p.qualified_name(), p))
                .filter(|(n, _)| w.compiled.endpoint(n).is_some_and(|e| !e.host))
                .collect(),
        )
    }
}

/// Resolves a peer to the peers it stands for; `Err` is why none.
fn resolve(
    w: &World<'_>,
    checker: &Checker<'_>,
    names: &simulator::flow::PodNames,
    pods: &Pods<'_>,
    p: &PeerExpr,
) -> Result<Vec<PeerRef>, (String, Option<String>)> {
    let pods_where = |f: &dyn Fn(&compiler::inventory::Pod) -> bool| -> Vec<PeerRef> {
        pods.0
            .iter()
            .filter(|(_, pod)| f(pod))
            .map(|(n, _)| PeerRef::Pod(n.clone()))
            .collect()
    };
    let out = match &p.form {
        PeerForm::Entity(e) if e == "all" => pods_where(&|_| true),
        PeerForm::Entity(e) if e == "world" => checker
            .outside()
            .iter()
            .filter(|(_, node)| !node)
            .map(|&(ip, _)| PeerRef::Ip(ip))
            .collect(),
        PeerForm::Entity(e) => vec![PeerRef::Entity(e.clone())],
        PeerForm::Cidr(c) => {
            let cidr = policy_lang::ir::Cidr::parse(c).map_err(|e| (e, None))?;
            let mut v: Vec<PeerRef> = checker
                .outside()
                .iter()
                .filter(|(ip, _)| {
                    cidr.contains(&policy_lang::ir::Cidr {
                        addr: *ip,
                        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
                        bare: true,
                    })
                })
                .map(|&(ip, _)| PeerRef::Ip(ip))
                .collect();
            v.extend(pods_where(&|pod| {
                pod.ips.iter().any(|ip| {
                    cidr.contains(&policy_lang::ir::Cidr {
                        addr: *ip,
                        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
                        bare: true,
                    })
                })
            }));
            v
        }
        PeerForm::Name(n) => match names.several(n) {
            Some(Ok(v)) => v.into_iter().map(PeerRef::Pod).collect(),
            Some(Err(e)) => return Err((e, None)),
            None => match names.resolve(n) {
                Ok(pod) => vec![PeerRef::Pod(pod)],
                Err((msg, help)) => return Err((msg, Some(help))),
            },
        },
        PeerForm::Pods {
            namespace,
            labels,
            not,
        } => pods_where(&|pod| {
            namespace.as_ref().is_none_or(|ns| &pod.namespace == ns)
                && labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                && not.iter().all(|(k, v)| pod.labels.get(k) != Some(v))
        }),
    };
    if out.is_empty() {
        let help = match &p.form {
            PeerForm::Pods {
                namespace: Some(ns),
                ..
            } if !w.inventory.pods.iter().any(|pod| &pod.namespace == ns) => {
                let known: Vec<&str> = w.inventory.namespaces.keys().map(String::as_str).collect();
                policy_lang::suggest::did_you_mean(ns, &known)
                    .map(|s| format!("no pod runs in namespace `{ns}`; did you mean `{s}`?"))
            }
            _ => None,
        };
        return Err(("matches no pod or address of the inventory".into(), help));
    }
    Ok(out)
}

/// One exact check: from, to, ports, the verdict every flow must get.
type Query = (Vec<PeerRef>, Vec<PeerRef>, Vec<PortRange>, Verdict);

/// What `verify` found.
#[derive(Default)]
pub struct Report {
    /// Each finding, with the flow that breaks the assertion (if any).
    pub findings: Vec<(Finding, Option<Counterexample>)>,
    pub held: usize,
    pub broken: usize,
    /// Assertions that name nothing, so check nothing.
    pub vacuous: usize,
    /// With --any-pod: assertions that held over the inventory but the
    /// solver could not decide for every pod (never counted as held).
    pub undecided: usize,
    /// Witnesses the ordinary compile and `simulate` did not confirm: bugs
    /// of the symbolic semantics, never findings.
    pub internal: Vec<String>,
    /// With --any-pod: assertions checked for every possible pod, and
    /// those only checked over the inventory (their peers are not pods).
    pub any_pod: Option<(usize, usize)>,
}

/// Checks every assertion; a finding for each that does not hold (and a
/// warning for each that checks nothing).
pub fn verify(w: &World<'_>, assertions: &[Assertion]) -> Report {
    verify_with(w, assertions, None)
}

/// `verify --any-pod`: assertions must also hold for every pod that could
/// exist (docs/exposure.md), decided by z3 over the policies' model.
pub struct AnyPod<'a> {
    pub set: &'a policy_lang::ir::PolicySet,
    pub sources: &'a policy_lang::source::SourceMap,
    pub config: &'a compiler::compile::Config,
    /// What each solver check may spend.
    pub budget: crate::Budget,
}

pub static UNDECIDED: Rule = Rule {
    code: "SL202",
    name: "assertion-undecided",
    severity: Severity::Warning,
    needs_inventory: true,
    solver: true,
    summary: "with --any-pod, the solver could not decide an assertion for every possible pod within its time limit",
    why: "An assertion the solver could not decide is not known to hold: it is reported, never counted as held. Raise --solver-timeout-ms (or --solver-steps when a step budget is set), or narrow the assertion.",
};

/// Checks every assertion over the inventory and, with `any_pod`, over
/// every possible pod.
pub fn verify_with(
    w: &World<'_>,
    assertions: &[Assertion],
    any_pod: Option<&AnyPod<'_>>,
) -> Report {
    let (report, held) = verify_inventory(w, assertions);
    #[cfg(feature = "exposure")]
    {
        let mut report = report;
        if let Some(ap) = any_pod {
            anypod::symbolic(w, assertions, &held, ap, &mut report);
        }
        report
    }
    #[cfg(not(feature = "exposure"))]
    {
        let _ = (any_pod, held);
        report
    }
}

/// The report, and for each assertion whether it held (and checked
/// something).
fn verify_inventory(w: &World<'_>, assertions: &[Assertion]) -> (Report, Vec<bool>) {
    let mut checker = Checker::new(w.compiled);
    let names = simulator::flow::PodNames::new(w.inventory);
    let pods = Pods::new(w);
    let mut out = Vec::new();
    let mut report = Report::default();
    let mut held = Vec::new();
    for a in assertions {
        let before = out.len();
        let broken = check_one(w, &mut checker, &names, &pods, a, &mut out);
        if broken {
            report.broken += 1;
        } else if out.len() > before {
            report.vacuous += 1;
        } else {
            report.held += 1;
        }
        held.push(!broken && out.len() == before);
    }
    report.findings = out;
    (report, held)
}

/// Checks one assertion, adding its findings; whether it is broken.
fn check_one(
    w: &World<'_>,
    checker: &mut Checker<'_>,
    names: &simulator::flow::PodNames,
    pods: &Pods<'_>,
    a: &Assertion,
    out: &mut Vec<(Finding, Option<Counterexample>)>,
) -> bool {
    {
        let resolve_or_warn =
            |p: &PeerExpr, out: &mut Vec<(Finding, Option<Counterexample>)>| match resolve(
                w, checker, names, pods, p,
            ) {
                Ok(v) => Some(v),
                Err((msg, help)) => {
                    let mut f = Finding::new(
                        &NAMES_NOTHING,
                        p.span,
                        format!("assertion `{}`: this peer {msg}", a.name),
                    )
                    .label("names nothing");
                    if let Some(h) = help {
                        f = f.help(h);
                    }
                    out.push((f, None));
                    None
                }
            };
        // (from, to, ports, verdict every flow must get)
        let mut checks: Vec<Query> = Vec::new();
        match &a.check {
            Check::Expect {
                from,
                to,
                ports,
                expect,
            } => {
                let (Some(f), Some(t)) = (resolve_or_warn(from, out), resolve_or_warn(to, out))
                else {
                    return false;
                };
                match expect {
                    Expect::Allowed => checks.push((f, t, ports.clone(), Verdict::Allowed)),
                    Expect::Denied => checks.push((f, t, ports.clone(), Verdict::Denied)),
                    Expect::Isolated => {
                        checks.push((f.clone(), t.clone(), Vec::new(), Verdict::Denied));
                        checks.push((t, f, Vec::new(), Verdict::Denied));
                    }
                }
            }
            Check::Only { from, to, ports } => {
                let (Some(f), Some(t)) = (resolve_or_warn(from, out), resolve_or_warn(to, out))
                else {
                    return false;
                };
                let others = everything_but(pods, checker, &f);
                checks.push((others, t, ports.clone(), Verdict::Denied));
            }
            Check::NamespaceIsolated {
                namespace,
                span,
                from,
            } => {
                let ns = PeerExpr {
                    span: *span,
                    form: PeerForm::Pods {
                        namespace: Some(namespace.clone()),
                        labels: BTreeMap::new(),
                        not: Vec::new(),
                    },
                };
                let Some(t) = resolve_or_warn(&ns, out) else {
                    return false;
                };
                let f = match from {
                    Some(p) => match resolve_or_warn(p, out) {
                        Some(f) => f,
                        None => return false,
                    },
                    None => everything_but(pods, checker, &t),
                };
                checks.push((f, t, Vec::new(), Verdict::Denied));
            }
            Check::Covered { direction, of } => {
                let pods = match of {
                    Some(p) => match resolve_or_warn(p, out) {
                        Some(v) => v,
                        None => return false,
                    },
                    None => resolve(
                        w,
                        checker,
                        names,
                        pods,
                        &PeerExpr {
                            span: a.span,
                            form: PeerForm::Entity("all".into()),
                        },
                    )
                    .unwrap_or_default(),
                };
                return match uncovered(w, checker, a, &pods, *direction) {
                    Some(f) => {
                        out.push(f);
                        true
                    }
                    None => false,
                };
            }
        }
        for (f, t, ports, want) in checks {
            let o = checker.check(&f, &t, &ports, want);
            if let Some(cx) = o.counterexample {
                out.push((
                    violation(w.compiled, a, &cx, want, o.violating_pairs),
                    Some(cx),
                ));
                return true;
            }
        }
    }
    false
}

/// Every pod and outside address except those given.
fn everything_but(pods: &Pods<'_>, checker: &Checker<'_>, except: &[PeerRef]) -> Vec<PeerRef> {
    let skip: std::collections::HashSet<&PeerRef> = except.iter().collect();
    let mut v: Vec<PeerRef> = pods
        .0
        .iter()
        .map(|(n, _)| PeerRef::Pod(n.clone()))
        .collect();
    v.extend(
        checker
            .outside()
            .iter()
            .filter(|(_, node)| !node)
            .map(|&(ip, _)| PeerRef::Ip(ip)),
    );
    v.retain(|p| !skip.contains(p));
    v
}

fn flow_text(cx: &Counterexample) -> String {
    format!(
        "{} → {} {}/{}",
        cx.from,
        cx.to,
        cx.port,
        compiler::mapstate::proto_name(cx.protocol)
    )
}

/// A counterexample as a flow, to judge or trace.
pub fn flow(cx: &Counterexample) -> simulator::flow::Flow {
    simulator::flow::Flow::new(cx.from.clone(), cx.to.clone(), cx.port, cx.protocol)
}

/// The reason the datapath decides a counterexample as it does.
pub fn reason(c: &Compiled, cx: &Counterexample) -> String {
    match simulator::eval::simulate(c, &flow(cx)) {
        Ok(o) => o
            .steps
            .iter()
            .find(|s| Some(s.direction) == o.decided_by)
            .map(|s| simulator::eval::explain_step(c, s))
            .unwrap_or_else(|| "no policy applies".into()),
        Err(e) => e,
    }
}

fn violation(
    c: &Compiled,
    a: &Assertion,
    cx: &Counterexample,
    want: Verdict,
    pairs: usize,
) -> Finding {
    let more = if pairs > 1 {
        format!(" (one of {pairs} pairs of peers that break it)")
    } else {
        String::new()
    };
    Finding::new(
        &VIOLATED,
        a.span,
        format!(
            "assertion `{}` does not hold: {} is {}{more}",
            a.name,
            flow_text(cx),
            cx.verdict
        ),
    )
    .label(format!("expects {want}"))
    .help(format!(
        "{}; `sluice trace --from {} --to {} --port {}/{}` shows every step",
        reason(c, cx),
        cx.from,
        cx.to,
        cx.port,
        compiler::mapstate::proto_name(cx.protocol)
    ))
}

/// The first pod of `pods` that no policy covers in the direction, as a
/// finding with the flow default allow lets through.
fn uncovered(
    w: &World<'_>,
    checker: &Checker<'_>,
    a: &Assertion,
    pods: &[PeerRef],
    direction: Coverage,
) -> Option<(Finding, Option<Counterexample>)> {
    let outside = checker
        .outside()
        .iter()
        .find(|(_, node)| !node)
        .map(|&(ip, _)| PeerRef::Ip(ip))
        .unwrap_or_else(|| PeerRef::Entity("world".into()));
    let mut missing = pods.iter().filter_map(|p| {
        let PeerRef::Pod(name) = p else { return None };
        let e = w.compiled.endpoint(name)?;
        let ingress = matches!(direction, Coverage::Ingress | Coverage::Both) && !e.enforced[0];
        let egress = matches!(direction, Coverage::Egress | Coverage::Both) && !e.enforced[1];
        (ingress || egress).then_some((p, ingress))
    });
    let (pod, ingress) = missing.next()?;
    let count = 1 + missing.count();
    let cx = if ingress {
        Counterexample {
            from: outside,
            to: pod.clone(),
            protocol: 6,
            port: 80,
            verdict: Verdict::Allowed,
        }
    } else {
        Counterexample {
            from: pod.clone(),
            to: outside,
            protocol: 6,
            port: 80,
            verdict: Verdict::Allowed,
        }
    };
    let dir = if ingress { "ingress" } else { "egress" };
    let f = Finding::new(
        &VIOLATED,
        a.span,
        format!(
            "assertion `{}` does not hold: no policy covers {pod}'s {dir}{}, so {} is allowed by default",
            a.name,
            if count > 1 {
                format!(" (nor that of {} other {})", count - 1, if count == 2 { "pod" } else { "pods" })
            } else {
                String::new()
            },
            flow_text(&cx)
        ),
    )
    .label(format!("expects every pod covered ({dir})"))
    .help(format!("select {pod} with a policy that has {dir} rules (a default deny: `{dir}: [{{}}]` in a CiliumNetworkPolicy, or `policyTypes: [{}]` in a NetworkPolicy)", if ingress { "Ingress" } else { "Egress" }));
    Some((f, Some(cx)))
}
